"""Known-answer tests from Wycheproof: raw AES-GCM on both backends, HKDF-SHA512 natively."""

from __future__ import annotations

import json

import pytest

from shardseal import AuthenticationError
from tests.conftest import NATIVE, WYCHEPROOF


def _cases(name: str, keep) -> list:
    data = json.loads((WYCHEPROOF / name).read_text())
    return [
        pytest.param(group, case, id=f"tc{case['tcId']}")
        for group in data["testGroups"]
        if keep(group)
        for case in group["tests"]
    ]


# The 96-bit nonce, 128-bit tag groups with 128- and 256-bit keys (192 is not used here).
GCM_CASES = _cases(
    "aes_gcm_test.json",
    lambda g: g["ivSize"] == 96 and g["tagSize"] == 128 and g["keySize"] in (128, 256),
)
HKDF_CASES = _cases("hkdf_sha512_test.json", lambda g: True)


def test_vector_sets_are_not_empty():
    assert len(GCM_CASES) > 100 and len(HKDF_CASES) > 50


@pytest.mark.parametrize("group, case", GCM_CASES)
def test_aes_gcm(backend, group, case):
    key, nonce, aad = (bytes.fromhex(case[f]) for f in ("key", "iv", "aad"))
    msg, sealed = bytes.fromhex(case["msg"]), bytes.fromhex(case["ct"] + case["tag"])
    if case["result"] == "valid":
        assert backend.gcm_seal(key, nonce, aad, msg) == sealed
        assert backend.gcm_open(key, nonce, aad, sealed) == msg
    else:
        # Invalid vectors are forgeries (bad tags, modified ciphertexts): opening must fail.
        with pytest.raises(AuthenticationError):
            backend.gcm_open(key, nonce, aad, sealed)


@pytest.mark.skipif(NATIVE is None, reason="native module not built")
@pytest.mark.parametrize("group, case", HKDF_CASES)
def test_native_hkdf_sha512(group, case):
    ikm, salt, info = (bytes.fromhex(case[f]) for f in ("ikm", "salt", "info"))
    if case["result"] == "valid":
        assert NATIVE.hkdf_sha512(ikm, salt, info, case["size"]).hex() == case["okm"]
    else:
        with pytest.raises(ValueError):
            NATIVE.hkdf_sha512(ikm, salt, info, case["size"])


@pytest.mark.skipif(NATIVE is None, reason="native module not built")
def test_native_hkdf_expand_matches_cryptography_for_long_info():
    # Cobblestone's info carries the whole container header, far past OpenSSL 3.0's
    # 1 KiB HKDF info limit: the native HKDF must handle it.
    from shardseal.core import _pybackend

    prk, info = bytes(range(32)), bytes(range(256)) * 4096
    assert NATIVE.hkdf_expand_sha512(prk, info, 76) == _pybackend.hkdf_expand_sha512(prk, info, 76)
