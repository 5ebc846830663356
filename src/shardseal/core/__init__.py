"""The payload engine: C2SP chunked encryption (Cobblestone) over caller buffers, on the native
or the pure-Python backend. Knows nothing of headers, keys or files."""
