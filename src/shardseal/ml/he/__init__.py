"""Homomorphic encryption (the ``he`` extra): CKKS tensors and federated averaging under encryption.

``shardseal.he`` is the documented path (docs/he.md); it re-exports this package's names. The
Flower strategy lives in ``shardseal.ml.he.flower`` and is imported on first use (it needs flwr).
"""

from typing import Any


from .contexts import (
    SECRET_CONTEXT_CONTENT_TYPE,
    CkksParameters,
    PublicContext,
    SecretContext,
    fingerprint_of,
)
from .fedavg import HEAggregator, aggregate_name, update_name
from .tensors import (
    DTYPES,
    TENSOR_CONTENT_TYPE,
    EncryptedTensor,
    TensorSpec,
    decrypt_tensor,
    decrypt_tensors,
    encrypt_tensor,
    encrypt_tensors,
    open_tensor,
    weighted_sum,
)

__all__ = [
    "DTYPES",
    "SECRET_CONTEXT_CONTENT_TYPE",
    "TENSOR_CONTENT_TYPE",
    "CkksParameters",
    "EncryptedTensor",
    "HEAggregator",
    "PublicContext",
    "SecretContext",
    "TensorSpec",
    "aggregate_name",
    "decrypt_tensor",
    "decrypt_tensors",
    "encrypt_tensor",
    "encrypt_tensors",
    "fingerprint_of",
    "open_tensor",
    "update_name",
    "weighted_sum",
]

_FLOWER = ("HEFedAvg", "HEFedAvgClient")


def __getattr__(name: str) -> Any:
    # The Flower integration imports flwr: only on first use.
    if name in _FLOWER:
        from . import flower

        return getattr(flower, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
