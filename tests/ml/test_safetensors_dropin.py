"""shardseal.safetensors as a drop-in for safetensors.torch: the same signatures (the key
keyword-only, the old positional key deprecated), every dtype safetensors stores (fp8, fp4),
and fsspec URLs (memory, loopback HTTP and HTTPS) where one tensor moves only its chunks."""

from __future__ import annotations

import inspect
import io
import ssl
import uuid
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
st = pytest.importorskip("safetensors.torch")
import safetensors

import shardseal
import shardseal.keyref
import shardseal.safetensors as sss
from shardseal.core.layout import SEALED_CHUNK_SIZE
from shardseal.errors import AuthenticationError, KeyNotFoundError

from ..http_helpers import certificates, serve, stop

ALL_DTYPES = ["float64", "float32", "float16", "bfloat16", "int64", "int32", "int16", "int8", "uint8", "bool",
              "complex64", "uint16", "uint32", "uint64", "float8_e4m3fn", "float8_e5m2", "float8_e8m0fnu",
              "float8_e4m3fnuz", "float8_e5m2fnuz", "float4_e2m1fn_x2"]


def every_dtype() -> dict:
    generator = torch.Generator().manual_seed(5)
    tensors = {}
    for name in ALL_DTYPES:
        dtype = getattr(torch, name, None)
        if dtype is None:
            continue
        raw = torch.randint(0, 256, (3, 4 * torch.empty((), dtype=dtype).element_size()), dtype=torch.uint8,
                            generator=generator)
        if dtype is torch.bool:
            raw = raw % 2
        tensors[name] = raw.view(dtype)
    return tensors


def same(a, b) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a.view(torch.uint8), b.view(torch.uint8))


# ---- signatures ------------------------------------------------------------------------------


@pytest.mark.parametrize("ours, theirs", [(sss.save_file, st.save_file), (sss.load_file, st.load_file),
                                          (sss.safe_open, safetensors.safe_open)])
def test_positional_parameters_are_safetensors(ours, theirs):
    mine = [p for p in inspect.signature(ours).parameters.values() if p.kind is p.POSITIONAL_OR_KEYWORD]
    try:
        other = [p.name for p in inspect.signature(theirs).parameters.values()
                 if p.kind in (p.POSITIONAL_OR_KEYWORD, p.POSITIONAL_ONLY)]
    except ValueError:  # safetensors.safe_open is a Rust class without a signature
        other = ["filename", "framework", "device"]
    assert [p.name for p in mine] == other
    keyword_only = {p.name for p in inspect.signature(ours).parameters.values() if p.kind is p.KEYWORD_ONLY}
    assert "key" in keyword_only


def test_drop_in_calls(tmp_path):
    key = shardseal.generate_key()
    tensors = {"a": torch.randn(3, 4), "b": torch.arange(5)}
    path = tmp_path / "m.sseal"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the new calls do not warn
        sss.save_file(tensors, path, {"format": "pt"}, key=key)
        loaded = sss.load_file(path, "cpu", key=key)
        with sss.safe_open(path, "pt", "cpu", key=key) as f:
            assert f.metadata() == {"format": "pt"}
            assert torch.equal(f.get_tensor("a"), tensors["a"])
        with sss.safe_open(path, framework="np", key=key) as f:
            assert np.array_equal(f.get_tensor("b"), tensors["b"].numpy())
    assert all(torch.equal(loaded[n], t) for n, t in tensors.items())


def test_old_positional_key_warns_and_works(tmp_path):
    key = shardseal.generate_key()
    tensors = {"a": torch.randn(3, 4)}
    path = tmp_path / "m.sseal"
    with pytest.warns(DeprecationWarning, match="key= "):
        sss.save_file(tensors, path, key, {"k": "v"})
    with pytest.warns(DeprecationWarning):
        assert torch.equal(sss.load_file(path, key, "cpu")["a"], tensors["a"])
    with pytest.warns(DeprecationWarning):
        with sss.safe_open(path, key, "pt") as f:
            assert f.metadata() == {"k": "v"}
    with pytest.warns(DeprecationWarning):  # a key reference is a key too
        sss.load_file(path, shardseal.keyref.RawKey(key))
    with pytest.warns(DeprecationWarning) as record:
        sss.load_file(path, key)
    assert record[0].filename == __file__  # the warning points at the caller's line


def test_ambiguous_or_doubled_arguments_are_refused(tmp_path):
    key = shardseal.generate_key()
    path = tmp_path / "m.sseal"
    sss.save_file({"a": torch.zeros(2)}, path, key=key)
    with pytest.raises(TypeError, match="both"):
        sss.load_file(path, key, key=key)
    with pytest.raises(TypeError, match="at most"):
        sss.load_file(path, "cpu", "extra", key=key)
    with pytest.raises(TypeError, match="multiple values"):
        sss.safe_open(path, "pt", framework="pt", key=key)
    with pytest.raises(TypeError):
        sss.load_file(path)  # no key at all
    with pytest.raises(TypeError, match="storage_options"):
        sss.load_file(path, key=key, storage_options={})


# ---- dtypes ----------------------------------------------------------------------------------


def test_every_dtype_byte_identical_to_safetensors(tmp_path):
    key = shardseal.generate_key()
    tensors = every_dtype()
    assert "float4_e2m1fn_x2" in tensors
    path = tmp_path / "all.sseal"
    sss.save_file(tensors, path, key=key)
    plain = shardseal.decrypt(path.read_bytes(), key)
    assert plain == st.save(tensors)  # the F4 shape counts 4-bit values, as safetensors writes
    loaded = sss.load_file(path, key=key)
    assert all(same(loaded[n], t) for n, t in tensors.items())
    (tmp_path / "all.safetensors").write_bytes(plain)
    with sss.safe_open(path, "pt", key=key) as ours, safetensors.safe_open(tmp_path / "all.safetensors", "pt") as theirs:
        for name in tensors:
            assert same(ours.get_tensor(name), theirs.get_tensor(name))
            assert ours.get_slice(name).get_shape() == theirs.get_slice(name).get_shape()
            assert ours.get_slice(name).get_dtype() == theirs.get_slice(name).get_dtype()


def test_fp4_rows(tmp_path):
    key = shardseal.generate_key()
    packed = torch.arange(40 * 6, dtype=torch.int32).to(torch.uint8).reshape(40, 6).view(torch.float4_e2m1fn_x2)
    path = tmp_path / "fp4.sseal"
    sss.save_file({"w": packed}, path, key=key)
    with sss.safe_open(path, "pt", key=key) as f:
        assert f.get_slice("w").get_shape() == [40, 12]
        assert same(f.get_slice("w")[3:9], packed[3:9].contiguous())
        with pytest.raises(ValueError, match="numpy"):
            sss.safe_open(path, "numpy", key=key).get_tensor("w")
    with pytest.raises(ValueError, match="0-d"):
        sss.save_file({"w": torch.zeros((), dtype=torch.uint8).view(torch.float4_e2m1fn_x2)}, path, key=key)


# ---- fsspec URLs -----------------------------------------------------------------------------


@pytest.mark.parametrize("prefix", ["sseal::memory://", "memory://"])
def test_memory_url(prefix):
    fsspec = pytest.importorskip("fsspec")
    key = shardseal.generate_key()
    tensors = every_dtype()
    folder = f"st-{uuid.uuid4().hex}"
    url = f"{prefix}{folder}/model.safetensors.sseal"
    try:
        sss.save_file(tensors, url, key=key)
        loaded = sss.load_file(url, key=key)
        assert all(same(loaded[n], t) for n, t in tensors.items())
        with sss.safe_open(url, "pt", key=key) as f:
            assert same(f.get_tensor("bfloat16"), tensors["bfloat16"])
        with pytest.raises(KeyNotFoundError):
            sss.load_file(url, key=shardseal.generate_key())
    finally:
        fsspec.filesystem("memory").rm(folder, recursive=True)


def test_interrupted_url_write_leaves_nothing():
    fsspec = pytest.importorskip("fsspec")
    url = f"memory://st-{uuid.uuid4().hex}/m.sseal"
    with pytest.raises(RuntimeError, match="share memory"):
        t = torch.zeros(4)
        sss.save_file({"a": t, "b": t}, url, key=shardseal.generate_key())
    assert not fsspec.filesystem("memory").exists(url[len("memory://"):])


@pytest.fixture
def remote_model():
    pytest.importorskip("fsspec")
    pytest.importorskip("aiohttp")
    key = shardseal.generate_key()
    generator = torch.Generator().manual_seed(3)
    tensors = {f"layer{i:02d}": torch.randn(1024, 1024, generator=generator) for i in range(8)}  # 32 MiB
    sink = io.BytesIO()
    sss.save_file(tensors, sink, key=key)
    return key, tensors, sink.getvalue()


def test_http_one_tensor_moves_only_its_chunks(remote_model):
    key, tensors, blob = remote_model
    server = serve()
    try:
        server.files["/model.safetensors.sseal"] = blob
        url = "sseal::" + server.url("/model.safetensors.sseal")
        server.reset_counts()
        with sss.safe_open(url, "pt", key=key) as f:
            assert f.keys() == sorted(tensors)
            assert torch.equal(f.get_tensor("layer05"), tensors["layer05"])
        tensor_bytes = 4 * 2**20
        # Its chunks, the headers and at most one read-ahead block (1 MiB) each way.
        assert tensor_bytes < server.bytes_served < tensor_bytes + 3 * 2**20, server.bytes_served
        assert server.bytes_served < len(blob) / 4
        assert all(get is not None for get in server.gets)  # never a whole-file GET

        server.reset_counts()
        loaded = sss.load_file(url, key=key)  # the whole file, about once
        assert all(torch.equal(loaded[n], t) for n, t in tensors.items())
        assert len(blob) <= server.bytes_served < 1.1 * len(blob)
    finally:
        stop(server)


def test_http_tampered_chunk_fails_the_tensor_that_holds_it(remote_model):
    key, tensors, blob = remote_model
    header_size = shardseal.inspect(blob).header_size
    tampered = bytearray(blob)
    tampered[header_size + 56 + 300 * SEALED_CHUNK_SIZE + 7] ^= 1  # chunk 300: inside layer01 (4 MiB = 256 chunks)
    server = serve()
    try:
        server.files["/t.sseal"] = bytes(tampered)
        with sss.safe_open("sseal::" + server.url("/t.sseal"), "pt", key=key) as f:
            assert torch.equal(f.get_tensor("layer00"), tensors["layer00"])
            with pytest.raises(AuthenticationError):
                f.get_tensor("layer01")
            assert torch.equal(f.get_tensor("layer02"), tensors["layer02"])
    finally:
        stop(server)


def test_https_with_verified_certificate(remote_model, tmp_path):
    aiohttp = pytest.importorskip("aiohttp")
    key, tensors, blob = remote_model
    ca, cert, cert_key = certificates(tmp_path)
    server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_tls.load_cert_chain(cert, cert_key)
    server = serve(server_tls)
    client_tls = ssl.create_default_context(cafile=str(ca))

    async def trusting_client(**kwargs):
        return aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=client_tls), **kwargs)

    try:
        server.files["/m.sseal"] = blob
        url = "sseal::" + server.url("/m.sseal", "https")
        with sss.safe_open(url, "pt", key=key, storage_options={"get_client": trusting_client}) as f:
            assert torch.equal(f.get_tensor("layer07"), tensors["layer07"])
        assert 0 < server.bytes_served < len(blob) / 4
    finally:
        stop(server)
