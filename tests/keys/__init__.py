"""Key stanzas and key types: envelope, key files and references, keyrings, KMS, PKCS#11, passphrases, X25519."""
