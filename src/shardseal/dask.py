"""``shardseal.dask``, the documented import path of ``shardseal.ops.dask``.

Encrypt, decrypt, verify and rotate datasets on a Dask cluster, and read encrypted shards as
``dask.bag`` and ``dask.array`` (``pip install "shardseal[dask]"``).

The code lives in ``shardseal.ops.dask`` (docs/ARCHITECTURE.md); this module re-exports its
public names, so that user code keeps the short path.
"""

from .ops.dask import (  # noqa: F401
    DEFAULT_BATCH_BYTES,
    TransferReport,
    decrypt_dataset,
    encrypt_dataset,
    read_array,
    read_bag,
    rotate,
    verify,
)

__all__ = [
    "DEFAULT_BATCH_BYTES",
    "TransferReport",
    "decrypt_dataset",
    "encrypt_dataset",
    "read_array",
    "read_bag",
    "rotate",
    "verify",
]
