"""The fsspec filesystem (protocol "sseal"): local, memory, HTTP and HTTPS targets."""

from __future__ import annotations

import json
import pickle
import random
import ssl
import uuid

import pytest

fsspec = pytest.importorskip("fsspec")
aiohttp = pytest.importorskip("aiohttp")

import shardseal
from shardseal.core.layout import CHUNK_SIZE, SEALED_CHUNK_SIZE, TAG_SIZE
from shardseal.fsspec import SealFileSystem

from ..http_helpers import certificates as _certificates, serve as _serve, stop as _stop

MiB = 2**20


def _plaintext(size: int, seed: int = 1) -> bytes:
    return random.Random(seed).randbytes(size)


def _random_ranges(size: int, count: int, seed: int = 2):
    rng = random.Random(seed)
    ranges = [(0, 1), (size - 1, 1), (size - CHUNK_SIZE - 3, CHUNK_SIZE + 3), (CHUNK_SIZE - 1, 2)]
    for _ in range(count):
        offset = rng.randrange(size)
        ranges.append((offset, rng.choice([1, 100, 4096, CHUNK_SIZE, 3 * CHUNK_SIZE + 7, 5 * CHUNK_SIZE])))
    return ranges


def _check_random_access(reader, plain: bytes) -> None:
    assert reader.size == len(plain)
    for offset, length in _random_ranges(len(plain), 40):
        reader.seek(offset)
        assert reader.read(length) == plain[offset : offset + length]
        assert reader.pread(offset, length) == plain[offset : offset + length]
    reader.seek(-10, 2)
    assert reader.read() == plain[-10:]


@pytest.fixture
def memory_path():
    """A fresh path on fsspec's (process-global) memory filesystem, removed afterwards."""
    folder = f"/sseal-test-{uuid.uuid4().hex}"
    yield f"{folder}/x.sseal"
    memory = fsspec.filesystem("memory")
    if memory.exists(folder):
        memory.rm(folder, recursive=True)


# ---- the protocol -------------------------------------------------------------------------


def test_protocol_is_registered():
    assert fsspec.get_filesystem_class("sseal") is SealFileSystem


@pytest.mark.parametrize("scheme", ["file://", ""])
def test_local_round_trip(backend, key, tmp_path, scheme):
    plain = _plaintext(3 * MiB + 12345)
    url = f"sseal::{scheme}{tmp_path}/sub/x.sseal"  # the folder is created on write
    with fsspec.open(url, "wb", sseal={"key": key, "metadata": {"split": "train"}}) as f:
        for start in range(0, len(plain), 1_000_000):
            f.write(plain[start : start + 1_000_000])
    stored = (tmp_path / "sub" / "x.sseal").read_bytes()
    assert shardseal.decrypt(stored, key) == plain
    assert shardseal.inspect(stored).metadata == {"split": "train"}

    with fsspec.open(url, "rb", sseal={"key": key}) as f:
        assert isinstance(f, shardseal.DecryptingReader)
        _check_random_access(f, plain)
        f.seek(0)
        assert f.read() == plain

    fs, path = fsspec.core.url_to_fs(url, sseal={"key": key})
    assert isinstance(fs, SealFileSystem)
    assert fs.info(path)["size"] == len(stored)  # ciphertext size
    assert fs.size(path) == shardseal.encrypted_size(len(plain), metadata={"split": "train"})
    assert fs.ls(str(tmp_path / "sub"), detail=False) == [str(tmp_path / "sub" / "x.sseal")]
    assert fs.cat_file(path, start=5, end=105) == plain[5:105]
    fs.rm(path)
    assert not fs.exists(path)


def test_memory_round_trip(key, memory_path):
    plain = _plaintext(2 * MiB + 1)
    url = f"sseal::memory://{memory_path}"
    with fsspec.open(url, "wb", sseal={"key": key}) as f:
        f.write(plain)
    stored = fsspec.filesystem("memory").cat_file(memory_path)
    assert shardseal.decrypt(stored, key) == plain
    with fsspec.open(url, "rb", sseal={"key": key, "threads": 2}) as f:
        _check_random_access(f, plain)

    fs = SealFileSystem(target_protocol="memory", key=key)
    assert fs.exists(memory_path) and fs.isfile(memory_path)
    assert fs.info(memory_path)["size"] == len(stored)
    fs.cp_file(memory_path, memory_path + ".copy")  # a container does not depend on its path
    assert fs.cat(memory_path + ".copy") == plain
    fs.pipe_file(memory_path + ".2", b"piped")
    assert shardseal.decrypt(fsspec.filesystem("memory").cat_file(memory_path + ".2"), key) == b"piped"
    assert sorted(fs.glob(memory_path.rsplit("/", 1)[0] + "/*.sseal*")) == sorted(
        [memory_path, memory_path + ".2", memory_path + ".copy"]
    )


def test_options_per_open_and_text_mode(key, memory_path):
    fs = SealFileSystem(target_protocol="memory", key=key, metadata={"fs": 1})
    with fs.open(memory_path, "wb", metadata={"file": 2}, suite=128) as f:
        f.write(b"x")
    info = shardseal.inspect(fsspec.filesystem("memory").cat_file(memory_path))
    assert info.metadata == {"file": 2} and info.suite.endswith("128")
    with fs.open(memory_path, "w", encoding="utf-8") as f:
        f.write("héllo\n" * 1000)
    assert shardseal.inspect(fsspec.filesystem("memory").cat_file(memory_path)).metadata == {"fs": 1}
    with fs.open(memory_path, "r", encoding="utf-8") as f:
        assert f.readlines() == ["héllo\n"] * 1000
    for mode in ("ab", "r+b"):
        with pytest.raises(ValueError, match="rb"):
            fs.open(memory_path, mode)


def test_put_encrypts_and_get_decrypts(key, tmp_path, memory_path):
    plain = _plaintext(MiB + 5)
    (tmp_path / "plain.bin").write_bytes(plain)
    fs = SealFileSystem(target_protocol="memory", key=key)
    fs.put(str(tmp_path / "plain.bin"), memory_path)
    assert shardseal.decrypt(fsspec.filesystem("memory").cat_file(memory_path), key) == plain
    fs.get(memory_path, str(tmp_path / "back.bin"))
    assert (tmp_path / "back.bin").read_bytes() == plain


def test_wrong_key(key, memory_path):
    with fsspec.open(f"sseal::memory://{memory_path}", "wb", sseal={"key": key}) as f:
        f.write(b"secret")
    other = shardseal.generate_key()
    with pytest.raises(shardseal.KeyNotFoundError):
        fsspec.open(f"sseal::memory://{memory_path}", "rb", sseal={"key": other}).open()


def test_not_a_container(key, memory_path):
    fsspec.filesystem("memory").pipe_file(memory_path, b"plain text, not a container" * 10)
    with pytest.raises(shardseal.FormatError):
        SealFileSystem(target_protocol="memory", key=key).open(memory_path)


def test_interrupted_write_leaves_nothing(key, tmp_path, memory_path):
    for fs, path in [(SealFileSystem(target_protocol="memory", key=key), memory_path),
                     (SealFileSystem(target_protocol="file", key=key), str(tmp_path / "x.sseal"))]:
        with pytest.raises(RuntimeError), fs.open(path, "wb") as f:
            f.write(_plaintext(MiB))
            raise RuntimeError("interrupted")
        assert not fs.exists(path)


def test_bad_write_options_leave_an_existing_file(key, tmp_path):
    fs = SealFileSystem(target_protocol="file", key=key)
    path = str(tmp_path / "x.sseal")
    fs.pipe_file(path, b"old")
    with pytest.raises(TypeError):
        fs.open(path, "wb", metadata={"not json": object()})
    with pytest.raises(ValueError):
        fs.open(path, "wb", suite=512)
    with pytest.raises(ValueError):
        fs.open(path, "wb", threads=0)
    assert fs.cat(path) == b"old"


def test_transaction(key, tmp_path):
    fs = SealFileSystem(target_protocol="file", key=key)
    path = str(tmp_path / "x.sseal")
    with fs.transaction:
        with fs.open(path, "wb") as f:
            f.write(b"committed at the end")
        assert not fs.exists(path)
    assert fs.cat(path) == b"committed at the end"

    other = str(tmp_path / "y.sseal")
    with pytest.raises(RuntimeError), fs.transaction:
        with fs.open(other, "wb") as f:
            f.write(b"discarded")
        raise RuntimeError("roll back")
    assert not fs.exists(other)


def test_empty_path_uses_chained_target_path(key, memory_path):
    # fsspec before 2025.10 hands a chained filesystem an empty path and the target in fo=.
    with fsspec.open(f"sseal::memory://{memory_path}", "wb", sseal={"key": key}) as f:
        f.write(b"data")
    fs = SealFileSystem(target_protocol="memory", fo=memory_path, key=key)
    with fs.open("", "rb") as f:
        assert f.read() == b"data"


# ---- key material -------------------------------------------------------------------------


def test_key_stays_out_of_pickles_tokens_and_repr(key, memory_path):
    fs = SealFileSystem(target_protocol="memory", key=key)
    key_id = shardseal.inspect(shardseal.encrypt(b"", key)).stanzas[0].key_id
    for text in (repr(fs), str(fs), repr(fs.storage_options), repr(fs.storage_args), fs._fs_token):
        assert key.hex() not in text and repr(key) not in text
    assert "key" not in fs.storage_options
    assert fs.storage_options["key_id"] == key_id and key_id in repr(fs)
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(fs)
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(fsspec.open(f"sseal::memory://{memory_path}", "rb", sseal={"key": key}))
    with pytest.raises(TypeError):
        fs.to_json()

    # Two keys: two instances, not equal; the same key and options: equal but not shared.
    other = SealFileSystem(target_protocol="memory", key=shardseal.generate_key())
    same = SealFileSystem(target_protocol="memory", key=key)
    assert other is not fs and other != fs and other._fs_token != fs._fs_token
    assert same is not fs and same == fs


def test_keyless_filesystem_lists_and_pickles(key, memory_path):
    SealFileSystem(target_protocol="memory", key=key).pipe_file(memory_path, b"x")
    fs = SealFileSystem(target_protocol="memory")
    assert fs.exists(memory_path)
    with pytest.raises(TypeError, match="key"):
        fs.open(memory_path, "rb")
    copy = pickle.loads(pickle.dumps(fs))
    assert copy.exists(memory_path) and copy._key is None
    assert json.loads(fs.to_json())["target_protocol"] == "memory"


def test_bad_keys():
    with pytest.raises(TypeError, match="str"):
        SealFileSystem(target_protocol="memory", key="0" * 32)
    with pytest.raises(ValueError, match="32 bytes"):
        SealFileSystem(target_protocol="memory", key=b"short")
    with pytest.raises(ValueError, match="not both"):
        SealFileSystem(target_protocol="memory", fs=fsspec.filesystem("memory"))


# ---- HTTP and HTTPS -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def sealed_file():
    key = shardseal.generate_key()
    plain = _plaintext(16 * MiB + 777, seed=7)
    return key, plain, shardseal.encrypt(plain, key)


@pytest.fixture
def http_server():
    server = _serve()
    yield server
    _stop(server)


def test_http_random_access_uses_range_requests(http_server, sealed_file):
    key, plain, blob = sealed_file
    http_server.files["/f.sseal"] = blob
    url = f"sseal::http://127.0.0.1:{http_server.server_port}/f.sseal"
    with fsspec.open(url, "rb", sseal={"key": key}) as f:
        _check_random_access(f, plain)
    assert http_server.gets and all(g is not None for g in http_server.gets)  # never a full GET

    # Opening and reading 4 KiB at a random offset moves a small part of the file.
    offset = random.Random(3).randrange(CHUNK_SIZE, len(plain) - 2 * CHUNK_SIZE)
    http_server.reset_counts()
    with fsspec.open(url, "rb", sseal={"key": key}) as f:
        f.seek(offset)
        assert f.read(4096) == plain[offset : offset + 4096]
    assert 0 < http_server.bytes_served < len(blob) / 4
    assert len(http_server.gets) <= 3

    # With a small read-ahead, little more than the header and the chunk.
    http_server.reset_counts()
    with fsspec.open(url, "rb", sseal={"key": key, "block_size": 4096}) as f:
        assert f.pread(offset, 4096) == plain[offset : offset + 4096]
    assert http_server.bytes_served < 4 * SEALED_CHUNK_SIZE

    # Reading the whole file sequentially moves each byte about once.
    http_server.reset_counts()
    with fsspec.open(url, "rb", sseal={"key": key}) as f:
        while f.read(65536):
            pass
    assert len(blob) <= http_server.bytes_served < 1.05 * len(blob)


def test_http_streaming_response_reads_sequentially(http_server, sealed_file):
    key, plain, blob = sealed_file
    http_server.files["/f.sseal"] = blob
    url = f"sseal::http://127.0.0.1:{http_server.server_port}/f.sseal"
    with fsspec.open(url, "rb", sseal={"key": key, "block_size": 0}) as f:  # no range requests
        assert not f.seekable()
        assert f.read(1000) == plain[:1000]
        assert f.read() == plain[1000:]
    assert http_server.gets == [None]


def test_http_tampered_chunk(http_server, sealed_file):
    key, plain, blob = sealed_file
    data_start = len(blob) - (len(plain) + (len(plain) // CHUNK_SIZE + 1) * TAG_SIZE)
    index = 300
    tampered = bytearray(blob)
    tampered[data_start + index * SEALED_CHUNK_SIZE + 100] ^= 1
    http_server.files["/t.sseal"] = bytes(tampered)
    url = f"sseal::http://127.0.0.1:{http_server.server_port}/t.sseal"
    with fsspec.open(url, "rb", sseal={"key": key}) as f:
        assert f.pread(0, 4096) == plain[:4096]  # other chunks still read
        assert f.pread((index + 1) * CHUNK_SIZE, 10) == plain[(index + 1) * CHUNK_SIZE :][:10]
        with pytest.raises(shardseal.AuthenticationError):
            f.pread(index * CHUNK_SIZE + 50, 10)
        f.seek((index - 2) * CHUNK_SIZE)
        with pytest.raises(shardseal.AuthenticationError):
            f.read(8 * CHUNK_SIZE)  # a bulk read through the chunk


def test_http_wrong_key(http_server, sealed_file):
    _, _, blob = sealed_file
    http_server.files["/f.sseal"] = blob
    url = f"sseal::http://127.0.0.1:{http_server.server_port}/f.sseal"
    with pytest.raises(shardseal.KeyNotFoundError):
        fsspec.open(url, "rb", sseal={"key": shardseal.generate_key()}).open()


def _ssl_error_in_chain(error) -> bool:
    while error is not None:
        if isinstance(error, (ssl.SSLError, ssl.CertificateError, aiohttp.ClientSSLError)):
            return True
        error = error.__cause__ or error.__context__
    return False


def test_https_with_certificate_verification(tmp_path, sealed_file):
    key, plain, blob = sealed_file
    ca, cert, cert_key = _certificates(tmp_path)
    server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_tls.load_cert_chain(cert, cert_key)
    server = _serve(server_tls)
    try:
        server.files["/f.sseal"] = blob
        url = f"sseal::https://127.0.0.1:{server.server_port}/f.sseal"

        client_tls = ssl.create_default_context(cafile=str(ca))  # verification on, our CA only
        assert client_tls.verify_mode == ssl.CERT_REQUIRED and client_tls.check_hostname

        async def trusting_client(**kwargs):
            return aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=client_tls), **kwargs)

        with fsspec.open(url, "rb", sseal={"key": key}, https={"get_client": trusting_client}) as f:
            for offset, length in _random_ranges(len(plain), 10):
                assert f.pread(offset, length) == plain[offset : offset + length]
        assert all(g is not None for g in server.gets)

        # Not trusting the CA (the system's roots only), the connection is refused.
        with pytest.raises(Exception) as failure:
            fsspec.open(url, "rb", sseal={"key": key}, https={"skip_instance_cache": True}).open()
        assert _ssl_error_in_chain(failure.value), repr(failure.value)
    finally:
        _stop(server)
