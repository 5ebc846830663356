"""Streams over containers: a random-access decrypting reader and an encrypting writer.

Both work in bounded memory on files of any size. The reader decrypts only the 16 KiB chunks a
read touches (on a regular file, pread + authenticate + decrypt is one native call; a small
cache keeps recent chunks for reads that walk through a file; long reads decrypt many chunks at
once on the thread pool), and authenticates the final chunk before it reveals where the data ends.
"""

from __future__ import annotations

import io
import os
import stat
import sys
import threading
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from types import TracebackType
from typing import IO, Any, Callable, Mapping, NoReturn, Optional, Protocol, Union

from ..core import backend as _backend, buffers as _buffers, layout as _layout
from ..container import header as _container
from ..container.blob import read_exact
from ..keys import envelope as _envelope, registry as _registry
from .. import audit, metrics
from ..core.layout import CHUNK_SIZE, MESSAGE_HEADER_SIZE, SEALED_CHUNK_SIZE, TAG_SIZE
from ..errors import AuthenticationError, ShardsealError, TruncatedError
from ..core.buffers import Buffer, BytesLike
from ..core.layout import Suite
from ..keys.keyref import KeyLike, resolve_reference
from ..keys.envelope import DirectKey
from ..keys.registry import Identities, Recipients

# Counters of shardseal.metrics: a reader counts one container (and its size) when it opens,
# never per read; a writer when it completes.
_count_stream_opened = metrics.container_counter("opened", "stream")
_count_stream_sealed = metrics.container_counter("sealed", "stream")

# Reads of at least this many whole chunks skip the cache and decrypt straight into the
# caller's buffer, in batches of at most BULK_BATCH_CHUNKS (4 MiB) to bound memory.
BULK_MIN_CHUNKS = 4
BULK_BATCH_CHUNKS = 256
DEFAULT_CACHE_CHUNKS = 32
# The writer encrypts and writes in batches of this many chunks (4 MiB).
WRITE_BATCH_CHUNKS = 256


class _RawWriter(Protocol):
    """A destination of write_all: a file object, buffered or not (a raw one may take part of
    a write, or none: None)."""

    def write(self, data: memoryview, /) -> Optional[int]: ...


class _MessageKeys(Protocol):
    """The per-message keys of either backend (``MessageKeys`` of the native module or of
    core._pybackend), as the streams use them."""

    @property
    def commitment(self) -> bytes: ...

    def seal_chunks_into(self, first_chunk: int, plaintext: BytesLike, out: BytesLike, final: bool,
                         threads: int) -> int: ...

    def open_chunks_into(self, first_chunk: int, ciphertext: BytesLike, out: BytesLike, final: bool,
                         threads: int) -> int: ...

    def read_into(self, fd: int, data_start: int, plaintext_size: int, offset: int, out: BytesLike,
                  threads: int) -> int: ...

    def read(self, fd: int, data_start: int, plaintext_size: int, offset: int, size: int,
             threads: int) -> bytes: ...


def write_all(raw: _RawWriter, data: Buffer) -> None:
    """Writes all of data: unbuffered destinations may accept only part of a write."""
    view = memoryview(data)
    while view.nbytes:
        written = raw.write(view)
        if written is None:
            raise BlockingIOError("the destination is non-blocking and not ready for writing")
        view = view[written:]


class _PositionalSource:
    """Thread-safe reads at absolute offsets: os.pread on a regular file, else seek + read
    under a lock (fsspec files, BytesIO)."""

    def __init__(self, raw: IO[bytes]) -> None:
        self._raw = raw
        self._lock = threading.Lock()
        self._fd: Optional[int] = None
        try:
            fd = raw.fileno()
            if stat.S_ISREG(os.fstat(fd).st_mode) and hasattr(os, "preadv"):
                self._fd = fd
        except (AttributeError, OSError, io.UnsupportedOperation):
            pass

    @property
    def fd(self) -> Optional[int]:
        """The descriptor of a regular file (os.pread works on it), else None."""
        return self._fd

    def read_at(self, offset: int, size: int) -> bytes:
        if self._fd is not None:
            data = os.pread(self._fd, size, offset)
            if len(data) == size or not data:
                return data
            view = bytearray(size)
            view[: len(data)] = data
            got = len(data) + self.readinto_at(offset + len(data), memoryview(view)[len(data) :])
            return bytes(view[:got])
        with self._lock:
            self._raw.seek(offset)
            return read_exact(self._raw, size)

    def readinto_at(self, offset: int, view: memoryview) -> int:
        if self._fd is not None:
            done = 0
            while done < view.nbytes:
                n = os.preadv(self._fd, [view[done:]], offset + done)
                if n == 0:
                    break
                done += n
            return done
        with self._lock:
            self._raw.seek(offset)
            data = read_exact(self._raw, view.nbytes)
        view[: len(data)] = data
        return len(data)


class DecryptingReader(io.BufferedIOBase):
    """A read-only binary stream over a shardseal container.

    On a seekable source it supports seek/tell and random access, and ``pread`` for many
    threads at once; on a pipe it reads sequentially. Created by ``shardseal.open(f, "rb")``.
    """

    def __init__(self, raw: Any, key: Union[KeyLike, DirectKey, None] = None, *,
                 identities: Optional[Identities] = None, threads: Optional[int] = None,
                 cache_chunks: int = DEFAULT_CACHE_CHUNKS, close_raw: bool = False) -> None:
        super().__init__()
        self._raw = raw
        self._close_raw = close_raw
        name = getattr(raw, "name", None)
        self._audit_name = name if isinstance(name, (str, bytes)) else None
        self._pos = 0
        self._error: Optional[ShardsealError] = None  # a failed pipe stays failed
        try:
            self._threads = _buffers.thread_count(threads)
            with audit.target(self._audit_name):
                self._open(key, identities, cache_chunks)
        except BaseException as exc:
            with audit.target(self._audit_name):
                audit.record_rejection(exc)
            if close_raw:
                raw.close()
            raise
        if metrics.active:
            _count_stream_opened(self._size or 0)

    def _open(self, key: Union[KeyLike, DirectKey, None], identities: Optional[Identities],
              cache_chunks: int) -> None:
        key = resolve_reference(key)  # here, in the process that reads
        raw = self._raw
        seekable = _is_seekable(raw)
        start = raw.tell() if seekable else 0
        header = _container.read_header(lambda n: read_exact(raw, n))
        file_key = _envelope.unwrap_file_key(header, _registry.check_identities(key, identities))
        head = read_exact(raw, MESSAGE_HEADER_SIZE)
        if len(head) < MESSAGE_HEADER_SIZE:
            raise TruncatedError("message truncated: shorter than its salt and commitment")
        self._keys: _MessageKeys = _envelope.proven_message_keys(header, file_key, head)
        self.header = header
        self._data_start = start + header.size + MESSAGE_HEADER_SIZE
        self._cache: OrderedDict[int, bytearray] = OrderedDict()
        self._cache_chunks = max(1, cache_chunks)
        self._cache_lock = threading.Lock()
        self._scratch = threading.local()
        if seekable:
            # _positional and _data_size exist only on a seekable source; _source and _size
            # hold the same values, or None on a pipe.
            self._positional = _PositionalSource(raw)
            self._source: Optional[_PositionalSource] = self._positional
            # A regular file: a chunk missing from the cache is read, authenticated and
            # decrypted in one native call (pread included), without the GIL.
            self._fd: Optional[int] = self._source.fd
            self._last_index = -2  # the chunk of the last small pread: see _reads_directly
            end = raw.seek(0, io.SEEK_END)
            self._data_size = _layout.opened_size(end - self._data_start)
            self._size: Optional[int] = self._data_size
            self._final_index = self._data_size // CHUNK_SIZE
            self._final_verified = False
        else:
            self._source = None
            self._size = None
            self._plain = b""  # decrypted, not yet returned
            self._plain_pos = 0
            self._pending = bytearray()  # ciphertext, not yet decrypted
            self._next_chunk = 0
            self._decrypted = 0  # plaintext bytes decrypted so far
            self._eof = False

    # ---- io.BufferedIOBase ----------------------------------------------------------

    def readable(self) -> bool:
        self._check_open()
        return True

    def seekable(self) -> bool:
        self._check_open()
        return self._source is not None

    def tell(self) -> int:
        self._check_open()
        return self._pos

    @property
    def size(self) -> Optional[int]:
        """The plaintext size, or None on a non-seekable source (known at its end)."""
        return self._size

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        self._check_open()
        if self._source is None:
            if whence == io.SEEK_CUR and offset == 0:
                return self._pos
            raise io.UnsupportedOperation("seek on a non-seekable source")
        if whence == io.SEEK_SET:
            target = offset
        elif whence == io.SEEK_CUR:
            target = self._pos + offset
        elif whence == io.SEEK_END:
            self._verify_final()  # the end is only trusted once the final chunk is
            target = self._data_size + offset
        else:
            raise ValueError(f"invalid whence {whence!r}")
        if target < 0:
            raise ValueError(f"negative seek position {target}")
        self._pos = target
        return target

    def read(self, size: Optional[int] = -1) -> bytes:
        self._check_open()
        if self._source is None:
            return self._read_stream(None if size is None or size < 0 else size)
        remaining = max(0, self._data_size - self._pos)
        size = remaining if size is None or size < 0 else min(size, remaining)
        out = bytearray(size)
        n = self.readinto(out)
        del out[n:]
        return bytes(out)

    def read1(self, size: int = -1) -> bytes:
        return self.read(size)

    def readinto(self, buffer: BytesLike) -> int:
        self._check_open()
        view = _buffers.writable(buffer, "buffer")
        if self._source is None:
            n = self._stream_readinto(view)
        else:
            n = self._readinto_at(self._pos, view)
        self._pos += n
        return n

    def readinto1(self, buffer: BytesLike) -> int:
        return self.readinto(buffer)

    def pread(self, offset: int, size: int) -> bytes:
        """Reads size bytes at offset without moving the stream position; thread-safe.

        A small read at a random offset of a regular file decrypts straight into the result
        (one native call) and leaves the chunk cache alone; reads that follow on from the one
        before fill the cache, and reads of cached chunks are copies.

        Raises:
            io.UnsupportedOperation: the source is not seekable.
            AuthenticationError: a chunk the read touches was tampered with.
        """
        self._check_open()
        if self._source is None:
            raise io.UnsupportedOperation("pread on a non-seekable source")
        if offset < 0 or size < 0:
            raise ValueError("offset and size must be non-negative")
        within = offset % CHUNK_SIZE
        if 0 < size <= CHUNK_SIZE - within and offset + size < self._data_size:
            # The common small read inside one chunk (not the final one, which is always
            # short): one native call at a random offset, else one slice copy of a cached chunk.
            index = offset // CHUNK_SIZE
            if self._fd is not None and self._reads_directly(index):
                return self._read_file(self._fd, offset, size)
            return bytes(memoryview(self._chunk(index))[within : within + size])
        size = max(0, min(size, self._data_size - offset))
        out = bytearray(size)
        n = self._readinto_at(offset, memoryview(out))
        del out[n:]
        return bytes(out)

    def preadinto(self, offset: int, buffer: BytesLike) -> int:
        """Reads into buffer at offset without moving the stream position; thread-safe.

        Like ``pread`` without the copies: whole chunks are decrypted straight into buffer.

        Returns:
            The number of bytes read: len(buffer), or fewer only at the end of the data.

        Raises:
            io.UnsupportedOperation: the source is not seekable.
            AuthenticationError: a chunk the read touches was tampered with.
            TypeError: buffer is read-only or not contiguous.
        """
        self._check_open()
        if self._source is None:
            raise io.UnsupportedOperation("preadinto on a non-seekable source")
        if offset < 0:
            raise ValueError("offset must be non-negative")
        view = _buffers.writable(buffer, "buffer")
        if 0 < view.nbytes <= CHUNK_SIZE - offset % CHUNK_SIZE and offset + view.nbytes < self._data_size \
                and self._fd is not None and self._reads_directly(offset // CHUNK_SIZE):
            return self._read_file_into(self._fd, offset, view)
        return self._readinto_at(offset, view)

    def close(self) -> None:
        if not self.closed:
            if hasattr(self, "_cache"):  # absent when opening failed
                with self._cache_lock:
                    self._cache.clear()
            if self._close_raw:
                self._raw.close()
        super().close()

    def __reduce__(self) -> NoReturn:
        raise TypeError("a shardseal reader holds key material and cannot be pickled; "
                        "open the file again in the other process")

    def _check_open(self) -> None:
        if self.closed:
            raise ValueError("I/O operation on a closed shardseal reader")

    # ---- random access --------------------------------------------------------------

    def _verify_final(self) -> None:
        if not self._final_verified:
            self._chunk(self._final_index)

    def _chunk(self, index: int) -> bytearray:
        """Chunk `index`, decrypted and authenticated (cached; never modified)."""
        with self._cache_lock:
            cached = self._cache.get(index)
            if cached is not None:
                self._cache.move_to_end(index)
                return cached
        final = index == self._final_index
        plain_len = self._data_size - index * CHUNK_SIZE if final else CHUNK_SIZE
        plain = bytearray(plain_len)
        if self._fd is not None:
            self._read_file_chunk(self._fd, index, plain)
        else:
            sealed = self._positional.read_at(self._data_start + index * SEALED_CHUNK_SIZE, plain_len + TAG_SIZE)
            if len(sealed) != plain_len + TAG_SIZE:
                raise TruncatedError("the file was truncated while being read")
            self._open_chunks(index, sealed, plain, final, 1)
        with self._cache_lock:
            self._cache[index] = plain
            if len(self._cache) > self._cache_chunks:
                self._cache.popitem(last=False)
            if final:
                self._final_verified = True
        return plain

    def _open_chunks(self, index: int, sealed: BytesLike, plain: BytesLike, final: bool, threads: int) -> None:
        # try/except rather than audit.authentication_failures(): free when nothing fails,
        # and this runs for every chunk a read touches.
        try:
            self._keys.open_chunks_into(index, sealed, plain, final, threads)
        except AuthenticationError as exc:
            self._audit_failure(exc)
            raise

    def _reads_directly(self, index: int) -> bool:
        """Whether a small read in chunk `index` skips the cache: on a regular file, when the
        chunk is not cached and the read does not follow on from the one before (in the same
        or the next chunk). Random reads then cost one native call; reads that walk through a
        file still fill the cache, so that the next read of the chunk is a copy."""
        if self._fd is None:
            return False
        previous, self._last_index = self._last_index, index  # a hint: a race only costs a miss
        return index - previous not in (0, 1) and index not in self._cache

    def _read_file(self, fd: int, offset: int, size: int) -> bytes:
        try:
            return self._keys.read(fd, self._data_start, self._data_size, offset, size, self._threads)
        except AuthenticationError as exc:
            self._audit_failure(exc)
            raise

    def _read_file_into(self, fd: int, offset: int, view: memoryview) -> int:
        try:
            return self._keys.read_into(fd, self._data_start, self._data_size, offset, view, self._threads)
        except AuthenticationError as exc:
            self._audit_failure(exc)
            raise

    def _read_file_chunk(self, fd: int, index: int, plain: bytearray) -> None:
        """Reads, authenticates and decrypts chunk `index` of a regular file into plain."""
        try:
            n = self._keys.read_into(fd, self._data_start, self._data_size, index * CHUNK_SIZE, plain, 1)
        except AuthenticationError as exc:
            self._audit_failure(exc)
            raise
        if n != len(plain):  # the reader's size is fixed at open: this cannot happen
            raise TruncatedError("the file was truncated while being read")

    def _audit_failure(self, exc: AuthenticationError) -> None:
        with audit.target(self._audit_name):
            audit.record("authentication_failed", error=str(exc))

    def _bulk_scratch(self, size: int) -> memoryview:
        scratch: Optional[bytearray] = getattr(self._scratch, "buffer", None)
        if scratch is None or len(scratch) < size:
            scratch = self._scratch.buffer = bytearray(size)
        return memoryview(scratch)[:size]

    def _readinto_at(self, offset: int, out: memoryview) -> int:
        end = min(offset + out.nbytes, self._data_size)
        if end >= self._data_size:
            self._verify_final()  # this read reaches the end: prove the end is real
        pos = offset
        while pos < end:
            index, within = divmod(pos, CHUNK_SIZE)
            whole = (end - pos) // CHUNK_SIZE if within == 0 else 0
            if whole >= BULK_MIN_CHUNKS and self._fd is not None:
                # A regular file: one native call reads and opens every whole chunk, each
                # worker reading its own batch (no Python per batch, reads on every core).
                count = whole
                target = out[pos - offset : pos - offset + count * CHUNK_SIZE]
                if self._read_file_into(self._fd, pos, target) != target.nbytes:
                    raise TruncatedError("the file was truncated while being read")
                pos += count * CHUNK_SIZE
            elif whole >= BULK_MIN_CHUNKS:
                # Whole chunks are never the final chunk, which is always short.
                count = min(whole, BULK_BATCH_CHUNKS)
                sealed = self._bulk_scratch(count * SEALED_CHUNK_SIZE)
                if self._positional.readinto_at(self._data_start + index * SEALED_CHUNK_SIZE, sealed) != sealed.nbytes:
                    raise TruncatedError("the file was truncated while being read")
                target = out[pos - offset : pos - offset + count * CHUNK_SIZE]
                self._open_chunks(index, sealed, target, False, self._threads)
                pos += count * CHUNK_SIZE
            else:
                plain = memoryview(self._chunk(index))
                take = min(len(plain) - within, end - pos)
                out[pos - offset : pos - offset + take] = plain[within : within + take]
                pos += take
        return max(0, end - offset)

    # ---- sequential (non-seekable) ----------------------------------------------------

    def _stream_fill(self) -> bool:
        """Decrypts the next batch of ciphertext; returns False at the end of the message."""
        if self._error is not None:
            raise type(self._error)(*self._error.args)
        try:
            return self._stream_decrypt_next()
        except ShardsealError as exc:
            self._error = exc
            raise

    def _stream_decrypt_next(self) -> bool:
        if self._eof:
            return False
        batch = BULK_BATCH_CHUNKS * SEALED_CHUNK_SIZE
        # One byte past a batch proves its last chunk is not the final one.
        while len(self._pending) <= batch:
            data = self._raw.read(batch + 1 - len(self._pending))
            if not data:
                self._eof = True
                break
            self._pending += data
        if self._eof:
            sealed, final = self._pending, True
            self._pending = bytearray()
        else:
            sealed, final = self._pending[:batch], False
            del self._pending[:batch]
        plain = bytearray(_layout.opened_size(len(sealed), final))
        self._open_chunks(self._next_chunk, sealed, plain, final, self._threads)
        self._next_chunk += len(sealed) // SEALED_CHUNK_SIZE
        self._decrypted += len(plain)
        self._plain, self._plain_pos = bytes(plain), 0
        if final:
            self._size = self._decrypted
        return True

    def _stream_readinto(self, out: memoryview) -> int:
        done = 0
        while done < out.nbytes:
            if self._plain_pos == len(self._plain) and not self._stream_fill():
                break
            take = min(out.nbytes - done, len(self._plain) - self._plain_pos)
            out[done : done + take] = self._plain[self._plain_pos : self._plain_pos + take]
            self._plain_pos += take
            done += take
        return done

    def _read_stream(self, size: Optional[int]) -> bytes:
        """Up to size bytes (all with None), allocating only what the stream holds."""
        parts: list[bytes] = []
        wanted = size
        while wanted is None or wanted > 0:
            if self._plain_pos == len(self._plain) and not self._stream_fill():
                break
            end = len(self._plain) if wanted is None else min(len(self._plain), self._plain_pos + wanted)
            parts.append(self._plain[self._plain_pos : end])
            if wanted is not None:
                wanted -= end - self._plain_pos
            self._plain_pos = end
        data = b"".join(parts)
        self._pos += len(data)
        return data


def _handled_exception() -> tuple[Optional[BaseException], Optional[TracebackType]]:
    """The exception being handled or propagating here, and its traceback ((None, None) if none)."""
    _, exception, traceback = sys.exc_info()
    return exception, traceback


def _is_seekable(raw: IO[bytes]) -> bool:
    try:
        return bool(raw.seekable())
    except (AttributeError, ValueError):
        return False


class EncryptingWriter(io.BufferedIOBase):
    """A write-only binary stream that encrypts into a shardseal container.

    Plaintext is buffered and sealed in batches on the thread pool while the previous batch is
    written on a background thread. Created by ``shardseal.open(f, "wb")`` and by the fsspec
    ``sseal`` filesystem.

    Only a completed container authenticates: completing writes the short final chunk, and a
    container without it fails to decrypt with ``TruncatedError``. The writer completes only a
    write that ended cleanly, and aborts (never completes) an interrupted one:

    * ``with`` block: a clean exit completes; an exception aborts.
    * ``close()``: completes, unless an exception is propagating that was not already being
      handled when the writer was created; then it aborts. Wrappers that close their file
      without saying why (``fsspec.open``'s ``with`` block, ``contextlib.closing``, a
      ``finally:`` clause) therefore abort on an exception too.
    * ``finish()``: completes whatever exception is being handled. Use it to complete a
      container from inside an ``except`` block for an unrelated, handled exception, where
      ``close()`` would abort.
    * ``abort()``; garbage collection of an unclosed writer, or of a text or buffered wrapper
      around it (``io.TextIOWrapper``); a write error: abort.
    * A process that dies never completes: it leaves the temporary file of a path target, or
      an incomplete container that fails to decrypt.

    Aborting discards what was written where the writer owns the destination (a path given to
    ``shardseal.open``; an fsspec target file, which is removed); on a caller's file object it
    leaves an incomplete container that fails to decrypt.
    """

    def __init__(self, raw: Any, key: Optional[KeyLike] = None, *, recipients: Optional[Recipients] = None,
                 metadata: Optional[Mapping[str, Any]] = None, threads: Optional[int] = None, suite: Suite = 256,
                 on_close: Optional[Callable[[], None]] = None,
                 on_abort: Optional[Callable[[], None]] = None) -> None:
        super().__init__()
        from ..container.blob import header_metadata as _header_metadata, plan_header, random_salt as _random_salt

        self._raw = raw
        self._on_close = on_close
        self._on_abort = on_abort
        self._buffer = bytearray()
        self._next_chunk = 0
        self._written = 0
        self._finished = False  # completed or aborted: nothing more reaches raw
        self._completed = False
        # What was being handled here: close() aborts while any other exception propagates.
        self._exception_at_creation = _handled_exception()
        self._wrapper_dropped = False  # a wrapper is being garbage collected unclosed
        self._pending_write: Optional[Future[None]] = None
        self._io = ThreadPoolExecutor(1, thread_name_prefix="shardseal-writer")
        try:
            self._threads = _buffers.thread_count(threads)
            plan = plan_header(key, recipients, suite, _header_metadata(metadata))
            salt = _random_salt()
            self._keys: _MessageKeys = _backend.impl.MessageKeys(suite, plan.input_key, salt, plan.fixed)
            write_all(raw, plan.header + salt + self._keys.commitment)
        except BaseException:
            self._abort()
            raise

    def writable(self) -> bool:
        return not self.closed

    def tell(self) -> int:
        """The number of plaintext bytes written so far."""
        return self._written

    def write(self, data: BytesLike) -> int:
        if self.closed:
            raise ValueError("write to a closed shardseal writer")
        view = _buffers.readable(data, "data")
        try:
            self._write(view)
        except BaseException:
            self._abort()
            raise
        self._written += view.nbytes
        return view.nbytes

    def _write(self, view: memoryview) -> None:
        batch = WRITE_BATCH_CHUNKS * CHUNK_SIZE
        if self._buffer:
            take = min(view.nbytes, batch - len(self._buffer))
            self._buffer += view[:take]
            view = view[take:]
            if len(self._buffer) == batch:
                self._seal(memoryview(self._buffer), final=False)
                self._buffer = bytearray()
        # Whole chunks straight from the caller's memory, no copy into the buffer.
        while view.nbytes >= CHUNK_SIZE:
            count = min(view.nbytes // CHUNK_SIZE, WRITE_BATCH_CHUNKS) * CHUNK_SIZE
            self._seal(view[:count], final=False)
            view = view[count:]
        self._buffer += view

    def _seal(self, plain: memoryview, final: bool) -> None:
        sealed = bytearray(_layout.sealed_size(plain.nbytes, final))
        self._keys.seal_chunks_into(self._next_chunk, plain, sealed, final, self._threads)
        self._next_chunk += _layout.chunk_count(plain.nbytes, final)
        self._wait_for_write()
        self._pending_write = self._io.submit(write_all, self._raw, sealed)

    def _wait_for_write(self) -> None:
        if self._pending_write is not None:
            pending, self._pending_write = self._pending_write, None
            pending.result()  # re-raises a write error (disk full) here

    def flush(self) -> None:
        if not self._finished:
            self._wait_for_write()
            self._raw.flush()

    def close(self) -> None:
        """Completes the container, or aborts it when the write was interrupted.

        Interrupted means: an exception is propagating that was not already being handled
        when the writer was created (a failure inside a ``with`` block that closes this
        file, such as ``fsspec.open``'s), or a wrapper around the writer is being garbage
        collected without being closed. An aborted write raises nothing here: the exception
        that interrupted it goes on. Closing a closed writer does nothing. One case looks
        clean: a bare ``raise`` of the very exception that was being handled when the writer
        was created (same object, same traceback); ``abort()`` before it.

        Raises:
            OSError: the final write or flush failed (the container is then aborted).
        """
        if self.closed:
            return
        if self._interrupted():
            self._abort()
            return
        self._complete()

    def finish(self) -> None:
        """Completes the container and closes the writer, whatever exception is being handled.

        Raises:
            ValueError: the writer was aborted (nothing can complete it any more).
            OSError: the final write or flush failed (the container is then aborted).
        """
        if self.closed:
            if not self._completed:
                raise ValueError("this shardseal writer was aborted: its container cannot be completed")
            return
        self._complete()

    def _interrupted(self) -> bool:
        if self._wrapper_dropped:
            return True
        exception, traceback = _handled_exception()
        if exception is None:
            return False
        # The same exception re-raised has a new traceback: that is an interruption too.
        created_exception, created_traceback = self._exception_at_creation
        return exception is not created_exception or traceback is not created_traceback

    def _complete(self) -> None:
        """Writes the final chunk, flushes, and runs on_close (commit into place)."""
        try:
            self._seal(memoryview(self._buffer), final=True)
            self._wait_for_write()
            self._raw.flush()
            self._io.shutdown()
            self._finished = True
            self._completed = True
            if self._on_close is not None:
                self._on_close()
        except BaseException:
            self._completed = False
            self._abort()
            raise
        self._exception_at_creation = (None, None)
        if metrics.active:
            _count_stream_sealed(self._written)
        super().close()

    def _dealloc_warn(self, source: object) -> None:
        # CPython's io wrappers (TextIOWrapper, BufferedWriter) call this on their buffer when
        # they are garbage collected unclosed, just before closing it: abort, not complete.
        self._wrapper_dropped = True

    def abort(self) -> None:
        """Discards the container: with a path destination nothing is left under its name."""
        self._abort()

    def _abort(self) -> None:
        if self.closed:
            return
        self._finished = True
        self._buffer = bytearray()
        self._exception_at_creation = (None, None)  # drops the frames it holds
        try:
            if self._pending_write is not None:
                self._pending_write.exception()
            self._io.shutdown()
        finally:
            super().close()
            if self._on_abort is not None:
                self._on_abort()

    def __exit__(self, exc_type: Optional[type[BaseException]], exc: Optional[BaseException],
                 tb: Optional[TracebackType]) -> None:
        # The with statement says whether its block failed: no need to infer it as close() does.
        if exc_type is not None:
            self._abort()
        elif not self.closed:
            self._complete()

    def __del__(self) -> None:
        # An unclosed writer is an interrupted one: never complete a container by accident.
        try:
            self._abort()
        except Exception:
            pass

    def __reduce__(self) -> NoReturn:
        raise TypeError("a shardseal writer holds key material and cannot be pickled")
