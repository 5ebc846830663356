"""Reads, writes and copies on open file descriptors, for key rotation and its recovery.

Whole writes (``os.write`` may write less than it is given), exact reads (a short read means the
file was truncated under the rotation), copies done in the kernel where it can, and the
non-blocking lock by which a running rotation tells ``recover()`` to leave its files alone.
"""

from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path
from typing import Callable

from .._atomic import fsync_folder
from ..core.buffers import Buffer
from ..errors import TruncatedError

try:
    import fcntl
except ImportError:  # not POSIX: no advisory locks, a live rotation is not protected
    fcntl = None  # type: ignore[assignment]


def try_lock(fd: int) -> bool:
    """Takes an exclusive lock on fd without waiting; False when another process holds it."""
    if fcntl is None:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def write_all(fd: int, data: Buffer) -> None:
    """Writes all of data at fd's position."""
    view = memoryview(data)
    while view.nbytes:
        view = view[os.write(fd, view):]


def pwrite_all(fd: int, data: bytes, offset: int) -> None:
    """Writes all of data at offset."""
    view = memoryview(data)
    while view.nbytes:
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written


def pread_exact(fd: int, size: int, offset: int) -> bytes:
    """size bytes from offset.

    Raises:
        TruncatedError: the file ends before them.
    """
    data = os.pread(fd, size, offset)
    if len(data) != size:
        raise TruncatedError("the file was truncated during the rotation")
    return data


def remove(path: Path) -> None:
    """Removes path (gone already is fine) and makes the removal durable."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    fsync_folder(path.parent)


def copy_range(source: int, destination: int, offset: int, size: int) -> None:
    """Copies size bytes from source at offset to destination's position, in the kernel
    where possible (copy_file_range may share blocks; sendfile; else read and write).

    Raises:
        TruncatedError: source ends before offset + size.
        OSError: a read or write failed.
    """
    remaining = size
    copies: tuple[Callable[[int, int, int, int], int], ...] = (_copy_file_range, _sendfile, _read_write)
    for copy in copies:
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
    write_all(destination, data)
    return len(data)
