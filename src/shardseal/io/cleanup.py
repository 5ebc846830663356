"""Removing the temporary files that killed writers leave behind.

Every atomic write (``encrypt_file``, ``decrypt_file``, ``shardseal.open(path, "wb")``, the
command line) goes through a temporary ``.<name>.<random>.sseal-tmp`` file beside its
destination, renamed into place when complete and removed on any error. A process killed
outright (SIGKILL, the OOM killer, power loss) cannot remove it: the file stays, with mode
0600, and for ``decrypt`` it holds authenticated plaintext written so far.

``clean_temp_files`` removes such leftovers, and only those: a file is removed when

* its name is ``.<name>.<random>.sseal-tmp`` and it is a regular file (never a link, a FIFO
  or a device: only regular files are ever opened, without blocking or following links);
* it is owned by the user running the clean (the effective uid) and has mode 0600, as every
  temporary file shardseal creates has: a file someone else left, or one with other
  permissions, was not made by shardseal and is kept;
* it was last modified at least ``min_age`` seconds ago (10 minutes by default); and
* no process holds its ``flock``: a live writer holds an exclusive lock on its temporary file
  for as long as it writes (released by the kernel when the process dies), so a slow or
  stalled writer's file is kept however old it is.

The same naming and locking cover key files, keyring files and X25519 identity files
replaced with ``force``/``overwrite``: their temporary ``.<name>.<random>.sseal-tmp`` file
holds a key until it is renamed into place.

Sub-folders are entered through descriptors opened without following links, so a folder
swapped for a link while the scan runs cannot lead it outside the folder given.

On systems without ``flock`` (Windows) only the age check protects live writers: choose a
``min_age`` longer than any write takes there.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional, Union

from .. import _redact
from .._atomic import TEMP_SUFFIX, open_folder

try:
    import fcntl
except ImportError:  # Windows
    _HAVE_FLOCK = False
else:
    _HAVE_FLOCK = True

__all__ = ["DEFAULT_MIN_AGE", "CleanReport", "clean_temp_files"]

PathLike = Union[str, "os.PathLike[str]"]
DEFAULT_MIN_AGE = 600.0


@dataclass
class CleanReport:
    """What ``clean_temp_files`` did.

    Attributes:
        removed: the leftover temporary files removed (or, with dry_run, that would be).
        kept: (path, why) for temporary files left in place: too recent, or locked by a
            live writer.
    """

    removed: list[str] = field(default_factory=list)
    kept: list[tuple[str, str]] = field(default_factory=list)


def clean_temp_files(folder: PathLike, *, min_age: float = DEFAULT_MIN_AGE, recursive: bool = True,
                     dry_run: bool = False) -> CleanReport:
    """Removes the ``.*.sseal-tmp`` files that killed writers left in folder.

    See the module documentation for which files are removed. Symbolic links are neither
    followed nor removed.

    Args:
        folder: the folder to clean.
        min_age: only files last modified at least this many seconds ago are removed.
        recursive: also clean the sub-folders (not through links).
        dry_run: report what would be removed, remove nothing.

    Returns:
        A CleanReport.

    Raises:
        OSError: folder cannot be listed (FileNotFoundError names a missing folder that might
            be a key by its length only).
        ValueError: min_age is negative.
    """
    if isinstance(min_age, bool) or not isinstance(min_age, (int, float)) or min_age < 0:
        raise ValueError("min_age must be a non-negative number of seconds")
    _redact.refuse_missing_secret_path(folder)
    report = CleanReport()
    now = time.time()
    root_fd = open_folder(folder)
    try:
        for dir_fd, name, path in _temp_files(root_fd, Path(folder), recursive):
            why = _reason_to_keep(dir_fd, name, now, min_age, remove=not dry_run)
            if why is None:
                report.removed.append(str(path))
            else:
                report.kept.append((str(path), why))
    finally:
        os.close(root_fd)
    return report


_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_TEMP_FILE_MODE = 0o600


def _temp_files(dir_fd: int, folder: Path, recursive: bool) -> Iterator[tuple[int, str, Path]]:
    """(dir_fd, name, path) for each temporary file name in the folder open as dir_fd."""
    with os.scandir(dir_fd) as entries:
        found = sorted(((entry.name, entry.is_symlink(), entry.is_dir(follow_symlinks=False))
                        for entry in entries), key=lambda item: item[0])
    for name, is_link, is_dir in found:
        if is_link:
            continue
        if is_dir:
            if recursive:
                child = _open_sub_folder(dir_fd, name)
                if child is None:
                    continue
                try:
                    yield from _temp_files(child, folder / name, recursive)
                finally:
                    os.close(child)
        elif name.startswith(".") and name.endswith(TEMP_SUFFIX):
            yield dir_fd, name, folder / name


def _open_sub_folder(dir_fd: int, name: str) -> Optional[int]:
    """The sub-folder name, opened without following a link (None when it is gone, or is no
    longer a folder: swapped for a link since it was listed)."""
    try:
        return open_folder(name, dir_fd=dir_fd, follow_links=False)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return None
        raise


def _reason_to_keep(dir_fd: int, name: str, now: float, min_age: float, *,
                    remove: bool) -> Optional[str]:
    """None when name is a leftover (removed unless not remove), else why it is kept."""
    try:
        # O_NONBLOCK: opening a FIFO planted under a temporary file's name must not hang.
        fd = os.open(name, os.O_RDONLY | _O_NONBLOCK | _O_NOFOLLOW | _O_CLOEXEC, dir_fd=dir_fd)
    except FileNotFoundError:
        return "gone (its writer finished)"
    except OSError as exc:
        return f"cannot be opened ({exc.strerror})"
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            return "not a regular file"
        if hasattr(os, "geteuid") and (info.st_uid != os.geteuid()
                                       or stat.S_IMODE(info.st_mode) != _TEMP_FILE_MODE):
            return "not made by shardseal (another owner, or a mode other than 0600)"
        if now - info.st_mtime < min_age:
            return "too recent (a writer may still be using it)"
        if _HAVE_FLOCK:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return "locked by a live writer"
        if remove:
            # Still the file we checked? A writer may have renamed it into place meanwhile.
            with contextlib.suppress(FileNotFoundError):
                current = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
                if (current.st_dev, current.st_ino) == (info.st_dev, info.st_ino):
                    os.unlink(name, dir_fd=dir_fd)
        return None
    finally:
        os.close(fd)
