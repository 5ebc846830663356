"""``shardseal.pkcs11``, the documented import path of ``shardseal.keys.pkcs11``.

PKCS#11 HSM key-encryption keys: file keys wrapped and unwrapped inside a token.

The code lives in ``shardseal.keys.pkcs11`` (docs/ARCHITECTURE.md); this module re-exports its
public names, so that user code keeps the short path.
"""

from typing import Any

from .keys import pkcs11 as _home
from .keys.pkcs11 import (  # noqa: F401
    MODULE_ENV,
    PIN_ENV,
    HsmError,
    Pkcs11Identity,
    Pkcs11Recipient,
    Pkcs11LoginError,
    create_kek,
    make_uri,
    parse_uri,
    PROVIDER,
    WRAPPED_SIZE,
    KEK_BITS,
    PathLike,
)
# The layer module uses these without exporting them: they come from where they are defined.
from .errors import (  # noqa: F401
    AuthenticationError,
    KeyNotFoundError,
)

__all__ = [
    "MODULE_ENV",
    "PIN_ENV",
    "HsmError",
    "Pkcs11Identity",
    "Pkcs11Recipient",
    "Pkcs11LoginError",
    "create_kek",
    "make_uri",
    "parse_uri",
    "AuthenticationError",
    "KeyNotFoundError",
    "PROVIDER",
    "WRAPPED_SIZE",
    "KEK_BITS",
    "PathLike",
]


def __getattr__(name: str) -> Any:
    # Deprecated old names (Pkcs11Key): the home module warns.
    return getattr(_home, name)
