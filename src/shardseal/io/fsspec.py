"""An fsspec filesystem that reads and writes shardseal containers on any fsspec backend.

``SealFileSystem`` (protocol ``sseal``) wraps another fsspec filesystem, the *target*, the way
fsspec's caching filesystems do: files opened through it are decrypted on read and encrypted
on write, everything else (listing, ``info``, deleting, copying) goes straight to the target.

    >>> import fsspec, shardseal
    >>> key = shardseal.generate_key()
    >>> with fsspec.open("sseal::memory://bucket/x.sseal", "wb", sseal={"key": key}) as f:
    ...     _ = f.write(b"weights")
    >>> with fsspec.open("sseal::memory://bucket/x.sseal", "rb", sseal={"key": key}) as f:
    ...     f.read()
    b'weights'

A write interrupted by an exception (in ``fsspec.open``'s ``with`` block too, which closes the
file without passing the exception on) or by garbage collection never completes its container:
the incomplete one is removed from the target (see ``shardseal.EncryptingWriter``).

Reads are random access on any seekable target: only the 16 KiB chunks a read touches are
fetched (over HTTP or object storage, as range requests) and authenticated. Sizes reported by
``ls``/``info``/``size`` are those of the stored ciphertext; an opened reader's ``size`` is the
plaintext size.

Installed with ``pip install "shardseal[fsspec]"``; fsspec finds the ``sseal`` protocol through
the package's ``fsspec.specs`` entry point.
"""

from __future__ import annotations

import contextlib
import io
from datetime import datetime
from typing import Any, Literal, Mapping, Optional, Protocol, Union, cast, overload

import fsspec
import fsspec.core
from fsspec import AbstractFileSystem

from ..core import buffers as _buffers
from ..keys import direct as _direct, registry as _registry
from ..keys.envelope import DirectKey, Identity
from ..keys.keyref import ENV_PREFIX, KEYFILE_PREFIX, KeyLike, KeyRef, is_key_ref, parse_key_ref, resolve_reference
from ..keys.registry import Identities, Recipients
from .. import _redact
from ..container.blob import encrypted_size
from .stream import DEFAULT_CACHE_CHUNKS, DecryptingReader, EncryptingWriter

try:  # fsspec >= 2025.10: chained URLs hand the target path to ChainedFileSystem subclasses
    from fsspec.implementations.chained import ChainedFileSystem as _Base
except ImportError:  # pragma: no cover - older fsspec
    _Base = AbstractFileSystem

__all__ = ["SealFileSystem", "open_url"]

# Read-ahead of the target's files (fsspec's HTTPFile, S3File, ...) when opened for reading:
# small enough that a random read does not fetch much more than the chunks it needs, large
# enough that small sequential reads do not make a request per 16 KiB chunk.
DEFAULT_READ_BLOCK_SIZE = 2**20
# fsspec's "readahead" cache fetches only what it lacks when a read runs past it; the usual
# "bytes" cache fetches a read larger than its block again from the start (25% more traffic
# for whole-file reads, 2x for sequential 64 KiB reads, with 1 MiB blocks).
DEFAULT_READ_CACHE_TYPE = "readahead"

_WRITE_MODES = ("wb", "xb")


# -- what this module uses of fsspec's objects (fsspec has no type information) ---------------


class _TargetFile(Protocol):
    """A file opened on the target filesystem (fsspec's ``AbstractBufferedFile`` and kin)."""

    def read(self, size: int = -1) -> bytes: ...

    def seekable(self) -> bool: ...

    def tell(self) -> int: ...

    def seek(self, offset: int, whence: int = 0) -> int: ...

    def close(self) -> None: ...


class _PathStripper(Protocol):
    """``_strip_protocol``: one path, or a list of them."""

    @overload
    def __call__(self, path: str) -> str: ...

    @overload
    def __call__(self, path: list[str]) -> list[str]: ...


class _TargetFileSystem(Protocol):
    """The target filesystem: the parts of ``fsspec.AbstractFileSystem`` used here."""

    protocol: Union[str, tuple[str, ...]]

    def open(self, path: str, mode: str = "rb", block_size: Optional[int] = None,
             cache_options: Optional[dict[str, Any]] = None, **kwargs: Any) -> _TargetFile: ...

    def unstrip_protocol(self, name: str) -> str: ...

    def _strip_protocol(self, path: str) -> str: ...

    def _parent(self, path: str) -> str: ...

    def ls(self, path: str, detail: bool = True, **kwargs: Any) -> list[Any]: ...

    def info(self, path: str, **kwargs: Any) -> dict[str, Any]: ...

    def exists(self, path: str, **kwargs: Any) -> bool: ...

    def isdir(self, path: str) -> bool: ...

    def isfile(self, path: str) -> bool: ...

    def find(self, path: str, maxdepth: Optional[int] = None, withdirs: bool = False,
             detail: bool = False, **kwargs: Any) -> Union[list[str], dict[str, dict[str, Any]]]: ...

    def glob(self, path: str, maxdepth: Optional[int] = None,
             **kwargs: Any) -> Union[list[str], dict[str, dict[str, Any]]]: ...

    def mkdir(self, path: str, create_parents: bool = True, **kwargs: Any) -> None: ...

    def makedirs(self, path: str, exist_ok: bool = False) -> None: ...

    def rmdir(self, path: str) -> None: ...

    def rm_file(self, path: str) -> None: ...

    def rm(self, path: Union[str, list[str]], recursive: bool = False,
           maxdepth: Optional[int] = None) -> None: ...

    def cp_file(self, path1: str, path2: str, **kwargs: Any) -> None: ...

    def mv(self, path1: Union[str, list[str]], path2: str, recursive: bool = False,
           maxdepth: Optional[int] = None, **kwargs: Any) -> None: ...

    def modified(self, path: str) -> datetime: ...

    def created(self, path: str) -> datetime: ...

    def ukey(self, path: str) -> str: ...

    def invalidate_cache(self, path: Optional[str] = None) -> None: ...


# fsspec has no type information: to mypy its metaclass, and so this subclass, is dynamic.
class _KeyedFileSystemType(type(AbstractFileSystem)):  # type: ignore[misc]
    """Keeps the raw key out of what fsspec records about a filesystem.

    fsspec's metaclass derives the instance token (``_fs_token``, ``__hash__``, dask's
    tokenize) from the constructor arguments and stores them as ``storage_options``. Here a raw
    ``key=`` is taken out first and replaced by its public key id, and the key itself is handed
    to the new instance only. A key reference carries no secret: it stays in the arguments
    (its repr, a path or a variable's name, goes into the token), so the filesystem pickles.
    """

    def __call__(cls, *args: Any, **kwargs: Any) -> SealFileSystem:
        kwargs.pop("key_id", None)  # only ever derived from a raw key
        kwargs.pop("identity_ids", None)  # only ever derived from loaded identities
        if isinstance(kwargs.get("key"), str) and kwargs["key"].startswith((KEYFILE_PREFIX, ENV_PREFIX)):
            kwargs["key"] = parse_key_ref(kwargs["key"])  # a reference's string form (from_json)
        loaded = _split_identities(kwargs)
        fs: SealFileSystem
        if is_key_ref(kwargs.get("key")):
            fs = super().__call__(*args, **kwargs)
            fs._key = None
            fs._identities = loaded
            return fs
        key = kwargs.pop("key", None)
        if key is not None:
            key = _direct.check_key(key)
            kwargs["key_id"] = _direct.key_id(key).hex()
        fs = super().__call__(*args, **kwargs)
        fs._key = key
        fs._identities = loaded
        return fs


def _split_identities(kwargs: dict[str, Any]) -> Optional[tuple[Identity, ...]]:
    """Takes loaded identities out of kwargs (like a raw key: replaced by their public ids)
    and returns them; identity strings and references stay, as ``IdentityRef`` objects.

    Raises:
        TypeError: an identity that is not an Identity, an identity string or an IdentityRef.
        ValueError: an identity string that is a secret (an X25519 identity string).
    """
    identities = kwargs.get("identities")
    if identities is None:
        return None
    if isinstance(identities, (str, Identity, _registry.IdentityRef)):
        identities = [identities]
    items = list(identities)
    if any(isinstance(i, Identity) for i in items):
        for item in items:
            if not isinstance(item, Identity):
                raise TypeError("give SealFileSystem either loaded identities or identity references "
                                f"(strings, IdentityRef), not both; got {type(item).__name__}")
        kwargs.pop("identities")
        kwargs["identity_ids"] = [key_id for identity in items for key_id in identity.key_ids]
        return tuple(items)
    refs: list[_registry.IdentityRef] = []
    for item in items:
        if isinstance(item, str):
            item = _registry.IdentityRef(item)
        if not isinstance(item, _registry.IdentityRef):
            raise TypeError(f"identities must be Identity objects, identity strings or IdentityRef, "
                            f"not {type(item).__name__}")
        refs.append(item)
    kwargs["identities"] = refs
    return None


# fsspec has no type information: its AbstractFileSystem is Any to mypy.
class SealFileSystem(_Base, metaclass=_KeyedFileSystemType):  # type: ignore[misc]
    """Encrypts and decrypts shardseal containers stored on another fsspec filesystem.

    Usually created by fsspec from a chained URL, with the options for this layer under
    ``sseal``::

        fsspec.open("sseal::s3://bucket/shard-0001.sseal", "rb", sseal={"key": key})
        fsspec.open("sseal::https://host/weights.sseal", "rb", sseal={"key": key})
        fsspec.open("sseal::file:///data/x.sseal", "wb", sseal={"key": key, "metadata": {...}})

    or directly: ``SealFileSystem(target_protocol="s3", target_options={...}, key=key)``, or
    ``SealFileSystem(fs=existing_filesystem, key=key)``.

    ``open(path, "rb")`` returns a ``shardseal.DecryptingReader`` (seek, random access,
    thread-safe ``pread``); ``open(path, "wb")`` returns a ``shardseal.EncryptingWriter``.
    Closing either closes the target's file. Text modes and fsspec's ``compression=`` work on
    top of the plaintext. ``cat``/``pipe``/``get``/``put`` go through ``open``, so they move
    plaintext (``put`` encrypts, ``get`` decrypts); ``ls``, ``info``, ``exists``, ``find``,
    ``glob``, ``rm``, ``mkdir``, ``cp_file`` and ``mv`` act on the stored containers
    unchanged, and the sizes they report are ciphertext sizes.

    A raw key never reaches ``storage_options`` or the fsspec token (they hold its public
    ``key_id``), nor ``repr``; a filesystem that holds a raw key refuses to be pickled or
    serialised (``to_json``, ``to_dict``): create it again where it is needed. Given a key
    *reference* instead (``shardseal.keyref.KeyFile(path)``, ``EnvKey(name)``, a
    ``DatasetKey``), the filesystem keeps the reference, resolves it each time a file is
    opened, in the process that opens it, and pickles (a dask cluster's workers, DataLoader
    workers). ``identities=`` works the same way: identity strings and ``IdentityRef``
    objects (an identity file, ``keyring:PATH``, ``pkcs11:...``, ``aws-kms[:KEY]``) are kept
    and loaded at each open; loaded ``Identity`` objects are held like a raw key (their
    public ids in ``identity_ids``) and refuse pickling. A filesystem holding only references
    serialises to JSON (``to_json``/``from_json``): a key reference as ``keyfile:PATH`` or
    ``env:NAME`` (a ``DatasetKey`` has no string form: pickle it). Instances are not cached
    by fsspec (``cachable = False``).

    Args:
        target_protocol: the target filesystem's protocol (``"file"``, ``"s3"``, ``"https"``,
            ...); give this or ``fs``. With neither, the local filesystem.
        target_options: options for creating the target filesystem.
        fs: an existing target filesystem instead of target_protocol/target_options.
        metadata: JSON metadata written into the header of new containers (authenticated,
            **not secret**); ``open(..., "wb", metadata=...)`` overrides it per file.
        threads: worker threads for long reads and for writing; None uses every CPU.
        suite: the Cobblestone suite of new containers, 256 (default) or 128.
        cache_chunks: decrypted 16 KiB chunks a reader keeps for small reads.
        block_size: read-ahead of the target's files when reading, in bytes (default 1 MiB):
            over HTTP and object stores, how much a range request fetches beyond what a read
            needs. Lower it (e.g. 65536) for small reads at random offsets. 0 asks fsspec's
            HTTP backend for a streaming response: sequential reading only.
        cache_type: the fsspec cache of the target's files when reading (default
            ``"readahead"``); None leaves the target's default, for a backend whose ``open``
            takes no ``cache_type``.
        fo: the target path, filled in by fsspec's URL chaining; used when an older fsspec
            passes an empty path.
        key_id: set from a raw ``key``; any value given is ignored.
        identities: identities to decrypt with (tried after the key, if any): identity strings
            or ``IdentityRef`` objects (kept, loaded at each open, picklable), or loaded
            ``Identity`` objects (taken by the constructor like a raw key).
        identity_ids: set from loaded identities; any value given is ignored.
        key: a key reference (``shardseal.keyref``, or its string ``keyfile:PATH`` /
            ``env:NAME``), kept as it is; a raw key is taken by the
            constructor before ``__init__`` (see below).
        **kwargs: passed to ``fsspec.AbstractFileSystem``.

    Other Parameters:
        key: the raw 32-byte key (bytes-like), taken by the constructor before ``__init__`` (so
            that the instance holds only its key id). Needed to open files; listing, ``info``
            and deleting work without it.

    Raises:
        ValueError: both fs and target_protocol are given; a key of the wrong length.
        TypeError: a key that is not bytes-like (a ``str`` included), or a key that comes
            from fsspec's configuration (``fsspec.config.conf``) rather than ``key=``.
    """

    protocol = "sseal"
    cachable = False
    # fsspec's classmethod on the class; each instance's own (set in __init__) on instances.
    _strip_protocol: _PathStripper
    _key: Optional[bytes] = None
    _identities: Optional[tuple[Identity, ...]] = None

    def __init__(self, target_protocol: Optional[str] = None,
                 target_options: Optional[Mapping[str, Any]] = None,
                 fs: Optional[AbstractFileSystem] = None, *,
                 metadata: Optional[Mapping[str, Any]] = None, threads: Optional[int] = None,
                 suite: int = 256, cache_chunks: int = DEFAULT_CACHE_CHUNKS,
                 block_size: Optional[int] = DEFAULT_READ_BLOCK_SIZE,
                 cache_type: Optional[str] = DEFAULT_READ_CACHE_TYPE, fo: Optional[str] = None,
                 key_id: Optional[str] = None, key: Any = None, identities: Any = None,
                 identity_ids: Optional[list[str]] = None, **kwargs: Any) -> None:
        if key is not None and not is_key_ref(key):
            # A raw key only gets here from fsspec's configuration, past __call__.
            raise TypeError("give SealFileSystem its key as key=, not in fsspec's configuration")
        super().__init__(**kwargs)
        if fs is not None and target_protocol is not None:
            raise ValueError("give either fs or target_protocol, not both")
        if fs is None:
            fs = fsspec.filesystem(target_protocol or "file", **dict(target_options or {}))
        self.fs: _TargetFileSystem = fs
        self.target_protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
        self.key_id = key_id
        self.key_ref: Optional[KeyRef] = key
        self.identity_refs: Optional[tuple[_registry.IdentityRef, ...]] = (
            None if identities is None else tuple(identities))
        self.identity_ids = identity_ids
        self.metadata = metadata
        self.threads = threads
        self.suite = suite
        self.cache_chunks = cache_chunks
        self.block_size = block_size
        self.cache_type = cache_type
        self._fo = fo

        # Not @overload here: griffe (the API reference) fails on overloads inside a function.
        def _strip_protocol(path: Union[str, list[str]]) -> Union[str, list[str]]:
            # An instance method, as in fsspec's caching filesystems: paths are the target's.
            if isinstance(path, list):
                return [cast(str, _strip_protocol(p)) for p in path]  # safe: a str gives a str
            path = type(self)._strip_protocol(path)
            if not path and self._fo:  # an older fsspec's chained URL: the target path is fo
                path = self._fo
            return self.fs._strip_protocol(path)

        # Safe: a str path gives a str and a list a list (_PathStripper's two signatures).
        self._strip_protocol = cast(_PathStripper, _strip_protocol)

    # ---- key material -------------------------------------------------------------------

    def __repr__(self) -> str:
        if self.key_ref is not None:
            text = f"SealFileSystem(target_protocol={self.target_protocol!r}, key={self.key_ref!r}"
        else:
            text = f"SealFileSystem(target_protocol={self.target_protocol!r}, key_id={self.key_id!r}"
        if self.identity_refs is not None:
            text += f", identities={list(self.identity_refs)!r}"
        elif self.identity_ids is not None:
            text += f", identity_ids={self.identity_ids!r}"
        return text + ")"

    def __reduce__(self) -> Union[str, tuple[Any, ...]]:
        """Pickles a keyless filesystem or one that holds a key reference (as the reference:
        ``RawKey`` refuses unless created with ``allow_pickle=True``); refuses one that holds a
        raw key.

        Raises:
            TypeError: the filesystem holds a raw key.
        """
        if self._key is not None or self._identities is not None:
            raise TypeError("a SealFileSystem holds key material and cannot be pickled; create "
                            "it again with key= in the other process, or give it key and "
                            "identity references (shardseal.keyref) instead")
        reduced: Union[str, tuple[Any, ...]] = super().__reduce__()
        return reduced

    def to_dict(self, *, include_password: bool = True) -> dict[str, Any]:
        """Serialises a filesystem without key material (also used by ``to_json``): a key
        reference is written as its string (``keyfile:PATH``, ``env:NAME``) and identity
        references as their identity strings; ``fsspec.AbstractFileSystem.from_dict`` (and
        ``from_json``) make the same filesystem again.

        Raises:
            TypeError: the filesystem holds a raw key or loaded identities, or a key reference
                with no string form (a ``RawKey``, a ``DatasetKey``: pickle those instead).
        """
        if self._key is not None or self._identities is not None:
            raise TypeError("a SealFileSystem holds key material and cannot be serialised; give "
                            "it key and identity references (shardseal.keyref) instead")
        options = dict(self.storage_options)
        if not include_password:
            options.pop("password", None)
        if self.key_ref is not None:
            options["key"] = _key_ref_string(self.key_ref)
        if self.identity_refs is not None:
            options["identities"] = [ref.to_string() for ref in self.identity_refs]
        from fsspec.json import FilesystemJSONEncoder

        encoder = FilesystemJSONEncoder()
        cls = type(self)
        return dict(cls=f"{cls.__module__}:{cls.__name__}", protocol=self.protocol,
                    args=encoder.make_serializable(self.storage_args),
                    **encoder.make_serializable(options))

    def _identities_to_try(self) -> Optional[list[Identity]]:
        if self._identities is not None:
            return list(self._identities)
        if self.identity_refs is not None:
            return [ref.load() for ref in self.identity_refs]  # at each open, in this process
        return None

    def _require_key(self) -> bytes:
        if self.key_ref is not None:
            return resolve_reference(self.key_ref)  # at each open, in the process that opens
        if self._key is None:
            raise TypeError("opening a file needs a key: create the SealFileSystem with key=")
        return self._key

    def _optional_key(self) -> Optional[bytes]:
        if self.key_ref is None and self._key is None:
            return None
        return self._require_key()

    # ---- files --------------------------------------------------------------------------

    def _open(self, path: str, mode: str = "rb", block_size: Optional[int] = None, autocommit: bool = True,
              cache_options: Optional[dict[str, Any]] = None,
              **kwargs: Any) -> Union[DecryptingReader, EncryptingWriter]:
        """Opens a container on the target filesystem.

        Args:
            path: the path on the target filesystem.
            mode: ``"rb"`` (decrypt) or ``"wb"``/``"xb"`` (encrypt).
            block_size: the target file's block size; reads default to the filesystem's
                ``block_size`` (read-ahead), writes to the target's default.
            autocommit: False inside a transaction: the target file is committed or
                discarded with it.
            cache_options: passed to the target's ``open`` when reading.
            **kwargs: ``threads``, ``cache_chunks``, ``cache_type`` (reading), ``metadata``,
                ``suite`` (writing) override the filesystem's; the rest go to the target's
                ``open``.

        Returns:
            A ``shardseal.DecryptingReader`` or a ``shardseal.EncryptingWriter`` that closes
            the target file when it is closed. The reader has random access when the target
            file can seek (to its end included); otherwise it reads sequentially.

        Raises:
            ValueError: an unsupported mode (appending, updating), an unknown suite, a bad
                thread count.
            TypeError: the filesystem has no key; metadata that is not a JSON mapping.
            OSError, KeyFileError: a key reference that cannot be resolved.
            FormatError, KeyNotFoundError, AuthenticationError, TruncatedError: reading a
                file that is not a container this key opens (checked here, before any read).
        """
        threads = kwargs.pop("threads", self.threads)
        if mode == "rb":
            identities = self._identities_to_try()
            key = self._require_key() if identities is None else self._optional_key()
            cache_chunks = kwargs.pop("cache_chunks", self.cache_chunks)
            if block_size is None:
                block_size = self.block_size
            if self.cache_type is not None:
                kwargs.setdefault("cache_type", self.cache_type)
            raw = self.fs.open(path, "rb", block_size=block_size, cache_options=cache_options,
                               **kwargs)
            return _reader_over(raw, key, identities=identities, threads=threads, cache_chunks=cache_chunks)
        if mode in _WRITE_MODES:
            key = self._require_key()
            metadata = kwargs.pop("metadata", self.metadata)
            suite = kwargs.pop("suite", self.suite)
            # Bad options fail here, before "wb" truncates an existing file.
            encrypted_size(0, metadata=metadata, suite=suite)
            _buffers.thread_count(threads)
            raw = self.fs.open(path, mode, block_size=block_size, autocommit=autocommit, **kwargs)
            return _TargetWriter(raw, key, fs=self.fs, path=path, autocommit=autocommit,
                                 metadata=metadata, threads=threads, suite=suite)
        raise ValueError(f"sseal files open in 'rb', 'wb' or 'xb' (or text 'r', 'w'), not {_redact.shown(mode)}")

    # ---- everything else is the target's (the same paths, sizes of the ciphertext) ---------

    def unstrip_protocol(self, name: str) -> str:
        """The chained URL of a path: ``sseal::`` and the target's URL."""
        return "sseal::" + self.fs.unstrip_protocol(name)

    def _parent(self, path: str) -> str:
        return self.fs._parent(self._strip_protocol(path))

    def ls(self, path: str, detail: bool = True, **kwargs: Any) -> list[Any]:
        """Lists the target (sizes are ciphertext sizes)."""
        return self.fs.ls(self._strip_protocol(path), detail=detail, **kwargs)

    def info(self, path: str, **kwargs: Any) -> dict[str, Any]:
        """The target's details of path (its ``size`` is the ciphertext size)."""
        return self.fs.info(self._strip_protocol(path), **kwargs)

    def exists(self, path: str, **kwargs: Any) -> bool:
        return self.fs.exists(self._strip_protocol(path), **kwargs)

    def isdir(self, path: str) -> bool:
        return self.fs.isdir(self._strip_protocol(path))

    def isfile(self, path: str) -> bool:
        return self.fs.isfile(self._strip_protocol(path))

    def find(self, path: str, maxdepth: Optional[int] = None, withdirs: bool = False, detail: bool = False,
             **kwargs: Any) -> Union[list[str], dict[str, dict[str, Any]]]:
        return self.fs.find(self._strip_protocol(path), maxdepth=maxdepth, withdirs=withdirs,
                            detail=detail, **kwargs)

    def glob(self, path: str, maxdepth: Optional[int] = None,
             **kwargs: Any) -> Union[list[str], dict[str, dict[str, Any]]]:
        return self.fs.glob(self._strip_protocol(path), maxdepth=maxdepth, **kwargs)

    def mkdir(self, path: str, create_parents: bool = True, **kwargs: Any) -> None:
        return self.fs.mkdir(self._strip_protocol(path), create_parents=create_parents, **kwargs)

    def makedirs(self, path: str, exist_ok: bool = False) -> None:
        return self.fs.makedirs(self._strip_protocol(path), exist_ok=exist_ok)

    def rmdir(self, path: str) -> None:
        return self.fs.rmdir(self._strip_protocol(path))

    def rm_file(self, path: str) -> None:
        return self.fs.rm_file(self._strip_protocol(path))

    def rm(self, path: Union[str, list[str]], recursive: bool = False, maxdepth: Optional[int] = None) -> None:
        return self.fs.rm(self._strip_protocol(path), recursive=recursive, maxdepth=maxdepth)

    def cp_file(self, path1: str, path2: str, **kwargs: Any) -> None:
        """Copies a container as it is (a container does not depend on its path)."""
        return self.fs.cp_file(self._strip_protocol(path1), self._strip_protocol(path2),
                               **kwargs)

    def mv(self, path1: Union[str, list[str]], path2: str, recursive: bool = False,
           maxdepth: Optional[int] = None, **kwargs: Any) -> None:
        return self.fs.mv(self._strip_protocol(path1), self._strip_protocol(path2),
                          recursive=recursive, maxdepth=maxdepth, **kwargs)

    def modified(self, path: str) -> datetime:
        return self.fs.modified(self._strip_protocol(path))

    def created(self, path: str) -> datetime:
        return self.fs.created(self._strip_protocol(path))

    def ukey(self, path: str) -> str:
        return self.fs.ukey(self._strip_protocol(path))

    def invalidate_cache(self, path: Optional[str] = None) -> None:
        return self.fs.invalidate_cache(None if path is None else self._strip_protocol(path))


def _key_ref_string(key_ref: Any) -> str:
    to_string = getattr(key_ref, "to_string", None)
    if to_string is None:
        raise TypeError(f"a SealFileSystem with a {type(key_ref).__name__} key reference is not "
                        "serialised to JSON (it has no string form); pickle it instead")
    text: str = to_string()  # a RawKey raises TypeError, without the key
    return text


@overload
def open_url(url: str, mode: Literal["rb"] = "rb", *, key: Optional[KeyLike] = None,
             recipients: Optional[Recipients] = None, identities: Optional[Identities] = None,
             threads: Optional[int] = None, metadata: Optional[Mapping[str, Any]] = None,
             storage_options: Optional[Mapping[str, Any]] = None) -> DecryptingReader: ...


@overload
def open_url(url: str, mode: Literal["wb"], *, key: Optional[KeyLike] = None,
             recipients: Optional[Recipients] = None, identities: Optional[Identities] = None,
             threads: Optional[int] = None, metadata: Optional[Mapping[str, Any]] = None,
             storage_options: Optional[Mapping[str, Any]] = None) -> EncryptingWriter: ...


@overload
def open_url(url: str, mode: str = "rb", *, key: Optional[KeyLike] = None,
             recipients: Optional[Recipients] = None, identities: Optional[Identities] = None,
             threads: Optional[int] = None, metadata: Optional[Mapping[str, Any]] = None,
             storage_options: Optional[Mapping[str, Any]] = None) -> Union[DecryptingReader, EncryptingWriter]: ...


def open_url(url: str, mode: str = "rb", *, key: Optional[KeyLike] = None,
             recipients: Optional[Recipients] = None, identities: Optional[Identities] = None,
             threads: Optional[int] = None, metadata: Optional[Mapping[str, Any]] = None,
             storage_options: Optional[Mapping[str, Any]] = None) -> Union[DecryptingReader, EncryptingWriter]:
    """Opens the container at an fsspec URL with a key, recipients or identities.

    ``sseal::memory://x.sseal`` and ``memory://x.sseal`` name the same container: the
    ``sseal::`` prefix is optional here. Reads are random access on a seekable target, with
    this filesystem's read defaults (1 MiB read-ahead, fsspec's ``readahead`` cache), so a read
    moves only the chunks it touches (as range requests over HTTP and object storage). Used by
    ``shardseal.safetensors`` and ``shardseal.checkpoint`` for URLs.

    Args:
        url: an fsspec URL, chained URLs included (``simplecache::s3://...``).
        mode: ``"rb"`` or ``"wb"``.
        key: the 32-byte key or a key reference.
        recipients: ``"wb"``: envelope encryption for these recipients instead of key.
        identities: ``"rb"``: identities to try after key.
        threads: worker threads; None uses every CPU.
        metadata: ``"wb"``: JSON metadata for the header (authenticated, not secret).
        storage_options: options of the target filesystem (``fsspec.core.url_to_fs``'s).

    Returns:
        A ``DecryptingReader`` or an ``EncryptingWriter`` that closes the target file; an
        interrupted writer removes its incomplete container.

    Raises:
        ValueError: a mode other than "rb" or "wb".
        TypeError: no key (or recipients, identities) for the mode.
        FormatError, KeyNotFoundError, AuthenticationError, TruncatedError: reading a file that
            is not a container this key opens.
    """
    if url.startswith("sseal::"):
        url = url[len("sseal::"):]
    fs, path = fsspec.core.url_to_fs(url, **dict(storage_options or {}))
    if mode == "rb":
        if recipients is not None:
            raise TypeError("recipients= is for writing; give key= or identities= to read")
        if key is None and identities is None:
            raise TypeError("reading needs key= or identities=")
        raw = fs.open(path, "rb", block_size=DEFAULT_READ_BLOCK_SIZE, cache_type=DEFAULT_READ_CACHE_TYPE)
        return _reader_over(raw, key, identities=identities, threads=threads)
    if mode == "wb":
        if identities is not None:
            raise TypeError("identities= is for reading; give key= or recipients= to write")
        if key is None and recipients is None:
            raise TypeError("writing needs key= or recipients=")
        _buffers.thread_count(threads)
        raw = fs.open(path, "wb")
        return _TargetWriter(raw, key, fs=fs, path=path, autocommit=True, recipients=recipients,
                             metadata=metadata, threads=threads)
    raise ValueError(f"mode must be 'rb' or 'wb', not {_redact.shown(mode)}")


def _reader_over(raw: _TargetFile, key: Union[KeyLike, DirectKey, None], *,
                 identities: Optional[Identities] = None, threads: Optional[int] = None,
                 cache_chunks: int = DEFAULT_CACHE_CHUNKS) -> DecryptingReader:
    """A reader over a target file it closes: random access when the file seeks to its end."""
    try:
        seekable = _can_seek(raw)
    except BaseException:
        raw.close()
        raise
    source: Union[_TargetFile, _Sequential] = raw if seekable else _Sequential(raw)
    return DecryptingReader(source, key, identities=identities, threads=threads,
                            cache_chunks=cache_chunks, close_raw=True)


def _can_seek(raw: _TargetFile) -> bool:
    """Whether raw seeks, to its end included (a streaming HTTP response says it is seekable
    but seeks nowhere)."""
    try:
        if not raw.seekable():
            return False
        here = raw.tell()
        raw.seek(0, io.SEEK_END)
        raw.seek(here)
        return True
    except (AttributeError, ValueError, OSError):  # io.UnsupportedOperation is both
        return False


class _Sequential:
    """A target file read front to back only: the reader decrypts it as a stream."""

    def __init__(self, raw: _TargetFile) -> None:
        self._raw = raw

    def seekable(self) -> bool:
        return False

    def read(self, size: int = -1) -> bytes:
        return self._raw.read(size)

    def close(self) -> None:
        self._raw.close()


class _TargetWriter(EncryptingWriter):
    """An EncryptingWriter over a file it opened on the target filesystem.

    Completing the container (``close`` after a clean write, ``finish``) closes the target
    file. An aborted writer (an exception in its ``with`` block or in ``fsspec.open``'s,
    ``abort()``, garbage collection before ``close``: see ``EncryptingWriter``) removes its
    incomplete container when it was auto-committed, or discards the target's temporary file
    inside a transaction (best effort: errors there are not raised over the original one). A
    target that keeps what it was given (``memory://`` inside a transaction) is left holding
    an incomplete container that fails to decrypt with ``TruncatedError``.
    ``commit``/``discard`` make it usable in an fsspec transaction.
    """

    def __init__(self, raw: _TargetFile, key: Optional[KeyLike], *, fs: _TargetFileSystem, path: str,
                 autocommit: bool, **kwargs: Any) -> None:
        self._target_fs = fs
        self._target_path = path
        self._autocommit = autocommit
        self._aborted = False
        super().__init__(raw, key, on_close=raw.close, on_abort=self._discard_target, **kwargs)

    def _discard_target(self) -> None:
        self._aborted = True
        raw = self._raw
        with contextlib.suppress(Exception):
            raw.close()
        if self._autocommit:
            with contextlib.suppress(Exception):
                self._target_fs.rm_file(self._target_path)
        else:
            with contextlib.suppress(Exception):
                raw.discard()

    def commit(self) -> None:
        """Transaction end: completes the container if still open, commits the target file
        (an aborted writer has nothing to commit).

        fsspec commits only a transaction whose block ended without an exception, so a writer
        still open here is completed as ``finish`` would.

        Raises:
            OSError: the final write, or the target's commit, failed.
        """
        if not self.closed:
            self.finish()
        if not self._aborted:
            self._raw.commit()

    def discard(self) -> None:
        """Transaction failure: throws the container away."""
        if not self._aborted:
            if self.closed:
                self._discard_target()
            else:
                self._abort()
