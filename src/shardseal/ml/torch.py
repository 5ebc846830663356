"""PyTorch support (the ``torch`` extra): tensors and ``torch.save`` objects in containers.

    >>> import shardseal.torch
    >>> blob = shardseal.torch.encrypt_tensor(weights, key)         # dtype and shape in the header
    >>> weights = shardseal.torch.decrypt_tensor(blob, key)
    >>> shardseal.torch.save(model.state_dict(), "model.pt.sseal", key)
    >>> state = shardseal.torch.load("model.pt.sseal", key)

``import shardseal`` never imports torch; this module does, when it is imported.
For safetensors files see ``shardseal.safetensors``.
"""

from __future__ import annotations

import io
import sys
from typing import IO, Any, Mapping, Optional, Sequence, Union, cast

import numpy as np
from numpy.typing import NDArray

try:
    import torch
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("shardseal.torch needs PyTorch: pip install 'shardseal[torch]'") from exc

from ..container import blob as _blob
from ..core import backend as _backend, buffers as _buffers, layout as _layout
from ..io import files as _files
from ..errors import FormatError
from ..core.buffers import BytesLike
from ..core.layout import Suite
from ..io.files import FileTarget
from ..keys.keyref import KeyLike
from ..keys.registry import Identities, Recipients

__all__ = ["TENSOR_CONTENT_TYPE", "decrypt_tensor", "encrypt_tensor", "load", "save"]

TENSOR_CONTENT_TYPE = "torch.Tensor"

# The closed table of tensor dtypes a header may name (FORMAT.md 2.3.1): the name without
# "torch." and the bytes per element. Anything else is refused, whatever the installed torch
# knows. Quantized dtypes are left out: their scale and zero point are not bytes. The sub-byte
# "shell" dtypes (uint1 ... uint7, int1 ... int7, bits*) hold one element per byte, as torch
# stores them; float4_e2m1fn_x2 packs two 4-bit values in each byte.
DTYPE_SIZES: dict[str, int] = {
    "bool": 1, "uint8": 1, "int8": 1, "uint16": 2, "int16": 2, "uint32": 4, "int32": 4,
    "uint64": 8, "int64": 8, "float16": 2, "bfloat16": 2, "float32": 4, "float64": 8,
    "complex32": 4, "complex64": 8, "complex128": 16,
    "float8_e4m3fn": 1, "float8_e4m3fnuz": 1, "float8_e5m2": 1, "float8_e5m2fnuz": 1,
    "float8_e8m0fnu": 1, "float4_e2m1fn_x2": 1,
    "bits8": 1, "bits16": 2, "bits1x8": 1, "bits2x4": 1, "bits4x2": 1,
    **{f"uint{bits}": 1 for bits in range(1, 8)}, **{f"int{bits}": 1 for bits in range(1, 8)},
}
# The dtypes of the table that this torch has, by name: "float32", "bfloat16", ...
DTYPES: dict[str, torch.dtype] = {
    name: getattr(torch, name) for name in DTYPE_SIZES if isinstance(getattr(torch, name, None), torch.dtype)
}
_DTYPE_NAMES = {dtype: name for name, dtype in DTYPES.items()}

# Where a tensor goes: "cpu", "cuda", "cuda:1", a device index or a torch.device.
Device = Union[str, int, torch.device]


def check_byte_order() -> None:
    if sys.byteorder != "little":  # pragma: no cover - no big-endian test machine
        raise NotImplementedError("shardseal.torch stores little-endian bytes and runs on little-endian hosts only")


def dtype_name(dtype: torch.dtype) -> str:
    """The name a header stores for a torch dtype ("float32", "bfloat16", ...).

    Raises:
        TypeError: a quantized dtype (not plain bytes).
    """
    try:
        return _DTYPE_NAMES[dtype]
    except KeyError:
        raise TypeError(f"tensors of dtype {dtype} cannot be encrypted (quantized or unknown dtype)") from None


def cpu_contiguous(tensor: object, what: str = "tensor") -> torch.Tensor:
    """The tensor's data as a dense, C-contiguous CPU tensor without autograd history.

    No copy for a CPU tensor that already is one; other devices are copied to the CPU,
    non-contiguous tensors packed, conjugate and negative views resolved.

    Raises:
        TypeError: not a tensor, a sparse, nested or quantized tensor.
        ValueError: a tensor on the meta device (it has no data).
    """
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"{what} must be a torch.Tensor, not {type(tensor).__name__}")
    if tensor.layout != torch.strided or tensor.is_nested:
        raise TypeError(f"{what} has layout {tensor.layout}: only dense (strided) tensors can be "
                        "encrypted; convert it with .to_dense() first")
    if tensor.is_quantized:
        raise TypeError(f"{what} is quantized: dequantize it first")
    if tensor.device.type == "meta":
        raise ValueError(f"{what} is on the meta device and has no data")
    dtype_name(tensor.dtype)
    t = tensor.detach()
    if t.device.type != "cpu":
        t = t.cpu()
    t = t.resolve_conj().resolve_neg()
    if not t.is_contiguous():
        t = t.contiguous()
    return t


def byte_view(tensor: torch.Tensor) -> NDArray[np.uint8]:
    """A flat uint8 numpy view of a C-contiguous CPU tensor's bytes (shares its memory).

    Works for every dtype, including those numpy lacks (bfloat16, float8, complex32).
    """
    return tensor.reshape(-1).view(torch.uint8).numpy()


def element_count(shape: Sequence[int], limit: int) -> Optional[int]:
    """The product of shape, or None once it passes limit (bounded work on hostile shapes)."""
    if 0 in shape:
        return 0
    count = 1
    for n in shape:
        count *= n
        if count > limit:
            return None
    return count


def empty_tensor(shape: Sequence[int], dtype: torch.dtype, device: Device) -> torch.Tensor:
    """An uninitialised CPU tensor; pinned when it is bound for a CUDA device."""
    pin = torch.device(device).type == "cuda" and torch.cuda.is_available()
    if pin or dtype != torch.uint8:
        return torch.empty(shape, dtype=dtype, pin_memory=pin)
    # numpy advises huge pages for large arrays, which makes first touch of a multi-GiB
    # buffer several times cheaper than torch's 4 KiB-page allocation.
    return torch.from_numpy(np.empty(shape, np.uint8))


def to_device(tensor: torch.Tensor, device: Device) -> torch.Tensor:
    device = torch.device(device)
    return tensor if device.type == "cpu" else tensor.to(device)


def encrypt_tensor(tensor: torch.Tensor, key: Optional[KeyLike] = None, *,
                   recipients: Optional[Recipients] = None, metadata: Optional[Mapping[str, Any]] = None,
                   threads: Optional[int] = None, suite: Suite = 256) -> bytes:
    """Encrypts a tensor; its dtype and shape go into the header (authenticated).

    Any dtype but the quantized ones works, including bfloat16, the float8 types and
    complex32. A CPU tensor's memory is encrypted in place, without a copy, when it is
    C-contiguous; a non-contiguous one (transposed, sliced) is packed into C order first, and a
    tensor on another device (CUDA, MPS) is **copied to the CPU** first, which needs that much
    host memory and synchronises its device. A tensor that requires grad is detached: only its
    values are stored, never its autograd graph or ``requires_grad``.

    Args:
        tensor: a dense ``torch.Tensor``.
        key: the 32-byte key.
        recipients: instead of key, envelope encryption (see ``shardseal.encrypt``).
        metadata: a JSON-serialisable mapping for the header: authenticated, not secret.
        threads: worker threads; None uses every available CPU, 1 runs inline.
        suite: 256 (the default) or 128.

    Returns:
        The container: header (``{"content_type": "torch.Tensor", "tensor": {"dtype": ...,
        "shape": [...]}}`` and the user metadata) and the encrypted little-endian C-order bytes.

    Raises:
        TypeError: not a tensor; a sparse, nested or quantized tensor; a bad key or metadata.
        ValueError: a meta tensor, a key that is not 32 bytes, a bad thread count or suite.
    """
    check_byte_order()
    t = cpu_contiguous(tensor)
    info = {"content_type": TENSOR_CONTENT_TYPE,
            "tensor": {"dtype": dtype_name(t.dtype), "shape": list(t.shape)}}
    plan = _blob.plan_header(key, recipients, suite, _blob.header_metadata(metadata, info))
    sealed: bytes = _backend.impl.seal(suite, plan.input_key, _blob.random_salt(), plan.fixed,
                              byte_view(t), _buffers.thread_count(threads), plan.header)
    return sealed


def _tensor_spec(spec: object) -> tuple[torch.dtype, list[int]]:
    if not isinstance(spec, dict) or "dtype" not in spec or "shape" not in spec:
        raise FormatError("this container does not hold a torch tensor (made by encrypt_tensor); "
                          "use shardseal.decrypt() or shardseal.decrypt_array()")
    name = spec["dtype"]
    if not isinstance(name, str) or name not in DTYPE_SIZES:
        raise FormatError(f"the header's tensor dtype {_shown_name(name)} is not a dtype of the table of FORMAT.md 2.3.1")
    dtype = DTYPES.get(name)
    if dtype is None:
        raise FormatError(f"the header's tensor dtype {name!r} is not a dtype of this torch ({torch.__version__})")
    # Before torch.empty: a hostile shape must not reach torch's stride computation.
    shape = _blob.check_shape(spec["shape"], DTYPE_SIZES[name], "tensor")
    return dtype, shape


def _shown_name(name: object) -> str:
    # A header's string may be long or odd: show a short, escaped form.
    return repr(name[:40]) + ("..." if len(name) > 40 else "") if isinstance(name, str) else type(name).__name__


def decrypt_tensor(blob: BytesLike, key: Optional[KeyLike] = None, *, identities: Optional[Identities] = None,
                   device: Device = "cpu", threads: Optional[int] = None) -> torch.Tensor:
    """Decrypts a container made by ``encrypt_tensor`` into a new tensor.

    The bytes are decrypted straight into the new tensor's memory. For a CUDA ``device`` they
    are decrypted into a pinned (page-locked) CPU tensor, which is then copied to the device;
    other devices get an ordinary CPU tensor copied over. The result does not require grad.

    Args:
        blob: the container, any bytes-like object.
        key: the 32-byte key.
        identities: identities to try after key (see ``shardseal.decrypt``).
        device: where the tensor goes ("cpu", "cuda", "cuda:1", a ``torch.device``).
        threads: worker threads; None uses every available CPU.

    Raises:
        FormatError: the container does not hold a tensor, or its dtype or shape is invalid
            (and as ``shardseal.decrypt``).
        KeyNotFoundError, AuthenticationError, TruncatedError: as ``shardseal.decrypt``.
    """
    check_byte_order()
    view, header = _blob.open_header(blob)
    dtype, shape = _tensor_spec(header.metadata.get("tensor"))
    plaintext_size = _layout.message_plaintext_size(view.nbytes - header.size)
    count = element_count(shape, plaintext_size)
    if count is None or count * dtype.itemsize != plaintext_size:
        # Either tampering (decryption then fails authentication) or a writer bug.
        _blob.decrypt(view, key, identities=identities, threads=threads)
        raise FormatError("the header's tensor shape and dtype do not match the payload size")
    result = empty_tensor(shape, dtype, device)
    _blob.decrypt_into(view, key, byte_view(result), identities=identities, threads=threads)
    return to_device(result, device)


def save(obj: object, f: FileTarget, key: Optional[KeyLike] = None, *,
         recipients: Optional[Recipients] = None, metadata: Optional[Mapping[str, Any]] = None,
         threads: Optional[int] = None, suite: Suite = 256) -> None:
    """``torch.save(obj, f)`` into an encrypted container, with no plaintext file anywhere.

    ``torch.save`` writes its zip archive straight into an encrypting stream (it only writes,
    it never seeks), so neither the disk nor memory ever holds the whole plaintext archive.

    Args:
        obj: anything ``torch.save`` accepts (tensors, state dicts, nested containers).
        f: a path, written atomically (a temporary file renamed into place on success; on any
            error nothing is left under the path), or a binary file object opened for writing
            (which is left open; on an error it holds an incomplete container that fails to
            decrypt).
        key: the 32-byte key.
        recipients: instead of key, envelope encryption (see ``shardseal.encrypt``).
        metadata: JSON metadata for the container header: authenticated, not secret.
        threads: worker threads; None uses every available CPU.
        suite: 256 (the default) or 128.

    Raises:
        TypeError, ValueError: bad keys, recipients or metadata.

    Whatever ``torch.save`` raises goes on unchanged.
    """
    with _files.open(f, "wb", key=key, recipients=recipients, metadata=metadata, threads=threads,
                     suite=suite) as out:
        # Safe: torch.save only writes (and flushes) to a file object, as an EncryptingWriter
        # does (an io.BufferedIOBase, which typing does not count as an IO[bytes]).
        torch.save(obj, cast(IO[bytes], out))


def load(f: FileTarget, key: Optional[KeyLike] = None, map_location: torch.serialization.MAP_LOCATION = None,
         weights_only: bool = True, *, identities: Optional[Identities] = None,
         threads: Optional[int] = None) -> Any:
    """``torch.load`` from a container written by ``save``; nothing is written anywhere.

    ``torch.load`` reads the archive through a random-access decrypting reader, so only the
    parts it reads are decrypted, and each is authenticated first. A non-seekable ``f`` (a
    pipe) is decrypted into memory first.

    Args:
        f: a path or a binary file object opened for reading.
        key: the 32-byte key.
        identities: identities to try after key (see ``shardseal.decrypt``).
        map_location: as for ``torch.load``.
        weights_only: as for ``torch.load``. True (the default) unpickles only tensors,
            primitive types and containers of them; keep it unless you trust whoever could
            write with this key with running code on your machine.
        threads: worker threads; None uses every available CPU.

    Raises:
        FormatError, KeyNotFoundError, AuthenticationError, TruncatedError: as
            ``shardseal.decrypt``; and whatever ``torch.load`` raises.
    """
    with _files.open(f, "rb", key=key, identities=identities, threads=threads) as reader:
        # Safe: torch.load reads, seeks and tells, all of which a seekable reader does (its
        # class is an io.BufferedIOBase, which typing does not count as an IO[bytes]).
        source = cast(IO[bytes], reader) if reader.seekable() else io.BytesIO(reader.read())
        return torch.load(source, map_location=map_location, weights_only=weights_only)
