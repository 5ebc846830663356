"""``shardseal.x25519``, the documented import path of ``shardseal.keys.x25519``.

X25519 recipients: public-key envelope encryption between pipeline parties (like age).

The code lives in ``shardseal.keys.x25519`` (docs/ARCHITECTURE.md); this module re-exports its
public names, so that user code keeps the short path.
"""

from .keys.x25519 import (  # noqa: F401
    IDENTITY_PREFIX,
    RECIPIENT_PREFIX,
    IdentityFileError,
    X25519Identity,
    X25519Recipient,
    format_identity_file,
    parse_identity_file,
    read_identity_file,
    write_identity_file,
    PathLike,
    KEY_SIZE,
    STANZA_SIZE,
    MAX_IDENTITY_FILE_SIZE,
)
# The layer module uses these without exporting them: they come from where they are defined.
from .errors import (  # noqa: F401
    AuthenticationError,
)

__all__ = [
    "IDENTITY_PREFIX",
    "RECIPIENT_PREFIX",
    "IdentityFileError",
    "X25519Identity",
    "X25519Recipient",
    "format_identity_file",
    "parse_identity_file",
    "read_identity_file",
    "write_identity_file",
    "AuthenticationError",
    "PathLike",
    "KEY_SIZE",
    "STANZA_SIZE",
    "MAX_IDENTITY_FILE_SIZE",
]
