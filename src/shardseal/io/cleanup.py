"""Removing the temporary files that killed writers leave behind.

Every atomic write (``encrypt_file``, ``decrypt_file``, ``shardseal.open(path, "wb")``, the
command line) goes through a temporary ``.<name>.<random>.sseal-tmp`` file beside its
destination, renamed into place when complete and removed on any error. A process killed
outright (SIGKILL, the OOM killer, power loss) cannot remove it: the file stays, with mode
0600, and for ``decrypt`` it holds authenticated plaintext written so far.

``clean_temp_files`` removes such leftovers, and only those: a file is removed when

* its name is ``.<name>.<random>.sseal-tmp`` and it is a regular file (never a link);
* it was last modified at least ``min_age`` seconds ago (10 minutes by default); and
* no process holds its ``flock``: a live writer holds an exclusive lock on its temporary file
  for as long as it writes (released by the kernel when the process dies), so a slow or
  stalled writer's file is kept however old it is.

On systems without ``flock`` (Windows) only the age check protects live writers: choose a
``min_age`` longer than any write takes there.
"""

from __future__ import annotations

import contextlib
import os
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Union

from .files import TEMP_SUFFIX

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

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
        OSError: folder cannot be listed.
        ValueError: min_age is negative.
    """
    if isinstance(min_age, bool) or not isinstance(min_age, (int, float)) or min_age < 0:
        raise ValueError("min_age must be a non-negative number of seconds")
    report = CleanReport()
    now = time.time()
    for path in _temp_files(Path(folder), recursive):
        why = _reason_to_keep(path, now, min_age, remove=not dry_run)
        if why is None:
            report.removed.append(str(path))
        else:
            report.kept.append((str(path), why))
    return report


def _temp_files(folder: Path, recursive: bool):
    with os.scandir(folder) as entries:
        found = sorted(entries, key=lambda entry: entry.name)
    for entry in found:
        if entry.is_symlink():
            continue
        if entry.is_dir(follow_symlinks=False):
            if recursive:
                yield from _temp_files(Path(entry.path), recursive)
        elif entry.name.startswith(".") and entry.name.endswith(TEMP_SUFFIX):
            yield Path(entry.path)


def _reason_to_keep(path: Path, now: float, min_age: float, *, remove: bool):
    """None when path is a leftover (removed unless not remove), else why it is kept."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        return "gone (its writer finished)"
    except OSError as exc:
        return f"cannot be opened ({exc.strerror})"
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            return "not a regular file"
        if now - info.st_mtime < min_age:
            return "too recent (a writer may still be using it)"
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return "locked by a live writer"
        if remove:
            # Still the file we checked? A writer may have renamed it into place meanwhile.
            with contextlib.suppress(FileNotFoundError):
                current = os.lstat(path)
                if (current.st_dev, current.st_ino) == (info.st_dev, info.st_ino):
                    os.unlink(path)
        return None
    finally:
        os.close(fd)
