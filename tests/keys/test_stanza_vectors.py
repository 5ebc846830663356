"""The envelope stanza vectors (tests/vectors/stanzas_v1.json), checked twice: with an
independent implementation of docs/FORMAT.md 2.6-2.11 on ``cryptography``'s primitives and
``cryptography.cobblestone`` (no shardseal code), and with shardseal's own identities."""

from __future__ import annotations

import base64
import hashlib
import json
import struct
import unicodedata
from pathlib import Path

import pytest
from cryptography.cobblestone import Cobblestone256Decryptor
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF, HKDFExpand
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt
from cryptography.hazmat.primitives.keywrap import aes_key_unwrap, aes_key_wrap

import shardseal
from shardseal.keys import keyring, passphrase, x25519

DOCUMENT = json.loads((Path(__file__).resolve().parents[1] / "vectors" / "stanzas_v1.json").read_text("utf-8"))
VECTORS = {v["name"]: v for v in DOCUMENT["vectors"]}
PLAINTEXT = bytes(i % 251 for i in range(1000))
ZERO_NONCE = bytes(12)


def hkdf_expand_sha512(prk: bytes, info: bytes, n: int) -> bytes:
    return HKDFExpand(hashes.SHA512(), n, info).derive(prk)


def split_container(blob: bytes):
    """(fixed part, [(type, body)], message) by the byte layout of FORMAT.md 2.1 and 2.4."""
    (metadata_len,) = struct.unpack(">I", blob[12:16])
    fixed_end = 16 + metadata_len
    (count,) = struct.unpack(">H", blob[fixed_end:fixed_end + 2])
    at, stanzas = fixed_end + 2, []
    for _ in range(count):
        stanza_type, body_len = struct.unpack(">HI", blob[at:at + 6])
        stanzas.append((stanza_type, blob[at + 6:at + 6 + body_len]))
        at += 6 + body_len
    return blob[:fixed_end], stanzas, blob[at:]


def open_message(file_key: bytes, fixed: bytes, message: bytes) -> bytes:
    decryptor = Cobblestone256Decryptor(file_key, context=fixed)
    return decryptor.update(message) + decryptor.finalize()


def independent_file_key(vector) -> bytes:
    """The file key, unwrapped from the vector's body by FORMAT.md alone."""
    body, inputs = bytes.fromhex(vector["body"]), vector["inputs"]
    if vector["type"] == "keyring":
        kek = bytes.fromhex(inputs["kek"])
        assert body[:16] == hkdf_expand_sha512(kek, b"shardseal/v1/keyring-kek-id", 16)
        return aes_key_unwrap(kek, body[16:])
    if vector["type"] == "passphrase":
        head, checksum = body[:-8], body[-8:]
        assert checksum == hashlib.sha256(b"shardseal/v1/passphrase-stanza-checksum" + head).digest()[:8]
        salt, log2_n, r, p = struct.unpack(">16sBBB", head[:19])
        assert (salt.hex(), log2_n, r, p) == (inputs["salt"], inputs["log2_n"], inputs["r"], inputs["p"])
        secret = unicodedata.normalize("NFC", inputs["passphrase"]).encode()
        wrap_key = Scrypt(b"shardseal/v1/passphrase" + salt, 32, 2 ** log2_n, r, p).derive(secret)
        return AESGCM(wrap_key).decrypt(ZERO_NONCE, head[19:], b"")
    if vector["type"] == "x25519":
        private = X25519PrivateKey.from_private_bytes(bytes.fromhex(inputs["recipient_private"]))
        public = private.public_key().public_bytes_raw()
        assert body[:16] == hashlib.sha256(b"shardseal/v1/x25519-recipient-id" + public).digest()[:16]
        ephemeral = body[16:48]
        shared = private.exchange(X25519PublicKey.from_public_bytes(ephemeral))
        wrap_key = HKDF(hashes.SHA256(), 32, ephemeral + public, b"shardseal/v1/x25519").derive(shared)
        return AESGCM(wrap_key).decrypt(ZERO_NONCE, body[48:], b"")
    assert vector["type"] == "pkcs11"
    name_len = body[0]
    assert body[1:1 + name_len] == b"pkcs11"
    (ref_len,) = struct.unpack(">H", body[1 + name_len:3 + name_len])
    assert body[3 + name_len:3 + name_len + ref_len].decode() == inputs["uri"]
    return aes_key_unwrap(bytes.fromhex(inputs["token_kek"]), body[3 + name_len + ref_len:])


WITH_CONTAINERS = [name for name, v in VECTORS.items() if "container" in v]


def test_every_envelope_type_has_a_vector():
    assert sorted(VECTORS) == ["keyring", "kms", "passphrase", "pkcs11", "x25519"]


@pytest.mark.parametrize("name", WITH_CONTAINERS)
def test_independent_implementation_opens_the_vector(name):
    vector = VECTORS[name]
    file_key = independent_file_key(vector)
    assert file_key.hex() == vector["file_key"]
    fixed, stanzas, message = split_container(bytes.fromhex(vector["container"]))
    assert stanzas == [(vector["type_code"], bytes.fromhex(vector["body"]))]
    assert open_message(file_key, fixed, message) == PLAINTEXT


def test_x25519_vector_matches_the_recipient_strings():
    inputs = VECTORS["x25519"]["inputs"]
    identity = x25519.X25519Identity.from_string(inputs["identity"])
    assert str(identity.recipient) == inputs["recipient"]
    private = X25519PrivateKey.from_private_bytes(bytes.fromhex(inputs["recipient_private"]))
    assert identity.recipient.public_bytes == private.public_key().public_bytes_raw()


def test_shardseal_makes_the_same_bodies():
    keyring_vector, pass_vector, x_vector = VECTORS["keyring"], VECTORS["passphrase"], VECTORS["x25519"]
    kek = bytes.fromhex(keyring_vector["inputs"]["kek"])
    assert keyring.kek_id(kek) + keyring.wrap_key(kek, bytes.fromhex(keyring_vector["file_key"])) == \
        bytes.fromhex(keyring_vector["body"])
    assert aes_key_wrap(kek, bytes.fromhex(keyring_vector["file_key"])).hex() == keyring_vector["body"][32:]
    inputs = pass_vector["inputs"]
    assert passphrase._seal(inputs["passphrase"].encode(), bytes.fromhex(pass_vector["file_key"]),
                            bytes.fromhex(inputs["salt"]), inputs["log2_n"], inputs["r"], inputs["p"]).hex() \
        == pass_vector["body"]
    identity = x25519.X25519Identity.from_string(x_vector["inputs"]["identity"])
    assert x25519._seal_to(identity.recipient.public_bytes, bytes.fromhex(x_vector["file_key"]),
                           bytes.fromhex(x_vector["inputs"]["ephemeral_private"])).hex() == x_vector["body"]


def test_shardseal_identities_open_the_vectors(backend, tmp_path):
    inputs = VECTORS["passphrase"]["inputs"]
    blob = bytes.fromhex(VECTORS["passphrase"]["container"])
    assert shardseal.decrypt(blob, identities=[passphrase.Passphrase(inputs["passphrase"])]) == PLAINTEXT
    with pytest.raises(shardseal.WrongPassphraseError):
        shardseal.decrypt(blob, identities=[passphrase.Passphrase("wrong horse")])
    identity = x25519.X25519Identity.from_string(VECTORS["x25519"]["inputs"]["identity"])
    assert shardseal.decrypt(bytes.fromhex(VECTORS["x25519"]["container"]), identities=[identity]) == PLAINTEXT
    kek = bytes.fromhex(VECTORS["keyring"]["inputs"]["kek"])
    ring_file = tmp_path / "ring.json"
    ring_file.write_text(json.dumps({"format": keyring.FORMAT, "keys": [{
        "id": keyring.kek_id(kek).hex(), "name": "vector", "created": "2026-11-25T00:00:00Z",
        "state": "active", "key": base64.b64encode(kek).decode()}]}))
    ring_file.chmod(0o600)
    ring = keyring.Keyring.load(ring_file)
    assert shardseal.decrypt(bytes.fromhex(VECTORS["keyring"]["container"]), identities=[ring]) == PLAINTEXT


def test_key_ids_as_inspect_shows_them():
    for name in WITH_CONTAINERS:
        info = shardseal.inspect(bytes.fromhex(VECTORS[name]["container"]))
        assert [(s.type, s.key_id) for s in info.stanzas] == [(VECTORS[name]["type"], VECTORS[name]["key_id"])]
    assert VECTORS["pkcs11"]["key_id"] == VECTORS["pkcs11"]["inputs"]["uri"]
    assert VECTORS["kms"]["key_id"] == "aws-kms:" + VECTORS["kms"]["inputs"]["key_ref"]


def test_kms_encryption_context_is_the_fixed_part_digest():
    inputs = VECTORS["kms"]["inputs"]
    assert inputs["encryption_context"] == {
        "shardseal:header-sha256": hashlib.sha256(bytes.fromhex(inputs["fixed"])).hexdigest()}


# -- the reader's key block checks (header_checks) ----------------------------------------

CHECKS = {v["name"]: v for v in DOCUMENT["header_checks"]}


def independent_key_block_verdict(blob: bytes) -> str:
    """FORMAT.md 2.4 step 6's passphrase rule by the byte layout alone: "alone" or "mixed"."""
    _, stanzas, _ = split_container(blob)
    keyed = [t for t, _ in stanzas if t != 0x00FF]
    return "mixed" if 0x0003 in keyed and len(keyed) > 1 else "alone"


@pytest.mark.parametrize("name", sorted(CHECKS))
def test_header_check_vector(backend, name):
    vector = CHECKS[name]
    blob = bytes.fromhex(vector["container"])
    if vector["key"] is not None:
        opener = {"key": bytes.fromhex(vector["key"])}
    else:
        opener = {"identities": [passphrase.Passphrase(vector["passphrase"])]}
    if vector["error"] is None:
        assert shardseal.decrypt(blob, **opener) == PLAINTEXT
    else:
        with pytest.raises(getattr(shardseal, vector["error"])) as info:
            shardseal.decrypt(blob, **opener)
        assert type(info.value) is getattr(shardseal, vector["error"])
    if vector["inspect_error"] is None:
        shardseal.inspect(blob)
    else:
        with pytest.raises(getattr(shardseal, vector["inspect_error"])) as info:
            shardseal.inspect(blob)
        assert type(info.value) is getattr(shardseal, vector["inspect_error"])


def test_header_checks_cover_the_spec_points():
    assert {"pkcs11-wrapped-39", "pkcs11-wrapped-41", "kms-provider-colon", "passphrase-scrypt-over-limit",
            "passphrase-beside-unknown-noncritical", "passphrase-beside-padding"} <= set(CHECKS)
    # A passphrase beside an unknown non-critical stanza is refused (FORMAT.md 2.8 and 6), and
    # the rule needs nothing but the byte layout.
    vector = CHECKS["passphrase-beside-unknown-noncritical"]
    assert independent_key_block_verdict(bytes.fromhex(vector["container"])) == "mixed"
    assert vector["error"] == "FormatError"
    assert independent_key_block_verdict(bytes.fromhex(CHECKS["passphrase-beside-padding"]["container"])) == "alone"
