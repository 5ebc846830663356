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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence, Union

from .. import audit
from ..errors import ShardsealError
from ..keys import envelope as _envelope, registry as _registry
from ..keys.envelope import Recipient
from ..keys.keyref import KeyLike, resolve_reference
from .._atomic import folder_lock
from ._recovery import recover_found
from ._rewrap import Request, open_file, plan_file, read_container, reencrypt, rewrap
from ._rotation_files import (
    JOURNAL_SUFFIX,
    TEMP_SUFFIX,
    PathArg as PathArg,  # re-exported: shardseal.rotation.PathArg
    PathsArg,
    discover,
    journal_path,
    path_list,
)

__all__ = ["JOURNAL_SUFFIX", "TEMP_SUFFIX", "RotationReport", "journal_path", "recover", "rotate"]

Progress = Union[bool, Callable[[str], object]]


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
    skipped: tuple[tuple[str, str], ...] = ()
    failed: tuple[tuple[str, str], ...] = ()
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


def rotate(paths: PathsArg, *,
           identities: Optional[_envelope.Identities] = None, key: Optional[KeyLike] = None,
           add: Sequence[Recipient] = (), remove: Sequence[Union[str, Recipient]] = (),
           recipients: Optional[_registry.Recipients] = None, reencrypt: bool = False,
           recursive: bool = True, threads: Optional[int] = None,
           progress: Progress = False, dry_run: bool = False,
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
    request = Request.from_arguments(identities, resolve_reference(key), add, remove, recipients, reencrypt,
                                      threads, dry_run, checkpoint)
    found = discover(path_list(paths), recursive)
    recovered = 0 if dry_run else recover_found(found)
    tally = _Tally(skipped=list(found.skipped), recovered=recovered, dry_run=dry_run)
    plans = _check_plans(found.files, request, tally, keep_going)
    with _progress(progress, len(plans)) as advance:
        for path in plans:
            _rotate_counted(path, request, tally, keep_going)
            advance(str(path))
    return tally.report()


def recover(paths: PathsArg, *, recursive: bool = True) -> int:
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
    return recover_found(discover(path_list(paths), recursive))


# ---- the run over many files ---------------------------------------------------------


def _check_plans(files: list[Path], request: Request, tally: _Tally, keep_going: bool) -> list[Path]:
    """Checks every file's plan before any file changes; returns the files to rotate."""
    to_rotate = []
    for path in files:
        try:
            with open_file(path, writable=False) as (fd, _):
                parsed = read_container(fd)
                if parsed is None:
                    tally.skip(path, "not a shardseal container")
                    continue
                plan_file(parsed[0], request)
        except (ShardsealError, ValueError, OSError) as exc:
            if not keep_going:
                raise _with_path(exc, path)
            tally.fail(path, _with_path(exc, path))
            continue
        to_rotate.append(path)
    return to_rotate


@dataclass
class _Tally:
    """A RotationReport being built."""

    skipped: list[tuple[str, str]] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
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


def _rotate_counted(path: Path, request: Request, tally: _Tally, keep_going: bool) -> None:
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


def _rotate_file(path: Path, request: Request, tally: _Tally) -> None:
    request.checkpoint("file")
    with open_file(path, writable=not (request.dry_run or request.reencrypt)) as (fd, writable):
        parsed = read_container(fd)
        if parsed is None:  # replaced since the check
            tally.skip(path, "not a shardseal container")
            return
        header, _, size = parsed
        plan = plan_file(header, request)
        if plan.skip_reason is not None:
            tally.skip(path, plan.skip_reason)
            return
        payload = size - header.size
        if request.reencrypt:
            tally.bytes_written += reencrypt(path, fd, header, request)
            tally.reencrypted += 1
        else:
            in_place, written = rewrap(path, fd, writable, parsed, plan, request)
            tally.rewrapped += 1
            tally.in_place += in_place
            tally.copied += not in_place
            tally.bytes_written += written
        tally.bytes_payload += payload
        if not request.dry_run:
            audit.record("rotate", mode="reencrypt" if request.reencrypt else "rewrap",
                         added=list(plan.added_ids), removed=list(plan.removed_ids))


# ---- small helpers ----------------------------------------------------------------------


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
def _progress(progress: Progress, total: int) -> Iterator[Callable[[str], object]]:
    """Yields advance(path): a tqdm bar for progress=True, the caller's callback, or nothing."""
    if callable(progress):
        yield progress
    elif progress:
        from tqdm import tqdm

        with tqdm(total=total, unit="file", desc="rotate") as bar:
            yield lambda path: bar.update(1)
    else:
        yield lambda path: None


def _human_bytes(count: int) -> str:
    n: float = count
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"
