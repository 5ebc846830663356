"""The pure-Python backend: the native module's functions on ``cryptography``'s AESGCM.

It produces the same bytes as ``shardseal._native`` and raises the same errors. cryptography
holds the GIL while it encrypts, so this backend runs on one thread whatever ``threads`` says.
"""

from __future__ import annotations

import hmac
import os
import sys
from typing import NoReturn, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF, HKDFExpand

from . import layout as _layout
from .layout import CHUNK_SIZE, COMMITMENT_SIZE, SALT_SIZE, SEALED_CHUNK_SIZE, TAG_SIZE
from ..errors import AuthenticationError, TruncatedError

if sys.version_info >= (3, 12):
    from collections.abc import Buffer
else:
    from typing_extensions import Buffer

__all__ = [
    "CHUNK_SIZE",
    "COMMITMENT_SIZE",
    "MessageKeys",
    "SALT_SIZE",
    "TAG_SIZE",
    "default_threads",
    "gcm_open",
    "gcm_seal",
    "hkdf_expand_sha512",
    "hkdf_sha512",
    "open",
    "open_into",
    "seal",
    "seal_into",
]

_INFO_PREFIX = b"c2sp.org/chunked-encryption@v1+"
_NONCE_SIZE = 12
_HAS_INTO = hasattr(AESGCM, "encrypt_into") and hasattr(AESGCM, "decrypt_into")


class SizedBuffer(Protocol):
    """A buffer whose len() is its size in bytes, as this backend checks keys, salts and nonces
    (bytes, bytearray, a flat byte memoryview)."""

    def __buffer__(self, flags: int, /) -> memoryview: ...

    def __len__(self) -> int: ...


def default_threads() -> int:
    """Number of CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def hkdf_sha512(ikm: Buffer, salt: Buffer, info: Buffer, length: int) -> bytes:
    """HKDF-SHA512 (extract and expand)."""
    return HKDF(hashes.SHA512(), length, bytes(salt), bytes(info)).derive(bytes(ikm))


def hkdf_expand_sha512(prk: Buffer, info: Buffer, length: int) -> bytes:
    """HKDF-Expand-SHA512."""
    return HKDFExpand(hashes.SHA512(), length, bytes(info)).derive(bytes(prk))


def _check_nonce(nonce: SizedBuffer) -> None:
    if len(nonce) != _NONCE_SIZE:
        raise ValueError(f"nonce must be {_NONCE_SIZE} bytes, got {len(nonce)}")


def gcm_seal(key: Buffer, nonce: SizedBuffer, aad: Buffer, plaintext: Buffer) -> bytes:
    """Single-message AES-GCM with a 96-bit nonce; returns ciphertext || tag."""
    _check_nonce(nonce)
    return AESGCM(bytes(key)).encrypt(bytes(nonce), bytes(plaintext), bytes(aad) or None)


def gcm_open(key: Buffer, nonce: SizedBuffer, aad: Buffer, ciphertext: Buffer) -> bytes:
    """Opens ciphertext || tag; raises AuthenticationError."""
    _check_nonce(nonce)
    try:
        return AESGCM(bytes(key)).decrypt(bytes(nonce), bytes(ciphertext), bytes(aad) or None)
    except InvalidTag:
        raise AuthenticationError() from None


def _check_threads(threads: int) -> None:
    if threads < 1:
        raise ValueError("threads must be at least 1")


def _suite_key_size(suite: int) -> int:
    try:
        return _layout.SUITE_KEY_SIZES[suite]
    except KeyError:
        raise ValueError("suite must be 128 or 256") from None


def _check_room(out: memoryview, needed: int) -> None:
    if out.nbytes < needed:
        raise ValueError(f"output buffer too small: need {needed} bytes, got {out.nbytes}")


def _writable(out: Buffer) -> memoryview:
    view = memoryview(out)
    if view.readonly:
        raise TypeError("out must be a writable C-contiguous buffer")
    return view.cast("B")


def _zero(view: memoryview) -> None:
    if not view.nbytes:
        return
    zeros = bytes(min(view.nbytes, 1 << 20))
    for start in range(0, view.nbytes, len(zeros)):
        end = min(start + len(zeros), view.nbytes)
        view[start:end] = zeros[: end - start]


class MessageKeys:
    """Per-message Cobblestone keys for sealing and opening chunk runs."""

    def __init__(self, suite: int, key: SizedBuffer, salt: SizedBuffer, context: Buffer) -> None:
        key_size = _suite_key_size(suite)
        if len(key) != key_size:
            raise ValueError(f"Cobblestone-{suite} needs a {key_size}-byte key")
        if len(salt) != SALT_SIZE:
            raise ValueError(f"salt must be {SALT_SIZE} bytes, got {len(salt)}")
        info = _INFO_PREFIX + _layout.SUITE_AEAD_NAMES[suite] + b"\x00" + bytes(salt) + bytes(context)
        okm = hkdf_expand_sha512(key, info, key_size + _NONCE_SIZE + COMMITMENT_SIZE)
        self._aead = AESGCM(okm[:key_size])
        nonce = okm[key_size : key_size + _NONCE_SIZE]
        self._nonce_prefix = nonce[:7]
        self._nonce_low = int.from_bytes(nonce[7:], "big")
        self._commitment = okm[key_size + _NONCE_SIZE :]

    def __reduce__(self) -> NoReturn:
        raise TypeError("MessageKeys cannot be pickled")

    @property
    def commitment(self) -> bytes:
        return self._commitment

    def commitment_matches(self, candidate: Buffer) -> bool:
        return hmac.compare_digest(bytes(candidate), self._commitment)

    def _nonce(self, chunk: int) -> bytes:
        return self._nonce_prefix + (self._nonce_low ^ chunk).to_bytes(5, "big")

    def seal_chunks_into(self, first_chunk: int, plaintext: Buffer, out: Buffer, final: bool,
                         threads: int) -> int:
        _check_threads(threads)
        src = memoryview(plaintext).cast("B")
        dst = _writable(out)
        needed = _layout.sealed_size(src.nbytes, final)
        n_chunks = _layout.chunk_count(src.nbytes, final)
        _check_chunk_range(first_chunk, n_chunks)
        _check_room(dst, needed)
        aead = self._aead
        for i in range(n_chunks):
            chunk = src[i * CHUNK_SIZE : (i + 1) * CHUNK_SIZE]
            start = i * SEALED_CHUNK_SIZE
            end = start + len(chunk) + TAG_SIZE
            nonce = self._nonce(first_chunk + i)
            if _HAS_INTO:
                aead.encrypt_into(nonce, chunk, None, dst[start:end])
            else:
                dst[start:end] = aead.encrypt(nonce, chunk, None)
        return needed

    def open_chunks_into(self, first_chunk: int, ciphertext: Buffer, out: Buffer, final: bool,
                         threads: int) -> int:
        _check_threads(threads)
        src = memoryview(ciphertext).cast("B")
        dst = _writable(out)
        needed = _layout.opened_size(src.nbytes, final)
        n_chunks = -(-src.nbytes // SEALED_CHUNK_SIZE)
        _check_chunk_range(first_chunk, n_chunks)
        _check_room(dst, needed)
        aead = self._aead
        try:
            for i in range(n_chunks):
                sealed = src[i * SEALED_CHUNK_SIZE : (i + 1) * SEALED_CHUNK_SIZE]
                start = i * CHUNK_SIZE
                nonce = self._nonce(first_chunk + i)
                if _HAS_INTO:
                    aead.decrypt_into(nonce, sealed, None, dst[start : start + len(sealed) - TAG_SIZE])
                else:
                    dst[start : start + len(sealed) - TAG_SIZE] = aead.decrypt(nonce, sealed, None)
        except InvalidTag:
            _zero(dst[:needed])
            raise AuthenticationError() from None
        return needed

    def read_into(self, fd: int, data_start: int, plaintext_size: int, offset: int, out: Buffer,
                  threads: int) -> int:
        """Reads plaintext at offset into out from a message stored in file fd (as the native one).

        A read that reaches the end of the plaintext authenticates the final chunk, even when
        it holds none of the bytes read.
        """
        _check_threads(threads)
        dst = _writable(out)
        start = min(offset, plaintext_size)
        end = min(start + dst.nbytes, plaintext_size)
        final_index = plaintext_size // CHUNK_SIZE
        first = start // CHUNK_SIZE if start < end else final_index
        last = final_index if end == plaintext_size else (end - 1) // CHUNK_SIZE
        if first > last:
            return 0
        plain_end = min((last + 1) * CHUNK_SIZE, plaintext_size)
        sealed_len = plain_end - first * CHUNK_SIZE + (last - first + 1) * TAG_SIZE
        sealed = os.pread(fd, sealed_len, data_start + first * SEALED_CHUNK_SIZE)
        if len(sealed) != sealed_len:
            _zero(dst)
            raise TruncatedError("the file was truncated while being read")
        plain = bytearray(plain_end - first * CHUNK_SIZE)
        try:
            self.open_chunks_into(first, sealed, plain, last == final_index, 1)
        except AuthenticationError:
            _zero(dst)
            raise
        within = start - first * CHUNK_SIZE
        dst[: end - start] = plain[within : within + end - start]
        _zero(memoryview(plain))
        return end - start

    def read(self, fd: int, data_start: int, plaintext_size: int, offset: int, size: int, threads: int) -> bytes:
        """As read_into, returning a new bytes object of up to size bytes."""
        out = bytearray(max(0, min(size, plaintext_size - min(offset, plaintext_size))))
        self.read_into(fd, data_start, plaintext_size, offset, out, threads)
        return bytes(out)


def _check_chunk_range(first_chunk: int, n_chunks: int) -> None:
    if first_chunk < 0 or first_chunk + n_chunks > _layout.MAX_CHUNKS:
        raise ValueError("message exceeds 2^38 chunks")


def seal_into(suite: int, key: SizedBuffer, salt: SizedBuffer, context: Buffer, plaintext: Buffer,
              out: Buffer, threads: int) -> int:
    """Seals a whole Cobblestone message into out; returns the bytes written."""
    _check_threads(threads)
    dst = _writable(out)
    needed = _layout.message_size(memoryview(plaintext).nbytes)
    _check_room(dst, needed)
    keys = MessageKeys(suite, key, salt, context)
    dst[:SALT_SIZE] = salt
    dst[SALT_SIZE : _layout.MESSAGE_HEADER_SIZE] = keys.commitment
    keys.seal_chunks_into(0, plaintext, dst[_layout.MESSAGE_HEADER_SIZE :], True, threads)
    return needed


def open_into(suite: int, key: SizedBuffer, context: Buffer, message: Buffer, out: Buffer,
              threads: int) -> int:
    """Opens a whole Cobblestone message into out; returns the plaintext size."""
    _check_threads(threads)
    src = memoryview(message).cast("B")
    dst = _writable(out)
    needed = _layout.message_plaintext_size(src.nbytes)  # length first: it needs no key
    _check_room(dst, needed)
    keys = MessageKeys(suite, key, src[:SALT_SIZE], context)
    if not keys.commitment_matches(src[SALT_SIZE : _layout.MESSAGE_HEADER_SIZE]):
        raise AuthenticationError()
    keys.open_chunks_into(0, src[_layout.MESSAGE_HEADER_SIZE :], dst, True, threads)
    return needed


def seal(suite: int, key: SizedBuffer, salt: SizedBuffer, context: Buffer, plaintext: Buffer,
         threads: int, prefix: Buffer) -> bytes:
    """Returns prefix || the sealed Cobblestone message."""
    prefix = memoryview(prefix).cast("B")
    out = bytearray(prefix.nbytes + _layout.message_size(memoryview(plaintext).nbytes))
    out[: prefix.nbytes] = prefix
    seal_into(suite, key, salt, context, plaintext, memoryview(out)[prefix.nbytes :], threads)
    return bytes(out)


def open(suite: int, key: SizedBuffer, context: Buffer, message: Buffer,  # noqa: A001 (mirrors _native)
         threads: int) -> bytes:
    """Returns the plaintext of a whole message."""
    out = bytearray(_layout.message_plaintext_size(memoryview(message).nbytes))
    open_into(suite, key, context, message, out, threads)
    return bytes(out)
