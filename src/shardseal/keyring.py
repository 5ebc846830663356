"""``shardseal.keyring``, the documented import path of ``shardseal.keys.keyring``.

Keyrings: files of named 256-bit key-encryption keys (KEKs) that wrap file keys.

The code lives in ``shardseal.keys.keyring`` (docs/ARCHITECTURE.md); this module re-exports its
public names, so that user code keeps the short path.
"""

from .keys.keyring import (  # noqa: F401
    ACTIVE,
    DECRYPT_ONLY,
    DESTROYED,
    FORMAT,
    STATES,
    KekInfo,
    Keyring,
    KeyringIdentity,
    KeyringFileError,
    KeyringRecipient,
    kek_id,
    unwrap_key,
    unwrap_key_with_padding,
    wrap_key,
    wrap_key_with_padding,
    PathLike,
    KEK_SIZE,
    MAX_KEYRING_FILE_SIZE,
    MAX_NAME_LENGTH,
    STANZA_SIZE,
)
# The layer module uses these without exporting them: they come from where they are defined.
from .errors import (  # noqa: F401
    AuthenticationError,
)

__all__ = [
    "ACTIVE",
    "DECRYPT_ONLY",
    "DESTROYED",
    "FORMAT",
    "STATES",
    "KekInfo",
    "Keyring",
    "KeyringIdentity",
    "KeyringFileError",
    "KeyringRecipient",
    "kek_id",
    "unwrap_key",
    "unwrap_key_with_padding",
    "wrap_key",
    "wrap_key_with_padding",
    "AuthenticationError",
    "PathLike",
    "KEK_SIZE",
    "MAX_KEYRING_FILE_SIZE",
    "MAX_NAME_LENGTH",
    "STANZA_SIZE",
]
