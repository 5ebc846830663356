"""The fast paths of small calls (header and key caches, inline threads) change nothing a
caller can observe: the same bytes, the same errors, no shared mutable metadata."""

from __future__ import annotations

import os

import numpy as np
import pytest

import shardseal
from shardseal import cobblestone
from shardseal.core import buffers as _buffers
from shardseal.container import _caches
from shardseal.errors import AuthenticationError, FormatError, KeyNotFoundError, ShardsealError, TruncatedError


@pytest.fixture(autouse=True)
def empty_caches():
    shardseal.clear_key_cache()
    yield
    shardseal.clear_key_cache()


def _outcome(call):
    """The result of call, or the class and message of the error it raised."""
    try:
        return ("ok", call())
    except (ShardsealError, TypeError, ValueError) as exc:
        return (type(exc), str(exc))


@pytest.mark.parametrize("metadata", [None, {"a": [1, 2], "b": "x"}])
@pytest.mark.parametrize("suite", [256, 128])
def test_cached_header_gives_the_same_container(backend, key, fixed_salt, metadata, suite):
    data = os.urandom(4096)
    cold = shardseal.encrypt(data, key, metadata=metadata, suite=suite)
    warm = shardseal.encrypt(data, key, metadata=metadata, suite=suite)
    shardseal.clear_key_cache()
    uncached = shardseal.encrypt(bytearray(data), bytearray(key), metadata=metadata, suite=suite)
    assert cold == warm == uncached
    out = bytearray(len(cold))
    assert shardseal.encrypt_into(data, key, out, metadata=metadata, suite=suite) == len(cold)
    assert bytes(out) == cold
    assert shardseal.decrypt(warm, key) == data == shardseal.decrypt(warm, key)


def test_every_header_byte_flip_fails_alike_on_a_cache_hit(backend, key):
    blob = shardseal.encrypt(b"payload" * 10, key, metadata={"k": "v"})
    header_size = shardseal.inspect(blob).header_size
    for position in range(header_size):
        tampered = bytearray(blob)
        tampered[position] ^= 0x01
        tampered = bytes(tampered)
        shardseal.clear_key_cache()
        cold = _outcome(lambda: shardseal.decrypt(tampered, key))
        shardseal.decrypt(blob, key)  # the good header and the key are now cached
        warm = _outcome(lambda: shardseal.decrypt(tampered, key))
        again = _outcome(lambda: shardseal.decrypt(tampered, key))
        assert cold == warm == again, position
        assert cold[0] in (AuthenticationError, FormatError, KeyNotFoundError, TruncatedError), position


def test_a_tampered_header_after_a_cache_hit_fails_with_its_own_error(backend, key):
    blob = shardseal.encrypt(b"x" * 100, key, metadata={"k": "v"})
    assert shardseal.decrypt(blob, key) == b"x" * 100
    changed = blob.replace(b'"v"', b'"w"', 1)  # still canonical JSON: the commitment catches it
    with pytest.raises(AuthenticationError):
        shardseal.decrypt(changed, key)
    with pytest.raises(FormatError):
        shardseal.decrypt(b"\x00" + blob[1:], key)
    with pytest.raises(AuthenticationError):
        shardseal.decrypt_into(changed, key, bytearray(100))
    assert shardseal.decrypt(blob, key) == b"x" * 100


def test_wrong_key_on_a_cache_hit(backend, key):
    other = bytes(32)
    blob = shardseal.encrypt(b"secret", key)
    assert shardseal.decrypt(blob, key) == b"secret"
    shardseal.encrypt(b"warm the other key", other)
    for _ in range(2):
        with pytest.raises(KeyNotFoundError) as info:
            shardseal.decrypt(blob, other)
        assert info.value.key_ids == (shardseal.inspect(blob).stanzas[0].key_id,)
        with pytest.raises(KeyNotFoundError):
            shardseal.decrypt_into(blob, other, bytearray(6))
    # A container whose key id matches but whose commitment does not (forged stanza):
    forged = shardseal.encrypt(b"secret", other)
    key_id = bytes.fromhex(shardseal.inspect(blob).stanzas[0].key_id)
    other_id = bytes.fromhex(shardseal.inspect(forged).stanzas[0].key_id)
    forged = forged.replace(other_id, key_id, 1)
    for _ in range(2):
        with pytest.raises(AuthenticationError):
            shardseal.decrypt(forged, key)


def test_bad_keys_fail_alike_with_a_warm_cache(backend, key):
    blob = shardseal.encrypt(b"data", key)
    shardseal.decrypt(blob, key)
    for bad in ["k" * 32, b"short", bytes(33), 42, None]:
        cold = _outcome(lambda: shardseal.encrypt(b"data", bad))
        shardseal.clear_key_cache()
        assert cold == _outcome(lambda: shardseal.encrypt(b"data", bad))
        assert cold[0] in (TypeError, ValueError)
        if bad is not None:
            assert _outcome(lambda: shardseal.decrypt(blob, bad))[0] in (TypeError, ValueError)


def test_a_mutable_key_is_read_on_every_call(backend, key):
    mutable = bytearray(key)
    blob = shardseal.encrypt(b"data", mutable)
    assert shardseal.decrypt(blob, mutable) == b"data"
    assert not _caches._direct_keys and not _caches._direct_plans
    mutable[0] ^= 1  # a bytearray key is never cached: the change takes effect
    with pytest.raises(KeyNotFoundError):
        shardseal.decrypt(blob, mutable)
    mutable[0] ^= 1
    assert shardseal.decrypt(blob, mutable) == b"data"


def test_metadata_never_leaks_between_calls(backend, key):
    metadata = {"tags": ["a"], "nested": {"n": 1}}
    first = shardseal.encrypt(b"data", key, metadata=metadata)
    metadata["tags"].append("b")
    second = shardseal.encrypt(b"data", key, metadata=metadata)
    assert shardseal.inspect(first).metadata == {"tags": ["a"], "nested": {"n": 1}}
    assert shardseal.inspect(second).metadata == {"tags": ["a", "b"], "nested": {"n": 1}}
    assert shardseal.decrypt(first, key) == b"data"  # caches the parsed header of `first`
    info = shardseal.inspect(first)
    info.metadata["tags"].append("mutated")
    info.metadata["nested"]["n"] = 2
    assert shardseal.inspect(first).metadata == {"tags": ["a"], "nested": {"n": 1}}
    with shardseal.open(_write(first), "rb", key=key) as reader:
        reader.header.metadata["user"]["tags"].append("mutated")
    assert shardseal.inspect(first).metadata == {"tags": ["a"], "nested": {"n": 1}}
    assert shardseal.decrypt(first, key) == b"data"


def _write(blob: bytes):
    import io
    return io.BytesIO(blob)


def test_arrays_through_the_cached_header(backend, key):
    array = np.arange(12, dtype=np.float32).reshape(3, 4)
    blob = shardseal.encrypt_array(array, key)
    for _ in range(3):
        result = shardseal.decrypt_array(blob, key)
        assert result.shape == (3, 4) and np.array_equal(result, array)
        result[0, 0] = 99
    assert shardseal.inspect(blob).array == {"dtype": "<f4", "shape": [3, 4]}


def test_key_cache_is_bounded_and_cleared(backend):
    keys = [os.urandom(32) for _ in range(_caches.KEY_CACHE_SIZE + 5)]
    for k in keys:
        assert shardseal.decrypt(shardseal.encrypt(b"x", k), k) == b"x"
    assert 0 < len(_caches._direct_keys) <= _caches.KEY_CACHE_SIZE
    assert len(_caches._direct_plans) <= _caches.KEY_CACHE_SIZE
    assert len(_caches._headers) <= _caches.HEADER_CACHE_SIZE
    shardseal.clear_key_cache()
    assert not _caches._direct_keys and not _caches._direct_plans and not _caches._headers


def test_key_cache_can_be_turned_off(backend, key, monkeypatch):
    monkeypatch.setattr(_caches, "KEY_CACHE_SIZE", 0)
    blob = shardseal.encrypt(b"data", key)
    assert shardseal.decrypt(blob, key) == b"data"
    assert not _caches._direct_keys and not _caches._direct_plans


def test_cached_key_objects_do_not_show_the_key(backend, key):
    shardseal.decrypt(shardseal.encrypt(b"x", key), key)
    for identity in _caches._direct_keys.values():
        assert key.hex() not in repr(identity) and repr(key) not in repr(identity)


def test_small_inputs_run_inline_whatever_the_thread_count():
    assert _buffers.thread_count(None, 4096) == 1
    assert _buffers.thread_count(None, _buffers.INLINE_BYTES) == _buffers.thread_count(None)
    assert _buffers.thread_count(3, 10) == 3
    with pytest.raises(ValueError):
        _buffers.thread_count(0, 10)
    with pytest.raises(TypeError):
        _buffers.thread_count(True, 10)


@pytest.mark.parametrize("convert", [bytes, bytearray, memoryview, lambda b: np.frombuffer(b, np.uint8)])
def test_cobblestone_buffer_types_give_the_same_bytes_and_errors(backend, convert):
    key = os.urandom(32)
    message = cobblestone.encrypt(b"m" * 64, key, b"ctx")
    assert cobblestone.decrypt(convert(message), convert(key), convert(b"ctx")) == b"m" * 64
    with pytest.raises(AuthenticationError):
        cobblestone.decrypt(convert(message), convert(key), convert(b"other"))
    with pytest.raises(ValueError):
        cobblestone.decrypt(convert(message), convert(key[:16]))
    with pytest.raises(TruncatedError):
        cobblestone.decrypt(convert(message[:40]), convert(key))
    with pytest.raises(TypeError):
        cobblestone.encrypt("text", convert(key))
    with pytest.raises(TypeError):
        cobblestone.decrypt(convert(message), "k" * 32)


# -- random reads (DecryptingReader.pread) ------------------------------------------------------

def test_pread_matches_the_plaintext_at_every_kind_of_offset(backend, key, tmp_path):
    data = os.urandom(5 * 16384 + 777)
    path = tmp_path / "c.sseal"
    path.write_bytes(shardseal.encrypt(data, key))
    offsets = [0, 1, 16383, 16384, 16380, 3 * 16384 - 2, len(data) - 4096, len(data) - 1, len(data), len(data) + 5]
    with shardseal.open(path, "rb", key=key, cache_chunks=2) as reader:
        for _ in range(2):  # cold, then partly cached
            for offset in offsets:
                for size in (0, 1, 4096, 16384, 40000):
                    assert reader.pread(offset, size) == data[offset : offset + size], (offset, size)
                    assert type(reader.pread(offset, size)) is bytes


def test_pread_of_a_tampered_chunk_is_audited_with_the_file(backend, key, tmp_path, caplog):
    import logging

    data = os.urandom(3 * 16384)
    blob = bytearray(shardseal.encrypt(data, key))
    blob[-16384] ^= 1  # inside chunk 2's ciphertext
    path = tmp_path / "bad.sseal"
    path.write_bytes(bytes(blob))
    with shardseal.open(path, "rb", key=key) as reader:
        assert reader.pread(0, 4096) == data[:4096]
        caplog.set_level(logging.INFO, logger="shardseal.audit")
        for _ in range(2):
            with pytest.raises(AuthenticationError):
                reader.pread(2 * 16384 + 10, 4096)
    events = [r.shardseal for r in caplog.records if r.name == "shardseal.audit"]
    assert [e["event"] for e in events] == ["authentication_failed"] * 2
    assert all(e["file"] == str(path) for e in events)


def test_every_call_is_audited_even_on_a_cache_hit(backend, key, caplog):
    import logging

    blob = shardseal.encrypt(b"data", key)
    for _ in range(2):
        assert shardseal.decrypt(blob, key) == b"data"  # cached, audit off
    caplog.set_level(logging.INFO, logger="shardseal.audit")
    for _ in range(3):
        assert shardseal.decrypt(blob, key) == b"data"
    with pytest.raises(KeyNotFoundError):
        shardseal.decrypt(blob, bytes(32))
    events = [r.shardseal["event"] for r in caplog.records if r.name == "shardseal.audit"]
    assert events == ["unwrap"] * 3 + ["key_not_found"]


def test_bytes_input_skips_only_the_overlap_check_it_cannot_fail(backend, key):
    buffer = bytearray(shardseal.encrypted_size(100) + 100)
    view = memoryview(buffer)
    with pytest.raises(ValueError, match="overlap"):
        shardseal.encrypt_into(view[:100], key, view[50:])
    blob = shardseal.encrypt(b"z" * 100, key)
    out = bytearray(100)
    assert shardseal.decrypt_into(blob, key, out) == 100 and out == b"z" * 100
