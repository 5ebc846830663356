"""Secret files on disk: key files, keyring files and X25519 identity files.

What the three share: a secret file is written with mode 0600 from its creation (never wider,
not even for a moment), atomically (through ``_atomic.AtomicFile``), fsynced together with its
folder, and never overwritten unless asked; reading one is bounded in size and warns with a
:class:`KeyFilePermissionWarning` when group or others may access it. Each caller keeps its own format, messages and error classes.
"""

from __future__ import annotations

import os
import stat
import warnings
from typing import Callable, Union

from .. import _redact
from .._atomic import AtomicFile

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


def write_secret_file(path: PathLike, data: bytes, *, force: bool) -> None:
    """Writes data to path with mode 0600 (narrowed further by the umask), fsynced.

    The data goes to a temporary ``.<name>.*.sseal-tmp`` file beside path (``_atomic.AtomicFile``:
    created with O_EXCL and mode 0600, so it is never readable by others, not even while being
    written; locked while open, so that ``shardseal clean`` removes it only when its writer was
    killed), fsynced, then given the name path, and the folder is fsynced. Readers see no file
    (or the old one) or the whole new one, never a part.

    * force: the temporary file is renamed over path.
    * otherwise: it is linked to path, which never replaces an existing file (see
      ``AtomicFile.commit(replace=False)`` for file systems without hard links).

    Raises:
        FileExistsError: path exists and force is false.
        OSError: the file cannot be written.
    """
    with AtomicFile(path, mode=None) as temp:
        temp.file.write(data)
        temp.commit(replace=force)
