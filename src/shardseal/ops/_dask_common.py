"""What the Dask operations share: the arguments made safe to send to workers (key references,
recipient and identity strings), listing files through fsspec, batching files into tasks,
running tasks, and resolving a key reference on a worker."""

from __future__ import annotations

import hashlib
import os
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Optional, Sequence, TypeVar, Union, cast

import fsspec
from fsspec import AbstractFileSystem

from .._atomic import TEMP_SUFFIX
from ..errors import ShardsealError
from ..io.files import FILE_BLOCK_SIZE
from ..keys import specs as _specs
from ..core.buffers import Buffer
from ..keys.keyref import KeyLike, KeyRef, RawKey, is_key_ref, resolve_reference
from ..keys.registry import IdentityRef, Recipients
from ._rotation_files import JOURNAL_SUFFIX, TEMP_SUFFIX as ROTATION_TEMP_SUFFIX
from .manifest import DatasetKey

if TYPE_CHECKING:
    import distributed

_Item = TypeVar("_Item")
_Result = TypeVar("_Result")

SUFFIX = ".sseal"
# Small files are grouped into one task until a batch holds this many bytes (or files):
# a task costs the scheduler ~1 ms, so tasks of a few MiB would make it the bottleneck.
DEFAULT_BATCH_BYTES = 64 * 2**20
DEFAULT_BATCH_FILES = 256
# Filesystems whose rename is a cheap, atomic metadata operation. Elsewhere (object stores)
# a shard is uploaded under its final name directly: an object appears only once its upload
# completes (a killed multipart upload leaves no object), which gives the same guarantee.
RENAMING_PROTOCOLS = ("file", "local", "memory")

_KEYRING_PREFIX = "keyring:"

# A key reference (KeyFile, EnvKey, DatasetKey, RawKey(allow_pickle=True)); raw key bytes are
# refused unless allow_raw_key=True.
KeyArg = KeyLike
# Identity strings: identity file paths, pkcs11:..., aws-kms.
IdentityArgs = Union[str, "os.PathLike[str]", Iterable[Union[str, "os.PathLike[str]"]]]

# --------------------------------------------------------------------------------------
# What crosses to the workers


def key_reference(key: Optional[KeyArg], allow_raw_key: bool) -> Optional[KeyRef]:
    """key as something safe to pickle into tasks, or None.

    Raises:
        TypeError: raw key bytes (or a RawKey) without allow_raw_key=True.
    """
    if key is None:
        return None
    if is_key_ref(key) and not isinstance(key, RawKey):
        # cast: is_key_ref accepts any object with resolve(), as the workers do.
        return cast(KeyRef, key)
    if isinstance(key, (str, os.PathLike)):
        raise TypeError(f"key must be a key reference, not {type(key).__name__}: use "
                        "shardseal.keyref.KeyFile(path) or EnvKey(name)")
    # cast: every key reference but RawKey was returned above; what is left is raw key bytes.
    raw = key.resolve() if isinstance(key, RawKey) else cast(Buffer, key)
    if not allow_raw_key:
        size = len(memoryview(raw).cast("B"))
        raise TypeError(
            f"refusing a raw key ({type(key).__name__}, {size} bytes): it would be pickled into "
            "every task and sent to the cluster's workers. Pass a key reference that each worker "
            "resolves itself: shardseal.keyref.KeyFile(path), EnvKey(name) or "
            "shardseal.manifest.DatasetKey(folder, identity); or allow_raw_key=True to send it anyway")
    return RawKey(raw, allow_pickle=True)


def recipient_strings(recipients: Optional[Recipients]) -> Optional[tuple[str, ...]]:
    """Recipients as the strings workers parse (Recipient objects never pickle).

    Raises:
        TypeError: a recipient object without a string form (give its string instead).
        KeySpecError: a recipient string that names nothing usable.
    """
    if recipients is None:
        return None
    if isinstance(recipients, (str, bytes)) or not isinstance(recipients, Iterable):
        recipients = [recipients]
    texts: list[str] = []
    for recipient in recipients:
        if isinstance(recipient, str):
            text = recipient
            _specs.parse_recipient(text)  # its own error for a bad string (never echoes a secret)
        else:
            text = str(recipient)
            try:
                _specs.parse_recipient(text)
            except (ShardsealError, ValueError, TypeError, OSError):
                raise TypeError(f"{type(recipient).__name__} recipients cannot be sent to workers: give "
                                "recipient strings (ssealx1..., keyring:PATH, aws-kms:KEY, pkcs11:...) "
                                "that each worker parses itself") from None
        if text.startswith(_KEYRING_PREFIX):  # a path: absolute for workers elsewhere
            text = _KEYRING_PREFIX + os.path.abspath(text[len(_KEYRING_PREFIX):])
        texts.append(text)
    if not texts:
        raise ValueError("recipients is empty")
    return tuple(texts)


def identity_strings(identities: IdentityArgs) -> tuple[str, ...]:
    """Identity strings as IdentityRef makes them: paths (also after ``keyring:``) absolute,
    as DatasetKey and KeyFile do, since workers have other working folders; a secret (an
    X25519 identity string) refused here, before it is pickled into every task.

    Raises:
        TypeError: an identity object (not a string, path or IdentityRef).
        ValueError: a secret given as an identity string.
    """
    if isinstance(identities, (str, os.PathLike, IdentityRef)):
        identities = [identities]
    refs = []
    for identity in identities:
        if not isinstance(identity, (str, os.PathLike, IdentityRef)):
            raise TypeError("identities are strings (identity file paths, keyring:PATH, pkcs11:..., "
                            "aws-kms) or IdentityRef objects that each worker loads itself, not "
                            "identity objects")
        refs.append(identity if isinstance(identity, IdentityRef) else IdentityRef(identity))
    return tuple(ref.to_string() for ref in refs)


def checked_picklable(*objects: object) -> None:
    """Fails on the driver, with the object's own message, what would fail in a worker
    (Dask pickles tasks with cloudpickle)."""
    import cloudpickle

    for obj in objects:
        cloudpickle.dumps(obj)


# --------------------------------------------------------------------------------------
# Files and listing


def url_to_fs(url: Union[str, "os.PathLike[str]"],
              storage_options: Optional[Mapping[str, Any]]) -> tuple[AbstractFileSystem, str]:
    """The file system of an fsspec URL and the path within it, without a trailing slash."""
    fs, root = fsspec.core.url_to_fs(os.fspath(url), **dict(storage_options or {}))
    return fs, root.rstrip("/")


def is_local(fs: AbstractFileSystem) -> bool:
    """Whether fs is the local file system."""
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    return protocol in ("file", "local")


def list_files(fs: AbstractFileSystem, root: str) -> dict[str, int]:
    """{relative POSIX name: size} of every file under root (metadata only, no bytes)."""
    found = fs.find(root, detail=True)
    files: dict[str, int] = {}
    for path, info in found.items():
        if info.get("type", "file") != "file" or info.get("islink"):
            continue
        name = path[len(root):].lstrip("/")
        if name:
            files[name] = int(info["size"])
    return files


def is_temp(name: str) -> bool:
    """Whether name is a temporary file of a writer or a rotation, or a rotation's journal."""
    base = name.rsplit("/", 1)[-1]
    return base.startswith(".") and base.endswith((TEMP_SUFFIX, ROTATION_TEMP_SUFFIX,
                                                   JOURNAL_SUFFIX))


def split(client: distributed.Client, items: Sequence[_Item], sizes: Callable[[_Item], int],
          batch_bytes: int, batch_files: int) -> list[list[_Item]]:
    """Batches of items for tasks: at most batch_bytes / batch_files each, and small enough that
    every worker thread gets about four tasks (so a small dataset still spreads out)."""
    threads = max(1, sum(w.get("nthreads", 1) for w in client.scheduler_info()["workers"].values()))
    share = 4 * threads
    total = sum(sizes(item) for item in items)
    batch_bytes = max(1, min(batch_bytes, -(-total // share)))
    batch_files = max(1, min(batch_files, -(-len(items) // share)))
    return _batches(items, sizes, batch_bytes, batch_files)


def _batches(items: Sequence[_Item], sizes: Callable[[_Item], int], batch_bytes: int,
             batch_files: int) -> list[list[_Item]]:
    batches: list[list[_Item]] = []
    current: list[_Item] = []
    current_bytes = 0
    for item in items:
        if current and (current_bytes + sizes(item) > batch_bytes or len(current) >= batch_files):
            batches.append(current)
            current, current_bytes = [], 0
        current.append(item)
        current_bytes += sizes(item)
    if current:
        batches.append(current)
    return batches


def hash_file(fs: AbstractFileSystem, path: str) -> tuple[int, str]:
    """(size, SHA-256 hex) of a file, read in blocks."""
    sha = hashlib.sha256()
    size = 0
    with fs.open(path, "rb") as file:
        while True:
            block = file.read(FILE_BLOCK_SIZE)
            if not block:
                return size, sha.hexdigest()
            sha.update(block)
            size += len(block)


# A worker resolves a DatasetKey once per manifest version, not once per task: at 10^6 shards
# the manifest is ~150 MB of JSON to decrypt and parse. The entry is dropped when the manifest
# file changes (another save, a rotation) and the cache holds a few datasets at most.
_DATASET_KEYS: dict[DatasetKey, tuple[tuple[int, int, int], bytes]] = {}
_DATASET_KEYS_MAX = 4


def resolve(ref: KeyRef) -> bytes:
    """The key bytes of a key reference, in this worker process."""
    if not isinstance(ref, DatasetKey):
        return resolve_reference(ref)
    stat = os.stat(os.path.join(ref.folder, ref.manifest_name))
    version = (stat.st_ino, stat.st_size, stat.st_mtime_ns)
    cached = _DATASET_KEYS.get(ref)
    if cached is not None and cached[0] == version:
        return cached[1]
    key = resolve_reference(ref)
    if len(_DATASET_KEYS) >= _DATASET_KEYS_MAX:
        _DATASET_KEYS.clear()
    _DATASET_KEYS[ref] = (version, key)
    return key


def find_client(client: Optional[distributed.Client]) -> distributed.Client:
    """client, or the current one."""
    import distributed

    return client if client is not None else distributed.get_client()


def run(client: distributed.Client, function: Callable[..., _Result], batches: Sequence[object],
        *args: object, progress: bool = False) -> list[_Result]:
    """One task per batch; results in batch order. Fails with the first task's exception."""
    import distributed

    if not batches:
        return []
    futures = [client.submit(function, *args, batch, pure=False) for batch in batches]
    if progress:
        distributed.progress(futures)  # type: ignore[no-untyped-call]  # distributed: unannotated
    try:
        results: list[_Result] = client.gather(futures)  # type: ignore[no-untyped-call]  # as above
        return results
    finally:
        for future in futures:
            future.release()  # type: ignore[no-untyped-call]  # distributed: unannotated


