"""Operations on many files: key rotation and dataset manifests."""
