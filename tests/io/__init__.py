"""Streams and files: open(), encrypt_file(), crash safety, fsspec."""
