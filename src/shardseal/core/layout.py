"""Sizes of Cobblestone messages (C2SP chunked encryption), shared by both backends."""

from __future__ import annotations

from typing import Literal

from ..errors import FormatError, TruncatedError

CHUNK_SIZE = 16384
TAG_SIZE = 16
SEALED_CHUNK_SIZE = CHUNK_SIZE + TAG_SIZE
SALT_SIZE = 24
COMMITMENT_SIZE = 32
MESSAGE_HEADER_SIZE = SALT_SIZE + COMMITMENT_SIZE
MAX_CHUNKS = 1 << 38

# The suite argument of the public functions: Cobblestone-256 (the default) or Cobblestone-128.
Suite = Literal[256, 128]
SUITE_KEY_SIZES = {256: 32, 128: 16}
SUITE_AEAD_NAMES = {256: b"AEAD_AES_256_GCM", 128: b"AEAD_AES_128_GCM"}


def chunk_count(plaintext_size: int, final: bool = True) -> int:
    """Number of chunks holding plaintext_size bytes (a final run adds a short chunk)."""
    return plaintext_size // CHUNK_SIZE + (1 if final else 0)


def sealed_size(plaintext_size: int, final: bool = True) -> int:
    """Ciphertext size of a run of chunks (without the message's salt and commitment).

    Raises:
        ValueError: a non-final run that does not hold whole chunks.
    """
    if not final and plaintext_size % CHUNK_SIZE:
        raise ValueError("a non-final run of chunks must hold whole 16 KiB chunks")
    return plaintext_size + chunk_count(plaintext_size, final) * TAG_SIZE


def opened_size(ciphertext_size: int, final: bool = True) -> int:
    """Plaintext size of a run of sealed chunks.

    Raises:
        TruncatedError: a final run without its short final chunk.
        FormatError: a final run of more than MAX_CHUNKS chunks (no message is that long).
        ValueError: a non-final run that does not hold whole sealed chunks.
    """
    full, rest = divmod(ciphertext_size, SEALED_CHUNK_SIZE)
    if final and full >= MAX_CHUNKS:  # a final chunk after MAX_CHUNKS full ones: too many
        raise FormatError(f"message too long: {ciphertext_size} bytes of chunks would pass the 2^38-chunk limit")
    if not final:
        if rest:
            raise ValueError("a non-final run of chunks must hold whole sealed chunks")
        return full * CHUNK_SIZE
    if rest == 0:
        raise TruncatedError("message truncated: the final chunk is missing")
    if rest < TAG_SIZE:
        raise TruncatedError("message truncated inside a chunk tag")
    return full * CHUNK_SIZE + rest - TAG_SIZE


def message_size(plaintext_size: int) -> int:
    """Size of the whole Cobblestone message for a plaintext of plaintext_size bytes."""
    return MESSAGE_HEADER_SIZE + sealed_size(plaintext_size)


def message_plaintext_size(message_size: int) -> int:
    """Plaintext size of a whole Cobblestone message of message_size bytes.

    Raises:
        TruncatedError: the size is not that of any complete message.
        FormatError: a size of more than 2^38 chunks.
    """
    if message_size < MESSAGE_HEADER_SIZE:
        raise TruncatedError("message truncated: shorter than its salt and commitment")
    return opened_size(message_size - MESSAGE_HEADER_SIZE)
