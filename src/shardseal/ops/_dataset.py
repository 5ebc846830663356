"""A dataset folder as an object: its manifest opened or created, the dataset key, and its
shards written, read, recorded and removed (``shardseal.manifest.Dataset``)."""

from __future__ import annotations

import builtins
import errno
import hashlib
import os
import threading
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO, Literal, Mapping, NoReturn, Optional, Union, overload

from ..container import blob as _blob, header as _container
from ..core import backend as _backend, buffers as _buffers
from ..core.buffers import Buffer
from ..keys import envelope as _envelope, direct as _direct, registry as _registry
from ..io import files as _files
from .. import audit
from .._atomic import AtomicFile, folder_lock
from ..io.stream import DecryptingReader, EncryptingWriter
from ..errors import (
    FormatError,
    KeyNotFoundError,
    ManifestChangedError,
    ShardMismatchError,
)
from ._manifest_format import (
    CONTENT_TYPE,
    MANIFEST_NAME,
    MANIFEST_SUITE,
    Document,
    PathLike,
    ShardInfo,
    check_manifest_name,
    check_shard_name,
    encode_document,
    now,
    parse_document,
    valid_sha256,
    valid_size,
)
from ._manifest_verify import Problem, VerifyReport, check_shard, digest, unlisted


class _DigestingFile:
    """Wraps the file an EncryptingWriter writes to and hashes exactly the bytes it accepts,
    so that a shard's digest is that of the bytes written, without reading the file back."""

    def __init__(self, file: BinaryIO) -> None:
        self._file = file
        self._sha = hashlib.sha256()
        self.size = 0

    def write(self, data: Buffer) -> Optional[int]:
        written: Optional[int] = self._file.write(data)
        if written:
            self._sha.update(memoryview(data).cast("B")[:written])
            self.size += written
        return written

    def flush(self) -> None:
        self._file.flush()

    def hexdigest(self) -> str:
        return self._sha.hexdigest()


class _ShardWrite:
    """One shard being written: an atomic temporary file, hashed as written, recorded in the
    dataset when the writer closes cleanly and discarded when it does not."""

    def __init__(self, dataset: Dataset, name: str, path: Path, key: bytes,
                 metadata: Optional[Mapping[str, Any]], threads: Optional[int]) -> None:
        self._dataset = dataset
        self._name = name
        self._atomic = AtomicFile(path)
        self._file = _DigestingFile(self._atomic.file)
        with audit.target(path):
            self.writer = EncryptingWriter(self._file, key, metadata=metadata, threads=threads,
                                           on_close=self._commit, on_abort=self._abort)

    def _commit(self) -> None:
        self._atomic.commit()
        self._dataset._record(ShardInfo(self._name, self._file.size, self._file.hexdigest()), writing=self)

    def _abort(self) -> None:
        try:
            self._atomic.abort()
        finally:
            self._dataset._writer_done(self)


class Dataset:
    """A dataset folder: its manifest, the dataset key, and the shards it lists.

    Make one with ``Dataset.create`` or ``Dataset.open`` (not the constructor). Changes to
    the shard list are kept in memory until ``save``, which a ``with`` block calls on a clean
    exit. ``close`` zeroes the dataset key held here (best effort: Python may hold other
    copies). A Dataset never pickles and its repr shows only the public key id.

    Raises:
        TypeError: on direct construction.
    """

    # Set by _build (the constructor refuses to run).
    _manifest_path: Path
    _threads: Optional[int]
    _suite: int
    _fixed: bytes
    _header: bytes
    _input_key: bytearray
    _key: bytearray
    _key_id: str
    _shards: dict[str, ShardInfo]
    _created: str
    _updated: str
    _lock: threading.Lock
    _writes: set[_ShardWrite]
    _dirty: bool
    _closed: bool
    _disk_digest: Optional[str]  # of the manifest file as last read or written

    def __init__(self, *args: object, **kwargs: object) -> None:
        raise TypeError("use Dataset.create(folder, recipients=...) or Dataset.open(folder, identities=...)")

    # ---- construction -----------------------------------------------------------------

    @classmethod
    def create(cls, folder: PathLike, *, recipients: _registry.Recipients, manifest_name: str = MANIFEST_NAME,
               threads: Optional[int] = None) -> Dataset:
        """Creates a dataset with a new random dataset key and writes its empty manifest.

        Args:
            folder: the dataset folder (created when absent).
            recipients: who can open the manifest (see ``shardseal.encrypt``): Keyring keys,
                X25519 recipients, a passphrase, PKCS#11 or KMS keys.
            manifest_name: the manifest's file name in folder.
            threads: worker threads for the manifest and the shards; None uses every CPU.

        Raises:
            FileExistsError: folder already holds a manifest of that name.
            TypeError, ValueError: bad recipients, manifest_name or threads.
            OSError: the folder or manifest cannot be written.
        """
        folder = Path(folder)
        manifest_path = folder / check_manifest_name(manifest_name)
        _buffers.thread_count(threads)
        if manifest_path.exists():
            raise FileExistsError(errno.EEXIST, "a dataset manifest already exists (open it instead)",
                                  str(manifest_path))
        header_metadata = _blob.header_metadata(None, {"content_type": CONTENT_TYPE})
        plan = _blob.plan_header(None, recipients, MANIFEST_SUITE, header_metadata)
        folder.mkdir(parents=True, exist_ok=True)
        created = now()
        dataset = cls._build(manifest_path, threads, suite=MANIFEST_SUITE, fixed=plan.fixed,
                             header=plan.header, input_key=plan.input_key,
                             document=Document(os.urandom(_direct.KEY_SIZE), {}, created, created))
        dataset._dirty = True
        try:
            dataset.save()
        except BaseException:
            dataset.close()
            raise
        audit.record("dataset_create", dataset_key_id=dataset.key_id)
        return dataset

    @classmethod
    def open(cls, folder: PathLike, *, identities: _registry.Identities, manifest_name: str = MANIFEST_NAME,
             threads: Optional[int] = None) -> Dataset:
        """Opens a dataset: decrypts and strictly validates its manifest.

        Args:
            folder: the dataset folder.
            identities: identities to try on the manifest's key stanzas (see
                ``shardseal.decrypt``).
            manifest_name: the manifest's file name in folder.
            threads: worker threads for the manifest and the shards; None uses every CPU.

        Raises:
            FileNotFoundError: no manifest.
            FormatError: the file is not a dataset manifest, or its plaintext is malformed
                (not canonical JSON, unknown fields, bad names, a key id that does not match).
            KeyNotFoundError: no identity opens the manifest.
            AuthenticationError: the manifest was tampered with.
            TruncatedError: the manifest is cut short.
            TypeError, ValueError: bad identities, manifest_name or threads.
        """
        manifest_name = check_manifest_name(manifest_name)
        manifest_path = Path(folder) / manifest_name
        identities = _registry.check_identities(None, identities)
        thread_count = _buffers.thread_count(threads)
        blob = manifest_path.read_bytes()
        with audit.target(manifest_path):
            header = _container.parse_header(blob)
            if header.metadata.get("content_type") != CONTENT_TYPE:
                raise FormatError(f"{manifest_path} is not a shardseal dataset manifest "
                                  f"(its content type is {header.metadata.get('content_type')!r})")
            input_key = _envelope.unwrap_input_key(header, identities=identities)
            with audit.authentication_failures():
                plaintext = _backend.impl.open(header.suite, input_key, header.fixed,
                                               memoryview(blob)[header.size:], thread_count)
            document = parse_document(plaintext, manifest_name)
            dataset = cls._build(manifest_path, threads, suite=header.suite, fixed=header.fixed,
                                 header=blob[:header.size], input_key=input_key, document=document)
            dataset._disk_digest = hashlib.sha256(blob).hexdigest()
            audit.record("dataset_open", dataset_key_id=dataset.key_id, shards=len(document.shards))
        return dataset

    @classmethod
    def _build(cls, manifest_path: Path, threads: Optional[int], *, suite: int, fixed: bytes,
               header: bytes, input_key: bytes, document: Document) -> Dataset:
        self = cls.__new__(cls)
        self._manifest_path = manifest_path
        self._threads = threads
        self._suite = suite
        self._fixed = bytes(fixed)
        # The manifest's header (fixed part and key block) is kept byte for byte: updates
        # re-encrypt the plaintext under the same file key, so any identity keeps working.
        self._header = bytes(header)
        self._input_key = bytearray(input_key)
        self._key = bytearray(document.key)
        self._key_id = _direct.key_id(document.key).hex()
        self._shards = dict(document.shards)
        self._created = document.created
        self._updated = document.updated
        self._lock = threading.Lock()
        self._writes = set()
        self._dirty = False
        self._closed = False
        self._disk_digest = None
        return self

    # ---- properties -------------------------------------------------------------------

    @property
    def folder(self) -> Path:
        """The dataset folder."""
        return self._manifest_path.parent

    @property
    def manifest_path(self) -> Path:
        """The manifest file's path."""
        return self._manifest_path

    @property
    def key(self) -> bytes:
        """The 32-byte dataset key. SECRET: whoever holds it reads every shard.

        Pass it to ``shardseal.open(path, "rb", key=...)`` and the ``shardseal.data``
        datasets; never log it or write it anywhere.

        Raises:
            ValueError: the dataset is closed.
        """
        self._check_open()
        return bytes(self._key)

    @property
    def key_id(self) -> str:
        """The dataset key's public id (hex), as ``shardseal inspect`` shows it on each shard."""
        return self._key_id

    @property
    def shards(self) -> tuple[ShardInfo, ...]:
        """The shards the manifest lists (including unsaved changes), sorted by name."""
        with self._lock:
            return tuple(sorted(self._shards.values(), key=lambda s: s.name))

    @property
    def created(self) -> str:
        """When the dataset was created (ISO 8601, UTC)."""
        return self._created

    @property
    def updated(self) -> str:
        """When the manifest was last saved (ISO 8601, UTC)."""
        return self._updated

    def shard_paths(self) -> list[str]:
        """The listed shards' paths as strings, sorted by name: the file list for
        ``shardseal.data.EncryptedFileDataset(ds.shard_paths(), key=ds.key)``.

        (A dataset built from the folder itself would also pick up the manifest.)
        """
        return [str(self._path(info.name)) for info in self.shards]

    def __len__(self) -> int:
        return len(self._shards)

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{len(self._shards)} shards"
        return f"Dataset({str(self.folder)!r}, key_id={self._key_id}, {state})"

    def __reduce__(self) -> NoReturn:
        raise TypeError("a shardseal Dataset holds the dataset key and is not picklable; "
                        "pass the folder and open it again in the other process")

    # ---- shards -----------------------------------------------------------------------

    @overload
    def open_shard(self, name: str, mode: Literal["rb"] = "rb", *,
                   metadata: Optional[Mapping[str, Any]] = None, threads: Optional[int] = None,
                   verify: bool = False) -> DecryptingReader: ...

    @overload
    def open_shard(self, name: str, mode: Literal["wb"], *,
                   metadata: Optional[Mapping[str, Any]] = None, threads: Optional[int] = None,
                   verify: bool = False) -> EncryptingWriter: ...

    @overload
    def open_shard(self, name: str, mode: str = "rb", *,
                   metadata: Optional[Mapping[str, Any]] = None, threads: Optional[int] = None,
                   verify: bool = False) -> Union[DecryptingReader, EncryptingWriter]: ...

    def open_shard(self, name: str, mode: str = "rb", *, metadata: Optional[Mapping[str, Any]] = None,
                   threads: Optional[int] = None,
                   verify: bool = False) -> Union[DecryptingReader, EncryptingWriter]:
        """Opens a shard for reading or writing.

        ``"wb"`` writes the shard atomically under the dataset key (as ``shardseal.open``);
        when the writer closes cleanly its size and the SHA-256 of the bytes written are
        recorded in the manifest (saved by ``save``). An existing shard of that name is
        replaced. Parent folders are created.

        ``"rb"`` opens a listed shard after checking its size against the manifest; with
        ``verify=True`` it also hashes the whole file first (one extra read) and compares the
        SHA-256, which detects a shard swapped or rolled back to another valid version.

        Args:
            name: the shard's path relative to the folder, POSIX style.
            mode: "rb" or "wb".
            metadata: "wb" only: JSON header metadata (authenticated, not secret).
            threads: worker threads; None uses the dataset's setting.
            verify: "rb" only: compare the file's SHA-256 with the manifest before reading.

        Returns:
            A ``DecryptingReader`` ("rb") or an ``EncryptingWriter`` ("wb").

        Raises:
            KeyError: "rb" of a shard the manifest does not list.
            ShardMismatchError: "rb" of a shard whose size (or, with verify, SHA-256) differs
                from the manifest's.
            FileNotFoundError: "rb" of a listed shard that is missing.
            FormatError, KeyNotFoundError, AuthenticationError, TruncatedError: "rb" of a file
                that does not open under the dataset key.
            TypeError, ValueError: a bad name, mode or argument; the dataset is closed.
        """
        threads = self._threads if threads is None else threads
        if mode == "wb":
            if verify:
                raise TypeError("verify= is for reading")
            return self._write_shard(name, metadata, threads)
        if mode == "rb":
            if metadata is not None:
                raise TypeError("metadata= is for writing")
            return self._read_shard(name, threads, verify)
        raise ValueError(f"mode must be 'rb' or 'wb', got {mode!r}")

    def _write_shard(self, name: str, metadata: Optional[Mapping[str, Any]],
                     threads: Optional[int]) -> EncryptingWriter:
        name = check_shard_name(name, self._manifest_path.name)
        key = self.key
        path = self._path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        write = _ShardWrite(self, name, path, key, metadata, threads)
        with self._lock:
            self._writes.add(write)
        return write.writer

    def _read_shard(self, name: str, threads: Optional[int], verify: bool) -> DecryptingReader:
        name = check_shard_name(name, self._manifest_path.name)
        key = self.key
        info = self._listed(name)
        raw = builtins.open(self._path(name), "rb")
        try:
            size = os.fstat(raw.fileno()).st_size
            if size != info.size:
                raise ShardMismatchError(f"shard {name!r} is {size} bytes but the manifest records "
                                         f"{info.size}: it was replaced, rolled back or altered")
            if verify:
                if digest(raw, size)[1] != info.sha256:
                    raise ShardMismatchError(f"shard {name!r} does not match the manifest's SHA-256: "
                                             "it was replaced, swapped, rolled back or altered")
                raw.seek(0)
            return DecryptingReader(raw, key, threads=threads, close_raw=True)
        except BaseException:
            raw.close()
            raise

    def encrypt_file(self, src: PathLike, name: str, *, metadata: Optional[Mapping[str, Any]] = None,
                     threads: Optional[int] = None) -> int:
        """Encrypts the plaintext file src into the shard name and records it.

        Like ``shardseal.encrypt_file`` (atomic, bounded memory), through ``open_shard``.

        Returns:
            The number of plaintext bytes encrypted.

        Raises:
            OSError: src cannot be read or the shard cannot be written.
            TypeError, ValueError: as for ``open_shard``.
        """
        with builtins.open(src, "rb", buffering=0) as source:
            total = os.fstat(source.fileno()).st_size
            with self.open_shard(name, "wb", metadata=metadata, threads=threads) as writer:
                _files.copy_blocks(source.readinto, writer.write, total, None)
            return writer.tell()

    def add_existing(self, name: str) -> ShardInfo:
        """Records a shard already in the folder, encrypted under the dataset key.

        Its header, key id and commitment are checked (not every chunk: use
        ``verify(deep=True)`` for that), then its size and SHA-256 are recorded.

        Raises:
            FileNotFoundError: there is no such file.
            KeyNotFoundError: the file is not encrypted under the dataset key.
            FormatError, AuthenticationError, TruncatedError: it is not a valid container.
            TypeError, ValueError: a bad name; the dataset is closed.
        """
        name = check_shard_name(name, self._manifest_path.name)
        key = self.key
        with builtins.open(self._path(name), "rb") as raw:
            try:
                DecryptingReader(raw, key, threads=1).close()  # header, key id and commitment
            except KeyNotFoundError as exc:
                raise KeyNotFoundError(f"shard {name!r} is not encrypted under this dataset's key "
                                       f"(key id {self._key_id})", exc.key_ids) from None
            size = raw.seek(0, os.SEEK_END)
            raw.seek(0)
            size, sha256 = digest(raw, size)
        info = ShardInfo(name, size, sha256)
        self._record(info)
        return info

    def record(self, info: ShardInfo) -> ShardInfo:
        """Records a shard that another process or machine wrote under the dataset key, from
        the size and SHA-256 its writer computed while writing (``shardseal.dask`` workers),
        without reading the shard. Saved by ``save``.

        Nothing here checks the file: the writer vouches for it, and ``verify`` (which hashes
        every shard, and with ``deep=True`` decrypts it) checks it afterwards.

        Raises:
            TypeError: info is not a ShardInfo.
            ValueError: a bad name, size or SHA-256; the dataset is closed.
        """
        if not isinstance(info, ShardInfo):
            raise TypeError(f"record takes a ShardInfo, not {type(info).__name__}")
        check_shard_name(info.name, self._manifest_path.name)
        if not valid_size(info.size):
            raise ValueError(f"shard {info.name!r}: size must be an integer from 0 to 2^63 - 1")
        if not valid_sha256(info.sha256):
            raise ValueError(f"shard {info.name!r}: sha256 must be 64 lowercase hex digits")
        self._record(info)
        return info

    def remove(self, name: str) -> None:
        """Removes a shard from the manifest (saved by ``save``). The file is left in place;
        delete it too, or ``verify`` reports it as unlisted.

        Raises:
            KeyError: the manifest does not list it.
            TypeError, ValueError: a bad name; the dataset is closed.
        """
        name = check_shard_name(name, self._manifest_path.name)
        self._check_open()
        with self._lock:
            if name not in self._shards:
                raise KeyError(f"the manifest does not list shard {name!r}")
            del self._shards[name]
            self._dirty = True

    def _listed(self, name: str) -> ShardInfo:
        with self._lock:
            info = self._shards.get(name)
        if info is None:
            raise KeyError(f"the manifest does not list shard {name!r}")
        return info

    def _record(self, info: ShardInfo, writing: Optional[_ShardWrite] = None) -> None:
        with self._lock:
            self._writes.discard(writing)
            self._check_open()
            self._shards[info.name] = info
            self._dirty = True

    def _writer_done(self, writing: _ShardWrite) -> None:
        with self._lock:
            self._writes.discard(writing)

    def _path(self, name: str) -> Path:
        return self.folder.joinpath(*name.split("/"))

    # ---- the manifest -----------------------------------------------------------------

    def save(self) -> None:
        """Writes the manifest atomically, if anything changed since it was read or saved.

        The plaintext is re-encrypted under the same file key with a fresh salt, and the
        header (metadata and key block) is kept byte for byte, so no recipient is needed.

        Raises:
            ManifestChangedError: the manifest file changed on disk since this Dataset read or
                wrote it (another writer, a key rotation).
            ValueError: shard writers are still open, or the dataset is closed.
            OSError: the manifest cannot be written.
        """
        with self._lock:
            self._check_open()
            if self._writes:
                raise ValueError(f"{len(self._writes)} shard writers are still open: close them before save()")
            if not self._dirty:
                return
            updated = now()
            plaintext = encode_document(bytes(self._key), self._shards, self._created, updated)
            # The folder lock makes the check and the replace one step for other writers and
            # for key rotation, which takes the same lock.
            with audit.target(self._manifest_path), folder_lock(self._manifest_path.parent):
                self._check_unchanged_on_disk()
                blob = _backend.impl.seal(self._suite, bytes(self._input_key), _blob.random_salt(),
                                          self._fixed, plaintext, _buffers.thread_count(self._threads),
                                          self._header)
                self._replace_manifest(blob)
                audit.record("dataset_save", dataset_key_id=self._key_id, shards=len(self._shards))
            self._updated = updated
            self._dirty = False

    def _check_unchanged_on_disk(self) -> None:
        try:
            current = hashlib.sha256(self._manifest_path.read_bytes()).hexdigest()
        except FileNotFoundError:
            current = None
        if current != self._disk_digest:
            raise ManifestChangedError(f"{self._manifest_path} changed on disk since it was read "
                                       "(another writer, or its keys were rotated): open it again")

    def _replace_manifest(self, blob: bytes) -> None:
        atomic = AtomicFile(self._manifest_path)
        try:
            atomic.file.write(blob)
            atomic.commit()
        except BaseException:
            atomic.abort()
            raise
        self._disk_digest = hashlib.sha256(blob).hexdigest()

    # ---- verification -----------------------------------------------------------------

    def verify(self, deep: bool = False) -> VerifyReport:
        """Checks the folder against the manifest.

        Every listed shard is hashed: absent is ``missing``; a different size or SHA-256 is
        ``modified``; a file that cannot be read is ``unreadable``. ``*.sseal`` files in the
        folder (recursively) that the manifest does not list are ``unlisted``. With deep=True
        each matching shard is also decrypted and authenticated in full (``corrupt`` when
        that fails). Unsaved changes count as listed.

        Returns:
            A VerifyReport; ``report.ok`` is True when nothing was found.

        Raises:
            ValueError: the dataset is closed.
        """
        self._check_open()
        key = self.key if deep else None
        shards = self.shards
        problems: list[Problem] = []
        bytes_checked = 0
        for info in shards:
            problem, hashed = check_shard(self._path(info.name), info, key, self._threads)
            bytes_checked += hashed
            if problem is not None:
                problems.append(problem)
        problems.extend(unlisted(self.folder, self._manifest_path.name, {info.name for info in shards}))
        report = VerifyReport(tuple(problems), len(shards), bytes_checked, deep)
        with audit.target(self._manifest_path):
            audit.record("verify", ok=report.ok, problems=len(problems), shards=len(shards), deep=deep)
        return report

    # ---- lifetime ---------------------------------------------------------------------

    def close(self) -> None:
        """Zeroes the keys held here and discards shards still being written (their writers
        are aborted). Unsaved changes are lost: call ``save`` first. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            writes = list(self._writes)
        for write in writes:
            write.writer.abort()
        self._wipe_keys()

    def wipe(self) -> None:
        """Same as ``close``: zeroes the dataset key held by this object."""
        self.close()

    def _wipe_keys(self) -> None:
        for secret in (self._key, self._input_key):
            secret[:] = bytes(len(secret))

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError("the dataset is closed")

    def __enter__(self) -> Dataset:
        return self

    def __exit__(self, exc_type: Optional[type[BaseException]], exc: Optional[BaseException],
                 tb: Optional[TracebackType]) -> None:
        try:
            if exc_type is None:
                self.save()
        finally:
            self.close()

    def __del__(self) -> None:
        # Best effort: zero the key bytes of a dataset that was never closed.
        try:
            self._wipe_keys()
        except Exception:
            pass


# A public name of shardseal.ops.manifest: reprs and the pickling error name it there, as
# before the module was split.
Dataset.__module__ = "shardseal.ops.manifest"
