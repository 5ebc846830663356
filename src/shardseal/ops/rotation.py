"""Key rotation: re-wrap the file key of existing containers without re-encrypting them.

A container is ``fixed part || key block || Cobblestone message`` and the message never depends
on the key block (docs/FORMAT.md), so adding a recipient, removing one or moving from an old
key-encryption key to a new one rewrites only the key block: the payload keeps every byte.
``rotate(..., reencrypt=True)`` is the full rotation for a leaked file key: every file is
decrypted and encrypted again under a fresh file key and salt.

How each file is written:

* **In place**, when the new key block has the old one's size (old KEK -> new KEK of the same
  type) or is smaller by at least 6 bytes (a recipient removed: one padding stanza fills the
  gap). Only the key block is written. Crash safety comes from a *journal* beside the file,
  ``.<name>.sseal-rotate``, holding the old and the new key block: the journal is written and
  fsynced (file and folder) first, then the new key block is written over the old one and
  fsynced, then the journal is removed.
* **By copy**, when the key block grows (a recipient added): a temporary file
  ``.<name>.<random>.sseal-rotate-tmp`` in the same folder gets the new header and the payload
  (``os.copy_file_range``, which may share blocks on copy-on-write filesystems), keeps the
  original's permission bits (and owner, where allowed), is fsynced and renamed over the
  original, and the folder is fsynced. Hard links to the original keep the old version.
* **Re-encrypted** (``reencrypt=True``): as by copy, but the payload is decrypted and sealed
  again in bounded memory; the fixed part (suite and metadata) stays byte-for-byte the same.

Guarantees:

* A process killed at any point (``kill -9``) leaves every file either in its old or in its new
  state, and readable with the corresponding keys: a copy only replaces the original by an
  atomic rename, and a process kill does not split a ``pwrite`` within one 4 KiB page (a key
  block is a few hundred bytes). A key block that crosses a page boundary (a header over
  4 KiB) can be left torn by a kill as by a power loss, and is then repaired as below.
* After a power loss, a key block torn between its old and new bytes is repaired from its
  journal by ``recover()``, which every ``rotate()`` also runs first on the files it is given.
  Old, new and torn key blocks are all repaired to the new one: the payload is the same.
* A killed run can leave journals and ``.sseal-rotate-tmp`` files; ``recover()`` (or the next
  ``rotate()`` on the same paths) replays the journals and removes the temporary files. A
  rotation still running holds a lock (``flock``) on its journal and temporary file, and
  ``recover()`` leaves locked ones alone; still, do not rotate files that other processes are
  writing.
* Before any file is changed every file's new key set is checked (a rotation that would leave
  a file without a key it can be opened with raises ``ValueError`` and changes nothing).
  An error while rotating a file (a missing identity, a tampered file, a full disk) stops the
  run: the files rotated before it stay rotated, the failing one is unchanged or completed by
  ``recover()``, and the exception keeps its class with the path at the start of its message.
  With ``keep_going=True`` failures are listed in the report instead.

Before a file is re-wrapped its file key is unwrapped with the caller's identities and proven
right against the message's commitment, so a stanza that unwraps to a wrong key is never copied
to new recipients. A direct-key file (the file key is the caller's long-term key) is never
re-wrapped, since that would hand the long-term key to the new recipients: it is skipped unless
``reencrypt=True``.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import stat
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence, Union

from ..container import blob as _blob, header as _container
from ..core import backend as _backend, buffers as _buffers, layout as _layout
from ..keys import envelope as _envelope, direct as _direct, registry as _registry, stanzas as _stanzas
from .. import audit
from . import _journal
from ..container.header import Header, Stanza
from ..keys.envelope import Recipient, WrapContext
from ..keys.keyref import KeyLike, resolve_reference
from .._atomic import TEMP_STEM_BYTES, AtomicFile, folder_lock, fsync_folder
from ..io.files import copy_blocks
from .._atomic import TEMP_SUFFIX as _ATOMIC_TEMP_SUFFIX
from ..io.stream import DecryptingReader
from ..errors import ShardsealError, TruncatedError

try:
    import fcntl
except ImportError:  # not POSIX: no advisory locks, a live rotation is not protected
    fcntl = None  # type: ignore[assignment]

__all__ = ["JOURNAL_SUFFIX", "TEMP_SUFFIX", "RotationReport", "journal_path", "recover", "rotate"]

PathArg = Union[str, "os.PathLike[str]"]

JOURNAL_SUFFIX = ".sseal-rotate"
TEMP_SUFFIX = ".sseal-rotate-tmp"

_PADDING_HEAD = 6  # a stanza's type and body length
_MESSAGE_HEAD = _layout.MESSAGE_HEADER_SIZE  # salt || commitment


@dataclass(frozen=True)
class RotationReport:
    """What ``rotate`` did (or, with ``dry_run=True``, would do).

    Attributes:
        files_rewrapped: files whose key block was rewritten (in place or by copy).
        files_reencrypted: files decrypted and encrypted again under a fresh file key.
        files_skipped: files left alone; ``skipped`` says why.
        bytes_written: bytes written to disk, journals included (0 in a dry run).
        bytes_payload: payload (Cobblestone message) bytes of the rotated files.
        in_place: rewrapped files whose key block was written in place.
        copied: rewrapped files written as a new file (the key block grew).
        skipped: ``(path, reason)`` for each skipped file.
        failed: ``(path, error message)`` for each failed file (``keep_going=True`` only).
        recovered: unfinished rotations (journals) completed before this one started.
        dry_run: nothing was written.
    """

    files_rewrapped: int = 0
    files_reencrypted: int = 0
    files_skipped: int = 0
    bytes_written: int = 0
    bytes_payload: int = 0
    in_place: int = 0
    copied: int = 0
    skipped: tuple = ()
    failed: tuple = ()
    recovered: int = 0
    dry_run: bool = False

    def summary(self) -> str:
        """One line for the command line, e.g. ``rotated 3 files (2 in place, ...)``."""
        verb = "would rotate" if self.dry_run else "rotated"
        rotated = self.files_rewrapped + self.files_reencrypted
        parts = [(f"{verb} {rotated} file{'s' if rotated != 1 else ''} "
                  f"({self.in_place} in place, {self.copied} copied, "
                  f"{self.files_reencrypted} re-encrypted)"),
                 f"skipped {self.files_skipped}"]
        if self.failed:
            parts.append(f"failed {len(self.failed)}")
        if self.recovered:
            parts.append(f"recovered {self.recovered} unfinished")
        parts.append(f"wrote {_human_bytes(self.bytes_written)} "
                     f"for {_human_bytes(self.bytes_payload)} of payload")
        return ", ".join(parts)


def rotate(paths: Union[str, os.PathLike[str], Iterable[Union[str, os.PathLike[str]]]], *,
           identities: Optional[_envelope.Identities] = None, key: Optional[KeyLike] = None,
           add: Sequence[Recipient] = (), remove: Sequence[Union[str, Recipient]] = (),
           recipients: Optional[_registry.Recipients] = None, reencrypt: bool = False,
           recursive: bool = True, threads: Optional[int] = None,
           progress: Union[bool, Callable[[str], object]] = False, dry_run: bool = False,
           keep_going: bool = False,
           checkpoint: Optional[Callable[[str], object]] = None) -> RotationReport:
    """Changes who can open containers, rewriting only their key blocks where possible.

    Args:
        paths: a file or folder, or a list of them. Folders are searched (recursively unless
            recursive=False) for regular files that start with the shardseal magic; other
            files, symbolic links (never followed) and this module's journals and temporary
            files are not rotated.
        identities: identities that open the current key block (as for
            ``shardseal.decrypt(identities=...)``).
        key: the 32-byte key of direct-key files (they can only be re-encrypted), or a key
            reference (``shardseal.keyref``).
        add: recipients to add to every file (one already present is not added twice).
        remove: key ids (as in ``shardseal.inspect(...).stanzas[i].key_id``; ``"passphrase"``
            for a passphrase stanza) or Recipient objects whose stanzas are removed.
        recipients: instead of add/remove, the complete new set of recipients: stanzas of
            other keys are removed, and stanzas of these keys are kept as they are (a
            passphrase stanza is always wrapped again, since the passphrase may be new).
        reencrypt: decrypt and encrypt every file again under a fresh file key and salt, for
            exactly ``recipients`` (required). Use it when a file key may have leaked.
        recursive: search folders recursively.
        threads: worker threads for re-encryption; None uses every CPU. Re-wrapping is
            I/O-bound and handles one file at a time.
        progress: True shows a tqdm bar of files on stderr; a callable is called with each
            file's path when it is done.
        dry_run: check everything (headers, identities, commitments) but write nothing.
        keep_going: list a file's failure in the report and go on with the others instead
            of raising.
        checkpoint: called with the name of each step of a file's rotation, at the points
            where a crash leaves the file in a state that ``recover()`` handles: ``"file"``
            (before the file is opened), ``"journal"`` (the journal is durable, the key block
            not yet written), ``"header"`` (the new key block is durable, the journal not yet
            removed) and ``"copied"`` (the new file is complete under its temporary name, not
            yet renamed).
            For crash tests, which stop or kill the process there; an exception it raises
            stops the rotation like any other error.

    Returns:
        A RotationReport; ``report.summary()`` is one line for a log or a terminal.

    Raises:
        TypeError: bad argument types, neither identities nor key, or recipients given
            together with add/remove.
        ValueError: nothing to do, reencrypt without recipients, a passphrase beside other
            recipients, or a rotation that would leave some file with no key stanza (raised
            before any file is changed).
        FileNotFoundError: a path does not exist.
        KeyNotFoundError: no identity opens a file (the message starts with its path).
        AuthenticationError: a stanza unwraps to a key that fails the file's commitment, or
            the payload fails authentication while it is re-encrypted.
        FormatError, TruncatedError: a damaged container.
        OSError: a file cannot be read or written (e.g. a full disk).
    """
    request = _Request.from_arguments(identities, resolve_reference(key), add, remove, recipients, reencrypt,
                                      threads, dry_run, checkpoint)
    found = _discover(_path_list(paths), recursive)
    recovered = 0 if dry_run else _recover_found(found)
    tally = _Tally(skipped=list(found.skipped), recovered=recovered, dry_run=dry_run)
    plans = _check_plans(found.files, request, tally, keep_going)
    with _progress(progress, len(plans)) as advance:
        for path in plans:
            _rotate_counted(path, request, tally, keep_going)
            advance(str(path))
    return tally.report()


def recover(paths, *, recursive: bool = True) -> int:
    """Completes rotations that were interrupted (a killed process, a power loss).

    Every journal ``.<name>.sseal-rotate`` found under paths (folders are searched, recursively
    unless recursive=False; for a file, its own journal) is replayed: the file's key block,
    whether old, new or torn between the two, gets the new key block, then the journal is
    removed. A journal whose file no longer holds the journal's payload (the file was replaced
    or deleted) is left alone with a RuntimeWarning. A torn journal (the process died while
    writing it, before the key block was touched) is removed. Temporary ``.sseal-rotate-tmp``
    files of dead rotations are removed. Journals and temporary files locked by a rotation that
    is still running are left alone.

    Returns:
        The number of files whose rotation was completed.

    Raises:
        TypeError: paths is not a path or a list of paths.
        FileNotFoundError: a path does not exist.
        OSError: a journal or file cannot be read or written.
    """
    return _recover_found(_discover(_path_list(paths), recursive))


# ---- arguments --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Request:
    """The validated arguments of one rotate() call."""

    identities: tuple
    add: tuple
    remove_ids: frozenset
    recipients: Optional[tuple]
    reencrypt: bool
    threads: int
    dry_run: bool
    checkpoint: Callable[[str], object]

    @classmethod
    def from_arguments(cls, identities, key, add, remove, recipients, reencrypt, threads,
                       dry_run, checkpoint=None) -> "_Request":
        checked_identities = _registry.check_identities(key, identities)
        add = _recipient_tuple(add, "add")
        remove_ids = _remove_ids(remove)
        if recipients is not None:
            if add or remove_ids:
                raise TypeError("give recipients= (the complete new set) or add=/remove=, not both")
            recipients = _unique(_registry.check_recipients(recipients))
        elif reencrypt:
            raise ValueError("reencrypt=True wraps a fresh file key for every recipient: "
                             "give the complete new set as recipients=")
        elif not add and not remove_ids:
            raise ValueError("nothing to rotate: give add=, remove= or recipients=")
        if add:
            add = _unique(_registry.check_recipients(add))
        if checkpoint is not None and not callable(checkpoint):
            raise TypeError(f"checkpoint must be callable, not {type(checkpoint).__name__}")
        return cls(checked_identities, add, remove_ids, recipients, bool(reencrypt),
                   _buffers.thread_count(threads), bool(dry_run), checkpoint or _no_checkpoint)


def _recipient_tuple(value, name: str) -> tuple:
    if value is None:
        return ()
    if isinstance(value, (str, bytes, Recipient)):
        return (value,)
    try:
        return tuple(value)
    except TypeError:
        raise TypeError(f"{name} must be a list of recipients, not {type(value).__name__}") from None


def _remove_ids(remove) -> frozenset:
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


def _unique(recipients: Iterable[Recipient]) -> tuple:
    """Drops repeated recipients of the same key (a file needs one stanza per key)."""
    seen, result = set(), []
    for recipient in recipients:
        name = (recipient.stanza_type, recipient.key_id)
        if name not in seen:
            seen.add(name)
            result.append(recipient)
    return tuple(result)


def _path_list(paths) -> list:
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    elif isinstance(paths, bytes):
        raise TypeError("paths must be str or os.PathLike, not bytes")
    try:
        items = [Path(os.fsdecode(p)) for p in paths]
    except TypeError:
        raise TypeError(f"paths must be a path or a list of paths, not {type(paths).__name__}") from None
    if not items:
        raise ValueError("no paths given")
    return items


# ---- finding files ----------------------------------------------------------------------


@dataclass
class _Found:
    files: list = field(default_factory=list)
    skipped: list = field(default_factory=list)  # (path, reason)
    journals: list = field(default_factory=list)
    temps: list = field(default_factory=list)


def _discover(paths: list, recursive: bool) -> _Found:
    """The candidate files, skipped entries, journals and temporary files under paths."""
    found = _Found()
    for path in paths:
        st = os.stat(path)  # a folder the caller names is followed even through a link
        if stat.S_ISDIR(st.st_mode):
            _walk(path, recursive, found)
        else:
            _classify_named_file(path, found)
    found.files = sorted(set(found.files))
    found.journals = sorted(set(found.journals))
    found.temps = sorted(set(found.temps))
    return found


def _walk(folder: Path, recursive: bool, found: _Found) -> None:
    pending = [folder]
    while pending:
        current = pending.pop()
        with os.scandir(current) as entries:
            for entry in entries:
                path = current / entry.name
                if entry.is_symlink():
                    found.skipped.append((str(path), "symbolic link (not followed)"))
                elif entry.is_dir(follow_symlinks=False):
                    if recursive:
                        pending.append(path)
                elif entry.is_file(follow_symlinks=False):
                    _classify(path, found)
                else:
                    found.skipped.append((str(path), "not a regular file"))


def _classify_named_file(path: Path, found: _Found) -> None:
    if path.is_symlink():
        found.skipped.append((str(path), "symbolic link (not followed)"))
    elif not path.is_file():
        found.skipped.append((str(path), "not a regular file"))
    else:
        _classify(path, found)
        if path in found.files:
            journal = journal_path(path)
            if journal.exists():
                found.journals.append(journal)
            found.temps.extend(path.parent.glob(f".{_glob_escape(_stem(path))}.*{TEMP_SUFFIX}"))


def _classify(path: Path, found: _Found) -> None:
    name = path.name
    if name.startswith(".") and name.endswith(JOURNAL_SUFFIX):
        found.journals.append(path)
    elif name.startswith(".") and name.endswith(TEMP_SUFFIX):
        found.temps.append(path)
    elif name.startswith(".") and name.endswith(_ATOMIC_TEMP_SUFFIX):
        found.skipped.append((str(path), "temporary file of an unfinished write"))
    else:
        found.files.append(path)


def _glob_escape(text: str) -> str:
    return "".join(f"[{c}]" if c in "*?[" else c for c in text)


def _stem(path: Path) -> str:
    # Shortened so that journal and temporary names stay within the 255-byte name limit.
    return os.fsencode(path.name)[:TEMP_STEM_BYTES].decode(errors="ignore")


def journal_path(path: PathArg) -> Path:
    """The journal that an in-place rotation of path writes beside it.

    Raises:
        TypeError: path is not a path.
    """
    path = Path(path)
    name = path.name
    if len(os.fsencode(name)) > TEMP_STEM_BYTES:
        # A long name is cut; a digest of the whole name keeps journals of names that share
        # their first TEMP_STEM_BYTES bytes apart.
        name = f"{_stem(path)}.{hashlib.sha256(os.fsencode(path.name)).hexdigest()[:16]}"
    return path.parent / f".{name}{JOURNAL_SUFFIX}"


# ---- planning ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Plan:
    """How one file's stanzas change: the stanzas kept, the recipients to wrap for."""

    kept: tuple
    add: tuple
    added_ids: tuple
    removed_ids: tuple
    skip_reason: Optional[str] = None


def _read_container(fd: int) -> Optional[tuple]:
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
    message_head = os.pread(fd, _MESSAGE_HEAD, header.size)
    if len(message_head) < _MESSAGE_HEAD:
        raise TruncatedError("message truncated: shorter than its salt and commitment")
    return header, message_head, size


def _plan(header: Header, request: _Request) -> _Plan:
    """The stanza changes for one file.

    Raises:
        ValueError: the file would be left without a key stanza, or with a passphrase stanza
            beside other key stanzas.
    """
    keyed = [s for s in header.stanzas if s.type != _stanzas.PADDING]
    old_ids = [_stanzas.key_id(s) for s in keyed]
    if request.reencrypt:
        new_ids = [r.key_id for r in request.recipients]
        return _Plan((), request.recipients, _difference(new_ids, old_ids),
                     _difference(old_ids, new_ids))
    if any(s.type == _stanzas.DIRECT for s in keyed):
        return _Plan((), (), (), (), "direct-key file: its file key is the caller's own key and "
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
        return _Plan(kept, (), (), (), "already in the requested state")
    return _Plan(kept, add, tuple(r.key_id for r in add), removed)


def _name_of(recipient: Recipient) -> tuple:
    # Passphrase stanzas all share the key id "passphrase": never treat one as already there.
    if recipient.stanza_type == _stanzas.PASSPHRASE:
        return (_stanzas.PASSPHRASE, object())
    return (recipient.stanza_type, recipient.key_id)


def _stanza_name(stanza: Stanza) -> tuple:
    if stanza.type == _stanzas.PASSPHRASE:
        return (_stanzas.PASSPHRASE, None)
    return (stanza.type, _stanzas.key_id(stanza))


def _difference(ids: Sequence[str], others: Sequence[str]) -> tuple:
    return tuple(i for i in dict.fromkeys(ids) if i not in others)


def _check_new_set(kept: tuple, add: tuple) -> None:
    openable = [s for s in kept if s.type in _stanzas.TYPES] + list(add)
    if not openable:
        raise ValueError("the rotation would remove every key stanza, leaving no key that "
                         "opens the file")
    types = [s.type for s in kept] + [r.stanza_type for r in add]
    if _stanzas.PASSPHRASE in types and len(types) > 1:
        raise ValueError("a passphrase must stay the only key of a file: remove its stanza "
                         "(\"passphrase\") to add other recipients, or the others to add one")


def _check_plans(files: list, request: _Request, tally: "_Tally", keep_going: bool) -> list:
    """Checks every file's plan before any file changes; returns the files to rotate."""
    to_rotate = []
    for path in files:
        try:
            with _open_file(path, writable=False) as (fd, _):
                parsed = _read_container(fd)
                if parsed is None:
                    tally.skip(path, "not a shardseal container")
                    continue
                _plan(parsed[0], request)
        except (ShardsealError, ValueError, OSError) as exc:
            if not keep_going:
                raise _with_path(exc, path)
            tally.fail(path, _with_path(exc, path))
            continue
        to_rotate.append(path)
    return to_rotate


# ---- rotating one file ------------------------------------------------------------------


@dataclass
class _Tally:
    """A RotationReport being built."""

    skipped: list = field(default_factory=list)
    failed: list = field(default_factory=list)
    rewrapped: int = 0
    reencrypted: int = 0
    in_place: int = 0
    copied: int = 0
    bytes_written: int = 0
    bytes_payload: int = 0
    recovered: int = 0
    dry_run: bool = False

    def skip(self, path: Path, reason: str) -> None:
        self.skipped.append((str(path), reason))

    def fail(self, path: Path, exc: BaseException) -> None:
        self.failed.append((str(path), str(exc)))

    def report(self) -> RotationReport:
        return RotationReport(self.rewrapped, self.reencrypted, len(self.skipped),
                              self.bytes_written, self.bytes_payload, self.in_place, self.copied,
                              tuple(self.skipped), tuple(self.failed), self.recovered,
                              self.dry_run)


def _rotate_counted(path: Path, request: _Request, tally: _Tally, keep_going: bool) -> None:
    try:
        # The folder lock keeps a dataset manifest's save (which takes it too) from writing
        # an old key block back over a rotated one.
        with audit.target(path), folder_lock(path.parent):
            _rotate_file(path, request, tally)
    except (ShardsealError, ValueError, OSError) as exc:
        with audit.target(path):
            audit.record("rotate_failed", mode="reencrypt" if request.reencrypt else "rewrap",
                         error=type(exc).__name__)
        if not keep_going:
            raise _with_path(exc, path)
        tally.fail(path, _with_path(exc, path))


def _rotate_file(path: Path, request: _Request, tally: _Tally) -> None:
    request.checkpoint("file")
    with _open_file(path, writable=not (request.dry_run or request.reencrypt)) as (fd, writable):
        parsed = _read_container(fd)
        if parsed is None:  # replaced since the check
            tally.skip(path, "not a shardseal container")
            return
        header, _, size = parsed
        plan = _plan(header, request)
        if plan.skip_reason is not None:
            tally.skip(path, plan.skip_reason)
            return
        payload = size - header.size
        if request.reencrypt:
            tally.bytes_written += _reencrypt(path, fd, header, request)
            tally.reencrypted += 1
        else:
            in_place, written = _rewrap(path, fd, writable, parsed, plan, request)
            tally.rewrapped += 1
            tally.in_place += in_place
            tally.copied += not in_place
            tally.bytes_written += written
        tally.bytes_payload += payload
        if not request.dry_run:
            audit.record("rotate", mode="reencrypt" if request.reencrypt else "rewrap",
                         added=list(plan.added_ids), removed=list(plan.removed_ids))


@contextlib.contextmanager
def _open_file(path: Path, writable: bool):
    """Yields (descriptor, writable?) for path, never through a symbolic link. A file we may
    not write is opened read-only (it can still be rotated by copy)."""
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


def _verified_file_key(header: Header, message_head: bytes, identities: tuple) -> bytes:
    """The file key, proven right by the message's commitment.

    Raises:
        KeyNotFoundError: no identity opens a stanza.
        AuthenticationError: the unwrapped key does not match the commitment.
    """
    file_key = _envelope.unwrap_file_key(header, identities)
    _envelope.proven_message_keys(header, file_key, message_head)
    return file_key


def _rewrap(path: Path, fd: int, writable: bool, parsed: tuple, plan: _Plan,
            request: _Request) -> tuple:
    """Writes the new key block; returns (in place?, bytes written)."""
    header, message_head, size = parsed
    file_key = _verified_file_key(header, message_head, request.identities)
    old_block_size = header.size - len(header.fixed)
    if request.dry_run:
        new_size = 2 + sum(_PADDING_HEAD + len(s.body) for s in plan.kept) + sum(
            _envelope.stanza_size(r, header.suite, header.fixed) for r in plan.add)
        count = len(plan.kept) + len(plan.add)
        return _fits_in_place(new_size, old_block_size, count) and not _read_only(path), 0
    wrapped = _envelope.wrap_for(plan.add, file_key, WrapContext(header.suite, header.fixed))
    block = _new_key_block(list(plan.kept) + wrapped, old_block_size)
    if len(block) == old_block_size and writable:
        journal = _journal.encode(path.name, size, header.fixed,
                                  _pread_exact(fd, old_block_size, len(header.fixed)), block,
                                  message_head)
        return True, _write_in_place(path, fd, len(header.fixed), block, journal,
                                     request.checkpoint)
    return False, _write_copy(path, fd, header.size, header.fixed + block, request.checkpoint)


def _read_only(path: Path) -> bool:
    return not os.access(path, os.W_OK, follow_symlinks=False)


def _fits_in_place(new_size: int, old_size: int, count: int) -> bool:
    gap = old_size - new_size
    return gap == 0 or (_PADDING_HEAD <= gap <= _PADDING_HEAD + _stanzas.MAX_PADDING_SIZE
                        and count < _container.MAX_STANZAS)


def _new_key_block(stanzas: list, old_size: int) -> bytes:
    """The encoded key block, padded to old_size when it is at least 6 bytes smaller (so that
    it can be written in place); otherwise as it is."""
    block = _container.encode_key_block(stanzas)
    if len(block) != old_size and _fits_in_place(len(block), old_size, len(stanzas)):
        padding = Stanza(_stanzas.PADDING, bytes(old_size - len(block) - _PADDING_HEAD))
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
        _write_all(temp.fd, journal)
        try:
            temp.commit(replace=False, keep_open=True)
        except FileExistsError:
            raise FileExistsError(errno.EEXIST, "an unfinished rotation's journal is in the way; "
                                  "recover() completes it or says why it cannot",
                                  str(journal_file)) from None
        checkpoint("journal")
        # From here on the journal is durable: whatever happens, recover() completes the change.
        _pwrite_all(fd, block, fixed_size)
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
        _write_all(temp.fd, new_header)
        _copy_range(fd, temp.fd, payload_offset, payload_size)
        checkpoint("copied")
        temp.commit()
    return len(new_header) + payload_size


def _reencrypt(path: Path, fd: int, header: Header, request: _Request) -> int:
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
        file_key = os.urandom(_envelope.FILE_KEY_SIZE)
        context = WrapContext(header.suite, header.fixed)
        stanzas = _envelope.wrap_for(request.recipients, file_key, context)
        new_header = header.fixed + _container.encode_key_block(stanzas)
        salt = _blob.random_salt()
        keys = _backend.impl.MessageKeys(header.suite, _direct.input_key(file_key, header.suite),
                                         salt, header.fixed)
        with _temp_file_like(path, os.fstat(fd)) as temp:
            _write_all(temp.fd, new_header + salt + keys.commitment)
            sealer = _Sealer(temp.fd, keys, reader.size, request.threads)
            copy_blocks(reader.readinto, sealer.write, reader.size, None)
            sealer.finish()
            request.checkpoint("copied")
            temp.commit()
        return len(new_header) + _layout.message_size(reader.size)


class _Sealer:
    """Seals a plaintext stream of known size chunk by chunk into a descriptor."""

    def __init__(self, fd: int, keys, total: int, threads: int) -> None:
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
        _write_all(self._fd, sealed)
        self._finished = final


def _temp_file(destination: Path, mode: int, owner: Optional[tuple] = None) -> AtomicFile:
    """A locked temporary file ``.<name>.<random>.sseal-rotate-tmp`` beside destination that
    becomes destination on commit and vanishes otherwise. The lock (held until the ``with``
    block ends) tells recover() it is alive."""
    return AtomicFile(destination, mode, suffix=TEMP_SUFFIX, owner=owner)


def _temp_file_like(destination: Path, original: os.stat_result) -> AtomicFile:
    """A temporary file with the original's permission bits and, where allowed, owner."""
    return _temp_file(destination, stat.S_IMODE(original.st_mode) & 0o777,
                      (original.st_uid, original.st_gid))


# ---- recovery ---------------------------------------------------------------------------


def _recover_found(found: _Found) -> int:
    repaired = 0
    for journal in found.journals:
        repaired += _replay_journal(journal)
    for temp in found.temps:
        _remove_if_dead(temp)
    return repaired


def _replay_journal(journal_file: Path) -> bool:
    """Completes the rotation a journal describes; True when a file was repaired."""
    try:
        fd = os.open(journal_file, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:  # finished meanwhile by its own rotation
        return False
    try:
        if not _try_lock(fd):
            return False  # a rotation still running owns it
        data = os.pread(fd, _journal.MAX_SIZE + 1, 0)
        try:
            journal = _journal.decode(data)
        except ValueError:
            warnings.warn(f"{journal_file}: not a shardseal rotation journal; left alone",
                          RuntimeWarning, stacklevel=4)
            return False
        if journal is None:
            # Torn: the process died writing it, and the key block is only written after the
            # journal is durable, so the file is untouched.
            _remove(journal_file)
            return False
        problem = _apply_journal(journal_file.parent, journal)
        if problem is not None:
            warnings.warn(f"{journal_file}: {problem}; the journal is left alone (delete it "
                          f"once the file is known to be right)", RuntimeWarning, stacklevel=4)
            return False
        _remove(journal_file)
        return True
    finally:
        os.close(fd)


def _apply_journal(folder: Path, journal: _journal.Journal) -> Optional[str]:
    """Writes the journal's new key block into its file; returns why not, if it cannot."""
    if "/" in journal.name or journal.name in ("", ".", ".."):
        return "the journal names no file in its folder"
    target = folder / journal.name
    try:
        fd = os.open(target, os.O_RDWR | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        return f"its file {target} no longer exists"
    try:
        problem = _journal_mismatch(fd, journal)
        if problem is not None:
            return f"{target} {problem}"
        _pwrite_all(fd, journal.new_block, len(journal.fixed))
        os.fsync(fd)
    finally:
        os.close(fd)
    with audit.target(target):
        old, new = (_key_ids(journal.fixed + block) for block in (journal.old_block, journal.new_block))
        audit.record("rotate", mode="rewrap", added=list(_difference(new, old)),
                     removed=list(_difference(old, new)), recovered=True)
    return None


def _key_ids(header: bytes) -> list:
    return [_stanzas.key_id(s) for s in _container.parse_header(header).stanzas
            if s.type != _stanzas.PADDING]


def _journal_mismatch(fd: int, journal: _journal.Journal) -> Optional[str]:
    """Why the file does not hold the journal's payload under an old, new or torn key block."""
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_size != journal.size:
        return "no longer has the journal's size (it was replaced)"
    fixed_size, block_size = len(journal.fixed), len(journal.new_block)
    current = _pread_exact(fd, fixed_size + block_size + _MESSAGE_HEAD, 0)
    block = current[fixed_size:fixed_size + block_size]
    if (current[:fixed_size] != journal.fixed
            or current[fixed_size + block_size:] != journal.message_head):
        return "no longer holds the journal's payload (it was replaced)"
    # A torn write leaves each byte from either version, never anything else.
    if any(b != old and b != new for b, old, new in zip(block, journal.old_block, journal.new_block)):
        return "has a key block that is neither the old, the new nor a mix of both"
    return None


def _remove_if_dead(temp: Path) -> None:
    """Removes a rotation's temporary file unless a running rotation holds its lock."""
    try:
        fd = os.open(temp, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        return
    try:
        if _try_lock(fd):
            _remove(temp)
    finally:
        os.close(fd)


def _remove(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    fsync_folder(path.parent)


# ---- small helpers ----------------------------------------------------------------------


def _no_checkpoint(step: str) -> None:
    """rotate()'s checkpoint when the caller gives none."""


def _try_lock(fd: int) -> bool:
    if fcntl is None:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _write_all(fd: int, data) -> None:
    view = memoryview(data)
    while view.nbytes:
        view = view[os.write(fd, view):]


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view.nbytes:
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written


def _pread_exact(fd: int, size: int, offset: int) -> bytes:
    data = os.pread(fd, size, offset)
    if len(data) != size:
        raise TruncatedError("the file was truncated during the rotation")
    return data


def _copy_range(source: int, destination: int, offset: int, size: int) -> None:
    """Copies size bytes from source at offset to destination's position, in the kernel
    where possible (copy_file_range may share blocks; sendfile; else read and write)."""
    remaining = size
    for copy in (_copy_file_range, _sendfile, _read_write):
        try:
            while remaining:
                n = copy(source, destination, offset, remaining)
                if n == 0:
                    raise TruncatedError("the file was truncated during the rotation")
                offset, remaining = offset + n, remaining - n
            return
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP,
                                 errno.ENOTSUP, errno.EBADF) or copy is _read_write:
                raise


def _copy_file_range(source: int, destination: int, offset: int, size: int) -> int:
    if not hasattr(os, "copy_file_range"):
        raise OSError(errno.ENOSYS, "copy_file_range unavailable")
    return os.copy_file_range(source, destination, min(size, 1 << 30), offset)


def _sendfile(source: int, destination: int, offset: int, size: int) -> int:
    if not hasattr(os, "sendfile"):
        raise OSError(errno.ENOSYS, "sendfile unavailable")
    return os.sendfile(destination, source, offset, min(size, 1 << 30))


def _read_write(source: int, destination: int, offset: int, size: int) -> int:
    data = os.pread(source, min(size, 8 << 20), offset)
    _write_all(destination, data)
    return len(data)


def _with_path(exc: BaseException, path: Path) -> BaseException:
    """exc with path at the start of its message; its class and attributes are kept so that
    ``except KeyNotFoundError`` (and ``exc.key_ids``) still work."""
    name = str(path)
    if isinstance(exc, OSError):
        if exc.filename is None:
            exc.filename = name
    elif exc.args and isinstance(exc.args[0], str) and not exc.args[0].startswith(name):
        exc.args = (f"{name}: {exc.args[0]}",) + exc.args[1:]
    return exc


@contextlib.contextmanager
def _progress(progress, total: int):
    """Yields advance(path): a tqdm bar for progress=True, the caller's callback, or nothing."""
    if callable(progress):
        yield progress
    elif progress:
        from tqdm import tqdm

        with tqdm(total=total, unit="file", desc="rotate") as bar:
            yield lambda path: bar.update(1)
    else:
        yield lambda path: None


def _human_bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"
