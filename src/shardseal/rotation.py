"""``shardseal.rotation``, the documented import path of ``shardseal.ops.rotation``.

Key rotation: re-wrap the file key of existing containers without re-encrypting them.

The code lives in ``shardseal.ops.rotation`` (docs/ARCHITECTURE.md); this module re-exports its
public names, so that user code keeps the short path.
"""

from .ops.rotation import (  # noqa: F401
    JOURNAL_SUFFIX,
    TEMP_SUFFIX,
    RotationReport,
    journal_path,
    recover,
    rotate,
    PathArg,
)
# The layer module uses these without exporting them: they come from where they are defined.
from .errors import (  # noqa: F401
    ShardsealError,
    TruncatedError,
)

__all__ = [
    "JOURNAL_SUFFIX",
    "TEMP_SUFFIX",
    "RotationReport",
    "journal_path",
    "recover",
    "rotate",
    "ShardsealError",
    "TruncatedError",
    "PathArg",
]
