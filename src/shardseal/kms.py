"""``shardseal.kms``, the documented import path of ``shardseal.keys.kms``.

Key management services: file keys wrapped by a KMS, and the interface to add your own.

The code lives in ``shardseal.keys.kms`` (docs/ARCHITECTURE.md); this module re-exports its
public names, so that user code keeps the short path.
"""

from typing import Any

from .keys import kms as _home
from .keys.kms import (  # noqa: F401
    CONTEXT_KEY,
    AwsKms,
    KeyProvider,
    KmsError,
    KmsIdentity,
    KmsRecipient,
    encryption_context,
    parse_identity,
    parse_recipient,
    AWS_KMS,
)
# The layer module uses these without exporting them: they come from where they are defined.
from .errors import (  # noqa: F401
    AuthenticationError,
)

__all__ = [
    "CONTEXT_KEY",
    "AwsKms",
    "KeyProvider",
    "KmsError",
    "KmsIdentity",
    "KmsRecipient",
    "encryption_context",
    "parse_identity",
    "parse_recipient",
    "AuthenticationError",
    "AWS_KMS",
]


def __getattr__(name: str) -> Any:
    # Deprecated old names (KmsKey): the home module warns.
    return getattr(_home, name)
