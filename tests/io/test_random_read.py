"""MessageKeys.read_into / read: one call per random read of a message stored in a file (pread,
authenticate, decrypt, copy), on both backends, and the reader's use of it for regular files."""

from __future__ import annotations

import os

import pytest

import shardseal
from shardseal.errors import AuthenticationError, TruncatedError

CHUNK = 16384
SEALED = CHUNK + 16
SALT = bytes(range(24))
CONTEXT = b"the context"
PREFIX = b"h" * 100  # stands for a container header: chunk 0 does not start at offset 0
DATA_START = len(PREFIX) + 56
SIZES = [0, 1, 4096, CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK + 500, 5 * CHUNK]


def _store(backend, tmp_path, key, data, name="m.bin"):
    path = tmp_path / name
    path.write_bytes(PREFIX + backend.seal(256, key, SALT, CONTEXT, data, 1, b""))
    return path


def _ranges(size):
    for offset in sorted({0, 1, 4095, CHUNK - 1, CHUNK, CHUNK + 7, size - 1, size, size + 3}):
        if offset < 0:
            continue
        for length in (0, 1, 4096, CHUNK, CHUNK + 1, 3 * CHUNK + 5):
            yield offset, length


@pytest.mark.parametrize("size", SIZES)
def test_reads_match_the_plaintext(backend, key, tmp_path, size):
    data = os.urandom(size)
    path = _store(backend, tmp_path, key, data)
    keys = backend.MessageKeys(256, key, SALT, CONTEXT)
    fd = os.open(path, os.O_RDONLY)
    try:
        for offset, length in _ranges(size):
            want = data[offset : offset + length]
            out = bytearray(b"\xaa" * length)
            assert keys.read_into(fd, DATA_START, size, offset, out, 2) == len(want), (offset, length)
            assert bytes(out[: len(want)]) == want and set(out[len(want) :]) <= {0xAA}
            got = keys.read(fd, DATA_START, size, offset, length, 1)
            assert type(got) is bytes and got == want, (offset, length)
    finally:
        os.close(fd)


def test_a_long_read_spans_batches_and_threads(backend, key, tmp_path):
    size = 300 * CHUNK + 123  # more than one 256-chunk batch
    data = os.urandom(size)
    path = _store(backend, tmp_path, key, data)
    keys = backend.MessageKeys(256, key, SALT, CONTEXT)
    fd = os.open(path, os.O_RDONLY)
    try:
        out = bytearray(size)
        assert keys.read_into(fd, DATA_START, size, 5, out, 2) == size - 5
        assert bytes(out[: size - 5]) == data[5:]
    finally:
        os.close(fd)


@pytest.mark.parametrize("chunks", [1, 3])
def test_a_tampered_chunk_fails_and_zeroes_the_output(backend, key, tmp_path, chunks):
    size = chunks * CHUNK + 700
    data = os.urandom(size)
    path = _store(backend, tmp_path, key, data)
    blob = bytearray(path.read_bytes())
    blob[DATA_START + (chunks - 1) * SEALED + 10] ^= 1  # inside the last full chunk
    path.write_bytes(bytes(blob))
    keys = backend.MessageKeys(256, key, SALT, CONTEXT)
    fd = os.open(path, os.O_RDONLY)
    try:
        bad = (chunks - 1) * CHUNK
        for offset, length in [(bad, 10), (max(0, bad - 5), 4096), (0, size), (bad + CHUNK - 1, 2)]:
            out = bytearray(b"\xaa" * length)
            with pytest.raises(AuthenticationError):
                keys.read_into(fd, DATA_START, size, offset, out, 2)
            assert out == bytearray(length), (offset, length)
            with pytest.raises(AuthenticationError):
                keys.read(fd, DATA_START, size, offset, length, 1)
        if chunks > 1:  # chunks before the tampered one still read
            assert keys.read(fd, DATA_START, size, 0, CHUNK, 1) == data[:CHUNK]
    finally:
        os.close(fd)


@pytest.mark.parametrize("size", [0, CHUNK, 2 * CHUNK, 2 * CHUNK + 9])
def test_a_read_reaching_the_end_authenticates_the_final_chunk(backend, key, tmp_path, size):
    data = os.urandom(size)
    path = _store(backend, tmp_path, key, data)
    blob = bytearray(path.read_bytes())
    blob[-1] ^= 1  # the final chunk's tag
    path.write_bytes(bytes(blob))
    keys = backend.MessageKeys(256, key, SALT, CONTEXT)
    fd = os.open(path, os.O_RDONLY)
    try:
        if size >= CHUNK:  # not reaching the end: fine
            assert keys.read(fd, DATA_START, size, 0, CHUNK - 1, 1) == data[: CHUNK - 1]
        reaching = [(size, 0), (size, 10), (size + 5, 1)]
        if size:
            reaching += [(size - 1, 1), (0, size), (size - CHUNK if size >= CHUNK else 0, CHUNK)]
        for offset, length in reaching:
            with pytest.raises(AuthenticationError):
                keys.read_into(fd, DATA_START, size, offset, bytearray(length), 1)
    finally:
        os.close(fd)


def test_a_file_shorter_than_the_message_is_truncated(backend, key, tmp_path):
    size = 3 * CHUNK + 10
    data = os.urandom(size)
    path = _store(backend, tmp_path, key, data)
    os.truncate(path, DATA_START + 2 * SEALED + 100)
    keys = backend.MessageKeys(256, key, SALT, CONTEXT)
    fd = os.open(path, os.O_RDONLY)
    try:
        assert keys.read(fd, DATA_START, size, 0, 100, 1) == data[:100]
        out = bytearray(b"\xaa" * 4096)
        with pytest.raises(TruncatedError):
            keys.read_into(fd, DATA_START, size, 2 * CHUNK + 5, out, 1)
        assert out == bytearray(4096)
    finally:
        os.close(fd)


def test_bad_arguments(backend, key, tmp_path):
    path = _store(backend, tmp_path, key, b"x" * 100)
    keys = backend.MessageKeys(256, key, SALT, CONTEXT)
    fd = os.open(path, os.O_RDONLY)
    try:
        with pytest.raises(TypeError):
            keys.read_into(fd, DATA_START, 100, 0, b"read-only", 1)
        with pytest.raises(ValueError):
            keys.read_into(fd, DATA_START, 100, 0, bytearray(4), 0)
    finally:
        os.close(fd)
    with pytest.raises(OSError):
        keys.read_into(fd, DATA_START, 100, 0, bytearray(4), 1)  # closed descriptor


def test_the_reader_reads_a_regular_file_without_os_pread(backend, key, tmp_path, monkeypatch):
    """On the native backend a read of a regular file is one native call: no os.pread."""
    if backend.__name__.endswith("_pybackend"):
        pytest.skip("the Python backend reads with os.pread")
    data = os.urandom(5 * CHUNK + 77)
    path = tmp_path / "c.sseal"
    path.write_bytes(shardseal.encrypt(data, key))
    with shardseal.open(path, "rb", key=key, cache_chunks=2) as reader:

        def no_pread(*args):
            raise AssertionError("os.pread called")

        monkeypatch.setattr(os, "pread", no_pread)
        monkeypatch.setattr(os, "preadv", no_pread)
        for offset in (0, 100, CHUNK - 3, 3 * CHUNK + 17, len(data) - 10):
            assert reader.pread(offset, 4096) == data[offset : offset + 4096]
            buf = bytearray(4096)
            n = reader.preadinto(offset, buf)
            assert bytes(buf[:n]) == data[offset : offset + 4096]
        reader.seek(CHUNK + 1)
        assert reader.read(50) == data[CHUNK + 1 : CHUNK + 51]


class _CountingKeys:
    """Counts the reader's decrypting calls into its MessageKeys."""

    def __init__(self, inner):
        self.inner = inner
        self.calls = 0

    def __getattr__(self, name):
        attr = getattr(self.inner, name)
        if name in ("read", "read_into", "open_chunks_into"):
            def counted(*args):
                self.calls += 1
                return attr(*args)
            return counted
        return attr


def test_small_reads_walking_a_file_use_the_cache_and_random_ones_skip_it(backend, key, tmp_path):
    chunks = 6
    data = os.urandom(chunks * CHUNK + 100)
    path = tmp_path / "c.sseal"
    path.write_bytes(shardseal.encrypt(data, key))
    with shardseal.open(path, "rb", key=key) as reader:
        reader._keys = counting = _CountingKeys(reader._keys)
        for offset in range(0, chunks * CHUNK, 500):  # records read in order
            assert reader.pread(offset, 100) == data[offset : offset + 100]
        assert counting.calls <= chunks + 1  # each chunk decrypted once (the first read: twice)
        counting.calls = 0
        buf = bytearray(100)
        for offset in (5 * CHUNK + 7, 1 * CHUNK + 3, 3 * CHUNK + 9):  # random and cached: copies
            assert reader.preadinto(offset, buf) == 100 and bytes(buf) == data[offset : offset + 100]
        assert counting.calls == 0
    with shardseal.open(path, "rb", key=key, cache_chunks=1) as reader:
        for offset in (4 * CHUNK + 1, 1 * CHUNK + 2, 3 * CHUNK + 3, 0):  # random: straight reads
            assert reader.pread(offset, 4096) == data[offset : offset + 4096]
        if reader._fd is not None:
            assert len(reader._cache) == 0  # random reads do not evict what the cache holds
