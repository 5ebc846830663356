"""Generates tests/vectors/stanzas_v1.json: test vectors for the envelope key stanzas.

Run from the repository root:

    python tests/vectors/generate_stanzas.py

One vector per stanza type of docs/FORMAT.md 2.6-2.11 (keyring, passphrase, x25519, pkcs11,
kms), deterministic: every key, salt and ephemeral key is fixed. Each gives the inputs, the
stanza body, and a whole container (suite 256) holding that one stanza and the plaintext
``bytes(i % 251 for i in range(1000))``, so that an independent implementation can check both
its stanza code and its key block framing.

* file key:   SHA-256("shardseal/v1 test file key " || type name)
* payload salt: SHA-256("shardseal/v1 test salt " || type name)[:24]
* keyring and pkcs11 KEK: SHA-256("shardseal/v1 test kek " || type name)
* passphrase: "correct horse battery staple", salt 00 01 .. 0f, log2(N) 10, r 8, p 1
* x25519: RFC 7748 section 6.1 keys (Bob is the recipient, Alice's private key the ephemeral)
* kms: a provider's opaque wrapped key cannot be fixed (AWS makes it); the vector gives the
  body layout with a placeholder wrapped key, the encryption context for the container's fixed
  part, and no container.

Fields (byte strings in lowercase hex): name, type, type_code, file_key, inputs (per type),
key_id (what ``inspect`` shows), body, and (not for kms) container, plaintext_length.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from shardseal import _backend, _container, _keys, _stanzas, keyring, kms, passphrase, x25519
from shardseal._envelope import WrapContext

OUT = Path(__file__).resolve().parent / "stanzas_v1.json"
PLAINTEXT = bytes(i % 251 for i in range(1000))
PASSPHRASE = "correct horse battery staple"
RFC7748_ALICE_PRIVATE = bytes.fromhex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
RFC7748_BOB_PRIVATE = bytes.fromhex("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb")
PKCS11_URI = "pkcs11:token=ml-keys;object=kek-2026"
KMS_KEY = "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"


def derived(label: str, name: str, n: int = 32) -> bytes:
    return hashlib.sha256(f"shardseal/v1 test {label} {name}".encode()).digest()[:n]


def container(name: str, stanza_type: int, body: bytes, file_key: bytes) -> bytes:
    fixed = _container.encode_fixed(256, {"user": {"vector": name}})
    header = fixed + _container.encode_key_block([_container.Stanza(stanza_type, body)])
    return bytes(_backend.impl.seal(256, _keys.input_key(file_key, 256), derived("salt", name, 24),
                                    fixed, PLAINTEXT, 1, header))


def vector(name: str, stanza_type: int, inputs: dict, body: bytes, file_key: bytes, *, with_container=True) -> dict:
    result = {"name": name, "type": _stanzas.type_name(stanza_type), "type_code": stanza_type,
              "file_key": file_key.hex(), "inputs": inputs, "body": body.hex(),
              "key_id": _stanzas.key_id(_container.Stanza(stanza_type, body))}
    if with_container:
        result["container"] = container(name, stanza_type, body, file_key).hex()
        result["plaintext_length"] = len(PLAINTEXT)
    return result


def main() -> int:
    vectors = []
    file_key = derived("file key", "keyring")
    kek = derived("kek", "keyring")
    body = _stanzas.keyring_body(keyring.kek_id(kek), keyring.wrap_key(kek, file_key))
    vectors.append(vector("keyring", _stanzas.KEYRING, {"kek": kek.hex()}, body, file_key))

    file_key = derived("file key", "passphrase")
    salt = bytes(range(16))
    body = passphrase._seal(PASSPHRASE.encode(), file_key, salt, 10, 8, 1)
    vectors.append(vector("passphrase", _stanzas.PASSPHRASE,
                          {"passphrase": PASSPHRASE, "salt": salt.hex(), "log2_n": 10, "r": 8, "p": 1},
                          body, file_key))

    file_key = derived("file key", "x25519")
    bob = x25519.X25519Identity(RFC7748_BOB_PRIVATE)
    body = x25519._seal_to(bob.recipient.public_bytes, file_key, RFC7748_ALICE_PRIVATE)
    vectors.append(vector("x25519", _stanzas.X25519,
                          {"recipient_private": RFC7748_BOB_PRIVATE.hex(),
                           "recipient": str(bob.recipient),
                           "identity": bob.to_string(),
                           "ephemeral_private": RFC7748_ALICE_PRIVATE.hex()}, body, file_key))

    file_key = derived("file key", "pkcs11")
    kek = derived("kek", "pkcs11")
    body = _stanzas.reference_body("pkcs11", PKCS11_URI, keyring.wrap_key(kek, file_key))
    vectors.append(vector("pkcs11", _stanzas.PKCS11, {"uri": PKCS11_URI, "token_kek": kek.hex()},
                          body, file_key))

    file_key = derived("file key", "kms")
    fixed = _container.encode_fixed(256, {"user": {"vector": "kms"}})
    placeholder = b"\x01\x02\x03\x00" + bytes(180)  # stands for an AWS CiphertextBlob
    body = _stanzas.reference_body("aws-kms", KMS_KEY, placeholder)
    vectors.append(vector("kms", _stanzas.KMS, {
        "provider": "aws-kms", "key_ref": KMS_KEY, "wrapped_key": placeholder.hex(),
        "fixed": fixed.hex(), "encryption_context": kms.encryption_context(WrapContext(256, fixed)),
    }, body, file_key, with_container=False))

    document = {"description": "shardseal envelope key stanza vectors (see generate_stanzas.py)",
                "format": "docs/FORMAT.md sections 2.6-2.11", "plaintext": "bytes(i % 251 for i in range(1000))",
                "vectors": vectors}
    text = json.dumps(document, indent=1, ensure_ascii=False) + "\n"
    OUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUT} ({len(vectors)} vectors)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
