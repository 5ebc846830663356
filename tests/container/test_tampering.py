"""Tampering: every kind of damage raises its own error class and releases no plaintext.

Each test runs once per backend (the ``backend`` fixture). Errors are checked by exact type
(``type(exc) is X``), never by a base class, so that an AuthenticationError that should have
been a TruncatedError (or the other way round) fails the test.

Layout reminders (bytes):
    container = header || message
    header    = magic(10) version(1) suite(1) metadata_len(4, BE) metadata
                || stanza count(2) || per stanza: type(2) body_len(4) body
    message   = salt(24) || commitment(32) || chunks of 16384 + 16, the final one shorter
                (0..16383 bytes of data + 16-byte tag; never missing)
"""

from __future__ import annotations

import json
import random
import struct

import numpy as np
import pytest

import shardseal
from shardseal import cobblestone
from shardseal.keys import stanzas as _stanzas
from shardseal.errors import (
    AuthenticationError,
    FormatError,
    KeyNotFoundError,
    ShardsealError,
    TruncatedError,
)

CHUNK = 16384
TAG = 16
SEALED = CHUNK + TAG  # 16400
SALT = 24
COMMITMENT = 32
MH = SALT + COMMITMENT  # 56

MAGIC_END = 10
VERSION_AT = 10
SUITE_AT = 11
METALEN_AT = 12
FIXED_PREFIX = 16
MAX_HEADER = 1 << 20

SENTINEL = 0xAA
KEY = bytes(range(32))
OTHER_KEY = bytes(range(100, 132))
METADATA = {"name": "weights", "epoch": 3, "tags": ["a", "b"]}


def payload(n: int, seed: int = 0) -> bytes:
    """Random (hence recognisable: never all 0x00 / 0xAA) plaintext."""
    return random.Random(seed).randbytes(n)


def flip(data: bytes, index: int, bit: int) -> bytes:
    out = bytearray(data)
    out[index] ^= 1 << bit
    return bytes(out)


def chunk_slice(i: int, base: int = 0) -> slice:
    """The i-th sealed chunk (full-size) of a message starting at base."""
    start = base + MH + i * SEALED
    return slice(start, start + SEALED)


def assert_no_plaintext(out, plaintext: bytes) -> None:
    """out (pre-filled with SENTINEL) holds only sentinel or zero bytes: no plaintext at all."""
    data = bytes(out)
    stray = data.translate(None, bytes([0, SENTINEL]))
    assert not stray, f"{len(stray)} bytes of out are neither the sentinel nor zero"
    # Belt and braces: no 64-byte piece of the plaintext (one per chunk, at most 16) appears.
    starts = range(0, len(plaintext) - 63, CHUNK)
    for start in starts[:: max(1, len(starts) // 16)]:
        assert data.find(plaintext[start : start + 64]) == -1


def sentinel_buffer(plaintext: bytes) -> bytearray:
    # Room for the largest plaintext any tampered message here claims (appended chunks).
    return bytearray([SENTINEL]) * (len(plaintext) + 2 * SEALED)


HOWS = ("decrypt", "decrypt_into")


def expect_container(exc_type, how, blob, plaintext, key=KEY, threads=1):
    """Opens a container; asserts exactly exc_type is raised and no plaintext escapes."""
    if how == "decrypt":
        with pytest.raises(ShardsealError) as excinfo:
            shardseal.decrypt(blob, key, threads=threads)
    else:
        out = sentinel_buffer(plaintext)
        with pytest.raises(ShardsealError) as excinfo:
            shardseal.decrypt_into(blob, key, out, threads=threads)
        assert_no_plaintext(out, plaintext)
    assert type(excinfo.value) is exc_type, f"expected {exc_type.__name__}, got {excinfo.value!r}"
    return excinfo.value


def expect_raw(exc_type, how, message, plaintext, key=KEY, context=b"", suite=256, threads=1):
    """Opens a raw Cobblestone message; asserts exactly exc_type and no plaintext released."""
    if how == "decrypt":
        with pytest.raises(ShardsealError) as excinfo:
            cobblestone.decrypt(message, key, context, suite=suite, threads=threads)
    else:
        out = sentinel_buffer(plaintext)
        with pytest.raises(ShardsealError) as excinfo:
            cobblestone.decrypt_into(message, key, out, context, suite=suite, threads=threads)
        assert_no_plaintext(out, plaintext)
    assert type(excinfo.value) is exc_type, f"expected {exc_type.__name__}, got {excinfo.value!r}"
    return excinfo.value


# ---------------------------------------------------------------------------------------------
# Header: layout of the test container and the error each single-bit flip must give
# ---------------------------------------------------------------------------------------------

HEADER_PLAINTEXT = payload(1000, seed=1)


def header_container(suite=256):
    blob = shardseal.encrypt(HEADER_PLAINTEXT, KEY, metadata=METADATA, suite=suite, threads=1)
    return blob, shardseal.inspect(blob).header_size


def header_regions(blob: bytes) -> dict:
    (meta_len,) = struct.unpack(">I", blob[METALEN_AT:FIXED_PREFIX])
    count_at = FIXED_PREFIX + meta_len
    type_at = count_at + 2
    body_len_at = type_at + 2
    key_id_at = body_len_at + 4
    return {
        "meta_len": meta_len,
        "count_at": count_at,
        "type_at": type_at,
        "body_len_at": body_len_at,
        "key_id_at": key_id_at,
        "end": key_id_at + 16,
    }


def canonical_metadata_outcome(raw: bytes):
    """What a reader must do with (tampered) metadata bytes: refuse non-canonical JSON
    (FormatError), or parse it, which changes the authenticated context (AuthenticationError)."""
    try:
        obj = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return FormatError
    if not isinstance(obj, dict):
        return FormatError
    canonical = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                           allow_nan=False).encode("utf-8")
    return AuthenticationError if canonical == raw else FormatError


def expected_header_flip(blob: bytes, index: int, bit: int):
    """The exact error class for flipping `bit` of header byte `index`, or a set of allowed
    classes where the outcome depends on the (random) payload bytes the parser runs into."""
    r = header_regions(blob)
    tampered = flip(blob, index, bit)
    if index < MAGIC_END:
        return FormatError
    if index == VERSION_AT:
        return FormatError
    if index == SUITE_AT:
        return AuthenticationError if tampered[SUITE_AT] in (1, 2) else FormatError
    if index < FIXED_PREFIX:  # metadata length
        (new_len,) = struct.unpack(">I", tampered[METALEN_AT:FIXED_PREFIX])
        if FIXED_PREFIX + new_len > MAX_HEADER:
            return FormatError
        if FIXED_PREFIX + new_len > len(blob):
            return TruncatedError
        return FormatError  # a prefix of the JSON, or JSON followed by binary: not canonical
    if index < r["count_at"]:
        return canonical_metadata_outcome(tampered[FIXED_PREFIX : r["count_at"]])
    if index < r["type_at"]:  # stanza count
        (count,) = struct.unpack(">H", tampered[r["count_at"] : r["type_at"]])
        if not 1 <= count <= 1024:
            return FormatError
        # Extra stanzas are parsed out of the payload: a bad stanza, a cut header, or a
        # payload shifted off its chunk grid.
        return {FormatError, TruncatedError, AuthenticationError}
    if index < r["body_len_at"]:  # stanza type
        (stanza_type,) = struct.unpack(">H", tampered[r["type_at"] : r["body_len_at"]])
        # A set high bit is an unknown critical type; a known envelope type (keyring,
        # passphrase...) finds a 16-byte body malformed; otherwise the stanza is skipped (an
        # unknown or padding type) and no direct stanza is left.
        if stanza_type & 0x8000:
            return FormatError
        return FormatError if stanza_type in _stanzas.TYPES and stanza_type != _stanzas.PADDING \
            else KeyNotFoundError
    if index < r["key_id_at"]:  # stanza body length
        (body_len,) = struct.unpack(">I", tampered[r["body_len_at"] : r["key_id_at"]])
        if r["key_id_at"] + body_len > MAX_HEADER:
            return FormatError
        if r["key_id_at"] + body_len > len(blob):
            return TruncatedError
        return FormatError  # a direct stanza whose key id is not 16 bytes
    assert index < r["end"]
    return KeyNotFoundError


def check_expected(exc, expected):
    if isinstance(expected, set):
        assert type(exc) in expected, f"expected one of {expected}, got {exc!r}"
    else:
        assert type(exc) is expected, f"expected {expected.__name__}, got {exc!r}"


def test_header_layout_matches_the_format(backend):
    blob, header_size = header_container()
    r = header_regions(blob)
    assert r["end"] == header_size
    assert blob[:MAGIC_END] == b"\x89SSEAL\r\n\x1a\n"
    assert blob[VERSION_AT] == 1
    assert blob[SUITE_AT] == 1
    assert json.loads(blob[FIXED_PREFIX : r["count_at"]]) == {"user": METADATA}
    assert blob[r["count_at"] : r["type_at"]] == b"\x00\x01"
    assert blob[r["type_at"] : r["body_len_at"]] == b"\x00\x01"
    assert blob[r["body_len_at"] : r["key_id_at"]] == b"\x00\x00\x00\x10"
    assert blob[r["key_id_at"] : header_size].hex() == shardseal.inspect(blob).stanzas[0].key_id
    assert len(blob) == header_size + MH + len(HEADER_PLAINTEXT) + TAG


# fixed prefix + canonical metadata JSON + count(2) + stanza head(6) + key id(16)
HEADER_SIZE = FIXED_PREFIX + len(json.dumps({"user": METADATA}, sort_keys=True, separators=(",", ":"))) + 24


# Every header byte, one bit each (bit = index % 8).
@pytest.mark.parametrize("how", HOWS)
@pytest.mark.parametrize("index", range(HEADER_SIZE))
def test_header_bit_flip(backend, index, how):
    blob, header_size = header_container()
    assert header_size == HEADER_SIZE
    bit = index % 8
    expected = expected_header_flip(blob, index, bit)
    tampered = flip(blob, index, bit)
    if how == "decrypt":
        with pytest.raises(ShardsealError) as excinfo:
            shardseal.decrypt(tampered, KEY, threads=1)
    else:
        out = sentinel_buffer(HEADER_PLAINTEXT)
        with pytest.raises(ShardsealError) as excinfo:
            shardseal.decrypt_into(tampered, KEY, out, threads=1)
        assert_no_plaintext(out, HEADER_PLAINTEXT)
    check_expected(excinfo.value, expected)


@pytest.mark.parametrize("suite", [256, 128])
def test_header_every_bit_of_every_byte(backend, suite):
    """All 8 bits of every header byte: never a success, always the error the region implies."""
    blob, header_size = header_container(suite)
    r = header_regions(blob)
    seen = {}
    for index in range(header_size):
        for bit in range(8):
            expected = expected_header_flip(blob, index, bit)
            with pytest.raises(ShardsealError) as excinfo:
                shardseal.decrypt(flip(blob, index, bit), KEY, threads=1)
            check_expected(excinfo.value, expected)
            if FIXED_PREFIX <= index < r["count_at"]:
                seen.setdefault("metadata", set()).add(type(excinfo.value))
    # The metadata sweep hits both outcomes: broken JSON and valid-but-different JSON.
    assert seen["metadata"] == {FormatError, AuthenticationError}


@pytest.mark.parametrize("how", HOWS)
@pytest.mark.parametrize("index", range(MAGIC_END))
def test_magic_byte_flip_is_format_error(backend, index, how):
    blob, _ = header_container()
    for bit in range(8):
        expect_container(FormatError, how, flip(blob, index, bit), HEADER_PLAINTEXT)


@pytest.mark.parametrize("how", HOWS)
@pytest.mark.parametrize("version", [0, 2, 3, 0x81, 255])
def test_other_version_is_format_error(backend, version, how):
    blob = bytearray(header_container()[0])
    blob[VERSION_AT] = version
    expect_container(FormatError, how, bytes(blob), HEADER_PLAINTEXT)


@pytest.mark.parametrize("how", HOWS)
@pytest.mark.parametrize("suite, new_id", [(256, 0), (256, 3), (256, 0x81), (128, 0), (128, 3), (128, 6), (256, 255)])
def test_unknown_suite_id_is_format_error(backend, suite, new_id, how):
    blob = bytearray(header_container(suite)[0])
    blob[SUITE_AT] = new_id
    expect_container(FormatError, how, bytes(blob), HEADER_PLAINTEXT)


@pytest.mark.parametrize("how", HOWS)
@pytest.mark.parametrize("suite, new_id", [(256, 2), (128, 1)])
def test_swapped_known_suite_is_authentication_error(backend, suite, new_id, how):
    """Suite 1 <-> 2: a readable header, but the suite is in the authenticated context."""
    blob = bytearray(header_container(suite)[0])
    blob[SUITE_AT] = new_id
    expect_container(AuthenticationError, how, bytes(blob), HEADER_PLAINTEXT)


@pytest.mark.parametrize("how", HOWS)
def test_metadata_edit_that_stays_canonical_is_authentication_error(backend, how):
    blob, _ = header_container()
    i = blob.index(b'"weights"')
    tampered = blob[: i + 1] + b"W" + blob[i + 2 :]  # "weights" -> "Weights": same length
    assert json.loads(tampered[FIXED_PREFIX : header_regions(tampered)["count_at"]])
    expect_container(AuthenticationError, how, tampered, HEADER_PLAINTEXT)


def with_metadata_bytes(blob: bytes, raw: bytes) -> bytes:
    """The container with its metadata JSON replaced by raw (metadata_len rewritten)."""
    count_at = header_regions(blob)["count_at"]
    return blob[:METALEN_AT] + struct.pack(">I", len(raw)) + raw + blob[count_at:]


NON_CANONICAL = {
    "space after colon": b'{"user": {"epoch":3,"name":"weights","tags":["a","b"]}}',
    "keys out of order": b'{"user":{"name":"weights","epoch":3,"tags":["a","b"]}}',
    "trailing newline": b'{"user":{"epoch":3,"name":"weights","tags":["a","b"]}}\n',
    "escaped ascii": b'{"user":{"epoch":3,"name":"\\u0077eights","tags":["a","b"]}}',
    "exponent form": b'{"user":{"epoch":3E0,"name":"weights","tags":["a","b"]}}',
    "not an object": b'[1,2]',
    "not json": b'{"user":',
    "not utf-8": b'{"user":{"name":"\xff"}}',
    "empty": b'',
}


@pytest.mark.parametrize("how", HOWS)
@pytest.mark.parametrize("name", sorted(NON_CANONICAL))
def test_metadata_made_non_canonical_is_format_error(backend, name, how):
    blob, _ = header_container()
    expect_container(FormatError, how, with_metadata_bytes(blob, NON_CANONICAL[name]), HEADER_PLAINTEXT)


@pytest.mark.parametrize("how", HOWS)
@pytest.mark.parametrize("raw", [b'{"user":{"epoch":4,"name":"weights","tags":["a","b"]}}',
                                 b'{"user":{"epoch":3,"name":"weights","tags":["a"]}}',
                                 b'{}'])
def test_other_canonical_metadata_is_authentication_error(backend, raw, how):
    blob, _ = header_container()
    expect_container(AuthenticationError, how, with_metadata_bytes(blob, raw), HEADER_PLAINTEXT)


@pytest.mark.parametrize("how", HOWS)
@pytest.mark.parametrize("offset", [0, 7, 15])
def test_key_id_flip_is_key_not_found(backend, offset, how):
    blob, header_size = header_container()
    index = header_size - 16 + offset
    tampered = flip(blob, index, 3)
    exc = expect_container(KeyNotFoundError, how, tampered, HEADER_PLAINTEXT)
    assert exc.key_ids == (tampered[header_size - 16 : header_size].hex(),)


@pytest.mark.parametrize("how", HOWS)
def test_key_block_renamed_to_wrong_key_is_authentication_error(backend, how):
    """The key block is not authenticated: naming another key lets that key past the id
    check, and the commitment then refuses it."""
    blob, header_size = header_container()
    other_id = bytes.fromhex(shardseal.inspect(shardseal.encrypt(b"", OTHER_KEY)).stanzas[0].key_id)
    tampered = blob[: header_size - 16] + other_id + blob[header_size:]
    expect_container(AuthenticationError, how, tampered, HEADER_PLAINTEXT, key=OTHER_KEY)


# ---------------------------------------------------------------------------------------------
# Payload bit flips: salt, commitment, chunks and tags of a 3.5-chunk message
# ---------------------------------------------------------------------------------------------

MSG35_PLAINTEXT = payload(3 * CHUNK + CHUNK // 2, seed=2)
MSG35_LEN = MH + 3 * SEALED + CHUNK // 2 + TAG

# Offsets inside the Cobblestone message (relative to its start).
PAYLOAD_POSITIONS = {
    "salt first byte": 0,
    "salt middle": 11,
    "salt last byte": SALT - 1,
    "commitment first byte": SALT,
    "commitment middle": SALT + 16,
    "commitment last byte": MH - 1,
    "chunk 0 first byte": MH,
    "chunk 0 middle": MH + CHUNK // 2,
    "chunk 0 last data byte": MH + CHUNK - 1,
    "chunk 0 tag first byte": MH + CHUNK,
    "chunk 0 tag last byte": MH + SEALED - 1,
    "chunk 1 middle": MH + SEALED + 5000,
    "chunk 1 tag": MH + SEALED + CHUNK + 7,
    "chunk 2 first byte": MH + 2 * SEALED,
    "chunk 2 tag last byte": MH + 3 * SEALED - 1,
    "final chunk first byte": MH + 3 * SEALED,
    "final chunk middle": MH + 3 * SEALED + 4096,
    "final chunk tag first byte": MSG35_LEN - TAG,
    "final chunk tag last byte": MSG35_LEN - 1,
}


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("how", HOWS)
@pytest.mark.parametrize("bit", [0, 7])
@pytest.mark.parametrize("where", sorted(PAYLOAD_POSITIONS))
def test_container_payload_bit_flip(backend, where, bit, how, threads):
    blob = shardseal.encrypt(MSG35_PLAINTEXT, KEY, metadata=METADATA)
    header_size = shardseal.inspect(blob).header_size
    assert len(blob) == header_size + MSG35_LEN
    tampered = flip(blob, header_size + PAYLOAD_POSITIONS[where], bit)
    expect_container(AuthenticationError, how, tampered, MSG35_PLAINTEXT, threads=threads)


@pytest.mark.parametrize("suite", [256, 128])
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("how", HOWS)
@pytest.mark.parametrize("where", sorted(PAYLOAD_POSITIONS))
def test_raw_payload_bit_flip(backend, where, how, threads, suite):
    key = KEY if suite == 256 else KEY[:16]
    message = cobblestone.encrypt(MSG35_PLAINTEXT, key, b"ctx", suite=suite)
    assert len(message) == MSG35_LEN
    tampered = flip(message, PAYLOAD_POSITIONS[where], 4)
    expect_raw(AuthenticationError, how, tampered, MSG35_PLAINTEXT, key=key, context=b"ctx",
               suite=suite, threads=threads)


@pytest.mark.parametrize("how", HOWS)
@pytest.mark.parametrize("where", ["salt", "commitment", "tag"])
def test_empty_plaintext_flip(backend, where, how):
    """The shortest message: salt, commitment and an empty final chunk's tag."""
    index = {"salt": 3, "commitment": SALT + 3, "tag": MH + 3}[where]
    message = cobblestone.encrypt(b"", KEY)
    assert len(message) == MH + TAG
    expect_raw(AuthenticationError, how, flip(message, index, 0), b"")
    blob = shardseal.encrypt(b"", KEY)
    header_size = shardseal.inspect(blob).header_size
    expect_container(AuthenticationError, how, flip(blob, header_size + index, 0), b"")


def test_every_byte_of_a_small_message(backend):
    """One flipped bit anywhere in a one-chunk message (salt to tag) is an AuthenticationError."""
    plaintext = payload(100, seed=3)
    message = cobblestone.encrypt(plaintext, KEY, b"c")
    for index in range(len(message)):
        with pytest.raises(ShardsealError) as excinfo:
            cobblestone.decrypt(flip(message, index, index % 8), KEY, b"c", threads=1)
        assert type(excinfo.value) is AuthenticationError, index


# ---------------------------------------------------------------------------------------------
# Wrong key, wrong context, wrong suite
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("how", HOWS)
@pytest.mark.parametrize("suite", [256, 128])
def test_container_wrong_key_is_key_not_found(backend, suite, how):
    blob = shardseal.encrypt(MSG35_PLAINTEXT, KEY, metadata=METADATA, suite=suite)
    key_id = shardseal.inspect(blob).stanzas[0].key_id
    exc = expect_container(KeyNotFoundError, how, blob, MSG35_PLAINTEXT, key=OTHER_KEY)
    assert key_id in exc.key_ids
    assert exc.key_ids == (key_id,)
    assert len(key_id) == 32


@pytest.mark.parametrize("how", HOWS)
@pytest.mark.parametrize("suite", [256, 128])
def test_raw_wrong_key_is_authentication_error(backend, suite, how):
    key, other = (KEY, OTHER_KEY) if suite == 256 else (KEY[:16], OTHER_KEY[:16])
    message = cobblestone.encrypt(MSG35_PLAINTEXT, key, suite=suite)
    expect_raw(AuthenticationError, how, message, MSG35_PLAINTEXT, key=other, suite=suite)
    # A key differing in a single bit is just as wrong.
    expect_raw(AuthenticationError, how, message, MSG35_PLAINTEXT, key=flip(key, 0, 0), suite=suite)


@pytest.mark.parametrize("how", HOWS)
@pytest.mark.parametrize(
    "sealed_with, opened_with",
    [(b"context", b"contexT"), (b"context", b""), (b"", b"\x00"), (b"context", b"context\x00"),
     (b"context", b"contex")],
)
def test_raw_wrong_context_is_authentication_error(backend, sealed_with, opened_with, how):
    message = cobblestone.encrypt(MSG35_PLAINTEXT, KEY, sealed_with)
    expect_raw(AuthenticationError, how, message, MSG35_PLAINTEXT, context=opened_with)


@pytest.mark.parametrize("how", HOWS)
def test_raw_wrong_suite_is_authentication_error(backend, how):
    message = cobblestone.encrypt(MSG35_PLAINTEXT, KEY[:16], suite=128)
    expect_raw(AuthenticationError, how, message, MSG35_PLAINTEXT, key=KEY[:16] * 2, suite=256)
    message = cobblestone.encrypt(MSG35_PLAINTEXT, KEY, suite=256)
    expect_raw(AuthenticationError, how, message, MSG35_PLAINTEXT, key=KEY[:16], suite=128)


@pytest.mark.parametrize("how", HOWS)
def test_container_payload_is_bound_to_its_header(backend, how):
    """A container's message opened raw, without the header as context, fails to authenticate;
    with the fixed part as context it opens (the context is exactly the fixed part)."""
    blob = shardseal.encrypt(MSG35_PLAINTEXT, KEY, metadata=METADATA)
    header_size = shardseal.inspect(blob).header_size
    fixed_size = header_regions(blob)["count_at"]
    expect_raw(AuthenticationError, how, blob[header_size:], MSG35_PLAINTEXT)
    assert cobblestone.decrypt(blob[header_size:], KEY, blob[:fixed_size]) == MSG35_PLAINTEXT


# ---------------------------------------------------------------------------------------------
# Truncation
# ---------------------------------------------------------------------------------------------

MSG45_PLAINTEXT = payload(4 * CHUNK + 1000, seed=4)
MSG45_LEN = MH + 4 * SEALED + 1000 + TAG


def _container45():
    blob = shardseal.encrypt(MSG45_PLAINTEXT, KEY, metadata=METADATA)
    return blob, shardseal.inspect(blob).header_size


# (message length after the cut, expected error)
TRUNCATIONS = (
    # at every chunk boundary: the final chunk is missing
    [(f"boundary k={k}", MH + k * SEALED, TruncatedError) for k in range(5)]
    # inside chunk data (the rest is >= 16 bytes: a well-formed length, a wrong tag)
    + [(f"inside chunk {k} at +{r}", MH + k * SEALED + r, AuthenticationError)
       for k in range(5) for r in (16, 17, 8000, SEALED - 1)
       if MH + k * SEALED + r < MSG45_LEN]
    # a final chunk shorter than a tag
    + [(f"after chunk {k} +{r}", MH + k * SEALED + r, TruncatedError)
       for k in range(5) for r in (1, 8, 15)]
    # the last byte of the tag, or the whole tag, removed
    + [("last byte of final tag", MSG45_LEN - 1, AuthenticationError),
       ("final tag removed", MSG45_LEN - TAG, AuthenticationError)]
    # inside the salt and commitment
    + [(f"inside salt+commitment at {n}", n, TruncatedError) for n in (0, 1, 23, 24, 40, 55)]
)


@pytest.mark.parametrize("how", HOWS)
@pytest.mark.parametrize("name, length, expected", TRUNCATIONS, ids=[t[0] for t in TRUNCATIONS])
def test_container_truncation(backend, name, length, expected, how):
    blob, header_size = _container45()
    assert len(blob) == header_size + MSG45_LEN
    expect_container(expected, how, blob[: header_size + length], MSG45_PLAINTEXT)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("how", HOWS)
@pytest.mark.parametrize("name, length, expected", TRUNCATIONS, ids=[t[0] for t in TRUNCATIONS])
def test_raw_truncation(backend, name, length, expected, how, threads):
    message = cobblestone.encrypt(MSG45_PLAINTEXT, KEY)
    assert len(message) == MSG45_LEN
    expect_raw(expected, how, message[:length], MSG45_PLAINTEXT, threads=threads)


def test_truncated_sizes_are_refused_without_a_key(backend):
    """decrypted_size and inspect see a missing final chunk from the length alone."""
    blob, header_size = _container45()
    for k in range(5):
        cut = blob[: header_size + MH + k * SEALED]
        with pytest.raises(ShardsealError) as excinfo:
            shardseal.decrypted_size(cut)
        assert type(excinfo.value) is TruncatedError
        with pytest.raises(ShardsealError) as excinfo:
            cobblestone.decrypted_size(MH + k * SEALED + 7)
        assert type(excinfo.value) is TruncatedError


@pytest.mark.parametrize("how", HOWS)
def test_truncation_inside_the_header(backend, how):
    blob, header_size = header_container()
    for length in range(header_size):
        expect_container(TruncatedError, how, blob[:length], HEADER_PLAINTEXT)
    # The whole header but no message at all.
    expect_container(TruncatedError, how, blob[:header_size], HEADER_PLAINTEXT)


@pytest.mark.parametrize("how", HOWS)
@pytest.mark.parametrize("extra", [0, 1, 5, 15, 16, 17, 40])
def test_message_length_that_no_message_has(backend, extra, how):
    """A payload of 56 + n bytes with n < 16 is no message; n >= 16 is a (forged) one."""
    plaintext = payload(extra, seed=5)
    junk = payload(MH + extra, seed=6)
    expected = TruncatedError if extra < TAG else AuthenticationError
    expect_raw(expected, how, junk, plaintext)
    blob, header_size = header_container()
    expect_container(expected, how, blob[:header_size] + junk, plaintext)


# ---------------------------------------------------------------------------------------------
# Appended bytes
# ---------------------------------------------------------------------------------------------

MSG2_PLAINTEXT = payload(2 * CHUNK, seed=7)  # two full chunks + an empty final chunk (tag only)
MSG2_LEN = MH + 2 * SEALED + TAG


def _appendix(message: bytes, what: str) -> bytes:
    if what == "chunk 0 copy":
        return message[chunk_slice(0)]
    if what == "final tag copy":
        return message[-TAG:]
    return bytes(random.Random(what).randbytes(int(what.split()[0])))


# (message, what is appended, the final chunk's size afterwards, expected)
APPENDS = [
    # 3.5 chunks: the final chunk holds 8192 + 16 bytes.
    ("3.5", "1 byte", AuthenticationError),           # final chunk 8209: its tag moved
    ("3.5", "16 bytes", AuthenticationError),         # 8224
    ("3.5", "chunk 0 copy", AuthenticationError),     # old final chunk now read as full chunk 3
    ("3.5", "final tag copy", AuthenticationError),   # 8224
    ("3.5", "8191 bytes", AuthenticationError),       # 16399: still a valid length
    ("3.5", "8192 bytes", TruncatedError),            # 16400: final chunk gone (aligned)
    ("3.5", "8197 bytes", TruncatedError),            # 5 bytes: shorter than a tag
    ("3.5", "8207 bytes", TruncatedError),            # 15 bytes
    ("3.5", "8208 bytes", AuthenticationError),       # 16: an empty final chunk, forged
    # 2 chunks + empty final chunk: the final chunk is just a 16-byte tag.
    ("2.0", "1 byte", AuthenticationError),           # 17
    ("2.0", "16 bytes", AuthenticationError),         # 32
    ("2.0", "final tag copy", AuthenticationError),   # 32
    ("2.0", "chunk 0 copy", AuthenticationError),     # still 16: a forged extra chunk
    ("2.0", "16383 bytes", AuthenticationError),      # 16399
    ("2.0", "16384 bytes", TruncatedError),           # 16400 -> aligned: final chunk missing
    ("2.0", "16385 bytes", TruncatedError),           # 1
    ("2.0", "16399 bytes", TruncatedError),           # 15
]


def _messages():
    return {"3.5": (MSG35_PLAINTEXT, MSG35_LEN), "2.0": (MSG2_PLAINTEXT, MSG2_LEN)}


@pytest.mark.parametrize("how", HOWS)
@pytest.mark.parametrize("kind, what, expected", APPENDS, ids=[f"{a[0]}+{a[1]}" for a in APPENDS])
def test_raw_appended_bytes(backend, kind, what, expected, how):
    plaintext, length = _messages()[kind]
    message = cobblestone.encrypt(plaintext, KEY)
    assert len(message) == length
    expect_raw(expected, how, message + _appendix(message, what), plaintext)


@pytest.mark.parametrize("how", HOWS)
@pytest.mark.parametrize("kind, what, expected", APPENDS, ids=[f"{a[0]}+{a[1]}" for a in APPENDS])
def test_container_appended_bytes(backend, kind, what, expected, how):
    plaintext, length = _messages()[kind]
    blob = shardseal.encrypt(plaintext, KEY, metadata=METADATA)
    header_size = shardseal.inspect(blob).header_size
    message = blob[header_size:]
    assert len(message) == length
    expect_container(expected, how, blob + _appendix(message, what), plaintext)


@pytest.mark.parametrize("how", HOWS)
def test_dropping_the_final_chunk_is_truncation(backend, how):
    """Removing the final chunk (partial, or a bare tag) leaves a chunk-aligned message."""
    m35 = cobblestone.encrypt(MSG35_PLAINTEXT, KEY)
    expect_raw(TruncatedError, how, m35[: MH + 3 * SEALED], MSG35_PLAINTEXT)
    m2 = cobblestone.encrypt(MSG2_PLAINTEXT, KEY)
    expect_raw(TruncatedError, how, m2[:-TAG], MSG2_PLAINTEXT)


# ---------------------------------------------------------------------------------------------
# Reordered, duplicated, dropped and transplanted chunks
# ---------------------------------------------------------------------------------------------


def _swap(message: bytes, i: int, j: int, base: int = 0) -> bytes:
    out = bytearray(message)
    a, b = chunk_slice(i, base), chunk_slice(j, base)
    out[a], out[b] = message[b], message[a]
    return bytes(out)


def _replace(message: bytes, i: int, chunk: bytes, base: int = 0) -> bytes:
    out = bytearray(message)
    out[chunk_slice(i, base)] = chunk
    return bytes(out)


def _rearrangements(message: bytes, other: bytes, base: int = 0) -> dict:
    """Same-key chunk surgery on a 3.5-chunk message (other: a second message, same key and
    context, different salt). All keep a well-formed length."""
    c = lambda m, i: m[chunk_slice(i, base)]  # noqa: E731
    return {
        "swap 0 and 1": _swap(message, 0, 1, base),
        "swap 1 and 2": _swap(message, 1, 2, base),
        "chunk 0 duplicated over chunk 1": _replace(message, 1, c(message, 0), base),
        "chunk 2 duplicated over chunk 0": _replace(message, 0, c(message, 2), base),
        "chunk 1 inserted twice": message[: chunk_slice(2, base).start] + c(message, 1)
        + message[chunk_slice(2, base).start :],
        "chunk 1 dropped": message[: chunk_slice(1, base).start] + message[chunk_slice(1, base).stop :],
        "chunk 0 from another message": _replace(message, 0, c(other, 0), base),
        "chunk 1 from another message": _replace(message, 1, c(other, 1), base),
        "final chunk from another message": message[: chunk_slice(3, base).start]
        + other[chunk_slice(3, base).start :],
        "salt and commitment from another message": message[:base] + other[base : base + MH]
        + message[base + MH :],
        "salt from another message": message[:base] + other[base : base + SALT]
        + message[base + SALT :],
    }


REARRANGEMENTS = sorted(_rearrangements(bytes(MSG35_LEN), bytes(MSG35_LEN)))


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("how", HOWS)
@pytest.mark.parametrize("name", REARRANGEMENTS)
def test_raw_chunk_surgery(backend, name, how, threads):
    message = cobblestone.encrypt(MSG35_PLAINTEXT, KEY, b"ctx")
    other = cobblestone.encrypt(MSG35_PLAINTEXT, KEY, b"ctx")
    assert message[:SALT] != other[:SALT]
    tampered = _rearrangements(message, other)[name]
    assert tampered != message
    expect_raw(AuthenticationError, how, tampered, MSG35_PLAINTEXT, context=b"ctx", threads=threads)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("how", HOWS)
@pytest.mark.parametrize("name", REARRANGEMENTS)
def test_container_chunk_surgery(backend, name, how, threads):
    blob = shardseal.encrypt(MSG35_PLAINTEXT, KEY, metadata=METADATA)
    other = shardseal.encrypt(MSG35_PLAINTEXT, KEY, metadata=METADATA)
    header_size = shardseal.inspect(blob).header_size
    assert blob[:header_size] == other[:header_size]
    tampered = _rearrangements(blob, other, base=header_size)[name]
    assert tampered != blob and tampered[:header_size] == blob[:header_size]
    expect_container(AuthenticationError, how, tampered, MSG35_PLAINTEXT, threads=threads)


@pytest.mark.parametrize("how", HOWS)
def test_message_from_another_container_same_key_other_metadata(backend, how):
    """Header of one container, message of another (same key): the context differs."""
    a = shardseal.encrypt(MSG35_PLAINTEXT, KEY, metadata={"name": "a"})
    b = shardseal.encrypt(MSG35_PLAINTEXT, KEY, metadata={"name": "b"})
    size_a = shardseal.inspect(a).header_size
    size_b = shardseal.inspect(b).header_size
    expect_container(AuthenticationError, how, a[:size_a] + b[size_b:], MSG35_PLAINTEXT)


@pytest.mark.parametrize("how", HOWS)
def test_chunk_from_raw_message_with_same_salt_other_context(backend, how, monkeypatch):
    """Even with an identical salt, a different context gives different chunk keys."""
    salt = bytes(range(SALT))
    monkeypatch.setattr("shardseal.core.cobblestone.os.urandom", lambda n: salt[:n])
    message = cobblestone.encrypt(MSG35_PLAINTEXT, KEY, b"one")
    other = cobblestone.encrypt(MSG35_PLAINTEXT, KEY, b"two")
    assert message[:SALT] == other[:SALT]
    expect_raw(AuthenticationError, how, _replace(message, 1, other[chunk_slice(1)]),
               MSG35_PLAINTEXT, context=b"one")


# ---------------------------------------------------------------------------------------------
# decrypt_into after earlier chunks decrypted fine: the output is wiped
# ---------------------------------------------------------------------------------------------

# 3.5 chunks, and 200.5 chunks so that the native engine splits the work into several tasks
# (it gives a task at least 64 chunks) and threads=2 really runs in parallel.
BIG_PLAINTEXT = payload(200 * CHUNK + 5000, seed=8)


@pytest.mark.parametrize("threads", [1, 2, 4])
@pytest.mark.parametrize("size", ["3.5", "200.5"])
@pytest.mark.parametrize("where", ["last chunk tag", "last chunk data", "first chunk", "middle chunk"])
@pytest.mark.parametrize("api", ["container", "raw"])
def test_decrypt_into_wipes_plaintext_of_good_chunks(backend, api, where, size, threads):
    plaintext = MSG35_PLAINTEXT if size == "3.5" else BIG_PLAINTEXT
    n_full = len(plaintext) // CHUNK
    if api == "container":
        blob = shardseal.encrypt(plaintext, KEY, metadata=METADATA)
        base = shardseal.inspect(blob).header_size
    else:
        blob = cobblestone.encrypt(plaintext, KEY)
        base = 0
    index = base + {
        "last chunk tag": len(blob) - base - 1,
        "last chunk data": MH + n_full * SEALED + 3,
        "first chunk": MH + 10,
        "middle chunk": MH + (n_full // 2) * SEALED + 100,
    }[where]
    tampered = flip(blob, index, 1)
    out = np.full(len(plaintext) + 3 * TAG, SENTINEL, dtype=np.uint8)
    with pytest.raises(ShardsealError) as excinfo:
        if api == "container":
            shardseal.decrypt_into(tampered, KEY, out, threads=threads)
        else:
            cobblestone.decrypt_into(tampered, KEY, out, threads=threads)
    assert type(excinfo.value) is AuthenticationError
    assert_no_plaintext(out, plaintext)
    # The chunks that did authenticate were wiped, not left behind: the plaintext region is
    # all zeros, and nothing past it was touched.
    assert not out[: len(plaintext)].any()
    assert (out[len(plaintext):] == SENTINEL).all()
    # The untampered message does open into the same buffer (the test is not vacuous).
    if api == "container":
        assert shardseal.decrypt_into(blob, KEY, out, threads=threads) == len(plaintext)
    else:
        assert cobblestone.decrypt_into(blob, KEY, out, threads=threads) == len(plaintext)
    assert out[: len(plaintext)].tobytes() == plaintext


@pytest.mark.parametrize("threads", [1, 2])
def test_decrypt_into_bad_commitment_leaves_output_untouched(backend, threads):
    """A bad commitment is found before any chunk is opened: nothing is written."""
    message = cobblestone.encrypt(MSG35_PLAINTEXT, KEY)
    out = sentinel_buffer(MSG35_PLAINTEXT)
    with pytest.raises(ShardsealError) as excinfo:
        cobblestone.decrypt_into(flip(message, SALT + 1, 0), KEY, out, threads=threads)
    assert type(excinfo.value) is AuthenticationError
    assert out == sentinel_buffer(MSG35_PLAINTEXT)


# ---------------------------------------------------------------------------------------------
# Arrays
# ---------------------------------------------------------------------------------------------


def test_decrypt_array_tampering(backend):
    array = np.arange(3 * CHUNK // 8 + 100, dtype=np.float64)
    blob = shardseal.encrypt_array(array, KEY)
    header_size = shardseal.inspect(blob).header_size
    cases = [
        (flip(blob, len(blob) - 1, 0), AuthenticationError),
        (flip(blob, header_size + MH + 5, 0), AuthenticationError),
        (flip(blob, header_size + 2, 0), AuthenticationError),  # salt
        (blob[: header_size + MH + SEALED], TruncatedError),
        (blob[: header_size - 1], TruncatedError),
        (flip(blob, 0, 0), FormatError),
        (flip(blob, header_size - 1, 0), KeyNotFoundError),
    ]
    for tampered, expected in cases:
        with pytest.raises(ShardsealError) as excinfo:
            shardseal.decrypt_array(tampered, KEY, threads=2)
        assert type(excinfo.value) is expected, expected
