"""The file layer: encrypt_file / decrypt_file (atomic, bounded memory) and shardseal.open
(random-access DecryptingReader, streaming EncryptingWriter).

Most tests run on both backends through the `backend` fixture. The multi-GiB sparse round trip
is marked slow (run with ``pytest -m slow``).
"""

from __future__ import annotations

import errno
import gc
import io
import os
import pickle
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import shardseal
from shardseal import AuthenticationError, KeyNotFoundError, TruncatedError
from shardseal.container import header as _container
from shardseal.io import files as _files, stream as _stream

CHUNK = 16384
SEALED = CHUNK + 16
MSG_HEAD = 56  # salt + commitment
TEMP_SUFFIX = ".sseal-tmp"
KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))
SIZES = [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK + 500, 5 * 2**20 + 3]
PIECES = [1, 7, CHUNK - 1, CHUNK + 1, 100_003, 3, 2**20 + 1, 2 * CHUNK, 5]

try:  # the interoperability peer (cryptography >= 50); its checks are skipped without it
    from cryptography import cobblestone as peer
except ImportError:
    peer = None


def _data(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


def _temps(folder: Path) -> list:
    return sorted(p.name for p in Path(folder).iterdir() if p.name.endswith(TEMP_SUFFIX))


def _header_size(blob: bytes) -> int:
    return shardseal.inspect(blob).header_size


def _chunk_offset(blob: bytes, index: int) -> int:
    """File offset of sealed chunk `index` in a container."""
    return _header_size(blob) + MSG_HEAD + index * SEALED


def _tamper(blob: bytes, index: int, within: int = 100) -> bytes:
    out = bytearray(blob)
    out[_chunk_offset(blob, index) + within] ^= 0x01
    return bytes(out)


def _write_in_pieces(writer, data: bytes, pieces=PIECES) -> None:
    view = memoryview(data)
    i = 0
    while view.nbytes:
        n = pieces[i % len(pieces)]
        assert writer.write(view[:n]) == min(n, view.nbytes)
        view = view[n:]
        i += 1


def _check_with_peer(blob: bytes, key: bytes, data: bytes) -> None:
    """The payload decrypts with cryptography.cobblestone (context = the fixed part)."""
    header = _container.parse_header(blob)
    assert header.size == _header_size(blob)
    if peer is not None:
        decryptor = peer.Cobblestone256Decryptor(key, header.fixed)
        assert decryptor.update(blob[header.size:]) + decryptor.finalize() == data


@pytest.fixture
def small_blocks(monkeypatch):
    """Whole-file functions move 64 KiB blocks, so that small files take many blocks."""
    monkeypatch.setattr(_files, "FILE_BLOCK_SIZE", 64 * 1024)


# ---- round trips ------------------------------------------------------------------------


@pytest.mark.parametrize("size", SIZES)
def test_encrypt_file_decrypt_file_round_trip(backend, tmp_path, size):
    data = _data(size, size)
    src, enc, dec = tmp_path / "plain.bin", tmp_path / "enc.sseal", tmp_path / "dec.bin"
    src.write_bytes(data)
    assert shardseal.encrypt_file(src, enc, KEY, metadata={"n": size}) == size
    blob = enc.read_bytes()
    assert len(blob) == shardseal.encrypted_size(size, metadata={"n": size})
    assert shardseal.inspect(blob).metadata == {"n": size}
    assert shardseal.inspect(blob).plaintext_size == size
    assert shardseal.decrypt(blob, KEY) == data
    _check_with_peer(blob, KEY, data)
    assert shardseal.decrypt_file(enc, dec, KEY) == size
    assert dec.read_bytes() == data
    assert src.read_bytes() == data
    assert _temps(tmp_path) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dec.bin", "enc.sseal", "plain.bin"]


def test_encrypt_file_with_small_blocks_and_suite_128(backend, tmp_path, small_blocks):
    data = _data(3 * 2**20 + 11, 5)
    src, enc, dec = tmp_path / "p", tmp_path / "e", tmp_path / "d"
    src.write_bytes(data)
    shardseal.encrypt_file(src, enc, KEY, suite=128, threads=2)
    assert shardseal.inspect(enc.read_bytes()).suite == "cobblestone-128"
    assert shardseal.decrypt(enc.read_bytes(), KEY) == data
    shardseal.decrypt_file(enc, dec, KEY, threads=1)
    assert dec.read_bytes() == data


def test_file_modes(backend, tmp_path):
    src, enc, dec = tmp_path / "p", tmp_path / "e", tmp_path / "d"
    src.write_bytes(b"mode test")
    os.chmod(src, 0o640)
    shardseal.encrypt_file(src, enc, KEY)
    assert enc.stat().st_mode & 0o777 == 0o640  # encrypt_file copies src's permission bits
    shardseal.decrypt_file(enc, dec, KEY)
    assert dec.stat().st_mode & 0o777 == 0o600  # decrypt_file always makes 0600
    with shardseal.open(tmp_path / "w", "wb", key=KEY) as w:
        w.write(b"x")
    assert (tmp_path / "w").stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize("size", SIZES)
def test_open_wb_then_rb_round_trip(backend, tmp_path, size):
    data = _data(size, size + 1)
    path = tmp_path / "stream.sseal"
    with shardseal.open(path, "wb", key=KEY, metadata={"k": "v"}) as writer:
        assert isinstance(writer, io.BufferedIOBase)
        assert writer.writable() and not writer.readable() and not writer.seekable()
        _write_in_pieces(writer, data)
        assert writer.tell() == size
        assert _temps(tmp_path) != [] and not path.exists()  # only the temp file until close
    assert writer.closed
    assert _temps(tmp_path) == []
    blob = path.read_bytes()
    assert shardseal.decrypt(blob, KEY) == data
    _check_with_peer(blob, KEY, data)
    with shardseal.open(path, "rb", key=KEY) as reader:
        assert isinstance(reader, io.BufferedIOBase)
        assert reader.readable() and reader.seekable() and not reader.writable()
        assert reader.size == size
        assert reader.header.metadata == {"user": {"k": "v"}}
        assert reader.read() == data
        assert reader.tell() == size
        assert reader.read() == b""
        assert reader.read(10) == b""
    assert reader.closed
    with pytest.raises(ValueError):
        reader.read(1)


def test_writer_accepts_any_buffer(backend):
    np = pytest.importorskip("numpy")
    array = np.arange(100_000, dtype=np.float32)
    out = io.BytesIO()
    with shardseal.open(out, "wb", key=KEY) as w:
        w.write(array)  # 400 000 bytes
        w.write(array[::2])  # non-contiguous: copied
        w.write(bytearray(b"abc"))
        w.write(memoryview(b"defg")[1:])
        assert w.tell() == 400_000 + 200_000 + 3 + 3
    assert not out.closed  # a file object destination is not closed by the writer
    plain = shardseal.decrypt(out.getvalue(), KEY)
    assert plain == array.tobytes() + array[::2].tobytes() + b"abcefg"


def test_writer_to_file_object_and_pipe(backend):
    data = _data(300_000, 9)
    out = io.BytesIO()
    with shardseal.open(out, "wb", key=KEY) as w:
        _write_in_pieces(w, data)
    assert shardseal.decrypt(out.getvalue(), KEY) == data

    read_fd, write_fd = os.pipe()
    received = []
    reader = threading.Thread(target=lambda: received.append(_read_all_fd(read_fd)))
    reader.start()
    with open(write_fd, "wb") as pipe:
        with shardseal.open(pipe, "wb", key=KEY) as w:
            _write_in_pieces(w, data)
    reader.join(30)
    assert shardseal.decrypt(received[0], KEY) == data


def _read_all_fd(fd: int) -> bytes:
    with open(fd, "rb") as f:
        return f.read()


class _TrickleRaw(io.RawIOBase):
    """An unbuffered destination that, as RawIOBase.write may, accepts at most 1000 bytes
    per call (a socket's makefile(buffering=0), a non-blocking pipe...)."""

    def __init__(self) -> None:
        self.received = bytearray()

    def writable(self):
        return True

    def write(self, data):
        accepted = memoryview(data).cast("B")[:1000]
        self.received += accepted
        return accepted.nbytes


def test_writer_handles_short_writes_of_a_raw_destination(backend):
    data = _data(50_000, 10)
    raw = _TrickleRaw()
    with shardseal.open(raw, "wb", key=KEY) as w:
        w.write(data)
    # BUG: the writer ignores raw.write's return value: only 1000 bytes of each write arrive,
    # the writer reports success, and the container is silently corrupt.
    assert shardseal.decrypt(bytes(raw.received), KEY) == data


class _TrickleSource(io.RawIOBase):
    """A raw source whose reads return at most 1000 bytes, seekable or not."""

    def __init__(self, data: bytes, seekable: bool) -> None:
        self._data, self._pos, self._seekable = data, 0, seekable

    def readable(self):
        return True

    def seekable(self):
        return self._seekable

    def readinto(self, buffer):
        n = min(len(buffer), 1000, len(self._data) - self._pos)
        buffer[:n] = self._data[self._pos : self._pos + n]
        self._pos += n
        return n

    def seek(self, offset, whence=io.SEEK_SET):
        if not self._seekable:
            raise io.UnsupportedOperation("seek")
        self._pos = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: len(self._data)}[whence] + offset
        return self._pos

    def tell(self):
        if not self._seekable:
            raise io.UnsupportedOperation("tell")
        return self._pos


@pytest.mark.parametrize("seekable", [True, False])
def test_reader_handles_short_reads_of_a_raw_source(backend, seekable):
    data = _data(7 * CHUNK + 9, 40)
    with shardseal.open(_TrickleSource(shardseal.encrypt(data, KEY), seekable), "rb", key=KEY) as r:
        assert r.seekable() is seekable
        assert r.read(CHUNK + 1) == data[: CHUNK + 1]
        assert r.read() == data[CHUNK + 1 :]
        if seekable:
            assert r.pread(3 * CHUNK - 5, 5 * CHUNK) == data[3 * CHUNK - 5 : 8 * CHUNK - 5]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs mkfifo")
def test_whole_file_functions_on_a_fifo(backend, tmp_path):
    """A named pipe as the source: decrypt_file reads it sequentially, encrypt_file too."""
    data = _data(3 * 2**20 + 5, 39)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)

    def feed(payload):
        try:
            with open(fifo, "wb") as f:
                f.write(payload)
        except BrokenPipeError:  # the reader stopped at the damage
            pass

    for function, payload, check in [
        (shardseal.decrypt_file, shardseal.encrypt(data, KEY), lambda out: out == data),
        (shardseal.encrypt_file, data, lambda out: shardseal.decrypt(out, KEY) == data),
    ]:
        feeder = threading.Thread(target=feed, args=(payload,))
        feeder.start()
        assert function(fifo, tmp_path / "out", KEY) == len(data)
        feeder.join(30)
        assert check((tmp_path / "out").read_bytes())
    # a damaged stream through a FIFO: nothing left behind
    feeder = threading.Thread(target=feed, args=(_tamper(shardseal.encrypt(data, KEY), 150),))
    feeder.start()
    with pytest.raises(AuthenticationError):
        shardseal.decrypt_file(fifo, tmp_path / "bad", KEY)
    feeder.join(30)
    assert not (tmp_path / "bad").exists() and _temps(tmp_path) == []


def test_in_place_encrypt_then_decrypt(backend, tmp_path, small_blocks):
    data = _data(1_000_003, 3)
    path = tmp_path / "same.bin"
    path.write_bytes(data)
    assert shardseal.encrypt_file(path, path, KEY) == len(data)
    blob = path.read_bytes()
    assert blob != data and shardseal.decrypt(blob, KEY) == data
    assert shardseal.decrypt_file(path, path, KEY) == len(data)
    assert path.read_bytes() == data
    assert sorted(p.name for p in tmp_path.iterdir()) == ["same.bin"]


def test_in_place_failure_keeps_the_file(backend, tmp_path):
    blob = _tamper(shardseal.encrypt(_data(5 * CHUNK, 4), KEY), 3)
    path = tmp_path / "same.bin"
    path.write_bytes(blob)
    with pytest.raises(AuthenticationError):
        shardseal.decrypt_file(path, path, KEY)
    assert path.read_bytes() == blob
    with pytest.raises(KeyNotFoundError):
        shardseal.decrypt_file(path, path, OTHER_KEY)
    assert path.read_bytes() == blob
    assert sorted(p.name for p in tmp_path.iterdir()) == ["same.bin"]


def test_text_wrapper_and_lines(backend):
    lines = [f"line {i} {'x' * (i % 50)}\n" for i in range(3000)]
    out = io.BytesIO()
    writer = shardseal.open(out, "wb", key=KEY)
    with io.TextIOWrapper(writer, encoding="utf-8") as text:
        text.writelines(lines)
    assert writer.closed
    with shardseal.open(io.BytesIO(out.getvalue()), "rb", key=KEY) as reader:
        assert reader.readline() == lines[0].encode()
        assert [line.decode() for line in reader] == lines[1:]
    with io.TextIOWrapper(shardseal.open(io.BytesIO(out.getvalue()), "rb", key=KEY), encoding="utf-8") as text:
        assert text.read() == "".join(lines)


def test_progress_bar(backend, tmp_path, capsys):
    pytest.importorskip("tqdm")
    data = _data(100_000, 36)
    src, enc, dec = tmp_path / "src", tmp_path / "enc", tmp_path / "dec"
    src.write_bytes(data)
    shardseal.encrypt_file(src, enc, KEY, progress=True)
    shardseal.decrypt_file(enc, dec, KEY, progress=True)
    assert dec.read_bytes() == data
    err = capsys.readouterr().err
    assert "encrypt src" in err and "decrypt enc" in err


def test_container_at_an_offset_in_a_file_object(backend, tmp_path):
    data = _data(5 * CHUNK + 3, 37)
    path = tmp_path / "embedded"
    path.write_bytes(b"PREFIX" + shardseal.encrypt(data, KEY))
    for source in (io.BytesIO(path.read_bytes()), open(path, "rb"), open(path, "rb", buffering=0)):
        with source:
            source.seek(6)
            with shardseal.open(source, "rb", key=KEY) as r:
                assert r.size == len(data)
                assert r.pread(CHUNK - 2, 5) == data[CHUNK - 2 : CHUNK + 3]
                assert r.read() == data
                assert r.seek(-1, io.SEEK_END) == len(data) - 1
            assert not source.closed  # a caller's file object stays open


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
def test_reader_on_a_path_closes_its_file(backend, tmp_path):
    path = tmp_path / "f"
    path.write_bytes(shardseal.encrypt(b"abc", KEY))
    gc.collect()
    before = _open_fds()
    r = shardseal.open(path, "rb", key=KEY)
    assert _open_fds() == before + 1
    r.close()
    r.close()
    assert r.closed and _open_fds() == before
    for method, args in [("read", ()), ("readinto", (bytearray(1),)), ("pread", (0, 1)), ("seek", (0,)),
                         ("tell", ()), ("readable", ()), ("seekable", ())]:
        with pytest.raises(ValueError):
            getattr(r, method)(*args)


@pytest.mark.parametrize("source", ["bytesio", "pipe"])
def test_read_with_a_large_size_allocates_only_what_is_there(backend, source):
    """read(n) with n far past the end returns the rest of the data without first
    allocating n bytes (``f.read(1 << 40)`` works on ordinary files)."""
    import tracemalloc

    data = _data(1000, 38)
    blob = shardseal.encrypt(data, KEY)
    pipe = _Pipe(blob) if source == "pipe" else None
    try:
        r = shardseal.open(pipe.reader if pipe else io.BytesIO(blob), "rb", key=KEY)
        tracemalloc.start()
        try:
            assert r.read(256 * 2**20) == data
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        # BUG: read() allocates bytearray(size) up front: 256 MiB here, MemoryError for 1 << 40
        assert peak < 16 * 2**20, f"read(256 MiB) of a 1000-byte stream peaked at {peak / 2**20:.0f} MiB"
    finally:
        if pipe:
            pipe.close()


# ---- random access ----------------------------------------------------------------------


def _access_pairs(size: int, seed: int) -> list:
    rng = random.Random(seed)
    offsets = {0, 1, size - 1, size, size + 1, size + CHUNK}
    for k in range(size // CHUNK + 2):
        offsets |= {k * CHUNK - 1, k * CHUNK, k * CHUNK + 1}
    lengths = [0, 1, 2, CHUNK - 1, CHUNK, CHUNK + 1, 4 * CHUNK, 4 * CHUNK + 1, 5 * CHUNK - 1, 7 * CHUNK + 3, size]
    pairs = [(o, n) for o in sorted(x for x in offsets if x >= 0) for n in rng.sample(lengths, 3)]
    pairs += [(rng.randrange(size + 100), rng.choice([rng.randrange(64), rng.randrange(12 * CHUNK)]))
              for _ in range(150)]
    return pairs


@pytest.mark.parametrize("batch", [_stream.BULK_BATCH_CHUNKS, 5], ids=["default-batch", "batch-5"])
def test_random_access(backend, tmp_path, monkeypatch, batch):
    monkeypatch.setattr(_stream, "BULK_BATCH_CHUNKS", batch)
    size = 40 * CHUNK + 1234
    data = _data(size, 11)
    path = tmp_path / "ra.sseal"
    path.write_bytes(shardseal.encrypt(data, KEY))
    with shardseal.open(path, "rb", key=KEY, cache_chunks=4) as r:
        for offset, n in _access_pairs(size, batch):
            want = data[offset : offset + n]
            assert r.seek(offset) == offset
            assert r.read(n) == want, (offset, n)
            assert r.tell() == offset + len(want)
            r.seek(offset)
            buf = bytearray(b"\xaa" * n)
            assert r.readinto(buf) == len(want)
            assert bytes(buf[: len(want)]) == want and set(buf[len(want) :]) <= {0xAA}
            assert r.tell() == offset + len(want)
            before = r.tell()
            assert r.pread(offset, n) == want
            assert r.tell() == before  # pread does not move the position


def test_seek_whence_tell_and_read_all(backend):
    size = 9 * CHUNK + 77
    data = _data(size, 12)
    with shardseal.open(io.BytesIO(shardseal.encrypt(data, KEY)), "rb", key=KEY) as r:
        assert r.tell() == 0
        assert r.seek(0, io.SEEK_END) == size
        assert r.read() == b""
        assert r.seek(-100, io.SEEK_END) == size - 100
        assert r.read(30) == data[-100:-70]
        assert r.seek(-CHUNK - 5, io.SEEK_CUR) == size - 70 - CHUNK - 5
        assert r.read(10) == data[size - 75 - CHUNK : size - 65 - CHUNK]
        assert r.seek(5, io.SEEK_CUR) == size - 60 - CHUNK
        assert r.read(-1) == data[size - 60 - CHUNK :]
        assert r.tell() == size
        assert r.seek(10, io.SEEK_END) == size + 10  # past the end is allowed, reads nothing
        assert r.read(5) == b"" and r.read() == b"" and r.tell() == size + 10
        assert r.readinto(bytearray(10)) == 0
        assert r.pread(size + 10, 5) == b""
        assert r.pread(size - 3, 100) == data[-3:]
        r.seek(3 * CHUNK)
        assert r.read(None) == data[3 * CHUNK :]
        r.seek(0)
        assert r.read1(5) == data[:5]
        assert r.read1() == data[5:]
        with pytest.raises(ValueError):
            r.seek(-1)
        with pytest.raises(ValueError):
            r.seek(-size - 1, io.SEEK_END)
        with pytest.raises(ValueError):
            r.pread(-1, 5)
        with pytest.raises(ValueError):
            r.seek(0, 7)
        with pytest.raises(io.UnsupportedOperation):
            r.write(b"x")
        with pytest.raises(io.UnsupportedOperation):
            r.fileno()


def test_interleaved_small_and_bulk_reads(backend, monkeypatch):
    monkeypatch.setattr(_stream, "BULK_BATCH_CHUNKS", 6)
    size = 64 * CHUNK + 999
    data = _data(size, 13)
    rng = random.Random(13)
    with shardseal.open(io.BytesIO(shardseal.encrypt(data, KEY)), "rb", key=KEY, cache_chunks=2) as r:
        got = []
        while True:
            n = rng.choice([1, 17, CHUNK - 3, CHUNK, 4 * CHUNK, 9 * CHUNK + 5, 20 * CHUNK])
            if rng.random() < 0.3:
                # re-align so that the next long read starts on a chunk boundary (bulk path)
                aligned = -(-r.tell() // CHUNK) * CHUNK
                got.append(r.read(aligned - r.tell()))
            piece = r.read(n)
            if not piece:
                break
            got.append(piece)
        assert b"".join(got) == data
        # numpy buffers and memoryviews as readinto targets
        np = pytest.importorskip("numpy")
        r.seek(CHUNK)
        arr = np.zeros(5 * CHUNK // 4, np.float32)
        assert r.readinto(arr) == 5 * CHUNK
        assert arr.tobytes() == data[CHUNK : 6 * CHUNK]
        r.seek(7)
        target = bytearray(10 * CHUNK)
        assert r.readinto(memoryview(target)[3:]) == 10 * CHUNK - 3
        assert target[3:] == data[7 : 7 + 10 * CHUNK - 3]
        with pytest.raises(TypeError):
            r.readinto(b"read-only")


class _LoggingBytesIO(io.BytesIO):
    """A seekable source without a file descriptor that records the ranges read from it."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.log = []

    def read(self, n=-1):
        start = self.tell()
        out = super().read(n)
        self.log.append((start, len(out)))
        return out


def test_a_read_decrypts_only_the_chunks_it_touches(backend):
    size = 50 * CHUNK + 10
    data = _data(size, 14)
    blob = shardseal.encrypt(data, KEY)
    source = _LoggingBytesIO(blob)
    with shardseal.open(source, "rb", key=KEY, cache_chunks=1) as r:
        base = _chunk_offset(blob, 0)
        source.log.clear()
        r.seek(20 * CHUNK + 5)
        assert r.read(100) == data[20 * CHUNK + 5 : 20 * CHUNK + 105]
        assert source.log == [(base + 20 * SEALED, SEALED)]
        source.log.clear()
        assert r.pread(30 * CHUNK - 1, 2) == data[30 * CHUNK - 1 : 30 * CHUNK + 1]
        assert source.log == [(base + 29 * SEALED, SEALED), (base + 30 * SEALED, SEALED)]
        source.log.clear()
        assert r.pread(10 * CHUNK, 6 * CHUNK) == data[10 * CHUNK : 16 * CHUNK]  # bulk path
        assert sum(n for _, n in source.log) == 6 * SEALED
        assert min(o for o, _ in source.log) == base + 10 * SEALED
        # Reaching the end reads (and checks) the final chunk, but nothing else extra.
        source.log.clear()
        assert r.pread(size - 1, 1) == data[-1:]
        assert source.log == [(base + 50 * SEALED, 10 + 16)]


# ---- tampering ----------------------------------------------------------------------------


@pytest.fixture
def tampered(backend, tmp_path):
    """A 20.5-chunk file whose chunk 7 is tampered with."""
    size = 20 * CHUNK + 8000
    data = _data(size, 15)
    path = tmp_path / "bad.sseal"
    path.write_bytes(_tamper(shardseal.encrypt(data, KEY), 7))
    return path, data


def _exact(excinfo, cls) -> None:
    assert type(excinfo.value) is cls, repr(excinfo.value)


def test_tampered_chunk_only_fails_reads_that_touch_it(tampered):
    path, data = tampered
    size = len(data)
    bad_lo, bad_hi = 7 * CHUNK, 8 * CHUNK
    with shardseal.open(path, "rb", key=KEY) as r:
        # reads that touch only other chunks, via the cache and the bulk path
        for offset, n in [(0, 7 * CHUNK), (0, 1), (bad_lo - 1, 1), (bad_hi, 1), (bad_hi, 12 * CHUNK),
                          (bad_hi, size - bad_hi), (2 * CHUNK + 3, 5 * CHUNK - 3), (size - 1, 10)]:
            r.seek(offset)
            assert r.read(n) == data[offset : offset + n], (offset, n)
            assert r.pread(offset, n) == data[offset : offset + n]
        assert r.seek(0, io.SEEK_END) == size  # the final chunk is intact
        for offset, n in [(bad_lo, 1), (bad_hi - 1, 1), (bad_lo - 1, 2), (bad_hi - 1, 2), (0, size),
                          (0, 8 * CHUNK), (6 * CHUNK, 4 * CHUNK), (CHUNK + 5, 10 * CHUNK), (bad_lo, -1)]:
            r.seek(offset)
            with pytest.raises(AuthenticationError) as excinfo:
                r.read(n)
            _exact(excinfo, AuthenticationError)
            assert r.tell() == offset  # a failed read does not move the position
            if n >= 0:
                with pytest.raises(AuthenticationError) as excinfo:
                    r.pread(offset, n)
                _exact(excinfo, AuthenticationError)
        # the reader is still usable afterwards, and fails again on the bad chunk
        assert r.pread(0, 100) == data[:100]
        with pytest.raises(AuthenticationError):
            r.pread(bad_lo + 10, 1)


@pytest.mark.parametrize("batch", [_stream.BULK_BATCH_CHUNKS, 4], ids=["one-batch", "batch-4"])
@pytest.mark.parametrize("start", [0, CHUNK, 100])
def test_failed_bulk_readinto_leaves_no_plaintext_of_the_batch(tampered, monkeypatch, batch, start):
    """A file object without a descriptor: the reader's own batches (BULK_BATCH_CHUNKS)."""
    monkeypatch.setattr(_stream, "BULK_BATCH_CHUNKS", batch)
    path, data = tampered
    n = 16 * CHUNK
    with shardseal.open(io.BytesIO(Path(path).read_bytes()), "rb", key=KEY) as r:
        r.seek(start)
        buf = bytearray(b"\xaa" * n)
        with pytest.raises(AuthenticationError) as excinfo:
            r.readinto(buf)
        _exact(excinfo, AuthenticationError)
    # The failing batch is the one holding chunk 7: with aligned batches from `first`.
    first = -(-start // CHUNK)  # the first chunk of the bulk part
    batch_start = first + ((7 - first) // batch) * batch
    clean_end = batch_start * CHUNK - start  # buffer bytes before the failed batch
    assert bytes(buf[:clean_end]) == data[start : start + clean_end]  # authenticated data only
    window = bytes(buf[clean_end:])
    plain = data[start + clean_end : start + n]
    assert set(window) <= {0x00, 0xAA}, "plaintext of the failed batch was left in the buffer"
    # and certainly not the plaintext itself, in any 16-byte window
    for i in range(0, len(window) - 16, 4096):
        assert window[i : i + 16] != plain[i : i + 16]


@pytest.mark.parametrize("start", [0, CHUNK, 100])
def test_failed_bulk_readinto_of_a_file_zeroes_every_whole_chunk(tampered, start):
    """A regular file: one native call reads every whole chunk and zeroes all of them on failure."""
    path, data = tampered
    n = 16 * CHUNK
    with shardseal.open(path, "rb", key=KEY) as r:
        r.seek(start)
        buf = bytearray(b"\xaa" * n)
        with pytest.raises(AuthenticationError) as excinfo:
            r.readinto(buf)
        _exact(excinfo, AuthenticationError)
    head = -(-start // CHUNK) * CHUNK - start  # bytes before the first whole chunk
    assert bytes(buf[:head]) == data[start : start + head]  # an authenticated partial chunk
    whole = (n - head) // CHUNK * CHUNK
    assert bytes(buf[head : head + whole]) == bytes(whole), "plaintext left after a failed read"


def test_concurrent_pread_with_a_tampered_chunk(tampered):
    path, data = tampered
    size = len(data)
    errors, counts = [], {"ok": 0, "bad": 0}
    lock = threading.Lock()
    with shardseal.open(path, "rb", key=KEY, cache_chunks=3) as r:
        barrier = threading.Barrier(8)

        def worker(seed):
            rng = random.Random(seed)
            barrier.wait()
            try:
                for _ in range(150):
                    offset = rng.randrange(size)
                    n = rng.choice([1, 100, CHUNK, 3 * CHUNK, 6 * CHUNK])
                    end = min(offset + n, size)
                    touches = offset < 8 * CHUNK and end > 7 * CHUNK
                    try:
                        got = r.pread(offset, n)
                    except AuthenticationError:
                        assert touches, (offset, n)
                        with lock:
                            counts["bad"] += 1
                    else:
                        assert not touches, (offset, n)
                        assert got == data[offset:end]
                        with lock:
                            counts["ok"] += 1
            except BaseException as exc:  # collected: an assert in a thread would be lost
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    assert errors == []
    assert counts["bad"] > 0 and counts["ok"] > 0


# ---- truncation and the final chunk ----------------------------------------------------


def test_truncated_at_a_chunk_boundary_fails_at_open(backend, tmp_path):
    size = 6 * CHUNK + 300
    blob = shardseal.encrypt(_data(size, 16), KEY)
    hs = _header_size(blob)
    cuts = [hs + MSG_HEAD + k * SEALED for k in range(7)] + [hs + MSG_HEAD - 1, hs + 10, hs - 1, 12]
    for cut in cuts:
        path = tmp_path / f"cut{cut}"
        path.write_bytes(blob[:cut])
        with pytest.raises(TruncatedError) as excinfo:
            shardseal.open(path, "rb", key=KEY)
        _exact(excinfo, TruncatedError)
        with pytest.raises(TruncatedError):
            shardseal.open(io.BytesIO(blob[:cut]), "rb", key=KEY)


@pytest.mark.parametrize("cut", [1, 299, 300, 316, 317, 320, 5000], ids=lambda c: f"cut{c}")
def test_truncated_inside_the_last_chunks(backend, cut):
    """Removing `cut` bytes: inside the final chunk (300 + 16 bytes), or into chunk 5 when the
    whole final chunk and more is gone. The length still looks valid; the end does not verify."""
    size = 6 * CHUNK + 300
    data = _data(size, 17)
    blob = shardseal.encrypt(data, KEY)
    short = blob[:-cut]
    rest = (len(short) - _header_size(blob) - MSG_HEAD) % SEALED
    if rest == 0 or rest < 16:
        with pytest.raises(TruncatedError):
            shardseal.open(io.BytesIO(short), "rb", key=KEY)
        return
    r = shardseal.open(io.BytesIO(short), "rb", key=KEY)
    claimed = r.size
    assert claimed < size
    with pytest.raises(AuthenticationError):
        r.seek(0, io.SEEK_END)
    assert r.tell() == 0
    with pytest.raises(AuthenticationError):
        r.read()
    with pytest.raises(AuthenticationError):
        r.read(claimed)
    with pytest.raises(AuthenticationError):
        r.pread(claimed - 1, 1)  # a read that reaches the end
    with pytest.raises(AuthenticationError):
        r.pread(claimed + 5, 1)  # past the end
    r.seek(claimed - 1)
    with pytest.raises(AuthenticationError):
        r.read(1)
    with pytest.raises(AuthenticationError):
        r.readinto(bytearray(10))
    # earlier chunks still read, via the cache and via the bulk path
    assert r.pread(0, 10) == data[:10]
    assert r.pread(CHUNK - 1, 2) == data[CHUNK - 1 : CHUNK + 1]
    assert r.pread(0, 4 * CHUNK) == data[: 4 * CHUNK]
    r.seek(CHUNK)
    assert r.read(4 * CHUNK) == data[CHUNK : 5 * CHUNK]


def test_appended_bytes_fail_at_the_end(backend):
    data = _data(3 * CHUNK + 10, 18)
    r = shardseal.open(io.BytesIO(shardseal.encrypt(data, KEY) + b"\x00" * 40), "rb", key=KEY)
    assert r.pread(0, CHUNK) == data[:CHUNK]
    with pytest.raises(AuthenticationError):
        r.read()
    with pytest.raises(AuthenticationError):
        r.seek(-1, io.SEEK_END)


@pytest.mark.parametrize("chunks", [0, 3, 8])
def test_empty_final_chunk_is_verified_by_a_read_ending_at_the_end(backend, tmp_path, chunks):
    """A size that is a multiple of 16384 ends with an empty final chunk (a bare tag); a read
    ending exactly at the end touches no byte of it but must still verify it."""
    size = chunks * CHUNK
    data = _data(size, 19)
    bad = bytearray(shardseal.encrypt(data, KEY))
    bad[-3] ^= 1  # the final chunk's tag
    bad = bytes(bad)

    def fresh():
        return shardseal.open(io.BytesIO(bad), "rb", key=KEY)

    if size:
        assert fresh().pread(0, CHUNK) == data[:CHUNK]  # not reaching the end: fine
        with pytest.raises(AuthenticationError):
            fresh().pread(0, size)
        with pytest.raises(AuthenticationError):
            fresh().pread(size - CHUNK, CHUNK)  # exactly the last full chunk
        with pytest.raises(AuthenticationError):
            fresh().pread(size - 1, 1)
        with pytest.raises(AuthenticationError):
            fresh().readinto(bytearray(size))
        r = fresh()
        r.seek(size - CHUNK)
        with pytest.raises(AuthenticationError):
            r.read(CHUNK)
    with pytest.raises(AuthenticationError):
        fresh().read()
    with pytest.raises(AuthenticationError):
        fresh().seek(0, io.SEEK_END)
    with pytest.raises(AuthenticationError):
        fresh().pread(size, 0)
    with pytest.raises(AuthenticationError):
        fresh().read(0) if size == 0 else fresh().pread(size, 1)
    path = tmp_path / "bad"
    path.write_bytes(bad)
    with pytest.raises(AuthenticationError):
        shardseal.decrypt_file(path, tmp_path / "out", KEY)
    assert not (tmp_path / "out").exists() and _temps(tmp_path) == []


# ---- threads ------------------------------------------------------------------------------


@pytest.mark.parametrize("source", ["path", "bytesio"])
def test_concurrent_pread_on_one_handle(backend, tmp_path, source):
    size = 120 * CHUNK + 4321
    data = _data(size, 20)
    blob = shardseal.encrypt(data, KEY)
    path = tmp_path / "c.sseal"
    path.write_bytes(blob)
    reader = shardseal.open(path if source == "path" else io.BytesIO(blob), "rb", key=KEY, cache_chunks=8)
    errors = []
    barrier = threading.Barrier(8)

    def worker(seed):
        rng = random.Random(seed)
        barrier.wait()
        try:
            for _ in range(200):
                offset = rng.randrange(size + 10)
                n = rng.choice([1, 50, CHUNK - 1, CHUNK + 1, 4 * CHUNK, 11 * CHUNK + 7, 40 * CHUNK])
                assert reader.pread(offset, n) == data[offset : offset + n], (offset, n)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    reader.close()
    assert errors == []


# ---- non-seekable input (pipes) ---------------------------------------------------------


class _Pipe:
    """A pipe fed by a thread in irregular pieces; `reader` is its read end as a file object."""

    def __init__(self, payload: bytes, buffered: bool = False, seed: int = 0) -> None:
        read_fd, self._write_fd = os.pipe()
        self.reader = open(read_fd, "rb", buffering=-1 if buffered else 0)
        self._payload = payload
        self._rng = random.Random(seed)
        self._thread = threading.Thread(target=self._feed, daemon=True)
        self._thread.start()

    def _feed(self) -> None:
        view = memoryview(self._payload)
        try:
            while view.nbytes:
                n = self._rng.choice([1, 999, SEALED, 65536, 300_000])
                written = os.write(self._write_fd, view[:n])
                view = view[written:]
        except BrokenPipeError:
            pass
        finally:
            os.close(self._write_fd)

    def close(self) -> None:
        self.reader.close()
        self._thread.join(30)
        assert not self._thread.is_alive()


def _stream_sizes():
    return [0, 1, 16383, 16384, 16385, 5 * CHUNK - 1, 5 * CHUNK, 5 * CHUNK + 1, 10 * CHUNK, 10 * CHUNK + 7,
            300 * CHUNK + 5]


@pytest.mark.parametrize("batch", [_stream.BULK_BATCH_CHUNKS, 5], ids=["default-batch", "batch-5"])
@pytest.mark.parametrize("buffered", [False, True], ids=["fileio", "buffered"])
def test_pipe_sequential_reads(backend, monkeypatch, batch, buffered):
    monkeypatch.setattr(_stream, "BULK_BATCH_CHUNKS", batch)
    for size in _stream_sizes():
        data = _data(size, size)
        blob = shardseal.encrypt(data, KEY)
        pipe = _Pipe(blob, buffered, seed=size)
        try:
            r = shardseal.open(pipe.reader, "rb", key=KEY)
            assert r.readable() and not r.seekable()
            assert r.size is None
            with pytest.raises(io.UnsupportedOperation):
                r.seek(0)
            with pytest.raises(io.UnsupportedOperation):
                r.seek(0, io.SEEK_END)
            with pytest.raises(io.UnsupportedOperation):
                r.pread(0, 1)
            rng = random.Random(size)
            got = []
            while True:
                n = rng.choice([1, 100, CHUNK - 1, CHUNK + 1, 5 * CHUNK, 2**20 + 3])
                if rng.random() < 0.3:
                    buf = bytearray(n)
                    k = r.readinto(buf)
                    piece = bytes(buf[:k])
                else:
                    piece = r.read(n)
                assert len(piece) == min(n, size - sum(map(len, got)))  # reads are never short
                if not piece:
                    break
                got.append(piece)
                assert r.tell() == sum(map(len, got))
                assert r.seek(0, io.SEEK_CUR) == r.tell()
            assert b"".join(got) == data
            assert r.size == size
            assert r.read() == b"" and r.read(5) == b""
        finally:
            pipe.close()


def test_pipe_read_all(backend, monkeypatch):
    monkeypatch.setattr(_stream, "BULK_BATCH_CHUNKS", 3)
    data = _data(20 * CHUNK + 5, 21)
    pipe = _Pipe(shardseal.encrypt(data, KEY), seed=21)
    try:
        r = shardseal.open(pipe.reader, "rb", key=KEY)
        assert r.read(10) == data[:10]
        assert r.read() == data[10:]
        assert r.tell() == len(data) and r.size == len(data)
    finally:
        pipe.close()


@pytest.mark.parametrize("chunks", [0, 2, 5, 6, 10, 12])
def test_pipe_truncated_at_a_chunk_boundary(backend, monkeypatch, chunks):
    monkeypatch.setattr(_stream, "BULK_BATCH_CHUNKS", 5)
    data = _data(12 * CHUNK + 100, 22)
    blob = shardseal.encrypt(data, KEY)
    pipe = _Pipe(blob[: _chunk_offset(blob, chunks)], seed=chunks)
    try:
        r = shardseal.open(pipe.reader, "rb", key=KEY)
        got = bytearray()
        with pytest.raises(TruncatedError) as excinfo:
            while True:
                piece = r.read(1000)
                if not piece:
                    break
                got += piece
        _exact(excinfo, TruncatedError)
        assert got == data[: len(got)]
        assert len(got) <= chunks * CHUNK
    finally:
        pipe.close()


@pytest.mark.parametrize("bad_chunk", [0, 4, 5, 9, 12])
@pytest.mark.parametrize("how", ["read", "readinto", "read-all"])
def test_pipe_tampered_returns_no_plaintext_of_the_failing_batch(backend, monkeypatch, bad_chunk, how):
    batch = 5
    monkeypatch.setattr(_stream, "BULK_BATCH_CHUNKS", batch)
    data = _data(12 * CHUNK + 100, 23)
    pipe = _Pipe(_tamper(shardseal.encrypt(data, KEY), bad_chunk, within=20), seed=bad_chunk)
    batch_start = (bad_chunk // batch) * batch * CHUNK  # plaintext offset of the failing batch
    try:
        r = shardseal.open(pipe.reader, "rb", key=KEY)
        got = bytearray()
        if how == "read-all":
            with pytest.raises(AuthenticationError) as excinfo:
                r.read()
        elif how == "read":
            with pytest.raises(AuthenticationError) as excinfo:
                while True:
                    piece = r.read(3000)
                    assert piece, "EOF before the tampered chunk"
                    got += piece
        else:
            buf = bytearray(b"\xaa" * len(data))
            with pytest.raises(AuthenticationError) as excinfo:
                r.readinto(buf)
            # bytes of earlier (authenticated) batches may be in the buffer; none of the failing one
            assert bytes(buf[:batch_start]) in (data[:batch_start], b"\xaa" * batch_start)
            assert set(buf[batch_start:]) <= {0xAA}
        _exact(excinfo, AuthenticationError)
        assert got == data[: len(got)]
        assert len(got) <= batch_start
    finally:
        pipe.close()


@pytest.mark.parametrize("damage", ["tamper-final", "truncate"])
def test_pipe_errors_are_sticky(backend, damage):
    """After a failed read on a pipe, later reads must keep failing: they must not report a
    clean end of file (a caller that retries would otherwise take the stream as complete)."""
    data = _data(3 * CHUNK + 100, 24)
    blob = shardseal.encrypt(data, KEY)
    blob = _tamper(blob, 3, within=5) if damage == "tamper-final" else blob[: _chunk_offset(blob, 3)]
    pipe = _Pipe(blob)
    try:
        r = shardseal.open(pipe.reader, "rb", key=KEY)
        with pytest.raises((AuthenticationError, TruncatedError)):
            r.read(10)
        with pytest.raises((AuthenticationError, TruncatedError)):
            r.read(10)  # BUG: returns b"" (clean EOF) after the first failure
        with pytest.raises((AuthenticationError, TruncatedError)):
            r.read()
    finally:
        pipe.close()


# ---- writer -------------------------------------------------------------------------------


def test_writer_exception_in_with_leaves_nothing(backend, tmp_path):
    path = tmp_path / "out.sseal"
    with pytest.raises(RuntimeError, match="boom"):
        with shardseal.open(path, "wb", key=KEY) as w:
            w.write(_data(3 * CHUNK + 5, 25))
            w.write(_data(5 * 2**20, 26))
            raise RuntimeError("boom")
    assert w.closed
    assert list(tmp_path.iterdir()) == []


def test_writer_exception_keeps_an_existing_destination(backend, tmp_path):
    path = tmp_path / "out.sseal"
    path.write_bytes(b"old contents")
    with pytest.raises(KeyboardInterrupt):
        with shardseal.open(path, "wb", key=KEY) as w:
            w.write(b"new" * 100_000)
            raise KeyboardInterrupt
    assert path.read_bytes() == b"old contents"
    assert _temps(tmp_path) == []


def test_writer_dropped_without_close_leaves_nothing(backend, tmp_path):
    path = tmp_path / "out.sseal"

    def make():
        w = shardseal.open(path, "wb", key=KEY)
        w.write(_data(5 * CHUNK + 1, 27))
        w.write(_data(4 * 2**20 + 3, 28))
        assert len(_temps(tmp_path)) == 1
        return w

    w = make()
    del w
    gc.collect()
    assert list(tmp_path.iterdir()) == []
    # and one that never had anything written
    w = shardseal.open(path, "wb", key=KEY)
    del w
    gc.collect()
    assert list(tmp_path.iterdir()) == []


def test_writer_abort_and_abort_on_file_object(backend, tmp_path):
    path = tmp_path / "out.sseal"
    w = shardseal.open(path, "wb", key=KEY)
    w.write(b"x" * 100_000)
    w.abort()
    assert w.closed and list(tmp_path.iterdir()) == []
    w.close()  # closing an aborted writer does not complete it
    assert list(tmp_path.iterdir()) == []
    # On a file object an aborted writer leaves an incomplete container: never a valid one.
    out = io.BytesIO()
    with pytest.raises(RuntimeError):
        with shardseal.open(out, "wb", key=KEY) as w:
            w.write(b"y" * (3 * CHUNK))
            raise RuntimeError
    with pytest.raises(TruncatedError):
        shardseal.decrypt(out.getvalue(), KEY)


def test_writer_close_twice_write_after_close_tell(backend, tmp_path):
    path = tmp_path / "out.sseal"
    w = shardseal.open(path, "wb", key=KEY)
    assert w.tell() == 0
    w.write(b"abc")
    assert w.tell() == 3
    w.write(b"")
    w.write(b"d" * CHUNK)
    assert w.tell() == 3 + CHUNK
    w.flush()
    w.close()
    w.close()
    assert w.closed
    with pytest.raises(ValueError):
        w.write(b"more")
    assert shardseal.decrypt(path.read_bytes(), KEY) == b"abc" + b"d" * CHUNK
    with pytest.raises(TypeError):
        shardseal.open(io.BytesIO(), "wb", key=KEY).write("text")


def test_open_argument_errors(tmp_path):
    with pytest.raises(ValueError):
        shardseal.open(tmp_path / "x", "r", key=KEY)
    with pytest.raises(ValueError):
        shardseal.open(tmp_path / "x", "ab", key=KEY)
    with pytest.raises(TypeError):
        shardseal.open(tmp_path / "x", "wb")
    with pytest.raises(ValueError):
        shardseal.open(tmp_path / "x", "wb", key=b"short")
    with pytest.raises(TypeError):
        shardseal.open(tmp_path / "x", "wb", key=KEY, metadata=[1])
    with pytest.raises(ValueError):
        shardseal.open(tmp_path / "x", "wb", key=KEY, suite=192)
    gc.collect()
    assert list(tmp_path.iterdir()) == []


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _fails_with(exc, function, *args, **kwargs) -> None:
    """Like pytest.raises, but drops the exception (and its traceback's references) at once."""
    try:
        function(*args, **kwargs)
    except exc:
        return
    raise AssertionError(f"{function.__name__} did not raise {exc.__name__}")


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
def test_failed_opens_do_not_leak_descriptors_or_files(backend, tmp_path):
    good = tmp_path / "good"
    good.write_bytes(shardseal.encrypt(b"data" * 10_000, KEY))
    cut = tmp_path / "cut"
    cut.write_bytes(good.read_bytes()[:100])
    gc.collect()
    before = _open_fds()
    for path, key, exc, kwargs in [(good, OTHER_KEY, KeyNotFoundError, {}), (good, b"short", ValueError, {}),
                                   (cut, KEY, TruncatedError, {}),
                                   (tmp_path / "missing", KEY, FileNotFoundError, {}),
                                   (good, KEY, ValueError, {"threads": 0})]:
        _fails_with(exc, shardseal.open, path, "rb", key=key, **kwargs)
        assert _open_fds() == before, (path.name, kwargs)
    for kwargs in [{"threads": 0}, {"key": b"short"}, {"suite": 3}]:
        _fails_with(ValueError, shardseal.open, tmp_path / "w", "wb", **{"key": KEY, **kwargs})
        assert _open_fds() == before
        assert _temps(tmp_path) == [], kwargs


def test_pickling_readers_and_writers_raises_type_error(backend, tmp_path):
    path = tmp_path / "p.sseal"
    path.write_bytes(shardseal.encrypt(b"secret", KEY))
    with shardseal.open(path, "rb", key=KEY) as r:
        for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
            with pytest.raises(TypeError):
                pickle.dumps(r, protocol)
        assert r.read() == b"secret"
    w = shardseal.open(tmp_path / "w.sseal", "wb", key=KEY)
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        with pytest.raises(TypeError):
            pickle.dumps(w, protocol)
    w.write(b"still fine")
    w.close()
    assert shardseal.decrypt((tmp_path / "w.sseal").read_bytes(), KEY) == b"still fine"


def test_long_destination_names(backend, tmp_path):
    """A legal 255-byte file name must be usable as a destination (the temp name is derived
    from it and must not exceed NAME_MAX)."""
    src = tmp_path / "s"
    src.write_bytes(b"long name")
    for length in (200, 235, 236, 255):
        dst = tmp_path / ("n" * length)
        shardseal.encrypt_file(src, dst, KEY)  # BUG: ENAMETOOLONG from 236 bytes on
        assert shardseal.decrypt(dst.read_bytes(), KEY) == b"long name"
        dst.unlink()


# ---- decrypt_file / encrypt_file failures ----------------------------------------------


def _bad_containers(data: bytes):
    blob = shardseal.encrypt(data, KEY)
    return {
        "wrong-key": (blob, OTHER_KEY, KeyNotFoundError),
        "tampered-first": (_tamper(blob, 0), KEY, AuthenticationError),
        "tampered-late": (_tamper(blob, len(data) // CHUNK - 2), KEY, AuthenticationError),
        "tampered-final": (_tamper(blob, len(data) // CHUNK, within=3), KEY, AuthenticationError),
        "truncated-boundary": (blob[: _chunk_offset(blob, 10)], KEY, TruncatedError),
        "truncated-in-final": (blob[:-7], KEY, AuthenticationError),
        "commitment": (_tamper(blob, 0, within=-20), KEY, AuthenticationError),
    }


@pytest.mark.parametrize("kind", list(_bad_containers(b"\x00" * (30 * CHUNK + 10))))
@pytest.mark.parametrize("existing", [False, True], ids=["no-dst", "existing-dst"])
def test_decrypt_file_failures_leave_nothing(backend, tmp_path, small_blocks, kind, existing):
    data = _data(30 * CHUNK + 10, 29)
    blob, key, exc = _bad_containers(data)[kind]
    src, dst = tmp_path / "src.sseal", tmp_path / "dst.bin"
    src.write_bytes(blob)
    if existing:
        dst.write_bytes(b"previous version")
    with pytest.raises(exc) as excinfo:
        shardseal.decrypt_file(src, dst, key)
    _exact(excinfo, exc)
    assert src.read_bytes() == blob
    assert _temps(tmp_path) == []
    if existing:
        assert dst.read_bytes() == b"previous version"
    else:
        assert not dst.exists()


def test_encrypt_file_failures_leave_nothing(backend, tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    with pytest.raises(FileNotFoundError):
        shardseal.encrypt_file(src, dst, KEY)
    assert list(tmp_path.iterdir()) == []
    src.write_bytes(b"plain")
    dst.write_bytes(b"previous")
    for kwargs, exc in [({"key": b"short"}, ValueError), ({"key": "text" * 8}, TypeError),
                        ({"key": KEY, "metadata": {"x": float("nan")}}, ValueError),
                        ({"key": KEY, "suite": 1}, ValueError)]:
        with pytest.raises(exc):
            shardseal.encrypt_file(src, dst, **kwargs)
        gc.collect()
        assert dst.read_bytes() == b"previous" and src.read_bytes() == b"plain"
        assert _temps(tmp_path) == []
    with pytest.raises(FileNotFoundError):
        shardseal.encrypt_file(src, tmp_path / "no-such-folder" / "dst", KEY)
    with pytest.raises(FileNotFoundError):
        shardseal.decrypt_file(tmp_path / "nothing", tmp_path / "out", KEY)
    (tmp_path / "folder").mkdir()
    with pytest.raises(OSError):  # the rename onto a folder fails at commit
        shardseal.encrypt_file(src, tmp_path / "folder", KEY)
    dst.write_bytes(shardseal.encrypt(b"plain", KEY))
    with pytest.raises(OSError):
        shardseal.decrypt_file(dst, tmp_path / "folder", KEY)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dst", "folder", "src"]
    assert list((tmp_path / "folder").iterdir()) == []


# ---- disk full, Ctrl-C --------------------------------------------------------------------


class _FullDiskRaw(io.RawIOBase):
    """A raw file that accepts `room` bytes, then fails every write with ENOSPC."""

    def __init__(self, raw, room: int) -> None:
        self._raw, self._room = raw, room

    def writable(self):
        return True

    def write(self, data):
        n = memoryview(data).nbytes
        if n > self._room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self._room -= n
        return self._raw.write(data)

    def fileno(self):
        return self._raw.fileno()

    def close(self):
        if not self.closed:
            self._raw.close()
        super().close()


class _FullDiskFile:
    """A buffered-file stand-in whose write raises ENOSPC once `room` bytes were written."""

    def __init__(self, file, room: int) -> None:
        self._file, self._room = file, room

    def write(self, data):
        n = memoryview(data).nbytes
        if n > self._room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self._room -= n
        return self._file.write(data)

    def __getattr__(self, name):
        return getattr(self._file, name)


@pytest.fixture
def full_disk(monkeypatch):
    """Makes AtomicFile's file run out of space; `layer` "file" fails at its write(), "raw"
    below its buffer (as a real full disk does: buffered bytes then fail at flush/close)."""
    settings = {}
    original = _files.AtomicFile.__init__

    def init(self, destination, mode=0o600, **options):
        original(self, destination, mode, **options)
        if settings["layer"] == "file":
            self.file = _FullDiskFile(self.file, settings["room"])
        else:
            self.file = io.BufferedWriter(_FullDiskRaw(self.file.detach(), settings["room"]))

    monkeypatch.setattr(_files.AtomicFile, "__init__", init)
    return settings


@pytest.mark.parametrize("layer", ["file", "raw"])
@pytest.mark.parametrize("size, room", [(3000, 0), (3000, 100), (3000, 2000), (12 * 2**20 + 5, 0),
                                        (12 * 2**20 + 5, 5000), (12 * 2**20 + 5, 3 * 2**20),
                                        (12 * 2**20 + 5, 9 * 2**20), (12 * 2**20 + 5, 12 * 2**20)])
def test_disk_full(backend, tmp_path, full_disk, layer, room, size):
    full_disk.update(layer=layer, room=room)
    data = _data(size, 30)
    src, enc, dst = tmp_path / "src", tmp_path / "enc", tmp_path / "dst"
    src.write_bytes(data)
    enc.write_bytes(shardseal.encrypt(data, KEY))
    dst.write_bytes(b"old")
    left_behind = []

    def writer(destination):
        with shardseal.open(destination, "wb", key=KEY) as w:
            _write_in_pieces(w, data)

    for function, source in [(shardseal.encrypt_file, src), (shardseal.decrypt_file, enc), (writer, None)]:
        with pytest.raises(OSError) as excinfo:
            function(dst) if source is None else function(source, dst, KEY)
        assert excinfo.value.errno == errno.ENOSPC
        assert dst.read_bytes() == b"old"
        assert src.read_bytes() == data
        temps = _temps(tmp_path)
        if temps:
            left_behind.append(function.__name__)
            for temp in temps:
                (tmp_path / temp).unlink()
    # BUG (layer "raw"): AtomicFile.abort closes the file first; when buffered bytes cannot be
    # flushed, close() raises again and the temp file is never unlinked.
    assert left_behind == [], f"temp file left behind by {left_behind}"


_RLIMIT_CHILD = r"""
import resource, signal, sys
import shardseal
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
limit = int(sys.argv[4])
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
try:
    getattr(shardseal, sys.argv[1])(sys.argv[2], sys.argv[3], bytes(range(32)))
except OSError as exc:
    print("OSError", exc.errno)
else:
    print("done")
"""


@pytest.mark.skipif(sys.platform != "linux", reason="uses RLIMIT_FSIZE")
@pytest.mark.parametrize("limit", [10, 2000, 3 * 2**20, 9 * 2**20 + 1])
def test_real_write_failure_in_a_child_leaves_nothing(tmp_path, limit):
    """The kernel refuses writes past RLIMIT_FSIZE (EFBIG): a real failing write() path,
    buffered bytes included."""
    small, large = _data(3000, 31), _data(12 * 2**20, 32)
    left_behind = []
    for name, data in [("small", small), ("large", large)]:
        folder = tmp_path / name
        folder.mkdir()
        (folder / "src").write_bytes(data)
        (folder / "enc").write_bytes(shardseal.encrypt(data, KEY))
        for function, source in [("encrypt_file", "src"), ("decrypt_file", "enc")]:
            result = subprocess.run(
                [sys.executable, "-c", _RLIMIT_CHILD, function, str(folder / source), str(folder / "dst"), str(limit)],
                capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
            )
            assert result.returncode == 0, result.stderr
            outcome = result.stdout.split()
            leftovers = _temps(folder)
            (folder / "dst").unlink(missing_ok=True)
            for temp in leftovers:
                (folder / temp).unlink()
            if outcome == ["done"]:
                continue
            assert outcome == ["OSError", str(errno.EFBIG)], result.stdout + result.stderr
            if leftovers:
                left_behind.append(f"{function} on {name} data")
    # BUG: a failing flush of buffered bytes makes AtomicFile.abort raise before it unlinks.
    assert left_behind == [], f"limit {limit}: temp file left behind by {left_behind}"


class _InterruptingBar:
    def __init__(self, after: int) -> None:
        self.after = after

    def update(self, n):
        self.after -= 1
        if self.after <= 0:
            raise KeyboardInterrupt


@pytest.mark.parametrize("after", [1, 3, 15])
def test_keyboard_interrupt_from_progress_leaves_nothing(backend, tmp_path, monkeypatch, small_blocks, after):
    import contextlib

    monkeypatch.setattr(_files, "_progress_bar",
                        lambda enabled, total, desc: contextlib.nullcontext(_InterruptingBar(after)))
    data = _data(1_000_000, 33)  # 16 blocks of 64 KiB
    src, enc, dst = tmp_path / "src", tmp_path / "enc", tmp_path / "dst"
    src.write_bytes(data)
    enc.write_bytes(shardseal.encrypt(data, KEY))
    for function, source, existing in [(shardseal.encrypt_file, src, False), (shardseal.decrypt_file, enc, False),
                                       (shardseal.encrypt_file, src, True), (shardseal.decrypt_file, enc, True)]:
        if existing:
            dst.write_bytes(b"old")
        with pytest.raises(KeyboardInterrupt):
            function(source, dst, KEY, progress=True)
        assert _temps(tmp_path) == []
        assert dst.read_bytes() == b"old" if existing else not dst.exists()
        assert src.read_bytes() == data
    # in place
    with pytest.raises(KeyboardInterrupt):
        shardseal.encrypt_file(src, src, KEY, progress=True)
    assert src.read_bytes() == data and _temps(tmp_path) == []


@pytest.mark.parametrize("where", ["read", "write"])
@pytest.mark.parametrize("error", [KeyboardInterrupt, MemoryError, OSError])
def test_interrupt_in_read_or_write_leaves_nothing(backend, tmp_path, monkeypatch, small_blocks, where, error):
    original = _files.copy_blocks
    calls = {"n": 0}

    def interrupting(read_into, write, total, progress):
        def wrap(function):
            def inner(*args):
                calls["n"] += 1
                if calls["n"] == 5:
                    raise error("interrupted")
                return function(*args)
            return inner
        if where == "read":
            read_into = wrap(read_into)
        else:
            write = wrap(write)
        return original(read_into, write, total, progress)

    monkeypatch.setattr(_files, "copy_blocks", interrupting)
    data = _data(1_000_000, 34)
    src, enc, dst = tmp_path / "src", tmp_path / "enc", tmp_path / "dst"
    src.write_bytes(data)
    enc.write_bytes(shardseal.encrypt(data, KEY))
    for function, source in [(shardseal.encrypt_file, src), (shardseal.decrypt_file, enc)]:
        calls["n"] = 0
        with pytest.raises(error):
            function(source, dst, KEY)
        assert not dst.exists() and _temps(tmp_path) == []
    assert src.read_bytes() == data


# ---- many GiB -----------------------------------------------------------------------------


def _compare_files(a: Path, b: Path, block: int = 8 * 2**20) -> None:
    with open(a, "rb", buffering=0) as fa, open(b, "rb", buffering=0) as fb:
        offset = 0
        while True:
            x, y = fa.read(block), fb.read(block)
            assert x == y, f"files differ in the block at {offset}"
            if not x:
                return
            offset += len(x)


@pytest.mark.slow
def test_multi_gib_sparse_round_trip(tmp_path):
    """3 GiB (past 2^31) through encrypt_file / decrypt_file, native backend only: 17-30 s
    here (2 cores; most of it is the disk), so marked slow."""
    if shardseal.backend != "native":
        pytest.skip("the Python backend would take minutes")
    size = 3 * 2**30 + 12345
    rng = random.Random(35)
    markers = {0: b"first", size - 7: b"lastend", 2**31 - 2: b"<2^31>", 2**31 + 16380: b"chunk-edge"}
    markers.update({rng.randrange(size - 64): rng.randbytes(32) for _ in range(20)})
    src, enc, dec = tmp_path / "sparse", tmp_path / "enc", tmp_path / "dec"
    try:
        with open(src, "wb") as f:
            f.truncate(size)
            for offset, marker in markers.items():
                f.seek(offset)
                f.write(marker)
        started = time.perf_counter()
        assert shardseal.encrypt_file(src, enc, KEY) == size
        encrypted = time.perf_counter()
        assert enc.stat().st_size == shardseal.encrypted_size(size)
        assert shardseal.decrypt_file(enc, dec, KEY) == size
        decrypted = time.perf_counter()
        _compare_files(src, dec)
        with shardseal.open(enc, "rb", key=KEY) as r:
            for offset, marker in markers.items():
                assert r.pread(offset, len(marker)) == marker
            assert r.seek(0, io.SEEK_END) == size
        print(f"\n3 GiB sparse: encrypt_file {encrypted - started:.1f} s, decrypt_file "
              f"{decrypted - encrypted:.1f} s, compare {time.perf_counter() - decrypted:.1f} s")
    finally:
        for path in (src, enc, dec):
            path.unlink(missing_ok=True)


def test_folder_lock_serialises_processes(tmp_path):
    """Keyrings, dataset manifests and rotation take this lock around read-modify-replace."""
    import multiprocessing

    from shardseal.io.files import folder_lock

    context = multiprocessing.get_context("fork")
    held, release = context.Event(), context.Event()

    def holder():
        with folder_lock(tmp_path):
            held.set()
            release.wait(30)

    child = context.Process(target=holder)
    child.start()
    assert held.wait(30)
    start = time.monotonic()
    threading.Timer(0.3, release.set).start()
    with folder_lock(tmp_path):
        waited = time.monotonic() - start
    child.join(30)
    assert waited >= 0.25 and child.exitcode == 0
    assert sorted(tmp_path.iterdir()) == []  # no lock file left behind
