"""The container: the in-memory API, header parsing, caches, tampering and the format vectors."""
