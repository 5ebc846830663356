"""Operations: key rotation (and its crash recovery) and dataset manifests."""
