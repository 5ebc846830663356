"""Generates tests/vectors/files_v1.json: vectors for the files around containers.

Run from the repository root:

    PYTHONPATH=src python tests/vectors/generate_files.py

Covers docs/FORMAT.md sections 7-11 and the array/tensor metadata of 2.3: a key file, an
X25519 identity file with its recipient string, a keyring file with a key in each state, a
dataset (manifest and shards), structured-array and tensor containers, and for each format a
list of inputs that a reader must refuse. Deterministic: every key, salt and ephemeral key is
``SHA-256("shardseal/v1 test " || label)`` (cut to the size needed), and every time is fixed.

Byte strings are lowercase hex; texts are JSON strings. Valid containers decrypt to
``bytes(i % 251 for i in range(n))`` unless a vector says otherwise.
"""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from shardseal.keys import keyfile, keyring, x25519
from shardseal.ops import manifest
from shardseal.core import backend as _backend
from shardseal.container import header as _container
from shardseal.keys import direct as _direct

OUT = Path(__file__).resolve().parent / "files_v1.json"
CREATED = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
MANIFEST_TIME = "2026-01-02T03:04:05+00:00"


def derived(label: str, n: int = 32) -> bytes:
    return hashlib.sha256(f"shardseal/v1 test {label}".encode()).digest()[:n]


def pattern(n: int) -> bytes:
    return bytes(i % 251 for i in range(n))


def seal(file_key: bytes, metadata: dict, stanzas: list, plaintext: bytes, salt_label: str, suite: int = 256) -> bytes:
    fixed = _container.encode_fixed(suite, metadata)
    header = fixed + _container.encode_key_block(stanzas)
    return bytes(_backend.impl.seal(suite, _direct.input_key(file_key, suite), derived(salt_label, 24),
                                    fixed, plaintext, 1, header))


def direct(key: bytes, metadata: dict, plaintext: bytes, salt_label: str) -> bytes:
    return seal(key, metadata, [_container.Stanza(_container.STANZA_DIRECT, _direct.key_id(key))],
                plaintext, salt_label)


def x25519_stanza(public: bytes, file_key: bytes, label: str) -> _container.Stanza:
    body = x25519._seal_to(public, file_key, derived(label))
    return _container.Stanza(x25519.X25519Recipient.stanza_type, body)


# -- key files --------------------------------------------------------------------------------

def key_files() -> dict:
    key = derived("key-file key")
    encoded = base64.b64encode(key).decode()
    last = encoded[-2]
    sloppy = encoded[:-2] + "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"[
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".index(last) | 1] + "="
    line = keyfile.KEY_LINE_PREFIX + encoded
    printable = b"0123456789abcdef0123456789abcdef"
    return {
        "key": key.hex(),
        "key_id": _direct.key_id(key).hex(),
        "file": keyfile.format_key_file(key, CREATED),
        "container": direct(key, {}, pattern(100), "key-file salt").hex(),
        "plaintext_length": 100,
        "valid": [
            {"name": "crlf, blanks and comments", "text": f"# a comment\r\n\r\n \t{line}\t \r\n# end"},
            {"name": "no final newline", "text": line},
            {"name": "raw 32 bytes", "hex": key.hex()},
        ],
        "invalid": [
            {"name": "non-canonical base64 (unused bits set)", "text": keyfile.KEY_LINE_PREFIX + sloppy + "\n"},
            {"name": "base64 without padding", "text": line.rstrip("=") + "\n"},
            {"name": "url-safe base64 characters", "text": keyfile.KEY_LINE_PREFIX + "-_" + encoded[2:] + "\n"},
            {"name": "two key lines", "text": f"{line}\n{line}\n"},
            {"name": "no key line", "text": "# only a comment\n"},
            {"name": "another line", "text": f"{line}\nkey: value\n"},
            {"name": "form feed is not a line end", "text": f"# comment\x0c{line}\n"},
            {"name": "no-break space is not a blank", "text": f"\u00a0{line}\n"},
            {"name": "byte order mark", "text": f"\ufeff{line}\n"},
            {"name": "upper-case prefix", "text": line.replace("shardseal-key-1:", "SHARDSEAL-KEY-1:") + "\n"},
            {"name": "31-byte key", "text": keyfile.KEY_LINE_PREFIX + base64.b64encode(key[:31]).decode() + "\n"},
            {"name": "raw 32 printable bytes", "hex": printable.hex()},
            {"name": "raw 33 bytes", "hex": (key + b"\x00").hex()},
        ],
    }


# -- X25519 identities and recipients ---------------------------------------------------------

def _flip_unused_bit(text: str, prefix: str, lowercase: bool) -> str:
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
    body = text[len(prefix):]
    last = alphabet[alphabet.index(body[-1].upper()) | 1]
    return prefix + body[:-1] + (last.lower() if lowercase else last)


def identities() -> dict:
    identity = x25519.X25519Identity(derived("x25519 identity"))
    recipient = identity.recipient
    identity_string, recipient_string = identity.to_string(), recipient.to_string()
    file_key = derived("x25519 file key")
    blob = seal(file_key, {"user": {"vector": "x25519 identity file"}},
                [x25519_stanza(recipient.public_bytes, file_key, "x25519 ephemeral")],
                pattern(1000), "x25519 salt")
    other = x25519.X25519Identity(derived("x25519 other identity")).to_string()
    return {
        "private_key": derived("x25519 identity").hex(),
        "public_key": recipient.public_bytes.hex(),
        "recipient_id": recipient.key_id,
        "recipient": recipient_string,
        "identity": identity_string,
        "file": x25519.format_identity_file(identity, CREATED),
        "container": blob.hex(),
        "plaintext_length": 1000,
        "valid_recipients": [recipient_string + "\n", " \t" + recipient_string + "\r\n"],
        "invalid_recipients": [
            {"name": "padded base32", "text": recipient_string + "======"},
            {"name": "upper case", "text": recipient_string.upper()},
            {"name": "mixed case", "text": recipient_string[:-3] + recipient_string[-3:].upper()},
            {"name": "unused bits set", "text": _flip_unused_bit(recipient_string, "ssealx1", True)},
            {"name": "checksum mismatch", "text": recipient_string[:10] + ("b" if recipient_string[10] != "b" else "c") + recipient_string[11:]},
            {"name": "one character short", "text": recipient_string[:-1]},
            {"name": "no-break space around", "text": "\u00a0" + recipient_string},
            {"name": "an identity instead", "text": identity_string},
            {"name": "non-canonical public key", "text": _recipient_string_of((2**255 - 19 + 1).to_bytes(32, "little"))},
        ],
        "valid_identities": [identity_string + "\n"],
        "invalid_identities": [
            {"name": "padded base32", "text": identity_string + "======"},
            {"name": "lower case", "text": identity_string[:21] + identity_string[21:].lower()},
            {"name": "lower-case prefix", "text": identity_string[:21].lower() + identity_string[21:]},
            {"name": "unused bits set", "text": _flip_unused_bit(identity_string, "SSEAL-X25519-SECRET-1", False)},
            {"name": "checksum mismatch", "text": identity_string[:-5] + ("B" if identity_string[-5] != "B" else "C") + identity_string[-4:]},
        ],
        "valid_files": [
            {"name": "crlf and blanks", "text": f"# comment\r\n\r\n\t{identity_string} \r\n"},
        ],
        "invalid_files": [
            {"name": "two identities", "text": f"{identity_string}\n{other}\n"},
            {"name": "no identity", "text": "# recipient: " + recipient_string + "\n"},
            {"name": "a recipient line", "text": recipient_string + "\n"},
            {"name": "form feed is not a line end", "text": f"# c\x0c{identity_string}\n"},
            {"name": "not utf-8", "hex": (b"\xff\n" + identity_string.encode()).hex()},
        ],
    }


def _recipient_string_of(public: bytes) -> str:
    checksum = hashlib.sha256(b"shardseal/v1/x25519-recipient" + public).digest()[:4]
    return "ssealx1" + base64.b32encode(public + checksum).decode().rstrip("=").lower()


# -- keyrings -----------------------------------------------------------------------------------

KEYRING_ENTRIES = [  # name, state, created; each KEK is derived("keyring " + name)
    ("2025-q3", keyring.DESTROYED, datetime(2025, 7, 1, tzinfo=timezone.utc)),
    ("2025-q4", keyring.DECRYPT_ONLY, datetime(2025, 10, 1, tzinfo=timezone.utc)),
    ("2026-q1", keyring.ACTIVE, CREATED),
]


def _keyring_entry(name_: str, state_: str, created_: datetime, **changes) -> dict:
    name, state = name_, state_
    kek = derived("keyring " + name)
    item = {"id": keyring.kek_id(kek).hex(), "name": name, "created": created_.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "state": state}
    if state != keyring.DESTROYED:
        item["key"] = base64.b64encode(kek).decode()
    item.update(changes)
    return {k: v for k, v in item.items() if v is not None}


def _keyring_doc(*entries) -> str:
    return json.dumps({"format": keyring.FORMAT, "keys": list(entries)})


def keyrings() -> dict:
    entries = [keyring._Kek(keyring.kek_id(derived("keyring " + name)), name, created, state,
                            None if state == keyring.DESTROYED else bytearray(derived("keyring " + name)))
               for name, state, created in KEYRING_ENTRIES]
    text = keyring._encode(entries).decode()
    containers = []
    for name, state, _ in KEYRING_ENTRIES:
        kek, file_key = derived("keyring " + name), derived("keyring file key " + name)
        body = keyring.kek_id(kek) + keyring.wrap_key(kek, file_key)
        blob = seal(file_key, {}, [_container.Stanza(keyring.KeyringRecipient.stanza_type, body)],
                    pattern(300), "keyring salt " + name)
        containers.append({"kek_name": name, "kek_state": state, "kek_id": keyring.kek_id(kek).hex(),
                           "opens": state != keyring.DESTROYED, "container": blob.hex(),
                           "plaintext_length": 300})
    active = ("2026-q1", keyring.ACTIVE, CREATED)
    good = _keyring_entry(*active)
    kek = derived("keyring 2026-q1")
    encoded = base64.b64encode(kek).decode()
    sloppy = encoded[:-2] + chr(ord(encoded[-2]) + 1) + "="  # same bytes, an unused bit set
    assert base64.b64decode(sloppy) == kek
    arabic = "".join(chr(0x660 + int(c)) if c.isdigit() else c for c in good["created"])
    return {
        "file": text,
        "keks": {name: derived("keyring " + name).hex() for name, _, _ in KEYRING_ENTRIES},
        "containers": containers,
        "valid": [
            {"name": "compact JSON, members in another order",
             "text": json.dumps({"keys": [dict(reversed(list(good.items())))], "format": keyring.FORMAT},
                                separators=(",", ":"))},
            {"name": "no keys at all", "text": _keyring_doc()},
            {"name": "a unicode name", "text": _keyring_doc(_keyring_entry("\u00e9t\u00e9 2026", keyring.ACTIVE, CREATED))},
        ],
        "invalid": [
            {"name": "non-canonical base64 key", "text": _keyring_doc(_keyring_entry(*active, key=sloppy))},
            {"name": "time with +00:00", "text": _keyring_doc(_keyring_entry(*active, created="2026-01-02T03:04:05+00:00"))},
            {"name": "fractional seconds", "text": _keyring_doc(_keyring_entry(*active, created="2026-01-02T03:04:05.5Z"))},
            {"name": "lower-case z", "text": _keyring_doc(_keyring_entry(*active, created="2026-01-02T03:04:05z"))},
            {"name": "arabic-indic digits", "text": _keyring_doc(_keyring_entry(*active, created=arabic))},
            {"name": "impossible date", "text": _keyring_doc(_keyring_entry(*active, created="2026-02-30T00:00:00Z"))},
            {"name": "upper-case id", "text": _keyring_doc(_keyring_entry(*active, id=good["id"].upper()))},
            {"name": "id of another key", "text": _keyring_doc(_keyring_entry(*active, id="0" * 32))},
            {"name": "destroyed with key bytes", "text": _keyring_doc(_keyring_entry(*active, state="destroyed"))},
            {"name": "active without key", "text": _keyring_doc(_keyring_entry(*active, key=None))},
            {"name": "unknown state", "text": _keyring_doc(_keyring_entry(*active, state="retired"))},
            {"name": "unknown entry field", "text": _keyring_doc(_keyring_entry(*active, note="x"))},
            {"name": "unknown top-level field", "text": json.dumps({"format": keyring.FORMAT, "keys": [], "x": 1})},
            {"name": "other format", "text": json.dumps({"format": "shardseal-keyring-2", "keys": []})},
            {"name": "duplicate names", "text": _keyring_doc(good, _keyring_entry("2026-q1", keyring.DESTROYED, CREATED,
                                                                                  id=keyring.kek_id(derived("x")).hex()))},
            {"name": "duplicate ids", "text": _keyring_doc(good, dict(good, name="copy"))},
            {"name": "repeated JSON member", "text": _keyring_doc(good).replace('"format"', '"format": "x", "format"', 1)},
            {"name": "name that looks like an id", "text": _keyring_doc(_keyring_entry(*active, name="ab" * 16))},
            {"name": "name with a trailing space", "text": _keyring_doc(_keyring_entry(*active, name="q1 "))},
            {"name": "name with a control character", "text": _keyring_doc(_keyring_entry(*active, name="q\n1"))},
            {"name": "name with a format character", "text": _keyring_doc(_keyring_entry(*active, name="q\u200b1"))},
            {"name": "empty name", "text": _keyring_doc(_keyring_entry(*active, name=""))},
            {"name": "129-character name", "text": _keyring_doc(_keyring_entry(*active, name="n" * 129))},
            {"name": "NaN", "text": _keyring_doc(good).replace('"keys"', '"nan": NaN, "keys"')},
            {"name": "byte order mark", "text": "\ufeff" + _keyring_doc(good)},
        ],
    }


# -- datasets -----------------------------------------------------------------------------------

SHARDS = [("a/0.sseal", 5000), ("b.sseal", 0), ("e\u0301.sseal", 10), ("\u00e9.sseal", 20)]


def _document(**changes) -> dict:
    key = derived("dataset key")
    document = {"format": manifest.FORMAT, "dataset_key": base64.b64encode(key).decode(),
                "dataset_key_id": _direct.key_id(key).hex(),
                "shards": [{"name": "a.sseal", "size": 100, "sha256": "0" * 64}],
                "created": MANIFEST_TIME, "updated": MANIFEST_TIME}
    document.update(changes)
    return document


def _canonical(document: dict) -> str:
    return _container.canonical_json(document).decode()


def datasets() -> dict:
    key = derived("dataset key")
    shards, files = {}, {}
    for name, size in SHARDS:
        blob = direct(key, {}, pattern(size), "shard " + name)
        files[name] = blob.hex()
        shards[name] = manifest.ShardInfo(name, len(blob), hashlib.sha256(blob).hexdigest())
    plaintext = manifest._encode_document(key, shards, MANIFEST_TIME, "2026-01-03T00:00:00+00:00")
    identity = x25519.X25519Identity(derived("x25519 identity"))
    file_key = derived("manifest file key")
    blob = seal(file_key, {"content_type": manifest.CONTENT_TYPE},
                [x25519_stanza(identity.recipient.public_bytes, file_key, "manifest ephemeral")],
                plaintext, "manifest salt")
    files[manifest.MANIFEST_NAME] = blob.hex()
    entry = {"name": "a.sseal", "size": 100, "sha256": "0" * 64}
    bad_names = {"backslash": "a\\b.sseal", "newline": "a\nb.sseal", "delete character": "a\x7fb.sseal",
                 "dot component": "./a.sseal", "dot-dot component": "a/../b.sseal", "absolute": "/a.sseal",
                 "trailing slash": "a/", "empty component": "a//b.sseal", "empty": "",
                 "the manifest's own name": manifest.MANIFEST_NAME}
    invalid = [{"name": f"shard name: {why}", "text": _canonical(_document(shards=[dict(entry, name=name)]))}
               for why, name in bad_names.items()]
    invalid += [
        {"name": "time with Z", "text": _canonical(_document(created="2026-01-02T03:04:05Z"))},
        {"name": "fractional seconds", "text": _canonical(_document(updated="2026-01-02T03:04:05.000000+00:00"))},
        {"name": "another offset", "text": _canonical(_document(updated="2026-01-02T04:04:05+01:00"))},
        {"name": "-00:00", "text": _canonical(_document(updated="2026-01-02T03:04:05-00:00"))},
        {"name": "space instead of T", "text": _canonical(_document(updated="2026-01-02 03:04:05+00:00"))},
        {"name": "leap second", "text": _canonical(_document(updated="2026-12-31T23:59:60+00:00"))},
        {"name": "shards out of order", "text": _canonical(_document(shards=[dict(entry, name="b.sseal"), entry]))},
        {"name": "nfc before nfd (code point order)", "text": _canonical(_document(
            shards=[dict(entry, name="\u00e9.sseal"), dict(entry, name="e\u0301.sseal")]))},
        {"name": "duplicate shard", "text": _canonical(_document(shards=[entry, entry]))},
        {"name": "size 2^63", "text": _canonical(_document(shards=[dict(entry, size=2**63)]))},
        {"name": "size true", "text": _canonical(_document(shards=[dict(entry, size=True)]))},
        {"name": "upper-case sha256", "text": _canonical(_document(shards=[dict(entry, sha256="A" * 64)]))},
        {"name": "non-canonical base64 key", "text": _canonical(_document(
            dataset_key=base64.b64encode(key).decode()[:-2] + chr(ord(base64.b64encode(key).decode()[-2]) + 1) + "="))},
        {"name": "upper-case key id", "text": _canonical(_document(dataset_key_id=_direct.key_id(key).hex().upper()))},
        {"name": "not canonical JSON", "text": json.dumps(_document())},
    ]
    return {
        "dataset_key": key.hex(),
        "dataset_key_id": _direct.key_id(key).hex(),
        "identity": identity.to_string(),
        "manifest_name": manifest.MANIFEST_NAME,
        "manifest_plaintext": plaintext.decode(),
        "files": files,
        "shard_plaintext_lengths": dict(SHARDS),
        "valid_plaintexts": [
            {"name": "no shards", "text": _canonical(_document(shards=[]))},
            {"name": "nfd and nfc names are distinct", "text": _canonical(_document(
                shards=[dict(entry, name="e\u0301.sseal"), dict(entry, name="\u00e9.sseal")]))},
            {"name": "largest size", "text": _canonical(_document(shards=[dict(entry, size=2**63 - 1)]))},
            {"name": "a name without .sseal", "text": _canonical(_document(shards=[dict(entry, name="x/y.bin")]))},
        ],
        "invalid_plaintexts": invalid,
    }


# -- array and tensor metadata -------------------------------------------------------------------

def arrays() -> dict:
    key = derived("array key")
    structured = np.dtype({"names": ["id", "xy", "flag"], "formats": ["<u2", (">f4", (2,)), "?"],
                           "offsets": [0, 4, 12], "itemsize": 16})
    values = np.zeros(3, structured)
    values["id"] = [1, 2, 3]
    values["xy"] = [[0.5, -1], [2, 4], [8, 16]]
    values["flag"] = [True, False, True]
    descr = np.lib.format.dtype_to_descr(structured)
    rows = []
    for name, meta, plaintext in [
        ("structured", {"content_type": "numpy.ndarray", "array": {"dtype": descr, "shape": [3]}}, values.tobytes()),
        ("bfloat16 tensor", {"content_type": "torch.Tensor", "tensor": {"dtype": "bfloat16", "shape": [2, 2]}},
         bytes.fromhex("803f" "0040" "c0bf" "0000")),  # 1.0, 2.0, -1.5, 0.0
    ]:
        meta = json.loads(json.dumps(meta))
        rows.append({"name": name, "key": key.hex(), "header_metadata": meta,
                     "container": direct(key, meta, plaintext, "array " + name).hex(), "plaintext": plaintext.hex()})
    bad = {"content_type": "numpy.ndarray", "array": {"dtype": "|u1", "shape": [True]}}
    invalid = [{"name": "bool in an array shape", "kind": "array", "key": key.hex(), "header_metadata": bad,
                "container": direct(key, bad, b"\x07", "array bool shape").hex()}]
    objects = {"content_type": "numpy.ndarray", "array": {"dtype": "|O", "shape": [1]}}
    invalid.append({"name": "object dtype", "kind": "array", "key": key.hex(), "header_metadata": objects,
                    "container": direct(key, objects, bytes(8), "array object dtype").hex()})
    float_shape = {"content_type": "torch.Tensor", "tensor": {"dtype": "uint8", "shape": [1.0]}}
    invalid.append({"name": "float in a tensor shape", "kind": "tensor", "key": key.hex(),
                    "header_metadata": float_shape,
                    "container": direct(key, float_shape, b"\x07", "tensor float shape").hex()})
    return {"valid": rows, "invalid": invalid,
            "structured_values": {"id": [1, 2, 3], "xy": [[0.5, -1.0], [2.0, 4.0], [8.0, 16.0]],
                                  "flag": [True, False, True]}}


def main() -> int:
    document = {
        "description": "shardseal file format vectors: key files, X25519 identities, keyrings, "
                       "dataset manifests, array and tensor metadata (see generate_files.py)",
        "format": "docs/FORMAT.md sections 2.3 and 7-11",
        "plaintext": "bytes(i % 251 for i in range(n))",
        "key_file": key_files(),
        "x25519": identities(),
        "keyring": keyrings(),
        "dataset": datasets(),
        "metadata": arrays(),
    }
    OUT.write_text(json.dumps(document, indent=1, ensure_ascii=True) + "\n")
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
