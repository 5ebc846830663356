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

``header_checks``: containers for the reader's checks of the key block (FORMAT.md 2.4, 2.8,
2.10, 2.11 and section 4, steps 6 and 7): name, comment, container, key (a direct key, hex) or
passphrase (the one to open with), error and inspect_error (the exact error class, or null
when decrypting gives the plaintext and inspect succeeds).
"""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

from shardseal.keys import keyring, kms, passphrase, x25519
from shardseal.core import backend as _backend
from shardseal.container import header as _container
from shardseal.keys import direct as _direct, stanzas as _stanzas
from shardseal.keys.envelope import WrapContext

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
    return bytes(_backend.impl.seal(256, _direct.input_key(file_key, 256), derived("salt", name, 24),
                                    fixed, PLAINTEXT, 1, header))


def vector(name: str, stanza_type: int, inputs: dict, body: bytes, file_key: bytes, *, with_container=True) -> dict:
    result = {"name": name, "type": _stanzas.type_name(stanza_type), "type_code": stanza_type,
              "file_key": file_key.hex(), "inputs": inputs, "body": body.hex(),
              "key_id": _stanzas.key_id(_container.Stanza(stanza_type, body))}
    if with_container:
        result["container"] = container(name, stanza_type, body, file_key).hex()
        result["plaintext_length"] = len(PLAINTEXT)
    return result


def raw_container(name: str, stanzas: list[tuple[int, bytes]], file_key: bytes, metadata=None) -> bytes:
    """A container with a hand-made key block (bodies are not checked, as a writer would) and,
    if given, hand-made metadata bytes."""
    if metadata is None:
        fixed = _container.encode_fixed(256, {"user": {"vector": name}})
    else:
        fixed = _container.MAGIC + struct.pack(">BBI", 1, 1, len(metadata)) + metadata
    block = struct.pack(">H", len(stanzas)) + b"".join(
        struct.pack(">HI", stanza_type, len(body)) + body for stanza_type, body in stanzas)
    return bytes(_backend.impl.seal(256, _direct.input_key(file_key, 256), derived("salt", name, 24),
                                    fixed, PLAINTEXT, 1, fixed + block))


def reference(provider: bytes, key_ref: bytes, wrapped: bytes) -> bytes:
    """A reference stanza body from raw bytes (FORMAT.md 2.10), without the writer's checks."""
    return bytes([len(provider)]) + provider + struct.pack(">H", len(key_ref)) + key_ref + wrapped


def passphrase_body_unchecked(log2_n: int, r: int, p: int) -> bytes:
    """A passphrase stanza body with a valid checksum and any scrypt parameters."""
    head = bytes(range(16)) + bytes([log2_n, r, p]) + bytes(48)
    return head + hashlib.sha256(b"shardseal/v1/passphrase-stanza-checksum" + head).digest()[:8]


def header_checks(vectors: list[dict]) -> list[dict]:
    """Containers that exercise the reader's key block checks (FORMAT.md 2.4, step 6 and 7 of
    section 4): each is opened with a direct key (key, hex) or a passphrase, and must raise
    error (null: decrypt succeeds) and make inspect raise inspect_error (null: it succeeds)."""
    key = derived("direct key", "header checks")
    direct = (_stanzas.DIRECT, bytes(_direct.direct_stanza(key).body))
    pkcs11_uri = PKCS11_URI.encode()
    pass_vector = next(v for v in vectors if v["name"] == "passphrase")
    pass_stanza = (_stanzas.PASSPHRASE, bytes.fromhex(pass_vector["body"]))
    pass_key = bytes.fromhex(pass_vector["file_key"])
    cases = [
        ("pkcs11-wrapped-39", "a PKCS#11 stanza whose wrapped key is 39 bytes, beside the direct stanza",
         [(_stanzas.PKCS11, reference(b"pkcs11", pkcs11_uri, bytes(39))), direct], "key", "FormatError"),
        ("pkcs11-wrapped-41", "a PKCS#11 stanza whose wrapped key is 41 bytes, beside the direct stanza",
         [(_stanzas.PKCS11, reference(b"pkcs11", pkcs11_uri, bytes(41))), direct], "key", "FormatError"),
        ("pkcs11-provider", "a PKCS#11 stanza whose provider is 'aws-kms'",
         [(_stanzas.PKCS11, reference(b"aws-kms", pkcs11_uri, bytes(40))), direct], "key", "FormatError"),
        ("pkcs11-uri-attribute", "a PKCS#11 URI with an unsupported attribute (id)",
         [(_stanzas.PKCS11, reference(b"pkcs11", pkcs11_uri + b";id=%01", bytes(40))), direct], "key",
         "FormatError"),
        ("pkcs11-uri-query", "a PKCS#11 URI with a query attribute (pin-value)",
         [(_stanzas.PKCS11, reference(b"pkcs11", pkcs11_uri + b"?pin-value=1234", bytes(40))), direct],
         "key", "FormatError"),
        ("pkcs11-uri-no-object", "a PKCS#11 URI that names no object",
         [(_stanzas.PKCS11, reference(b"pkcs11", b"pkcs11:token=ml-keys", bytes(40))), direct], "key",
         "FormatError"),
        ("kms-provider-colon", "a KMS provider name with a colon",
         [(_stanzas.KMS, reference(b"aws:kms", b"alias/a", b"w")), direct], "key", "FormatError"),
        ("kms-reference-nul", "a KMS key reference holding NUL",
         [(_stanzas.KMS, reference(b"aws-kms", b"alias/a\x00", b"w")), direct], "key", "FormatError"),
        ("reference-stanzas-skipped", "well-formed PKCS#11 and KMS stanzas beside the direct stanza",
         [(_stanzas.PKCS11, reference(b"pkcs11", pkcs11_uri, bytes(40))),
          (_stanzas.KMS, reference(b"vault-transit", b"transit/keys/a", b"w")), direct], "key", None),
        ("unknown-noncritical-skipped", "an unknown non-critical stanza (0x0042) beside the direct stanza",
         [(0x0042, b"future"), direct], "key", None),
        ("passphrase-scrypt-over-limit", "a passphrase stanza with log2(N) = 22, r = 32, p = 1: within "
         "the field bounds, over the memory limit (16 GiB)",
         [(_stanzas.PASSPHRASE, passphrase_body_unchecked(22, 32, 1))], "passphrase", "FormatError"),
        ("passphrase-scrypt-over-work", "a passphrase stanza with log2(N) = 21, r = 8, p = 16: over the "
         "work limit", [(_stanzas.PASSPHRASE, passphrase_body_unchecked(21, 8, 16))], "passphrase",
         "FormatError"),
        ("passphrase-beside-padding", "the passphrase vector's stanza after a padding stanza",
         [(_stanzas.PADDING, bytes(40)), pass_stanza], "passphrase", None),
        ("passphrase-beside-unknown-noncritical", "the passphrase vector's stanza beside an unknown "
         "non-critical stanza (0x0042): refused like any other stanza beside a passphrase",
         [pass_stanza, (0x0042, b"future")], "passphrase", "FormatError"),
        ("passphrase-beside-direct", "the passphrase vector's stanza beside a direct stanza",
         [pass_stanza, direct], "key", "FormatError"),
        ("metadata-nested-64", "metadata nested 64 levels deep (the top-level object is one): the limit",
         [direct], "key", None),
        ("metadata-nested-65", "metadata nested 65 levels deep: one past the limit",
         [direct], "key", "FormatError"),
    ]
    metadata = {"metadata-nested-64": b'{"a":' * 63 + b"{}" + b"}" * 63,
                "metadata-nested-65": b'{"a":' * 64 + b"{}" + b"}" * 64}
    result = []
    for name, comment, stanzas, opener, error in cases:
        file_key = pass_key if opener == "passphrase" else key
        result.append({"name": name, "comment": comment,
                       "key": key.hex() if opener == "key" else None,
                       "passphrase": PASSPHRASE if opener == "passphrase" else None,
                       "container": raw_container(name, stanzas, file_key, metadata.get(name)).hex(),
                       "error": error, "inspect_error": error})
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
                "format": "docs/FORMAT.md sections 2.4-2.12", "plaintext": "bytes(i % 251 for i in range(1000))",
                "vectors": vectors, "header_checks": header_checks(vectors)}
    text = json.dumps(document, indent=1, ensure_ascii=False) + "\n"
    OUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUT} ({len(vectors)} vectors)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
