"""Encrypted sharded checkpoints: a folder of safetensors shards and their index (``torch`` extra).

The folder has the layout ``transformers`` writes, each weights file sealed::

    config.json                                   (not written here; copied by encrypt_checkpoint)
    model.safetensors.index.json.sseal            the index, sealed (or model.safetensors.index.json)
    model-00001-of-00004.safetensors.sseal        each shard: an encrypted safetensors file
    ...

A checkpoint that fits one shard is one ``model.safetensors.sseal`` and no index, as
``transformers`` does. ``shardseal decrypt`` of a shard gives the ordinary ``.safetensors``
file; ``decrypt_checkpoint`` gives the whole ordinary folder.

    >>> import shardseal.checkpoint as ckpt
    >>> ckpt.save_checkpoint(model.state_dict(), "out", max_shard_size="2GB", key=key)
    >>> model.load_state_dict(ckpt.load_checkpoint("out", key=key))
    >>> # a model with tied weights: they are stored once, so load non-strictly, then re-tie
    >>> model.load_state_dict(ckpt.load_checkpoint("out", key=key), strict=False)
    >>> model.tie_weights()                                      # transformers models

**The index is sealed by default.** It is the JSON file that maps every tensor name to its
shard. Sealed, the folder shows only the number of shards, their file names and their sizes
(each within 16 bytes per 16 KiB of its plaintext), hence the checkpoint's total size. With
``seal_index=False`` the index is an ordinary ``model.safetensors.index.json``, which tools can
read without the key, and which shows every tensor's name and shard: the model's architecture
(module names, the number of layers, which layers an adapter touches), the total size, and with
the shard sizes a fair estimate of the large tensors' sizes. Shapes and dtypes stay inside the
encrypted shards either way, as do the safetensors ``__metadata__`` and the tensor data.

**Shards are bound to their checkpoint.** Every shard's container header (authenticated, not
secret) names a random checkpoint id, the shard's file name, the number of shards and whether
the index is sealed; the index records the id. Loading checks that each shard holds this
checkpoint's id, its own file name, exactly the tensors the index assigns to it, and that the
index lists every shard and is kept as it was written, so shards swapped with each other or
taken from another checkpoint under the same key (an older save, say), a plain index that
leaves a shard out, or a sealed index replaced by a plain one fail with
``AuthenticationError``. What no
file format can catch is a whole folder replaced by an older complete one: compare the
checkpoint id (``CheckpointReader.checkpoint_id``) with one you keep, if that matters.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import threading
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Optional, Union, cast

from .. import _redact
from .._atomic import AtomicFile
from ..errors import AuthenticationError, FormatError
from ..io import files as _files
from . import safetensors as _st
from ..keys.keyref import KeyLike
from ..keys.registry import Identities, Recipients

if TYPE_CHECKING:
    import torch

    from .torch import Device

__all__ = ["SEALED_SUFFIX", "CheckpointReader", "decrypt_checkpoint", "encrypt_checkpoint",
           "load_checkpoint", "open_checkpoint", "parse_size", "save_checkpoint"]

SEALED_SUFFIX = ".sseal"
DEFAULT_WEIGHTS_NAME = "model.safetensors"
DEFAULT_MAX_SHARD_SIZE = "5GB"
# The key of the shard binding in each shard's container header metadata (under "user").
_BINDING = "shardseal.checkpoint"
# The key of the checkpoint id in the index (removed by decrypt_checkpoint).
_INDEX_ID = "shardseal_checkpoint_id"
# The sealed index is small: refuse to read more than this.
MAX_INDEX_SIZE = 256 * 2**20
# Files encrypt_checkpoint will not copy in clear: weights and training state in common formats.
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".gguf", ".h5", ".msgpack", ".onnx",
                    ".pkl", ".pickle", ".npy", ".npz")
_SIZE_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
               "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}

Folder = Union[str, "os.PathLike[str]"]


def parse_size(size: Union[int, str]) -> int:
    """A byte count from an int or a string such as ``"5GB"`` (10**9) or ``"500MiB"`` (2**20),
    as ``transformers``' ``max_shard_size``.

    Raises:
        ValueError: not a positive size.
        TypeError: neither an int nor a str.
    """
    if isinstance(size, bool) or not isinstance(size, (int, str)):
        raise TypeError(f"a size is an int or a str such as '5GB', not {type(size).__name__}")
    if isinstance(size, str):
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B|B)?\s*", size, re.IGNORECASE)
        if match is None:
            raise ValueError(f"not a size: {size!r} (examples: 1000000, '500MB', '2GiB')")
        size = int(float(match[1]) * _SIZE_UNITS[(match[2] or "").upper()])
    if size <= 0:
        raise ValueError(f"a size must be positive, got {size}")
    return size


def _join(folder: Folder, name: str) -> str:
    """folder/name for a local folder or an fsspec URL."""
    if _st.is_url(folder):
        return str(folder).rstrip("/") + "/" + name
    return os.path.join(folder, name)


def _names(weights_name: str) -> tuple[str, str]:
    """(stem, extension) of a weights name: ("model", ".safetensors")."""
    stem, dot, extension = weights_name.rpartition(".")
    if not dot or not stem or extension != "safetensors":
        raise ValueError(f"weights_name must end in '.safetensors', got {weights_name!r}")
    return stem, "." + extension


def _index_name(weights_name: str) -> str:
    return weights_name + ".index.json"


def _shard_names(weights_name: str, count: int) -> list[str]:
    if count == 1:
        return [weights_name]
    stem, extension = _names(weights_name)
    return [f"{stem}-{i:05d}-of-{count:05d}{extension}" for i in range(1, count + 1)]


def _tensor_bytes(tensor: torch.Tensor) -> int:
    return tensor.numel() * tensor.element_size()


def _plan_shards(state_dict: Mapping[str, Any], max_bytes: int) -> list[dict[str, Any]]:
    """Tensors into shards in state-dict order: a new shard when the next tensor would pass
    max_bytes (a tensor larger than that has a shard to itself), as ``transformers`` does."""
    shards: list[dict[str, Any]] = [{}]
    size = 0
    for name, tensor in state_dict.items():
        nbytes = _tensor_bytes(tensor)
        if shards[-1] and size + nbytes > max_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = tensor
        size += nbytes
    return shards


def _without_shared(state_dict: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """state_dict without the second and later names of tensors that are the same view of the
    same memory (tied weights): safetensors stores each once, and ``transformers`` ties them
    again on loading. Overlapping tensors that are different views stay, and save refuses them."""
    seen: dict[tuple[Any, ...], str] = {}
    kept: dict[str, Any] = {}
    dropped: list[str] = []
    for name, tensor in state_dict.items():
        if not isinstance(name, str):
            raise TypeError(f"tensor names must be str, got {name!r}")
        identity = None
        if getattr(tensor, "device", None) is not None and tensor.device.type != "meta" and tensor.numel():
            identity = (str(tensor.device), tensor.data_ptr(), tensor.dtype, tuple(tensor.shape),
                        tuple(tensor.stride()))
        if identity is not None and identity in seen:
            dropped.append(name)
            continue
        if identity is not None:
            seen[identity] = name
        kept[name] = tensor
    return kept, dropped


def _binding(checkpoint_id: str, file: str, shards: int, index: Optional[str]) -> dict[str, Any]:
    """What a shard's header says of its checkpoint: its id, the shard's file name, how many
    shards there are, and how the index is kept ("sealed", "plain" or None: no index)."""
    return {_BINDING: {"id": checkpoint_id, "file": file, "shards": shards, "index": index}}


def _index_kind(shards: int, sealed: bool) -> Optional[str]:
    if shards == 1:
        return None
    return "sealed" if sealed else "plain"


def save_checkpoint(state_dict: Mapping[str, Any], folder: Folder, *,
                    max_shard_size: Union[int, str] = DEFAULT_MAX_SHARD_SIZE, key: Optional[KeyLike] = None,
                    recipients: Optional[Recipients] = None,
                    weights_name: str = DEFAULT_WEIGHTS_NAME, seal_index: bool = True,
                    metadata: Optional[Mapping[str, str]] = None, threads: Optional[int] = None) -> list[str]:
    """Writes a state dict as an encrypted sharded checkpoint (shards and index).

    Each shard is written atomically; the index is written last, so a folder whose index is
    present holds every shard it names. Tensors that are the same view of the same memory
    (tied weights) are stored once, under their first name, as ``transformers`` does; its
    ``from_pretrained`` ties them again. No plaintext reaches the disk. An index that an
    earlier save left in the folder is removed, so the folder loads this checkpoint.

    Args:
        state_dict: names to tensors (``model.state_dict()``).
        folder: a local folder (created if missing) or an fsspec URL.
        max_shard_size: the most tensor bytes per shard (``"5GB"``, ``"500MiB"`` or an int);
            a larger tensor gets a shard to itself.
        key: the 32-byte key, or a key reference.
        recipients: instead of key, envelope encryption (see ``shardseal.encrypt``): each
            shard and the index get their own file key, wrapped for every recipient.
        weights_name: the file name of an unsharded checkpoint (``"adapter_model.safetensors"``
            for a PEFT adapter); shards are named after it.
        seal_index: False writes the index as plain JSON (see the module's notes on what it
            shows).
        metadata: safetensors ``__metadata__`` for every shard (secret, inside the shards);
            ``{"format": "pt"}`` by default, as ``transformers`` writes.
        threads: worker threads; None uses every CPU.

    Returns:
        The names of the files written, index last.

    Raises:
        TypeError, ValueError, RuntimeError: as ``shardseal.safetensors.save_file``; a bad
            max_shard_size or weights_name.
    """
    max_bytes = parse_size(max_shard_size)
    _names(weights_name)
    tensors, _ = _without_shared(state_dict)
    shards = _plan_shards(tensors, max_bytes)
    names = _shard_names(weights_name, len(shards))
    checkpoint_id = secrets.token_hex(16)
    if metadata is None:
        metadata = {"format": "pt"}
    if not _st.is_url(folder):
        os.makedirs(folder, exist_ok=True)
    written = []
    for name, shard in zip(names, shards):
        with _st.open_target(_join(folder, name + SEALED_SUFFIX), "wb", None, key=key, recipients=recipients,
                             metadata=_binding(checkpoint_id, name, len(names), _index_kind(len(names), seal_index)),
                             threads=threads) as out:
            _st.write_tensors(out, shard, metadata)
        written.append(name + SEALED_SUFFIX)
    if len(shards) > 1:
        index = {"metadata": {"total_size": sum(_tensor_bytes(t) for t in tensors.values()),
                              _INDEX_ID: checkpoint_id},
                 "weight_map": {tensor: name for name, shard in zip(names, shards) for tensor in shard}}
        written.append(_write_index(folder, weights_name, index, seal_index, key, recipients))
    _remove_stale_indexes(folder, weights_name, {written[-1]})
    return written


def _remove_stale_indexes(folder: Folder, weights_name: str, keep: set[str]) -> None:
    """Removes an index an earlier save left in the folder (other than keep, just written):
    the reader looks for an index first, so it would load the earlier checkpoint."""
    for name in (_index_name(weights_name), _index_name(weights_name) + SEALED_SUFFIX):
        path = _join(folder, name)
        if name in keep or not _exists(path):
            continue
        if _st.is_url(path):
            import fsspec.core

            fs, inner = fsspec.core.url_to_fs(_plain_url(path))
            fs.rm(inner)
        else:
            os.remove(path)


def _write_index(folder: Folder, weights_name: str, index: dict[str, Any], sealed: bool, key: Optional[KeyLike],
                 recipients: Optional[Recipients]) -> str:
    data = json.dumps(index, indent=2, sort_keys=True).encode() + b"\n"
    name = _index_name(weights_name)
    if sealed:
        name += SEALED_SUFFIX
        with _st.open_target(_join(folder, name), "wb", None, key=key, recipients=recipients,
                             metadata={_BINDING: {"id": index["metadata"][_INDEX_ID], "file": "index"}}) as out:
            out.write(data)
    elif _st.is_url(folder):
        import fsspec

        with fsspec.open(_plain_url(_join(folder, name)), "wb") as out:
            out.write(data)
    else:
        with AtomicFile(_join(folder, name), 0o644) as atomic:
            atomic.file.write(data)
            atomic.commit()
    return name


# ---- reading -----------------------------------------------------------------------------


def _plain_url(path: str) -> str:
    """A URL without the ``sseal::`` prefix: for files kept as they are (a plain index), and
    for listing; the ``sseal::`` filesystem would want a key of its own."""
    return path[len("sseal::"):] if path.startswith("sseal::") else path


def _exists(path: str) -> bool:
    if _st.is_url(path):
        import fsspec.core

        fs, inner = fsspec.core.url_to_fs(_plain_url(path))
        exists: bool = fs.exists(inner)
        return exists
    return os.path.exists(path)


def _read_plain(path: str) -> bytes:
    if _st.is_url(path):
        import fsspec

        with fsspec.open(_plain_url(path), "rb") as f:
            data: bytes = f.read(MAX_INDEX_SIZE + 1)
            return data
    with open(path, "rb") as f:
        return f.read(MAX_INDEX_SIZE + 1)


def _parse_index(data: bytes, where: str) -> dict[str, Any]:
    if len(data) > MAX_INDEX_SIZE:
        raise FormatError(f"{where}: the index is over {MAX_INDEX_SIZE} bytes")
    try:
        index = json.loads(data)
    except (UnicodeDecodeError, ValueError, RecursionError):  # RecursionError: nested too deeply
        raise FormatError(f"{where}: the index is not valid JSON") from None
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in weight_map.items()):
        raise FormatError(f"{where}: the index has no weight_map of tensor names to file names")
    for file in set(weight_map.values()):
        if "/" in file or "\\" in file or file in ("", ".", ".."):
            raise FormatError(f"{where}: the index names a shard outside the folder: {file!r}")
    metadata = index.get("metadata")
    if not isinstance(metadata, dict):
        index["metadata"] = {}
    checked: dict[str, Any] = index
    return checked


class CheckpointReader:
    """Random access to the tensors of an encrypted checkpoint (``open_checkpoint``).

    The index is read when it opens; each shard is opened (its header, key and safetensors
    header checked) the first time one of its tensors is read, and ``get_tensor`` decrypts only
    that tensor's chunks. A damaged shard fails exactly the reads of the tensors it holds:
    the other shards' tensors still load.

    Attributes:
        checkpoint_id: the random id ``save_checkpoint`` gave the checkpoint (None for an
            unsharded one, which has no index).
        weight_map: tensor names to shard file names (without the ``.sseal`` suffix).
    """

    def __init__(self, folder: Folder, *, key: Optional[KeyLike] = None, identities: Optional[Identities] = None,
                 device: Device = "cpu",
                 weights_name: str = DEFAULT_WEIGHTS_NAME, threads: Optional[int] = None) -> None:
        _names(weights_name)
        self._folder = folder
        self._options: dict[str, Any] = {"key": key, "identities": identities, "threads": threads}
        self._device = device
        self._shards: dict[str, _st.safe_open] = {}
        self._lock = threading.Lock()
        self.checkpoint_id: Optional[str] = None
        self.weight_map: Optional[dict[str, str]] = None
        self._index_kind: Optional[str] = None  # how the index is kept: "sealed", "plain", None
        index_path = _join(folder, _index_name(weights_name))
        if _exists(index_path + SEALED_SUFFIX):
            with _st.open_target(index_path + SEALED_SUFFIX, "rb", None, **self._options) as reader:
                index = _parse_index(reader.read(MAX_INDEX_SIZE + 1), index_path + SEALED_SUFFIX)
                binding = reader.header.metadata.get("user", {}).get(_BINDING, {})
            self.checkpoint_id = index["metadata"].get(_INDEX_ID)
            if binding != {"id": self.checkpoint_id, "file": "index"}:
                raise AuthenticationError(f"{index_path}{SEALED_SUFFIX} is not this checkpoint's index")
            self._index_kind = "sealed"
        elif _exists(index_path):
            index = _parse_index(_read_plain(index_path), index_path)
            self.checkpoint_id = index["metadata"].get(_INDEX_ID)
            self._index_kind = "plain"
        elif _exists(_join(folder, weights_name + SEALED_SUFFIX)):
            index = None
            self._index_kind = None
        else:
            raise FileNotFoundError(f"no encrypted checkpoint in {_redact.shown_argument(os.fspath(folder))}: neither "
                                    f"{_index_name(weights_name)}[{SEALED_SUFFIX}] nor "
                                    f"{weights_name}{SEALED_SUFFIX}")
        if index is None:
            with self._open_shard(weights_name) as shard:
                self.weight_map = {name: weights_name for name in shard.keys()}
        else:
            if not index["weight_map"]:
                # Nothing would be bound to the checkpoint: an emptied index loads no tensor.
                raise AuthenticationError(f"{index_path}: the index names no shard")
            self.weight_map = dict(index["weight_map"])

    def __enter__(self) -> CheckpointReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Closes every shard opened so far."""
        shards, self._shards = self._shards, {}
        for shard in shards.values():
            shard.close()

    def keys(self) -> list[str]:
        """Every tensor name, sorted."""
        return sorted(self.weight_map or {})

    def files(self) -> list[str]:
        """The shard file names (without ``.sseal``), sorted."""
        return sorted(set((self.weight_map or {}).values()))

    def _open_shard(self, file: str) -> _st.safe_open:
        """A shard's safe_open, after checking that it belongs here.

        Raises:
            AuthenticationError: the shard's binding (id, file name) or its tensor names are
                not the index's, or the shard fails to authenticate.
        """
        shard = _st.safe_open(_join(self._folder, file + SEALED_SUFFIX), "pt", self._device, **self._options)
        try:
            self._check_binding(file, shard.container_metadata().get("user", {}).get(_BINDING))
            self._check_names(file, shard.keys())
        except BaseException:
            shard.close()
            raise
        return shard

    def _check_names(self, file: str, names: Any) -> None:
        if self.weight_map is not None:
            expected = {name for name, owner in self.weight_map.items() if owner == file}
            if set(names) != expected:
                raise AuthenticationError(f"{file}{SEALED_SUFFIX} does not hold the tensors the index "
                                          "assigns to it")

    def _check_binding(self, file: str, binding: object) -> None:
        """A shard must name its own file and the checkpoint's id (the index's, or else the
        first shard's: all shards of one checkpoint share it). Shards sealed by plain
        ``shardseal encrypt`` carry no binding: they pass only where the index has no id."""
        if binding is None:
            if self.checkpoint_id is not None:
                raise AuthenticationError(f"{file}{SEALED_SUFFIX} is not a shard of this checkpoint")
            return
        if not isinstance(binding, dict) or binding.get("file") != file:
            raise AuthenticationError(f"{file}{SEALED_SUFFIX} is another file of a checkpoint, not {file!r}")
        shards = 1 if self.weight_map is None else len(set(self.weight_map.values()))
        if binding.get("shards", shards) != shards:
            raise AuthenticationError(f"the index lists {shards} shards; the checkpoint has {binding.get('shards')}")
        if binding.get("index", self._index_kind) != self._index_kind:
            raise AuthenticationError(f"the checkpoint's index was {binding.get('index') or 'absent'} when "
                                      f"written; here it is {self._index_kind or 'absent'}")
        if self.checkpoint_id is None:
            self.checkpoint_id = binding.get("id")
        elif binding.get("id") != self.checkpoint_id:
            raise AuthenticationError(f"{file}{SEALED_SUFFIX} is a shard of another checkpoint")

    def check_shard(self, file: str) -> None:
        """Opens a shard and checks that it belongs to this checkpoint, without reading tensors.

        Raises:
            AuthenticationError: it fails to authenticate or does not belong here.
        """
        with self._open_shard(file):
            pass

    def _shard(self, file: str) -> _st.safe_open:
        with self._lock:  # get_tensor from several threads opens each shard once
            shard = self._shards.get(file)
            if shard is None:
                shard = self._shards[file] = self._open_shard(file)
            return shard

    def get_tensor(self, name: str) -> _st.Loaded:
        """The tensor ``name``, decrypting only its chunks (its shard opens on first use).

        Raises:
            KeyError: no tensor of that name.
            AuthenticationError: its shard, or a chunk of the tensor, fails to authenticate,
                or the shard does not belong to this checkpoint.
        """
        weight_map = cast("dict[str, str]", self.weight_map)  # safe: set by __init__
        try:
            file = weight_map[name]
        except KeyError:
            raise KeyError(f"this checkpoint has no tensor named {name!r}") from None
        return self._shard(file).get_tensor(name)

    def shard_tensors(self, file: str) -> dict[str, Any]:
        """Every tensor of one shard, loaded with one bulk read (as ``load_file``).

        Raises:
            AuthenticationError: the shard fails to authenticate or does not belong here.
        """
        path = _join(self._folder, file + SEALED_SUFFIX)
        # Checked on the very file that is read: a separate check would pass a shard that is
        # swapped before the bulk read opens it again.
        with _st.open_target(path, "rb", None, **self._options) as reader:
            self._check_binding(file, reader.header.metadata.get("user", {}).get(_BINDING))
            tensors = _st.read_tensors(reader, self._device)
        self._check_names(file, tensors)
        return tensors

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())


def open_checkpoint(folder: Folder, *, key: Optional[KeyLike] = None, identities: Optional[Identities] = None,
                    device: Device = "cpu",
                    weights_name: str = DEFAULT_WEIGHTS_NAME, threads: Optional[int] = None) -> CheckpointReader:
    """Opens an encrypted checkpoint for random access to its tensors.

    Args:
        folder: the checkpoint folder, local or an fsspec URL.
        key: the 32-byte key, or a key reference.
        identities: identities to try after key.
        device: where tensors go.
        weights_name: as for ``save_checkpoint``.
        threads: worker threads; None uses every CPU.

    Returns:
        A ``CheckpointReader`` (a context manager).

    Raises:
        FileNotFoundError: no encrypted checkpoint in the folder.
        FormatError: an index that is not valid.
        KeyNotFoundError, AuthenticationError: the index (if sealed) cannot be opened.
    """
    return CheckpointReader(folder, key=key, identities=identities, device=device,
                            weights_name=weights_name, threads=threads)


def load_checkpoint(folder: Folder, *, key: Optional[KeyLike] = None, identities: Optional[Identities] = None,
                    device: Device = "cpu",
                    weights_name: str = DEFAULT_WEIGHTS_NAME, threads: Optional[int] = None) -> dict[str, Any]:
    """Loads every tensor of an encrypted checkpoint into a state dict.

    Each shard is decrypted with one bulk read into one buffer (as
    ``shardseal.safetensors.load_file``), after its binding to the checkpoint is checked.

    Args:
        folder: the checkpoint folder, local or an fsspec URL.
        key: the 32-byte key, or a key reference.
        identities: identities to try after key.
        device: where tensors go.
        weights_name: as for ``save_checkpoint``.
        threads: worker threads; None uses every CPU.

    Returns:
        A dict of tensor names (sorted) to tensors, for ``model.load_state_dict``. Tied
        weights were saved once, under their first name: the other names are missing here
        (``load_state_dict(..., strict=False)``, then re-tie, or use
        ``shardseal.transformers.from_pretrained``, which ties them).

    Raises:
        FileNotFoundError: no encrypted checkpoint in the folder.
        FormatError: an index or a shard header that is not valid.
        KeyNotFoundError: no key opens a shard or the index.
        AuthenticationError: a shard or the index was tampered with, or a shard does not belong
            to this checkpoint (swapped, or from another one).
    """
    result: dict[str, Any] = {}
    with open_checkpoint(folder, key=key, identities=identities, device=device,
                         weights_name=weights_name, threads=threads) as checkpoint:
        for file in checkpoint.files():
            result.update(checkpoint.shard_tensors(file))
    return dict(sorted(result.items()))


# ---- whole folders -------------------------------------------------------------------------


def _checkpoint_files(folder: Folder, weights_name: str) -> tuple[Optional[dict[str, Any]], list[str]]:
    """The plain index (or None) and the shard names of an ordinary checkpoint folder."""
    index_path = _join(folder, _index_name(weights_name))
    if os.path.exists(index_path):
        index = _parse_index(_read_plain(index_path), index_path)
        return index, sorted(set(index["weight_map"].values()))
    if os.path.exists(_join(folder, weights_name)):
        return None, [weights_name]
    raise FileNotFoundError(f"no checkpoint in {_redact.shown_argument(os.fspath(folder))}: neither {_index_name(weights_name)} "
                            f"nor {weights_name}")


def _other_files(src: Folder, skip: set[str]) -> list[str]:
    return [entry.name for entry in sorted(os.scandir(src), key=lambda e: e.name)
            if entry.name not in skip and not entry.name.endswith(SEALED_SUFFIX)
            and entry.is_file(follow_symlinks=False)]


def _copy_other_files(src: Folder, dst: Folder, skip: set[str]) -> list[str]:
    copied: list[str] = []
    if os.path.realpath(src) == os.path.realpath(dst):
        return copied
    for name in _other_files(src, skip):
        shutil.copyfile(_join(src, name), _join(dst, name))
        copied.append(name)
    return copied


def _refuse_weights_in_clear(src: Folder, skip: set[str]) -> None:
    """Refuses to copy, unencrypted, files that hold weights or training state (a second copy
    of the model such as ``consolidated.safetensors``, ``pytorch_model.bin``, ``optimizer.pt``)."""
    weights = [name for name in _other_files(src, skip) if name.lower().endswith(_WEIGHT_SUFFIXES)]
    if weights:
        raise ValueError(f"{os.fspath(src)!r} holds files that look like weights or training state, which "
                         f"copy_other_files would copy unencrypted: {', '.join(weights)}; remove them, "
                         "encrypt them separately, or pass copy_other_files=False")


def encrypt_checkpoint(src: Folder, dst: Folder, *, key: Optional[KeyLike] = None,
                       recipients: Optional[Recipients] = None,
                       weights_name: str = DEFAULT_WEIGHTS_NAME, seal_index: bool = True,
                       copy_other_files: bool = True, threads: Optional[int] = None) -> list[str]:
    """Encrypts an ordinary checkpoint folder (shards and index, as ``save_pretrained``
    writes) into dst, each file streamed in bounded memory and written atomically.

    The shards' plaintext is kept byte for byte (``decrypt_checkpoint`` gives them back);
    the binding of each shard to the checkpoint goes into its container header.

    Args:
        src: the ordinary checkpoint folder.
        dst: the folder for the encrypted one (created if missing); it may be src, and then
            the ``.sseal`` files are written beside the plaintext ones (remove those yourself).
        key: the 32-byte key, or a key reference.
        recipients: instead of key, envelope encryption.
        weights_name: as for ``save_checkpoint``.
        seal_index: False writes the index as plain JSON.
        copy_other_files: copy the folder's other files (``config.json``, tokenizer files) to
            dst as they are, **not encrypted**, so that dst is a complete model folder. Files
            that look like weights or training state (``.safetensors``, ``.bin``, ``.pt``,
            ``.pth``, ``.ckpt``, ``.gguf``, ...) are refused rather than copied in clear.
        threads: worker threads; None uses every CPU.

    Returns:
        The names of the files written in dst.

    Raises:
        FileNotFoundError: src has no checkpoint.
        FormatError: its index is not valid.
        ValueError: with copy_other_files, src holds other files that look like weights or
            training state (nothing is written then).
        OSError: a file cannot be read or written.
    """
    index, shards = _checkpoint_files(src, weights_name)
    if copy_other_files and os.path.realpath(src) != os.path.realpath(dst):
        _refuse_weights_in_clear(src, set(shards) | {_index_name(weights_name)})
    os.makedirs(dst, exist_ok=True)
    checkpoint_id = secrets.token_hex(16)
    written = []
    for name in shards:
        _files.encrypt_file(_join(src, name), _join(dst, name + SEALED_SUFFIX), key, recipients=recipients,
                            metadata=_binding(checkpoint_id, name, len(shards),
                                              None if index is None else _index_kind(2, seal_index)),
                            threads=threads)
        written.append(name + SEALED_SUFFIX)
    skip = set(shards)
    if index is not None:
        index["metadata"][_INDEX_ID] = checkpoint_id
        written.append(_write_index(dst, weights_name, index, seal_index, key, recipients))
        skip.add(_index_name(weights_name))
    keep = {written[-1]}
    if os.path.realpath(src) == os.path.realpath(dst):
        keep.add(_index_name(weights_name))  # src's own plain index stays (the docs: remove it yourself)
    _remove_stale_indexes(dst, weights_name, keep)
    if copy_other_files:
        written += _copy_other_files(src, dst, skip)
    return written


def decrypt_checkpoint(src: Folder, dst: Folder, *, key: Optional[KeyLike] = None,
                       identities: Optional[Identities] = None,
                       weights_name: str = DEFAULT_WEIGHTS_NAME, copy_other_files: bool = True,
                       threads: Optional[int] = None) -> list[str]:
    """Decrypts an encrypted checkpoint folder into an ordinary one (plaintext on disk: for
    tools that cannot read the encrypted one).

    Every shard is checked against the index before it is decrypted, and each output file
    appears only once it has authenticated (see ``shardseal.decrypt_file``).

    Args:
        src: the encrypted checkpoint folder.
        dst: the folder for the plaintext one (created if missing).
        key: the 32-byte key, or a key reference.
        identities: identities to try after key.
        weights_name: as for ``save_checkpoint``.
        copy_other_files: copy the other files that are not ``.sseal`` (``config.json``).
        threads: worker threads; None uses every CPU.

    Returns:
        The names of the files written in dst.

    Raises:
        FileNotFoundError, FormatError, KeyNotFoundError, AuthenticationError: as
            ``load_checkpoint``.
    """
    os.makedirs(dst, exist_ok=True)
    written = []
    with open_checkpoint(src, key=key, identities=identities, weights_name=weights_name,
                         threads=threads) as checkpoint:
        for file in checkpoint.files():
            _decrypt_shard(checkpoint, _join(src, file + SEALED_SUFFIX), file, _join(dst, file))
            written.append(file)
        files = checkpoint.files()
        weight_map = checkpoint.weight_map
    skip = {file + SEALED_SUFFIX for file in files}
    if len(files) > 1 or _exists(_join(src, _index_name(weights_name) + SEALED_SUFFIX)) \
            or _exists(_join(src, _index_name(weights_name))):
        # Safe: an open checkpoint always has its weight map.
        index = _read_index_for_decrypt(src, weights_name, key, identities, cast("dict[str, str]", weight_map))
        index["metadata"].pop(_INDEX_ID, None)
        written.append(_write_index(dst, weights_name, index, False, None, None))
        skip |= {_index_name(weights_name), _index_name(weights_name) + SEALED_SUFFIX}
    if copy_other_files:
        written += _copy_other_files(src, dst, skip)
    return written


def _decrypt_shard(checkpoint: CheckpointReader, path: str, file: str, target: str) -> None:
    """Decrypts one shard into target (atomically, as ``shardseal.decrypt_file``), its binding
    checked on the very open it is decrypted from: a separate check would pass a shard that is
    swapped before a second open."""
    with _files.open(path, "rb", **checkpoint._options) as reader:
        checkpoint._check_binding(file, reader.header.metadata.get("user", {}).get(_BINDING))
        with AtomicFile(target) as atomic:
            _files.copy_blocks(reader.readinto, atomic.file.write, reader.size, None)
            atomic.commit()


def _read_index_for_decrypt(src: Folder, weights_name: str, key: Optional[KeyLike], identities: Optional[Identities],
                            weight_map: Mapping[str, str]) -> dict[str, Any]:
    path = _join(src, _index_name(weights_name))
    if _exists(path + SEALED_SUFFIX):
        with _st.open_target(path + SEALED_SUFFIX, "rb", None, key=key, identities=identities) as reader:
            return _parse_index(reader.read(MAX_INDEX_SIZE + 1), path)
    if _exists(path):
        return _parse_index(_read_plain(path), path)
    return {"metadata": {}, "weight_map": dict(weight_map)}
