"""``shardseal.cleanup``, the documented import path of ``shardseal.io.cleanup``.

Removing the temporary files that killed writers leave behind.

The code lives in ``shardseal.io.cleanup`` (docs/ARCHITECTURE.md); this module re-exports its
public names, so that user code keeps the short path.
"""

from .io.cleanup import (  # noqa: F401
    DEFAULT_MIN_AGE,
    CleanReport,
    clean_temp_files,
    PathLike,
)

__all__ = [
    "DEFAULT_MIN_AGE",
    "CleanReport",
    "clean_temp_files",
    "PathLike",
]
