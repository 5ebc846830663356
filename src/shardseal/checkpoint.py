"""``shardseal.checkpoint``, the documented import path of ``shardseal.ml.checkpoint``.

Encrypted sharded checkpoints (the ``torch`` extra).

The code lives in ``shardseal.ml.checkpoint`` (docs/ARCHITECTURE.md); this module re-exports its
public names, so that user code keeps the short path.
"""

from .ml.checkpoint import (  # noqa: F401
    SEALED_SUFFIX,
    CheckpointReader,
    decrypt_checkpoint,
    encrypt_checkpoint,
    load_checkpoint,
    open_checkpoint,
    parse_size,
    save_checkpoint,
)

__all__ = [
    "SEALED_SUFFIX",
    "CheckpointReader",
    "decrypt_checkpoint",
    "encrypt_checkpoint",
    "load_checkpoint",
    "open_checkpoint",
    "parse_size",
    "save_checkpoint",
]
