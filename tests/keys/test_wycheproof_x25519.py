"""Wycheproof X25519 vectors through shardseal.x25519's own code paths.

Every vector goes through ``_shared_secret`` (the one X25519 call of the module), through
``_seal_to`` (wrapping: the vector's private key as the ephemeral key, its public key as the
recipient) and through ``X25519Identity.unwrap`` (the vector's private key as the identity,
its public key as a stanza's ephemeral key).

Policy, flag by flag (``FLAG_POLICY``; a flag missing from it fails the suite, so a new
Wycheproof release is looked at, not silently passed):

* computed, and must equal the expected shared secret: ``Normal``, ``Ktv``,
  ``EdgeCaseMultiplication``, ``EdgeCasePrivateKey``, ``EdgeCaseShared``, ``SpecialPublicKey``,
  ``Twist`` (X25519 is defined on the twist and meant to be safe there), and
  ``NonCanonicalPublic`` (RFC 7748 section 5: the top bit is masked and values >= p are
  reduced; ``X25519Recipient`` itself refuses such encodings, since no identity produces one,
  but the DH helper follows the RFC for stanza ephemeral keys);
* refused: ``ZeroSharedSecret``, ``LowOrderPublic``, ``SmallPublicKey``. Wycheproof marks them
  "acceptable", but a low-order public key gives the all-zero shared secret for every private
  key, so its wrap key would be public: RFC 7748 section 6.1's check. Wrapping for such a key is
  a ValueError, a stanza carrying one an AuthenticationError. In this file every vector with
  one of these flags has an all-zero expected secret and every all-zero one has the flag;
  the tests check both, so that the policy refuses nothing else.
* ``result: invalid`` vectors (this release has none) must be refused too.
"""

from __future__ import annotations

import json

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from shardseal import AuthenticationError
from shardseal.keys import stanzas as _stanzas
from shardseal.keys.envelope import WrapContext
from shardseal.keys.x25519 import X25519Identity, _seal_to, _shared_secret
from tests.conftest import WYCHEPROOF

COMPUTE, REFUSE = "compute", "refuse"
FLAG_POLICY = {
    "Normal": COMPUTE,
    "Ktv": COMPUTE,
    "EdgeCaseMultiplication": COMPUTE,
    "EdgeCasePrivateKey": COMPUTE,
    "EdgeCaseShared": COMPUTE,
    "SpecialPublicKey": COMPUTE,
    "Twist": COMPUTE,
    "NonCanonicalPublic": COMPUTE,
    "ZeroSharedSecret": REFUSE,
    "LowOrderPublic": REFUSE,
    "SmallPublicKey": REFUSE,
}
FILE_KEY = bytes(range(32, 64))
CONTEXT = WrapContext(256, b"wycheproof")
DATA = json.loads((WYCHEPROOF / "x25519_test.json").read_text())
CASES = [pytest.param(case, id=f"tc{case['tcId']}")
         for group in DATA["testGroups"] for case in group["tests"]]


def _values(case) -> tuple[bytes, bytes, bytes]:
    return tuple(bytes.fromhex(case[name]) for name in ("private", "public", "shared"))


def _refused(case) -> bool:
    return case["result"] == "invalid" or any(FLAG_POLICY[f] == REFUSE for f in case["flags"])


def _sealed_for(shared: bytes, ephemeral_public: bytes, recipient_public: bytes) -> bytes:
    """The sealed file key, from the spec and the expected shared secret."""
    wrap_key = HKDF(hashes.SHA256(), 32, salt=ephemeral_public + recipient_public,
                    info=b"shardseal/v1/x25519").derive(shared)
    return AESGCM(wrap_key).encrypt(bytes(12), FILE_KEY, b"")


def test_every_vector_is_loaded_and_every_flag_has_a_policy():
    assert DATA["algorithm"] == "XDH" and len(CASES) == DATA["numberOfTests"] == 518
    used = {flag for param in CASES for flag in param.values[0]["flags"]}
    assert set(DATA["notes"]) | used <= set(FLAG_POLICY)
    assert all(g["curve"] == "curve25519" for g in DATA["testGroups"])


def test_the_policy_refuses_exactly_the_all_zero_secrets():
    refused = {c.values[0]["tcId"] for c in CASES if _refused(c.values[0])}
    zero = {c.values[0]["tcId"] for c in CASES if _values(c.values[0])[2] == bytes(32)}
    assert refused == zero and len(zero) == 31


@pytest.mark.parametrize("case", CASES)
def test_shared_secret(case):
    private, public, shared = _values(case)
    if _refused(case):
        with pytest.raises(ValueError, match="all-zero shared secret"):
            _shared_secret(private, public)
    else:
        assert _shared_secret(private, public) == shared


@pytest.mark.parametrize("case", CASES)
def test_wrap_with_the_vector_as_ephemeral_and_recipient_key(case):
    private, public, shared = _values(case)
    if _refused(case):
        with pytest.raises(ValueError, match="low-order"):
            _seal_to(public, FILE_KEY, private)
        return
    body = _seal_to(public, FILE_KEY, private)
    recipient_id, ephemeral_public, sealed = _stanzas.parse_x25519(body)
    assert sealed == _sealed_for(shared, ephemeral_public, public)


@pytest.mark.parametrize("case", CASES)
def test_unwrap_with_the_vector_as_identity_and_ephemeral_key(case):
    private, public, shared = _values(case)
    identity = X25519Identity(private)
    own_public = identity.recipient.public_bytes
    recipient_id = bytes.fromhex(identity.key_id)
    if _refused(case):
        body = _stanzas.x25519_body(recipient_id, public, bytes(48))
        with pytest.raises(AuthenticationError):
            identity.unwrap(body, CONTEXT)
        return
    body = _stanzas.x25519_body(recipient_id, public, _sealed_for(shared, public, own_public))
    assert identity.unwrap(body, CONTEXT) == FILE_KEY
