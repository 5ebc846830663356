"""``shardseal.passphrase``, the documented import path of ``shardseal.keys.passphrase``.

Passphrase encryption: a file that opens with a passphrase (scrypt), like age's.

The code lives in ``shardseal.keys.passphrase`` (docs/ARCHITECTURE.md); this module re-exports its
public names, so that user code keeps the short path.
"""

from .keys.passphrase import (  # noqa: F401
    DEFAULT_WORK_FACTOR,
    MAX_WORK_FACTOR,
    MIN_WORK_FACTOR,
    Passphrase,
    PassphraseIdentity,
    PassphraseRecipient,
    STANZA_SIZE,
    MAX_SCRYPT_MEMORY,
    MAX_SCRYPT_COST,
)
# The layer module uses these without exporting them: they come from where they are defined.
from .errors import (  # noqa: F401
    FormatError,
    WrongPassphraseError,
)

__all__ = [
    "DEFAULT_WORK_FACTOR",
    "MAX_WORK_FACTOR",
    "MIN_WORK_FACTOR",
    "Passphrase",
    "PassphraseIdentity",
    "PassphraseRecipient",
    "FormatError",
    "WrongPassphraseError",
    "STANZA_SIZE",
    "MAX_SCRYPT_MEMORY",
    "MAX_SCRYPT_COST",
]
