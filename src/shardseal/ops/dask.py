"""Whole-dataset operations on a Dask cluster: encrypt, decrypt, verify and rotate, one task
per shard (or per batch of small files), and lazy readers over encrypted shards.

The driver (the process that calls these functions) only lists files and, at the end, writes
the dataset manifest: it reads no shard bytes. Each worker reads its source files through
fsspec, encrypts them, writes each shard under a temporary name, computes its size and SHA-256
while writing, renames it into place and returns ``(name, size, sha256)``.

Workers never receive raw key bytes. They get *key references* (``shardseal.keyref.KeyFile``,
``EnvKey``, ``shardseal.manifest.DatasetKey``), which each worker resolves itself (a
``DatasetKey`` makes the worker unwrap the dataset key from the manifest with its identity), or
recipient and identity *strings* (``ssealx1...``, ``keyring:PATH``, ``aws-kms:KEY``, identity
file paths), parsed on the worker. A raw key is refused unless ``allow_raw_key=True``: it would
be pickled into every task and cross the network (in the clear unless the cluster uses TLS).

Runs are idempotent and resumable: a shard already under its final name is checked (decrypted
and authenticated in full, and compared with its source, with a key; header, recipients and
exact length with public recipients only) and skipped when it is good, rewritten when it is not. A shard is only ever
renamed into its final name once complete, so a killed worker or driver leaves at most a
temporary file (removed by the next run, or by ``shardseal clean``).

See docs/DISTRIBUTED.md for how this scales to N machines, what bounds it, and TLS.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import secrets
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence, Union

import fsspec

from .._atomic import TEMP_SUFFIX, AtomicFile
from ..container import header as _container
from ..container.blob import container_info
from ..errors import ShardsealError
from ..io.cleanup import clean_temp_files
from ..io.files import FILE_BLOCK_SIZE, copy_blocks
from ..io.fsspec import SealFileSystem
from ..io.stream import DecryptingReader, EncryptingWriter
from ..keys import specs as _specs
from ..keys.keyref import RawKey, is_key_ref, resolve_reference
from ..keys.registry import IdentityRef
from . import manifest as _manifest
from . import rotation as _rotation
from .manifest import CORRUPT, MISSING, MODIFIED, UNLISTED, UNREADABLE, DatasetKey, Problem, ShardInfo, VerifyReport

__all__ = [
    "DEFAULT_BATCH_BYTES",
    "TransferReport",
    "decrypt_dataset",
    "encrypt_dataset",
    "read_array",
    "read_bag",
    "rotate",
    "verify",
]

SUFFIX = ".sseal"
# Small files are grouped into one task until a batch holds this many bytes (or files):
# a task costs the scheduler ~1 ms, so tasks of a few MiB would make it the bottleneck.
DEFAULT_BATCH_BYTES = 64 * 2**20
DEFAULT_BATCH_FILES = 256
# Filesystems whose rename is a cheap, atomic metadata operation. Elsewhere (object stores)
# a shard is uploaded under its final name directly: an object appears only once its upload
# completes (a killed multipart upload leaves no object), which gives the same guarantee.
_RENAMING_PROTOCOLS = ("file", "local", "memory")

_KEYRING_PREFIX = "keyring:"

KeyArg = Any  # a key reference (KeyFile, EnvKey, DatasetKey, RawKey(allow_pickle=True))


@dataclass(frozen=True)
class TransferReport:
    """What ``encrypt_dataset`` or ``decrypt_dataset`` did.

    Attributes:
        files: files written in this run.
        skipped: files already complete and checked, so left alone (a resumed run).
        nbytes: plaintext bytes of every file, written or skipped.
        shards: ``ShardInfo(name, size, sha256)`` of every encrypted shard (encrypt only),
            sorted by name: what the manifest records.
        manifest: the manifest written (a ``DatasetKey`` run), or None.
        seconds: wall-clock time of the run.
    """

    files: int
    skipped: int
    nbytes: int
    shards: tuple = ()
    manifest: Optional[str] = None
    seconds: float = 0.0

    def summary(self, verb: str = "encrypted") -> str:
        """One line for a log or a terminal."""
        total = self.files + self.skipped
        line = (f"{verb} {total} file{'' if total == 1 else 's'}, {self.nbytes} bytes "
                f"({self.files} written, {self.skipped} already done) in {self.seconds:.2f} s")
        return line + (f"; manifest {self.manifest}" if self.manifest else "")


# --------------------------------------------------------------------------------------
# What crosses to the workers


def _key_reference(key, allow_raw_key: bool):
    """key as something safe to pickle into tasks, or None.

    Raises:
        TypeError: raw key bytes (or a RawKey) without allow_raw_key=True.
    """
    if key is None:
        return None
    if is_key_ref(key) and not isinstance(key, RawKey):
        return key
    if isinstance(key, (str, os.PathLike)):
        raise TypeError(f"key must be a key reference, not {type(key).__name__}: use "
                        "shardseal.keyref.KeyFile(path) or EnvKey(name)")
    if not allow_raw_key:
        size = len(memoryview(key.resolve() if isinstance(key, RawKey) else key).cast("B"))
        raise TypeError(
            f"refusing a raw key ({type(key).__name__}, {size} bytes): it would be pickled into "
            "every task and sent to the cluster's workers. Pass a key reference that each worker "
            "resolves itself: shardseal.keyref.KeyFile(path), EnvKey(name) or "
            "shardseal.manifest.DatasetKey(folder, identity); or allow_raw_key=True to send it anyway")
    raw = key.resolve() if isinstance(key, RawKey) else key
    return RawKey(raw, allow_pickle=True)


def _recipient_strings(recipients) -> Optional[tuple]:
    """Recipients as the strings workers parse (Recipient objects never pickle).

    Raises:
        TypeError: a recipient object without a string form (give its string instead).
        KeySpecError: a recipient string that names nothing usable.
    """
    if recipients is None:
        return None
    if isinstance(recipients, (str, bytes)) or not isinstance(recipients, Iterable):
        recipients = [recipients]
    texts = []
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


def _identity_strings(identities) -> tuple:
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


def _checked_picklable(*objects) -> None:
    """Fails on the driver, with the object's own message, what would fail in a worker
    (Dask pickles tasks with cloudpickle)."""
    import cloudpickle

    for obj in objects:
        cloudpickle.dumps(obj)


# --------------------------------------------------------------------------------------
# Files and listing


def _fs(url: str, storage_options: Optional[Mapping[str, Any]]):
    fs, root = fsspec.core.url_to_fs(os.fspath(url), **dict(storage_options or {}))
    return fs, root.rstrip("/")


def _is_local(fs) -> bool:
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    return protocol in ("file", "local")


def _list_files(fs, root: str) -> dict:
    """{relative POSIX name: size} of every file under root (metadata only, no bytes)."""
    found = fs.find(root, detail=True)
    files = {}
    for path, info in found.items():
        if info.get("type", "file") != "file" or info.get("islink"):
            continue
        name = path[len(root):].lstrip("/")
        if name:
            files[name] = int(info["size"])
    return files


def _is_temp(name: str) -> bool:
    base = name.rsplit("/", 1)[-1]
    return base.startswith(".") and base.endswith((TEMP_SUFFIX, _rotation.TEMP_SUFFIX,
                                                   _rotation.JOURNAL_SUFFIX))


def _split(client, items: list, sizes: Callable[[Any], int], batch_bytes: int, batch_files: int) -> list:
    """Batches of items for tasks: at most batch_bytes / batch_files each, and small enough that
    every worker thread gets about four tasks (so a small dataset still spreads out)."""
    threads = max(1, sum(w.get("nthreads", 1) for w in client.scheduler_info()["workers"].values()))
    share = 4 * threads
    total = sum(sizes(item) for item in items)
    batch_bytes = max(1, min(batch_bytes, -(-total // share)))
    batch_files = max(1, min(batch_files, -(-len(items) // share)))
    return _batches(items, sizes, batch_bytes, batch_files)


def _batches(items: list, sizes: Callable[[Any], int], batch_bytes: int, batch_files: int) -> list:
    batches: list = []
    current: list = []
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


class _HashingWriter:
    """Wraps the file a shard is written to and hashes exactly the bytes it accepts.

    SHA-256 runs on a helper thread (hashlib releases the GIL), one block behind the writes,
    so that hashing block i overlaps the encryption of block i+1 where a core is free.
    """

    def __init__(self, file, digest: bool = True) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self._file = file
        self._sha = hashlib.sha256()
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="shardseal-sha256") if digest else None
        self._pending = None
        self.size = 0

    def write(self, data) -> int:
        view = memoryview(data).cast("B")
        written = self._file.write(view)
        written = len(view) if written is None else written
        self.size += written
        if self._pool is not None:
            block = bytes(view[:written])  # the caller may reuse its buffer once this returns
            self._wait()
            self._pending = self._pool.submit(self._sha.update, block)
        return written

    def _wait(self) -> None:
        if self._pending is not None:
            self._pending.result()
            self._pending = None

    def flush(self) -> None:
        self._file.flush()

    def hexdigest(self) -> str:
        """The SHA-256 of everything written ("" when not computed); stops the helper thread."""
        if self._pool is None:
            return ""
        self._wait()
        self._pool.shutdown()
        return self._sha.hexdigest()

    def close(self) -> None:
        """Stops the helper thread (after an error: the digest is not needed)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)


def _hash_file(fs, path: str) -> tuple:
    sha = hashlib.sha256()
    size = 0
    with fs.open(path, "rb") as file:
        while True:
            block = file.read(FILE_BLOCK_SIZE)
            if not block:
                return size, sha.hexdigest()
            sha.update(block)
            size += len(block)


def _write_atomically(fs, path: str, fill: Callable[[Any], None]) -> None:
    """Calls fill(file) on a temporary file and moves it to path only once fill returned."""
    if _is_local(fs):
        fs.makedirs(os.path.dirname(path), exist_ok=True)
        atomic = AtomicFile(path, 0o644)
        try:
            fill(atomic.file)
            atomic.commit()
        except BaseException:
            atomic.abort()
            raise
        return
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    if protocol not in _RENAMING_PROTOCOLS:
        _upload(fs, path, fill)
        return
    folder, base = path.rsplit("/", 1) if "/" in path else ("", path)
    temp = f"{folder}/.{base}.{secrets.token_hex(6)}{TEMP_SUFFIX}"
    try:
        with fs.open(temp, "wb") as file:
            fill(file)
        fs.mv(temp, path)
    except BaseException:
        if fs.exists(temp):
            fs.rm_file(temp)
        raise


def _upload(fs, path: str, fill: Callable[[Any], None]) -> None:
    """Writes an object under its final name, committed only once fill returned.

    Not ``with fs.open(...)``: fsspec's files complete their upload when closed, an exception
    in the ``with`` block included. With ``autocommit=False`` (s3fs, gcsfs, adlfs) the upload
    is completed by ``commit()`` and thrown away by ``discard()``; elsewhere the object is
    removed after a failure (best effort).
    """
    try:
        file = fs.open(path, "wb", autocommit=False)
        transactional = hasattr(file, "commit") and hasattr(file, "discard")
    except (TypeError, NotImplementedError, ValueError):
        file, transactional = fs.open(path, "wb"), False
    try:
        fill(file)
    except BaseException:
        with contextlib.suppress(Exception):
            if transactional:
                file.discard()
            else:
                file.close()
                fs.rm_file(path)
        raise
    file.close()
    if transactional:
        file.commit()


# --------------------------------------------------------------------------------------
# Worker tasks (module-level functions: they pickle by reference)


@dataclass(frozen=True)
class _EncryptJob:
    src_fs: Any
    dst_fs: Any
    key: Any                      # a key reference, or None
    recipients: Optional[tuple]   # recipient strings, or None
    metadata: Optional[Mapping[str, Any]]
    suite: int
    threads: Optional[int]
    checkpoint: Optional[Callable[[str], object]]
    digests: bool = True          # SHA-256 of each shard (a manifest needs them)


# A worker resolves a DatasetKey once per manifest version, not once per task: at 10^6 shards
# the manifest is ~150 MB of JSON to decrypt and parse. The entry is dropped when the manifest
# file changes (another save, a rotation) and the cache holds a few datasets at most.
_DATASET_KEYS: dict = {}
_DATASET_KEYS_MAX = 4


def _resolve(ref):
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


def _encrypt_batch(job: _EncryptJob, items: list) -> list:
    """Encrypts [(src path, dst path, name, source size)]; returns one result per item:
    ``(name, size, sha256, plaintext size, skipped)``."""
    key = _resolve(job.key) if job.key is not None else None
    recipients = [_specs.parse_recipient(t) for t in job.recipients] if job.recipients else None
    results = []
    for src, dst, name, source_size in items:
        done = _finished_shard(job, dst, source_size, key, recipients, src)
        if done is not None:
            results.append((name, done[0], done[1], source_size, True))
            continue
        results.append((name, *_encrypt_one(job, src, dst, name, key, recipients), source_size, False))
    return results


def _encrypt_one(job: _EncryptJob, src: str, dst: str, name: str, key, recipients) -> tuple:
    """Encrypts one file into dst atomically; returns the shard's (size, sha256)."""
    digest: list = []

    def fill(file) -> None:
        out = _HashingWriter(file, job.digests)
        try:
            _encrypt_into(job, src, name, key, recipients, out)
            digest.append((out.size, out.hexdigest()))
        finally:
            out.close()

    _write_atomically(job.dst_fs, dst, fill)
    return digest[0]


def _encrypt_into(job: _EncryptJob, src: str, name: str, key, recipients, out: _HashingWriter) -> None:
    """Streams the source file through an EncryptingWriter into out."""
    first = True
    with EncryptingWriter(out, key, recipients=recipients, metadata=job.metadata, threads=job.threads,
                          suite=job.suite) as writer, job.src_fs.open(src, "rb") as source:

        def write(block) -> None:
            nonlocal first
            writer.write(block)
            if first and job.checkpoint is not None:
                first = False
                out.flush()
                job.checkpoint(name)  # crash tests: part of the shard is on disk

        copy_blocks(source.readinto, write, None, None)
    out.flush()


def _finished_shard(job: _EncryptJob, dst: str, source_size: int, key, recipients,
                    src: str) -> Optional[tuple]:
    """(size, sha256) of a complete, good shard already at dst, or None to (re)write it.

    With a key the shard is decrypted and authenticated in full and its plaintext compared
    with the source (another shard of the same size, swapped in, or the shard of a source
    edited since, authenticates too); with public recipients only,
    its header, its stanzas' key ids and its exact length are checked (the worker cannot
    decrypt). Either way its plaintext size must be the source file's.
    """
    fs = job.dst_fs
    try:
        if not fs.isfile(dst):
            return None
        with fs.open(dst, "rb") as raw:
            header = _container.read_header(raw.read)
            stored = fs.size(dst)
            info = container_info(header, stored - header.size)
            if info.plaintext_size != source_size:
                return None
            if recipients is not None:
                wanted = {r.key_id for r in recipients}
                if {s.key_id for s in info.stanzas} != wanted:
                    return None
            else:
                raw.seek(0)
                with DecryptingReader(raw, key, threads=job.threads) as reader, \
                        job.src_fs.open(src, "rb") as source:
                    if not _same_plaintext(reader, source):
                        return None
    except (ShardsealError, OSError, ValueError):
        return None
    return _hash_file(fs, dst) if job.digests else (stored, "")


def _same_plaintext(reader, source) -> bool:
    """Whether reader decrypts to exactly the bytes of source (both read to their end)."""
    while True:
        block = reader.read(FILE_BLOCK_SIZE)
        expected = source.read(len(block) or 1)
        if not block:
            return not expected
        if block != expected:
            return False


@dataclass(frozen=True)
class _DecryptJob:
    src_fs: Any
    dst_fs: Any
    key: Any
    identities: tuple
    threads: Optional[int]


def _decrypt_batch(job: _DecryptJob, items: list) -> list:
    """Decrypts [(src path, dst path, name, size)]; returns [(name, plaintext bytes)]."""
    key = _resolve(job.key) if job.key is not None else None
    identities = [_specs.load_identity(t) for t in job.identities] or None
    results = []
    for src, dst, name, _ in items:
        counted: list = []

        def fill(file, src=src, counted=counted) -> None:
            with job.src_fs.open(src, "rb") as raw, DecryptingReader(
                    raw, key, identities=identities, threads=job.threads) as reader:
                copy_blocks(reader.readinto, file.write, None, None)
                counted.append(reader.size)

        _write_atomically(job.dst_fs, dst, fill)
        results.append((name, counted[0]))
    return results


def _verify_batch(fs, key_ref, deep: bool, threads: Optional[int], items: list) -> list:
    """Checks [(path, ShardInfo)]; returns [(Problem or None, bytes hashed)]."""
    key = _resolve(key_ref) if deep else None
    return [_verify_one(fs, path, info, key, threads) for path, info in items]


def _verify_one(fs, path: str, info: ShardInfo, key, threads) -> tuple:
    def problem(kind: str, detail: str) -> Problem:
        return Problem(info.name, kind, detail)

    try:
        if not fs.isfile(path):
            return problem(MISSING, "the file does not exist"), 0
        size = fs.size(path)
        if size != info.size:
            return problem(MODIFIED, f"{size} bytes, the manifest records {info.size}"), 0
        hashed, sha256 = _hash_file(fs, path)
    except OSError as exc:
        return problem(UNREADABLE, f"cannot be read: {exc.strerror or type(exc).__name__}"), 0
    if sha256 != info.sha256:
        return problem(MODIFIED, "its SHA-256 differs from the manifest's (replaced, swapped "
                                 "with another shard, rolled back or altered)"), hashed
    if key is not None:
        buffer = bytearray(0)
        try:
            with fs.open(path, "rb") as raw, DecryptingReader(raw, key, threads=threads) as reader:
                buffer = bytearray(min(FILE_BLOCK_SIZE, reader.size + 1))
                while reader.readinto(buffer):
                    pass
        except ShardsealError as exc:
            return problem(CORRUPT, f"does not decrypt under the dataset key: {type(exc).__name__}: {exc}"), hashed
        finally:
            buffer[:] = bytes(len(buffer))
    return None, hashed


def _rotate_batch(identities: tuple, key_ref, options: dict, paths: list) -> _rotation.RotationReport:
    options = dict(options)
    for field in ("add", "recipients"):
        if options.get(field) is not None:
            options[field] = [_specs.parse_recipient(t) for t in options[field]]
    return _rotation.rotate(paths, identities=[_specs.load_identity(t) for t in identities] or None,
                            key=key_ref, recursive=False, **options)


# --------------------------------------------------------------------------------------
# The driver


def _client(client):
    import distributed

    return client if client is not None else distributed.get_client()


def _run(client, function: Callable, batches: list, *args, progress: bool = False) -> list:
    """One task per batch; results in batch order. Fails with the first task's exception."""
    import distributed

    if not batches:
        return []
    futures = [client.submit(function, *args, batch, pure=False) for batch in batches]
    if progress:
        distributed.progress(futures)
    try:
        return client.gather(futures)
    finally:
        for future in futures:
            future.release()


def encrypt_dataset(src_url: Union[str, os.PathLike], dst_url: Union[str, os.PathLike], *,
                    key: Optional[KeyArg] = None, recipients=None, client=None,
                    storage_options: Optional[Mapping[str, Any]] = None,
                    dst_storage_options: Optional[Mapping[str, Any]] = None,
                    metadata: Optional[Mapping[str, Any]] = None, suite: int = 256,
                    threads: Optional[int] = 1, batch_bytes: int = DEFAULT_BATCH_BYTES,
                    batch_files: int = DEFAULT_BATCH_FILES, progress: bool = False,
                    allow_raw_key: bool = False, digests: bool = True,
                    checkpoint: Optional[Callable[[str], object]] = None) -> TransferReport:
    """Encrypts every file under src_url into ``<name>.sseal`` under dst_url on a Dask cluster.

    Three ways to give the key:

    * ``key=DatasetKey(dst, identity)``: a *dataset* (``shardseal.manifest``): shards under the
      dataset key, which each worker unwraps from the manifest with the identity; the driver
      then records every shard's size and SHA-256 in the manifest (written once, reading no
      shard bytes). With ``recipients=`` and no manifest yet, the driver creates it for them.
      Local (or shared, mounted) folders only, as for ``Dataset``.
    * ``key=KeyFile(path)`` / ``EnvKey(name)``: direct-key shards, any fsspec URL, no manifest
      (the report lists every shard's size and SHA-256).
    * ``recipients=[...]`` alone: each shard is its own envelope container for the recipients,
      as ``shardseal encrypt -r`` of a folder; workers receive only the recipient strings.

    Files ending in ``.sseal`` and temporary files are skipped, as the command line does.
    A shard already complete at its destination is checked and skipped (see the module docs).

    Args:
        src_url: the plaintext folder: a path or fsspec URL (``s3://bucket/raw``).
        dst_url: the output folder: a path or fsspec URL.
        key: a key reference (see above). Raw key bytes are refused unless allow_raw_key.
        recipients: recipient strings (``ssealx1...``, ``keyring:PATH``, ``aws-kms:KEY``) or
            recipient objects that have such a string form.
        client: the ``distributed.Client``; None uses the current one.
        storage_options: fsspec options of src_url (and of dst_url unless dst_storage_options).
        dst_storage_options: fsspec options of dst_url.
        metadata: JSON header metadata of every shard (authenticated, not secret).
        suite: 256 (default) or 128.
        threads: threads each task uses for the cipher (1: run one task per worker thread).
        batch_bytes: small files are grouped into tasks of about this many bytes.
        batch_files: and of at most this many files.
        progress: show Dask's progress bar (the dashboard shows the tasks either way).
        allow_raw_key: send a raw key to the workers (pickled into every task).
        digests: compute each shard's SHA-256 while writing it (the default; a DatasetKey
            run needs them for the manifest). False saves that CPU time (about as much as
            the cipher's) when no manifest is written: ``report.shards`` is then empty.
        checkpoint: called on the worker with a shard's name once part of it is written
            under its temporary name (crash tests).

    Returns:
        A TransferReport.

    Raises:
        TypeError: a raw key without allow_raw_key; recipients without a string form;
            neither key nor recipients.
        ValueError: no files under src_url; digests=False with a DatasetKey.
        OSError, ShardsealError: what a task raised, with its class.
        distributed.KilledWorker: Dask gave up on a task whose workers kept dying: run the
            same call again to resume.
    """
    start = time.perf_counter()
    key_ref = _key_reference(key, allow_raw_key)
    recipient_texts = _recipient_strings(recipients)
    if key_ref is None and recipient_texts is None:
        raise TypeError("encrypt_dataset needs key= (a key reference) or recipients=")
    src_fs, src_root = _fs(src_url, storage_options)
    dst_fs, dst_root = _fs(dst_url, dst_storage_options if dst_storage_options is not None else storage_options)
    dataset = isinstance(key_ref, DatasetKey)
    if dataset and not digests:
        raise ValueError("a dataset's manifest records every shard's SHA-256: digests=False "
                         "works only without a DatasetKey")
    if dataset:
        _prepare_manifest(key_ref, recipient_texts)
    _clean_leftovers(dst_fs, dst_root)
    files = {n: s for n, s in _list_files(src_fs, src_root).items()
             if not n.endswith(SUFFIX) and not _is_temp(n)}
    if not files:
        raise ValueError(f"no files to encrypt under {os.fspath(src_url)}")
    items = [(f"{src_root}/{n}", f"{dst_root}/{n}{SUFFIX}", n + SUFFIX, s) for n, s in sorted(files.items())]
    job = _EncryptJob(src_fs, dst_fs, key_ref, None if dataset else recipient_texts, metadata, suite,
                      threads, checkpoint, digests)
    _checked_picklable(job)
    client = _client(client)
    batches = _split(client, items, lambda item: item[3], batch_bytes, batch_files)
    results = [r for batch in _run(client, _encrypt_batch, batches, job, progress=progress) for r in batch]
    shards = tuple(ShardInfo(name, size, sha) for name, size, sha, _, _ in results) if digests else ()
    manifest_path = _record_in_manifest(key_ref, shards) if dataset else None
    return TransferReport(files=sum(1 for r in results if not r[4]), skipped=sum(1 for r in results if r[4]),
                          nbytes=sum(r[3] for r in results), shards=shards, manifest=manifest_path,
                          seconds=time.perf_counter() - start)


def _clean_leftovers(fs, root: str) -> None:
    """Removes temporary files that killed writers left (locked ones, being written, stay)."""
    if _is_local(fs) and os.path.isdir(root):
        clean_temp_files(root, min_age=0)


def _open_dataset(ref: DatasetKey) -> _manifest.Dataset:
    return _manifest.Dataset.open(ref.folder, identities=[_specs.load_identity(ref.identity)],
                                  manifest_name=ref.manifest_name)


def _prepare_manifest(ref: DatasetKey, recipients: Optional[tuple]) -> None:
    if os.path.exists(os.path.join(ref.folder, ref.manifest_name)):
        return
    if recipients is None:
        raise FileNotFoundError(f"{ref.folder} has no {ref.manifest_name}: give recipients= to create "
                                "the dataset, or a key reference without a manifest")
    parsed = [_specs.parse_recipient(t) for t in recipients]
    _manifest.Dataset.create(ref.folder, recipients=parsed, manifest_name=ref.manifest_name).close()


def _record_in_manifest(ref: DatasetKey, shards: Sequence[ShardInfo]) -> str:
    with _open_dataset(ref) as dataset:
        for info in shards:
            dataset.record(info)
        path = str(dataset.manifest_path)
    return path


def decrypt_dataset(src_url: Union[str, os.PathLike], dst_url: Union[str, os.PathLike], *,
                    key: Optional[KeyArg] = None, identities: Sequence[str] = (), client=None,
                    storage_options: Optional[Mapping[str, Any]] = None,
                    dst_storage_options: Optional[Mapping[str, Any]] = None,
                    threads: Optional[int] = 1, batch_bytes: int = DEFAULT_BATCH_BYTES,
                    batch_files: int = DEFAULT_BATCH_FILES, progress: bool = False,
                    allow_raw_key: bool = False) -> TransferReport:
    """Decrypts every ``*.sseal`` file under src_url (the manifest excepted) into dst_url,
    without the suffix, on a Dask cluster.

    Each output file is written under a temporary name and renamed into place only once all
    of it has authenticated. A re-run decrypts every file again (a plaintext file cannot be
    checked against its shard without decrypting it).

    Args:
        src_url: the encrypted folder (path or fsspec URL).
        dst_url: the output folder.
        key: a key reference (``KeyFile``, ``EnvKey``, ``DatasetKey``); raw keys are refused
            unless allow_raw_key.
        identities: identity strings (identity file paths, ``pkcs11:...``, ``aws-kms``) that
            each worker loads itself, for envelope shards.
        client: the ``distributed.Client``; None uses the current one.
        storage_options: fsspec options of src_url (and of dst_url unless dst_storage_options).
        dst_storage_options: fsspec options of dst_url.
        threads: threads each task uses for the cipher.
        batch_bytes: small files are grouped into tasks of about this many bytes.
        batch_files: and of at most this many files.
        progress: show Dask's progress bar.
        allow_raw_key: send a raw key to the workers (pickled into every task).

    Returns:
        A TransferReport (``nbytes``: plaintext bytes written).

    Raises:
        TypeError: a raw key without allow_raw_key; neither key nor identities.
        ValueError: no ``*.sseal`` files under src_url.
        ShardsealError: a shard failed (``AuthenticationError``, ``KeyNotFoundError``, ...),
            raised again on the driver with its class.
        OSError: a file could not be read or written.
    """
    start = time.perf_counter()
    key_ref = _key_reference(key, allow_raw_key)
    identity_texts = _identity_strings(identities)
    if key_ref is None and not identity_texts:
        raise TypeError("decrypt_dataset needs key= (a key reference) or identities=")
    src_fs, src_root = _fs(src_url, storage_options)
    dst_fs, dst_root = _fs(dst_url, dst_storage_options if dst_storage_options is not None else storage_options)
    _clean_leftovers(dst_fs, dst_root)
    files = {n: s for n, s in _list_files(src_fs, src_root).items()
             if n.endswith(SUFFIX) and n != _manifest.MANIFEST_NAME and not _is_temp(n)}
    if not files:
        raise ValueError(f"no *.sseal files under {os.fspath(src_url)}")
    items = [(f"{src_root}/{n}", f"{dst_root}/{n[:-len(SUFFIX)]}", n, s) for n, s in sorted(files.items())]
    job = _DecryptJob(src_fs, dst_fs, key_ref, identity_texts, threads)
    _checked_picklable(job)
    client = _client(client)
    batches = _split(client, items, lambda item: item[3], batch_bytes, batch_files)
    results = [r for batch in _run(client, _decrypt_batch, batches, job, progress=progress) for r in batch]
    return TransferReport(files=len(results), skipped=0, nbytes=sum(n for _, n in results),
                          seconds=time.perf_counter() - start)


def verify(folder: Union[str, os.PathLike], *, identities: Sequence[str], deep: bool = True,
           client=None, manifest_name: str = _manifest.MANIFEST_NAME, threads: Optional[int] = 1,
           batch_bytes: int = DEFAULT_BATCH_BYTES, batch_files: int = DEFAULT_BATCH_FILES,
           progress: bool = False) -> VerifyReport:
    """Checks a dataset folder against its manifest on a Dask cluster, as
    ``shardseal.manifest.verify`` does on one machine (the same report).

    The driver opens the manifest and lists the folder; the workers hash every shard and, with
    deep=True, decrypt it in full under the dataset key, which each worker unwraps from the
    manifest itself with the identity (a ``DatasetKey``).

    Args:
        folder: the dataset folder (local or a shared mount).
        identities: identity strings (identity or key file paths, ``pkcs11:...``, ``aws-kms``);
            the first one that opens the manifest is sent to the workers.
        deep: also decrypt and authenticate every shard.
        client: the ``distributed.Client``; None uses the current one.
        manifest_name: the manifest's file name.
        threads: threads each task uses to decrypt.
        batch_bytes: shards are grouped into tasks of about this many bytes.
        batch_files: and of at most this many shards.
        progress: show Dask's progress bar.

    Returns:
        A ``shardseal.manifest.VerifyReport``.

    Raises:
        ShardsealError: the manifest cannot be opened (as ``shardseal.manifest.Dataset.open``).
        OSError: the manifest cannot be read.
        ValueError: no identities.
    """
    ref = _dataset_key(folder, _identity_strings(identities), manifest_name)
    with _open_dataset(ref) as dataset:
        shards = dataset.shards
        root = str(dataset.folder)
    fs = fsspec.filesystem("file")
    items = [(f"{root}/{info.name}", info) for info in shards]
    client = _client(client)
    batches = _split(client, items, lambda item: item[1].size, batch_bytes, batch_files)
    results = [r for batch in _run(client, _verify_batch, batches, fs, ref, deep, threads,
                                   progress=progress) for r in batch]
    problems = [p for p, _ in results if p is not None]
    listed = {info.name for info in shards}
    unlisted = sorted(n for n in _list_files(fs, root)
                      if n.endswith(SUFFIX) and n != manifest_name and n not in listed and not _is_temp(n))
    problems += [Problem(n, UNLISTED, "an encrypted file the manifest does not list") for n in unlisted]
    return VerifyReport(tuple(problems), len(shards), sum(h for _, h in results), deep)


def _dataset_key(folder, identities: tuple, manifest_name: str) -> DatasetKey:
    """A DatasetKey with the first identity that opens the manifest.

    Raises:
        ValueError: no identity given.
        As ``Dataset.open`` for the last identity tried.
    """
    if not identities:
        raise ValueError("verify needs identities= (identity strings that open the manifest)")
    for index, identity in enumerate(identities):
        ref = DatasetKey(folder, identity, manifest_name)
        try:
            _open_dataset(ref).close()
            return ref
        except ShardsealError:
            if index == len(identities) - 1:
                raise
    raise AssertionError("unreachable")


def rotate(url: Union[str, os.PathLike, Sequence[Union[str, os.PathLike]]], *, identities: Sequence[str] = (),
           key: Optional[KeyArg] = None, add: Sequence[str] = (), remove: Sequence[str] = (),
           recipients: Optional[Sequence[str]] = None, reencrypt: bool = False, dry_run: bool = False,
           recursive: bool = True, client=None, threads: Optional[int] = 1,
           batch_files: int = DEFAULT_BATCH_FILES, progress: bool = False,
           allow_raw_key: bool = False) -> _rotation.RotationReport:
    """Rotates every container under a folder on a Dask cluster: ``shardseal.rotation.rotate``
    on batches of files, one task per batch, with the same guarantees (each file crash-safe,
    every file's new key set checked before it is changed).

    A dataset's shards are direct-key files under the dataset key, so rotating who can open a
    dataset rewrites only its manifest (the other files are skipped as direct-key, as locally).
    Folders of envelope containers (``encrypt_dataset(recipients=...)``) are rewrapped file by
    file on the workers.

    Args:
        url: a local (or shared, mounted) folder or file, or a list of them.
        identities: identity strings that open the current key blocks (loaded by each worker).
        key: a key reference for direct-key files (with reencrypt).
        add: recipient strings (``ssealx1...``, ``keyring:PATH``) to add, parsed by each worker.
        remove: key ids whose stanzas are removed.
        recipients: instead of add/remove, the complete new set of recipient strings.
        reencrypt: decrypt and encrypt every file again under a fresh file key.
        dry_run: check everything, write nothing.
        recursive: search folders recursively.
        client: the ``distributed.Client``; None uses the current one.
        threads: threads each task uses for re-encryption.
        batch_files: files per task, at most.
        progress: show Dask's progress bar.
        allow_raw_key: send a raw key to the workers (pickled into every task).

    Returns:
        The combined ``RotationReport`` of every batch.

    Raises:
        ShardsealError: as ``shardseal.rotation.rotate`` (KeyNotFoundError, AuthenticationError,
            FormatError, ...), from the first batch that failed, with its class.
        ValueError: as ``shardseal.rotation.rotate`` (nothing to do, a file left without keys).
        FileNotFoundError: a path does not exist.
    """
    key_ref = _key_reference(key, allow_raw_key)
    options = dict(add=_recipient_strings(add) if add else (), remove=list(remove),
                   recipients=_recipient_strings(recipients), reencrypt=reencrypt, dry_run=dry_run,
                   threads=threads)
    identity_texts = _identity_strings(identities)
    urls = [url] if isinstance(url, (str, os.PathLike)) else list(url)
    paths: list = []
    for root in map(os.fspath, urls):
        paths += _container_candidates(root, recursive)
    client = _client(client)
    batches = _split(client, paths, lambda path: 1, batch_files, batch_files)
    reports = _run(client, _rotate_batch, batches, identity_texts, key_ref, options,
                   progress=progress)
    return _combine(reports, dry_run)


def _container_candidates(root: str, recursive: bool) -> list:
    """The files rotate is given for root: itself, or the regular files under it (links and
    rotation's own files left out; ``rotation.rotate`` skips what is not a container)."""
    if not os.path.isdir(root):
        os.stat(root)  # FileNotFoundError for a missing path, before any task
        return [os.path.abspath(root)]
    _rotation.recover(root)  # unfinished rotations of a killed run, on the driver, first
    paths = []
    for folder, subfolders, names in os.walk(root):
        subfolders.sort()
        if not recursive:
            subfolders.clear()
        paths += [os.path.abspath(os.path.join(folder, n)) for n in sorted(names)
                  if not _is_temp(n) and not os.path.islink(os.path.join(folder, n))]
    return paths


def _combine(reports: list, dry_run: bool) -> _rotation.RotationReport:
    total: dict = {f.name: f.default for f in dataclasses.fields(_rotation.RotationReport)}
    for report in reports:
        for name in total:
            if name != "dry_run":
                total[name] = total[name] + getattr(report, name)
    total["dry_run"] = dry_run
    return _rotation.RotationReport(**total)


# --------------------------------------------------------------------------------------
# Readers


def read_bag(urlpath: Union[str, Sequence[str]], key: KeyArg, *,
             storage_options: Optional[Mapping[str, Any]] = None, allow_raw_key: bool = False):
    """A ``dask.bag`` with one item per encrypted file: its decrypted bytes.

    For lines of text, ``dask.bag.read_text("sseal::" + url, storage_options={"sseal":
    {"key": ref}})`` does the same through the ``sseal::`` file system.

    Args:
        urlpath: a glob or URL (``s3://bucket/train/*.sseal``), or a list of them.
        key: a key reference (resolved by each worker); raw keys are refused unless
            allow_raw_key.
        storage_options: fsspec options of the target file system.
        allow_raw_key: as for ``encrypt_dataset``.

    Returns:
        A lazy ``dask.bag.Bag`` of ``bytes``.

    Raises:
        TypeError: a raw key without allow_raw_key.
        FileNotFoundError: nothing matches urlpath.
    """
    import dask.bag

    fs = _sealed_fs(key, storage_options, allow_raw_key, urlpath)
    paths = _expand(fs, urlpath)
    return dask.bag.from_sequence([(fs, p) for p in paths], npartitions=len(paths)).map(_read_whole)


def _sealed_fs(key, storage_options, allow_raw_key: bool, urlpath) -> SealFileSystem:
    first = urlpath if isinstance(urlpath, (str, os.PathLike)) else urlpath[0]
    protocol = fsspec.core.split_protocol(os.fspath(first))[0] or "file"
    target = fsspec.filesystem(protocol, **dict(storage_options or {}))
    return SealFileSystem(fs=target, key=_key_reference(key, allow_raw_key))


def _expand(fs: SealFileSystem, urlpath) -> list:
    urls = [urlpath] if isinstance(urlpath, (str, os.PathLike)) else list(urlpath)
    paths: list = []
    for url in urls:
        url = os.fspath(url)
        matches = fs.fs.glob(url) if any(c in url for c in "*?[") else [fs.fs._strip_protocol(url)]
        paths += sorted(matches)
    if not paths:
        raise FileNotFoundError(f"nothing matches {urlpath!r}")
    return paths


def _read_whole(item) -> bytes:
    fs, path = item
    with fs.open(path, "rb") as reader:
        return reader.read()


def read_array(urlpath: Union[str, Sequence[str]], key: KeyArg, *,
               storage_options: Optional[Mapping[str, Any]] = None, allow_raw_key: bool = False):
    """A lazily decrypted ``dask.array`` over encrypted ``.npy`` shards (as
    ``shardseal.data.write_npy_shard`` writes them), concatenated along the first axis.

    The driver decrypts only each shard's ``.npy`` header (its first 16 KiB chunk) for the
    shapes and dtype; the workers decrypt the arrays when the graph is computed.

    Args:
        urlpath: a glob or URL of the shards (sorted by name), or a list of them.
        key: a key reference (resolved by each worker); raw keys are refused unless
            allow_raw_key.
        storage_options: fsspec options of the target file system.
        allow_raw_key: as for ``encrypt_dataset``.

    Returns:
        A ``dask.array.Array`` with one block per shard.

    Raises:
        TypeError: a raw key without allow_raw_key.
        ValueError: shards of different dtypes or trailing shapes; not ``.npy`` data.
        FileNotFoundError: nothing matches urlpath.
    """
    import dask
    import dask.array

    fs = _sealed_fs(key, storage_options, allow_raw_key, urlpath)
    paths = _expand(fs, urlpath)
    blocks = []
    for path in paths:
        shape, dtype = _npy_header(fs, path)
        blocks.append(dask.array.from_delayed(dask.delayed(_load_npy)(fs, path), shape, dtype))
    first_dtype = blocks[0].dtype
    if any(b.dtype != first_dtype or b.shape[1:] != blocks[0].shape[1:] for b in blocks):
        raise ValueError("the shards' dtypes or trailing shapes differ")
    return dask.array.concatenate(blocks, axis=0) if len(blocks) > 1 else blocks[0]


def _npy_header(fs: SealFileSystem, path: str) -> tuple:
    import numpy as np

    with fs.open(path, "rb") as reader:
        try:
            version = np.lib.format.read_magic(reader)
            reader_fn = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                         else np.lib.format.read_array_header_2_0)
            shape, fortran, dtype = reader_fn(reader)
        except ValueError as exc:
            raise ValueError(f"{path} does not hold .npy data: {exc}") from None
    if fortran or dtype.hasobject:
        raise ValueError(f"{path}: Fortran-ordered or object arrays are not read here")
    return shape, dtype


def _load_npy(fs: SealFileSystem, path: str):
    import numpy as np

    with fs.open(path, "rb") as reader:
        return np.lib.format.read_array(reader, allow_pickle=False)
