"""Encrypted safetensors files (the ``torch`` extra).

A file written by ``save_file`` is a shardseal container whose plaintext is exactly the
safetensors file ``safetensors.torch.save`` makes of the same tensors, so ``shardseal decrypt``
gives an ordinary ``.safetensors`` file. Reading needs no plaintext file either:

    >>> import shardseal.safetensors
    >>> shardseal.safetensors.save_file(model.state_dict(), "model.safetensors.sseal", key=key)
    >>> model.load_state_dict(shardseal.safetensors.load_file("model.safetensors.sseal", key=key))
    >>> with shardseal.safetensors.safe_open("model.safetensors.sseal", "pt", key=key) as f:
    ...     w = f.get_tensor("lm_head.weight")        # decrypts only that tensor's chunks
    ...     rows = f.get_slice("embed.weight")[1000:1010]

``safe_open(..., framework="numpy")`` needs only numpy; everything else imports torch.
A header that is not a valid safetensors header raises ``FormatError`` (a ``ValueError``) when
the file is opened, never later: this includes a shape whose byte size, zero dimensions counted
as one, passes ``2**63 - 1`` (``MAX_TENSOR_BYTES``; torch could not compute its strides), which
safetensors itself accepts, and a shape of more than 64 dimensions (``MAX_NDIM``, numpy's limit). A file whose tensors are all zero-size loads, as with safetensors.
"""

from __future__ import annotations

import inspect
import json
import math
import operator
import re
import struct
import warnings
from dataclasses import dataclass
from types import ModuleType
from typing import IO, TYPE_CHECKING, Any, Callable, Iterable, Literal, Mapping, Optional, Sequence, Union, cast, overload

import numpy as np

from ..container import blob as _blob
from ..io import files as _files
from ..keys.envelope import DirectKey
from ..keys.keyref import is_key_ref
from ..errors import FormatError, TruncatedError
from ..io.files import FileTarget
from ..io.stream import DecryptingReader, EncryptingWriter
from ..keys.keyref import KeyLike
from ..keys.registry import Identities, Recipients

if TYPE_CHECKING:
    import torch
    from numpy.typing import NDArray
    from typing_extensions import TypeGuard

# What a tensor reads as: a torch tensor (framework "pt") or a numpy array ("numpy").
Loaded = Union["torch.Tensor", "NDArray[Any]"]
# A tensor entry of a file being written: (name, safetensors dtype code, tensor).
_Entry = tuple[str, str, "torch.Tensor"]

__all__ = ["MAX_HEADER_SIZE", "MAX_NDIM", "MAX_TENSOR_BYTES", "load_file", "safe_open", "save_file"]

# safetensors' own limit on its JSON header.
MAX_HEADER_SIZE = 100_000_000
# The largest tensor (in bytes, zero dimensions counted as one) a header may describe: sizes
# and strides must fit a signed 64-bit integer, as torch and numpy compute them. The same
# rules as for shardseal's own array and tensor headers (FORMAT.md 2.3.1), from one definition.
MAX_TENSOR_BYTES = _blob.MAX_TENSOR_BYTES
# At most numpy's number of dimensions.
MAX_NDIM = _blob.MAX_NDIM
_METADATA_KEY = "__metadata__"

# safetensors dtype: (bytes per element, torch dtype name, numpy dtype or None). The order is
# safetensors' Dtype order: it writes tensors by descending dtype, then by name.
_DTYPES: dict[str, tuple[int, str, Optional[str]]] = {
    "BOOL": (1, "bool", "|b1"),
    # Two 4-bit floats per byte. safetensors counts 4-bit elements in the shape (its last
    # dimension is twice torch's), so F4 entries are converted at the edge (_F4 below).
    "F4": (1, "float4_e2m1fn_x2", None),
    "U8": (1, "uint8", "|u1"),
    "I8": (1, "int8", "|i1"),
    "F8_E5M2": (1, "float8_e5m2", None),
    "F8_E4M3": (1, "float8_e4m3fn", None),
    "F8_E8M0": (1, "float8_e8m0fnu", None),
    "F8_E4M3FNUZ": (1, "float8_e4m3fnuz", None),
    "F8_E5M2FNUZ": (1, "float8_e5m2fnuz", None),
    "I16": (2, "int16", "<i2"),
    "U16": (2, "uint16", "<u2"),
    "F16": (2, "float16", "<f2"),
    "BF16": (2, "bfloat16", None),
    "I32": (4, "int32", "<i4"),
    "U32": (4, "uint32", "<u4"),
    "F32": (4, "float32", "<f4"),
    "C64": (8, "complex64", "<c8"),
    "F64": (8, "float64", "<f8"),
    "I64": (8, "int64", "<i8"),
    "U64": (8, "uint64", "<u8"),
}
_RANK = {name: rank for rank, name in enumerate(_DTYPES)}
_CODE_OF_TORCH_NAME = {torch_name: code for code, (_, torch_name, _) in _DTYPES.items()}
_F4 = "F4"
# Marks an argument the caller did not give (None is a valid device or metadata value).
_UNSET: Any = object()


def _torch() -> ModuleType:
    """shardseal.torch (which imports torch), with a clear error without the extra."""
    from . import torch as sstorch

    return sstorch


@dataclass(frozen=True)
class _TensorInfo:
    dtype: str
    shape: tuple[int, ...]
    begin: int  # offsets in the data section
    end: int
    # The shape as the file states it: safetensors counts F4 elements in 4-bit units, so its
    # last dimension is twice that of ``shape`` (torch's float4_e2m1fn_x2 shape) there.
    file_shape: tuple[int, ...] = ()

    @property
    def itemsize(self) -> int:
        return _DTYPES[self.dtype][0]


@dataclass(frozen=True)
class _Header:
    data_start: int  # plaintext offset of the data section: 8 + header length
    tensors: dict[str, _TensorInfo]
    metadata: Optional[dict[str, str]]


# ---- arguments: safetensors' signatures, and the old positional key --------------------


def _looks_like_key(value: Any) -> bool:  # Any: a probe of whatever was passed
    """Whether a positional argument is a key (the old signatures put it second or third)
    rather than metadata, a device or a framework: bytes-like or a key reference, never a
    str, a mapping, None or a device."""
    if value is None or isinstance(value, (str, Mapping)):
        return False
    if is_key_ref(value) or isinstance(value, DirectKey):
        return True
    try:
        memoryview(value)
    except TypeError:
        return False
    return True


def _warn_positional_key(function: str) -> None:
    warnings.warn(f"shardseal.safetensors.{function}: the key as a positional argument is deprecated; "
                  "the positional arguments are now safetensors' own: pass key= (or recipients=, "
                  "identities=) as a keyword", DeprecationWarning, stacklevel=4)


def _positional(function: str, args: tuple[Any, ...], names: tuple[str, ...], given: dict[str, Any],
                key: Optional[KeyLike]) -> tuple[dict[str, Any], Optional[KeyLike]]:
    """Sorts a call's positional args into the named parameters (safetensors' order); an old
    call whose first one is a key (``load_file(path, key, device)``) takes the key from it
    and the rest in the same order, with a DeprecationWarning.

    Raises:
        TypeError: too many positional arguments, a parameter given twice, two keys.
    """
    if args and _looks_like_key(args[0]):
        if key is not None:
            raise TypeError(f"{function}() got a key both positionally and as key=")
        _warn_positional_key(function)
        key, args = args[0], args[1:]
    if len(args) > len(names):
        raise TypeError(f"{function}() takes at most {len(names)} positional arguments after the file "
                        f"({', '.join(names)}); pass key= as a keyword")
    values = dict(given)
    for name, value in zip(names, args):
        if values[name] is not _UNSET:
            raise TypeError(f"{function}() got multiple values for argument {name!r}")
        values[name] = value
    return values, key


def is_url(filename: object) -> TypeGuard[str]:
    """Whether filename is an fsspec URL (``sseal::memory://...``, ``s3://...``) rather than a
    local path: a str that starts with a protocol followed by ``://`` or ``::``."""
    return isinstance(filename, str) and re.match(r"[A-Za-z][A-Za-z0-9+.\-]*(://|::)", filename) is not None


@overload
def open_target(filename: FileTarget, mode: Literal["rb"], storage_options: Optional[Mapping[str, Any]] = None,
                **kwargs: Any) -> DecryptingReader: ...


@overload
def open_target(filename: FileTarget, mode: Literal["wb"], storage_options: Optional[Mapping[str, Any]] = None,
                **kwargs: Any) -> EncryptingWriter: ...


def open_target(filename: FileTarget, mode: Literal["rb", "wb"], storage_options: Optional[Mapping[str, Any]] = None,
                **kwargs: Any) -> Union[DecryptingReader, EncryptingWriter]:
    """``shardseal.open`` of a path or file object, or ``shardseal.fsspec.open_url`` of an
    fsspec URL (fsspec, an extra, is imported only then).

    Raises:
        TypeError: storage_options for something that is not a URL.
    """
    if is_url(filename):
        from ..io import fsspec as _sealfs

        return _sealfs.open_url(filename, mode, storage_options=storage_options, **kwargs)
    if storage_options is not None:
        raise TypeError("storage_options= is for fsspec URLs, not local paths or file objects")
    return _files.open(filename, mode, **kwargs)


# ---- writing -----------------------------------------------------------------------------


def _check_metadata(metadata: object) -> Optional[dict[str, str]]:
    if metadata is None:
        return None
    if not isinstance(metadata, Mapping):
        raise TypeError(f"metadata must be a mapping of str to str, not {type(metadata).__name__}")
    for name, value in metadata.items():
        if not isinstance(name, str) or not isinstance(value, str):
            raise TypeError(f"safetensors metadata maps str to str; got {name!r}: {type(value).__name__}")
    return dict(sorted(metadata.items()))


def _check_shared(tensors: dict[str, torch.Tensor]) -> None:
    """Refuses tensors that share memory, as safetensors does (tied weights would be untied)."""
    areas = []
    for name, tensor in tensors.items():
        if tensor.numel() == 0:
            continue
        span = sum((n - 1) * s for n, s in zip(tensor.shape, tensor.stride())) + 1
        start = tensor.data_ptr()
        areas.append((str(tensor.device), start, start + span * tensor.element_size(), name))
    areas.sort()
    shared = []
    for (device_a, _, end_a, name_a), (device_b, start_b, _, name_b) in zip(areas, areas[1:]):
        if device_a == device_b and start_b < end_a:
            shared.append((name_a, name_b))
    if shared:
        raise RuntimeError(f"some tensors share memory, which safetensors does not store: {shared}; "
                           "save one of each group, or .clone() them")


def _file_shape(name: str, code: str, tensor: torch.Tensor) -> list[int]:
    """The shape safetensors writes: an F4 tensor's last dimension counts 4-bit values."""
    shape = list(tensor.shape)
    if code == _F4:
        if not shape:
            raise ValueError(f"{name!r} is a 0-d float4_e2m1fn_x2 tensor, which safetensors cannot store")
        shape[-1] *= 2
    return shape


def _build_header(entries: Iterable[tuple[str, str, list[int], int]], metadata: Optional[dict[str, str]]) -> bytes:
    """safetensors' header for (name, dtype code, shape, nbytes) entries in file order: 8-byte
    little-endian length, compact JSON, spaces up to a multiple of 8 bytes."""
    header: dict[str, Any] = {}
    if metadata is not None:
        header[_METADATA_KEY] = metadata
    offset = 0
    for name, code, shape, nbytes in entries:
        header[name] = {"dtype": code, "shape": shape, "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    try:
        text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("tensor names and metadata must be valid Unicode (no lone surrogates)") from None
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text


def save_file(tensors: Mapping[str, Any], filename: FileTarget, *args: Any, metadata: Any = _UNSET,
              key: Optional[KeyLike] = None, recipients: Optional[Recipients] = None, threads: Optional[int] = None,
              storage_options: Optional[Mapping[str, Any]] = None) -> None:
    """Writes tensors as an encrypted safetensors file, like ``safetensors.torch.save_file``.

    Called as safetensors' ``save_file(tensors, filename, metadata=None)``, with the key as a
    keyword: ``save_file(tensors, "model.safetensors.sseal", key=key)``. The old call with the
    key third (``save_file(tensors, path, key, metadata)``) still works and warns
    (DeprecationWarning): a key is bytes-like or a key reference, never a mapping.

    The plaintext is exactly the bytes ``safetensors.torch.save(tensors, metadata)`` makes
    (tensors ordered by dtype then name, the same JSON header), so ``shardseal decrypt`` gives a
    normal safetensors file. safetensors writes a ``metadata`` of several entries in an arbitrary
    order; this writes it sorted by key. Tensor bytes stream from the tensors' memory into the
    encrypting writer: no copy of the model is made, and no plaintext reaches the disk.

    Unlike safetensors, non-contiguous tensors are accepted (packed one at a time). Tensors on
    a GPU are copied to the CPU one at a time. Tensors requiring grad are detached.

    Args:
        tensors: a mapping of names to dense tensors (e.g. ``model.state_dict()``).
        filename: a path, written atomically (nothing is left under it on an error), a binary
            file object opened for writing, or an fsspec URL (``sseal::s3://bucket/m.sseal``,
            ``memory://...``; the ``sseal::`` prefix is optional).
        *args: ``metadata``, positionally as in safetensors (or the deprecated ``key, metadata``).
        metadata: safetensors' ``__metadata__``: a mapping of str to str, stored **inside** the
            encrypted plaintext (so it is secret, unlike shardseal's header metadata).
        key: the 32-byte key, or a key reference (``shardseal.keyref``).
        recipients: instead of key, envelope encryption (see ``shardseal.encrypt``).
        threads: worker threads; None uses every available CPU.
        storage_options: for a URL: options of the target filesystem (``fsspec.open``'s).

    Raises:
        TypeError: not a mapping of str to tensors, metadata not str to str, too many
            positional arguments.
        ValueError: a dtype safetensors cannot store (complex128, complex32, sub-byte and
            quantized dtypes), a sparse or meta tensor, the name ``__metadata__``.
        RuntimeError: tensors that share memory (tied weights), as safetensors refuses them;
            this includes views of one storage whose byte ranges interleave.
    """
    values, key = _positional("save_file", args, ("metadata",), {"metadata": metadata}, key)
    header, entries = _plan_file(tensors, None if values["metadata"] is _UNSET else values["metadata"])
    with open_target(filename, "wb", storage_options, key=key, recipients=recipients, threads=threads) as out:
        _write_planned(out, header, entries)


def write_tensors(out: Union[EncryptingWriter, IO[bytes]], tensors: Mapping[str, Any], metadata: Optional[Mapping[str, str]] = None) -> None:
    """Writes the safetensors file of tensors into an open writer (``shardseal.checkpoint``
    writes its shards with this, into writers it opens with its own header metadata).

    Raises:
        TypeError, ValueError, RuntimeError: as ``save_file``, before anything is written.
    """
    _write_planned(out, *_plan_file(tensors, metadata))


def _write_planned(out: Union[EncryptingWriter, IO[bytes]], header: bytes, entries: Sequence[_Entry]) -> None:
    sstorch = _torch()
    out.write(header)
    for name, _, tensor in entries:
        data = sstorch.cpu_contiguous(tensor, repr(name))
        out.write(sstorch.byte_view(data))
        del data  # a CPU copy of a GPU tensor goes before the next one is made


def _plan_file(tensors: Mapping[str, Any], metadata: object) -> tuple[bytes, list[_Entry]]:
    """Checks tensors and metadata; the safetensors header and the (name, code, tensor)
    entries in file order."""
    sstorch = _torch()
    torch = sstorch.torch
    sstorch.check_byte_order()
    if not isinstance(tensors, Mapping):
        raise TypeError(f"tensors must be a mapping of names to tensors, not {type(tensors).__name__}")
    metadata = _check_metadata(metadata)
    entries = []
    for name, tensor in tensors.items():
        if not isinstance(name, str):
            raise TypeError(f"tensor names must be str, got {name!r}")
        if name == _METADATA_KEY:
            raise ValueError(f"{_METADATA_KEY!r} is reserved by safetensors and cannot name a tensor")
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"{name!r} must be a torch.Tensor, not {type(tensor).__name__}")
        if tensor.layout != torch.strided or tensor.is_nested:
            raise ValueError(f"{name!r} is a sparse or nested tensor, which safetensors cannot store: "
                             "convert it with .to_dense()")
        if tensor.device.type == "meta":
            raise ValueError(f"{name!r} is on the meta device and has no data")
        code = None if tensor.is_quantized else _CODE_OF_TORCH_NAME.get(sstorch.dtype_name(tensor.dtype))
        if code is None:
            raise ValueError(f"{name!r} has dtype {tensor.dtype}, which safetensors cannot store")
        entries.append((name, code, tensor))
    _check_shared({name: tensor for name, _, tensor in entries})
    entries.sort(key=lambda entry: (-_RANK[entry[1]], entry[0]))
    header = _build_header(
        [(name, code, _file_shape(name, code, t), t.numel() * _DTYPES[code][0]) for name, code, t in entries],
        metadata)
    return header, entries


# ---- reading -----------------------------------------------------------------------------


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for name, value in pairs:
        if name in result:
            raise ValueError(f"duplicate key {name!r}")
        result[name] = value
    return result


def _nbytes_matches(shape: Sequence[int], itemsize: int, expected: int) -> bool:
    if 0 in shape:
        return expected == 0
    count = itemsize
    for n in shape:
        count *= n
        if count > expected:
            return False
    return count == expected


def _strided_size(shape: Sequence[int], itemsize: int) -> int:
    """The byte size of shape with zero dimensions counted as one: the largest stride (and
    size) torch or numpy computes for a tensor of that shape."""
    return _blob.strided_size(shape, itemsize)


def _f4_shape(name: str, shape: list[int]) -> list[int]:
    """torch's float4_e2m1fn_x2 shape of a safetensors F4 shape (two values per byte).

    Raises:
        FormatError: a 0-d shape, or an odd last dimension (half a byte).
    """
    if not shape or shape[-1] % 2:
        raise FormatError(f"safetensors header: F4 tensor {name!r} has shape {shape}, whose last "
                          "dimension is not an even number of 4-bit values")
    return [*shape[:-1], shape[-1] // 2]


def _parse_entry(name: str, entry: object, data_size: int) -> _TensorInfo:
    if not isinstance(entry, dict):
        raise FormatError(f"safetensors header: tensor {name!r} is not a JSON object")
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if not isinstance(dtype, str) or dtype not in _DTYPES:
        raise FormatError(f"safetensors header: tensor {name!r} has an unknown or unsupported dtype {dtype!r}")
    if not isinstance(shape, list) or not all(type(n) is int and 0 <= n < 2**63 for n in shape):
        raise FormatError(f"safetensors header: tensor {name!r} has a shape that is not a list of "
                          "non-negative integers")
    if (not isinstance(offsets, list) or len(offsets) != 2
            or not all(type(n) is int and n >= 0 for n in offsets) or offsets[0] > offsets[1]):
        raise FormatError(f"safetensors header: tensor {name!r} has data_offsets that are not "
                          "[begin, end] with 0 <= begin <= end")
    begin, end = offsets
    file_shape = tuple(shape)
    if dtype == _F4:
        shape = _f4_shape(name, shape)
    if end > data_size:
        raise FormatError(f"safetensors header: tensor {name!r} has data_offsets [{begin}, {end}] past "
                          f"the end of the data ({data_size} bytes)")
    if not _nbytes_matches(shape, _DTYPES[dtype][0], end - begin):
        raise FormatError(f"safetensors header: tensor {name!r} has shape {shape} and dtype {dtype}, "
                          f"which do not fill its data_offsets [{begin}, {end}]")
    if len(shape) > MAX_NDIM:  # numpy cannot make such an array, torch not always either
        raise FormatError(f"safetensors header: tensor {name!r} has {len(shape)} dimensions (at most {MAX_NDIM})")
    if _strided_size(shape, _DTYPES[dtype][0]) > MAX_TENSOR_BYTES:
        # A zero-size tensor fills [begin, begin) whatever its other dimensions, but torch and
        # numpy still compute strides from them: refuse what would overflow a 64-bit size.
        raise FormatError(f"safetensors header: tensor {name!r} has shape {shape}, whose strides "
                          f"would pass {MAX_TENSOR_BYTES} bytes")
    return _TensorInfo(dtype, tuple(shape), begin, end, file_shape)


def _parse_header(pread: Callable[[int, int], bytes], size: int) -> _Header:
    """Reads and checks a safetensors header with pread(offset, n) from a plaintext of size
    bytes: the same checks as safetensors (a bounded length, tensors packed back to back from
    the start of the data section to the end of the file), and no allocation larger than the
    header itself.

    Raises:
        FormatError: a header that is not a valid safetensors header.
    """
    if size < 8:
        raise FormatError(f"not a safetensors file: {size} bytes, shorter than its 8-byte header length")
    (length,) = struct.unpack("<Q", pread(0, 8))
    if length > MAX_HEADER_SIZE:
        raise FormatError(f"safetensors header length {length} is over the {MAX_HEADER_SIZE}-byte limit")
    if 8 + length > size:
        raise FormatError(f"safetensors header length {length} runs past the end of the file ({size} bytes)")
    try:
        parsed = json.loads(pread(8, length).decode("utf-8"), object_pairs_hook=_no_duplicates)
    except UnicodeDecodeError:
        raise FormatError("safetensors header is not valid UTF-8") from None
    except RecursionError:
        raise FormatError("safetensors header is not valid JSON (nested too deeply)") from None
    except ValueError as exc:
        raise FormatError(f"safetensors header is not valid JSON: {exc}") from None
    if not isinstance(parsed, dict):
        raise FormatError("safetensors header is not a JSON object")
    data_start = 8 + length
    data_size = size - data_start
    metadata = parsed.pop(_METADATA_KEY, None)
    if metadata is not None and not (isinstance(metadata, dict)
                                     and all(isinstance(v, str) for v in metadata.values())):
        raise FormatError(f"safetensors header: {_METADATA_KEY!r} must map strings to strings")
    tensors = {name: _parse_entry(name, entry, data_size) for name, entry in parsed.items()}
    position = 0
    for name, info in sorted(tensors.items(), key=lambda item: (item[1].begin, item[1].end)):
        if info.begin != position:
            how = "overlap the tensor before them" if info.begin < position else "leave a gap before them"
            raise FormatError(f"safetensors header: tensor {name!r} has data_offsets [{info.begin}, "
                              f"{info.end}] that {how} (expected to begin at {position})")
        position = info.end
    if position != data_size:
        raise FormatError(f"safetensors header: the tensors end at data offset {position}, but the data "
                          f"section holds {data_size} bytes")
    return _Header(data_start, tensors, metadata)


def _read_exact(reader: DecryptingReader, offset: int, out: NDArray[Any]) -> None:
    # numpy's stubs declare ndarray a Buffer only for Python 3.12+ (core/buffers.py).
    if reader.preadinto(offset, out) != memoryview(out).nbytes:  # type: ignore[arg-type]
        raise TruncatedError("the file was truncated while being read")


def load_file(filename: FileTarget, *args: Any, device: Any = _UNSET, key: Optional[KeyLike] = None,
              identities: Optional[Identities] = None,
              threads: Optional[int] = None,
              storage_options: Optional[Mapping[str, Any]] = None) -> dict[str, Any]:
    """Loads every tensor of an encrypted safetensors file, like ``safetensors.torch.load_file``.

    Called as safetensors' ``load_file(filename, device="cpu")``, with the key as a keyword:
    ``load_file("model.safetensors.sseal", key=key)``. The old call with the key second
    (``load_file(path, key, device)``) still works and warns (DeprecationWarning).

    The whole file is decrypted with one bulk read on the thread pool into one buffer, and
    the tensors are views of that buffer (no copy per tensor; a tensor whose offset is not a
    multiple of its element size, which safetensors never writes, is copied). So the returned
    tensors share one storage: the buffer is freed when the last of them is, and
    ``.clone()`` one to keep it alone. For a CUDA device the buffer is pinned host memory and
    each tensor is copied to the device.

    Args:
        filename: a path, a binary file object (a non-seekable one is read into memory
            first), or an fsspec URL (``sseal::https://host/m.sseal``, ``memory://...``).
        *args: ``device``, positionally as in safetensors (or the deprecated ``key, device``).
        device: where the tensors go ("cpu", "cuda", ...).
        key: the 32-byte key, or a key reference (``shardseal.keyref``).
        identities: identities to try after key (see ``shardseal.decrypt``).
        threads: worker threads; None uses every available CPU.
        storage_options: for a URL: options of the target filesystem (``fsspec.open``'s).

    Returns:
        A dict of names (sorted) to tensors, ready for ``model.load_state_dict``.

    Raises:
        FormatError: not a valid safetensors header inside (and as ``shardseal.open``).
        KeyNotFoundError, AuthenticationError, TruncatedError: as ``shardseal.decrypt``.
        TypeError: no key or identities, too many positional arguments.
    """
    values, key = _positional("load_file", args, ("device",), {"device": device}, key)
    device = "cpu" if values["device"] is _UNSET else values["device"]
    _torch().check_byte_order()
    with open_target(filename, "rb", storage_options, key=key, identities=identities, threads=threads) as reader:
        return read_tensors(reader, device)


def read_tensors(reader: DecryptingReader, device: Any = "cpu") -> dict[str, Any]:
    """Every tensor of the safetensors file an open ``DecryptingReader`` holds, as
    ``load_file`` (``shardseal.checkpoint`` reads its shards with this).

    Raises:
        FormatError: not a valid safetensors header inside.
        AuthenticationError, TruncatedError: as ``shardseal.decrypt``.
    """
    sstorch = _torch()
    torch = sstorch.torch
    if reader.seekable():
        size = cast(int, reader.size)  # safe: a seekable reader knows its plaintext size
        header = _parse_header(reader.pread, size)
        data = sstorch.empty_tensor((size - header.data_start,), torch.uint8, device)
        _read_exact(reader, header.data_start, data.numpy())
    else:
        plain = reader.read()
        header = _parse_header(lambda offset, n: plain[offset : offset + n], len(plain))
        data = sstorch.empty_tensor((len(plain) - header.data_start,), torch.uint8, device)
        data.numpy()[:] = np.frombuffer(memoryview(plain)[header.data_start :], np.uint8)
        del plain
    result = {}
    for name in sorted(header.tensors):
        info = header.tensors[name]
        dtype = sstorch.DTYPES[_DTYPES[info.dtype][1]]
        if info.begin == info.end:  # zero-size: an empty slice cannot be reinterpreted
            result[name] = sstorch.to_device(torch.empty(info.shape, dtype=dtype), device)
            continue
        raw = data[info.begin : info.end]
        if info.begin % info.itemsize:
            raw = raw.clone()  # a misaligned view: torch refuses to reinterpret it
        tensor = raw.view(dtype).reshape(info.shape)
        result[name] = sstorch.to_device(tensor, device)
    return result


class safe_open:
    """Random access to the tensors of an encrypted safetensors file, like ``safetensors.safe_open``.

    Opening reads and checks the container header, the key, and the safetensors header (only
    the chunks holding it are decrypted). ``get_tensor`` then decrypts only the 16 KiB chunks
    that hold that tensor's bytes, straight into the new tensor, and authenticates them first:
    a tampered chunk fails exactly the reads that touch it. Thread-safe: several threads may
    call ``get_tensor`` at once.

    Called as safetensors' ``safe_open(filename, framework, device="cpu")``, with the key as a
    keyword: ``safe_open("model.safetensors.sseal", "pt", key=key)``; framework defaults to
    ``"pt"``. The old call with the key second (``safe_open(path, key, framework)``) still
    works and warns (DeprecationWarning).

    Over an fsspec URL (``sseal::https://host/model.safetensors.sseal``, ``s3://...``), the
    reads are range requests: ``get_tensor`` fetches the chunks of that tensor (and the
    target's read-ahead, 1 MiB by default), not the file.

    Args:
        filename: a path, a seekable binary file object, or an fsspec URL.
        *args: ``framework`` and ``device``, positionally as in safetensors (or the deprecated
            ``key, framework, device``).
        framework: ``"pt"`` (torch tensors, the default) or ``"numpy"`` (arrays; bfloat16,
            float8 and float4 tensors have no numpy dtype and raise ValueError).
        device: ``"pt"`` only: where the tensors go (CUDA: read into pinned memory, then copied).
        key: the 32-byte key, or a key reference (``shardseal.keyref``).
        identities: identities to try after key (see ``shardseal.decrypt``).
        threads: worker threads for long reads; None uses every available CPU.
        storage_options: for a URL: options of the target filesystem (``fsspec.open``'s).

    Raises:
        FormatError: not a valid safetensors header inside (and as ``shardseal.open``).
        KeyNotFoundError, AuthenticationError, TruncatedError: as ``shardseal.open``.
        ValueError: an unknown framework, a non-CPU device for numpy, a non-seekable file.
        TypeError: no key or identities, too many positional arguments.
    """

    def __init__(self, filename: FileTarget, *args: Any, framework: Any = _UNSET, device: Any = _UNSET,
                 key: Optional[KeyLike] = None, identities: Optional[Identities] = None, threads: Optional[int] = None,
                 storage_options: Optional[Mapping[str, Any]] = None) -> None:
        values, key = _positional("safe_open", args, ("framework", "device"),
                                  {"framework": framework, "device": device}, key)
        framework = "pt" if values["framework"] is _UNSET else values["framework"]
        device = "cpu" if values["device"] is _UNSET else values["device"]
        self._sstorch: Optional[ModuleType]  # shardseal.torch, or None for numpy
        if framework in ("pt", "torch"):
            self._sstorch = _torch()
        elif framework in ("numpy", "np"):
            self._sstorch = None
            if str(device) != "cpu":
                raise ValueError(f"framework='numpy' reads into host memory; device must be 'cpu', not {device!r}")
        else:
            raise ValueError(f"framework must be 'pt' or 'numpy', not {framework!r}")
        self._device = device
        self._reader = open_target(filename, "rb", storage_options, key=key, identities=identities, threads=threads)
        try:
            if not self._reader.seekable():
                raise ValueError("safe_open needs a seekable file (random access)")
            # Safe: a seekable reader knows its plaintext size.
            self._header = _parse_header(self._reader.pread, cast(int, self._reader.size))
        except BaseException:
            self._reader.close()
            raise

    def __enter__(self) -> safe_open:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._reader.close()

    def container_metadata(self) -> dict[str, Any]:
        """The container header's metadata (authenticated, not secret; the caller's own is
        under ``"user"``), as ``shardseal.inspect`` shows it."""
        copied: dict[str, Any] = json.loads(json.dumps(self._reader.header.metadata))
        return copied

    def keys(self) -> list[str]:
        """The tensor names, sorted."""
        return sorted(self._header.tensors)

    def offset_keys(self) -> list[str]:
        """The tensor names in the order of their data in the file."""
        return sorted(self._header.tensors, key=lambda name: self._header.tensors[name].begin)

    def metadata(self) -> Optional[dict[str, str]]:
        """The file's ``__metadata__`` (a dict of str to str), or None without one."""
        metadata = self._header.metadata
        return None if metadata is None else dict(metadata)

    def _info(self, name: str) -> _TensorInfo:
        if self._reader.closed:
            raise ValueError("I/O operation on a closed safe_open")
        try:
            return self._header.tensors[name]
        except (KeyError, TypeError):
            raise KeyError(f"this file has no tensor named {name!r}") from None

    def get_tensor(self, name: str) -> Loaded:
        """The tensor ``name``, decrypting only the chunks that hold it.

        Raises:
            KeyError: no tensor of that name.
            AuthenticationError: a chunk holding it was tampered with.
        """
        info = self._info(name)
        return self._finish(self._read_rows(info, 0, info.shape[0] if info.shape else 1, pin=True))

    def get_slice(self, name: str) -> TensorSlice:
        """A lazy view of tensor ``name``: ``get_shape()``, ``get_dtype()`` and ``[...]``."""
        return TensorSlice(self, name, self._info(name))

    def _read_rows(self, info: _TensorInfo, lo: int, hi: int, pin: bool = False) -> Loaded:
        """Rows lo:hi along the first dimension (the whole of a 0-d tensor), on the CPU."""
        tail = info.shape[1:]
        row_bytes = 0 if 0 in tail else info.itemsize * math.prod(tail)
        shape = (hi - lo, *tail) if info.shape else ()
        if self._sstorch is None:
            numpy_dtype = _DTYPES[info.dtype][2]
            if numpy_dtype is None:
                raise ValueError(f"dtype {info.dtype} has no numpy equivalent: use framework='pt'")
            result = np.empty(shape, np.dtype(numpy_dtype))
            out = result.reshape(-1).view(np.uint8)
        else:
            dtype = self._sstorch.DTYPES[_DTYPES[info.dtype][1]]
            result = self._sstorch.empty_tensor(shape, dtype, self._device if pin else "cpu")
            out = self._sstorch.byte_view(result)
        _read_exact(self._reader, self._header.data_start + info.begin + lo * row_bytes, out)
        return result

    def _finish(self, result: Any) -> Loaded:  # Any: a tensor or an array, as self._sstorch says
        """A fresh contiguous tensor on the requested device, or a numpy array."""
        if self._sstorch is None:
            array: NDArray[Any] = np.asarray(result)
            return array if array.flags.c_contiguous else array.copy()
        tensor: torch.Tensor = self._sstorch.to_device(result.contiguous(), self._device)
        return tensor


def _row_index(index: Any) -> Optional[int]:  # Any: an index of any type, probed
    """index as a Python int when it is an integer (not a bool), else None."""
    if isinstance(index, (bool, np.bool_)):
        return None
    try:
        return operator.index(index)
    except TypeError:
        return None


class TensorSlice:
    """A tensor of a ``safe_open`` file, read on indexing (``safe_open.get_slice``).

    ``s[2:5]``, ``s[7]``, ``s[2:5, 1:3]`` (any index whose first element is an integer or a
    slice) decrypt only the rows of the first dimension it selects; other indices (``s[..., 0]``,
    ``s[:, 1:3]`` reads every row anyway) read the whole tensor, then index it.
    """

    def __init__(self, owner: safe_open, name: str, info: _TensorInfo) -> None:
        self._owner = owner
        self._name = name
        self._info = info

    def get_shape(self) -> list[int]:
        """The shape as the file states it (as safetensors: an F4 tensor counts 4-bit values,
        so its last dimension is twice that of the float4_e2m1fn_x2 tensor read)."""
        return list(self._info.file_shape)

    def get_dtype(self) -> str:
        """The safetensors dtype: "F32", "BF16", "I64", ..."""
        return self._info.dtype

    def __len__(self) -> int:
        if not self._info.shape:
            raise TypeError("len() of a 0-d tensor")
        return self._info.shape[0]

    def __getitem__(self, index: Any) -> Loaded:  # Any: whatever torch or numpy indexing takes
        owner, info = self._owner, self._info
        parts = index if isinstance(index, tuple) else (index,)
        first = parts[0] if parts else None
        if not info.shape or not parts or (_row_index(first) is None and not isinstance(first, slice)):
            whole = owner._read_rows(info, 0, info.shape[0] if info.shape else 1)
            return owner._finish(whole[index])
        rows = info.shape[0]
        position = _row_index(first)
        local: Union[int, slice]
        if position is not None:
            if not -rows <= position < rows:
                raise IndexError(f"index {position} is out of bounds for dimension 0 with size {rows}")
            lo = position % rows
            hi, local = lo + 1, 0
        else:
            # Safe: first is a slice here (an integer took the branch above, others returned).
            selected = range(*cast(slice, first).indices(rows))
            if selected.step < 0 and owner._sstorch is not None:
                raise ValueError("step must be greater than zero")  # as torch indexing says
            if not selected:
                lo = hi = 0
                local = slice(0, 0)
            else:
                lo, hi = min(selected), max(selected) + 1
                local = slice(selected.start - lo, None, selected.step)
        part = owner._read_rows(info, lo, hi)
        rest = (local, *parts[1:])
        return owner._finish(part[rest])


def _safetensors_signature(function: Callable[..., Any], positional: dict[str, Any]) -> inspect.Signature:
    """function's signature as safetensors' (``inspect.signature``, help()): the named
    positional parameters in place of ``*args``, the rest keyword-only."""
    kinds = inspect.Parameter
    parameters = []
    for parameter in inspect.signature(function).parameters.values():
        if parameter.name == "self" or parameter.name in positional:
            continue
        if parameter.kind is kinds.VAR_POSITIONAL:
            parameters += [kinds(name, kinds.POSITIONAL_OR_KEYWORD, default=default)
                           for name, default in positional.items()]
        else:
            parameters.append(parameter)
    return inspect.Signature(parameters)


save_file.__signature__ = _safetensors_signature(save_file, {"metadata": None})  # type: ignore[attr-defined]
load_file.__signature__ = _safetensors_signature(load_file, {"device": "cpu"})  # type: ignore[attr-defined]
safe_open.__signature__ = _safetensors_signature(  # type: ignore[attr-defined]
    safe_open.__init__, {"framework": "pt", "device": "cpu"})
