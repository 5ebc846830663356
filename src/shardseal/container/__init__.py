"""The container: the header (suite, metadata, key block) and the encrypt/decrypt/inspect API
over in-memory buffers."""
