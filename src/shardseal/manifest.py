"""``shardseal.manifest``, the documented import path of ``shardseal.ops.manifest``.

Datasets of many shards under one dataset key, listed in an encrypted manifest.

The code lives in ``shardseal.ops.manifest`` (docs/ARCHITECTURE.md); this module re-exports its
public names, so that user code keeps the short path.
"""

from .ops.manifest import (  # noqa: F401
    CONTENT_TYPE,
    FORMAT,
    MANIFEST_NAME,
    Dataset,
    DatasetKey,
    ManifestChangedError,
    Problem,
    ShardInfo,
    ShardMismatchError,
    VerifyReport,
    verify,
    PathLike,
    SHARD_SUFFIX,
    MANIFEST_SUITE,
    MISSING,
    MODIFIED,
    UNLISTED,
    CORRUPT,
    UNREADABLE,
)
# The layer module uses these without exporting them: they come from where they are defined.
from .errors import (  # noqa: F401
    FormatError,
    KeyNotFoundError,
    ShardsealError,
)

__all__ = [
    "CONTENT_TYPE",
    "FORMAT",
    "MANIFEST_NAME",
    "Dataset",
    "DatasetKey",
    "ManifestChangedError",
    "Problem",
    "ShardInfo",
    "ShardMismatchError",
    "VerifyReport",
    "verify",
    "FormatError",
    "KeyNotFoundError",
    "ShardsealError",
    "PathLike",
    "SHARD_SUFFIX",
    "MANIFEST_SUITE",
    "MISSING",
    "MODIFIED",
    "UNLISTED",
    "CORRUPT",
    "UNREADABLE",
]
