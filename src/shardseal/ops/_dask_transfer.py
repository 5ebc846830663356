"""The worker tasks of ``encrypt_dataset`` and ``decrypt_dataset``: each writes its files
under temporary names (or as uploads committed at the end), hashing shards as they are written,
and skips shards already complete. Module-level functions and frozen jobs: they pickle by
reference."""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
from concurrent.futures import Future
from dataclasses import dataclass
from typing import BinaryIO, Callable, Mapping, Optional, Sequence

from fsspec import AbstractFileSystem

from .._atomic import TEMP_SUFFIX, AtomicFile
from ..container import header as _container
from ..container.blob import container_info
from ..errors import ShardsealError
from ..io.files import FILE_BLOCK_SIZE, copy_blocks
from ..io.stream import DecryptingReader, EncryptingWriter
from ..core.buffers import Buffer
from ..core.layout import Suite
from ..keys import specs as _specs
from ..keys.envelope import Recipient
from ..keys.keyref import KeyRef
from ._dask_common import RENAMING_PROTOCOLS, hash_file, is_local, resolve

# What a task gets per file: (source path, destination path, name, source size).
Item = tuple[str, str, str, int]
# What an encrypt task returns per file: (name, size, sha256, plaintext size, skipped).
EncryptResult = tuple[str, int, str, int, bool]
Fill = Callable[[BinaryIO], None]


class _HashingWriter:
    """Wraps the file a shard is written to and hashes exactly the bytes it accepts.

    SHA-256 runs on a helper thread (hashlib releases the GIL), one block behind the writes,
    so that hashing block i overlaps the encryption of block i+1 where a core is free.
    """

    def __init__(self, file: BinaryIO, digest: bool = True) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self._file = file
        self._sha = hashlib.sha256()
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="shardseal-sha256") if digest else None
        self._pending: Optional[Future[None]] = None
        self.size = 0

    def write(self, data: Buffer) -> int:
        view = memoryview(data).cast("B")
        result: Optional[int] = self._file.write(view)  # fsspec files may return None
        written = len(view) if result is None else result
        self.size += written
        if self._pool is not None:
            block = bytes(view[:written])  # the caller may reuse its buffer once this returns
            self._wait()
            self._pending = self._pool.submit(self._sha.update, block)
        return written

    def _wait(self) -> None:
        if self._pending is not None:
            self._pending.result()
            self._pending = None

    def flush(self) -> None:
        self._file.flush()

    def hexdigest(self) -> str:
        """The SHA-256 of everything written ("" when not computed); stops the helper thread."""
        if self._pool is None:
            return ""
        self._wait()
        self._pool.shutdown()
        return self._sha.hexdigest()

    def close(self) -> None:
        """Stops the helper thread (after an error: the digest is not needed)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)


def _write_atomically(fs: AbstractFileSystem, path: str, fill: Fill) -> None:
    """Calls fill(file) on a temporary file and moves it to path only once fill returned."""
    if is_local(fs):
        fs.makedirs(os.path.dirname(path), exist_ok=True)
        atomic = AtomicFile(path, 0o644)
        try:
            fill(atomic.file)
            atomic.commit()
        except BaseException:
            atomic.abort()
            raise
        return
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    if protocol not in RENAMING_PROTOCOLS:
        _upload(fs, path, fill)
        return
    folder, base = path.rsplit("/", 1) if "/" in path else ("", path)
    temp = f"{folder}/.{base}.{secrets.token_hex(6)}{TEMP_SUFFIX}"
    try:
        with fs.open(temp, "wb") as file:
            fill(file)
        fs.mv(temp, path)
    except BaseException:
        if fs.exists(temp):
            fs.rm_file(temp)
        raise


def _upload(fs: AbstractFileSystem, path: str, fill: Fill) -> None:
    """Writes an object under its final name, committed only once fill returned.

    Not ``with fs.open(...)``: fsspec's files complete their upload when closed, an exception
    in the ``with`` block included. With ``autocommit=False`` (s3fs, gcsfs, adlfs) the upload
    is completed by ``commit()`` and thrown away by ``discard()``; elsewhere the object is
    removed after a failure (best effort).
    """
    try:
        file = fs.open(path, "wb", autocommit=False)
        transactional = hasattr(file, "commit") and hasattr(file, "discard")
    except (TypeError, NotImplementedError, ValueError):
        file, transactional = fs.open(path, "wb"), False
    try:
        fill(file)
    except BaseException:
        with contextlib.suppress(Exception):
            if transactional:
                file.discard()
            else:
                file.close()
                fs.rm_file(path)
        raise
    file.close()
    if transactional:
        file.commit()


@dataclass(frozen=True)
class EncryptJob:
    """What every encrypt task of one run shares (pickled into each task)."""

    src_fs: AbstractFileSystem
    dst_fs: AbstractFileSystem
    key: Optional[KeyRef]                 # a key reference, or None
    recipients: Optional[tuple[str, ...]]  # recipient strings, or None
    metadata: Optional[Mapping[str, object]]
    suite: Suite
    threads: Optional[int]
    checkpoint: Optional[Callable[[str], object]]
    digests: bool = True          # SHA-256 of each shard (a manifest needs them)


def encrypt_batch(job: EncryptJob, items: Sequence[Item]) -> list[EncryptResult]:
    """Encrypts [(src path, dst path, name, source size)]; returns one result per item:
    ``(name, size, sha256, plaintext size, skipped)``."""
    key = resolve(job.key) if job.key is not None else None
    recipients = [_specs.parse_recipient(t) for t in job.recipients] if job.recipients else None
    results: list[EncryptResult] = []
    for src, dst, name, source_size in items:
        done = _finished_shard(job, dst, source_size, key, recipients, src)
        if done is not None:
            results.append((name, done[0], done[1], source_size, True))
            continue
        size, sha256 = _encrypt_one(job, src, dst, name, key, recipients)
        results.append((name, size, sha256, source_size, False))
    return results


def _encrypt_one(job: EncryptJob, src: str, dst: str, name: str, key: Optional[bytes],
                 recipients: Optional[list[Recipient]]) -> tuple[int, str]:
    """Encrypts one file into dst atomically; returns the shard's (size, sha256)."""
    digest: list[tuple[int, str]] = []

    def fill(file: BinaryIO) -> None:
        out = _HashingWriter(file, job.digests)
        try:
            _encrypt_into(job, src, name, key, recipients, out)
            digest.append((out.size, out.hexdigest()))
        finally:
            out.close()

    _write_atomically(job.dst_fs, dst, fill)
    return digest[0]


def _encrypt_into(job: EncryptJob, src: str, name: str, key: Optional[bytes],
                  recipients: Optional[list[Recipient]], out: _HashingWriter) -> None:
    """Streams the source file through an EncryptingWriter into out."""
    first = True
    with EncryptingWriter(out, key, recipients=recipients, metadata=job.metadata, threads=job.threads,
                          suite=job.suite) as writer, job.src_fs.open(src, "rb") as source:

        def write(block: memoryview) -> None:
            nonlocal first
            writer.write(block)
            if first and job.checkpoint is not None:
                first = False
                out.flush()
                job.checkpoint(name)  # crash tests: part of the shard is on disk

        copy_blocks(source.readinto, write, None, None)
    out.flush()


def _finished_shard(job: EncryptJob, dst: str, source_size: int, key: Optional[bytes],
                    recipients: Optional[list[Recipient]], src: str) -> Optional[tuple[int, str]]:
    """(size, sha256) of a complete, good shard already at dst, or None to (re)write it.

    With a key the shard is decrypted and authenticated in full and its plaintext compared
    with the source (another shard of the same size, swapped in, or the shard of a source
    edited since, authenticates too); with public recipients only,
    its header, its stanzas' key ids and its exact length are checked (the worker cannot
    decrypt). Either way its plaintext size must be the source file's.
    """
    fs = job.dst_fs
    try:
        if not fs.isfile(dst):
            return None
        with fs.open(dst, "rb") as raw:
            header = _container.read_header(raw.read)
            stored = fs.size(dst)
            info = container_info(header, stored - header.size)
            if info.plaintext_size != source_size:
                return None
            if recipients is not None:
                wanted = {r.key_id for r in recipients}
                if {s.key_id for s in info.stanzas} != wanted:
                    return None
            else:
                raw.seek(0)
                with DecryptingReader(raw, key, threads=job.threads) as reader, \
                        job.src_fs.open(src, "rb") as source:
                    if not _same_plaintext(reader, source):
                        return None
    except (ShardsealError, OSError, ValueError):
        return None
    return hash_file(fs, dst) if job.digests else (stored, "")


def _same_plaintext(reader: DecryptingReader, source: BinaryIO) -> bool:
    """Whether reader decrypts to exactly the bytes of source (both read to their end)."""
    while True:
        block = reader.read(FILE_BLOCK_SIZE)
        expected = source.read(len(block) or 1)
        if not block:
            return not expected
        if block != expected:
            return False


@dataclass(frozen=True)
class DecryptJob:
    """What every decrypt task of one run shares (pickled into each task)."""

    src_fs: AbstractFileSystem
    dst_fs: AbstractFileSystem
    key: Optional[KeyRef]
    identities: tuple[str, ...]
    threads: Optional[int]


def decrypt_batch(job: DecryptJob, items: Sequence[Item]) -> list[tuple[str, int]]:
    """Decrypts [(src path, dst path, name, size)]; returns [(name, plaintext bytes)]."""
    key = resolve(job.key) if job.key is not None else None
    identities = [_specs.load_identity(t) for t in job.identities] or None
    results: list[tuple[str, int]] = []
    for src, dst, name, _ in items:
        counted: list[int] = []

        def fill(file: BinaryIO, src: str = src, counted: list[int] = counted) -> None:
            with job.src_fs.open(src, "rb") as raw, DecryptingReader(
                    raw, key, identities=identities, threads=job.threads) as reader:
                copy_blocks(reader.readinto, file.write, None, None)
                assert reader.size is not None  # known at the end of the stream
                counted.append(reader.size)

        _write_atomically(job.dst_fs, dst, fill)
        results.append((name, counted[0]))
    return results


