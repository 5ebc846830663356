"""``shardseal.transformers``, the documented import path of ``shardseal.ml.transformers``.

Hugging Face ``transformers`` models and PEFT adapters from encrypted checkpoints (the
``torch`` and ``transformers`` extras).

The code lives in ``shardseal.ml.transformers`` (docs/ARCHITECTURE.md); this module re-exports
its public names, so that user code keeps the short path.
"""

from .ml.transformers import (  # noqa: F401
    ADAPTER_WEIGHTS_NAME,
    from_pretrained,
    load_adapter,
    save_adapter,
    save_pretrained,
)

__all__ = ["ADAPTER_WEIGHTS_NAME", "from_pretrained", "load_adapter", "save_adapter", "save_pretrained"]
