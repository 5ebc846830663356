"""tests/vectors/files_v1.json: key files, X25519 identities, keyrings, dataset manifests and
array/tensor metadata, checked twice.

* ``Spec*`` below is an independent reader written from docs/FORMAT.md sections 2, 3, 7-11
  alone, on the standard library and ``cryptography`` (no shardseal import): it must accept
  every valid input, open every container, and refuse every invalid input.
* The library must do the same, with the documented error classes.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import struct
import unicodedata
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from cryptography.cobblestone import Cobblestone256Decryptor
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF, HKDFExpand
from cryptography.hazmat.primitives.keywrap import aes_key_unwrap

DOC = json.loads((Path(__file__).resolve().parent / "vectors" / "files_v1.json").read_text("utf-8"))


def pattern(n: int) -> bytes:
    return bytes(i % 251 for i in range(n))


def data_of(case: dict) -> bytes:
    return bytes.fromhex(case["hex"]) if "hex" in case else case["text"].encode("utf-8")


def names(cases):
    return [case["name"] for case in cases]


# ============================================================================================
# The independent reader (FORMAT.md only)


class SpecError(Exception):
    """The independent reader refuses the input."""


def require(condition, why: str) -> None:
    if not condition:
        raise SpecError(why)


def hkdf_expand_sha512(prk: bytes, info: bytes, n: int) -> bytes:
    return HKDFExpand(hashes.SHA512(), n, info).derive(prk)


def spec_b64_key(text) -> bytes:
    """Section 8: canonical padded standard base64 of 32 bytes."""
    require(isinstance(text, str) and re.fullmatch(r"[A-Za-z0-9+/]{43}=", text), "not 44-char base64")
    require(text[42] in "AEIMQUYcgkosw048", "unused bits set")
    return base64.b64decode(text, validate=True)


def spec_lines(data: bytes) -> list[str]:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise SpecError("not UTF-8") from None
    return [line.strip(" \t\r") for line in text.split("\n")]


def spec_read_key_file(data: bytes) -> bytes:
    """Section 9."""
    if len(data) == 32:
        require(not all(0x20 <= b <= 0x7E or b in b"\t\r\n" for b in data), "32 printable bytes")
        return data
    keys = []
    for line in spec_lines(data):
        if not line or line.startswith("#"):
            continue
        require(line.startswith("shardseal-key-1:"), "a line that is not a key line")
        keys.append(spec_b64_key(line[len("shardseal-key-1:"):].strip(" \t")))
    require(len(keys) == 1, "not exactly one key line")
    return keys[0]


B32_UPPER = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"


def spec_b32_key(text: str, prefix: str, upper: bool, label: bytes) -> bytes:
    """Section 10: prefix, one-case unpadded canonical base32 of key || 4-byte checksum."""
    text = text.strip(" \t\r\n")
    require(text.startswith(prefix), "prefix")
    encoded = text[len(prefix):]
    alphabet = B32_UPPER if upper else B32_UPPER.lower()
    require(all(c in alphabet for c in encoded), "alphabet or case")
    require(len(encoded) == 58, "length")
    require(B32_UPPER.index(encoded[-1].upper()) % 4 == 0, "unused bits")
    raw = base64.b32decode(encoded.upper() + "======")
    key, checksum = raw[:32], raw[32:]
    require(hmac.compare_digest(checksum, hashlib.sha256(label + key).digest()[:4]), "checksum")
    return key


def spec_recipient(text: str) -> bytes:
    public = spec_b32_key(text, "ssealx1", False, b"shardseal/v1/x25519-recipient")
    require(int.from_bytes(public, "little") < 2**255 - 19, "non-canonical public key")
    return public


def spec_identity(text: str) -> bytes:
    return spec_b32_key(text, "SSEAL-X25519-SECRET-1", True, b"shardseal/v1/x25519-identity")


def spec_read_identity_file(data: bytes) -> bytes:
    lines = [line for line in spec_lines(data) if line and not line.startswith("#")]
    require(all(line.startswith("SSEAL-X25519-SECRET-1") for line in lines), "a line that is not an identity")
    require(len(lines) == 1, "not exactly one identity")
    return spec_identity(lines[0])


def spec_utc_time(text, pattern_: str, fmt: str) -> None:
    require(isinstance(text, str) and re.fullmatch(pattern_, text, re.ASCII), "time form")
    try:
        datetime.strptime(text, fmt)
    except ValueError:
        raise SpecError("not a real date and time") from None


def spec_read_keyring(data: bytes) -> dict:
    """Section 11: {id hex: (name, state, key or None)}."""
    def pairs(items):
        require(len({k for k, _ in items}) == len(items), "repeated member")
        return dict(items)

    def constant(_):
        raise SpecError("NaN or Infinity")

    try:
        document = json.loads(data.decode("utf-8"), object_pairs_hook=pairs, parse_constant=constant)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise SpecError("not UTF-8 JSON") from None
    require(isinstance(document, dict) and set(document) == {"format", "keys"}, "top level")
    require(document["format"] == "shardseal-keyring-1" and isinstance(document["keys"], list), "format")
    entries, seen_names = {}, set()
    for entry in document["keys"]:
        require(isinstance(entry, dict), "entry not an object")
        state = entry.get("state")
        require(state in ("active", "decrypt-only", "destroyed"), "state")
        base = {"id", "name", "created", "state"}
        require(set(entry) == (base if state == "destroyed" else base | {"key"}), "entry members")
        name = entry["name"]
        require(isinstance(name, str) and 1 <= len(name) <= 128, "name length")
        require(all(c == " " or unicodedata.category(c) not in
                    ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp", "Zs") for c in name), "name printable")
        require(name == name.strip(" ") and not re.fullmatch(r"[0-9a-f]{32}", name), "name form")
        require(isinstance(entry["id"], str) and re.fullmatch(r"[0-9a-f]{32}", entry["id"]), "id")
        spec_utc_time(entry["created"], r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z",
                      "%Y-%m-%dT%H:%M:%SZ")
        key = None
        if state != "destroyed":
            key = spec_b64_key(entry["key"])
            require(hkdf_expand_sha512(key, b"shardseal/v1/keyring-kek-id", 16).hex() == entry["id"], "id mismatch")
        require(name not in seen_names and entry["id"] not in entries, "duplicate")
        seen_names.add(name)
        entries[entry["id"]] = (name, state, key)
    return entries


def spec_canonical(obj) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")


def spec_parse_manifest(plaintext: bytes, manifest_name: str = "manifest.sseal") -> dict:
    """Section 7: the plaintext's members, checked."""
    try:
        document = json.loads(plaintext.decode("utf-8"))
        require(isinstance(document, dict) and spec_canonical(document) == plaintext, "not canonical")
    except (UnicodeError, ValueError):
        raise SpecError("not canonical JSON") from None
    require(set(document) == {"format", "dataset_key", "dataset_key_id", "shards", "created", "updated"}, "members")
    require(document["format"] == "shardseal-dataset-1", "format")
    key = spec_b64_key(document["dataset_key"])
    require(document["dataset_key_id"] == hkdf_expand_sha512(key, b"shardseal/v1/direct-key-id", 16).hex(), "key id")
    for field in ("created", "updated"):
        spec_utc_time(document[field], r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\+00:00",
                      "%Y-%m-%dT%H:%M:%S+00:00")
    shards = document["shards"]
    require(isinstance(shards, list), "shards")
    previous = None
    for shard in shards:
        require(isinstance(shard, dict) and set(shard) == {"name", "size", "sha256"}, "shard members")
        name, size = shard["name"], shard["size"]
        require(isinstance(name, str) and name and not name.startswith("/"), "name")
        require("\\" not in name and not any(ord(c) < 0x20 or ord(c) == 0x7F for c in name), "name chars")
        require(all(part not in ("", ".", "..") for part in name.split("/")), "name components")
        require(name != manifest_name, "manifest's own name")
        require(previous is None or name > previous, "order or duplicate")
        previous = name
        require(type(size) is int and 0 <= size <= 2**63 - 1, "size")
        require(isinstance(shard["sha256"], str) and re.fullmatch(r"[0-9a-f]{64}", shard["sha256"]), "sha256")
    return {"key": key, "shards": shards}


def spec_split(blob: bytes):
    """Sections 2.1 and 2.4: (fixed part, metadata, [(type, body)], message)."""
    require(blob[:10] == b"\x89SSEAL\r\n\x1a\n" and blob[10] == 1 and blob[11] == 1, "magic, version, suite")
    (length,) = struct.unpack(">I", blob[12:16])
    fixed = blob[:16 + length]
    metadata = json.loads(fixed[16:])
    require(spec_canonical(metadata) == fixed[16:], "metadata not canonical")
    (count,) = struct.unpack(">H", blob[len(fixed):len(fixed) + 2])
    at, stanzas = len(fixed) + 2, []
    for _ in range(count):
        kind, size = struct.unpack(">HI", blob[at:at + 6])
        stanzas.append((kind, blob[at + 6:at + 6 + size]))
        at += 6 + size
    return fixed, metadata, stanzas, blob[at:]


def spec_open(blob: bytes, *, key=None, x25519_private=None, keks=()) -> tuple[dict, bytes]:
    """Decrypts a suite-1 container with a direct key, an X25519 private key or KEKs."""
    fixed, metadata, stanzas, message = spec_split(blob)
    file_key = None
    for kind, body in stanzas:
        if kind == 1 and key is not None and body == hkdf_expand_sha512(key, b"shardseal/v1/direct-key-id", 16):
            file_key = key
        elif kind == 2:
            for kek in keks:
                if body[:16] == hkdf_expand_sha512(kek, b"shardseal/v1/keyring-kek-id", 16):
                    file_key = aes_key_unwrap(kek, body[16:])
        elif kind == 4 and x25519_private is not None:
            private = X25519PrivateKey.from_private_bytes(x25519_private)
            public = private.public_key().public_bytes_raw()
            if body[:16] == hashlib.sha256(b"shardseal/v1/x25519-recipient-id" + public).digest()[:16]:
                shared = private.exchange(X25519PublicKey.from_public_bytes(body[16:48]))
                wrap = HKDF(hashes.SHA256(), 32, body[16:48] + public, b"shardseal/v1/x25519").derive(shared)
                file_key = AESGCM(wrap).decrypt(bytes(12), body[48:], b"")
    require(file_key is not None, "no stanza opens")
    decryptor = Cobblestone256Decryptor(file_key, context=fixed)
    return metadata, decryptor.update(message) + decryptor.finalize()


TYPESTR = re.compile(r"([<>|])([biufcSUVMm])([0-9]+)(\[[a-zA-Z0-9]+\])?")


def spec_itemsize(descr) -> int:
    """Section 2.3.1: the item size of an array dtype descriptor (a subset of kinds)."""
    if isinstance(descr, str):
        match = TYPESTR.fullmatch(descr)
        require(match is not None, "unsupported typestr")
        order, kind, size = match.group(1), match.group(2), int(match.group(3))
        require((order == "|") == (kind in "bSVu" and size == 1 or kind in "SV"), "byte order")
        return 8 if kind in "Mm" else size * 4 if kind == "U" else size
    require(isinstance(descr, list), "descr")
    total = 0
    for field in descr:
        require(isinstance(field, list) and len(field) in (2, 3), "field")
        name = field[0]
        require(isinstance(name, str) or (isinstance(name, list) and len(name) == 2), "field name")
        count = 1
        if len(field) == 3:
            require(all(type(n) is int and n >= 0 for n in field[2]), "sub-array shape")
            count = int(np.prod(field[2], dtype=object))
        total += spec_itemsize(field[1]) * count
    return total


def spec_shape(description: dict) -> list:
    require(isinstance(description, dict) and {"dtype", "shape"} <= set(description), "description")
    shape = description["shape"]
    require(isinstance(shape, list) and all(type(n) is int and n >= 0 for n in shape), "shape")
    return shape


TENSOR_SIZES = {"uint8": 1, "bool": 1, "int16": 2, "bfloat16": 2, "float16": 2, "float32": 4, "int64": 8}


def spec_payload_check(metadata: dict, plaintext: bytes) -> None:
    if "array" in metadata:
        shape, size = spec_shape(metadata["array"]), spec_itemsize(metadata["array"]["dtype"])
    else:
        shape = spec_shape(metadata["tensor"])
        require(metadata["tensor"]["dtype"] in TENSOR_SIZES, "tensor dtype")
        size = TENSOR_SIZES[metadata["tensor"]["dtype"]]
    require(int(np.prod(shape, dtype=object)) * size == len(plaintext), "size mismatch")


# ---- the independent reader against the vectors ---------------------------------------------

KEY_FILE, X, RING, DATA, META = DOC["key_file"], DOC["x25519"], DOC["keyring"], DOC["dataset"], DOC["metadata"]


def test_spec_key_file():
    key = bytes.fromhex(KEY_FILE["key"])
    assert spec_read_key_file(KEY_FILE["file"].encode()) == key
    assert hkdf_expand_sha512(key, b"shardseal/v1/direct-key-id", 16).hex() == KEY_FILE["key_id"]
    assert f"# key id: {KEY_FILE['key_id']}\n" in KEY_FILE["file"]
    for case in KEY_FILE["valid"]:
        assert spec_read_key_file(data_of(case)) == key, case["name"]
    assert spec_open(bytes.fromhex(KEY_FILE["container"]), key=key)[1] == pattern(KEY_FILE["plaintext_length"])


@pytest.mark.parametrize("case", KEY_FILE["invalid"], ids=names(KEY_FILE["invalid"]))
def test_spec_refuses_key_file(case):
    with pytest.raises(SpecError):
        spec_read_key_file(data_of(case))


def test_spec_x25519_strings_and_file():
    private, public = bytes.fromhex(X["private_key"]), bytes.fromhex(X["public_key"])
    assert spec_identity(X["identity"]) == private
    assert spec_recipient(X["recipient"]) == public
    assert X25519PrivateKey.from_private_bytes(private).public_key().public_bytes_raw() == public
    assert hashlib.sha256(b"shardseal/v1/x25519-recipient-id" + public).digest()[:16].hex() == X["recipient_id"]
    assert spec_read_identity_file(X["file"].encode()) == private
    assert f"# recipient: {X['recipient']}\n" in X["file"]
    for text in X["valid_recipients"]:
        assert spec_recipient(text) == public
    for text in X["valid_identities"]:
        assert spec_identity(text) == private
    for case in X["valid_files"]:
        assert spec_read_identity_file(data_of(case)) == private
    assert spec_open(bytes.fromhex(X["container"]), x25519_private=private)[1] == pattern(X["plaintext_length"])


@pytest.mark.parametrize("case", X["invalid_recipients"], ids=names(X["invalid_recipients"]))
def test_spec_refuses_recipient(case):
    with pytest.raises(SpecError):
        spec_recipient(case["text"])


@pytest.mark.parametrize("case", X["invalid_identities"], ids=names(X["invalid_identities"]))
def test_spec_refuses_identity(case):
    with pytest.raises(SpecError):
        spec_identity(case["text"])


@pytest.mark.parametrize("case", X["invalid_files"], ids=names(X["invalid_files"]))
def test_spec_refuses_identity_file(case):
    with pytest.raises(SpecError):
        spec_read_identity_file(data_of(case))


def test_spec_keyring():
    entries = spec_read_keyring(RING["file"].encode())
    assert sorted((name, state) for name, state, _ in entries.values()) == [
        ("2025-q3", "destroyed"), ("2025-q4", "decrypt-only"), ("2026-q1", "active")]
    keks = [key for _, _, key in entries.values() if key is not None]
    assert sorted(k.hex() for k in keks) == sorted(v for n, v in RING["keks"].items() if n != "2025-q3")
    for case in RING["valid"]:
        spec_read_keyring(data_of(case))
    for vector in RING["containers"]:
        blob = bytes.fromhex(vector["container"])
        if vector["opens"]:
            assert spec_open(blob, keks=keks)[1] == pattern(vector["plaintext_length"])
        else:
            with pytest.raises(SpecError):
                spec_open(blob, keks=keks)


@pytest.mark.parametrize("case", RING["invalid"], ids=names(RING["invalid"]))
def test_spec_refuses_keyring(case):
    with pytest.raises(SpecError):
        spec_read_keyring(data_of(case))


def test_spec_dataset():
    files = {name: bytes.fromhex(blob) for name, blob in DATA["files"].items()}
    private = spec_identity(DATA["identity"])
    metadata, plaintext = spec_open(files[DATA["manifest_name"]], x25519_private=private)
    assert metadata == {"content_type": "shardseal.dataset-manifest"}
    assert plaintext.decode() == DATA["manifest_plaintext"]
    manifest = spec_parse_manifest(plaintext)
    assert manifest["key"].hex() == DATA["dataset_key"]
    assert [s["name"] for s in manifest["shards"]] == sorted(DATA["shard_plaintext_lengths"])
    for shard in manifest["shards"]:
        blob = files[shard["name"]]
        assert (len(blob), hashlib.sha256(blob).hexdigest()) == (shard["size"], shard["sha256"])
        assert spec_open(blob, key=manifest["key"])[1] == pattern(DATA["shard_plaintext_lengths"][shard["name"]])
    for case in DATA["valid_plaintexts"]:
        spec_parse_manifest(data_of(case))


@pytest.mark.parametrize("case", DATA["invalid_plaintexts"], ids=names(DATA["invalid_plaintexts"]))
def test_spec_refuses_manifest(case):
    with pytest.raises(SpecError):
        spec_parse_manifest(data_of(case))


def test_spec_array_and_tensor_metadata():
    for vector in META["valid"]:
        metadata, plaintext = spec_open(bytes.fromhex(vector["container"]), key=bytes.fromhex(vector["key"]))
        assert metadata == vector["header_metadata"] and plaintext.hex() == vector["plaintext"]
        spec_payload_check(metadata, plaintext)
    structured = META["valid"][0]
    assert spec_itemsize(structured["header_metadata"]["array"]["dtype"]) == 16
    raw = bytes.fromhex(structured["plaintext"])
    items = [struct.unpack("<H", raw[i:i + 2]) + struct.unpack(">2f", raw[i + 4:i + 12]) + (raw[i + 12] == 1,)
             for i in range(0, len(raw), 16)]
    expected = META["structured_values"]
    assert [(i, [x, y], f) for i, x, y, f in items] == list(zip(expected["id"], expected["xy"], expected["flag"]))


@pytest.mark.parametrize("case", META["invalid"], ids=names(META["invalid"]))
def test_spec_refuses_metadata(case):
    metadata, plaintext = spec_open(bytes.fromhex(case["container"]), key=bytes.fromhex(case["key"]))
    with pytest.raises(SpecError):
        spec_payload_check(metadata, plaintext)


# ============================================================================================
# The library against the same vectors

import shardseal  # noqa: E402  (below the independent reader on purpose: it must not need it)
from shardseal import keyfile, keyring, manifest, x25519  # noqa: E402
from shardseal.errors import FormatError, KeyNotFoundError  # noqa: E402


def test_library_key_file():
    key = bytes.fromhex(KEY_FILE["key"])
    assert keyfile.parse_key_file(KEY_FILE["file"].encode()) == key
    for case in KEY_FILE["valid"]:
        assert keyfile.parse_key_file(data_of(case)) == key, case["name"]
    assert shardseal.decrypt(bytes.fromhex(KEY_FILE["container"]), key) == pattern(KEY_FILE["plaintext_length"])


def test_library_writes_the_key_file():
    from datetime import timezone
    created = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    assert keyfile.format_key_file(bytes.fromhex(KEY_FILE["key"]), created) == KEY_FILE["file"]


@pytest.mark.parametrize("case", KEY_FILE["invalid"], ids=names(KEY_FILE["invalid"]))
def test_library_refuses_key_file(case):
    with pytest.raises(keyfile.KeyFileError):
        keyfile.parse_key_file(data_of(case))


def test_library_x25519():
    identity = x25519.X25519Identity.from_string(X["identity"])
    assert str(identity.recipient) == X["recipient"] and identity.key_id == X["recipient_id"]
    assert x25519.parse_identity_file(X["file"].encode()).to_string() == X["identity"]
    for text in X["valid_recipients"]:
        assert x25519.X25519Recipient.from_string(text) == identity.recipient
    for case in X["valid_files"]:
        assert x25519.parse_identity_file(data_of(case)).to_string() == X["identity"]
    blob = bytes.fromhex(X["container"])
    assert shardseal.decrypt(blob, identities=[identity]) == pattern(X["plaintext_length"])


@pytest.mark.parametrize("case", X["invalid_recipients"], ids=names(X["invalid_recipients"]))
def test_library_refuses_recipient(case):
    with pytest.raises(ValueError):
        x25519.X25519Recipient.from_string(case["text"])


@pytest.mark.parametrize("case", X["invalid_identities"], ids=names(X["invalid_identities"]))
def test_library_refuses_identity(case):
    with pytest.raises(ValueError):
        x25519.X25519Identity.from_string(case["text"])


@pytest.mark.parametrize("case", X["invalid_files"], ids=names(X["invalid_files"]))
def test_library_refuses_identity_file(case):
    with pytest.raises(x25519.IdentityFileError):
        x25519.parse_identity_file(data_of(case))


def write_secret(path: Path, data: bytes) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as file:
        file.write(data)
    return path


def test_library_keyring(tmp_path):
    ring = keyring.Keyring.load(write_secret(tmp_path / "k.keyring", RING["file"].encode()))
    assert [(k.name, k.state) for k in ring.keys] == [
        ("2025-q3", "destroyed"), ("2025-q4", "decrypt-only"), ("2026-q1", "active")]
    assert ring.recipient().name == "2026-q1"
    for vector in RING["containers"]:
        blob = bytes.fromhex(vector["container"])
        if vector["opens"]:
            assert shardseal.decrypt(blob, identities=[ring]) == pattern(vector["plaintext_length"])
        else:
            with pytest.raises(KeyNotFoundError) as info:
                shardseal.decrypt(blob, identities=[ring])
            assert vector["kek_id"] in str(info.value)
    ring.save()  # the writer form is byte for byte the vector's
    assert (tmp_path / "k.keyring").read_text("utf-8") == RING["file"]
    for number, case in enumerate(RING["valid"]):
        keyring.Keyring.load(write_secret(tmp_path / f"valid{number}", data_of(case)))


@pytest.mark.parametrize("case", RING["invalid"], ids=names(RING["invalid"]))
def test_library_refuses_keyring(case, tmp_path):
    with pytest.raises(keyring.KeyringFileError):
        keyring.Keyring.load(write_secret(tmp_path / "k.keyring", data_of(case)))


def write_dataset(folder: Path) -> None:
    for name, blob in DATA["files"].items():
        path = folder.joinpath(*name.split("/"))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(bytes.fromhex(blob))


def test_library_dataset(tmp_path):
    write_dataset(tmp_path)
    identity = x25519.X25519Identity.from_string(DATA["identity"])
    with manifest.Dataset.open(tmp_path, identities=[identity]) as ds:
        assert ds.key.hex() == DATA["dataset_key"] and ds.key_id == DATA["dataset_key_id"]
        assert [s.name for s in ds.shards] == sorted(DATA["shard_plaintext_lengths"])
        assert ds.created == "2026-01-02T03:04:05+00:00"
        assert ds.verify(deep=True).ok
        for info in ds.shards:
            with ds.open_shard(info.name) as reader:
                assert reader.read() == pattern(DATA["shard_plaintext_lengths"][info.name])


def seal_manifest_plaintext(folder: Path, plaintext: bytes) -> x25519.X25519Identity:
    """The vector's manifest header (kept byte for byte) over another plaintext."""
    from cryptography.cobblestone import Cobblestone256Encryptor
    write_dataset(folder)
    identity = x25519.X25519Identity.from_string(DATA["identity"])
    blob = bytes.fromhex(DATA["files"][DATA["manifest_name"]])
    fixed, _, stanzas, _ = spec_split(blob)
    private = spec_identity(DATA["identity"])
    body = stanzas[0][1]
    public = X25519PrivateKey.from_private_bytes(private).public_key().public_bytes_raw()
    shared = X25519PrivateKey.from_private_bytes(private).exchange(X25519PublicKey.from_public_bytes(body[16:48]))
    file_key = AESGCM(HKDF(hashes.SHA256(), 32, body[16:48] + public, b"shardseal/v1/x25519").derive(shared)
                      ).decrypt(bytes(12), body[48:], b"")
    header = blob[:len(fixed) + 2 + 6 + len(body)]
    encryptor = Cobblestone256Encryptor(file_key, context=fixed)
    (folder / DATA["manifest_name"]).write_bytes(header + encryptor.update(plaintext) + encryptor.finalize())
    return identity


def test_library_opens_valid_manifest_plaintexts(tmp_path):
    for number, case in enumerate(DATA["valid_plaintexts"]):
        identity = seal_manifest_plaintext(tmp_path / str(number), data_of(case))
        manifest.Dataset.open(tmp_path / str(number), identities=[identity]).close()


@pytest.mark.parametrize("case", DATA["invalid_plaintexts"], ids=names(DATA["invalid_plaintexts"]))
def test_library_refuses_manifest(case, tmp_path):
    identity = seal_manifest_plaintext(tmp_path, data_of(case))
    with pytest.raises(FormatError):
        manifest.Dataset.open(tmp_path, identities=[identity])


def test_library_array_and_tensor_metadata():
    structured, tensor = META["valid"]
    array = shardseal.decrypt_array(bytes.fromhex(structured["container"]), bytes.fromhex(structured["key"]))
    expected = META["structured_values"]
    assert array["id"].tolist() == expected["id"] and array["xy"].tolist() == expected["xy"]
    assert array["flag"].tolist() == expected["flag"]
    torch = pytest.importorskip("torch")
    from shardseal import torch as sstorch
    value = sstorch.decrypt_tensor(bytes.fromhex(tensor["container"]), bytes.fromhex(tensor["key"]))
    assert value.dtype == torch.bfloat16 and value.tolist() == [[1.0, 2.0], [-1.5, 0.0]]


@pytest.mark.parametrize("case", META["invalid"], ids=names(META["invalid"]))
def test_library_refuses_metadata(case):
    blob, key = bytes.fromhex(case["container"]), bytes.fromhex(case["key"])
    if case["kind"] == "array":
        with pytest.raises(FormatError):
            shardseal.decrypt_array(blob, key)
    else:
        pytest.importorskip("torch")
        from shardseal import torch as sstorch
        with pytest.raises(FormatError):
            sstorch.decrypt_tensor(blob, key)
