"""``shardseal.keyref``, the documented import path of ``shardseal.keys.keyref``.

Key references: where a key comes from, without carrying the key itself.

The code lives in ``shardseal.keys.keyref`` (docs/ARCHITECTURE.md); this module re-exports its
public names, so that user code keeps the short path.
"""

from .keys.keyref import (  # noqa: F401
    DEFAULT_ENV_VAR,
    EnvKey,
    KeyFile,
    KeyLike,
    KeyRef,
    RawKey,
    as_key_ref,
    is_key_ref,
    parse_key_ref,
    resolve_key,
    resolve_reference,
    PathLike,
)
from .keys.registry import IdentityRef  # noqa: F401
from .ops.manifest import DatasetKey  # noqa: F401

__all__ = [
    "DEFAULT_ENV_VAR",
    "EnvKey",
    "KeyFile",
    "KeyLike",
    "KeyRef",
    "RawKey",
    "as_key_ref",
    "is_key_ref",
    "parse_key_ref",
    "resolve_key",
    "resolve_reference",
    "PathLike",
    "DatasetKey",
    "IdentityRef",
]
