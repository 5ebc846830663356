"""Keyrings: KEK states, the file (format, mode 0600, strict parsing), wrapping across the API,
failures (wrong keyring, destroyed KEK, tampered stanza), and secrecy (no pickle, no key in
repr, messages or the audit log)."""

from __future__ import annotations

import base64
import io
import json
import logging
import os
import pickle
import stat
import warnings
from datetime import datetime, timezone

import numpy as np
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

import shardseal
from shardseal import audit
from shardseal.keys import keyring
from shardseal.container import header as _container
from shardseal.keys import stanzas as _stanzas
from shardseal.keys.envelope import WrapContext
from shardseal.errors import AuthenticationError, FormatError, KeyNotFoundError
from shardseal.keyfile import KeyFilePermissionWarning
from shardseal.keyring import KekInfo, Keyring, KeyringFileError, KeyringRecipient

DATA = bytes(range(256)) * 130  # 33,280 bytes: three chunks


@pytest.fixture
def ring_path(tmp_path):
    return tmp_path / "team.keyring"


@pytest.fixture
def ring(ring_path):
    ring = Keyring.create(ring_path)
    yield ring
    ring.wipe()


def file_keys(path) -> dict[str, bytes]:
    """The key bytes a keyring file holds, by name (what a test may read; the API never shows them)."""
    document = json.loads(path.read_text())
    return {e["name"]: base64.b64decode(e["key"]) for e in document["keys"] if "key" in e}


def secret_forms(key: bytes) -> list[bytes]:
    """Ways a key could leak into text or bytes: raw, hex (both cases), base64."""
    return [key, key.hex().encode(), key.hex().upper().encode(), base64.b64encode(key)]


def assert_no_secret(text, keys) -> None:
    blob = text.encode() if isinstance(text, str) else bytes(text)
    for key in keys:
        for form in secret_forms(key):
            assert form not in blob


def expected_kek_id(kek: bytes) -> str:
    return HKDFExpand(hashes.SHA512(), 16, b"shardseal/v1/keyring-kek-id").derive(kek).hex()


# ---- round trips ----------------------------------------------------------------------------

def test_round_trip_through_every_entry_point(backend, ring, ring_path, tmp_path):
    ring.add("2026-q4")
    recipient = ring.recipient()
    reader = Keyring.load(ring_path)
    blob = shardseal.encrypt(DATA, recipients=[recipient], metadata={"shard": 7})
    assert len(blob) == shardseal.encrypted_size(len(DATA), recipients=[recipient], metadata={"shard": 7})
    assert shardseal.decrypt(blob, identities=[reader]) == DATA
    assert [(s.type, s.key_id) for s in shardseal.inspect(blob).stanzas] == [("keyring", recipient.key_id)]

    array = np.arange(600, dtype=np.float64).reshape(20, 30)
    assert np.array_equal(shardseal.decrypt_array(shardseal.encrypt_array(array, recipients=[recipient]),
                                                  identities=[reader]), array)

    src, enc, dec = tmp_path / "plain", tmp_path / "enc", tmp_path / "dec"
    src.write_bytes(DATA)
    shardseal.encrypt_file(src, enc, recipients=[recipient])
    shardseal.decrypt_file(enc, dec, identities=[reader])
    assert dec.read_bytes() == DATA

    with shardseal.open(tmp_path / "stream", "wb", recipients=[recipient]) as writer:
        writer.write(DATA)
    with shardseal.open(tmp_path / "stream", "rb", identities=[reader]) as stream:
        stream.seek(20000)
        assert stream.read(100) == DATA[20000:20100]


def test_kek_id_is_hkdf_expand_of_the_key(backend, ring, ring_path):
    info = ring.add("a")
    kek = file_keys(ring_path)["a"]
    assert info.id == expected_kek_id(kek) == keyring.kek_id(kek).hex()
    assert ring.recipient().key_id == info.id and ring.key_ids == (info.id,)


def test_the_stanza_is_the_kek_id_and_rfc3394_wrap_of_the_file_key(backend, ring, ring_path):
    info = ring.add("a")
    blob = shardseal.encrypt(b"x", recipients=[ring.recipient()])
    header = _container.parse_header(blob)
    (stanza,) = header.stanzas
    assert stanza.type == _stanzas.KEYRING and len(stanza.body) == 56
    assert stanza.body[:16].hex() == info.id
    file_key = keyring.unwrap_key(file_keys(ring_path)["a"], stanza.body[16:])
    # Suite 256: the file key is the Cobblestone input key, the fixed part its context.
    assert backend.open(256, file_key, header.fixed, blob[header.size:], 1) == b"x"


# ---- the file -------------------------------------------------------------------------------

def test_the_file_is_the_documented_json(ring, ring_path):
    ring.add("first")
    ring.add("second")
    ring.set_state("first", "destroyed")
    document = json.loads(ring_path.read_text(encoding="utf-8"))
    assert document["format"] == "shardseal-keyring-1"
    first, second = document["keys"]
    assert set(first) == {"id", "name", "created", "state"} and first["state"] == "destroyed"
    assert set(second) == {"id", "name", "created", "state", "key"} and second["state"] == "active"
    datetime.strptime(second["created"], "%Y-%m-%dT%H:%M:%SZ")
    assert second["id"] == expected_kek_id(base64.b64decode(second["key"]))


def test_reload_keeps_everything(backend, ring, ring_path):
    ring.add("old")
    ring.add("current")
    ring.add("gone")
    ring.set_state("old", "decrypt-only")
    ring.set_state("gone", "destroyed")
    reloaded = Keyring.load(ring_path)
    assert reloaded.keys == ring.keys
    assert [k.state for k in reloaded.keys] == ["decrypt-only", "active", "destroyed"]
    assert all(isinstance(k, KekInfo) and k.created.tzinfo is timezone.utc for k in reloaded.keys)
    assert reloaded.key_ids == ring.key_ids == (ring.keys[0].id, ring.keys[1].id)
    blob = shardseal.encrypt(DATA, recipients=[ring.recipient()])
    assert shardseal.decrypt(blob, identities=[reloaded]) == DATA


def test_file_mode_is_0600_from_creation(ring_path, tmp_path):
    old_umask = os.umask(0)  # even with nothing masked, the file is never wider than 0600
    try:
        ring = Keyring.create(ring_path)
        assert stat.S_IMODE(ring_path.stat().st_mode) == 0o600
        ring.add("a")
        assert stat.S_IMODE(ring_path.stat().st_mode) == 0o600
        ring_path.chmod(0o644)
        ring.add("b")  # the save replaces the file: 0600 again
        assert stat.S_IMODE(ring_path.stat().st_mode) == 0o600
        Keyring.create(ring_path, overwrite=True)
        assert stat.S_IMODE(ring_path.stat().st_mode) == 0o600
    finally:
        os.umask(old_umask)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["team.keyring"]  # no temporary left


def test_create_refuses_an_existing_file_unless_overwrite(ring, ring_path):
    ring.add("a")
    with pytest.raises(FileExistsError):
        Keyring.create(ring_path)
    assert len(Keyring.load(ring_path).keys) == 1
    assert Keyring.create(ring_path, overwrite=True).keys == ()
    assert Keyring.load(ring_path).keys == ()


def test_permission_warning(ring, ring_path):
    ring.add("a")
    ring_path.chmod(0o644)
    with pytest.warns(KeyFilePermissionWarning, match="chmod 600") as caught:
        Keyring.load(ring_path)
    assert caught[0].filename == __file__  # it points at the caller's line
    ring_path.chmod(0o600)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Keyring.load(ring_path)


def test_a_failed_save_changes_nothing(backend, ring, ring_path, monkeypatch):
    ring.add("a")
    blob = shardseal.encrypt(DATA, recipients=[ring.recipient()])
    before = ring_path.read_bytes()

    def fail(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(keyring, "_write_file", fail)
    with pytest.raises(OSError):
        ring.add("b")
    with pytest.raises(OSError):
        ring.set_state("a", "destroyed")
    assert [(k.name, k.state) for k in ring.keys] == [("a", "active")]
    assert shardseal.decrypt(blob, identities=[ring]) == DATA  # the key bytes are still there
    assert ring_path.read_bytes() == before


# ---- malformed files ------------------------------------------------------------------------

KEK = bytes(range(200, 232))
OTHER_KEK = bytes(range(50, 82))


def entry(name="a", kek=KEK, state="active", **overrides) -> dict:
    """One keyring entry as JSON; overrides replace fields (None removes one)."""
    item = {"id": expected_kek_id(kek), "name": name, "created": "2026-11-25T23:30:00Z",
            "state": state, "key": base64.b64encode(kek).decode()}
    if state == "destroyed":
        del item["key"]
    item.update(overrides)
    return {k: v for k, v in item.items() if v is not None}


def document(*entries, **top) -> bytes:
    return json.dumps({"format": "shardseal-keyring-1", "keys": list(entries), **top}).encode()


MALFORMED = [
    ("not-json", b"{not json", "not JSON"),
    ("not-utf8", b"\xff\xfe{}", "not UTF-8"),
    ("not-an-object", b"[]", "format is not"),
    ("unknown-format", json.dumps({"format": "shardseal-keyring-2", "keys": []}).encode(), "format is not"),
    ("extra-top-level-field", document(entry(), comment="x"), "exactly"),
    ("keys-not-a-list", json.dumps({"format": "shardseal-keyring-1", "keys": {}}).encode(), "exactly"),
    ("entry-not-an-object", document("a"), "not a JSON object"),
    ("unknown-entry-field", document(entry(extra=1)), "no others"),
    ("missing-name", document({k: v for k, v in entry().items() if k != "name"}), "the fields"),
    ("repeated-json-field", document(entry())[:-3] + b', "name": "b"}]}', "repeats a field"),
    ("nan", document(entry())[:-3] + b', "extra": NaN}]}', "NaN"),
    ("duplicate-names", document(entry("a"), entry("a", kek=OTHER_KEK)), "two keys are named"),
    ("duplicate-ids", document(entry("a"), entry("b")), "two keys have the id"),
    ("bad-base64", document(entry(key="not*base64!")), "not valid base64"),
    ("base64-without-padding", document(entry(key=base64.b64encode(KEK).decode().rstrip("="))),
     "not valid base64"),
    ("short-key", document(entry(key=base64.b64encode(KEK[:16]).decode())), "16 bytes, not 32"),
    ("id-does-not-match", document(entry(id=expected_kek_id(OTHER_KEK))), "does not match its key"),
    ("uppercase-id", document(entry(id=expected_kek_id(KEK).upper())), "lowercase hex"),
    ("short-id", document(entry(id="abcd")), "lowercase hex"),
    ("unknown-state", document(entry(state="retired")), "unknown state"),
    ("destroyed-with-key", document(entry(state="destroyed", key=base64.b64encode(KEK).decode())),
     "still holds key bytes"),
    ("active-without-key", document(entry(key=None)), "has no key"),
    ("bad-created", document(entry(created="yesterday")), "UTC time"),
    ("impossible-date", document(entry(created="2026-02-30T00:00:00Z")), "not a valid date"),
    ("empty-name", document(entry(name="")), "invalid name"),
    ("name-not-a-string", document(entry(name=7)), "invalid name"),
    ("name-like-an-id", document(entry(name="ab" * 16)), "invalid name"),
    ("too-large", document(entry()) + b" " * (1 << 20), "larger than"),
    ("deeply-nested-list", b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    ("deeply-nested-entry", document(entry())[:-3] + b', "x": ' + b'{"a":' * 50_000 + b"1"
     + b"}" * 50_000 + b"}]}", "nested too deeply"),
]


@pytest.mark.parametrize("data, fragment", [pytest.param(d, f, id=i) for i, d, f in MALFORMED])
def test_malformed_keyring_files(backend, tmp_path, data, fragment):
    path = tmp_path / "bad.keyring"
    path.write_bytes(data)
    path.chmod(0o600)
    with pytest.raises(KeyringFileError, match=fragment) as caught:
        Keyring.load(path)
    assert isinstance(caught.value, ValueError) and str(path) in str(caught.value)
    assert_no_secret(str(caught.value), [KEK, OTHER_KEK, KEK[:16]])


def test_the_test_documents_are_valid_when_untouched(backend, tmp_path):
    path = tmp_path / "good.keyring"
    path.write_bytes(document(entry("a"), entry("b", kek=OTHER_KEK, state="decrypt-only"),
                              entry("c", kek=bytes(32), state="destroyed")))
    path.chmod(0o600)
    ring = Keyring.load(path)
    assert [(k.name, k.state) for k in ring.keys] == [("a", "active"), ("b", "decrypt-only"), ("c", "destroyed")]
    assert ring.keys[0].created == datetime(2026, 11, 25, 23, 30, tzinfo=timezone.utc)


def test_unreadable_paths(tmp_path):
    with pytest.raises(FileNotFoundError):
        Keyring.load(tmp_path / "missing")
    with pytest.raises(IsADirectoryError):
        Keyring.load(tmp_path)


# ---- states ---------------------------------------------------------------------------------

def test_newest_active_key_is_the_default_recipient(backend, tmp_path):
    path = tmp_path / "ring"
    # "b" is listed first but created later: creation time decides, then file order.
    path.write_bytes(document(entry("b", kek=OTHER_KEK, created="2026-11-26T00:00:00Z"), entry("a"),
                              entry("c", kek=bytes(32), state="decrypt-only", created="2027-01-01T00:00:00Z")))
    path.chmod(0o600)
    ring = Keyring.load(path)
    assert ring.recipient().name == "b"
    ring.set_state("b", "decrypt-only")
    assert ring.recipient().name == "a"
    added = ring.add("d")
    assert ring.recipient().key_id == added.id


def test_keys_added_in_the_same_second_the_last_is_newest(ring):
    for name in ("k1", "k2", "k3"):
        ring.add(name)
    assert ring.recipient().name == "k3"
    assert ring.recipient("k1").name == "k1"


def test_lookup_by_name_or_id(backend, ring):
    info = ring.add("prod")
    assert ring.recipient(info.id).key_id == info.id
    assert ring.recipient(info.id.upper()).key_id == info.id
    assert ring.set_state(info.id, "decrypt-only").state == "decrypt-only"
    assert ring.set_state("prod", "decrypt-only").state == "decrypt-only"  # unchanged: no error


def test_decrypt_only_unwraps_but_never_wraps(backend, ring, ring_path):
    ring.add("a")
    recipient = ring.recipient("a")
    blob = shardseal.encrypt(DATA, recipients=[recipient])
    info = ring.set_state("a", "decrypt-only")
    assert info.state == "decrypt-only" and ring.key_ids == (info.id,)
    assert shardseal.decrypt(blob, identities=[Keyring.load(ring_path)]) == DATA
    with pytest.raises(ValueError, match="decrypt-only: only active keys wrap"):
        ring.recipient("a")
    with pytest.raises(ValueError, match="no active key"):
        ring.recipient()
    with pytest.raises(ValueError, match="only active keys wrap"):
        shardseal.encrypt(b"x", recipients=[recipient])  # an older recipient object stops too
    ring.set_state("a", "active")  # a retiring key may come back
    assert shardseal.decrypt(shardseal.encrypt(b"x", recipients=[recipient]), identities=[ring]) == b"x"


def test_destroyed_key_cannot_unwrap_and_is_named(backend, ring, ring_path):
    info = ring.add("doomed")
    ring.add("kept")
    blob = shardseal.encrypt(DATA, recipients=[ring.recipient("doomed")])
    old_text = ring_path.read_text()
    doomed_key = file_keys(ring_path)["doomed"]
    assert ring.set_state("doomed", "destroyed").state == "destroyed"
    for identity in (ring, Keyring.load(ring_path)):
        with pytest.raises(KeyNotFoundError, match=info.id) as caught:
            shardseal.decrypt(blob, identities=[identity])
        assert caught.value.key_ids == (info.id,)
        assert identity.key_ids == (ring.keys[1].id,)
    text = ring_path.read_text()
    assert base64.b64encode(doomed_key).decode() in old_text
    assert_no_secret(text, [doomed_key])  # the bytes are gone from the file for good
    assert "doomed" in text and info.id in text
    with pytest.raises(ValueError, match="destroyed"):
        ring.set_state("doomed", "active")
    with pytest.raises(ValueError, match="destroyed: only active keys wrap"):
        ring.recipient("doomed")


def test_destroy_and_wipe_zero_the_key_bytes_in_memory(ring):
    ring.add("a")
    ring.add("b")
    a_bytes, b_bytes = (entry.key for entry in ring._entries)
    ring.set_state("a", "destroyed")
    assert a_bytes == bytes(32) and b_bytes != bytes(32)
    recipient = ring.recipient("b")
    ring.wipe()
    assert b_bytes == bytes(32) and ring.key_ids == ()
    for attempt in (ring.recipient, ring.save, lambda: ring.add("c"), lambda: ring.set_state("b", "decrypt-only")):
        with pytest.raises(ValueError, match="wiped"):
            attempt()
    with pytest.raises(ValueError, match="wiped"):
        shardseal.encrypt(b"x", recipients=[recipient])
    assert [k.name for k in ring.keys] == ["a", "b"]  # public facts stay


def test_with_block_wipes_and_recipient_wipe_detaches(ring, ring_path):
    ring.add("a")
    with Keyring.load(ring_path) as loaded:
        recipient = loaded.recipient()
        key_bytes = loaded._entries[0].key
    assert key_bytes == bytes(32)
    own = ring.recipient()
    own.wipe()
    with pytest.raises(ValueError, match="wiped"):
        shardseal.encrypt(b"x", recipients=[own])
    with pytest.raises(ValueError, match="wiped"):
        shardseal.encrypt(b"x", recipients=[recipient])
    assert shardseal.decrypt(shardseal.encrypt(b"x", recipients=[ring.recipient()]), identities=[ring]) == b"x"


@pytest.mark.parametrize("call, error, fragment", [
    (lambda r: r.add(""), ValueError, "1 to 128"),
    (lambda r: r.add(" padded "), ValueError, "spaces"),
    (lambda r: r.add("tab\there"), ValueError, "printable"),
    (lambda r: r.add("x" * 129), ValueError, "1 to 128"),
    (lambda r: r.add("0123456789abcdef0123456789abcdef"), ValueError, "look like a key id"),
    (lambda r: r.add(b"bytes"), TypeError, "str"),
    (lambda r: r.add("a"), ValueError, "already has a key named"),
    (lambda r: r.set_state("a", "retired"), ValueError, "state must be one of"),
    (lambda r: r.set_state("nobody", "active"), ValueError, "no key named"),
    (lambda r: r.recipient("nobody"), ValueError, "no key named"),
    (lambda r: r.recipient(3), TypeError, "str"),
])
def test_bad_arguments(ring, call, error, fragment):
    ring.add("a")
    with pytest.raises(error, match=fragment):
        call(ring)


def test_an_empty_keyring_has_no_recipient(ring):
    with pytest.raises(ValueError, match="no active key"):
        ring.recipient()


def test_non_ascii_names_survive_the_file(ring, ring_path):
    ring.add("clé de l'équipe")
    assert Keyring.load(ring_path).keys[0].name == "clé de l'équipe"


# ---- several keyrings, the wrong keyring, tampering -----------------------------------------

def test_a_file_for_three_keyrings_opens_with_each_alone(backend, tmp_path):
    rings = []
    for n in range(3):
        ring = Keyring.create(tmp_path / f"ring{n}")
        ring.add(f"team{n}")
        rings.append(ring)
    blob = shardseal.encrypt(DATA, recipients=[r.recipient() for r in rings])
    assert [s.type for s in shardseal.inspect(blob).stanzas] == ["keyring"] * 3
    for n, ring in enumerate(rings):
        assert shardseal.decrypt(blob, identities=[Keyring.load(tmp_path / f"ring{n}")]) == DATA
    stranger = Keyring.create(tmp_path / "stranger")
    stranger.add("other")
    with pytest.raises(KeyNotFoundError) as caught:
        shardseal.decrypt(blob, identities=[stranger])
    assert caught.value.key_ids == tuple(r.keys[0].id for r in rings)


def test_wrong_keyring_names_the_needed_key(backend, ring, tmp_path):
    needed = ring.add("a")
    blob = shardseal.encrypt(DATA, recipients=[ring.recipient()])
    other = Keyring.create(tmp_path / "other")
    other.add("a")  # the same name is not the same key
    with pytest.raises(KeyNotFoundError, match=f"keyring key {needed.id}") as caught:
        shardseal.decrypt(blob, identities=[other])
    assert caught.value.key_ids == (needed.id,)


def _flip(blob: bytes, body: bytes, offset_in_body: int) -> bytes:
    start = blob.index(body)
    tampered = bytearray(blob)
    tampered[start + offset_in_body] ^= 0x01
    return bytes(tampered)


@pytest.mark.parametrize("offset", [16, 16 + 7, 16 + 8, 16 + 39])
def test_a_tampered_wrapped_key_fails_authentication(backend, ring, offset):
    ring.add("a")
    blob = shardseal.encrypt(DATA, recipients=[ring.recipient()])
    (stanza,) = _container.parse_header(blob).stanzas
    with pytest.raises(AuthenticationError):
        shardseal.decrypt(_flip(blob, stanza.body, offset), identities=[ring])


def test_a_tampered_kek_id_names_a_key_nobody_has(backend, ring):
    ring.add("a")
    blob = shardseal.encrypt(DATA, recipients=[ring.recipient()])
    (stanza,) = _container.parse_header(blob).stanzas
    with pytest.raises(KeyNotFoundError):
        shardseal.decrypt(_flip(blob, stanza.body, 0), identities=[ring])


def test_unwrap_refuses_a_malformed_body(ring):
    ring.add("a")
    context = WrapContext(256, b"")
    with pytest.raises(FormatError):
        ring.unwrap(bytes(55), context)
    assert ring.unwrap(bytes(56), context) is None  # addressed to no key here


# ---- secrecy --------------------------------------------------------------------------------

@pytest.fixture
def audit_log():
    stream = io.StringIO()
    handler = audit.enable(logging.StreamHandler(stream))
    try:
        yield stream
    finally:
        audit.logger.removeHandler(handler)
        audit.logger.setLevel(logging.NOTSET)


def test_keys_never_pickle_or_show(backend, ring, ring_path, tmp_path, audit_log):
    ring.add("a")
    ring.add("b")
    recipient = ring.recipient("a")
    for obj in (ring, recipient):
        with pytest.raises(TypeError, match="not picklable"):
            pickle.dumps(obj)
    keys = list(file_keys(ring_path).values())
    texts = [repr(ring), str(ring), repr(recipient), str(recipient), repr(ring.keys), repr(ring._entries)]
    assert ring.keys[0].id in repr(ring) and "'a'" in repr(ring) and str(ring_path) in repr(ring)
    assert isinstance(recipient, KeyringRecipient) and recipient.key_id in repr(recipient)

    blob = shardseal.encrypt(DATA, recipients=[recipient, ring.recipient("b")])
    shardseal.decrypt(blob, identities=[ring])
    (first, second) = _container.parse_header(blob).stanzas
    with pytest.raises(AuthenticationError) as caught:
        shardseal.decrypt(_flip(_flip(blob, first.body, 30), second.body, 30), identities=[ring])
    texts.append(str(caught.value))
    ring.set_state("a", "destroyed")
    ring.set_state("b", "destroyed")
    with pytest.raises(KeyNotFoundError) as caught:
        shardseal.decrypt(blob, identities=[ring])
    texts.append(str(caught.value))
    log = audit_log.getvalue()
    assert '"event": "wrap"' in log and '"event": "unwrap_failed"' in log and '"event": "key_not_found"' in log
    assert_no_secret("\n".join(texts + [log]), keys)


# ---- the key-wrap helpers (Wycheproof covers the edge cases) ---------------------------------

def test_rfc3394_section_4_6_vector():
    kek = bytes(range(32))
    key = bytes.fromhex("00112233445566778899AABBCCDDEEFF000102030405060708090A0B0C0D0E0F")
    wrapped = bytes.fromhex("28C9F404C4B810F4CBCCB35CFB87F8263F5786E2D80ED326CBC7F0E71A99F43BFB988B9B7A02DD21")
    assert keyring.wrap_key(kek, key) == wrapped
    assert keyring.unwrap_key(bytearray(kek), memoryview(wrapped)) == key


def test_rfc5649_section_6_vectors():
    kek = bytes.fromhex("5840df6e29b02af1ab493b705bf16ea1ae8338f4dcc176a8")
    key20 = bytes.fromhex("c37b7e6492584340bed12207808941155068f738")
    wrapped20 = bytes.fromhex("138bdeaa9b8fa7fc61f97742e72248ee5ae6ae5360d1ae6a5f54f373fa543b6a")
    assert keyring.wrap_key_with_padding(kek, key20) == wrapped20
    assert keyring.unwrap_key_with_padding(kek, wrapped20) == key20
    assert keyring.wrap_key_with_padding(kek, bytes.fromhex("466f7250617369")) == bytes.fromhex(
        "afbeb0f07dfbf5419200f2ccb50bb24f")


@pytest.mark.parametrize("call, error", [
    (lambda: keyring.wrap_key("k" * 32, bytes(32)), TypeError),
    (lambda: keyring.wrap_key(bytes(32), 5), TypeError),
    (lambda: keyring.wrap_key(bytes(20), bytes(32)), ValueError),
    (lambda: keyring.wrap_key(bytes(32), bytes(8)), ValueError),
    (lambda: keyring.wrap_key(bytes(32), bytes(20)), ValueError),
    (lambda: keyring.unwrap_key(bytes(32), bytes(16)), ValueError),
    (lambda: keyring.unwrap_key(bytes(32), bytes(41)), ValueError),
    (lambda: keyring.unwrap_key(bytes(32), bytes(40)), AuthenticationError),
    (lambda: keyring.wrap_key_with_padding(bytes(32), b""), ValueError),
    (lambda: keyring.unwrap_key_with_padding(bytes(32), bytes(8)), ValueError),
    (lambda: keyring.unwrap_key_with_padding(bytes(32), bytes(16)), AuthenticationError),
    (lambda: keyring.kek_id(bytes(16)), ValueError),
])
def test_key_wrap_helper_errors(call, error):
    with pytest.raises(error):
        call()


# ---- several processes changing one keyring ---------------------------------------------------

def test_two_keyring_objects_keep_each_others_changes(tmp_path):
    path = tmp_path / "shared.json"
    keyring.Keyring.create(path)
    first, second = keyring.Keyring.load(path), keyring.Keyring.load(path)
    first.add("from-first")
    second.add("from-second")  # loaded before first's add: must not drop it
    assert [k.name for k in keyring.Keyring.load(path).keys] == ["from-first", "from-second"]
    recipient = first.recipient("from-first")
    second.set_state("from-first", keyring.DESTROYED)
    first.add("later")  # first learns that from-first was destroyed elsewhere
    states = {k.name: k.state for k in first.keys}
    assert states == {"from-first": "destroyed", "from-second": "active", "later": "active"}
    with pytest.raises(ValueError):
        recipient.wrap(bytes(32), None)


def _add_keys(path: str, prefix: str, count: int) -> None:
    ring = keyring.Keyring.load(path)
    for i in range(count):
        ring.add(f"{prefix}-{i}")


def test_concurrent_processes_lose_no_key(tmp_path):
    import multiprocessing

    path = tmp_path / "busy.json"
    keyring.Keyring.create(path)
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_add_keys, args=(str(path), f"p{n}", 10)) for n in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
        assert worker.exitcode == 0
    names = sorted(k.name for k in keyring.Keyring.load(path).keys)
    assert names == sorted(f"p{n}-{i}" for n in range(4) for i in range(10))
