"""``shardseal.data``, the documented import path of ``shardseal.ml.data``.

PyTorch datasets that read encrypted data: per-sample files, ``.npy`` record shards and
WebDataset tar shards.

The code lives in ``shardseal.ml.data`` (docs/ARCHITECTURE.md); this module re-exports its
public names, so that user code keeps the short path.
"""

from .ml.data import (  # noqa: F401
    EncryptedArrayDataset,
    EncryptedFileDataset,
    EncryptedWebDataset,
    expand_urls,
    write_npy_shard,
    write_webdataset_shards,
    PathLike,
    SHARD_READ_BUFFER,
    MAX_NPY_HEADER,
    DEFAULT_MAX_SAMPLES_PER_SHARD,
    DEFAULT_MAX_BYTES_PER_SHARD,
)
# The layer module uses these without exporting them: they come from where they are defined.
from .errors import (  # noqa: F401
    FormatError,
    TruncatedError,
)

__all__ = [
    "EncryptedArrayDataset",
    "EncryptedFileDataset",
    "EncryptedWebDataset",
    "expand_urls",
    "write_npy_shard",
    "write_webdataset_shards",
    "FormatError",
    "TruncatedError",
    "PathLike",
    "SHARD_READ_BUFFER",
    "MAX_NPY_HEADER",
    "DEFAULT_MAX_SAMPLES_PER_SHARD",
    "DEFAULT_MAX_BYTES_PER_SHARD",
]
