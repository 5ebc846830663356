"""The payload engine: kernels, threads, Wycheproof AES-GCM, interoperability, the native stub."""
