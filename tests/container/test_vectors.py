"""Both backends against the container v1 test vectors (tests/vectors/container_v1.json).

The last tests do not use shardseal's header or Cobblestone code at all: they parse the header
with struct and json as docs/FORMAT.md describes it and decrypt the payload with
``cryptography.cobblestone``, so they check the specification, not just this implementation.
"""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

import numpy as np
import pytest
from cryptography.cobblestone import Cobblestone128Decryptor, Cobblestone256Decryptor
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

import shardseal
from shardseal import errors

VECTORS = json.loads((Path(__file__).resolve().parents[1] / "vectors" / "container_v1.json").read_text("utf-8"))
VALID = VECTORS["valid"]
INVALID = VECTORS["invalid"]
ENCRYPTABLE = [v for v in VALID if not v["decrypt_only"]]


def _ids(vectors):
    return [v["name"] for v in vectors]


def _pattern(n: int) -> bytes:
    return bytes(i % 251 for i in range(n))


def _plaintext(vector) -> bytes:
    if "plaintext" in vector:
        data = bytes.fromhex(vector["plaintext"])
    else:
        assert vector["plaintext_pattern"] == "bytes(i % 251 for i in range(plaintext_length))"
        data = _pattern(vector["plaintext_length"])
    assert len(data) == vector["plaintext_length"]
    assert hashlib.sha256(data).hexdigest() == vector["plaintext_sha256"]
    return data


def _array(vector) -> np.ndarray:
    spec = vector["array"]
    return np.array(spec["values"], dtype=np.dtype(spec["dtype"])).reshape(spec["shape"])


def _encrypt(vector, monkeypatch) -> bytes:
    """The vector's container, made with the public API and the vector's salt."""
    salt = bytes.fromhex(vector["salt"])
    monkeypatch.setattr("shardseal.container.blob.random_salt", lambda: salt)
    key = bytes.fromhex(vector["key"])
    if vector["kind"] == "array":
        return shardseal.encrypt_array(_array(vector), key, metadata=vector["metadata"], suite=vector["suite"])
    return shardseal.encrypt(_plaintext(vector), key, metadata=vector["metadata"], suite=vector["suite"])


def _container(vector, monkeypatch) -> bytes:
    """The vector's container bytes: from its hex, or (large ones) rebuilt and checked by digest."""
    if "container" in vector:
        blob = bytes.fromhex(vector["container"])
    else:
        blob = _encrypt(vector, monkeypatch)
    assert len(blob) == vector["container_length"]
    assert hashlib.sha256(blob).hexdigest() == vector["container_sha256"]
    return blob


def _error_class(name):
    cls = getattr(errors, name)
    assert issubclass(cls, errors.ShardsealError)
    return cls


def test_vector_file_covers_the_cases():
    names = set(_ids(VALID)) | set(_ids(INVALID))
    assert len(names) == len(VALID) + len(INVALID), "vector names must be unique"
    sizes = {v["plaintext_length"] for v in VALID if v["kind"] == "bytes"}
    assert {0, 1, 16383, 16384, 16385, 2 * 16384 + 500} <= sizes
    assert {v["suite"] for v in VALID} == {128, 256}
    assert {v["error"] for v in INVALID} == {"FormatError", "TruncatedError", "KeyNotFoundError",
                                             "AuthenticationError"}


# --- valid vectors, through each backend ---------------------------------------------------


@pytest.mark.parametrize("vector", ENCRYPTABLE, ids=_ids(ENCRYPTABLE))
def test_encrypt_gives_the_vector_bytes(backend, vector, monkeypatch):
    blob = _encrypt(vector, monkeypatch)
    if "container" in vector:
        assert blob.hex() == vector["container"]
    assert len(blob) == vector["container_length"]
    assert hashlib.sha256(blob).hexdigest() == vector["container_sha256"]
    assert blob[: vector["header_size"]].hex() == vector["header"]
    if vector["kind"] == "bytes":
        assert shardseal.encrypted_size(vector["plaintext_length"], metadata=vector["metadata"],
                                        suite=vector["suite"]) == len(blob)


@pytest.mark.parametrize("vector", VALID, ids=_ids(VALID))
def test_decrypt_gives_the_plaintext(backend, vector, monkeypatch):
    blob = _container(vector, monkeypatch)
    key = bytes.fromhex(vector["key"])
    plaintext = _plaintext(vector)
    assert shardseal.decrypt(blob, key) == plaintext
    assert shardseal.decrypted_size(blob) == len(plaintext)
    out = bytearray(len(plaintext))
    assert shardseal.decrypt_into(blob, key, out) == len(plaintext)
    assert out == plaintext
    if vector["kind"] == "array":
        expected = _array(vector)
        result = shardseal.decrypt_array(blob, key)
        assert result.dtype.str == vector["array"]["dtype"]
        assert result.shape == tuple(vector["array"]["shape"])
        np.testing.assert_array_equal(result, expected)


@pytest.mark.parametrize("vector", VALID, ids=_ids(VALID))
def test_inspect_reports_the_header(backend, vector, monkeypatch):
    info = shardseal.inspect(_container(vector, monkeypatch))
    assert info.version == 1
    assert info.suite == f"cobblestone-{vector['suite']}"
    assert info.header_size == vector["header_size"]
    assert info.plaintext_size == vector["plaintext_length"]
    header_metadata = vector["header_metadata"]
    assert info.metadata == header_metadata.get("user", {})
    assert info.metadata == (vector["metadata"] or {})
    assert info.array == header_metadata.get("array")
    assert info.content_type == header_metadata.get("content_type")
    stanzas = vector.get("stanzas", [{"type": "direct", "key_id": vector["key_id"]}])
    assert [(s.type, s.key_id) for s in info.stanzas] == [(s["type"], s["key_id"]) for s in stanzas]
    assert vector["key_id"] in [s.key_id for s in info.stanzas]


# --- invalid vectors, through each backend -------------------------------------------------


@pytest.mark.parametrize("vector", INVALID, ids=_ids(INVALID))
def test_invalid_vector_raises_exactly(backend, vector):
    blob = bytes.fromhex(vector["container"])
    key = bytes.fromhex(vector["key"])
    expected = _error_class(vector["error"])
    with pytest.raises(expected) as excinfo:
        shardseal.decrypt(blob, key)
    assert type(excinfo.value) is expected

    if vector["inspect_error"] is None:
        shardseal.inspect(blob)
    else:
        inspect_expected = _error_class(vector["inspect_error"])
        with pytest.raises(inspect_expected) as excinfo:
            shardseal.inspect(blob)
        assert type(excinfo.value) is inspect_expected

    if vector["error"] == "AuthenticationError":
        # No plaintext is released: decrypt_into leaves nothing of it in the buffer.
        out = bytearray(shardseal.decrypted_size(blob))
        with pytest.raises(errors.AuthenticationError) as excinfo:
            shardseal.decrypt_into(blob, key, out)
        assert type(excinfo.value) is errors.AuthenticationError
        assert out == bytes(len(out))


def test_wrong_key_error_names_the_key_id(backend):
    vector = next(v for v in INVALID if v["name"] == "wrong-key")
    valid = next(v for v in VALID if v["name"] == "small-256-user-metadata")
    with pytest.raises(errors.KeyNotFoundError) as excinfo:
        shardseal.decrypt(bytes.fromhex(vector["container"]), bytes.fromhex(vector["key"]))
    assert excinfo.value.key_ids == (valid["key_id"],)


# --- the specification, checked without shardseal's header or Cobblestone code -------------

MAGIC = bytes.fromhex("8953534541 4c0d0a1a0a")
SUITES = {1: (256, Cobblestone256Decryptor), 2: (128, Cobblestone128Decryptor)}


def _hkdf_expand(prk: bytes, info: bytes, length: int) -> bytes:
    return HKDFExpand(hashes.SHA512(), length, info).derive(prk)


def _spec_canonical(obj) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")


def _spec_parse(blob: bytes):
    """Parses a container per docs/FORMAT.md: (suite id, metadata, fixed part, stanzas, payload)."""
    assert len(blob) >= 16
    magic, version, suite_id, metadata_len = struct.unpack_from(">10sBBI", blob, 0)
    assert magic == MAGIC and version == 1 and suite_id in SUITES
    assert 16 + metadata_len <= 1 << 20
    metadata_bytes = blob[16 : 16 + metadata_len]
    metadata = json.loads(metadata_bytes.decode("utf-8"))
    assert isinstance(metadata, dict) and _spec_canonical(metadata) == metadata_bytes
    fixed = blob[: 16 + metadata_len]
    pos = len(fixed)
    (count,) = struct.unpack_from(">H", blob, pos)
    assert 1 <= count <= 1024
    pos += 2
    stanzas = []
    for _ in range(count):
        stanza_type, body_len = struct.unpack_from(">HI", blob, pos)
        pos += 6
        stanzas.append((stanza_type, blob[pos : pos + body_len]))
        pos += body_len
    assert pos <= 1 << 20
    assert all(t & 0x8000 == 0 for t, _ in stanzas)  # no unknown critical stanza (none is known)
    return suite_id, metadata, fixed, stanzas, blob[pos:]


@pytest.mark.parametrize("vector", VALID, ids=_ids(VALID))
def test_spec_independent_decryption(vector, monkeypatch):
    blob = _container(vector, monkeypatch)
    key = bytes.fromhex(vector["key"])
    suite_id, metadata, fixed, stanzas, payload = _spec_parse(blob)
    bits, decryptor_class = SUITES[suite_id]
    assert bits == vector["suite"]
    assert metadata == vector["header_metadata"]
    assert fixed.hex() == vector["fixed"]

    key_id = _hkdf_expand(key, b"shardseal/v1/direct-key-id", 16)
    assert key_id.hex() == vector["key_id"]
    assert (0x0001, key_id) in stanzas
    input_key = key if bits == 256 else _hkdf_expand(key, b"shardseal/v1/cobblestone-128-key", 16)
    assert input_key.hex() == vector["input_key"]

    # The payload: salt (24) || commitment (32) || chunks of 16384 + 16 bytes, final one short.
    n = vector["plaintext_length"]
    assert payload[:24].hex() == vector["salt"]
    assert len(payload) == 56 + n + 16 * (n // 16384 + 1)
    decryptor = decryptor_class(input_key, context=fixed)
    plaintext = decryptor.update(payload) + decryptor.finalize()
    assert plaintext == _plaintext(vector)


@pytest.mark.parametrize("vector", ENCRYPTABLE, ids=_ids(ENCRYPTABLE))
def test_spec_independent_header_encoding(vector):
    """The header rebuilt from the spec alone equals the vector's header."""
    metadata = {}
    if vector["kind"] == "array":
        metadata["content_type"] = "numpy.ndarray"
        metadata["array"] = {"dtype": vector["array"]["dtype"], "shape": vector["array"]["shape"]}
    if vector["metadata"] is not None:
        metadata["user"] = vector["metadata"]
    body = _spec_canonical(metadata)
    fixed = MAGIC + struct.pack(">BBI", 1, {256: 1, 128: 2}[vector["suite"]], len(body)) + body
    key_id = _hkdf_expand(bytes.fromhex(vector["key"]), b"shardseal/v1/direct-key-id", 16)
    header = fixed + struct.pack(">HHI", 1, 0x0001, 16) + key_id
    assert header.hex() == vector["header"]
