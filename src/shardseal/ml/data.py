"""PyTorch datasets that read encrypted data: per-sample files, ``.npy`` record shards and
WebDataset tar shards, decrypted on the fly in the DataLoader's workers.

* :class:`EncryptedFileDataset`: map-style, one encrypted file per sample;
* :class:`EncryptedArrayDataset`: map-style over one encrypted ``.npy`` array (written with
  :func:`write_npy_shard`); row ``i`` is read at random and decrypts only the 16 KiB chunks
  that hold it;
* :class:`EncryptedWebDataset`: iterable over encrypted WebDataset tar shards (written with
  :func:`write_webdataset_shards`), read sequentially, split across DataLoader workers and
  distributed ranks.

Every dataset takes a *key reference* (:mod:`shardseal.keyref`: ``KeyFile``, ``EnvKey``,
``RawKey``) that each process resolves for itself, or raw key bytes, which are wrapped in
``RawKey(key, allow_pickle=False)``: they work in the main process and in ``fork`` workers,
while ``spawn``/``forkserver`` workers fail to start with a ``TypeError`` that says what to
pass instead, so that a key is never written into a pickle by accident. Keys and open files
are kept per process (keyed by ``os.getpid()``): none is pickled, and a forked worker opens its
own files instead of sharing its parent's file positions.

The dataset classes need PyTorch (``pip install "shardseal[torch]"``); the writers
(:func:`write_npy_shard`, :func:`write_webdataset_shards`) only need numpy.
"""

from __future__ import annotations

import builtins
import contextlib
import io
import operator
import os
import random
import re
import tarfile
import threading
import warnings
from pathlib import Path
from typing import (IO, TYPE_CHECKING, Any, Callable, Iterable, Iterator, Mapping, Optional, Protocol,
                    SupportsIndex, TypedDict, Union, cast)

import numpy as np
import numpy.typing as npt

from ..container.blob import decrypt
from ..io.files import open as _sseal_open
from ..core.layout import Suite
from ..io.stream import DEFAULT_CACHE_CHUNKS, DecryptingReader, EncryptingWriter
from ..errors import FormatError, TruncatedError
from ..keys.keyref import KeyLike, KeyRef, as_key_ref, resolve_key

try:
    import torch
    from torch.utils.data import Dataset as _Dataset
    from torch.utils.data import IterableDataset as _IterableDataset
except ImportError:  # the writers work without torch; the datasets say what to install
    _HAVE_TORCH = False

    class _Dataset:  # type: ignore[no-redef]
        pass

    class _IterableDataset:  # type: ignore[no-redef]
        pass
else:
    _HAVE_TORCH = True

# The datasets' items are whatever decode returns (bytes, arrays, sample dicts): Any.
if TYPE_CHECKING:
    _DatasetBase = _Dataset[Any]
    _IterableDatasetBase = _IterableDataset[Any]
else:  # torch's classes, or the plain stand-ins above (not subscriptable)
    _DatasetBase = _Dataset
    _IterableDatasetBase = _IterableDataset


__all__ = [
    "EncryptedArrayDataset",
    "EncryptedFileDataset",
    "EncryptedWebDataset",
    "expand_urls",
    "write_npy_shard",
    "write_webdataset_shards",
]

PathLike = Union[str, "os.PathLike[str]"]
# What names shards or sample files: a path, URL, brace pattern or folder, or several of them.
Sources = Union[PathLike, Iterable[PathLike]]
# EncryptedWebDataset's decode: of the whole sample dict, or of the named fields' bytes.
SampleDecode = Callable[[dict[str, Any]], Any]
FieldDecode = Callable[[bytes], Any]

# Sequential shard reads go through a buffer of this size: each refill decrypts 64 chunks in
# one call, and tarfile's many small reads are served from memory.
SHARD_READ_BUFFER = 2**20
# The longest .npy header read (np.load's own default limit is 10000 bytes; large structured
# dtypes need more). Longer ones are refused before they are decrypted or parsed.
MAX_NPY_HEADER = 2**16
DEFAULT_MAX_SAMPLES_PER_SHARD = 100_000
DEFAULT_MAX_BYTES_PER_SHARD = 2**30
_TAR_BLOCK = 512
# WebDataset's convention: the key is the member's path up to the first dot of its base name,
# the extension everything after it ("a/b/x001.seg.png" -> "a/b/x001", "seg.png").
_MEMBER_NAME = re.compile(r"^((?:.*/|)[^.]+)[.]([^/]*)$")
_META_NAME = re.compile(r"__[^/]*__($|/)")
_BRACES = re.compile(r"\{([^{}]*)\}")
_RANGE = re.compile(r"^(\d+)\.\.(\d+)$")


def _require_torch(what: str) -> None:
    if not _HAVE_TORCH:
        raise ImportError(f"shardseal.data.{what} needs PyTorch: pip install \"shardseal[torch]\"")


# --------------------------------------------------------------------------------------
# Per-process state


class _State(TypedDict, total=False):
    """What one process keeps: the resolved key and (EncryptedArrayDataset) its open reader."""

    key: bytes
    reader: DecryptingReader


class _WorkerInfo(Protocol):
    """What the datasets read of ``torch.utils.data.get_worker_info()``."""

    @property
    def id(self) -> int: ...

    @property
    def num_workers(self) -> int: ...


class _ProcessLocal:
    """State owned by one process: a forked child starts empty, and pickling drops it.

    Holds the resolved key and open files, so that neither is ever pickled, and a forked
    DataLoader worker never reads through its parent's file handles (shared file positions).
    """

    def __init__(self) -> None:
        self._pid = os.getpid()
        self._state: _State = {}
        self.lock = threading.Lock()

    def get(self) -> _State:
        pid = os.getpid()
        if pid != self._pid:
            # A forked child: the parent's objects are dropped (their file descriptors are
            # this process's copies), and a lock held by a parent thread at fork is replaced.
            self._pid, self._state, self.lock = pid, _State(), threading.Lock()
        return self._state

    def clear(self) -> None:
        state = self.get()
        with self.lock:
            items = list(state.values())
            state.pop("key", None)  # every entry (a TypedDict has no clear())
            state.pop("reader", None)
        for item in items:
            close = getattr(item, "close", None)
            if close is not None:
                close()

    def __reduce__(self) -> tuple[type[_ProcessLocal], tuple[()]]:
        return (_ProcessLocal, ())


class _Keyed:
    """What the datasets share: a key reference resolved once per process, and a thread
    count (None: one thread inside a DataLoader worker, every CPU elsewhere)."""

    def _init_keyed(self, key: KeyLike, threads: Optional[int]) -> None:
        self.key_ref: KeyRef = as_key_ref(key)
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
            raise ValueError(f"threads must be None or a positive int, got {threads!r}")
        self.threads: Optional[int] = threads
        self._local = _ProcessLocal()

    def _key(self) -> bytes:
        state = self._local.get()
        key = state.get("key")
        if key is None:
            key = state["key"] = resolve_key(self.key_ref)
        return key

    def _thread_count(self) -> Optional[int]:
        if self.threads is not None:
            return self.threads
        return 1 if _worker_info() is not None else None

    def close(self) -> None:
        """Closes the files this process has open and forgets its resolved key (both are
        opened and resolved again when needed)."""
        self._local.clear()


def _worker_info() -> Optional[_WorkerInfo]:
    if not _HAVE_TORCH:
        return None
    return torch.utils.data.get_worker_info()


def _rank_and_world_size() -> tuple[int, int]:
    """(rank, world size): torch.distributed's when initialised, else the RANK and WORLD_SIZE
    environment variables (as torchrun sets them), else (0, 1)."""
    if _HAVE_TORCH:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return dist.get_rank(), dist.get_world_size()
    world = os.environ.get("WORLD_SIZE")
    if world is None:
        return 0, 1
    try:
        world_size, rank = int(world), int(os.environ.get("RANK", "0"))
    except ValueError:
        raise ValueError("the RANK and WORLD_SIZE environment variables must be integers") from None
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"RANK={rank} is not in range for WORLD_SIZE={world_size}")
    return rank, world_size


# --------------------------------------------------------------------------------------
# Opening local paths and fsspec URLs


def _is_url(name: str) -> bool:
    return "://" in name or "::" in name


def _open_raw(name: str) -> IO[bytes]:
    """A binary file object for a local path or an fsspec URL."""
    if not _is_url(name):
        return builtins.open(name, "rb")
    import fsspec

    raw: IO[bytes] = fsspec.open(name, "rb").open()  # fsspec is untyped: a binary file in "rb"
    return raw


def _open_reader(name: str, key: bytes, threads: Optional[int],
                 cache_chunks: int = DEFAULT_CACHE_CHUNKS) -> DecryptingReader:
    """A DecryptingReader over a local path, an fsspec URL, or an ``sseal::`` URL."""
    if not _is_url(name):
        return _sseal_open(name, "rb", key=key, threads=threads, cache_chunks=cache_chunks)
    import fsspec

    if name.startswith("sseal::"):
        options = {"key": key, "threads": threads, "cache_chunks": cache_chunks}
        reader: DecryptingReader = fsspec.open(name, "rb", sseal=options).open()  # SealFileSystem's "rb"
        return reader
    return DecryptingReader(fsspec.open(name, "rb").open(), key, threads=threads,
                            cache_chunks=cache_chunks, close_raw=True)


# A dataset folder's manifest (shardseal.manifest) is not a shard: it opens with identities,
# not with the dataset key.
_MANIFEST_NAME = "manifest.sseal"


def _sorted_files(folder: Path, suffix: str) -> list[str]:
    found = [p for p in folder.rglob(f"*{suffix}") if p.is_file()
             and p.relative_to(folder).as_posix() != _MANIFEST_NAME]
    found.sort(key=lambda p: p.relative_to(folder).as_posix())
    return [str(p) for p in found]


def expand_urls(urls: Sources) -> list[str]:
    """The list of shard paths or URLs that ``urls`` names.

    * a local folder: its ``*.sseal`` files, recursively, sorted by relative path (a dataset
      manifest, ``manifest.sseal`` at the top, is left out);
    * a string with braces: WebDataset's brace notation, ``shard-{000..099}.tar.sseal`` (a
      zero-padded numeric range) or ``{train,val}`` (alternatives), any number of them;
    * any other string or path: itself; an iterable: its items, as given.

    Raises:
        ValueError: it names nothing (an empty list, a folder without ``*.sseal`` files).
    """
    if isinstance(urls, (str, os.PathLike)):
        name = os.fspath(urls)
        if not _is_url(name) and os.path.isdir(name):
            result = _sorted_files(Path(name), ".sseal")
            if not result:
                raise ValueError(f"no *.sseal files in folder {name}")
            return result
        result = _expand_braces(name)
    else:
        result = [os.fspath(u) for u in urls]
    if not result:
        raise ValueError("no shards given")
    return result


def _expand_braces(pattern: str) -> list[str]:
    match = _BRACES.search(pattern)
    if match is None:
        return [pattern]
    head, body, tail = pattern[: match.start()], match.group(1), pattern[match.end():]
    numeric = _RANGE.match(body)
    if numeric:
        first, last = numeric.groups()
        width = len(first) if first.startswith("0") else 0
        lo, hi = int(first), int(last)
        step = 1 if hi >= lo else -1
        options = [str(i).zfill(width) for i in range(lo, hi + step, step)]
    else:
        options = body.split(",")
    return [head + option + rest for option in options for rest in _expand_braces(tail)]


# --------------------------------------------------------------------------------------
# EncryptedFileDataset


class EncryptedFileDataset(_Keyed, _DatasetBase):
    """A map-style dataset of encrypted files, one sample per file.

    Item ``i`` is ``decode(plaintext)`` of file ``i`` (default: the plaintext bytes), decrypted
    and authenticated whole when it is read. Nothing is opened before that, and each read
    opens and closes its file.

    Args:
        files_or_folder: a folder (its ``*.sseal`` files, recursively, sorted by relative
            path), or a list of paths and fsspec URLs.
        key: a key reference (``shardseal.keyref``) or the raw 32-byte key.
        decode: called on each sample's plaintext bytes.
        threads: decryption threads per read; None uses one in a DataLoader worker and every
            CPU elsewhere.

    Raises:
        ImportError: PyTorch is not installed.
        ValueError: no files.
        TypeError: key is neither a key reference nor bytes-like.
    """

    def __init__(self, files_or_folder: Sources, key: KeyLike, *,
                 decode: Optional[Callable[[bytes], Any]] = None, threads: Optional[int] = None) -> None:
        _require_torch("EncryptedFileDataset")
        self._init_keyed(key, threads)
        self.files = expand_urls(files_or_folder)
        self.decode = decode

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: SupportsIndex) -> Any:
        name = self.files[_check_index(index, len(self.files))]
        with _open_raw(name) as f:
            blob = f.read()
        plain = decrypt(blob, self._key(), threads=self._thread_count())
        return plain if self.decode is None else self.decode(plain)

    def __repr__(self) -> str:
        return f"EncryptedFileDataset({len(self.files)} files, key={self.key_ref!r})"


def _check_index(index: SupportsIndex, length: int) -> int:
    position = operator.index(index)
    if position < 0:
        position += length
    if not 0 <= position < length:
        raise IndexError(f"index out of range for a dataset of {length} samples")
    return position


# --------------------------------------------------------------------------------------
# .npy record shards


def write_npy_shard(array: npt.ArrayLike, path: PathLike, key: KeyLike, *,
                    metadata: Optional[Mapping[str, Any]] = None, threads: Optional[int] = None,
                    suite: Suite = 256) -> None:
    """Writes array to an encrypted container whose plaintext is exactly an ``.npy`` file.

    The ``.npy`` header and the array bytes are streamed through ``shardseal.open(path,
    "wb")`` (atomic: nothing is left under path on failure), with no copy of the array when it
    is C-contiguous. Read it with :class:`EncryptedArrayDataset`, or whole with
    ``np.load(io.BytesIO(shardseal.decrypt(...)))`` or ``shardseal decrypt`` and ``np.load``.

    Raises:
        TypeError: an object dtype (and as ``shardseal.open``).
        ValueError: a 0-dimensional array.
    """
    array = np.asarray(array)
    if array.dtype.hasobject:
        raise TypeError(f"arrays of dtype {array.dtype} hold Python objects and cannot be stored")
    if array.ndim == 0:
        raise ValueError("a record shard needs an array with at least one dimension")
    array = np.ascontiguousarray(array)
    header = io.BytesIO()
    fields = np.lib.format.header_data_from_array_1_0(array)
    write_header = _numpy_format_private("_write_array_header")
    if write_header is not None:
        write_header(header, fields, None)  # the oldest version that fits, as np.save does
    else:  # pragma: no cover - numpy without the helper
        try:
            np.lib.format.write_array_header_1_0(header, fields)
        except ValueError:  # too long for 1.0
            header = io.BytesIO()
            np.lib.format.write_array_header_2_0(header, fields)
    with _sseal_open(path, "wb", key=resolve_key(key), metadata=metadata, threads=threads,
                     suite=suite) as f:
        f.write(header.getbuffer())
        if array.size:
            f.write(array.reshape(-1).view(np.uint8))


def _numpy_format_private(name: str) -> Optional[Callable[..., Any]]:
    """A private helper of numpy's .npy module (header writing and reading for every format
    version, as np.save and np.load use them), where numpy 1.x and 2.x keep it."""
    function = getattr(np.lib.format, name, None)
    if function is None:
        try:
            from numpy.lib import _format_impl
        except ImportError:  # pragma: no cover
            return None
        function = getattr(_format_impl, name, None)
    found: Optional[Callable[..., Any]] = function
    return found


def _read_npy_header(reader: DecryptingReader, name: str) -> tuple[np.dtype[Any], tuple[int, ...], int]:
    """(dtype, shape, data offset) from the .npy header at the start of reader's plaintext."""
    prefix = reader.pread(0, 12)
    if len(prefix) < 10 or not prefix.startswith(np.lib.format.MAGIC_PREFIX):
        raise FormatError(f"{name}: the plaintext is not an .npy file (write it with write_npy_shard)")
    major = prefix[6]
    if major == 1:
        length = 10 + int.from_bytes(prefix[8:10], "little")
    elif major in (2, 3) and len(prefix) == 12:
        length = 12 + int.from_bytes(prefix[8:12], "little")
    else:
        raise FormatError(f"{name}: unsupported .npy format version {major}")
    if length > MAX_NPY_HEADER:
        raise FormatError(f"{name}: the .npy header is {length} bytes long (at most {MAX_NPY_HEADER})")
    stream = io.BytesIO(reader.pread(0, length))
    try:
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(stream, max_header_size=MAX_NPY_HEADER)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(stream, max_header_size=MAX_NPY_HEADER)
        else:
            read_header = _numpy_format_private("_read_array_header")
            if read_header is None:  # pragma: no cover
                raise FormatError(f"{name}: this numpy cannot read .npy format {version}")
            shape, fortran, dtype = read_header(stream, version, max_header_size=MAX_NPY_HEADER)
    except (ValueError, TypeError, SyntaxError, EOFError) as exc:
        raise FormatError(f"{name}: malformed .npy header: {exc}") from None
    if fortran:
        raise FormatError(f"{name}: the array is in Fortran order; only C order is supported")
    if dtype.hasobject:
        raise FormatError(f"{name}: the array holds Python objects")
    if len(shape) == 0:
        raise FormatError(f"{name}: a 0-dimensional array has no rows")
    expected = length + int(np.prod(shape, dtype=object)) * dtype.itemsize
    if reader.size != expected:
        raise FormatError(f"{name}: the plaintext is {reader.size} bytes but the .npy header "
                          f"describes {expected}")
    return dtype, tuple(shape), length


class EncryptedArrayDataset(_Keyed, _DatasetBase):
    """A map-style dataset over the rows of an encrypted ``.npy`` array (axis 0).

    Item ``i`` is ``array[i]`` as a new writable ndarray (a numpy scalar for a 1-D array),
    read with ``DecryptingReader.preadinto``: only the 16 KiB chunks that hold row ``i`` are read
    and decrypted, so a shuffled DataLoader reads at random without decrypting the file.

    The header is read (and the key checked) when the dataset is created; the file is then
    closed, and opened again lazily in each process that reads rows (each DataLoader
    worker). Reads are thread-safe.

    Args:
        path: a path or fsspec URL of a container written by :func:`write_npy_shard` (or any
            container whose plaintext is a C-order ``.npy`` file).
        key: a key reference (``shardseal.keyref``) or the raw 32-byte key.
        threads: decryption threads for rows larger than 64 KiB; None uses one in a
            DataLoader worker and every CPU elsewhere.
        cache_chunks: decrypted chunks each process keeps, for rows that share a chunk.

    Attributes:
        shape, dtype: the whole array's.

    Raises:
        ImportError: PyTorch is not installed.
        FormatError: the plaintext is not a C-order ``.npy`` array (and the errors of
            ``shardseal.open``: wrong key, not a container).
    """

    def __init__(self, path: PathLike, key: KeyLike, *, threads: Optional[int] = None,
                 cache_chunks: int = DEFAULT_CACHE_CHUNKS) -> None:
        _require_torch("EncryptedArrayDataset")
        self._init_keyed(key, threads)
        self.path = os.fspath(path)
        self.cache_chunks = cache_chunks
        with self._open() as reader:
            self.dtype, self.shape, self._data_offset = _read_npy_header(reader, self.path)
        self._row_shape = self.shape[1:]
        self._row_bytes = int(np.prod(self._row_shape, dtype=object)) * self.dtype.itemsize

    def _open(self) -> DecryptingReader:
        return _open_reader(self.path, self._key(), self._thread_count(), self.cache_chunks)

    def _reader(self) -> DecryptingReader:
        state = self._local.get()
        reader = state.get("reader")
        if reader is None:
            with self._local.lock:
                reader = state.get("reader")
                if reader is None:
                    reader = state["reader"] = self._open()
        return reader

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index: SupportsIndex) -> Any:
        position = _check_index(index, self.shape[0])
        row = np.empty(self._row_shape, self.dtype)
        if self._row_bytes:
            offset = self._data_offset + position * self._row_bytes
            # Decrypts the row's chunks straight into the new array (thread-safe, no copies).
            if self._reader().preadinto(offset, row.reshape(-1).view(np.uint8)) != self._row_bytes:
                raise TruncatedError(f"{self.path}: row {position} is cut short")
        return row if self._row_shape else row[()]

    def __repr__(self) -> str:
        return f"EncryptedArrayDataset({self.path!r}, shape={self.shape}, dtype={self.dtype}, key={self.key_ref!r})"


# --------------------------------------------------------------------------------------
# WebDataset tar shards


def _member_bytes(name: str, data: Any) -> memoryview:  # any sample value: checked here
    if isinstance(data, str):
        data = data.encode("utf-8")
    try:
        view = memoryview(data)
    except TypeError:
        raise TypeError(f"sample field {name!r} must be bytes-like or str, not "
                        f"{type(data).__name__} (encode it first)") from None
    return view.cast("B") if view.c_contiguous else memoryview(view.tobytes())


def _sample_members(sample: Mapping[str, Any]) -> list[tuple[tarfile.TarInfo, memoryview]]:
    """The (TarInfo, data) pairs of one sample, validated."""
    key = sample.get("__key__") if isinstance(sample, Mapping) else None
    if not isinstance(key, str) or not key:
        raise ValueError("each sample must be a dict with a non-empty str '__key__'")
    if "." in key.rsplit("/", 1)[-1] or key.startswith("/") or _META_NAME.match(key):
        raise ValueError(f"sample key {key!r} is not usable: no dot in its last path part, "
                         "no leading '/', no '__name__' form (WebDataset groups files by it)")
    members: list[tuple[tarfile.TarInfo, memoryview]] = []
    for ext, value in sample.items():
        if isinstance(ext, str) and ext.startswith("__"):
            continue  # __key__, and __url__ from a sample read back
        if not isinstance(ext, str) or not ext or "/" in ext:
            raise ValueError(f"sample {key!r}: field name {ext!r} is not a file extension")
        name = f"{key}.{ext}"
        data = _member_bytes(name, value)
        info = tarfile.TarInfo(name)
        info.size = data.nbytes
        info.mode = 0o444
        members.append((info, data))
    if not members:
        raise ValueError(f"sample {key!r} has no fields besides '__key__'")
    return members


def _round_up(n: int, block: int) -> int:
    return -(-n // block) * block


def _tar_size(members: list[tuple[tarfile.TarInfo, memoryview]]) -> int:
    """The bytes the members take in a PAX tar: headers (long names add extended headers)
    and data padded to 512-byte blocks."""
    return sum(len(info.tobuf(tarfile.PAX_FORMAT, tarfile.ENCODING, "surrogateescape"))
               + _round_up(data.nbytes, _TAR_BLOCK) for info, data in members)


def _shard_size(members_size: int) -> int:
    """A tar's size: its members, two zero blocks, padded to tarfile's 10 KiB records."""
    return _round_up(members_size + 2 * _TAR_BLOCK, tarfile.RECORDSIZE)


def write_webdataset_shards(samples: Iterable[Mapping[str, Any]], pattern: str, key: KeyLike, *,
                            max_samples_per_shard: int = DEFAULT_MAX_SAMPLES_PER_SHARD,
                            max_bytes_per_shard: int = DEFAULT_MAX_BYTES_PER_SHARD,
                            start_index: int = 0, metadata: Optional[Mapping[str, Any]] = None,
                            threads: Optional[int] = None, suite: Suite = 256) -> list[str]:
    """Writes samples into encrypted WebDataset tar shards; returns the shard paths.

    Each sample is a dict: ``"__key__"`` (str) and extension -> data (bytes-like, or str,
    stored as UTF-8), stored as tar members ``<key>.<extension>`` (other ``"__..."`` entries
    are ignored). Shard ``n`` is ``pattern % n`` (e.g. ``"out/train-%06d.tar.sseal"``), from
    ``start_index``; a new shard starts when the current one holds max_samples_per_shard
    samples or the next sample would take its tar (headers, padding and end blocks
    included) past max_bytes_per_shard; a larger sample gets a shard of its own. Each shard is a tar
    stream (``tarfile`` mode ``"w|"``) written through ``shardseal.open(path, "wb")``: in
    bounded memory, and atomically: if samples raises, the shard being written is discarded
    (the finished ones stay).

    Raises:
        ValueError: a pattern without a %-field, bad limits, a sample without ``__key__``.
        TypeError: a field that is not bytes-like or str.
    """
    if max_samples_per_shard < 1 or max_bytes_per_shard < 1:
        raise ValueError("max_samples_per_shard and max_bytes_per_shard must be positive")
    try:
        distinct = (pattern % start_index) != (pattern % (start_index + 1))
    except TypeError:
        distinct = False
    if not distinct:
        raise ValueError(f"pattern {pattern!r} needs a %-field for the shard number, "
                         "e.g. 'train-%06d.tar.sseal'")
    raw_key = resolve_key(key)
    paths: list[str] = []
    # Both set while a shard is open (tar writes through writer), both None between shards.
    writer: Optional[EncryptingWriter] = None
    tar: Optional[tarfile.TarFile] = None
    count = size = 0
    try:
        for sample in samples:
            members = _sample_members(sample)
            sample_size = _tar_size(members)
            if tar is not None and writer is not None and (count >= max_samples_per_shard
                                    or _shard_size(size + sample_size) > max_bytes_per_shard):
                tar.close()
                writer.close()
                writer = tar = None
            if tar is None:
                path = pattern % (start_index + len(paths))
                writer = _sseal_open(path, "wb", key=raw_key, metadata=metadata, threads=threads, suite=suite)
                tar = tarfile.open(fileobj=writer, mode="w|", format=tarfile.PAX_FORMAT)
                paths.append(path)
                count = size = 0
            for info, data in members:
                tar.addfile(info, io.BytesIO(data))
            count += 1
            size += sample_size
        if tar is not None and writer is not None:
            tar.close()
            writer.close()
            writer = tar = None
    except BaseException:
        if writer is not None:
            writer.abort()
            paths.pop()
            with contextlib.suppress(Exception):
                if tar is not None:  # None when tarfile.open failed
                    tar.close()  # fails on the aborted writer; marks tarfile's stream closed
        raise
    return paths


def _drain(stream: IO[bytes]) -> None:
    while stream.read(SHARD_READ_BUFFER):
        pass


class EncryptedWebDataset(_Keyed, _IterableDatasetBase):
    """An iterable dataset over encrypted WebDataset tar shards.

    Each shard is decrypted and read sequentially (``tarfile`` stream mode) and its members are
    grouped into samples by WebDataset's convention: ``a/x001.jpg`` and ``a/x001.cls`` make
    ``{"__key__": "a/x001", "__url__": shard, "jpg": b"...", "cls": b"..."}`` (the key is the
    member path up to the first dot of its base name; consecutive members with the same key
    form one sample). Every byte is authenticated before it is used, and the whole shard,
    final chunk included, before its last sample is yielded: a tampered or truncated shard
    raises (``AuthenticationError``, ``TruncatedError``) from the iteration, never skipped.

    Shards are split across distributed ranks (``torch.distributed`` when initialised, else
    the ``RANK``/``WORLD_SIZE`` environment variables) and then across DataLoader workers:
    each sample is read exactly once per epoch. Give at least ranks x workers shards, or some
    workers idle (and ranks may see different numbers of samples).

    The order is deterministic: the shard list as given, or with ``shuffle_shards=True`` a
    permutation that depends only on ``seed`` and the epoch (``set_epoch(n)``, before
    iterating; with ``persistent_workers=True`` the workers keep the epoch they started with).
    Samples keep their order inside a shard.

    Args:
        urls: shard paths and fsspec URLs (``s3://...``; ``sseal::...`` URLs are decrypted by
            shardseal's fsspec layer), a brace pattern (``shards/train-{000..099}.tar.sseal``)
            or a local folder (its ``*.sseal`` files); see :func:`expand_urls`.
        key: a key reference (``shardseal.keyref``) or the raw 32-byte key.
        shuffle_shards: permute the shards each epoch.
        seed: the permutation's seed.
        decode: a callable applied to each sample dict (its result is what the dataset
            yields), or a dict of extension -> callable applied to those fields' bytes.
            Default: the raw sample dict.
        threads: decryption threads; None uses one in a DataLoader worker and every CPU
            elsewhere.
    """

    def __init__(self, urls: Sources, key: KeyLike, *, shuffle_shards: bool = False, seed: int = 0,
                 decode: Union[None, SampleDecode, Mapping[str, FieldDecode]] = None,
                 threads: Optional[int] = None) -> None:
        _require_torch("EncryptedWebDataset")
        self._init_keyed(key, threads)
        self.urls = expand_urls(urls)
        self.shuffle_shards = bool(shuffle_shards)
        self.seed = seed
        self.epoch = 0
        if decode is not None and not callable(decode) and not isinstance(decode, Mapping):
            raise TypeError("decode must be a callable or a dict of extension -> callable")
        self.decode: Union[None, SampleDecode, dict[str, FieldDecode]] = (
            dict(decode) if isinstance(decode, Mapping) else decode)

    def set_epoch(self, epoch: int) -> None:
        """Sets the epoch that the shard permutation depends on (with shuffle_shards)."""
        self.epoch = operator.index(epoch)

    def shard_order(self, epoch: Optional[int] = None) -> list[str]:
        """All shards in the order of an epoch (default: the current one), before splitting."""
        order = list(self.urls)
        if self.shuffle_shards:
            epoch = self.epoch if epoch is None else epoch
            random.Random(f"shardseal-shards:{self.seed}:{epoch}").shuffle(order)
        return order

    def assigned_shards(self) -> list[str]:
        """The shards this rank and DataLoader worker reads this epoch."""
        rank, world_size = _rank_and_world_size()
        shards = self.shard_order()[rank::world_size]
        if not shards:
            warnings.warn(f"rank {rank} of {world_size} gets none of the {len(self.urls)} shards",
                          RuntimeWarning, stacklevel=2)
        info = _worker_info()
        if info is not None:
            shards = shards[info.id :: info.num_workers]
        return shards

    def __iter__(self) -> Iterator[Any]:
        for url in self.assigned_shards():
            yield from self._shard_samples(url)

    def _open_shard(self, url: str) -> io.BufferedReader:
        """A sequential binary stream of the shard's plaintext."""
        reader = _open_reader(url, self._key(), self._thread_count(), cache_chunks=1)
        return io.BufferedReader(reader, SHARD_READ_BUFFER)

    def _shard_samples(self, url: str) -> Iterator[Any]:
        stream = self._open_shard(url)
        try:
            current: Optional[dict[str, Any]] = None
            with tarfile.open(fileobj=stream, mode="r|") as tar:
                for member in tar:
                    # Stream mode keeps every header otherwise. typeshed's TarFile omits the
                    # (undocumented) members list.
                    tar.members = []  # type: ignore[attr-defined]
                    if not member.isfile():
                        continue
                    match = _MEMBER_NAME.match(member.name)
                    if match is None or _META_NAME.match(member.name):
                        continue
                    key, ext = match.groups()
                    # A regular member (isfile() above) always has a file object: never None.
                    data = cast(IO[bytes], tar.extractfile(member)).read()
                    if current is None or current["__key__"] != key:
                        if current is not None:
                            yield self._decoded(current)
                        current = {"__key__": key, "__url__": url}
                    if ext in current:
                        raise FormatError(f"{url}: sample {key!r} has two {ext!r} files")
                    current[ext] = data
            _drain(stream)  # authenticates the rest of the shard, its final chunk included
            if current is not None:
                yield self._decoded(current)
        finally:
            stream.close()

    def _decoded(self, sample: dict[str, Any]) -> Any:
        decode = self.decode
        if decode is None:
            return sample
        if callable(decode):
            return decode(sample)
        for ext, function in decode.items():
            if ext in sample:
                sample[ext] = function(sample[ext])
        return sample

    def __repr__(self) -> str:
        return (f"EncryptedWebDataset({len(self.urls)} shards, shuffle_shards={self.shuffle_shards}, "
                f"seed={self.seed}, key={self.key_ref!r})")
