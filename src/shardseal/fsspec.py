"""``shardseal.fsspec``, the documented import path of ``shardseal.io.fsspec``.

An fsspec filesystem that reads and writes shardseal containers on any fsspec backend.

The code lives in ``shardseal.io.fsspec`` (docs/ARCHITECTURE.md); this module re-exports its
public names, so that user code keeps the short path.
"""

from .io.fsspec import (  # noqa: F401
    SealFileSystem,
    open_url,
    DEFAULT_READ_BLOCK_SIZE,
    DEFAULT_READ_CACHE_TYPE,
)

__all__ = [
    "SealFileSystem",
    "open_url",
    "DEFAULT_READ_BLOCK_SIZE",
    "DEFAULT_READ_CACHE_TYPE",
]
