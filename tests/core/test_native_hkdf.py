"""The native HKDF-SHA512 (HMAC on low-level SHA-512) against cryptography's, at the lengths
where HMAC changes path: keys shorter than, equal to and longer than the 128-byte SHA-512 block
(a longer key is hashed first), empty keys, and infos that cross block boundaries."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF, HKDFExpand

from tests.conftest import NATIVE

pytestmark = pytest.mark.skipif(NATIVE is None, reason="native module not built")

KEY_LENGTHS = [0, 1, 16, 32, 64, 111, 127, 128, 129, 200, 1000]
INFO_LENGTHS = [0, 1, 72, 111, 112, 127, 128, 129, 255, 256, 3000]


@pytest.mark.parametrize("key_len", KEY_LENGTHS)
@pytest.mark.parametrize("info_len", INFO_LENGTHS)
def test_hkdf_expand_matches_cryptography(key_len, info_len):
    prk = bytes((7 * i + key_len) % 256 for i in range(key_len))
    info = bytes((3 * i + 1) % 256 for i in range(info_len))
    for length in (1, 16, 64, 76, 129, 255 * 64):
        if key_len == 0:
            continue  # cryptography refuses an empty PRK; HMAC itself accepts it (checked below)
        want = HKDFExpand(hashes.SHA512(), length, info).derive(prk)
        assert NATIVE.hkdf_expand_sha512(prk, info, length) == want


@pytest.mark.parametrize("salt_len", KEY_LENGTHS)
def test_hkdf_extract_and_expand_matches_cryptography(salt_len):
    salt = bytes((5 * i + 3) % 256 for i in range(salt_len))
    ikm = b"input keying material"
    want = HKDF(hashes.SHA512(), 100, salt or None, b"info").derive(ikm)
    assert NATIVE.hkdf_sha512(ikm, salt, b"info", 100) == want


def test_hkdf_output_limit():
    with pytest.raises(ValueError):
        NATIVE.hkdf_expand_sha512(b"k" * 32, b"", 255 * 64 + 1)
