"""Interoperability with cryptography.cobblestone (an implementation this project did not
write), both ways, and byte-identity between the native and Python backends."""

from __future__ import annotations

import os
import random

import pytest

import shardseal
from shardseal import cobblestone
from tests.conftest import BACKENDS

peer = pytest.importorskip("cryptography.cobblestone", reason="needs cryptography >= 50")

PEER_CLASSES = {
    256: (peer.Cobblestone256Encryptor, peer.Cobblestone256Decryptor),
    128: (peer.Cobblestone128Encryptor, peer.Cobblestone128Decryptor),
}
CHUNK = 16384
RANDOM_LENGTHS = random.Random(2026).sample(range(1, 12 * CHUNK), 4)
LENGTHS = [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK + 500, 5 * 2**20 + 3, *RANDOM_LENGTHS]
CONTEXTS = [b"", b"shardseal interop context \x00\xff" * 3]


def _peer_encrypt(suite, key, context, data) -> bytes:
    encryptor = PEER_CLASSES[suite][0](key, context)
    return encryptor.update(data) + encryptor.finalize()


def _peer_decrypt(suite, key, context, message) -> bytes:
    decryptor = PEER_CLASSES[suite][1](key, context)
    return decryptor.update(message) + decryptor.finalize()


@pytest.mark.parametrize("length", LENGTHS)
@pytest.mark.parametrize("context", CONTEXTS, ids=["no-context", "context"])
@pytest.mark.parametrize("threads", [1, 4])
@pytest.mark.parametrize("suite", [256, 128])
def test_both_ways_with_cryptography(backend, length, context, threads, suite):
    key = os.urandom(32 if suite == 256 else 16)
    data = os.urandom(length)
    ours = cobblestone.encrypt(data, key, context, suite=suite, threads=threads)
    assert len(ours) == cobblestone.encrypted_size(length)
    assert _peer_decrypt(suite, key, context, ours) == data
    theirs = _peer_encrypt(suite, key, context, data)
    assert cobblestone.decrypt(theirs, key, context, suite=suite, threads=threads) == data


@pytest.mark.skipif(len(BACKENDS) < 2, reason="native module not built")
@pytest.mark.parametrize("length", LENGTHS)
@pytest.mark.parametrize("suite", [256, 128])
def test_backends_make_identical_bytes(length, suite):
    key, salt, context = os.urandom(32 if suite == 256 else 16), os.urandom(24), b"ctx"
    data = os.urandom(length)
    native, python = BACKENDS["native"], BACKENDS["python"]
    sealed = native.seal(suite, key, salt, context, data, 3, b"prefix")
    assert sealed == python.seal(suite, key, salt, context, data, 1, b"prefix")
    message = sealed[len(b"prefix"):]
    assert python.open(suite, key, context, message, 1) == data
    assert native.open(suite, key, context, message, 2) == data


@pytest.mark.skipif(len(BACKENDS) < 2, reason="native module not built")
@pytest.mark.parametrize("suite", [256, 128])
def test_backends_make_identical_containers(monkeypatch, fixed_salt, suite):
    from shardseal.core import backend as _backend

    key, data = bytes(range(32)), os.urandom(3 * CHUNK + 7)
    blobs = {}
    for name, impl in BACKENDS.items():
        monkeypatch.setattr(_backend, "impl", impl)
        blobs[name] = shardseal.encrypt(data, key, metadata={"split": "train"}, suite=suite)
    assert blobs["native"] == blobs["python"]
    for impl in BACKENDS.values():
        monkeypatch.setattr(_backend, "impl", impl)
        assert shardseal.decrypt(blobs["native"], key) == data


@pytest.mark.skipif(len(BACKENDS) < 2, reason="native module not built")
@pytest.mark.parametrize("first_chunk", [0, 7, 2**38 - 5])
@pytest.mark.parametrize("final", [True, False])
def test_chunk_runs_match_between_backends(first_chunk, final):
    key, salt = os.urandom(32), os.urandom(24)
    data = os.urandom(4 * CHUNK + (123 if final else 0))
    sealed = {}
    for name, impl in BACKENDS.items():
        keys = impl.MessageKeys(256, key, salt, b"ctx")
        out = bytearray(len(data) + 5 * 16)
        n = keys.seal_chunks_into(first_chunk, data, out, final, 2)
        sealed[name] = bytes(out[:n])
        back = bytearray(len(data))
        assert keys.open_chunks_into(first_chunk, sealed[name], back, final, 2) == len(data)
        assert back == data
    assert sealed["native"] == sealed["python"]
