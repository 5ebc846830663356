"""Keys: the key stanzas, the Recipient/Identity interface, the direct key, and each key type
(key files, keyrings, passphrases, X25519, PKCS#11, KMS) with the key references."""
