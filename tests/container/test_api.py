"""The public in-memory API on both backends: round trips, sizes, arrays, inspect, bad input."""

from __future__ import annotations

import mmap
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest

import shardseal
from shardseal import FormatError, KeyNotFoundError
from shardseal.container import header as _container

CHUNK = 16384
LENGTHS = [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK + 500, 3 * 2**20 + 11]


def _inputs(data: bytes):
    """The same bytes as every kind of buffer the API accepts."""
    arr = np.frombuffer(data, np.uint8).copy()
    yield "bytes", data
    yield "bytearray", bytearray(data)
    yield "memoryview", memoryview(data)
    yield "numpy", arr
    if len(data) % 4 == 0 and data:
        yield "numpy-float32", arr.view(np.float32)


@pytest.mark.parametrize("length", LENGTHS)
def test_round_trip_every_buffer_type(backend, key, length):
    data = os.urandom(length)
    for _, source in _inputs(data):
        blob = shardseal.encrypt(source, key, metadata={"n": length})
        assert len(blob) == shardseal.encrypted_size(length, metadata={"n": length})
        assert shardseal.decrypted_size(blob) == length
        assert shardseal.decrypt(blob, key) == data
        assert shardseal.decrypt(bytearray(blob), key, threads=1) == data


@pytest.mark.parametrize("threads", [None, 1, 2, 8])
def test_threads_give_the_same_plaintext(backend, key, threads):
    data = os.urandom(5 * 2**20 + 3)
    blob = shardseal.encrypt(data, key, threads=threads)
    assert shardseal.decrypt(blob, key, threads=threads) == data


def test_mmap_input(backend, key, tmp_path):
    data = os.urandom(3 * CHUNK + 5)
    path = tmp_path / "plain.bin"
    path.write_bytes(data)
    with path.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
        blob = shardseal.encrypt(mapped, key)
    (tmp_path / "sealed.bin").write_bytes(blob)
    with (tmp_path / "sealed.bin").open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
        assert shardseal.decrypt(mapped, key) == data


def test_non_contiguous_input_is_encrypted_in_c_order(backend, key):
    matrix = np.arange(40, dtype=np.int32).reshape(5, 8)
    view = matrix[:, ::2]
    assert not view.flags.c_contiguous
    assert shardseal.decrypt(shardseal.encrypt(view, key), key) == view.tobytes()


def test_into_variants_write_exactly_the_reported_sizes(backend, key, fixed_salt):
    data = os.urandom(2 * CHUNK + 500)
    expected = shardseal.encrypt(data, key, metadata={"a": 1})
    out = bytearray(shardseal.encrypted_size(len(data), metadata={"a": 1}) + 10)
    written = shardseal.encrypt_into(data, key, out, metadata={"a": 1})
    assert written == len(expected) and bytes(out[:written]) == expected
    plain = np.empty(shardseal.decrypted_size(expected), np.uint8)
    assert shardseal.decrypt_into(expected, key, plain) == len(data)
    assert plain.tobytes() == data


def test_suite_128_uses_a_derived_key_and_round_trips(backend, key):
    data = os.urandom(CHUNK + 3)
    blob = shardseal.encrypt(data, key, suite=128)
    assert shardseal.inspect(blob).suite == "cobblestone-128"
    assert shardseal.decrypt(blob, key) == data


def test_metadata_is_reported_and_authenticated(backend, key):
    blob = shardseal.encrypt(b"x" * 100, key, metadata={"split": "train", "name": "éè"})
    info = shardseal.inspect(blob)
    assert info.metadata == {"split": "train", "name": "éè"}
    assert info.stanzas[0].type == "direct" and len(info.stanzas[0].key_id) == 32
    assert info.plaintext_size == 100 and info.version == 1 and info.array is None


def test_generate_key_is_random_and_32_bytes():
    keys = {shardseal.generate_key() for _ in range(8)}
    assert len(keys) == 8 and all(len(k) == 32 for k in keys)


def test_backend_attribute_names_the_engine_in_use(backend):
    assert shardseal.backend in ("native", "python")
    assert shardseal.backend == ("native" if backend.__name__.endswith("_native") else "python")


# ---- arrays ---------------------------------------------------------------------------

DTYPES = ["bool", "int8", "uint8", ">i2", "<i2", "int32", ">u4", "int64", "float16", "<f4", ">f8",
          "complex64", "complex128", "datetime64[ns]", "timedelta64[s]", "S7", "<U3",
          [("x", "<f4"), ("y", ">i2", (2,)), ("tag", "S3")]]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", [(), (0,), (3, 0, 2), (7,), (4, 5, 3)])
def test_arrays_round_trip_with_dtype_shape_and_byte_order(backend, key, dtype, shape):
    dtype = np.dtype(dtype)
    size = int(np.prod(shape))
    raw = np.frombuffer(os.urandom(size * dtype.itemsize), np.uint8)
    array = raw.view(dtype).reshape(shape) if size else np.zeros(shape, dtype)
    if dtype.kind in "mM":  # random bits may land on NaT; only the bits matter here
        array = raw.view(np.int64).reshape(shape).astype(dtype) if size else array
    back = shardseal.decrypt_array(shardseal.encrypt_array(array, key), key)
    assert back.dtype == array.dtype and back.shape == array.shape
    assert back.tobytes() == array.tobytes() and back.flags.writeable


def test_non_contiguous_and_fortran_arrays(backend, key):
    base = np.arange(60, dtype=">f8").reshape(6, 10)
    for array in (base[::2, 1::3], np.asfortranarray(base), base.T):
        back = shardseal.decrypt_array(shardseal.encrypt_array(array, key, threads=1), key)
        np.testing.assert_array_equal(back, array)
        assert back.dtype == array.dtype


def test_large_array(backend, key):
    array = np.random.default_rng(0).standard_normal((1024, 1030), dtype=np.float32)
    blob = shardseal.encrypt_array(array, key, metadata={"layer": "fc1"})
    info = shardseal.inspect(blob)
    assert info.array == {"dtype": "<f4", "shape": [1024, 1030]} and info.metadata == {"layer": "fc1"}
    np.testing.assert_array_equal(shardseal.decrypt_array(blob, key), array)


def test_object_arrays_are_refused(backend, key):
    with pytest.raises(TypeError, match="Python objects"):
        shardseal.encrypt_array(np.array([1, "a", None], dtype=object), key)
    with pytest.raises(TypeError, match="Python objects"):
        shardseal.encrypt_array(np.zeros(2, dtype=[("a", "O")]), key)


def test_decrypt_array_refuses_a_plain_blob(backend, key):
    with pytest.raises(FormatError, match="does not hold a numpy array"):
        shardseal.decrypt_array(shardseal.encrypt(b"abc", key), key)


# ---- bad input ------------------------------------------------------------------------

@pytest.mark.parametrize("bad_key, error", [
    (b"short", ValueError), (bytes(33), ValueError), (bytes(16), ValueError),
    ("a" * 32, TypeError), (12345, TypeError), (None, TypeError),
])
def test_bad_keys_are_refused_clearly(backend, bad_key, error):
    with pytest.raises(error, match="key"):
        shardseal.encrypt(b"data", bad_key)
    blob = shardseal.encrypt(b"data", bytes(32))
    with pytest.raises(error, match="key"):
        shardseal.decrypt(blob, bad_key)


@pytest.mark.parametrize("bad", ["text", 123, None, [1, 2, 3], object()])
def test_non_buffer_input_is_a_type_error(backend, key, bad):
    with pytest.raises(TypeError, match="bytes-like"):
        shardseal.encrypt(bad, key)
    with pytest.raises(TypeError, match="bytes-like"):
        shardseal.decrypt(bad, key)


def test_read_only_output_buffer(backend, key):
    data = b"x" * 1000
    with pytest.raises(TypeError, match="read-only"):
        shardseal.encrypt_into(data, key, bytes(shardseal.encrypted_size(len(data))))
    blob = shardseal.encrypt(data, key)
    frozen = np.zeros(len(data), np.uint8)
    frozen.flags.writeable = False
    with pytest.raises(TypeError, match="read-only"):
        shardseal.decrypt_into(blob, key, frozen)


def test_too_small_output_buffer(backend, key):
    data = b"x" * 40000
    with pytest.raises(ValueError, match="too small"):
        shardseal.encrypt_into(data, key, bytearray(shardseal.encrypted_size(len(data)) - 1))
    blob = shardseal.encrypt(data, key)
    with pytest.raises(ValueError, match="too small"):
        shardseal.decrypt_into(blob, key, bytearray(len(data) - 1))


def test_output_overlapping_input_is_refused(backend, key):
    buf = bytearray(100000)
    with pytest.raises(ValueError, match="overlap"):
        shardseal.encrypt_into(memoryview(buf)[:1000], key, memoryview(buf)[500:])


def test_non_contiguous_output_is_refused(backend, key):
    out = np.zeros((200, 200), np.uint8)[:, ::2]
    with pytest.raises(TypeError, match="C-contiguous"):
        shardseal.encrypt_into(b"abc", key, out)


def test_empty_input_is_truncated(backend, key):
    with pytest.raises(shardseal.TruncatedError):
        shardseal.decrypt(b"", key)


@pytest.mark.parametrize("blob", [b"hello", b"hello world", b"PK\x03\x04" + bytes(100), bytes(200)])
def test_non_shardseal_input(backend, key, blob):
    with pytest.raises(FormatError):
        shardseal.decrypt(blob, key)
    with pytest.raises(FormatError):
        shardseal.inspect(blob)


def test_format_error_is_also_a_value_error():
    assert issubclass(FormatError, ValueError)


def test_future_format_version_is_refused(backend, key):
    blob = bytearray(shardseal.encrypt(b"data", key))
    blob[len(_container.MAGIC)] = 2
    with pytest.raises(FormatError, match="version 2"):
        shardseal.decrypt(bytes(blob), key)


def test_wrong_key_names_the_key_id_needed(backend, key):
    blob = shardseal.encrypt(b"data", key)
    with pytest.raises(KeyNotFoundError) as excinfo:
        shardseal.decrypt(blob, shardseal.generate_key())
    key_id = shardseal.inspect(blob).stanzas[0].key_id
    assert excinfo.value.key_ids == (key_id,) and key_id in str(excinfo.value)


@pytest.mark.parametrize("threads, error", [(0, ValueError), (-1, ValueError), (5000, ValueError),
                                            (1.5, TypeError), ("2", TypeError), (True, TypeError)])
def test_bad_thread_counts(backend, key, threads, error):
    with pytest.raises(error, match="threads"):
        shardseal.encrypt(b"abc", key, threads=threads)


@pytest.mark.parametrize("metadata, error", [([1, 2], TypeError), ({"a": object()}, TypeError),
                                             ({"a": float("nan")}, ValueError)])
def test_bad_metadata(backend, key, metadata, error):
    with pytest.raises(error):
        shardseal.encrypt(b"abc", key, metadata=metadata)


def test_unknown_suite(backend, key):
    with pytest.raises(ValueError, match="suite"):
        shardseal.encrypt(b"abc", key, suite=192)


def test_key_never_appears_in_errors(backend, key):
    blob = shardseal.encrypt(b"secret", key)
    for attempt in (lambda: shardseal.decrypt(blob, bytes(32)), lambda: shardseal.decrypt(blob[:-1], key)):
        with pytest.raises(shardseal.ShardsealError) as excinfo:
            attempt()
        text = str(excinfo.value) + repr(excinfo.value)
        assert key.hex() not in text and repr(key) not in text


def test_message_keys_do_not_pickle(backend):
    keys = backend.MessageKeys(256, bytes(32), bytes(24), b"")
    with pytest.raises(TypeError):
        pickle.dumps(keys)


# ---- backend selection ----------------------------------------------------------------

def _backend_in_subprocess(choice: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, SHARDSEAL_BACKEND=choice)
    code = "import warnings; warnings.simplefilter('error'); import shardseal; print(shardseal.backend)"
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)


def test_backend_selection_by_environment():
    assert _backend_in_subprocess("python").stdout.strip() == "python"
    from tests.conftest import NATIVE

    if NATIVE is not None:
        assert _backend_in_subprocess("native").stdout.strip() == "native"
        assert _backend_in_subprocess("auto").stdout.strip() == "native"
    result = _backend_in_subprocess("fastest")
    assert result.returncode != 0 and "SHARDSEAL_BACKEND must be one of" in result.stderr


def test_missing_native_module_falls_back_with_a_warning_or_fails_when_forced(tmp_path):
    # A stand-in package path where shardseal._native cannot be imported.
    blocker = tmp_path / "sitecustomize.py"
    blocker.write_text(
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'shardseal._native':\n"
        "            raise ImportError('blocked for the test')\n"
        "sys.meta_path.insert(0, Block())\n"
    )
    env = dict(os.environ, PYTHONPATH=str(tmp_path), SHARDSEAL_BACKEND="auto")
    code = "import shardseal; print(shardseal.backend)"
    auto = subprocess.run([sys.executable, "-W", "always", "-c", code], env=env, capture_output=True, text=True)
    assert auto.stdout.strip() == "python" and "RuntimeWarning" in auto.stderr
    env["SHARDSEAL_BACKEND"] = "native"
    forced = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert forced.returncode != 0 and "ImportError" in forced.stderr and "libssl-dev" in forced.stderr
