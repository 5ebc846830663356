"""``shardseal.he``, the documented import path of ``shardseal.ml.he``.

Homomorphic encryption (the ``he`` extra: TenSEAL): CKKS contexts whose secret key is sealed for
recipients, encrypted tensors sealed in authenticated containers, and federated averaging under
encryption (docs/he.md).

    >>> import shardseal.he as he
    >>> secret = he.SecretContext.generate()
    >>> sealed_secret = secret.seal(recipients=[holder])            # the secret key's only form at rest
    >>> public = he.PublicContext.from_bytes(data, fingerprint=pin)  # everyone else
    >>> et = he.encrypt_tensor(weights, public)
    >>> he.decrypt_tensor(et * 0.5 + et, secret)

``HEFedAvg`` and ``HEFedAvgClient`` (Flower) are imported on first use and need flwr.
"""

from typing import Any

from .ml.he import (  # noqa: F401
    DTYPES,
    SECRET_CONTEXT_CONTENT_TYPE,
    TENSOR_CONTENT_TYPE,
    CkksParameters,
    EncryptedTensor,
    HEAggregator,
    PublicContext,
    SecretContext,
    TensorSpec,
    aggregate_name,
    decrypt_tensor,
    decrypt_tensors,
    encrypt_tensor,
    encrypt_tensors,
    fingerprint_of,
    open_tensor,
    update_name,
    weighted_sum,
)
from .ml import he as _home

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


def __getattr__(name: str) -> Any:
    # HEFedAvg and HEFedAvgClient (Flower): imported on first use, with flwr.
    return getattr(_home, name)
