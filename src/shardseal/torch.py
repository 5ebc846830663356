"""``shardseal.torch``, the documented import path of ``shardseal.ml.torch``.

PyTorch support (the ``torch`` extra): tensors and ``torch.save`` objects in containers.

The code lives in ``shardseal.ml.torch`` (docs/ARCHITECTURE.md); this module re-exports its
public names, so that user code keeps the short path.
"""

from .ml.torch import (  # noqa: F401
    TENSOR_CONTENT_TYPE,
    decrypt_tensor,
    encrypt_tensor,
    load,
    save,
    DTYPES,
    DTYPE_SIZES,
    dtype_name,
    cpu_contiguous,
    byte_view,
    element_count,
)
# The layer module uses these without exporting them: they come from where they are defined.
from .errors import (  # noqa: F401
    FormatError,
)

__all__ = [
    "TENSOR_CONTENT_TYPE",
    "decrypt_tensor",
    "encrypt_tensor",
    "load",
    "save",
    "FormatError",
    "DTYPES",
    "DTYPE_SIZES",
    "dtype_name",
    "cpu_contiguous",
    "byte_view",
    "element_count",
]
