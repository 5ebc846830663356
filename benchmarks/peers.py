"""What the comparison measures: shardseal, its ceilings and its peers, behind one interface.

Every implementation (``Impl``) encrypts and decrypts one shared random buffer (``Data``) and
checks its own outputs: each encrypt output is decrypted and compared with the input, each
decrypt output is compared with the input, so a fast wrong answer fails the run
(``VerificationError``). shardseal's outputs are opened by the native engine, and the first of
each row also by ``cryptography.cobblestone``, an independent implementation of the format.

``Runner`` times one implementation and operation: it calibrates how many calls one timed run
makes (small messages are batched so that a run lasts long enough to time, and every call of a
batch writes its own output so that each one can be verified), and it is what both
``python -m benchmarks`` and the pytest-benchmark suite call.

Optional peers (pycryptodome, tink, pyrage, pyaes, and ``cryptography.cobblestone`` on
cryptography < 50) are imported when first used; a missing one raises ``Unavailable`` and is
skipped with a note. ``SHARDSEAL_BENCH_HIDE=tink,pyrage`` makes the named modules unimportable,
to check that path without uninstalling anything.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import math
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Optional

import numpy as np

import shardseal
import shardseal.cobblestone as shardseal_cobblestone

from ._common import VerificationError, cobblestone_parts, prefaulted, require_equal, require_parts_equal, use_backend

HIDE_ENV = "SHARDSEAL_BENCH_HIDE"
AESGCM_CHUNK = 16 << 10  # the chunked AESGCM peer: 16 KiB records, like a Cobblestone chunk
PYAES_MAX = 64 << 10  # pure-Python AES is measured up to this size; larger sizes are extrapolated


def hide_modules(names: Optional[str] = None) -> list:
    """Makes the comma-separated modules (default: $SHARDSEAL_BENCH_HIDE) raise ImportError."""
    names = os.environ.get(HIDE_ENV, "") if names is None else names
    hidden = [n.strip() for n in names.split(",") if n.strip()]
    for name in hidden:
        for loaded in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
            del sys.modules[loaded]
        sys.modules[name] = None  # "import name" now raises ImportError
    return hidden


hide_modules()


class Unavailable(Exception):
    """An optional peer is not installed (or hidden): skip it with this note."""


def _import(module: str):
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise Unavailable(f"{module} not importable ({exc})") from exc


def module_version(module: str) -> Optional[str]:
    """The installed version of a peer, or None when it is missing or hidden."""
    dist = {"Crypto": "pycryptodome"}.get(module, module)
    try:
        importlib.import_module(module)
    except ImportError:
        return None
    try:
        from importlib.metadata import version

        return version(dist)
    except Exception:  # noqa: BLE001 - informational only
        return "unknown"


# --------------------------------------------------------------------------------------
# The shared input


class Data:
    """One random plaintext of ``size`` bytes, a key, and a scratch buffer for verification."""

    def __init__(self, size: int, ncores: int, seed: int = 20240601) -> None:
        self.size = size
        self.ncores = ncores
        # bytes (for the APIs that accept nothing else) and a read-only array view of the same memory;
        # PCG64's raw output is random enough for a cipher and ~20x faster than os.urandom
        raw = np.random.default_rng(seed + size).bit_generator.random_raw(-(-size // 8))
        self.bytes = raw.view(np.uint8)[:size].tobytes()
        del raw
        self.plaintext = np.frombuffer(self.bytes, dtype=np.uint8)
        self.key = shardseal.generate_key()
        self._check: Optional[np.ndarray] = None
        self._container = None
        self._message = None

    def container(self):
        """A shardseal container of the input made by the native engine, verified twice (cached)."""
        if self._container is None:
            with use_backend("native"):
                blob = shardseal.encrypt(self.plaintext, self.key, threads=self.ncores)
            self.open_container(blob, "reference container", independent=True)
            self._container = blob
        return self._container

    def message(self):
        """A bare Cobblestone message of the input (empty context) made by the native engine (cached)."""
        if self._message is None:
            with use_backend("native"):
                message = shardseal_cobblestone.encrypt(self.plaintext, self.key, threads=self.ncores)
            self.open_message(message, "reference message")
            self._message = message
        return self._message

    def check_buffer(self) -> np.ndarray:
        """A zeroed buffer of ``size`` bytes to decrypt into (reused)."""
        if self._check is None:
            self._check = prefaulted(self.size)
        else:
            self._check.fill(0)
        return self._check

    def require_plain(self, label: str, got) -> None:
        require_equal(label, got, self.plaintext)

    def open_container(self, blob, label: str, independent: bool = False) -> None:
        """Decrypts a shardseal container with the native engine and compares it with the input.

        With independent, also opens its Cobblestone message with cryptography.cobblestone.
        """
        check = self.check_buffer()
        with use_backend("native"):
            written = shardseal.decrypt_into(blob, self.key, check, threads=self.ncores)
        if written != self.size:
            raise VerificationError(f"{label}: decrypts to {written} bytes, expected {self.size}")
        self.require_plain(label, check)
        if independent:
            self.open_with_cryptography(blob, label)

    def open_with_cryptography(self, blob, label: str) -> None:
        try:
            from cryptography.cobblestone import Cobblestone256Decryptor
        except ImportError:  # cryptography < 50 or hidden: the native check above stands
            return
        input_key, context, message = cobblestone_parts(blob, self.key)
        decryptor = Cobblestone256Decryptor(input_key, context)
        check = self.check_buffer()
        n = decryptor.update_into(message, check)
        tail = decryptor.finalize()
        check[n:n + len(tail)] = np.frombuffer(tail, np.uint8)
        self.require_plain(f"{label} (checked by cryptography.cobblestone)", check)

    def open_message(self, message, label: str) -> None:
        """Decrypts a raw Cobblestone message (empty context) natively and compares it."""
        check = self.check_buffer()
        with use_backend("native"):
            written = shardseal_cobblestone.decrypt_into(message, self.key, check, threads=self.ncores)
        if written != self.size:
            raise VerificationError(f"{label}: decrypts to {written} bytes, expected {self.size}")
        self.require_plain(label, check)


class Slots:
    """``n`` output buffers of ``size`` bytes in one pre-faulted arena, one per call of a batch."""

    def __init__(self) -> None:
        self.arena: Optional[np.ndarray] = None
        self.views: list = []
        self.size = 0

    def reserve(self, n: int, size: int) -> None:
        if self.arena is None or self.size != size or len(self.views) < n:
            self.arena = None
            self.views = []
            self.arena = prefaulted(max(1, n * size))
            self.size = size
            self.views = [self.arena[i * size:(i + 1) * size] for i in range(n)]

    def zero(self) -> None:
        if self.arena is not None:
            self.arena.fill(0)

    def release(self) -> None:
        self.arena = None
        self.views = []


# --------------------------------------------------------------------------------------
# Implementations


class Impl:
    """One implementation. Subclasses fill in setup / call / verify for their operations."""

    name = ""  # stable id, used in the JSON and to select implementations
    label = ""  # table label
    group = "peer"  # "ceiling", "shardseal" or "peer"
    cipher = ""  # algorithm and format, for the table
    requires: tuple = ()  # modules whose absence makes this implementation unavailable
    ops: tuple = ("encrypt", "decrypt")
    throughput = True  # measured over the message sizes
    latency = False  # measured per call on small messages
    max_measured: Optional[int] = None  # larger sizes are extrapolated from the largest measured one
    min_size: Optional[int] = None  # smaller sizes are not run
    threads = 1

    def __init__(self) -> None:
        self.data: Optional[Data] = None
        self.slots = Slots()
        self.first_checked = False

    # lifecycle
    def load(self) -> None:
        for module in self.requires:
            _import(module)

    def setup(self, data: Data) -> None:
        self.data = data
        self.first_checked = False

    def teardown(self) -> None:
        self.slots.release()
        self.data = None

    def context(self):
        return contextlib.nullcontext()

    # per operation
    def out_size(self, op: str) -> int:
        """Bytes one call's output keeps alive (bounds how many calls a batch makes)."""
        return self.data.size

    def reserve(self, op: str, n: int) -> None:
        """Prepares ``n`` distinct outputs (implementations that write into caller buffers)."""

    def prepare(self, op: str) -> None:
        """Runs before each timed run: zeroes caller buffers so stale output cannot pass."""
        self.slots.zero()

    def call(self, op: str) -> Callable[[int], object]:
        raise NotImplementedError

    def verify(self, op: str, out, i: int) -> None:
        raise NotImplementedError

    def version(self) -> Optional[str]:
        return None


# ---- ceilings


class Memcpy(Impl):
    """np.copyto of the buffer into a pre-faulted one; with threads > 1 split across a pool."""

    group = "ceiling"
    cipher = "none (copy)"
    ops = ("copy",)

    def __init__(self, threads: int) -> None:
        super().__init__()
        self.threads = threads
        self.name = f"memcpy_t{threads}"
        self.label = "memcpy (np.copyto)" if threads == 1 else "memcpy (np.copyto, split across threads)"
        if threads > 1:
            self.min_size = 1 << 20  # below 1 MiB handing parts to threads costs more than the copy
        self.pool: Optional[ThreadPoolExecutor] = None
        self.parts: list = []

    def setup(self, data: Data) -> None:
        super().setup(data)
        if self.threads > 1:
            self.pool = ThreadPoolExecutor(self.threads, thread_name_prefix="memcpy")

    def teardown(self) -> None:
        if self.pool is not None:
            self.pool.shutdown()
            self.pool = None
        self.parts = []
        super().teardown()

    def reserve(self, op: str, n: int) -> None:
        self.slots.reserve(n, self.data.size)
        src = self.data.plaintext
        step = -(-self.data.size // self.threads)
        step = -(-step // 64) * 64  # cache-line aligned parts
        self.parts = [[(dst[o:o + step], src[o:o + step]) for o in range(0, self.data.size, step)]
                      for dst in self.slots.views]

    def call(self, op: str) -> Callable[[int], object]:
        src, views = self.data.plaintext, self.slots.views
        if self.threads == 1:
            return lambda i: np.copyto(views[i], src)
        pool, parts = self.pool, self.parts

        def copy(i):
            for future in [pool.submit(np.copyto, d, s) for d, s in parts[i]]:
                future.result()

        return copy

    def verify(self, op: str, out, i: int) -> None:
        self.data.require_plain(f"{self.label} threads={self.threads}", self.slots.views[i])


# ---- shardseal


class ShardsealInto(Impl):
    """shardseal.encrypt_into / decrypt_into: into caller buffers (pre-faulted)."""

    group = "shardseal"
    cipher = "AES-256-GCM, Cobblestone"
    backend = "native"

    def __init__(self, threads: Optional[int]) -> None:
        super().__init__()
        self.threads = threads
        tag = "all" if threads is None else threads
        self.name = f"{self.backend}_into_t{tag}"
        self.label = f"shardseal {self.backend} encrypt_into / decrypt_into"
        self.blob = None
        self.enc_size = 0

    def setup(self, data: Data) -> None:
        super().setup(data)
        self.enc_size = shardseal.encrypted_size(data.size)
        self.blob = data.container()

    def teardown(self) -> None:
        self.blob = None
        super().teardown()

    def context(self):
        return use_backend(self.backend)

    def out_size(self, op: str) -> int:
        return self.enc_size if op == "encrypt" else self.data.size

    def reserve(self, op: str, n: int) -> None:
        self.slots.reserve(n, self.out_size(op))

    def call(self, op: str) -> Callable[[int], object]:
        d, views, threads = self.data, self.slots.views, self.threads
        if op == "encrypt":
            return lambda i: shardseal.encrypt_into(d.plaintext, d.key, views[i], threads=threads)
        blob = self.blob
        return lambda i: shardseal.decrypt_into(blob, d.key, views[i], threads=threads)

    def verify(self, op: str, out, i: int) -> None:
        label = f"{self.label} {op} threads={self.threads}"
        if op == "encrypt":
            self.data.open_container(self.slots.views[i][:out], label, independent=not self.first_checked)
            self.first_checked = True
        else:
            if out != self.data.size:
                raise VerificationError(f"{label}: wrote {out} bytes, expected {self.data.size}")
            self.data.require_plain(label, self.slots.views[i])


class PythonInto(ShardsealInto):
    """The pure-Python backend (on cryptography's AESGCM), threads=1."""

    backend = "python"

    def __init__(self) -> None:
        super().__init__(threads=1)
        self.label = "shardseal python backend encrypt_into / decrypt_into"


class ShardsealAlloc(ShardsealInto):
    """shardseal.encrypt / decrypt: allocate and return bytes."""

    def __init__(self, threads: Optional[int], backend: str = "native") -> None:
        self.backend = backend
        super().__init__(threads)
        self.name = f"{backend}_alloc_t{'all' if threads is None else threads}"
        self.label = f"shardseal.encrypt / decrypt ({backend}, allocating)"
        # threads=None (every core) is the default a user gets: the latency rows use it; the
        # throughput rows name each thread count instead
        self.latency = threads is None
        self.throughput = threads is not None

    def reserve(self, op: str, n: int) -> None:
        pass

    def call(self, op: str) -> Callable[[int], object]:
        d, threads = self.data, self.threads
        if op == "encrypt":
            return lambda i: shardseal.encrypt(d.plaintext, d.key, threads=threads)
        blob = self.blob
        return lambda i: shardseal.decrypt(blob, d.key, threads=threads)

    def verify(self, op: str, out, i: int) -> None:
        label = f"{self.label} {op} threads={self.threads}"
        if op == "encrypt":
            self.data.open_container(out, label, independent=not self.first_checked)
            self.first_checked = True
        else:
            self.data.require_plain(label, out)


class ShardsealCobblestone(Impl):
    """shardseal.cobblestone.encrypt / decrypt: bare Cobblestone messages, no container header."""

    name = "shardseal_cobblestone"
    label = "shardseal.cobblestone.encrypt / decrypt (native)"
    group = "shardseal"
    cipher = "AES-256-GCM, Cobblestone"
    throughput = False
    latency = True

    def setup(self, data: Data) -> None:
        super().setup(data)
        self.message = data.message()

    def context(self):
        return use_backend("native")

    def call(self, op: str) -> Callable[[int], object]:
        d = self.data
        if op == "encrypt":
            return lambda i: shardseal_cobblestone.encrypt(d.plaintext, d.key)
        message = self.message
        return lambda i: shardseal_cobblestone.decrypt(message, d.key)

    def verify(self, op: str, out, i: int) -> None:
        if op == "encrypt":
            self.data.open_message(out, f"{self.label} encrypt")
        else:
            self.data.require_plain(f"{self.label} decrypt", out)


# ---- peers: cryptography


class CryptographyCobblestone(Impl):
    """cryptography.cobblestone (update + finalize): the same format from another implementation."""

    name = "cryptography_cobblestone"
    label = "cryptography.cobblestone (update+finalize)"
    cipher = "AES-256-GCM, Cobblestone"
    requires = ("cryptography.cobblestone",)
    latency = True

    def setup(self, data: Data) -> None:
        super().setup(data)
        from cryptography.cobblestone import Cobblestone256Decryptor, Cobblestone256Encryptor

        self.Enc, self.Dec = Cobblestone256Encryptor, Cobblestone256Decryptor
        self.message = data.message()  # made by shardseal: decrypting it is also an interop check

    def teardown(self) -> None:
        self.message = None
        super().teardown()

    def call(self, op: str) -> Callable[[int], object]:
        Enc, Dec, d = self.Enc, self.Dec, self.data
        if op == "encrypt":
            def encrypt(i):
                encryptor = Enc(d.key, b"")
                return [encryptor.update(d.plaintext), encryptor.finalize()]

            return encrypt
        message = self.message

        def decrypt(i):
            decryptor = Dec(d.key, b"")
            return [decryptor.update(message), decryptor.finalize()]

        return decrypt

    def verify(self, op: str, out, i: int) -> None:
        if op == "encrypt":
            self.data.open_message(b"".join(out), f"{self.label} encrypt")  # opened by shardseal
        else:
            require_parts_equal(f"{self.label} decrypt", out, self.data.plaintext)

    def version(self) -> Optional[str]:
        return module_version("cryptography")


class CryptographyCobblestoneInto(CryptographyCobblestone):
    """cryptography.cobblestone update_into a pre-faulted buffer (no allocation of the output)."""

    name = "cryptography_cobblestone_into"
    label = "cryptography.cobblestone (update_into)"
    latency = False

    def out_size(self, op: str) -> int:
        # update_into wants room for a whole extra chunk beyond what it writes
        return (shardseal_cobblestone.encrypted_size(self.data.size) if op == "encrypt" else self.data.size) \
            + AESGCM_CHUNK + 64

    def reserve(self, op: str, n: int) -> None:
        self.slots.reserve(n, self.out_size(op))

    def call(self, op: str) -> Callable[[int], object]:
        Enc, Dec, d, views = self.Enc, self.Dec, self.data, self.slots.views
        if op == "encrypt":
            def encrypt(i):
                encryptor = Enc(d.key, b"")
                n = encryptor.update_into(d.plaintext, views[i])
                return n, encryptor.finalize()

            return encrypt
        message = self.message

        def decrypt(i):
            decryptor = Dec(d.key, b"")
            n = decryptor.update_into(message, views[i])
            return n, decryptor.finalize()

        return decrypt

    def verify(self, op: str, out, i: int) -> None:
        n, tail = out
        if op == "encrypt":
            self.data.open_message(self.slots.views[i][:n].tobytes() + tail, f"{self.label} encrypt")
        else:
            require_parts_equal(f"{self.label} decrypt", [self.slots.views[i][:n], tail], self.data.plaintext)


class AESGCMOneShot(Impl):
    """cryptography's AESGCM over the whole message in one call (a fresh random nonce per call)."""

    name = "aesgcm_oneshot"
    label = "cryptography AESGCM (one-shot)"
    cipher = "AES-256-GCM, one message"
    requires = ("cryptography.hazmat.primitives.ciphers.aead",)
    latency = True

    def setup(self, data: Data) -> None:
        super().setup(data)
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        self.aead = AESGCM(data.key)
        self.nonce = os.urandom(12)
        self.ciphertext = self.aead.encrypt(self.nonce, data.plaintext, None)

    def teardown(self) -> None:
        self.ciphertext = None
        super().teardown()

    def call(self, op: str) -> Callable[[int], object]:
        aead, d, urandom = self.aead, self.data, os.urandom
        if op == "encrypt":
            def encrypt(i):
                nonce = urandom(12)
                return nonce, aead.encrypt(nonce, d.plaintext, None)

            return encrypt
        nonce, ciphertext = self.nonce, self.ciphertext
        return lambda i: aead.decrypt(nonce, ciphertext, None)

    def verify(self, op: str, out, i: int) -> None:
        if op == "encrypt":
            nonce, ciphertext = out
            self.data.require_plain(f"{self.label} encrypt", self.aead.decrypt(nonce, ciphertext, None))
        else:
            self.data.require_plain(f"{self.label} decrypt", out)

    def version(self) -> Optional[str]:
        return module_version("cryptography")


class AESGCMChunked(AESGCMOneShot):
    """cryptography's AESGCM in 16 KiB records with encrypt_into / decrypt_into, a Python loop.

    Record k uses nonce = 4 random bytes || k (8 bytes, big-endian); each record carries its tag.
    """

    name = "aesgcm_chunked"
    label = "cryptography AESGCM, 16 KiB chunks (encrypt_into)"
    cipher = "AES-256-GCM, 16 KiB records"
    latency = False

    def setup(self, data: Data) -> None:
        Impl.setup(self, data)
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        self.aead = AESGCM(data.key)
        self.nchunks = max(1, -(-data.size // AESGCM_CHUNK))
        self.enc_size = data.size + 16 * self.nchunks
        self.prefix = os.urandom(4)
        self.ciphertext = np.zeros(self.enc_size, np.uint8)
        self._encrypt_into(self.prefix, self.ciphertext)

    def _encrypt_into(self, prefix: bytes, out) -> None:
        aead, src, dst, size = self.aead, memoryview(self.data.plaintext), memoryview(out), self.data.size
        o = 0
        for k in range(self.nchunks):
            i = k * AESGCM_CHUNK
            n = min(AESGCM_CHUNK, size - i)
            aead.encrypt_into(prefix + k.to_bytes(8, "big"), src[i:i + n], None, dst[o:o + n + 16])
            o += n + 16

    def _decrypt_into(self, prefix: bytes, ciphertext, out) -> None:
        aead, src, dst, size = self.aead, memoryview(ciphertext), memoryview(out), self.data.size
        o = 0
        for k in range(self.nchunks):
            i = k * AESGCM_CHUNK
            n = min(AESGCM_CHUNK, size - i)
            aead.decrypt_into(prefix + k.to_bytes(8, "big"), src[o:o + n + 16], None, dst[i:i + n])
            o += n + 16

    def out_size(self, op: str) -> int:
        return self.enc_size if op == "encrypt" else self.data.size

    def reserve(self, op: str, n: int) -> None:
        self.slots.reserve(n, self.out_size(op))

    def call(self, op: str) -> Callable[[int], object]:
        views, urandom = self.slots.views, os.urandom
        if op == "encrypt":
            encrypt_into = self._encrypt_into

            def encrypt(i):
                prefix = urandom(4)
                encrypt_into(prefix, views[i])
                return prefix

            return encrypt
        decrypt_into, prefix, ciphertext = self._decrypt_into, self.prefix, self.ciphertext
        return lambda i: decrypt_into(prefix, ciphertext, views[i])

    def verify(self, op: str, out, i: int) -> None:
        if op == "encrypt":
            check = self.data.check_buffer()
            self._decrypt_into(out, self.slots.views[i], check)
            self.data.require_plain(f"{self.label} encrypt", check)
        else:
            self.data.require_plain(f"{self.label} decrypt", self.slots.views[i])


class Fernet(Impl):
    """cryptography's Fernet: AES-128-CBC + HMAC-SHA256, base64 token, bytes in and out."""

    name = "fernet"
    label = "cryptography Fernet"
    cipher = "AES-128-CBC + HMAC-SHA256, base64"
    requires = ("cryptography.fernet",)
    latency = True

    def setup(self, data: Data) -> None:
        super().setup(data)
        from cryptography.fernet import Fernet as _Fernet

        self.fernet = _Fernet(_Fernet.generate_key())
        self.token = self.fernet.encrypt(data.bytes)

    def teardown(self) -> None:
        self.token = None
        super().teardown()

    def out_size(self, op: str) -> int:
        return self.data.size * 4 // 3 + 100 if op == "encrypt" else self.data.size

    def call(self, op: str) -> Callable[[int], object]:
        f, d = self.fernet, self.data
        if op == "encrypt":
            return lambda i: f.encrypt(d.bytes)
        token = self.token
        return lambda i: f.decrypt(token)

    def verify(self, op: str, out, i: int) -> None:
        if op == "encrypt":
            out = self.fernet.decrypt(out)
        self.data.require_plain(f"{self.label} {op}", out)

    def version(self) -> Optional[str]:
        return module_version("cryptography")


# ---- peers: other libraries


class PyCryptodome(Impl):
    """pycryptodome AES.MODE_GCM, one-shot encrypt_and_digest / decrypt_and_verify."""

    name = "pycryptodome"
    label = "pycryptodome AES GCM (one-shot)"
    cipher = "AES-256-GCM, one message"
    requires = ("Crypto.Cipher.AES",)
    latency = True

    def setup(self, data: Data) -> None:
        super().setup(data)
        from Crypto.Cipher import AES

        self.AES = AES
        self.nonce = os.urandom(12)
        self.ciphertext, self.tag = AES.new(data.key, AES.MODE_GCM, nonce=self.nonce).encrypt_and_digest(data.bytes)

    def teardown(self) -> None:
        self.ciphertext = None
        super().teardown()

    def call(self, op: str) -> Callable[[int], object]:
        AES, d, urandom = self.AES, self.data, os.urandom
        if op == "encrypt":
            def encrypt(i):
                nonce = urandom(12)
                return (nonce,) + AES.new(d.key, AES.MODE_GCM, nonce=nonce).encrypt_and_digest(d.bytes)

            return encrypt
        nonce, ciphertext, tag = self.nonce, self.ciphertext, self.tag
        return lambda i: AES.new(d.key, AES.MODE_GCM, nonce=nonce).decrypt_and_verify(ciphertext, tag)

    def verify(self, op: str, out, i: int) -> None:
        if op == "encrypt":
            nonce, ciphertext, tag = out
            out = self.AES.new(self.data.key, self.AES.MODE_GCM, nonce=nonce).decrypt_and_verify(ciphertext, tag)
        self.data.require_plain(f"{self.label} {op}", out)

    def version(self) -> Optional[str]:
        return module_version("Crypto")


class _KeepOpen(io.BytesIO):
    """tink closes the stream it writes to; keep the bytes readable afterwards."""

    def close(self) -> None:
        pass


class TinkStreaming(Impl):
    """tink StreamingAead AES256_GCM_HKDF_1MB through in-memory streams."""

    name = "tink_streaming"
    label = "tink StreamingAead AES256_GCM_HKDF_1MB"
    cipher = "AES-256-GCM, 1 MB segments (HKDF)"
    requires = ("tink", "tink.streaming_aead")

    def setup(self, data: Data) -> None:
        super().setup(data)
        import tink
        from tink import streaming_aead

        streaming_aead.register()
        handle = tink.new_keyset_handle(streaming_aead.streaming_aead_key_templates.AES256_GCM_HKDF_1MB)
        self.primitive = handle.primitive(streaming_aead.StreamingAead)
        self.ciphertext = self.call("encrypt")(0)

    def teardown(self) -> None:
        self.ciphertext = None
        super().teardown()

    def out_size(self, op: str) -> int:
        return self.data.size * 2  # BytesIO over-allocates while it grows

    def call(self, op: str) -> Callable[[int], object]:
        primitive, d = self.primitive, self.data
        if op == "encrypt":
            def encrypt(i):
                sink = _KeepOpen()
                with primitive.new_encrypting_stream(sink, b"") as stream:
                    stream.write(memoryview(d.plaintext))
                return sink.getvalue()

            return encrypt
        ciphertext = self.ciphertext
        return lambda i: self._decrypt(ciphertext)

    def _decrypt(self, ciphertext) -> bytes:
        with self.primitive.new_decrypting_stream(io.BytesIO(ciphertext), b"") as stream:
            return stream.read()

    def verify(self, op: str, out, i: int) -> None:
        if op == "encrypt":
            out = self._decrypt(out)
        self.data.require_plain(f"{self.label} {op}", out)

    def version(self) -> Optional[str]:
        return module_version("tink")


class TinkAead(Impl):
    """tink Aead AES256_GCM: tink's primitive for small messages (latency only)."""

    name = "tink_aead"
    label = "tink Aead AES256_GCM"
    cipher = "AES-256-GCM, one message"
    requires = ("tink", "tink.aead")
    throughput = False
    latency = True

    def setup(self, data: Data) -> None:
        super().setup(data)
        import tink
        from tink import aead

        aead.register()
        self.primitive = tink.new_keyset_handle(aead.aead_key_templates.AES256_GCM).primitive(aead.Aead)
        self.ciphertext = self.primitive.encrypt(data.bytes, b"")

    def call(self, op: str) -> Callable[[int], object]:
        primitive, d = self.primitive, self.data
        if op == "encrypt":
            return lambda i: primitive.encrypt(d.bytes, b"")
        ciphertext = self.ciphertext
        return lambda i: primitive.decrypt(ciphertext, b"")

    def verify(self, op: str, out, i: int) -> None:
        if op == "encrypt":
            out = self.primitive.decrypt(out, b"")
        self.data.require_plain(f"{self.label} {op}", out)

    def version(self) -> Optional[str]:
        return module_version("tink")


class Pyrage(Impl):
    """pyrage (age): an X25519 recipient, ChaCha20-Poly1305 in 64 KiB chunks, bytes in and out."""

    name = "pyrage"
    label = "pyrage (age, X25519 recipient)"
    cipher = "ChaCha20-Poly1305, age"
    requires = ("pyrage",)
    latency = True

    def setup(self, data: Data) -> None:
        super().setup(data)
        import pyrage

        self.pyrage = pyrage
        self.identity = pyrage.x25519.Identity.generate()
        self.recipient = self.identity.to_public()
        self.ciphertext = pyrage.encrypt(data.bytes, [self.recipient])

    def teardown(self) -> None:
        self.ciphertext = None
        super().teardown()

    def call(self, op: str) -> Callable[[int], object]:
        pyrage, d = self.pyrage, self.data
        if op == "encrypt":
            recipients = [self.recipient]
            return lambda i: pyrage.encrypt(d.bytes, recipients)
        identities, ciphertext = [self.identity], self.ciphertext
        return lambda i: pyrage.decrypt(ciphertext, identities)

    def verify(self, op: str, out, i: int) -> None:
        if op == "encrypt":
            out = self.pyrage.decrypt(out, [self.identity])
        self.data.require_plain(f"{self.label} {op}", out)

    def version(self) -> Optional[str]:
        return module_version("pyrage")


class Pyaes(Impl):
    """pyaes AES-256-CTR: AES in pure Python (CTR only, no authentication: a lower bound).

    Measured up to PYAES_MAX bytes; its per-byte cost does not depend on the message size, so
    larger sizes are extrapolated from the largest measured one and marked as such. Outputs are
    checked against cryptography's AES-CTR, an independent implementation.
    """

    name = "pyaes"
    label = "pyaes AES-CTR (pure Python)"
    cipher = "AES-256-CTR, no auth"
    requires = ("pyaes",)
    latency = True
    max_measured = PYAES_MAX

    def setup(self, data: Data) -> None:
        super().setup(data)
        import pyaes

        self.pyaes = pyaes
        self.iv = int.from_bytes(os.urandom(16), "big")
        self.ciphertext = self._ctr(self.iv)

    def _ctr(self, iv: int) -> bytes:
        mode = self.pyaes.AESModeOfOperationCTR(self.data.key, counter=self.pyaes.Counter(initial_value=iv))
        return mode.encrypt(self.data.bytes)

    def call(self, op: str) -> Callable[[int], object]:
        pyaes, d = self.pyaes, self.data
        if op == "encrypt":
            def encrypt(i):
                iv = int.from_bytes(os.urandom(16), "big")
                mode = pyaes.AESModeOfOperationCTR(d.key, counter=pyaes.Counter(initial_value=iv))
                return iv, mode.encrypt(d.bytes)

            return encrypt
        iv, ciphertext = self.iv, self.ciphertext

        def decrypt(i):
            return pyaes.AESModeOfOperationCTR(d.key, counter=pyaes.Counter(initial_value=iv)).decrypt(ciphertext)

        return decrypt

    def verify(self, op: str, out, i: int) -> None:
        from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

        if op == "encrypt":
            iv, ciphertext = out
        else:
            iv, ciphertext = self.iv, self.ciphertext
            self.data.require_plain(f"{self.label} decrypt", out)
        decryptor = Cipher(algorithms.AES(self.data.key), modes.CTR(iv.to_bytes(16, "big"))).decryptor()
        self.data.require_plain(f"{self.label} {op} (checked by cryptography AES-CTR)",
                                decryptor.update(ciphertext) + decryptor.finalize())

    def version(self) -> Optional[str]:
        return module_version("pyaes")


def thread_counts(ncores: int) -> list:
    """1, 2, 4, ... up to and including ncores."""
    counts, t = [], 1
    while t < ncores:
        counts.append(t)
        t *= 2
    counts.append(ncores)
    return counts


def implementations(threads: list) -> list:
    """Every implementation, in table order, for the given thread counts."""
    impls: list = [Memcpy(t) for t in threads]
    impls += [ShardsealInto(t) for t in threads]
    impls += [ShardsealAlloc(t) for t in threads]
    impls += [ShardsealAlloc(None), ShardsealCobblestone(), PythonInto(), ShardsealAlloc(None, backend="python")]
    impls += [CryptographyCobblestone(), CryptographyCobblestoneInto(), AESGCMOneShot(), AESGCMChunked(),
              PyCryptodome(), TinkStreaming(), TinkAead(), Fernet(), Pyrage(), Pyaes()]
    return impls


# --------------------------------------------------------------------------------------
# Timing one implementation and operation


class Runner:
    """Calibrates and runs batches of calls of one implementation's operation on one Data.

    ``calibrate`` makes one untimed, verified call (it doubles as the warm-up) and picks the
    number of calls per timed run: enough for a run to last ``target_seconds``, but no more
    outputs than fit in ``retain_bytes`` (every output of a run is kept until it is verified).
    ``run`` returns the list of outputs of one batch, ``verify`` checks all of them, ``prepare``
    zeroes caller buffers before a run.
    """

    def __init__(self, impl: Impl, op: str, target_seconds: float, retain_bytes: int = 64 << 20) -> None:
        self.impl = impl
        self.op = op
        self.target_seconds = target_seconds
        self.retain_bytes = retain_bytes
        self.calls = 1
        self.first_seconds = 0.0
        self.verify_seconds = 0.0
        self.fn: Optional[Callable[[int], object]] = None

    def calibrate(self) -> None:
        impl, op = self.impl, self.op
        impl.reserve(op, 1)
        impl.prepare(op)
        fn = impl.call(op)
        start = time.perf_counter()
        out = fn(0)
        self.first_seconds = time.perf_counter() - start
        start = time.perf_counter()
        impl.verify(op, out, 0)
        self.verify_seconds = time.perf_counter() - start
        del out
        by_time = math.ceil(self.target_seconds / max(self.first_seconds, 1e-7))
        by_memory = max(1, self.retain_bytes // max(1, impl.out_size(op)))
        self.calls = max(1, min(by_time, by_memory))
        if self.calls > 1:
            impl.reserve(op, self.calls)
            # a second calibration on a warm call: the first one may have paid one-off costs
            fn = impl.call(op)
            impl.prepare(op)
            start = time.perf_counter()
            out = fn(0)
            warm = time.perf_counter() - start
            impl.verify(op, out, 0)
            del out
            self.calls = max(1, min(math.ceil(self.target_seconds / max(warm, 1e-7)), by_memory))
            impl.reserve(op, self.calls)
        self.fn = impl.call(op)

    def prepare(self) -> None:
        self.impl.prepare(self.op)

    def run(self) -> list:
        fn = self.fn
        return [fn(i) for i in range(self.calls)]

    def verify(self, outs: list) -> None:
        impl, op = self.impl, self.op
        for i, out in enumerate(outs):
            impl.verify(op, out, i)
