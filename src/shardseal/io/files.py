"""Encrypted files: whole-file encryption and ``shardseal.open`` (atomic writes: ``_atomic``)."""

from __future__ import annotations

import builtins
import contextlib
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Callable, Literal, Mapping, Optional, Union, cast, overload

from .. import _redact, audit
from .._atomic import TEMP_STEM_BYTES, TEMP_SUFFIX, AtomicFile, folder_lock  # noqa: F401 - also used from here
from .stream import DecryptingReader, EncryptingWriter
from ..core.layout import Suite
from ..keys.keyref import KeyLike
from ..keys.registry import Identities
from ..keys.registry import Recipients

if TYPE_CHECKING:
    from typing_extensions import TypeGuard

PathLike = Union[str, "os.PathLike[str]"]
# What shardseal.open reads or writes: a path, or a binary file object.
FileTarget = Union[str, bytes, "os.PathLike[str]", "os.PathLike[bytes]", IO[bytes]]
# progress=True shows a tqdm bar; a callable is called with each block's byte count.
Progress = Union[bool, Callable[[int], object]]
# Whole-file functions move data in blocks of this size: 3 blocks in flight bound the memory.
FILE_BLOCK_SIZE = 8 * 2**20


def _is_path(obj: object) -> TypeGuard[Union[str, bytes, os.PathLike[str], os.PathLike[bytes]]]:
    return isinstance(obj, (str, bytes, os.PathLike))


@overload
def open(file: FileTarget, mode: Literal["rb"] = "rb", key: Optional[KeyLike] = None, *,
         identities: Optional[Identities] = None, threads: Optional[int] = None,
         cache_chunks: int = 32) -> DecryptingReader: ...


@overload
def open(file: FileTarget, mode: Literal["wb"], key: Optional[KeyLike] = None, *,
         recipients: Optional[Recipients] = None, metadata: Optional[Mapping[str, Any]] = None,
         threads: Optional[int] = None, suite: Suite = 256) -> EncryptingWriter: ...


def open(file: FileTarget, mode: str = "rb", key: Optional[KeyLike] = None, *,
         recipients: Optional[Recipients] = None, identities: Optional[Identities] = None,
         metadata: Optional[Mapping[str, Any]] = None, threads: Optional[int] = None, suite: Suite = 256,
         cache_chunks: int = 32) -> Union[DecryptingReader, EncryptingWriter]:
    """Opens a shardseal container as a binary stream.

    Args:
        file: a path, or a binary file object (seekable for random access; a pipe works for
            sequential reading and for writing).
        mode: ``"rb"`` to decrypt (random access, ``pread``), ``"wb"`` to encrypt.
        key: the 32-byte key, or a key reference (``shardseal.keyref``) resolved here.
        recipients: ``"wb"`` only, instead of key: envelope encryption for these recipients
            (see ``shardseal.encrypt``).
        identities: ``"rb"`` only: identities to try after key (see ``shardseal.decrypt``).
        metadata: ``"wb"`` only: JSON metadata for the header (authenticated, not secret).
        threads: worker threads for long reads and for writing; None uses every CPU.
        suite: ``"wb"`` only: 256 or 128.
        cache_chunks: ``"rb"`` only: how many decrypted 16 KiB chunks to keep for small reads.

    Returns:
        A ``DecryptingReader`` or an ``EncryptingWriter`` (both ``io.BufferedIOBase``). A writer
        given a path writes a temporary file and renames it into place when it completes. An
        interrupted write never completes (see ``EncryptingWriter``: an exception in its
        ``with`` block, ``close()`` while an exception propagates, garbage collection, the
        process dying): nothing is left under the path, and a file object is left holding an
        incomplete container that fails with ``TruncatedError``.

    Raises:
        ValueError: an unsupported mode.
        FormatError, KeyNotFoundError, AuthenticationError, TruncatedError: ``"rb"`` on a
            container that cannot be opened (the header and commitment are checked here).
    """
    if mode not in ("rb", "wb"):
        raise ValueError(f"mode must be 'rb' or 'wb', got {_redact.shown(mode)} (containers are binary)")
    if mode == "rb":
        if recipients is not None:
            raise TypeError("recipients= is for writing; give key= or identities= to read")
        if key is None and identities is None:
            raise TypeError("open(..., 'rb') needs key= or identities=")
        if _is_path(file):
            _redact.refuse_missing_secret_path(file)
            return DecryptingReader(builtins.open(file, "rb"), key, identities=identities,
                                    threads=threads, cache_chunks=cache_chunks, close_raw=True)
        return DecryptingReader(file, key, identities=identities, threads=threads,
                                cache_chunks=cache_chunks)
    if identities is not None:
        raise TypeError("identities= is for reading; give key= or recipients= to write")
    if key is None and recipients is None:
        raise TypeError("open(..., 'wb') needs key= or recipients=")
    if _is_path(file):
        atomic = AtomicFile(cast(PathLike, file))  # AtomicFile also takes bytes paths
        with audit.target(file):
            return EncryptingWriter(atomic.file, key, recipients=recipients, metadata=metadata,
                                    threads=threads, suite=suite, on_close=atomic.commit,
                                    on_abort=atomic.abort)
    return EncryptingWriter(file, key, recipients=recipients, metadata=metadata, threads=threads,
                            suite=suite)


class _ProgressCallback:
    """Adapts a caller's ``progress(n_bytes)`` function to the bar interface used here."""

    def __init__(self, callback: Callable[[int], object]) -> None:
        self.update = callback


def _progress_bar(progress: Progress, total: Optional[int], description: str) -> Any:
    """A tqdm bar on stderr for progress=True, the caller's callback, or None."""
    if callable(progress):
        return contextlib.nullcontext(_ProgressCallback(progress))
    if not progress:
        return contextlib.nullcontext(None)
    from tqdm import tqdm

    return tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=description)


def copy_blocks(read_into: Callable[[bytearray], Any], write: Callable[[memoryview], object],
                total: Optional[int], progress: Any) -> None:
    """Moves blocks from read_into to write, reading the next block while one is processed
    and written (write runs the crypto; the GIL is released in both)."""
    buffers = [bytearray(FILE_BLOCK_SIZE), bytearray(FILE_BLOCK_SIZE)]
    with ThreadPoolExecutor(1, thread_name_prefix="shardseal-reader") as reader:
        pending = reader.submit(read_into, buffers[0])
        turn = 0
        while True:
            n = pending.result()
            if n == 0:
                break
            current = memoryview(buffers[turn])[:n]
            turn ^= 1
            pending = reader.submit(read_into, buffers[turn])
            write(current)
            if progress is not None:
                progress.update(n)


def encrypt_file(src: PathLike, dst: PathLike, key: Optional[KeyLike] = None, *,
                 recipients: Optional[Recipients] = None, metadata: Optional[Mapping[str, Any]] = None,
                 threads: Optional[int] = None, suite: Suite = 256, progress: Progress = False, dir_fd: Optional[int] = None) -> int:
    """Encrypts the file src into dst in bounded memory, atomically.

    dst is written as a temporary file in its folder, fsynced and renamed into place; on any
    failure (an error, Ctrl-C) no partial output exists under dst and src is untouched.
    src and dst may be the same path. dst gets src's permission bits. progress=True shows a
    tqdm bar on stderr; a callable is called with the byte count of each block done.
    Give key (a 32-byte key) or recipients (envelope encryption, see ``shardseal.encrypt``).
    dir_fd: an open folder; dst is then a file name in it, written without following any
    link (see ``AtomicFile``).

    Returns:
        The number of plaintext bytes encrypted.

    Raises:
        OSError: src cannot be read or dst cannot be written.
        TypeError, ValueError: bad arguments (as for ``shardseal.encrypt``).
    """
    _redact.refuse_missing_secret_path(src)
    with builtins.open(src, "rb", buffering=0) as source, audit.target(dst):
        mode = os.fstat(source.fileno()).st_mode & 0o777
        total = os.fstat(source.fileno()).st_size
        atomic = AtomicFile(dst, mode, dir_fd=dir_fd)
        writer = EncryptingWriter(atomic.file, key, recipients=recipients, metadata=metadata,
                                  threads=threads, suite=suite, on_close=atomic.commit,
                                  on_abort=atomic.abort)
        with writer, _progress_bar(progress, total, f"encrypt {Path(src).name}") as bar:
            copy_blocks(source.readinto, writer.write, total, bar)
        return writer.tell()


def decrypt_file(src: PathLike, dst: PathLike, key: Optional[KeyLike] = None, *,
                 identities: Optional[Identities] = None,
                 threads: Optional[int] = None, progress: Progress = False,
                 dir_fd: Optional[int] = None) -> int:
    """Decrypts the container src into dst in bounded memory, atomically.

    Every chunk is authenticated before it is written, and dst appears only once the whole
    file has authenticated: on any failure (tampering, a wrong key, truncation, Ctrl-C) nothing
    exists under dst. A process killed outright (SIGKILL, power loss) can leave its temporary
    ``.<name>.*.sseal-tmp`` file (mode 0600) holding authenticated plaintext written so far. src and dst may be the same path. dst is created with mode 0600.
    progress, dir_fd: as for ``encrypt_file``. Give key or identities (see ``shardseal.decrypt``).

    Returns:
        The number of plaintext bytes written.

    Raises:
        FormatError, KeyNotFoundError, AuthenticationError, TruncatedError: as for
            ``shardseal.decrypt``.
        OSError: src cannot be read or dst cannot be written.
    """
    _redact.refuse_missing_secret_path(src)
    with DecryptingReader(builtins.open(src, "rb", buffering=0), key, identities=identities,
                          threads=threads, close_raw=True) as reader:
        atomic = AtomicFile(dst, dir_fd=dir_fd)
        try:
            with _progress_bar(progress, reader.size, f"decrypt {Path(src).name}") as bar:
                copy_blocks(reader.readinto, atomic.file.write, reader.size, bar)
            atomic.commit()
        except BaseException:
            atomic.abort()
            raise
        return cast(int, reader.size)  # known once the whole source has been read
