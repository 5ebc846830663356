"""Atomic file writing, folder locks and fsync: the crash-safety helpers every layer shares.

Key files, key rings and identity files (keys), encrypted files (io), manifests and key
rotation (ops) and the command line all replace files through ``AtomicFile``: a temporary file
beside them, fsynced, renamed (or linked) into place, the folder fsynced (``fsync_folder``,
whose error policy is the only one), under a folder lock where they read-modify-write.
"""

from __future__ import annotations

import builtins
import contextlib
import errno
import os
import secrets
import stat
import tempfile
from pathlib import Path
from typing import Iterator, Optional, Union

from . import _redact

try:
    import fcntl
except ImportError:  # Windows: no flock; concurrent writers are then not serialised
    _HAVE_FLOCK = False
else:
    _HAVE_FLOCK = True

PathLike = Union[str, "os.PathLike[str]"]
TEMP_SUFFIX = ".sseal-tmp"
TEMP_STEM_BYTES = 200


class AtomicFile:
    """A temporary file beside `destination` that replaces it only when committed.

    The one implementation of atomic file writing: encrypted files (io), manifests and key
    rotation (ops), key, keyring and identity files (keys) and the command line all use it.

    The data is fsynced before the rename and the folder after it, so after a crash the
    destination is either absent (or its old version) or complete. Until then only a
    ``.<name>.*<suffix>`` file (``.sseal-tmp`` unless the caller names another suffix) exists,
    with mode 0600, removed on abort. The writer holds an exclusive ``flock`` on it while it is
    open, so that ``shardseal clean`` (``cleanup.clean_temp_files``) and ``rotation.recover()``
    can tell a live writer's file from one a killed process left behind.

    Use it as a context manager (the file is aborted unless committed) or call ``commit()`` or
    ``abort()`` yourself. Write through ``file`` (buffered) or ``fd`` (raw), not both.
    """

    def __init__(self, destination: PathLike, mode: Optional[int] = 0o600, *,
                 dir_fd: Optional[int] = None, suffix: str = TEMP_SUFFIX,
                 owner: Optional[tuple[int, int]] = None) -> None:
        """Creates the temporary file.

        Args:
            destination: the path to replace when committed.
            mode: the permission bits the file gets when committed (until then it has mode
                0600). None: 0600 narrowed by the process umask, as ``os.open(..., 0o600)``
                would create it (for files that hold a secret).
            dir_fd: an open folder that destination (then a bare file name) lies in. The
                temporary file is created, renamed and removed relative to it, never through
                a symbolic link: the write lands in that folder whatever is renamed or linked
                in its place meanwhile.
            suffix: the temporary file's name ends with it (``shardseal clean`` removes only
                ``.sseal-tmp`` files; key rotation's own files have ``.sseal-rotate-tmp``).
            owner: (uid, gid) to give the file, where the process is allowed to (a file
                replaced in place keeps its owner); None keeps the process's own.

        Raises:
            OSError: the temporary file cannot be created.
            ValueError: with dir_fd, destination is not a bare file name.
        """
        self.destination = Path(destination)
        self.dir_fd = dir_fd
        self._committed = False
        # Shortened so that the temporary name stays within the 255-byte file name limit.
        stem = os.fsencode(self.destination.name)[:TEMP_STEM_BYTES].decode(errors="ignore")
        if dir_fd is None:
            _redact.refuse_missing_secret_path(destination, for_writing=True)
            fd, temp = tempfile.mkstemp(prefix=f".{stem}.", suffix=suffix,
                                        dir=self.destination.parent)
        else:
            if str(self.destination) != self.destination.name:
                raise ValueError("with dir_fd, the destination must be a file name, not a path")
            fd, temp = _create_temp_in(dir_fd, f".{stem}.", suffix)
        self.temp = Path(temp)
        try:
            if _HAVE_FLOCK:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a new file: nobody else holds it
            created_mode = stat.S_IMODE(os.fstat(fd).st_mode)  # 0600 narrowed by the umask
            # Mode 0600 while it is written (what ``shardseal clean`` looks for); mode at commit.
            os.fchmod(fd, 0o600)
            if owner is not None and hasattr(os, "fchown") and owner != (os.geteuid(), os.getegid()):
                with contextlib.suppress(PermissionError):
                    os.fchown(fd, *owner)
        except BaseException:
            os.close(fd)
            self._unlink_temp()
            raise
        self.mode = created_mode if mode is None else mode
        self.file = builtins.open(fd, "wb")

    @property
    def fd(self) -> int:
        """The temporary file's descriptor, for raw writes (``os.write``, ``copy_file_range``)."""
        return self.file.fileno()

    def commit(self, *, replace: bool = True, keep_open: bool = False) -> None:
        """Makes the data durable under the destination's name.

        Args:
            replace: replace an existing destination. False: the file appears under the
                destination's name only if nothing has it yet (a hard link, then the temporary
                name is removed; where the file system has no hard links, the name is first
                claimed with O_EXCL, so that readers may briefly see an empty file but another
                writer's file is never replaced).
            keep_open: keep the file open, and its ``flock`` held, until ``close()`` (or the
                end of the ``with`` block); rotation keeps its journal locked this way.

        Raises:
            FileExistsError: replace is false and the destination exists.
            OSError: the data or the rename cannot be made durable (see ``fsync_folder``).
        """
        self.file.flush()
        os.fchmod(self.fd, self.mode)
        os.fsync(self.fd)
        if not keep_open:
            self.file.close()
        if replace:
            os.replace(self.temp, self.destination, src_dir_fd=self.dir_fd,
                       dst_dir_fd=self.dir_fd)
        else:
            self._link_new()
        self._committed = True
        if self.dir_fd is None:
            fsync_folder(self.destination.parent)
        else:
            _fsync_folder_fd(self.dir_fd)

    def abort(self) -> None:
        """Closes and removes the temporary file (nothing happens to the destination)."""
        try:
            self.file.close()  # raises again when its buffered bytes cannot be written (disk full)
        except OSError:
            pass
        finally:
            if not self._committed:
                self._unlink_temp()

    def close(self) -> None:
        """Closes a committed file (releasing its lock); aborts one that was not committed."""
        if self._committed:
            self.file.close()
        else:
            self.abort()

    def __enter__(self) -> "AtomicFile":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _link_new(self) -> None:
        """Gives the temporary file the destination's name, which must be free."""
        try:
            os.link(self.temp, self.destination, src_dir_fd=self.dir_fd,
                    dst_dir_fd=self.dir_fd, follow_symlinks=False)
        except FileExistsError:
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST),
                                  str(self.destination)) from None
        except OSError:
            # No hard links here (FAT, some network file systems): claim the name with
            # O_EXCL, then rename over the claim, which is ours.
            self._claim_destination()
            try:
                os.replace(self.temp, self.destination, src_dir_fd=self.dir_fd,
                           dst_dir_fd=self.dir_fd)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(self.destination, dir_fd=self.dir_fd)
                raise
            return
        self._unlink_temp()

    def _claim_destination(self) -> None:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_NOFOLLOW | _O_CLOEXEC
        try:
            fd = os.open(self.destination, flags, 0o600, dir_fd=self.dir_fd)
        except FileExistsError:
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST),
                                  str(self.destination)) from None
        os.close(fd)

    def _unlink_temp(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.temp, dir_fd=self.dir_fd)


_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_O_DIRECTORY = getattr(os, "O_DIRECTORY", 0)


def open_folder(path: PathLike, *, dir_fd: Optional[int] = None, follow_links: bool = True) -> int:
    """A descriptor of the folder at path (relative to dir_fd when given), for ``*at`` calls
    that write or scan inside it without going through paths again.

    Raises:
        OSError: it cannot be opened; with follow_links=False, a link at path raises ELOOP
            (or ENOTDIR), and is never followed.
    """
    flags = os.O_RDONLY | _O_DIRECTORY | _O_CLOEXEC | (0 if follow_links else _O_NOFOLLOW)
    return os.open(path, flags, dir_fd=dir_fd)


def _create_temp_in(dir_fd: int, prefix: str, suffix: str) -> tuple[int, str]:
    """A new ``prefix*suffix`` file (mode 0600) in the folder open as dir_fd: O_EXCL and
    O_NOFOLLOW, so that a name planted there (a link) is never opened."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_NOFOLLOW | _O_CLOEXEC
    for _ in range(100):
        name = f"{prefix}{secrets.token_hex(4)}{suffix}"
        try:
            return os.open(name, flags, 0o600, dir_fd=dir_fd), name
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no unused temporary file name", prefix)


# fsync on a folder fails with these where the file system or platform cannot sync a folder
# (its renames are then as durable as that file system makes them): nothing to report.
_FOLDER_SYNC_UNSUPPORTED = frozenset(
    code for code in (errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EBADF,
                      getattr(errno, "ENOSYS", None)) if code is not None)


def fsync_folder(folder: PathLike) -> None:
    """Makes a rename or a new file in folder durable (POSIX: fsync the folder itself).

    The one error policy for every writer: a step the platform or file system cannot take
    is skipped, a failure of one it can take is raised.

    * Skipped: the folder cannot be opened for reading (Windows, where folders are not
      opened; a folder with write but no read permission) or its fsync fails with EINVAL,
      ENOTSUP/EOPNOTSUPP, EBADF or ENOSYS (file systems that do not sync folders).
    * Raised: any other error, EIO above all: the rename may then not survive a crash,
      and the caller must not report the write as durable.

    Raises:
        OSError: the folder's fsync failed with an error other than the ones above (e.g.
            EIO, ENOSPC), or the folder does not exist.
    """
    try:
        fd = os.open(folder, os.O_RDONLY | _O_CLOEXEC)
    except (PermissionError, IsADirectoryError):
        return  # cannot open a folder here: nothing to sync
    try:
        _fsync_folder_fd(fd)
    finally:
        os.close(fd)


def _fsync_folder_fd(fd: int) -> None:
    """fsync of an open folder, with fsync_folder's error policy."""
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in _FOLDER_SYNC_UNSUPPORTED:
            raise


@contextlib.contextmanager
def folder_lock(folder: PathLike) -> Iterator[None]:
    """Holds an exclusive ``flock`` on a folder while files in it are read, changed and replaced.

    Files that are replaced by renaming a new file over them cannot carry the lock themselves,
    and a lock on the folder leaves no lock file behind. Key rings, dataset manifests and key
    rotation take it around each read-modify-replace, so two processes never overwrite each
    other's change. Held per open descriptor: do not nest it for one folder in one process.
    """
    if not _HAVE_FLOCK:
        yield
        return
    fd = os.open(folder, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock
