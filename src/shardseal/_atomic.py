"""Atomic file writing, folder locks and fsync: the crash-safety helpers every layer shares.

Key rings (keys), encrypted files (io), manifests and key rotation (ops) and the command line
all replace files by writing a temporary file beside them and renaming it, under a folder lock.
"""

from __future__ import annotations

import builtins
import contextlib
import os
import secrets
import tempfile
from pathlib import Path
from typing import Optional, Union

from . import _redact

try:
    import fcntl
except ImportError:  # Windows: no flock; concurrent writers are then not serialised
    fcntl = None

PathLike = Union[str, "os.PathLike[str]"]
TEMP_SUFFIX = ".sseal-tmp"
TEMP_STEM_BYTES = 200


class AtomicFile:
    """A temporary file beside `destination` that replaces it only when committed.

    The data is fsynced before the rename and the folder after it, so after a crash the
    destination is either absent (or its old version) or complete. Until then only a
    ``.<name>.*.sseal-tmp`` file exists, removed on abort. The writer holds an exclusive
    ``flock`` on it while it is open, so that ``shardseal clean`` (``cleanup.clean_temp_files``)
    can tell a live writer's file from one a killed process left behind.
    """

    def __init__(self, destination: PathLike, mode: int = 0o600, *,
                 dir_fd: Optional[int] = None) -> None:
        """Creates the temporary file.

        Args:
            destination: the path to replace when committed.
            mode: the file's permission bits.
            dir_fd: an open folder that destination (then a bare file name) lies in. The
                temporary file is created, renamed and removed relative to it, never through
                a symbolic link: the write lands in that folder whatever is renamed or linked
                in its place meanwhile.

        Raises:
            OSError: the temporary file cannot be created.
            ValueError: with dir_fd, destination is not a bare file name.
        """
        self.destination = Path(destination)
        self.dir_fd = dir_fd
        # Shortened so that the temporary name stays within the 255-byte file name limit.
        stem = os.fsencode(self.destination.name)[:TEMP_STEM_BYTES].decode(errors="ignore")
        if dir_fd is None:
            _redact.refuse_missing_secret_path(destination, for_writing=True)
            fd, temp = tempfile.mkstemp(prefix=f".{stem}.", suffix=TEMP_SUFFIX,
                                        dir=self.destination.parent)
        else:
            if str(self.destination) != self.destination.name:
                raise ValueError("with dir_fd, the destination must be a file name, not a path")
            fd, temp = _create_temp_in(dir_fd, f".{stem}.")
        self.temp = Path(temp)
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a new file: nobody else holds it
        # Mode 0600 while it is written (what ``shardseal clean`` looks for); mode at commit.
        os.fchmod(fd, 0o600)
        self.mode = mode
        self.file = builtins.open(fd, "wb")

    def commit(self) -> None:
        self.file.flush()
        os.fchmod(self.file.fileno(), self.mode)
        os.fsync(self.file.fileno())
        self.file.close()
        if self.dir_fd is None:
            os.replace(self.temp, self.destination)
            fsync_folder(self.destination.parent)
        else:
            os.replace(self.temp, self.destination, src_dir_fd=self.dir_fd, dst_dir_fd=self.dir_fd)
            os.fsync(self.dir_fd)

    def abort(self) -> None:
        try:
            self.file.close()  # raises again when its buffered bytes cannot be written (disk full)
        except OSError:
            pass
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.temp, dir_fd=self.dir_fd)


def _create_temp_in(dir_fd: int, prefix: str) -> tuple[int, str]:
    """A new ``prefix*.sseal-tmp`` file (mode 0600) in the folder open as dir_fd: O_EXCL and
    O_NOFOLLOW, so that a name planted there (a link) is never opened."""
    flags = (os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
             | getattr(os, "O_CLOEXEC", 0))
    for _ in range(100):
        name = f"{prefix}{secrets.token_hex(4)}{TEMP_SUFFIX}"
        try:
            return os.open(name, flags, 0o600, dir_fd=dir_fd), name
        except FileExistsError:
            continue
    raise FileExistsError(17, "no unused temporary file name", prefix)


def fsync_folder(folder: Path) -> None:
    """Makes a rename or a new file in folder durable (POSIX: fsync the folder itself)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def folder_lock(folder):
    """Holds an exclusive ``flock`` on a folder while files in it are read, changed and replaced.

    Files that are replaced by renaming a new file over them cannot carry the lock themselves,
    and a lock on the folder leaves no lock file behind. Key rings, dataset manifests and key
    rotation take it around each read-modify-replace, so two processes never overwrite each
    other's change. Held per open descriptor: do not nest it for one folder in one process.
    """
    if fcntl is None:
        yield
        return
    fd = os.open(folder, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock
