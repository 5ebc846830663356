"""Streams and files: the random-access reader and the streaming writer, open(), encrypt_file(),
the fsspec file system and the clean-up of temporary files."""
