"""Rotating one file: the checked arguments of a rotation, the plan of a file's stanza
changes, and the rewrite of its key block (in place under a journal, or by copy) or of the
whole file (re-encryption).
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Optional, Protocol, Sequence, Union, cast

from ..container import blob as _blob, header as _container
from ..core import backend as _backend, buffers as _buffers, layout as _layout
from ..keys import envelope as _envelope, direct as _direct, registry as _registry, stanzas as _stanzas
from . import _journal
from ._descriptors import copy_range, pread_exact, pwrite_all, write_all
from ._rotation_files import TEMP_SUFFIX, journal_path
from ..container.header import Header
from ..keys.direct import RawKeyLike
from ..keys.envelope import DirectKey, Identity, Recipient, WrapContext
from ..keys.stanzas import Stanza
from .._atomic import AtomicFile, fsync_folder
from ..io.files import copy_blocks
from ..io.stream import DecryptingReader
from ..errors import TruncatedError

PADDING_HEAD = 6  # a stanza's type and body length
MESSAGE_HEAD = _layout.MESSAGE_HEADER_SIZE  # salt || commitment

# A parsed container: (header, salt || commitment, file size).
Parsed = tuple[Header, bytes, int]


def no_checkpoint(step: str) -> None:
    """rotate()'s checkpoint when the caller gives none."""


@dataclass(frozen=True)
class Request:
    """The validated arguments of one rotate() call."""

    identities: tuple[Identity, ...]
    add: tuple[Recipient, ...]
    remove_ids: frozenset[str]
    recipients: Optional[tuple[Recipient, ...]]
    reencrypt: bool
    threads: int
    dry_run: bool
    checkpoint: Callable[[str], object]

    @classmethod
    def from_arguments(cls, identities: Optional[_registry.Identities],
                       key: Union[RawKeyLike, DirectKey, None], add: object, remove: object,
                       recipients: Optional[_registry.Recipients], reencrypt: bool,
                       threads: Optional[int], dry_run: bool,
                       checkpoint: Optional[Callable[[str], object]] = None) -> Request:
        """Checks rotate()'s arguments.

        Raises:
            TypeError: bad argument types, neither identities nor key, or recipients given
                together with add/remove.
            ValueError: nothing to do, or reencrypt without recipients.
        """
        checked_identities = _registry.check_identities(key, identities)
        added = _recipient_tuple(add, "add")
        remove_ids = _remove_ids(remove)
        wanted: Optional[tuple[Recipient, ...]] = None
        if recipients is not None:
            if added or remove_ids:
                raise TypeError("give recipients= (the complete new set) or add=/remove=, not both")
            wanted = _unique(_registry.check_recipients(recipients))
        elif reencrypt:
            raise ValueError("reencrypt=True wraps a fresh file key for every recipient: "
                             "give the complete new set as recipients=")
        elif not added and not remove_ids:
            raise ValueError("nothing to rotate: give add=, remove= or recipients=")
        add_recipients: tuple[Recipient, ...] = ()
        if added:
            # cast: add= is checked here, not by its type: check_recipients raises TypeError
            # for an item that is neither a Recipient nor a recipient string.
            add_recipients = _unique(_registry.check_recipients(cast(_registry.Recipients, added)))
        if checkpoint is not None and not callable(checkpoint):
            raise TypeError(f"checkpoint must be callable, not {type(checkpoint).__name__}")
        return cls(checked_identities, add_recipients, remove_ids, wanted, bool(reencrypt),
                   _buffers.thread_count(threads), bool(dry_run), checkpoint or no_checkpoint)


def _recipient_tuple(value: object, name: str) -> tuple[object, ...]:
    if value is None:
        return ()
    if isinstance(value, (str, bytes, Recipient)):
        return (value,)
    try:
        # cast: any object may come in; tuple() raising TypeError is the check.
        return tuple(cast(Iterable[object], value))
    except TypeError:
        raise TypeError(f"{name} must be a list of recipients, not {type(value).__name__}") from None


def _remove_ids(remove: object) -> frozenset[str]:
    items = (remove,) if isinstance(remove, (str, Recipient)) else _recipient_tuple(remove, "remove")
    ids = set()
    for item in items:
        if isinstance(item, Recipient):
            ids.add(item.key_id)
        elif isinstance(item, str):
            if not item:
                raise ValueError("remove= holds an empty key id")
            ids.add(item)
        else:
            raise TypeError(f"remove must hold key ids (str) or Recipient objects, "
                            f"not {type(item).__name__}")
    return frozenset(ids)


def _unique(recipients: Iterable[Recipient]) -> tuple[Recipient, ...]:
    """Drops repeated recipients of the same key (a file needs one stanza per key)."""
    seen, result = set(), []
    for recipient in recipients:
        name = (recipient.stanza_type, recipient.key_id)
        if name not in seen:
            seen.add(name)
            result.append(recipient)
    return tuple(result)


# ---- planning ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """How one file's stanzas change: the stanzas kept, the recipients to wrap for."""

    kept: tuple[Stanza, ...]
    add: tuple[Recipient, ...]
    added_ids: tuple[str, ...]
    removed_ids: tuple[str, ...]
    skip_reason: Optional[str] = None


def read_container(fd: int) -> Optional[Parsed]:
    """(header, salt || commitment, file size), or None for a file that is not a container.

    Raises:
        FormatError: a damaged or unsupported container.
        TruncatedError: the file ends inside the header or the message's first 56 bytes.
    """
    size = os.fstat(fd).st_size
    magic = os.pread(fd, len(_container.MAGIC), 0)
    # A file whose magic is mangled but still spells SSEAL is a damaged container: reported,
    # not skipped, so that it is not silently left with its old keys.
    if magic[1:6] != _container.MAGIC[1:6]:
        return None
    position = 0

    def read(n: int) -> bytes:
        nonlocal position
        data = os.pread(fd, n, position)
        position += len(data)
        return data

    header = _container.read_header(read)
    message_head = os.pread(fd, MESSAGE_HEAD, header.size)
    if len(message_head) < MESSAGE_HEAD:
        raise TruncatedError("message truncated: shorter than its salt and commitment")
    return header, message_head, size


def plan_file(header: Header, request: Request) -> Plan:
    """The stanza changes for one file.

    Raises:
        ValueError: the file would be left without a key stanza, or with a passphrase stanza
            beside other key stanzas.
    """
    keyed = [s for s in header.stanzas if s.type != _stanzas.PADDING]
    old_ids = [_stanzas.key_id(s) for s in keyed]
    if request.reencrypt:
        # Request.from_arguments requires recipients= with reencrypt=True.
        recipients = request.recipients or ()
        new_ids = [r.key_id for r in recipients]
        return Plan((), recipients, difference(new_ids, old_ids), difference(old_ids, new_ids))
    if any(s.type == _stanzas.DIRECT for s in keyed):
        return Plan((), (), (), (), "direct-key file: its file key is the caller's own key and "
                                    "is never wrapped for others (use reencrypt=True)")
    if request.recipients is not None:
        wanted = {_name_of(r) for r in request.recipients}
        kept = tuple(s for s in keyed if _stanza_name(s) in wanted)
        candidates = request.recipients
    else:
        kept = tuple(s for s in keyed if _stanzas.key_id(s) not in request.remove_ids)
        candidates = request.add
    present = {_stanza_name(s) for s in kept}
    add = tuple(r for r in candidates if _name_of(r) not in present)
    removed = tuple(_stanzas.key_id(s) for s in keyed if s not in kept)
    _check_new_set(kept, add)
    if not add and not removed:
        return Plan(kept, (), (), (), "already in the requested state")
    return Plan(kept, add, tuple(r.key_id for r in add), removed)


def _name_of(recipient: Recipient) -> tuple[int, object]:
    # Passphrase stanzas all share the key id "passphrase": never treat one as already there.
    if recipient.stanza_type == _stanzas.PASSPHRASE:
        return (_stanzas.PASSPHRASE, object())
    return (recipient.stanza_type, recipient.key_id)


def _stanza_name(stanza: Stanza) -> tuple[int, object]:
    if stanza.type == _stanzas.PASSPHRASE:
        return (_stanzas.PASSPHRASE, None)
    return (stanza.type, _stanzas.key_id(stanza))


def difference(ids: Sequence[str], others: Sequence[str]) -> tuple[str, ...]:
    """The ids not in others, in order, without repeats."""
    return tuple(i for i in dict.fromkeys(ids) if i not in others)


def key_ids(header: bytes) -> list[str]:
    """The key ids of a header's key stanzas (padding left out)."""
    return [_stanzas.key_id(s) for s in _container.parse_header(header).stanzas
            if s.type != _stanzas.PADDING]


def _check_new_set(kept: tuple[Stanza, ...], add: tuple[Recipient, ...]) -> None:
    openable: list[object] = [s for s in kept if s.type in _stanzas.TYPES]
    openable += add
    if not openable:
        raise ValueError("the rotation would remove every key stanza, leaving no key that "
                         "opens the file")
    types = [s.type for s in kept] + [r.stanza_type for r in add]
    if _stanzas.PASSPHRASE in types and len(types) > 1:
        raise ValueError("a passphrase must stay the only key of a file: remove its stanza "
                         "(\"passphrase\") to add other recipients, or the others to add one")


# ---- rewriting one file -----------------------------------------------------------------


@contextlib.contextmanager
def open_file(path: Path, writable: bool) -> Iterator[tuple[int, bool]]:
    """Yields (descriptor, writable?) for path, never through a symbolic link. A file we may
    not write is opened read-only (it can still be rotated by copy).

    Raises:
        OSError: the file cannot be opened, or is not a regular file.
    """
    flags = os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags | (os.O_RDWR if writable else os.O_RDONLY))
    except PermissionError:
        if not writable:
            raise
        fd, writable = os.open(path, flags | os.O_RDONLY), False
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", str(path))
        yield fd, writable
    finally:
        os.close(fd)


def _verified_file_key(header: Header, message_head: bytes, identities: tuple[Identity, ...]) -> bytes:
    """The file key, proven right by the message's commitment.

    Raises:
        KeyNotFoundError: no identity opens a stanza.
        AuthenticationError: the unwrapped key does not match the commitment.
    """
    file_key = _envelope.unwrap_file_key(header, identities)
    _envelope.proven_message_keys(header, file_key, message_head)
    return file_key


def rewrap(path: Path, fd: int, writable: bool, parsed: Parsed, plan: Plan,
           request: Request) -> tuple[bool, int]:
    """Writes the new key block; returns (in place?, bytes written).

    Raises:
        KeyNotFoundError, AuthenticationError: the file key cannot be unwrapped and proven.
        FileExistsError: an unfinished rotation's journal is in the way.
        OSError: the file cannot be written.
    """
    header, message_head, size = parsed
    file_key = _verified_file_key(header, message_head, request.identities)
    old_block_size = header.size - len(header.fixed)
    if request.dry_run:
        new_size = 2 + sum(PADDING_HEAD + len(s.body) for s in plan.kept) + sum(
            _envelope.stanza_size(r, header.suite, header.fixed) for r in plan.add)
        count = len(plan.kept) + len(plan.add)
        return _fits_in_place(new_size, old_block_size, count) and not _read_only(path), 0
    wrapped = _envelope.wrap_for(plan.add, file_key, WrapContext(header.suite, header.fixed))
    block = _new_key_block(list(plan.kept) + wrapped, old_block_size)
    if len(block) == old_block_size and writable:
        journal = _journal.encode(path.name, size, header.fixed,
                                  pread_exact(fd, old_block_size, len(header.fixed)), block,
                                  message_head)
        return True, _write_in_place(path, fd, len(header.fixed), block, journal,
                                     request.checkpoint)
    return False, _write_copy(path, fd, header.size, header.fixed + block, request.checkpoint)


def _read_only(path: Path) -> bool:
    return not os.access(path, os.W_OK, follow_symlinks=False)


def _fits_in_place(new_size: int, old_size: int, count: int) -> bool:
    gap = old_size - new_size
    return gap == 0 or (PADDING_HEAD <= gap <= PADDING_HEAD + _stanzas.MAX_PADDING_SIZE
                        and count < _container.MAX_STANZAS)


def _new_key_block(stanzas: list[Stanza], old_size: int) -> bytes:
    """The encoded key block, padded to old_size when it is at least 6 bytes smaller (so that
    it can be written in place); otherwise as it is."""
    block = _container.encode_key_block(stanzas)
    if len(block) != old_size and _fits_in_place(len(block), old_size, len(stanzas)):
        padding = Stanza(_stanzas.PADDING, bytes(old_size - len(block) - PADDING_HEAD))
        block = _container.encode_key_block(stanzas + [padding])
    return block


def _write_in_place(path: Path, fd: int, fixed_size: int, block: bytes, journal: bytes,
                    checkpoint: Callable[[str], object]) -> int:
    """Journal, then the new key block over the old one, then no journal. Returns bytes written.

    Raises:
        FileExistsError: an unfinished rotation's journal is in the way (see recover()).
    """
    journal_file = journal_path(path)
    # The journal is written under a temporary name and linked into place complete, and it
    # stays locked until the end, so that a concurrent recover() never takes it for torn.
    with _temp_file(journal_file, 0o600) as temp:
        write_all(temp.fd, journal)
        try:
            temp.commit(replace=False, keep_open=True)
        except FileExistsError:
            raise FileExistsError(errno.EEXIST, "an unfinished rotation's journal is in the way; "
                                  "recover() completes it or says why it cannot",
                                  str(journal_file)) from None
        checkpoint("journal")
        # From here on the journal is durable: whatever happens, recover() completes the change.
        pwrite_all(fd, block, fixed_size)
        os.fsync(fd)
        checkpoint("header")
        os.unlink(journal_file)
        fsync_folder(path.parent)
    return len(journal) + len(block)


def _write_copy(path: Path, fd: int, payload_offset: int, new_header: bytes,
                checkpoint: Callable[[str], object]) -> int:
    """A new file with new_header and the same payload, renamed over path. Returns its size."""
    payload_size = os.fstat(fd).st_size - payload_offset
    with _temp_file_like(path, os.fstat(fd)) as temp:
        write_all(temp.fd, new_header)
        copy_range(fd, temp.fd, payload_offset, payload_size)
        checkpoint("copied")
        temp.commit()
    return len(new_header) + payload_size


def reencrypt(path: Path, fd: int, header: Header, request: Request) -> int:
    """Decrypts the file and encrypts it again under a fresh file key and salt, for the
    requested recipients, with the same fixed part. Returns the bytes written.

    Raises:
        KeyNotFoundError, AuthenticationError, TruncatedError: the file cannot be decrypted.
    """
    raw = os.fdopen(os.dup(fd), "rb", buffering=0)
    raw.seek(0)
    with DecryptingReader(raw, identities=request.identities, threads=request.threads,
                          close_raw=True) as reader:
        if request.dry_run:
            return 0
        size = reader.size
        assert size is not None  # a regular file is seekable: its size is known on open
        file_key = os.urandom(_envelope.FILE_KEY_SIZE)
        context = WrapContext(header.suite, header.fixed)
        stanzas = _envelope.wrap_for(request.recipients or (), file_key, context)
        new_header = header.fixed + _container.encode_key_block(stanzas)
        salt = _blob.random_salt()
        keys: ChunkSealer = _backend.impl.MessageKeys(
            header.suite, _direct.input_key(file_key, header.suite), salt, header.fixed)
        with _temp_file_like(path, os.fstat(fd)) as temp:
            write_all(temp.fd, new_header + salt + keys.commitment)
            sealer = _Sealer(temp.fd, keys, size, request.threads)
            copy_blocks(reader.readinto, sealer.write, size, None)
            sealer.finish()
            request.checkpoint("copied")
            temp.commit()
        return len(new_header) + _layout.message_size(size)


class ChunkSealer(Protocol):
    """What _Sealer needs of the engine's MessageKeys (native or Python backend)."""

    @property
    def commitment(self) -> bytes: ...

    def seal_chunks_into(self, first_chunk: int, plaintext: memoryview, out: bytearray,
                         final: bool, threads: int) -> int: ...


class _Sealer:
    """Seals a plaintext stream of known size chunk by chunk into a descriptor."""

    def __init__(self, fd: int, keys: ChunkSealer, total: int, threads: int) -> None:
        self._fd, self._keys, self._total, self._threads = fd, keys, total, threads
        self._done = 0
        self._next_chunk = 0
        self._carry = bytearray()  # a part chunk, when a read ends inside one
        self._finished = False

    def write(self, data: memoryview) -> None:
        self._done += data.nbytes
        final = self._done == self._total
        if self._carry:
            self._carry += data
            data = memoryview(self._carry)
        whole = data.nbytes if final else data.nbytes - data.nbytes % _layout.CHUNK_SIZE
        self._seal(data[:whole], final)
        self._carry = bytearray(data[whole:])

    def finish(self) -> None:
        if not self._finished:  # an empty plaintext: only the empty final chunk
            self._seal(memoryview(bytes(self._carry)), True)

    def _seal(self, plain: memoryview, final: bool) -> None:
        if not plain.nbytes and not final:
            return
        sealed = bytearray(_layout.sealed_size(plain.nbytes, final))
        self._keys.seal_chunks_into(self._next_chunk, plain, sealed, final, self._threads)
        self._next_chunk += _layout.chunk_count(plain.nbytes, final)
        write_all(self._fd, sealed)
        self._finished = final


def _temp_file(destination: Path, mode: int, owner: Optional[tuple[int, int]] = None) -> AtomicFile:
    """A locked temporary file ``.<name>.<random>.sseal-rotate-tmp`` beside destination that
    becomes destination on commit and vanishes otherwise. The lock (held until the ``with``
    block ends) tells recover() it is alive."""
    return AtomicFile(destination, mode, suffix=TEMP_SUFFIX, owner=owner)


def _temp_file_like(destination: Path, original: os.stat_result) -> AtomicFile:
    """A temporary file with the original's permission bits and, where allowed, owner."""
    return _temp_file(destination, stat.S_IMODE(original.st_mode) & 0o777,
                      (original.st_uid, original.st_gid))
