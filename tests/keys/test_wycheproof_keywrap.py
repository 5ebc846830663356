"""Known-answer tests from Wycheproof for the keyring's key-wrap helpers: every vector of
aes_wrap_test.json (RFC 3394, KW) and aes_kwp_test.json (RFC 5649, KWP).

Valid vectors must wrap to ``ct`` and unwrap to ``msg``. Invalid ones must be refused: an
``AuthenticationError`` when the wrapped key has a possible length (the integrity check or the
padding check fails), a ``ValueError`` when its length alone rules it out; and inputs that KW
cannot wrap (empty, not a multiple of 8 bytes) must be refused when wrapping.

The one "acceptable" group is KW's ``ShortKey``: an 8-byte key, which RFC 3394 wraps with one
AES block but NIST SP 800-38F does not define. This library refuses 8-byte keys both ways
(ValueError): a keyring only ever wraps 32-byte file keys.
"""

from __future__ import annotations

import json

import pytest

from shardseal.errors import AuthenticationError
from shardseal.keyring import (
    unwrap_key,
    unwrap_key_with_padding,
    wrap_key,
    wrap_key_with_padding,
)
from tests.conftest import WYCHEPROOF


def _load(name: str) -> dict:
    return json.loads((WYCHEPROOF / name).read_text())


def _cases(data: dict) -> list:
    return [
        pytest.param(case, id=f"tc{case['tcId']}")
        for group in data["testGroups"]
        for case in group["tests"]
    ]


KW_DATA, KWP_DATA = _load("aes_wrap_test.json"), _load("aes_kwp_test.json")
KW_CASES, KWP_CASES = _cases(KW_DATA), _cases(KWP_DATA)
# Inputs KW cannot wrap at all (Wycheproof gives an empty ct for most of them).
UNWRAPPABLE_FLAGS = {"EmptyKey", "WrongDataSize"}


def _fields(case: dict) -> tuple[bytes, bytes, bytes]:
    return bytes.fromhex(case["key"]), bytes.fromhex(case["msg"]), bytes.fromhex(case["ct"])


def test_every_vector_is_collected():
    assert KW_DATA["algorithm"] == "AES-WRAP" and KWP_DATA["algorithm"] == "AES-KWP"
    assert len(KW_CASES) == KW_DATA["numberOfTests"] == 165
    assert len(KWP_CASES) == KWP_DATA["numberOfTests"] == 254
    # Only KW's ShortKey vectors are "acceptable"; the module docstring says how they are treated.
    acceptable = {flag for data in (KW_DATA, KWP_DATA) for g in data["testGroups"]
                  for case in g["tests"] if case["result"] == "acceptable" for flag in case["flags"]}
    assert acceptable == {"ShortKey"}


def _assert_refused(unwrap, kek: bytes, ct: bytes, min_size: int) -> None:
    possible_length = len(ct) >= min_size and len(ct) % 8 == 0
    with pytest.raises(AuthenticationError if possible_length else ValueError):
        unwrap(kek, ct)


@pytest.mark.parametrize("case", KW_CASES)
def test_aes_kw(case):
    kek, msg, ct = _fields(case)
    if case["result"] == "valid":
        assert wrap_key(kek, msg) == ct
        assert unwrap_key(kek, ct) == msg
    elif case["result"] == "acceptable":
        assert case["flags"] == ["ShortKey"] and len(msg) == 8
        with pytest.raises(ValueError):
            wrap_key(kek, msg)
        with pytest.raises(ValueError):
            unwrap_key(kek, ct)
    else:
        _assert_refused(unwrap_key, kek, ct, min_size=24)
        if UNWRAPPABLE_FLAGS & set(case["flags"]):
            with pytest.raises(ValueError):
                wrap_key(kek, msg)


@pytest.mark.parametrize("case", KWP_CASES)
def test_aes_kwp(case):
    kek, msg, ct = _fields(case)
    assert case["result"] in ("valid", "invalid")
    if case["result"] == "valid":
        assert wrap_key_with_padding(kek, msg) == ct
        assert unwrap_key_with_padding(kek, ct) == msg
    else:
        _assert_refused(unwrap_key_with_padding, kek, ct, min_size=16)
