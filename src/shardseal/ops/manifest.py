"""Datasets of many shards under one dataset key, listed in an encrypted manifest.

A dataset is a folder of shards and one small *manifest* (``manifest.sseal``):

* the manifest is a shardseal container encrypted for recipients (envelope encryption, header
  content type ``shardseal.dataset-manifest``). Its plaintext holds the 32-byte *dataset key*
  and lists every shard with its size and the SHA-256 of its encrypted file;
* every shard is an ordinary direct-key container under the dataset key (each with its own
  random salt), readable with ``shardseal.open(path, "rb", key=ds.key)`` and the datasets of
  ``shardseal.data``.

Rotating a key-encryption key therefore rewrites one manifest, never the shards:
``shardseal.rotate`` on the manifest rewrites only its key block. Adding or removing shards
re-encrypts the manifest's plaintext under the same file key and with the same key block, so
it needs only an identity that opens the manifest, not every recipient.

``verify`` checks the folder against the manifest: a listed shard that is absent is
``missing``; one whose size or SHA-256 differs is ``modified`` (replaced, swapped with another
shard, rolled back to an older version, altered); a ``*.sseal`` file the manifest does not list
is ``unlisted``; with ``deep=True`` every shard is also decrypted and authenticated in full
(``corrupt`` when that fails).

Limits: the manifest itself is authenticated but carries no counter, so a rollback of the
manifest *together with* its shards to an older consistent state is not detectable from the
folder alone; compare ``Dataset.updated`` (or the manifest file's digest) with a trusted record
when that matters. Writers must not update one manifest concurrently: ``save`` refuses (with
``ManifestChangedError``) to overwrite a manifest that changed on disk since it was read, which
catches, among others, a rotation that happened while the dataset was open.

    >>> with Dataset.create("data/train", recipients=[kek.recipient()]) as ds:
    ...     with ds.open_shard("shard-000.sseal", "wb") as f:
    ...         f.write(samples)
    >>> shardseal.manifest.verify("data/train", identities=[kek]).ok
    True
"""

from __future__ import annotations

import base64
import binascii
import builtins
import datetime
import errno
import hashlib
import json
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, NamedTuple, Optional, Union

from ..container import blob as _blob, header as _container
from ..core import backend as _backend, buffers as _buffers
from ..keys import envelope as _envelope, direct as _direct, registry as _registry
from ..keys.keyref import KeyRef
from ..io import files as _files
from .. import audit
from ..io.stream import DecryptingReader, EncryptingWriter
from ..errors import (
    FormatError,
    KeyNotFoundError,
    ManifestChangedError,
    ShardMismatchError,
    ShardsealError,
)

__all__ = [
    "CONTENT_TYPE",
    "FORMAT",
    "MANIFEST_NAME",
    "Dataset",
    "DatasetKey",
    "ManifestChangedError",
    "Problem",
    "ShardInfo",
    "ShardMismatchError",
    "VerifyReport",
    "verify",
]

PathLike = Union[str, "os.PathLike[str]"]

MANIFEST_NAME = "manifest.sseal"
CONTENT_TYPE = "shardseal.dataset-manifest"
FORMAT = "shardseal-dataset-1"
SHARD_SUFFIX = ".sseal"
# The manifest is always written with Cobblestone-256; a reader accepts either suite.
MANIFEST_SUITE = 256

# Problem kinds that verify reports.
MISSING = "missing"
MODIFIED = "modified"
UNLISTED = "unlisted"
CORRUPT = "corrupt"
UNREADABLE = "unreadable"

_MANIFEST_FIELDS = frozenset({"format", "dataset_key", "dataset_key_id", "shards", "created", "updated"})
_SHARD_FIELDS = frozenset({"name", "size", "sha256"})
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_KEY_ID_HEX = re.compile(r"[0-9a-f]{32}")
# The one time form the writer emits and a reader accepts (UTC, whole seconds, "+00:00": what
# datetime.isoformat gives), checked by pattern so that what a reader accepts does not depend
# on the Python version's fromisoformat. ASCII digits only (Python's \d takes any script's).
_ISO_TIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\+00:00")
_MAX_SHARD_SIZE = 2**63 - 1  # a file size every platform's signed 64-bit offset can hold


@dataclass(frozen=True)
class ShardInfo:
    """A shard as the manifest records it.

    Attributes:
        name: its path relative to the dataset folder, POSIX style ("train/000.sseal").
        size: the encrypted file's size in bytes.
        sha256: the SHA-256 of the whole encrypted file, lowercase hex.
    """

    name: str
    size: int
    sha256: str


class Problem(NamedTuple):
    """One finding of ``verify``: the shard's name, a kind (``missing``, ``modified``,
    ``unlisted``, ``corrupt``, ``unreadable``) and a human-readable detail."""

    name: str
    kind: str
    detail: str


@dataclass(frozen=True)
class VerifyReport:
    """The result of checking a dataset folder against its manifest.

    Attributes:
        problems: every finding, listed shards first (in name order), then unlisted files.
        shards_checked: how many listed shards were checked.
        bytes_checked: how many bytes of shard files were hashed.
        deep: whether every shard was also decrypted and authenticated in full.
    """

    problems: tuple[Problem, ...]
    shards_checked: int
    bytes_checked: int
    deep: bool = False

    @property
    def ok(self) -> bool:
        """True when the folder matches the manifest exactly."""
        return not self.problems

    def summary(self) -> str:
        """A few lines for a person: OK, or each problem on its own line."""
        checked = f"{self.shards_checked} shards, {self.bytes_checked:,} bytes checked"
        if self.deep:
            checked += " and decrypted"
        if self.ok:
            return f"OK: {checked}"
        counts: dict[str, int] = {}
        for problem in self.problems:
            counts[problem.kind] = counts.get(problem.kind, 0) + 1
        kinds = ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items()))
        lines = [f"FAILED: {len(self.problems)} problems ({kinds}); {checked}"]
        lines += [f"  {p.kind:<10} {p.name}: {p.detail}" for p in self.problems]
        return "\n".join(lines)


# --------------------------------------------------------------------------------------
# Names, digests and times


def _name_problem(name: str) -> Optional[str]:
    """Why name is not a valid shard name, or None."""
    if not name:
        return "it is empty"
    if "\\" in name or any(ord(c) < 0x20 or c == "\x7f" for c in name):
        # Control characters (newline, escape) would let a name rewrite a report's lines.
        return "it holds a backslash or a control character"
    if name.startswith("/"):
        return "it is absolute"
    if any(part in ("", ".", "..") for part in name.split("/")):
        return "it has an empty, '.' or '..' component"
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return "it is not valid Unicode text"
    return None


def _check_shard_name(name, manifest_name: str) -> str:
    """Validates a shard name given by the caller.

    Raises:
        TypeError: name is not a str.
        ValueError: not a relative, normalised POSIX path, or the manifest's own name.
    """
    if not isinstance(name, str):
        raise TypeError(f"a shard name must be a str (a relative POSIX path), not {type(name).__name__}")
    why = _name_problem(name)
    if why is None and name == manifest_name:
        why = "it is the manifest's own name"
    if why is not None:
        raise ValueError(f"invalid shard name {name!r}: {why} (give a relative POSIX path such as 'train/000.sseal')")
    return name


def _check_manifest_name(name) -> str:
    """Raises TypeError / ValueError unless name is a plain file name."""
    if not isinstance(name, str):
        raise TypeError(f"manifest_name must be a str, not {type(name).__name__}")
    if _name_problem(name) is not None or "/" in name:
        raise ValueError(f"manifest_name must be a plain file name, got {name!r}")
    return name


def _digest(file, size_hint: int) -> tuple[int, str]:
    """(bytes read, SHA-256 hex) of a binary file from its current position to its end.

    size_hint (the expected size) keeps the buffer small for small files: verifying many
    small shards must not allocate a full block for each.
    """
    sha = hashlib.sha256()
    buffer = bytearray(min(_files.FILE_BLOCK_SIZE, size_hint + 1))
    view = memoryview(buffer)
    total = 0
    while True:
        n = file.readinto(buffer)
        if not n:
            return total, sha.hexdigest()
        sha.update(view[:n])
        total += n


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


class _DigestingFile:
    """Wraps the file an EncryptingWriter writes to and hashes exactly the bytes it accepts,
    so that a shard's digest is that of the bytes written, without reading the file back."""

    def __init__(self, file) -> None:
        self._file = file
        self._sha = hashlib.sha256()
        self.size = 0

    def write(self, data) -> Optional[int]:
        written = self._file.write(data)
        if written:
            self._sha.update(memoryview(data).cast("B")[:written])
            self.size += written
        return written

    def flush(self) -> None:
        self._file.flush()

    def hexdigest(self) -> str:
        return self._sha.hexdigest()


# --------------------------------------------------------------------------------------
# The manifest's plaintext


@dataclass
class _Document:
    """The manifest plaintext, parsed."""

    key: bytes
    shards: dict  # name -> ShardInfo
    created: str
    updated: str


def _encode_document(key: bytes, shards: Mapping[str, ShardInfo], created: str, updated: str) -> bytes:
    return _container.canonical_json({
        "format": FORMAT,
        "dataset_key": base64.b64encode(key).decode("ascii"),
        "dataset_key_id": _direct.key_id(key).hex(),
        "shards": [{"name": s.name, "size": s.size, "sha256": s.sha256}
                   for s in sorted(shards.values(), key=lambda s: s.name)],
        "created": created,
        "updated": updated,
    })


def _parse_document(plaintext: bytes, manifest_name: str) -> _Document:
    """Parses and validates the manifest's plaintext.

    Raises:
        FormatError: anything malformed (see the module docs for the schema).
    """
    document = _parse_canonical_object(plaintext)
    _require_fields(document, _MANIFEST_FIELDS, "the manifest")
    if document["format"] != FORMAT:
        raise FormatError(f"unsupported dataset manifest format {document['format']!r} (this library reads {FORMAT!r})")
    key = _parse_key(document["dataset_key"])
    key_id = document["dataset_key_id"]
    if not isinstance(key_id, str) or not _KEY_ID_HEX.fullmatch(key_id):
        raise FormatError("the manifest's dataset_key_id must be 32 lowercase hex digits")
    if key_id != _direct.key_id(key).hex():
        raise FormatError("the manifest's dataset_key_id does not match its dataset_key")
    return _Document(key, _parse_shards(document["shards"], manifest_name),
                     _parse_time(document["created"], "created"), _parse_time(document["updated"], "updated"))


def _parse_canonical_object(plaintext: bytes) -> dict:
    try:
        document = json.loads(plaintext.decode("utf-8"))
        canonical = _container.canonical_json(document) if isinstance(document, dict) else None
    except (UnicodeError, ValueError, TypeError, RecursionError):
        raise FormatError("the dataset manifest is not valid canonical JSON") from None
    if canonical is None:
        raise FormatError("the dataset manifest must be a JSON object")
    if canonical != plaintext:
        raise FormatError("the dataset manifest is not canonical JSON")
    return document


def _require_fields(obj: dict, fields: frozenset, what: str) -> None:
    if set(obj) != fields:
        missing = sorted(fields - set(obj))
        extra = sorted(set(obj) - fields)
        raise FormatError(f"{what} must have exactly the fields {sorted(fields)} (missing {missing}, unknown {extra})")


def _parse_key(text) -> bytes:
    try:
        key = base64.b64decode(text, validate=True) if isinstance(text, str) else None
    except (binascii.Error, ValueError):
        key = None
    if key is None or len(key) != _direct.KEY_SIZE or base64.b64encode(key).decode("ascii") != text:
        raise FormatError(f"the manifest's dataset_key must be {_direct.KEY_SIZE} bytes in canonical base64")
    return key


def _parse_shards(entries, manifest_name: str) -> dict:
    if not isinstance(entries, list):
        raise FormatError("the manifest's shards must be a JSON list")
    shards: dict = {}
    previous = None
    for entry in entries:
        if not isinstance(entry, dict):
            raise FormatError("each shard entry in the manifest must be a JSON object")
        _require_fields(entry, _SHARD_FIELDS, "a shard entry")
        name, size, sha256 = entry["name"], entry["size"], entry["sha256"]
        if not isinstance(name, str) or _name_problem(name) is not None or name == manifest_name:
            raise FormatError(f"the manifest lists an invalid shard name {name!r} "
                              "(names are relative, normalised POSIX paths without '..')")
        if name in shards:
            raise FormatError(f"the manifest lists shard {name!r} twice")
        if previous is not None and name < previous:
            # One plaintext per shard list: writers sort by code point (= UTF-8 byte order).
            raise FormatError(f"the manifest's shards are not sorted by name ({name!r} after {previous!r})")
        previous = name
        if isinstance(size, bool) or not isinstance(size, int) or not 0 <= size <= _MAX_SHARD_SIZE:
            raise FormatError(f"the manifest's size of shard {name!r} is not an integer from 0 to 2^63 - 1")
        if not isinstance(sha256, str) or not _SHA256_HEX.fullmatch(sha256):
            raise FormatError(f"the manifest's sha256 of shard {name!r} is not 64 lowercase hex digits")
        shards[name] = ShardInfo(name, size, sha256)
    return shards


def _parse_time(value, field: str) -> str:
    try:
        valid = isinstance(value, str) and bool(_ISO_TIME.fullmatch(value))
        valid = valid and datetime.datetime.fromisoformat(value).tzinfo is not None
    except ValueError:
        valid = False
    if not valid:
        raise FormatError(f"the manifest's {field} time must be a UTC time like 2024-05-01T12:00:00+00:00")
    return value


# --------------------------------------------------------------------------------------
# Datasets


class _ShardWrite:
    """One shard being written: an atomic temporary file, hashed as written, recorded in the
    dataset when the writer closes cleanly and discarded when it does not."""

    def __init__(self, dataset: Dataset, name: str, path: Path, key: bytes,
                 metadata: Optional[Mapping[str, Any]], threads: Optional[int]) -> None:
        self._dataset = dataset
        self._name = name
        self._atomic = _files.AtomicFile(path)
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

    def __init__(self, *args, **kwargs) -> None:
        raise TypeError("use Dataset.create(folder, recipients=...) or Dataset.open(folder, identities=...)")

    # ---- construction -----------------------------------------------------------------

    @classmethod
    def create(cls, folder: PathLike, *, recipients, manifest_name: str = MANIFEST_NAME,
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
        manifest_path = folder / _check_manifest_name(manifest_name)
        _buffers.thread_count(threads)
        if manifest_path.exists():
            raise FileExistsError(errno.EEXIST, "a dataset manifest already exists (open it instead)",
                                  str(manifest_path))
        header_metadata = _blob.header_metadata(None, {"content_type": CONTENT_TYPE})
        plan = _blob.plan_header(None, recipients, MANIFEST_SUITE, header_metadata)
        folder.mkdir(parents=True, exist_ok=True)
        now = _now()
        dataset = cls._build(manifest_path, threads, suite=MANIFEST_SUITE, fixed=plan.fixed,
                             header=plan.header, input_key=plan.input_key,
                             document=_Document(os.urandom(_direct.KEY_SIZE), {}, now, now))
        dataset._dirty = True
        try:
            dataset.save()
        except BaseException:
            dataset.close()
            raise
        audit.record("dataset_create", dataset_key_id=dataset.key_id)
        return dataset

    @classmethod
    def open(cls, folder: PathLike, *, identities, manifest_name: str = MANIFEST_NAME,
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
        manifest_name = _check_manifest_name(manifest_name)
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
            document = _parse_document(plaintext, manifest_name)
            dataset = cls._build(manifest_path, threads, suite=header.suite, fixed=header.fixed,
                                 header=blob[:header.size], input_key=input_key, document=document)
            dataset._disk_digest = hashlib.sha256(blob).hexdigest()
            audit.record("dataset_open", dataset_key_id=dataset.key_id, shards=len(document.shards))
        return dataset

    @classmethod
    def _build(cls, manifest_path: Path, threads: Optional[int], *, suite: int, fixed: bytes,
               header: bytes, input_key: bytes, document: _Document) -> Dataset:
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
        self._writes: set = set()
        self._dirty = False
        self._closed = False
        self._disk_digest: Optional[str] = None  # of the manifest file as last read or written
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

    def shard_paths(self) -> list:
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

    def __reduce__(self):
        raise TypeError("a shardseal Dataset holds the dataset key and is not picklable; "
                        "pass the folder and open it again in the other process")

    # ---- shards -----------------------------------------------------------------------

    def open_shard(self, name: str, mode: str = "rb", *, metadata: Optional[Mapping[str, Any]] = None,
                   threads: Optional[int] = None, verify: bool = False):
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

    def _write_shard(self, name: str, metadata, threads) -> EncryptingWriter:
        name = _check_shard_name(name, self._manifest_path.name)
        key = self.key
        path = self._path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        write = _ShardWrite(self, name, path, key, metadata, threads)
        with self._lock:
            self._writes.add(write)
        return write.writer

    def _read_shard(self, name: str, threads, verify: bool) -> DecryptingReader:
        name = _check_shard_name(name, self._manifest_path.name)
        key = self.key
        info = self._listed(name)
        raw = builtins.open(self._path(name), "rb")
        try:
            size = os.fstat(raw.fileno()).st_size
            if size != info.size:
                raise ShardMismatchError(f"shard {name!r} is {size} bytes but the manifest records "
                                         f"{info.size}: it was replaced, rolled back or altered")
            if verify:
                if _digest(raw, size)[1] != info.sha256:
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
        name = _check_shard_name(name, self._manifest_path.name)
        key = self.key
        with builtins.open(self._path(name), "rb") as raw:
            try:
                DecryptingReader(raw, key, threads=1).close()  # header, key id and commitment
            except KeyNotFoundError as exc:
                raise KeyNotFoundError(f"shard {name!r} is not encrypted under this dataset's key "
                                       f"(key id {self._key_id})", exc.key_ids) from None
            size = raw.seek(0, os.SEEK_END)
            raw.seek(0)
            size, sha256 = _digest(raw, size)
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
        _check_shard_name(info.name, self._manifest_path.name)
        if isinstance(info.size, bool) or not isinstance(info.size, int) or not 0 <= info.size <= _MAX_SHARD_SIZE:
            raise ValueError(f"shard {info.name!r}: size must be an integer from 0 to 2^63 - 1")
        if not isinstance(info.sha256, str) or not _SHA256_HEX.fullmatch(info.sha256):
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
        name = _check_shard_name(name, self._manifest_path.name)
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
            updated = _now()
            plaintext = _encode_document(bytes(self._key), self._shards, self._created, updated)
            # The folder lock makes the check and the replace one step for other writers and
            # for key rotation, which takes the same lock.
            with audit.target(self._manifest_path), _files.folder_lock(self._manifest_path.parent):
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
        atomic = _files.AtomicFile(self._manifest_path)
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
            problem, hashed = self._check_shard(info, key)
            bytes_checked += hashed
            if problem is not None:
                problems.append(problem)
        problems.extend(self._unlisted({info.name for info in shards}))
        report = VerifyReport(tuple(problems), len(shards), bytes_checked, deep)
        with audit.target(self._manifest_path):
            audit.record("verify", ok=report.ok, problems=len(problems), shards=len(shards), deep=deep)
        return report

    def _check_shard(self, info: ShardInfo, key: Optional[bytes]) -> tuple[Optional[Problem], int]:
        """(the problem found or None, bytes hashed) for one listed shard."""
        def problem(kind: str, detail: str) -> Problem:
            return Problem(info.name, kind, detail)

        try:
            raw = builtins.open(self._path(info.name), "rb")
        except (FileNotFoundError, NotADirectoryError):
            return problem(MISSING, "the file does not exist"), 0
        except IsADirectoryError:
            return problem(MISSING, "a folder has the shard's name"), 0
        except OSError as exc:
            return problem(UNREADABLE, f"cannot be read: {exc.strerror or exc}"), 0
        with raw:
            size = os.fstat(raw.fileno()).st_size
            if size != info.size:
                return problem(MODIFIED, f"{size} bytes, the manifest records {info.size}"), 0
            try:
                hashed, sha256 = _digest(raw, size)
            except OSError as exc:
                return problem(UNREADABLE, f"cannot be read: {exc.strerror or exc}"), 0
            if sha256 != info.sha256:
                return problem(MODIFIED, "its SHA-256 differs from the manifest's (replaced, swapped "
                                         "with another shard, rolled back or altered)"), hashed
            if key is not None:
                raw.seek(0)
                failure = _decrypt_fully(raw, key, self._threads)
                if failure is not None:
                    return problem(CORRUPT, failure), hashed
        return None, hashed

    def _unlisted(self, listed: set) -> Iterator[Problem]:
        for root, folders, files in os.walk(self.folder):
            folders.sort()
            for file_name in sorted(files):
                if not file_name.endswith(SHARD_SUFFIX):
                    continue
                name = Path(root, file_name).relative_to(self.folder).as_posix()
                if name != self._manifest_path.name and name not in listed:
                    yield Problem(name, UNLISTED, "an encrypted file the manifest does not list")

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

    def __exit__(self, exc_type, exc, tb) -> None:
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


def _decrypt_fully(raw, key: bytes, threads: Optional[int]) -> Optional[str]:
    """Decrypts a whole shard, discarding the plaintext; returns why it failed, or None."""
    buffer = bytearray(0)
    try:
        with DecryptingReader(raw, key, threads=threads) as reader:
            buffer = bytearray(min(_files.FILE_BLOCK_SIZE, reader.size + 1))
            while reader.readinto(buffer):
                pass
    except ShardsealError as exc:
        return f"does not decrypt under the dataset key: {type(exc).__name__}: {exc}"
    finally:
        buffer[:] = bytes(len(buffer))  # plaintext
    return None


def verify(folder: PathLike, *, identities, deep: bool = False, manifest_name: str = MANIFEST_NAME,
           threads: Optional[int] = None) -> VerifyReport:
    """Opens a dataset and checks its folder against its manifest (see ``Dataset.verify``).

    Raises:
        As ``Dataset.open``: the manifest itself cannot be opened or is not valid.
    """
    dataset = Dataset.open(folder, identities=identities, manifest_name=manifest_name, threads=threads)
    try:
        return dataset.verify(deep=deep)
    finally:
        dataset.close()


class DatasetKey(KeyRef):
    """The dataset key in a dataset folder's manifest, unwrapped when resolved.

    Each process opens the manifest with the identity itself, so nothing secret is pickled:
    the reference pickles as its folder, identity string and manifest name. Relative paths are
    made absolute when the reference is created.

    Args:
        folder: the dataset folder (holding ``manifest.sseal``).
        identity: what opens the manifest, an identity string (``keys.registry``) that holds no
            secret: the path of a key file, keyring file or X25519 identity file,
            ``keyring:PATH``, ``pkcs11:token=...;object=...`` (module and PIN from the
            environment) or ``aws-kms[:KEY]``.
        manifest_name: the manifest's file name in the folder.

    Raises:
        TypeError: folder or identity is not a str or path.
        ValueError: identity is a secret (an X25519 identity string), not where one is.
    """

    __slots__ = ("folder", "identity", "manifest_name")

    def __init__(self, folder: PathLike, identity: PathLike, manifest_name: str = "manifest.sseal") -> None:
        if not isinstance(folder, (str, os.PathLike)) or not isinstance(identity, (str, os.PathLike)):
            raise TypeError("DatasetKey takes a folder path and an identity path or URI")
        self.folder = os.path.abspath(os.fspath(folder))
        # Paths made absolute; a secret (an X25519 identity string) refused: this pickles.
        self.identity = _registry.IdentityRef(identity).to_string()
        self.manifest_name = manifest_name

    def resolve(self) -> bytes:
        """Opens the manifest with the identity and returns the dataset key.

        Raises:
            OSError: the manifest or identity file cannot be read.
            ValueError: the identity string names nothing usable.
            ShardsealError: the identity does not open the manifest, or it was tampered with.
        """
        identity = _registry.parse_identity(self.identity)
        with Dataset.open(self.folder, identities=[identity],
                                   manifest_name=self.manifest_name) as dataset:
            return dataset.key

    def __repr__(self) -> str:
        return f"DatasetKey({self.folder!r}, {self.identity!r})"

    def __eq__(self, other) -> bool:
        return isinstance(other, DatasetKey) and (self.folder, self.identity, self.manifest_name) == (
            other.folder, other.identity, other.manifest_name)

    def __hash__(self) -> int:
        return hash((DatasetKey, self.folder, self.identity, self.manifest_name))

    def __reduce__(self):
        return (DatasetKey, (self.folder, self.identity, self.manifest_name))
