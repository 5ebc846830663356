"""Generates tests/vectors/container_v1.json, the shardseal container v1 test vectors.

Run from the repository root:

    python tests/vectors/generate.py

The output is deterministic: every key, salt and plaintext is fixed.

* keys:       key(label)  = SHA-256("shardseal/v1 test key " || label), 32 bytes
* salts:      salt(name)  = SHA-256("shardseal/v1 test salt " || name)[:24]
* plaintexts: pattern(n)  = bytes(i % 251 for i in range(n))

Valid containers are made with shardseal's own public API (``encrypt``, ``encrypt_array``)
with the salt injected through the test hook ``shardseal.container.blob.random_salt``; when the native
module is present, the pure-Python backend is checked to give the same bytes. Invalid
containers are derived from valid ones by hand, with the layout of docs/FORMAT.md.

Fields of a valid vector (all byte strings are lowercase hex):

    name, comment, kind ("bytes" or "array"), key, key_id, suite (256/128), suite_id (1/2),
    input_key (the Cobblestone input key: the key itself, or the HKDF-derived 16-byte key
    for suite 128), salt, metadata (the ``metadata=`` argument, or null),
    header_metadata (the whole metadata object in the header), fixed (the fixed part),
    header (fixed part || key block), header_size,
    plaintext or plaintext_pattern (for large plaintexts), plaintext_length, plaintext_sha256,
    container or (for large containers) nothing but container_length and container_sha256,
    array (kind "array" only: dtype, shape, values),
    decrypt_only (true for containers the API cannot produce: a hand-made key block).

Fields of an invalid vector: name, comment, key (the key to decrypt with), container,
error (the exact error class ``decrypt`` raises), inspect_error (the class ``inspect``
raises, or null when inspect succeeds).
"""

from __future__ import annotations

import hashlib
import json
import struct
import sys
from pathlib import Path

import numpy as np

import shardseal
from shardseal.container import blob as _blob
from shardseal.core import backend as _backend, _pybackend

OUT = Path(__file__).resolve().parent / "container_v1.json"

MAGIC = b"\x89SSEAL\r\n\x1a\n"
CHUNK = 16384
SEALED_CHUNK = CHUNK + 16
MESSAGE_HEADER = 24 + 32
INLINE_LIMIT = 4096  # plaintexts above this many bytes are given by pattern and digest only


def key(label: str) -> bytes:
    return hashlib.sha256(b"shardseal/v1 test key " + label.encode()).digest()


def salt(name: str) -> bytes:
    return hashlib.sha256(b"shardseal/v1 test salt " + name.encode()).digest()[:24]


def pattern(n: int) -> bytes:
    return bytes(i % 251 for i in range(n))


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def canonical(obj) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")


def fixed_part(metadata_bytes: bytes, version: int = 1, suite_id: int = 1, magic: bytes = MAGIC) -> bytes:
    return magic + struct.pack(">BBI", version, suite_id, len(metadata_bytes)) + metadata_bytes


def key_block(stanzas) -> bytes:
    out = struct.pack(">H", len(stanzas))
    for stanza_type, body in stanzas:
        out += struct.pack(">HI", stanza_type, len(body)) + body
    return out


def split(container: bytes) -> tuple[bytes, bytes, bytes]:
    """(fixed part, key block, payload) of a container, parsed per docs/FORMAT.md."""
    (metadata_len,) = struct.unpack_from(">I", container, 12)
    fixed_end = 16 + metadata_len
    (count,) = struct.unpack_from(">H", container, fixed_end)
    pos = fixed_end + 2
    for _ in range(count):
        _, body_len = struct.unpack_from(">HI", container, pos)
        pos += 6 + body_len
    return container[:fixed_end], container[fixed_end:pos], container[pos:]


def with_salt(salt_bytes: bytes, fn):
    """Calls fn with the salt hook set, on the default backend and, when the native module
    is loaded, on the Python backend too; checks both give the same bytes."""
    saved_salt, saved_impl, saved_name = _blob.random_salt, _backend.impl, _backend.name
    _blob.random_salt = lambda: salt_bytes
    try:
        result = fn()
        if _backend.impl is not _pybackend:
            _backend.impl, _backend.name = _pybackend, "python"
            assert fn() == result, "the native and Python backends disagree"
    finally:
        _blob.random_salt, _backend.impl, _backend.name = saved_salt, saved_impl, saved_name
    return result


def valid_vector(name, comment, *, n=0, suite=256, metadata=None, key_label="A", array=None):
    k = key(key_label)
    s = salt(name)
    if array is not None:
        plaintext = np.ascontiguousarray(array).tobytes()
        container = with_salt(s, lambda: shardseal.encrypt_array(array, k, metadata=metadata, suite=suite))
    else:
        plaintext = pattern(n)
        container = with_salt(s, lambda: shardseal.encrypt(plaintext, k, metadata=metadata, suite=suite))
    fixed, block, payload = split(container)
    info = shardseal.inspect(container)
    header_metadata = json.loads(fixed[16:].decode("utf-8"))
    input_key = k if suite == 256 else shardseal.keys.direct.input_key(k, 128)
    vector = {
        "name": name,
        "comment": comment,
        "kind": "array" if array is not None else "bytes",
        "key": k.hex(),
        "key_id": info.stanzas[0].key_id,
        "suite": suite,
        "suite_id": {256: 1, 128: 2}[suite],
        "input_key": input_key.hex(),
        "salt": s.hex(),
        "metadata": metadata,
        "header_metadata": header_metadata,
        "fixed": fixed.hex(),
        "header": (fixed + block).hex(),
        "header_size": len(fixed) + len(block),
        "plaintext_length": len(plaintext),
        "plaintext_sha256": sha256(plaintext),
        "container_length": len(container),
        "container_sha256": sha256(container),
        "decrypt_only": False,
    }
    if len(plaintext) <= INLINE_LIMIT:
        vector["plaintext"] = plaintext.hex()
        vector["container"] = container.hex()
    else:
        vector["plaintext_pattern"] = "bytes(i % 251 for i in range(plaintext_length))"
    if array is not None:
        vector["array"] = {"dtype": array.dtype.str, "shape": list(array.shape), "values": array.tolist()}
    assert shardseal.decrypt(container, k) == plaintext
    return vector, container


def main() -> int:
    valid = []
    containers = {}

    def add(*args, **kwargs):
        vector, container = valid_vector(*args, **kwargs)
        valid.append(vector)
        containers[vector["name"]] = container

    user_meta = {"name": "Modèle ✓ 模型 😀", "epoch": 3, "ok": True, "none": None,
                 "tags": ["train", "v1"], "nested": {"z": 1, "a": "\"quoted\"\n\\"}}
    add("empty-256", "empty plaintext, no metadata", n=0)
    add("one-byte-256", "1-byte plaintext", n=1)
    add("small-256-user-metadata", "100 bytes, user metadata with non-ASCII text, escapes, nesting",
        n=100, metadata=user_meta)
    add("empty-user-metadata-256", "metadata={} gives {\"user\":{}}", n=5, metadata={})
    add("16383-256", "one short final chunk of 16383 bytes", n=CHUNK - 1)
    add("16384-256", "one full chunk, then an empty final chunk (tag only)", n=CHUNK)
    add("16385-256", "one full chunk, then a 1-byte final chunk", n=CHUNK + 1)
    add("32268-256", "two full chunks, then a 500-byte final chunk", n=2 * CHUNK + 500,
        metadata={"shard": 7})
    add("empty-128", "Cobblestone-128, empty plaintext", n=0, suite=128)
    add("one-byte-128-user-metadata", "Cobblestone-128, 1 byte, non-ASCII user metadata", n=1,
        suite=128, metadata={"für": "Grüße", "日本": "テキスト"})
    add("16384-128", "Cobblestone-128, one full chunk, empty final chunk", n=CHUNK, suite=128)
    add("32268-128", "Cobblestone-128, two full chunks and 500 bytes", n=2 * CHUNK + 500, suite=128)
    add("array-float32-2x3", "encrypt_array of a little-endian float32 2x3 array",
        array=np.arange(6, dtype="<f4").reshape(2, 3) / np.float32(4))
    add("array-int16-big-endian", "encrypt_array of a big-endian int16 array, suite 128, user metadata",
        array=(np.arange(-6, 6).reshape(3, 4) * 1000).astype(">i2"), suite=128,
        metadata={"units": "mV"})

    # Decrypt-only: the key block is not in the context, so it can be rewritten without touching
    # the payload: here an unknown non-critical stanza and another key's direct stanza first.
    base = containers["small-256-user-metadata"]
    fixed, _, payload = split(base)
    other_id = shardseal.keys.direct.key_id(key("B"))
    own_id = shardseal.keys.direct.key_id(key("A"))
    rewrapped = fixed + key_block([(0x0042, b"ignored by v1 readers"), (0x0001, other_id),
                                   (0x0001, own_id)]) + payload
    vector = dict(valid[2])
    vector.update(name="rewrapped-three-stanzas",
                  comment="small-256-user-metadata with a new key block: an unknown non-critical "
                          "stanza 0x0042, key B's direct stanza, then key A's; decrypts with key A",
                  header=split(rewrapped)[0].hex() + split(rewrapped)[1].hex(),
                  header_size=len(rewrapped) - len(payload), container=rewrapped.hex(),
                  container_length=len(rewrapped), container_sha256=sha256(rewrapped),
                  decrypt_only=True, stanzas=[{"type": "unknown-0x0042", "key_id": ""},
                                              {"type": "direct", "key_id": other_id.hex()},
                                              {"type": "direct", "key_id": own_id.hex()}])
    assert shardseal.decrypt(rewrapped, key("A")) == pattern(100)
    valid.append(vector)

    invalid = []
    small = containers["small-256-user-metadata"]
    small_fixed, small_block, small_payload = split(small)
    meta_small = small_fixed[16:]
    k_a = key("A")

    def bad(name, comment, container, error, inspect_error, *, key_bytes=k_a):
        invalid.append({"name": name, "comment": comment, "key": key_bytes.hex(),
                        "container": container.hex(), "error": error, "inspect_error": inspect_error})

    def flip(data: bytes, index: int, bit: int = 0) -> bytes:
        out = bytearray(data)
        out[index] ^= 1 << bit
        return bytes(out)

    rest = small_block + small_payload
    # Magic and fixed fields.
    bad("wrong-magic", "PNG magic instead of shardseal's", b"\x89PNG\r\n\x1a\n\x00\x00" + small[10:],
        "FormatError", "FormatError")
    bad("magic-crlf-to-lf", "CR LF in the magic turned into LF (text-mode transfer)",
        small.replace(b"\r\n", b"\n", 1), "FormatError", "FormatError")
    bad("magic-lf-to-crlf", "the final LF of the magic turned into CR LF",
        MAGIC[:9] + b"\r\n" + small[10:], "FormatError", "FormatError")
    bad("magic-7-bit", "high bit of the first magic byte stripped (7-bit transfer)",
        b"\x09" + small[1:], "FormatError", "FormatError")
    bad("version-2", "format version 2", fixed_part(meta_small, version=2) + rest,
        "FormatError", "FormatError")
    bad("version-0", "format version 0", fixed_part(meta_small, version=0) + rest,
        "FormatError", "FormatError")
    bad("suite-id-3", "unknown suite id 3", fixed_part(meta_small, suite_id=3) + rest,
        "FormatError", "FormatError")
    bad("suite-id-0", "unknown suite id 0", fixed_part(meta_small, suite_id=0) + rest,
        "FormatError", "FormatError")
    # Metadata.
    for mname, mbytes, comment in [
        ("metadata-whitespace", b'{"user": {}}', "a space after the colon"),
        ("metadata-trailing-newline", b'{"user":{}}\n', "a trailing newline"),
        ("metadata-duplicate-keys", b'{"a":1,"a":1}', "a duplicate key"),
        ("metadata-unsorted-keys", b'{"b":1,"a":1}', "keys out of order"),
        ("metadata-ascii-escaped", b'{"user":{"k":"\\u00e9"}}', "non-ASCII text escaped as \\u00e9"),
        ("metadata-nan", b'{"x":NaN}', "NaN"),
        ("metadata-not-object", b'[]', "a JSON array instead of an object"),
        ("metadata-empty", b'', "zero-length metadata (not JSON)"),
        ("metadata-invalid-utf8", b'{"a":"\xff"}', "invalid UTF-8"),
        ("metadata-float-exponent", b'{"x":1E2}', "a number not in its canonical form (100.0)"),
    ]:
        bad(mname, "non-canonical metadata: " + comment, fixed_part(mbytes) + rest,
            "FormatError", "FormatError")
    # Limits.
    bad("metadata-length-4GiB", "metadata length 0xffffffff: over the 1 MiB header limit (rejected "
        "before reading or allocating, although the input is short)",
        MAGIC + struct.pack(">BBI", 1, 1, 0xFFFFFFFF) + meta_small + rest, "FormatError", "FormatError")
    bad("metadata-length-1MiB", "metadata length 1 MiB - 16: the fixed part exactly reaches the 1 MiB "
        "limit, which is allowed, so the short input ends inside the metadata", MAGIC + struct.pack(">BBI", 1, 1, (1 << 20) - 16) + meta_small + rest,
        "TruncatedError", "TruncatedError")
    bad("stanza-body-length-over-limit", "a stanza body length of 2^20: over the 1 MiB header limit",
        small_fixed + struct.pack(">HHI", 1, 1, 1 << 20) + own_id + small_payload,
        "FormatError", "FormatError")
    bad("stanza-count-0", "no key stanza", small_fixed + struct.pack(">H", 0) + small_payload,
        "FormatError", "FormatError")
    bad("stanza-count-1025", "1025 key stanzas (limit 1024)",
        small_fixed + struct.pack(">H", 1025) + small_block[2:] + small_payload, "FormatError", "FormatError")
    # Stanzas.
    bad("unknown-critical-stanza", "an unknown critical stanza type 0x8002 before a valid direct stanza",
        small_fixed + key_block([(0x8002, b"x"), (0x0001, own_id)]) + small_payload,
        "FormatError", "FormatError")
    bad("critical-direct-stanza", "type 0x8001: the critical bit set on the direct type is unknown",
        small_fixed + key_block([(0x8001, own_id)]) + small_payload, "FormatError", "FormatError")
    bad("direct-stanza-short", "a direct stanza with a 15-byte key id",
        small_fixed + key_block([(0x0001, own_id[:15])]) + small_payload, "FormatError", "FormatError")
    bad("direct-stanza-long-after-match", "a 17-byte direct stanza after the matching one is still malformed",
        small_fixed + key_block([(0x0001, own_id), (0x0001, own_id + b"x")]) + small_payload,
        "FormatError", "FormatError")
    bad("not-shardseal-short", "five bytes that are not the magic", b"hello", "FormatError", "FormatError")
    bad("user-metadata-not-object", "the reserved key 'user' holds a string",
        fixed_part(b'{"user":"x"}') + rest, "FormatError", "FormatError")
    bad("content-type-not-string", "the reserved key 'content_type' holds a number",
        fixed_part(b'{"content_type":5}') + rest, "FormatError", "FormatError")
    bad("no-direct-stanza", "only an unknown non-critical stanza: nothing a direct key opens",
        small_fixed + key_block([(0x0042, own_id)]) + small_payload, "KeyNotFoundError", None)
    bad("wrong-key", "decrypting with key B; the container names key A only",
        small, "KeyNotFoundError", None, key_bytes=key("B"))
    # Truncation.
    bad("truncated-in-magic", "the input ends inside the magic", small[:9], "TruncatedError", "TruncatedError")
    bad("truncated-in-metadata", "the input ends inside the metadata", small[:20],
        "TruncatedError", "TruncatedError")
    bad("truncated-in-key-block", "the input ends inside the direct stanza's key id",
        small[: len(small_fixed) + 10], "TruncatedError", "TruncatedError")
    bad("header-only", "the header and no payload", small_fixed + small_block,
        "TruncatedError", "TruncatedError")
    bad("payload-55-bytes", "a payload shorter than salt and commitment",
        small_fixed + small_block + small_payload[:55], "TruncatedError", "TruncatedError")
    bad("payload-56-bytes", "salt and commitment, no chunk: the final chunk is missing",
        small_fixed + small_block + small_payload[:56], "TruncatedError", "TruncatedError")
    bad("final-chunk-shorter-than-tag", "the final chunk cut to 15 bytes",
        small_fixed + small_block + small_payload[: 56 + 15], "TruncatedError", "TruncatedError")
    c16385 = containers["16385-256"]
    h16385 = len(c16385) - (56 + SEALED_CHUNK + 17)
    bad("truncated-at-chunk-boundary", "16385-256 cut after its first (full) chunk: the final chunk "
        "is missing", c16385[: h16385 + 56 + SEALED_CHUNK], "TruncatedError", "TruncatedError")
    c16384 = containers["16384-256"]
    bad("empty-final-chunk-dropped", "16384-256 without its empty final chunk (the last 16 bytes)",
        c16384[:-16], "TruncatedError", "TruncatedError")
    # Authentication.
    name_at = meta_small.index("Modèle".encode())
    bad("metadata-bit-flip", "metadata 'Modèle' -> 'Lodèle' (still canonical): the context changes",
        flip(small, 16 + name_at, 0), "AuthenticationError", None)
    bad("suite-id-changed", "suite id 1 -> 2: still a valid suite, but the context and key change",
        fixed_part(meta_small, suite_id=2) + rest, "AuthenticationError", None)
    h = len(small_fixed) + len(small_block)
    bad("salt-bit-flip", "a flipped bit in the salt", flip(small, h + 3), "AuthenticationError", None)
    bad("commitment-bit-flip", "a flipped bit in the commitment", flip(small, h + 30),
        "AuthenticationError", None)
    bad("chunk-bit-flip", "a flipped bit in the final chunk's ciphertext", flip(small, h + 60),
        "AuthenticationError", None)
    bad("chunk-tag-bit-flip", "a flipped bit in the final chunk's tag", flip(small, len(small) - 1, 7),
        "AuthenticationError", None)
    bad("final-chunk-cut", "the final chunk cut by one byte (still at least a tag long)", small[:-1],
        "AuthenticationError", None)
    bad("trailing-byte", "one byte appended to the container", small + b"\x00",
        "AuthenticationError", None)
    bad("second-chunk-bit-flip", "16385-256 with a flipped bit in its final chunk: the first chunk "
        "decrypts but no plaintext is released", flip(c16385, len(c16385) - 5), "AuthenticationError", None)

    for vector in invalid:  # the errors as this library raises them
        blob, k = bytes.fromhex(vector["container"]), bytes.fromhex(vector["key"])
        for call, expected in ((lambda: shardseal.decrypt(blob, k), vector["error"]),
                               (lambda: shardseal.inspect(blob), vector["inspect_error"])):
            try:
                call()
            except shardseal.ShardsealError as exc:
                got = type(exc).__name__
            else:
                got = None
            assert got == expected, (vector["name"], got, expected)

    document = {
        "description": "shardseal container v1 test vectors (docs/FORMAT.md); generated by "
                       "tests/vectors/generate.py",
        "keys": "key(label) = SHA-256('shardseal/v1 test key ' || label)",
        "salts": "salt(name) = SHA-256('shardseal/v1 test salt ' || name)[:24]",
        "plaintext_pattern": "bytes(i % 251 for i in range(n))",
        "valid": valid,
        "invalid": invalid,
    }
    text = json.dumps(document, indent=1, ensure_ascii=False) + "\n"
    OUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUT} ({len(text.encode('utf-8'))} bytes, {len(valid)} valid, {len(invalid)} invalid vectors)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
