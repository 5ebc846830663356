"""The direct key: the caller's own 32-byte key, its public key id and the input key derived from it.

Envelope keys (recipients and identities) are in ``keys.envelope``; both end in ``input_key``.
"""

from __future__ import annotations

from typing import Any

from ..core import backend as _backend
from ..core.buffers import BytesLike
from . import stanzas as _stanzas
from .stanzas import Stanza

KEY_SIZE = 32
# A caller's raw direct key: any bytes-like object of KEY_SIZE bytes (not its text: str is
# refused). The key= argument of the public functions also takes key references: keyref.KeyLike.
RawKeyLike = BytesLike
KEY_ID_SIZE = _stanzas.KEY_ID_SIZE

_KEY_ID_INFO = b"shardseal/v1/direct-key-id"
_COBBLESTONE_128_KEY_INFO = b"shardseal/v1/cobblestone-128-key"


def check_key(key: Any) -> bytes:
    """Validates a caller's key and returns it as bytes.

    Raises:
        TypeError: key is not bytes-like.
        ValueError: key is not 32 bytes long.
    """
    if isinstance(key, str):
        raise TypeError("key must be 32 bytes, not str (load the key's bytes, not its text)")
    try:
        view = memoryview(key)
    except TypeError:
        raise TypeError(f"key must be a bytes-like object, not {type(key).__name__}") from None
    if view.nbytes != KEY_SIZE:
        raise ValueError(f"key must be {KEY_SIZE} bytes, got {view.nbytes}")
    return view.tobytes()


def key_id(key: bytes) -> bytes:
    """The key's public fingerprint: HKDF-Expand-SHA512(key, "shardseal/v1/direct-key-id")."""
    derived: bytes = _backend.impl.hkdf_expand_sha512(key, _KEY_ID_INFO, KEY_ID_SIZE)
    return derived


def direct_stanza(key: bytes) -> Stanza:
    """The stanza that names a caller's key by its id."""
    return Stanza(_stanzas.DIRECT, key_id(key))


def input_key(key: bytes, suite: int) -> bytes:
    """The Cobblestone input key for a direct key: the key itself for Cobblestone-256; for
    Cobblestone-128, a 16-byte key derived with HKDF (never a truncation)."""
    if suite == 256:
        return key
    derived: bytes = _backend.impl.hkdf_expand_sha512(key, _COBBLESTONE_128_KEY_INFO, 16)
    return derived

