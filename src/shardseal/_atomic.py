"""Atomic file writing, folder locks and fsync: the crash-safety helpers every layer shares.

Key rings (keys), encrypted files (io), manifests and key rotation (ops) and the command line
all replace files by writing a temporary file beside them and renaming it, under a folder lock.
"""

from __future__ import annotations

import builtins
import contextlib
import os
import tempfile
from pathlib import Path
from typing import Union

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

    def __init__(self, destination: PathLike, mode: int = 0o600) -> None:
        self.destination = Path(destination)
        folder = self.destination.parent
        # Shortened so that the temporary name stays within the 255-byte file name limit.
        stem = os.fsencode(self.destination.name)[:TEMP_STEM_BYTES].decode(errors="ignore")
        fd, temp = tempfile.mkstemp(prefix=f".{stem}.", suffix=TEMP_SUFFIX, dir=folder)
        self.temp = Path(temp)
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a new file: nobody else holds it
        os.fchmod(fd, mode)
        self.file = builtins.open(fd, "wb")

    def commit(self) -> None:
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        os.replace(self.temp, self.destination)
        fsync_folder(self.destination.parent)

    def abort(self) -> None:
        try:
            self.file.close()  # raises again when its buffered bytes cannot be written (disk full)
        except OSError:
            pass
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.temp)


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
