"""``shardseal.safetensors``, the documented import path of ``shardseal.ml.safetensors``.

Encrypted safetensors files (the ``torch`` extra).

The code lives in ``shardseal.ml.safetensors`` (docs/ARCHITECTURE.md); this module re-exports its
public names, so that user code keeps the short path.
"""

from .ml.safetensors import (  # noqa: F401
    MAX_HEADER_SIZE,
    MAX_NDIM,
    MAX_TENSOR_BYTES,
    load_file,
    safe_open,
    save_file,
    TensorSlice,
)
# The layer module uses these without exporting them: they come from where they are defined.
from .errors import (  # noqa: F401
    FormatError,
    TruncatedError,
)

__all__ = [
    "MAX_HEADER_SIZE",
    "MAX_NDIM",
    "MAX_TENSOR_BYTES",
    "load_file",
    "safe_open",
    "save_file",
    "FormatError",
    "TruncatedError",
    "TensorSlice",
]
