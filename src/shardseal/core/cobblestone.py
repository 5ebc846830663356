"""Raw C2SP chunked encryption messages (https://c2sp.org/chunked-encryption).

These are bare Cobblestone messages, byte-compatible with ``cryptography.cobblestone``: no
shardseal header, no key id, no metadata. Most users want ``shardseal.encrypt`` instead.
Cobblestone-256 takes a 32-byte key, Cobblestone-128 a 16-byte key.
"""

from __future__ import annotations

import os
from typing import Optional

from . import backend as _backend, buffers as _buffers, layout as _layout
from .buffers import BytesLike
from .layout import Suite

__all__ = ["decrypt", "decrypt_into", "encrypt", "encrypt_into", "encrypted_size", "decrypted_size"]


def _check(key: BytesLike, suite: object) -> bytes:
    if isinstance(suite, bool) or suite not in _layout.SUITE_KEY_SIZES:
        raise ValueError(f"suite must be 256 or 128, got {suite if isinstance(suite, int) else type(suite).__name__}")
    size = _layout.SUITE_KEY_SIZES[suite]
    if type(key) is bytes and len(key) == size:
        return key  # immutable already: no copy needed
    view = _buffers.readable(key, "key")
    if view.nbytes != size:
        raise ValueError(f"Cobblestone-{suite} needs a {size}-byte key, got {view.nbytes}")
    return view.tobytes()


def encrypted_size(plaintext_size: int) -> int:
    """The size of the message ``encrypt`` makes from plaintext_size bytes."""
    return _layout.message_size(plaintext_size)


def decrypted_size(message_size: int) -> int:
    """The plaintext size of a message of message_size bytes.

    Raises:
        TruncatedError: no complete message has this size.
    """
    return _layout.message_plaintext_size(message_size)


def encrypt(data: BytesLike, key: BytesLike, context: BytesLike = b"", *, suite: Suite = 256,
            threads: Optional[int] = None) -> bytes:
    """Encrypts data into a Cobblestone message with a fresh random salt.

    Args:
        data: any bytes-like object.
        key: 32 bytes for suite 256, 16 bytes for suite 128.
        context: bytes bound into the key derivation; decryption needs the same context.
        suite: 256 (AES-256-GCM) or 128 (AES-128-GCM).
        threads: worker threads; None uses every available CPU.

    Raises:
        TypeError: data, key or context is not bytes-like.
        ValueError: a key of the wrong length, an unknown suite or a bad thread count.
    """
    key = _check(key, suite)
    source = _buffers.readable_bytes(data, "data")
    message: bytes = _backend.impl.seal(suite, key, os.urandom(_layout.SALT_SIZE), _buffers.readable_bytes(context, "context"),
                              source, _buffers.thread_count(threads, len(source)), b"")
    return message


def encrypt_into(data: BytesLike, key: BytesLike, out: BytesLike, context: BytesLike = b"", *, suite: Suite = 256,
                 threads: Optional[int] = None) -> int:
    """Encrypts data into the caller's buffer (``encrypted_size(len(data))`` bytes).

    Returns:
        The number of bytes written.

    Raises:
        TypeError: data, key or context is not bytes-like, or out is read-only.
        ValueError: a key of the wrong length, an unknown suite, a bad thread count, or an
            out that is too small or overlaps data.
    """
    key = _check(key, suite)
    source = _buffers.readable(data, "data")
    target = _buffers.writable(out, "out")
    _buffers.check_no_overlap(source, target)
    _buffers.require_room(target, _layout.message_size(source.nbytes))
    written: int = _backend.impl.seal_into(suite, key, os.urandom(_layout.SALT_SIZE), _buffers.readable(context, "context"),
                                   source, target, _buffers.thread_count(threads, source.nbytes))
    return written


def decrypt(message: BytesLike, key: BytesLike, context: BytesLike = b"", *, suite: Suite = 256,
            threads: Optional[int] = None) -> bytes:
    """Decrypts a Cobblestone message, checking the commitment first and every chunk.

    Raises:
        AuthenticationError: tampering, a wrong key or a wrong context.
        TruncatedError: the message lacks its final chunk or is shorter than its header.
        TypeError, ValueError: bad arguments.
    """
    key = _check(key, suite)
    source = _buffers.readable_bytes(message, "message")
    plaintext: bytes = _backend.impl.open(suite, key, _buffers.readable_bytes(context, "context"), source,
                                          _buffers.thread_count(threads, len(source)))
    return plaintext


def decrypt_into(message: BytesLike, key: BytesLike, out: BytesLike, context: BytesLike = b"", *, suite: Suite = 256,
                 threads: Optional[int] = None) -> int:
    """Decrypts a message into the caller's buffer (``decrypted_size(len(message))`` bytes).

    On failure ``out`` is zeroed: no unauthenticated plaintext is left in it.

    Returns:
        The number of plaintext bytes written.

    Raises:
        AuthenticationError: tampering, a wrong key or a wrong context.
        TruncatedError: the message lacks its final chunk or is shorter than its header.
        TypeError: an argument is not bytes-like, or out is read-only.
        ValueError: other bad arguments, or an out that is too small or overlaps message.
    """
    key = _check(key, suite)
    source = _buffers.readable(message, "message")
    target = _buffers.writable(out, "out")
    _buffers.check_no_overlap(source, target)
    _buffers.require_room(target, _layout.message_plaintext_size(source.nbytes))
    written: int = _backend.impl.open_into(suite, key, _buffers.readable(context, "context"), source, target,
                                           _buffers.thread_count(threads, source.nbytes))
    return written
