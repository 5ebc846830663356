"""shardseal.torch: tensors (every dtype, shapes, layouts) and torch.save / torch.load objects."""

from __future__ import annotations

import io
import os
import pickle
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")

import shardseal
import shardseal.torch as sst
from tests.torch_helpers import ReadOnlyPipe, random_tensor, same_bytes
from shardseal.container import blob as _blob, header as _container
from shardseal.core import backend as _backend, layout as _layout
from shardseal.keys import direct as _direct
from shardseal.errors import AuthenticationError, FormatError, KeyNotFoundError

from ..conftest import NATIVE

OTHER_KEY = bytes(range(1, 33))

pytestmark = [
    pytest.mark.filterwarnings("ignore:ComplexHalf support is experimental"),
    pytest.mark.filterwarnings("ignore:torch.quantize_per_tensor"),
]



def tensor_header(blob) -> dict:
    return _container.parse_header(blob).metadata


def seal_with_metadata(header_metadata: dict, payload: bytes, key: bytes) -> bytes:
    """An authentic container with any header metadata (as a buggy or foreign writer makes)."""
    plan = _blob.plan_header(key, None, 256, header_metadata)
    return _backend.impl.seal(256, plan.input_key, _blob.random_salt(), plan.fixed, payload, 1, plan.header)


# ---- tensors -------------------------------------------------------------------------------


def test_the_issue_dtypes_are_all_supported():
    wanted = ["float64", "float32", "float16", "bfloat16", "int8", "int16", "int32", "int64", "uint8",
              "bool", "complex64", "complex128", "complex32", "float8_e4m3fn", "float8_e5m2"]
    wanted += [name for name in ("uint16", "uint32", "uint64") if hasattr(torch, name)]
    assert set(wanted) <= set(sst.DTYPES)
    assert not any(name.startswith(("qint", "quint")) for name in sst.DTYPES)


@pytest.mark.parametrize("name", sorted(sst.DTYPES))
def test_every_dtype_round_trips(backend, key, name):
    dtype = sst.DTYPES[name]
    tensor = random_tensor(dtype, (3, 5, 7), seed=len(name))
    blob = sst.encrypt_tensor(tensor, key)
    assert tensor_header(blob)["tensor"] == {"dtype": name, "shape": [3, 5, 7]}
    assert tensor_header(blob)["content_type"] == "torch.Tensor"
    restored = sst.decrypt_tensor(blob, key)
    assert same_bytes(restored, tensor)
    # The plaintext is the tensor's raw little-endian bytes.
    assert shardseal.decrypt(blob, key) == tensor.reshape(-1).view(torch.uint8).numpy().tobytes()


def test_values_survive(backend, key):
    for tensor in (torch.randn(4, 4, dtype=torch.float64), torch.randn(9).to(torch.bfloat16),
                   torch.tensor([float("nan"), float("inf"), -0.0]), torch.arange(-5, 5, dtype=torch.int8),
                   torch.randn(3, dtype=torch.complex128)):
        restored = sst.decrypt_tensor(sst.encrypt_tensor(tensor, key), key)
        assert torch.equal(restored.nan_to_num(), tensor.nan_to_num())
        assert restored.dtype == tensor.dtype


@pytest.mark.parametrize("shape", [(), (0,), (3, 0, 2), (1,), (16384,), (16385,), (2, 3, 4, 5)])
def test_shapes(backend, key, shape):
    tensor = random_tensor(torch.float32, shape)
    restored = sst.decrypt_tensor(sst.encrypt_tensor(tensor, key), key)
    assert restored.shape == torch.Size(shape)
    assert same_bytes(restored, tensor)


@pytest.mark.skipif(NATIVE is None, reason="native backend not built")
def test_large_tensor(key):
    count = (64 * 2**20 + 12344) // 4  # just over 64 MiB, not a whole number of chunks
    tensor = torch.arange(count, dtype=torch.int32)
    blob = sst.encrypt_tensor(tensor, key)
    assert len(blob) > 64 * 2**20
    restored = sst.decrypt_tensor(blob, key)
    assert torch.equal(restored, tensor)


def test_non_contiguous_tensors(backend, key):
    base = torch.randn(6, 8)
    cases = {
        "transposed": base.t(),
        "strided slice": base[::2, 1::3],
        "column": base[:, 3],
        "expanded": torch.arange(4.0).reshape(4, 1).expand(4, 5),
        "channels_last": torch.randn(2, 3, 4, 5).to(torch.bfloat16, memory_format=torch.channels_last),
        "offset view": base[2:],  # contiguous, but not at the start of its storage
        "conjugate view": torch.randn(5, dtype=torch.complex64).conj(),
        "bool transposed": random_tensor(torch.bool, (3, 4)).t(),
    }
    for label, tensor in cases.items():
        restored = sst.decrypt_tensor(sst.encrypt_tensor(tensor, key), key)
        assert restored.is_contiguous(), label
        assert torch.equal(restored, tensor), label
        assert restored.dtype == tensor.dtype and not restored.is_conj(), label


def test_zero_copy_source_is_left_alone(key):
    tensor = torch.arange(100, dtype=torch.float32)
    before = tensor.clone()
    sst.encrypt_tensor(tensor, key)
    assert torch.equal(tensor, before)


def test_requires_grad_is_detached(backend, key):
    leaf = torch.randn(3, 4, requires_grad=True)
    parameter = torch.nn.Parameter(torch.randn(5))
    for tensor in (leaf, leaf * 2, parameter):
        restored = sst.decrypt_tensor(sst.encrypt_tensor(tensor, key), key)
        assert not restored.requires_grad
        assert type(restored) is torch.Tensor
        assert torch.equal(restored, tensor.detach())
    assert leaf.grad is None


def test_user_metadata_and_threads(backend, key):
    tensor = random_tensor(torch.int16, (10, 3))
    blob = sst.encrypt_tensor(tensor, key, metadata={"name": "emb"}, threads=1, suite=128)
    info = shardseal.inspect(blob)
    assert info.metadata == {"name": "emb"}
    assert info.content_type == "torch.Tensor"
    assert info.suite == "cobblestone-128"
    assert info.plaintext_size == tensor.numel() * 2
    assert torch.equal(sst.decrypt_tensor(blob, key, threads=1), tensor)


def test_same_bytes_on_both_backends(fixed_salt, key, monkeypatch):
    if NATIVE is None:
        pytest.skip("native backend not built")
    from shardseal.core import _pybackend

    tensor = random_tensor(torch.bfloat16, (40000,))
    blobs = []
    for impl in (NATIVE, _pybackend):
        monkeypatch.setattr(_backend, "impl", impl)
        blobs.append(sst.encrypt_tensor(tensor, key))
    assert blobs[0] == blobs[1]


def test_wrong_key(backend, key):
    blob = sst.encrypt_tensor(torch.ones(3), key)
    with pytest.raises(KeyNotFoundError):
        sst.decrypt_tensor(blob, OTHER_KEY)


def test_tampered_payload(backend, key):
    blob = bytearray(sst.encrypt_tensor(torch.ones(100000), key))
    blob[len(blob) // 2] ^= 1
    with pytest.raises(AuthenticationError):
        sst.decrypt_tensor(bytes(blob), key)


@pytest.mark.parametrize("old, new", [(b"[2,3]", b"[3,2]"), (b"[2,3]", b"[2,4]"), (b"float32", b"float64")])
def test_tampered_description(backend, key, old, new):
    blob = sst.encrypt_tensor(torch.ones(2, 3), key)
    assert blob.count(old) == 1
    with pytest.raises(AuthenticationError):
        sst.decrypt_tensor(blob.replace(old, new), key)


def test_not_a_tensor_container(backend, key):
    for blob in (shardseal.encrypt(b"bytes", key), shardseal.encrypt_array(__import__("numpy").ones(3), key)):
        with pytest.raises(FormatError, match="does not hold a torch tensor"):
            sst.decrypt_tensor(blob, key)


@pytest.mark.parametrize("spec, match", [
    ({"dtype": "float128", "shape": [2]}, "not a dtype"),
    ({"dtype": "qint8", "shape": [16]}, "not a dtype"),
    ({"dtype": 4, "shape": [4]}, "not a dtype"),
    ({"dtype": "float32", "shape": [-4]}, "shape"),
    ({"dtype": "float32", "shape": [True, 4]}, "shape"),
    ({"dtype": "float32", "shape": "4"}, "shape"),
    ({"dtype": "float32", "shape": [5]}, "do not match"),
    ({"dtype": "float32", "shape": [2**62] * 64}, "do not match"),  # no huge product, no allocation
    ({"dtype": "float32"}, "does not hold a torch tensor"),
])
def test_invalid_descriptions_from_an_authentic_writer(backend, key, spec, match):
    blob = seal_with_metadata({"content_type": "torch.Tensor", "tensor": spec}, bytes(16), key)
    with pytest.raises(FormatError, match=match):
        sst.decrypt_tensor(blob, key)


def test_tensor_is_a_reserved_key():
    fixed = _container.encode_fixed(256, {"tensor": "float32"})
    header = fixed + _container.encode_key_block([_direct.direct_stanza(bytes(32))])
    with pytest.raises(FormatError, match="'tensor' must be a JSON object"):
        _container.parse_header(header)


@pytest.mark.parametrize("bad, error", [
    (lambda: [1.0], TypeError),
    (lambda: torch.ones(3).to_sparse(), TypeError),
    (lambda: torch.quantize_per_tensor(torch.ones(3), 0.1, 0, torch.quint8), TypeError),
    (lambda: torch.ones(3, device="meta"), ValueError),
])
def test_refused_tensors(key, bad, error):
    with pytest.raises(error):
        sst.encrypt_tensor(bad(), key)


def test_device_argument_cpu(key):
    blob = sst.encrypt_tensor(torch.ones(3), key)
    assert sst.decrypt_tensor(blob, key, device=torch.device("cpu")).device.type == "cpu"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_round_trip(key):
    tensor = torch.randn(1000, 100, device="cuda").to(torch.bfloat16)
    blob = sst.encrypt_tensor(tensor, key)  # copied to the CPU
    restored = sst.decrypt_tensor(blob, key, device="cuda")
    assert restored.device.type == "cuda"
    assert torch.equal(restored, tensor)


def test_importing_shardseal_does_not_import_torch():
    code = ("import sys, shardseal, shardseal.safetensors; "
            "assert 'torch' not in sys.modules, 'torch imported'; "
            "assert 'safetensors' not in sys.modules, 'safetensors imported'")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    subprocess.run([sys.executable, "-c", code], check=True, env=env)


# ---- torch.save / torch.load ----------------------------------------------------------------


class Opaque:
    """A class that weights_only loading must refuse."""

    def __init__(self, value):
        self.value = value


def sample_object():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
    base = torch.arange(12.0)
    return {
        "weights": torch.randn(64, 64),
        "bf16": torch.randn(7).to(torch.bfloat16),
        "nested": [1, "two", [3.0, (torch.arange(4), {"deep": torch.ones(2, 2, dtype=torch.int8)})]],
        "state_dict": model.state_dict(),
        "views": (base[:6], base[6:]),  # two views of one storage
        "none": None,
    }


def assert_same_object(loaded, original):
    assert torch.equal(loaded["weights"], original["weights"])
    assert torch.equal(loaded["bf16"], original["bf16"])
    assert loaded["nested"][:2] == [1, "two"]
    assert loaded["nested"][2][0] == 3.0
    assert torch.equal(loaded["nested"][2][1][0], torch.arange(4))
    assert torch.equal(loaded["nested"][2][1][1]["deep"], torch.ones(2, 2, dtype=torch.int8))
    assert list(loaded["state_dict"]) == list(original["state_dict"])
    for name, value in original["state_dict"].items():
        assert torch.equal(loaded["state_dict"][name], value)
    first, second = loaded["views"]
    assert first.untyped_storage().data_ptr() == second.untyped_storage().data_ptr()  # sharing kept
    assert loaded["none"] is None


def test_save_load_path(backend, key, tmp_path):
    original = sample_object()
    path = tmp_path / "obj.pt.sseal"
    sst.save(original, path, key, metadata={"epoch": 3})
    assert sorted(os.listdir(tmp_path)) == ["obj.pt.sseal"]  # no temporary file left
    blob = path.read_bytes()
    assert b"PK\x03\x04" not in blob  # the zip archive is nowhere in the clear
    assert shardseal.inspect(blob).metadata == {"epoch": 3}
    plain = shardseal.decrypt(blob, key)
    assert plain.startswith(b"PK\x03\x04")  # the plaintext is exactly torch.save's archive
    assert_same_object(torch.load(io.BytesIO(plain)), original)
    assert_same_object(sst.load(path, key), original)
    assert_same_object(sst.load(str(path), key, map_location="cpu"), original)


def test_save_load_file_objects(backend, key):
    original = sample_object()
    sink = io.BytesIO()
    sst.save(original, sink, key)
    assert not sink.closed
    sink.seek(0)
    assert_same_object(sst.load(sink, key), original)
    assert not sink.closed


class WriteOnly(io.RawIOBase):
    """A pipe-like destination: no seek, no tell."""

    def __init__(self):
        self.data = bytearray()

    def writable(self):
        return True

    def write(self, b):
        self.data += b
        return memoryview(b).nbytes



def test_save_never_seeks_and_load_reads_pipes(backend, key):
    original = sample_object()
    sink = WriteOnly()
    sst.save(original, sink, key)
    assert_same_object(sst.load(ReadOnlyPipe(bytes(sink.data)), key), original)


def test_save_failure_leaves_nothing(backend, key, tmp_path):
    path = tmp_path / "obj.pt.sseal"
    with pytest.raises((pickle.PicklingError, AttributeError, TypeError)):
        sst.save({"ok": torch.ones(100000), "bad": lambda: None}, path, key)
    assert os.listdir(tmp_path) == []


def test_weights_only(backend, key, tmp_path):
    path = tmp_path / "obj.pt.sseal"
    sst.save({"opaque": Opaque(5), "t": torch.ones(2)}, path, key)
    with pytest.raises(pickle.UnpicklingError):
        sst.load(path, key)
    assert sst.load(path, key, weights_only=False)["opaque"].value == 5


def test_load_wrong_key(backend, key, tmp_path):
    path = tmp_path / "obj.pt.sseal"
    sst.save({"t": torch.ones(2)}, path, key)
    with pytest.raises(KeyNotFoundError):
        sst.load(path, OTHER_KEY)


def test_load_tampered(backend, key, tmp_path):
    path = tmp_path / "obj.pt.sseal"
    sst.save({"t": torch.randn(256, 1024)}, path, key)  # 1 MiB of tensor data: the middle is in it
    blob = bytearray(path.read_bytes())
    blob[len(blob) // 2] ^= 0x40
    path.write_bytes(blob)
    with pytest.raises(AuthenticationError):
        sst.load(path, key)


def test_load_truncated(backend, key, tmp_path):
    path = tmp_path / "obj.pt.sseal"
    sst.save({"t": torch.randn(64, 1024)}, path, key)
    blob = path.read_bytes()
    path.write_bytes(blob[: -_layout.TAG_SIZE - 100])
    with pytest.raises(shardseal.ShardsealError):
        sst.load(path, key)
