"""Secret files on disk: key files, keyring files and X25519 identity files.

What the three share: a secret file is written with mode 0600 from its creation (never wider,
not even for a moment), fsynced together with its folder, and never overwritten unless asked;
reading one is bounded in size and warns with a :class:`KeyFilePermissionWarning` when group
or others may access it. Each caller keeps its own format, messages and error classes.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
import warnings
from pathlib import Path
from typing import Callable, Union

from .. import _redact

try:
    import fcntl
except ImportError:  # Windows: no flock
    fcntl = None

PathLike = Union[str, "os.PathLike[str]"]


class KeyFilePermissionWarning(UserWarning):
    """A key file may be read or written by users other than its owner."""

    # Public as shardseal.keyfile.KeyFilePermissionWarning (re-exported there): keep that its
    # name in reprs, pickles and the docs, as before the class moved here.
    __module__ = "shardseal.keyfile"


def read_secret_file(name: str, *, what: str, limit: int, too_large: Callable[[], Exception],
                     stacklevel: int = 2) -> bytes:
    """Reads a secret file of at most limit bytes, warning if group or others may access it.

    Any readable file works, pipes included; only a regular file can be checked for its mode.

    Args:
        name: the file's path, as messages name it.
        what: what the warning calls the file ("key file", "keyring file", ...).
        limit: the most bytes the file may hold; no more than one byte beyond it is read.
        too_large: makes the error raised when the file holds more than limit bytes.
        stacklevel: where the warning points, counted as ``warnings.warn`` counts it from the
            function calling this one (2: that function's caller).

    Raises:
        OSError: the file cannot be opened or read (IsADirectoryError for a folder).
        Exception: what too_large returns, when the file is larger than limit.
    """
    _redact.refuse_missing_secret_path(name)
    fd = os.open(name, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    with open(fd, "rb", closefd=True) as file:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise IsADirectoryError(21, "Is a directory", name)
        if stat.S_ISREG(info.st_mode) and os.name == "posix" and info.st_mode & 0o077:
            warnings.warn(
                f"{what} {name} is accessible by group or others (mode "
                f"{stat.S_IMODE(info.st_mode):04o}); restrict it with: chmod 600 {name}",
                KeyFilePermissionWarning,
                stacklevel=stacklevel + 1,  # + 1 for this function's own frame
            )
        data = file.read(limit + 1)
    if len(data) > limit:
        raise too_large()
    return data


def write_secret_file(path: PathLike, data: bytes, *, overwrite: bool,
                      atomic_create: bool = False) -> None:
    """Writes data to path with mode 0600 (narrowed further by the umask), fsynced.

    The file holding data is created with O_EXCL and its final mode, so it is never readable
    by others, not even while being written; the folder is fsynced afterwards.

    * overwrite: data goes to a temporary file beside path, renamed over it (readers see the
      old file or the new one, never a mix).
    * otherwise, with atomic_create: the temporary file is hard-linked to path, which never
      replaces an existing file (readers see no file or the whole new one); where the file
      system has no hard links, path is written in place as below.
    * otherwise: path is created with O_EXCL and written in place (removed again if writing
      fails).

    Raises:
        FileExistsError: path exists and overwrite is false.
        OSError: the file cannot be written.
    """
    _redact.refuse_missing_secret_path(path, for_writing=True)
    path = Path(path)
    if overwrite:
        _replace(path, data)
    elif atomic_create:
        _create_by_link(path, data)
    else:
        _create_in_place(path, data)
    _fsync_folder(path.parent)


def _create_in_place(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY | getattr(os, "O_CLOEXEC", 0), 0o600)
    try:
        _write_all(fd, data)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise
    os.close(fd)


def _replace(path: Path, data: bytes) -> None:
    # mkstemp creates the file with O_EXCL and mode 0600.
    fd, temp = _temp_file(path)
    try:
        _write_all(fd, data)
        os.close(fd)
        fd = -1
        os.replace(temp, path)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise


def _create_by_link(path: Path, data: bytes) -> None:
    fd, temp = _temp_file(path)
    try:
        try:
            _write_all(fd, data)
        finally:
            os.close(fd)
        try:
            os.link(temp, path)  # unlike a rename, a hard link never replaces path
        except FileExistsError:
            raise
        except OSError:
            # Some file systems have no hard links: create the file in place instead (O_EXCL).
            _create_in_place(path, data)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)


def _temp_file(path: Path) -> tuple[int, str]:
    """A new temporary file beside path, mode 0600 (mkstemp uses O_EXCL), locked while open.

    Named and locked as the atomic writer's temporary files are (``.<name>.*.sseal-tmp``, an
    exclusive ``flock``), so that ``shardseal clean`` removes one a killed writer left behind
    (it holds a key) and never one a live writer is using.
    """
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".sseal-tmp", dir=path.parent)
    if fcntl is not None:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a new file: nobody else holds it
    return fd, temp


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
    os.fsync(fd)


def _fsync_folder(folder: Path) -> None:
    with contextlib.suppress(OSError):  # not every platform can open a folder
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
