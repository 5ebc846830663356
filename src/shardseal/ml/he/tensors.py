"""Encrypted tensors: any torch tensor or numpy array packed into CKKS ciphertexts.

A tensor (or a list or dict of tensors: a model) is flattened to float64 and packed N/2 values
per ciphertext; the specs (name, shape, dtype) restore it on decryption. The server adds,
subtracts and multiplies by plaintext scalars or vectors without the secret key.

HE ciphertexts are malleable: anyone can add to one. So they travel and rest sealed in a
shardseal container (:meth:`EncryptedTensor.seal`) whose authenticated metadata names the
tensor (its identity: round, client, position), the public context's fingerprint and the
layout. :func:`open_tensor` authenticates the container before TenSEAL parses a byte, and
refuses a container that authenticates but holds another tensor (a swap or a replay).
"""

from __future__ import annotations

import itertools
import math
import struct
import sys
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence, Union

import numpy as np

from ...container import blob as _blob
from ...errors import AuthenticationError, FormatError
from ._tenseal import tenseal as ts
from .contexts import METADATA_KEY, PublicContext, SecretContext

__all__ = [
    "TENSOR_CONTENT_TYPE",
    "EncryptedTensor",
    "TensorSpec",
    "decrypt_tensor",
    "decrypt_tensors",
    "encrypt_tensor",
    "encrypt_tensors",
    "open_tensor",
    "weighted_sum",
]

TENSOR_CONTENT_TYPE = "shardseal.he.ckks-tensors"
_LENGTH = struct.Struct("<Q")
# The dtypes a tensor may have, by name: numpy's names, and torch's bfloat16.
_FLOAT_DTYPES = ("float16", "bfloat16", "float32", "float64")
_INT_DTYPES = ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64")
DTYPES = _FLOAT_DTYPES + _INT_DTYPES + ("bool",)
# Bounds on what a container's metadata may announce, checked before anything is allocated.
_MAX_SPECS = 1 << 20
_MAX_VALUES = 1 << 40


@dataclass(frozen=True)
class TensorSpec:
    """Where one tensor sits in an encrypted tensor's packed values.

    Attributes:
        name: the tensor's name in a dict of tensors, or its index in a list.
        shape: the shape to restore.
        dtype: the dtype to restore (a name in ``DTYPES``).
        framework: ``"numpy"`` or ``"torch"``: what decryption returns.
    """

    name: str
    shape: tuple[int, ...]
    dtype: str
    framework: str

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    def as_json(self) -> list[Any]:
        return [self.name, list(self.shape), self.dtype, self.framework]

    @classmethod
    def from_json(cls, value: Any) -> "TensorSpec":
        try:
            name, shape, dtype, framework = value
            spec = cls(str(name), tuple(int(d) for d in shape), str(dtype), str(framework))
        except (TypeError, ValueError) as exc:
            raise FormatError("malformed HE tensor spec") from exc
        if spec.dtype not in DTYPES or spec.framework not in ("numpy", "torch") or any(d < 0 for d in spec.shape):
            raise FormatError("malformed HE tensor spec")
        return spec


class EncryptedTensor:
    """One or more tensors encrypted under a CKKS public context (in memory).

    Supports ``a + b``, ``a - b``, ``-a``, ``a * w`` and ``w * a`` with a plaintext scalar or
    array of the same number of values; each multiplication uses one level of the moduli chain.
    """

    __slots__ = ("_vectors", "_specs", "_context", "_name")

    def __init__(self, vectors: list[Any], specs: tuple[TensorSpec, ...], context: PublicContext,
                 name: Optional[str] = None) -> None:
        # Internal: use encrypt_tensor(s), open_tensor or arithmetic.
        self._vectors = vectors
        self._specs = specs
        self._context = context
        self._name = name

    @property
    def specs(self) -> tuple[TensorSpec, ...]:
        return self._specs

    @property
    def size(self) -> int:
        """Number of values (all tensors together)."""
        return sum(spec.size for spec in self._specs)

    @property
    def num_ciphertexts(self) -> int:
        return len(self._vectors)

    @property
    def ciphertexts(self) -> tuple[Any, ...]:
        """The TenSEAL CKKS vectors, N/2 values each (the last one may hold fewer)."""
        return tuple(self._vectors)

    @property
    def context(self) -> PublicContext:
        return self._context

    @property
    def name(self) -> Optional[str]:
        """The authenticated identity it was sealed under (None if never sealed or opened)."""
        return self._name

    def _like(self, vectors: list[Any]) -> "EncryptedTensor":
        return EncryptedTensor(vectors, self._specs, self._context)

    def _check_compatible(self, other: "EncryptedTensor") -> None:
        if not isinstance(other, EncryptedTensor):
            raise TypeError(f"expected an EncryptedTensor, not {type(other).__name__}")
        if other._context.fingerprint != self._context.fingerprint:
            raise ValueError("the encrypted tensors are under different contexts")
        if [(s.shape, s.name) for s in other._specs] != [(s.shape, s.name) for s in self._specs]:
            raise ValueError("the encrypted tensors have different layouts (names or shapes)")

    def __add__(self, other: "EncryptedTensor") -> "EncryptedTensor":
        self._check_compatible(other)
        return self._like([_checked(a.add, b) for a, b in zip(self._vectors, other._vectors)])

    def __sub__(self, other: "EncryptedTensor") -> "EncryptedTensor":
        self._check_compatible(other)
        return self._like([_checked(a.sub, b) for a, b in zip(self._vectors, other._vectors)])

    def __neg__(self) -> "EncryptedTensor":
        return self._like([v.neg() for v in self._vectors])

    def __mul__(self, weight: Any) -> "EncryptedTensor":
        values = np.asarray(_to_numpy(weight), dtype=np.float64)
        if values.ndim == 0:
            scalar = float(values)
            return self._like([_checked(v.mul, scalar) for v in self._vectors])
        if values.size != self.size:
            raise ValueError(f"a plaintext multiplier needs {self.size} values (or one), not {values.size}")
        chunks = _chunks(values.reshape(-1), self._context.slots)
        return self._like([_checked(v.mul, chunk.tolist()) for v, chunk in zip(self._vectors, chunks)])

    __rmul__ = __mul__

    def nbytes(self) -> int:
        """Bytes of the serialised ciphertexts."""
        return sum(len(v.serialize()) for v in self._vectors)

    def seal(self, *, name: str, key: Any = None, recipients: Optional[Sequence[Any]] = None) -> bytes:
        """Serialises the ciphertexts into an authenticated shardseal container.

        Args:
            name: the tensor's identity (for example ``"fedavg/round=3/client=7"``): stored in
                the authenticated metadata, checked by :func:`open_tensor`, so that a container
                swapped for another or replayed from another round is refused.
            key: the 32-byte key (or key reference) shared by whoever may read and write these
                tensors (clients and server); or
            recipients: recipients as for ``shardseal.encrypt``.

        Raises:
            TypeError, ValueError: as ``shardseal.encrypt``; name not a string.
        """
        if not isinstance(name, str):
            raise TypeError(f"name must be a str, not {type(name).__name__}")
        parts: list[bytes] = []
        for vector in self._vectors:
            data = vector.serialize()
            parts += (_LENGTH.pack(len(data)), data)
        metadata = {METADATA_KEY: {
            "content_type": TENSOR_CONTENT_TYPE, "name": name, "fingerprint": self._context.fingerprint,
            "slots": self._context.slots, "ciphertexts": len(self._vectors),
            "specs": [spec.as_json() for spec in self._specs]}}
        return _blob.encrypt(b"".join(parts), key, recipients=recipients, metadata=metadata)

    def __repr__(self) -> str:
        return (f"EncryptedTensor({len(self._specs)} tensor(s), {self.size} values, "
                f"{len(self._vectors)} ciphertexts, name={self._name!r})")


def _checked(operation: Any, operand: Any) -> Any:
    # SEAL refuses a result that would decrypt without the secret key (a "transparent"
    # ciphertext, e.g. x - x): say so as a ValueError instead of a bare RuntimeError.
    try:
        return operation(operand)
    except RuntimeError as exc:
        if "transparent" in str(exc):
            raise ValueError("the result would be a transparent ciphertext (e.g. x - x); SEAL refuses it") from exc
        raise


def _chunks(flat: np.ndarray, slots: int) -> list[np.ndarray]:
    if flat.size == 0:  # SEAL cannot encrypt nothing: an empty tensor is one ciphertext of one zero
        return [np.zeros(1)]
    return [flat[start:start + slots] for start in range(0, flat.size, slots)]


def _torch() -> Any:
    # torch is imported only by callers that pass torch tensors.
    return sys.modules.get("torch")


def _to_numpy(value: Any) -> Any:
    torch = _torch()
    if torch is not None and isinstance(value, torch.Tensor):
        return value.detach().to("cpu", torch.float64).numpy()
    return value


def _spec_and_values(name: str, tensor: Any) -> tuple[TensorSpec, np.ndarray]:
    torch = _torch()
    if torch is not None and isinstance(tensor, torch.Tensor):
        dtype = str(tensor.dtype).removeprefix("torch.")
        framework = "torch"
        values = tensor.detach().to("cpu")
        values = values.to(torch.float64).numpy() if dtype != "bool" else values.numpy()
        shape = tuple(tensor.shape)
    else:
        array = np.asarray(tensor)
        dtype, framework, values, shape = array.dtype.name, "numpy", array, array.shape
    if dtype not in DTYPES:
        raise TypeError(f"{dtype} tensors are not supported (CKKS packs real numbers: {', '.join(DTYPES)})")
    return TensorSpec(name, tuple(int(d) for d in shape), dtype, framework), np.asarray(values, dtype=np.float64)


def encrypt_tensors(tensors: Union[Sequence[Any], Mapping[str, Any]], public_context: PublicContext) -> EncryptedTensor:
    """Encrypts a list or dict of tensors (a model) into one packed EncryptedTensor.

    Args:
        tensors: numpy arrays or torch tensors, in a list or a dict (names are strings).
        public_context: the public context (a SecretContext's public part works too).

    Raises:
        TypeError: a tensor of an unsupported dtype (complex, ...), or a bad context.
    """
    context = _public(public_context)
    items = list(tensors.items()) if isinstance(tensors, Mapping) else [(str(i), t) for i, t in enumerate(tensors)]
    specs, flats = [], []
    for name, tensor in items:
        spec, values = _spec_and_values(str(name), tensor)
        specs.append(spec)
        flats.append(values.reshape(-1))
    flat = np.concatenate(flats) if flats else np.zeros(0)
    if not np.all(np.isfinite(flat)):
        raise ValueError("CKKS encodes finite numbers only (the tensor holds inf or nan)")
    vectors = [ts.ckks_vector(context.tenseal_context, chunk.tolist()) for chunk in _chunks(flat, context.slots)]
    return EncryptedTensor(vectors, tuple(specs), context)


def encrypt_tensor(tensor: Any, public_context: PublicContext) -> EncryptedTensor:
    """Encrypts one torch tensor or numpy array (any shape; packed N/2 values per ciphertext).

    Args:
        tensor: a numpy array (or array-like) or torch tensor of a dtype in ``DTYPES``.
        public_context: the public context (encryption needs no secret key).

    Raises:
        TypeError: unsupported dtype (complex, object, ...) or a bad context.
        ValueError: the tensor holds inf or nan.
    """
    return encrypt_tensors([tensor], public_context)


def decrypt_tensors(encrypted: EncryptedTensor, secret_context: SecretContext) -> Union[list[Any], dict[str, Any]]:
    """Decrypts a packed EncryptedTensor into its tensors, each with its dtype and shape.

    Returns a list for tensors encrypted from a list (the names are "0", "1", ...), else a dict.
    Integer and bool tensors are rounded to the nearest value (clipped to the dtype's range).

    Raises:
        TypeError: secret_context is not a SecretContext (a PublicContext cannot decrypt).
        ValueError: the tensor is under another context.
    """
    flat = _decrypt_flat(encrypted, secret_context)
    out: list[tuple[str, Any]] = []
    offset = 0
    for spec in encrypted.specs:
        out.append((spec.name, _restore(flat[offset:offset + spec.size], spec)))
        offset += spec.size
    if [name for name, _ in out] == [str(i) for i in range(len(out))]:
        return [value for _, value in out]
    return dict(out)


def decrypt_tensor(encrypted: EncryptedTensor, secret_context: SecretContext) -> Any:
    """Decrypts a single encrypted tensor, restoring its dtype, shape and framework.

    Raises:
        TypeError: secret_context is not a SecretContext (a PublicContext cannot decrypt).
        ValueError: the tensor is under another context, or holds several tensors.
    """
    if len(encrypted.specs) != 1:
        raise ValueError(f"the encrypted tensor holds {len(encrypted.specs)} tensors: use decrypt_tensors")
    values = decrypt_tensors(encrypted, secret_context)
    return values[0] if isinstance(values, list) else next(iter(values.values()))


def weighted_sum(tensors: Sequence[EncryptedTensor], weights: Sequence[float]) -> EncryptedTensor:
    """``sum(w * t)`` over encrypted tensors with plaintext weights (one multiplication level).

    Raises:
        ValueError: no tensors, a count mismatch, or incompatible tensors.
    """
    if not tensors or len(tensors) != len(weights):
        raise ValueError("weighted_sum needs as many weights as tensors (at least one)")
    total = tensors[0] * float(weights[0])
    for tensor, weight in zip(tensors[1:], weights[1:]):
        total = total + tensor * float(weight)
    return total


def open_tensor(container: Any, context: Union[PublicContext, SecretContext], *, name: Optional[str],
                key: Any = None, identities: Optional[Sequence[Any]] = None) -> EncryptedTensor:
    """Authenticates a sealed encrypted tensor and loads its ciphertexts.

    The container is authenticated (payload and metadata) before TenSEAL parses any
    ciphertext; then its identity and context are checked.

    Args:
        container: what :meth:`EncryptedTensor.seal` returned.
        context: the public context (or the key holder's SecretContext).
        name: the identity it must have been sealed under; None accepts any (then check
            ``.name`` yourself).
        key: the container's key or key reference, as for ``shardseal.decrypt``; or
        identities: identities that open it.

    Raises:
        AuthenticationError: tampered or wrong key; or authentic but another tensor (name)
            or another context (fingerprint): a swapped or replayed ciphertext.
        FormatError: the container holds something else, or an inconsistent layout.
    """
    public = _public(context)
    data = bytes(container)
    payload = _blob.decrypt(data, key, identities=identities)  # authenticates metadata and payload
    meta = _blob.inspect(data).metadata.get(METADATA_KEY)
    if not isinstance(meta, dict) or meta.get("content_type") != TENSOR_CONTENT_TYPE:
        raise FormatError("the container does not hold a shardseal HE tensor")
    if name is not None and meta.get("name") != name:
        raise AuthenticationError("the container holds another HE tensor than the one expected (swapped or replayed)")
    if meta.get("fingerprint") != public.fingerprint:
        raise AuthenticationError("the HE tensor is encrypted under another context")
    specs = _parse_specs(meta)
    vectors = _parse_vectors(payload, meta, specs, public)
    return EncryptedTensor(vectors, specs, public, str(meta["name"]))


def _parse_specs(meta: dict[str, Any]) -> tuple[TensorSpec, ...]:
    raw = meta.get("specs")
    if not isinstance(raw, list) or len(raw) > _MAX_SPECS:
        raise FormatError("malformed HE tensor specs")
    specs = tuple(TensorSpec.from_json(item) for item in raw)
    if sum(spec.size for spec in specs) > _MAX_VALUES:
        raise FormatError("HE tensor too large")
    return specs


def _parse_vectors(payload: bytes, meta: dict[str, Any], specs: tuple[TensorSpec, ...],
                   public: PublicContext) -> list[Any]:
    slots = public.slots
    total = sum(spec.size for spec in specs)
    expected = max(1, -(-total // slots))
    if meta.get("slots") != slots or meta.get("ciphertexts") != expected:
        raise FormatError("HE tensor layout does not match the context")
    vectors, offset, view = [], 0, memoryview(payload)
    for index in range(expected):
        if offset + _LENGTH.size > len(payload):
            raise FormatError("truncated HE tensor payload")
        (size,) = _LENGTH.unpack_from(payload, offset)
        offset += _LENGTH.size
        if size > len(payload) - offset:
            raise FormatError("truncated HE tensor payload")
        try:
            vector = ts.ckks_vector_from(public.tenseal_context, bytes(view[offset:offset + size]))
        except Exception as exc:
            raise FormatError("not a serialised CKKS vector") from exc
        want = min(slots, total - index * slots) if total else 1
        if vector.size() != want:
            raise FormatError("HE ciphertext holds an unexpected number of values")
        vectors.append(vector)
        offset += size
    if offset != len(payload):
        raise FormatError("trailing bytes after the HE ciphertexts")
    return vectors


def _public(context: Any) -> PublicContext:
    if isinstance(context, SecretContext):
        return context.public_context()
    if not isinstance(context, PublicContext):
        raise TypeError(f"expected a PublicContext, not {type(context).__name__}")
    return context


def _decrypt_flat(encrypted: EncryptedTensor, secret_context: Any) -> np.ndarray:
    if not isinstance(encrypted, EncryptedTensor):
        raise TypeError(f"expected an EncryptedTensor, not {type(encrypted).__name__}")
    if isinstance(secret_context, PublicContext):
        raise TypeError("a PublicContext cannot decrypt: it holds no secret key (decrypt with the SecretContext)")
    if not isinstance(secret_context, SecretContext):
        raise TypeError(f"expected a SecretContext, not {type(secret_context).__name__}")
    if secret_context.fingerprint != encrypted.context.fingerprint:
        raise ValueError("the encrypted tensor is under another context than this SecretContext")
    values = secret_context.decrypt_vectors(encrypted.ciphertexts)
    return np.fromiter(itertools.chain.from_iterable(values), dtype=np.float64)[:encrypted.size]


def _restore(values: np.ndarray, spec: TensorSpec) -> Any:
    if spec.dtype == "bool":
        array: np.ndarray = values > 0.5
    elif spec.dtype in _INT_DTYPES:
        info = np.iinfo(spec.dtype)
        array = np.clip(np.rint(values), info.min, info.max).astype(spec.dtype)
    elif spec.dtype == "bfloat16":
        array = values.astype(np.float32)
    else:
        array = values.astype(spec.dtype)
    array = array.reshape(spec.shape)
    if spec.framework == "numpy":
        return array
    import torch  # the tensor came from torch, so torch is installed

    result = torch.from_numpy(np.ascontiguousarray(array))
    return result.to(torch.bfloat16) if spec.dtype == "bfloat16" else result
