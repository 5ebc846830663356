"""Envelope encryption's core: recipients=/identities= across the API, the stanza registry's
checks, identity order and failures, KeyNotFoundError, and the audit log.

The recipient types themselves have their own test files; here a minimal AES-key-wrap
recipient (the keyring stanza's layout) exercises the machinery."""

from __future__ import annotations

import io
import json
import logging
import os
import pickle
import struct

import numpy as np
import pytest
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap, aes_key_wrap

import shardseal
from shardseal import audit
from shardseal.container import header as _container
from shardseal.keys import envelope as _envelope, stanzas as _stanzas
from shardseal.errors import AuthenticationError, FormatError, KeyNotFoundError


class WrapKey(_envelope.Recipient, _envelope.Identity):
    """A KEK with a 16-byte id, as the keyring stanza carries (the test's stand-in)."""

    stanza_type = _stanzas.KEYRING

    def __init__(self, kek: bytes | None = None) -> None:
        self.kek = kek or os.urandom(32)
        self.id = os.urandom(16)
        self.unwraps = 0

    @property
    def key_id(self) -> str:
        return self.id.hex()

    @property
    def key_ids(self) -> tuple[str, ...]:
        return (self.id.hex(),)

    def wrap(self, file_key, context):
        return _stanzas.keyring_body(self.id, aes_key_wrap(self.kek, file_key))

    def unwrap(self, body, context):
        kek_id, wrapped = _stanzas.parse_keyring(body)
        if kek_id != self.id:
            return None
        self.unwraps += 1
        try:
            return aes_key_unwrap(self.kek, wrapped)
        except InvalidUnwrap:
            raise AuthenticationError() from None

    def stanza_size(self):
        return 56


DATA = bytes(range(256)) * 300  # 76,800 bytes: several chunks


def stanza_types(blob) -> list[str]:
    return [s.type_name for s in _container.parse_header(blob).stanzas]


def test_each_of_three_recipients_opens_the_file_alone(backend):
    a, b, c = WrapKey(), WrapKey(), WrapKey()
    blob = shardseal.encrypt(DATA, recipients=[a, b, c])
    assert stanza_types(blob) == ["keyring"] * 3
    for identity in (a, b, c):
        assert shardseal.decrypt(blob, identities=[identity]) == DATA


def test_every_entry_point_takes_recipients_and_identities(backend, tmp_path):
    kek = WrapKey()
    array = np.arange(1000, dtype=np.float32).reshape(10, 100)
    assert np.array_equal(shardseal.decrypt_array(shardseal.encrypt_array(array, recipients=[kek]),
                                                  identities=[kek]), array)
    size = shardseal.encrypted_size(len(DATA), recipients=[kek], metadata={"a": 1})
    out = bytearray(size)
    assert shardseal.encrypt_into(DATA, out=out, recipients=[kek], metadata={"a": 1}) == size
    plain = bytearray(len(DATA))
    assert shardseal.decrypt_into(out, out=plain, identities=[kek]) == len(DATA)
    assert plain == DATA
    src, enc, dec = tmp_path / "plain", tmp_path / "enc", tmp_path / "dec"
    src.write_bytes(DATA)
    shardseal.encrypt_file(src, enc, recipients=[kek])
    shardseal.decrypt_file(enc, dec, identities=[kek])
    assert dec.read_bytes() == DATA
    with shardseal.open(tmp_path / "stream", "wb", recipients=[kek]) as writer:
        writer.write(DATA)
    with shardseal.open(tmp_path / "stream", "rb", identities=[kek]) as reader:
        reader.seek(1000)
        assert reader.read(5000) == DATA[1000:6000]


def test_encrypted_size_matches_for_recipients(backend):
    keks = [WrapKey() for _ in range(3)]
    for n in (0, 1, 16384, 40000):
        assert shardseal.encrypted_size(n, recipients=keks) == len(shardseal.encrypt(bytes(n), recipients=keks))


def test_envelope_files_use_a_fresh_file_key_each_time(backend):
    kek = WrapKey()
    first = _container.parse_header(shardseal.encrypt(b"x", recipients=[kek]))
    second = _container.parse_header(shardseal.encrypt(b"x", recipients=[kek]))
    assert first.stanzas[0].body != second.stanzas[0].body


@pytest.mark.parametrize("kwargs, error", [
    ({}, TypeError),
    ({"key": bytes(32), "recipients": [WrapKey()]}, TypeError),
    ({"recipients": []}, ValueError),
    ({"recipients": [object()]}, TypeError),
    ({"recipients": 5}, TypeError),
    ({"recipients": ["not a recipient string"]}, ValueError),
])
def test_bad_key_arguments(kwargs, error):
    with pytest.raises(error):
        shardseal.encrypt(b"data", **kwargs)


def test_a_passphrase_recipient_cannot_share_a_file():
    class FakePassphrase(WrapKey):
        stanza_type = _stanzas.PASSPHRASE

    with pytest.raises(ValueError, match="only recipient"):
        shardseal.encrypt(b"x", recipients=[FakePassphrase(), WrapKey()])


def test_decrypt_needs_a_key_or_identities():
    blob = shardseal.encrypt(b"x", recipients=[WrapKey()])
    with pytest.raises(TypeError, match="key= or identities="):
        shardseal.decrypt(blob)
    with pytest.raises(TypeError):
        shardseal.decrypt(blob, identities=[b"raw bytes are not an identity"])


def test_identities_are_tried_in_the_given_order(backend):
    a, b = WrapKey(), WrapKey()
    blob = shardseal.encrypt(DATA, recipients=[a, b])
    assert shardseal.decrypt(blob, identities=[b, a]) == DATA
    assert (b.unwraps, a.unwraps) == (1, 0)


def test_a_failing_stanza_falls_through_to_another_identity(backend):
    good, broken = WrapKey(), WrapKey()
    blob = bytearray(shardseal.encrypt(DATA, recipients=[broken, good]))
    header = _container.parse_header(blob)
    first_body_at = len(header.fixed) + 2 + 6
    blob[first_body_at + 20] ^= 1  # inside broken's wrapped key
    assert shardseal.decrypt(bytes(blob), identities=[broken, good]) == DATA
    with pytest.raises(AuthenticationError):
        shardseal.decrypt(bytes(blob), identities=[broken])


def test_key_not_found_names_the_keys_the_file_needs(backend):
    a, b, stranger = WrapKey(), WrapKey(), WrapKey()
    blob = shardseal.encrypt(DATA, recipients=[a, b])
    with pytest.raises(KeyNotFoundError) as excinfo:
        shardseal.decrypt(blob, identities=[stranger])
    assert excinfo.value.key_ids == (a.key_id, b.key_id)
    assert f"keyring key {a.key_id}" in str(excinfo.value)
    with pytest.raises(KeyNotFoundError) as excinfo:
        shardseal.decrypt(blob, key=shardseal.generate_key())
    assert "the key does not open this container" in str(excinfo.value)


def test_a_direct_key_and_identities_together(backend):
    key = shardseal.generate_key()
    blob = shardseal.encrypt(DATA, key)
    assert shardseal.decrypt(blob, key, identities=[WrapKey()]) == DATA


def test_a_wrong_file_key_fails_the_commitment(backend):
    """A stanza that unwraps to another key (a forged block) is caught before any chunk."""
    kek = WrapKey()
    blob = shardseal.encrypt(DATA, recipients=[kek])
    header = _container.parse_header(blob)
    forged = _envelope.wrap_for([kek], os.urandom(32), _envelope.WrapContext(256, header.fixed))
    tampered = header.fixed + _container.encode_key_block(forged) + blob[header.size:]
    with pytest.raises(AuthenticationError):
        shardseal.decrypt(tampered, identities=[kek])


# ---- the reader's stanza checks -----------------------------------------------------------

def _container_with(stanzas: list[tuple[int, bytes]]) -> bytes:
    key = shardseal.generate_key()
    blob = shardseal.encrypt(b"payload", key)
    header = _container.parse_header(blob)
    block = struct.pack(">H", len(stanzas) + 1) + b"".join(
        struct.pack(">HI", t, len(body)) + body for t, body in stanzas)
    block += struct.pack(">HI", 1, 16) + header.stanzas[0].body
    return header.fixed + block + blob[header.size:], key


@pytest.mark.parametrize("stanza, message", [
    ((_stanzas.KEYRING, bytes(55)), "56-byte body"),
    ((_stanzas.X25519, bytes(97)), "96-byte body"),
    ((_stanzas.PASSPHRASE, bytes(75)), "corrupted"),
    ((_stanzas.PKCS11, b""), "empty body"),
    ((_stanzas.KMS, b"\x03abc\x00\x00"), "key reference length"),
    ((_stanzas.KMS, b"\x03abc\x00\x01k"), "wrapped key"),
    ((_stanzas.PADDING, bytes(_stanzas.MAX_PADDING_SIZE + 1)), "padding"),
])
def test_malformed_known_stanzas_are_format_errors(stanza, message):
    blob, key = _container_with([stanza])
    with pytest.raises(FormatError, match=message):
        shardseal.inspect(blob)
    with pytest.raises(FormatError):
        shardseal.decrypt(blob, key)


def test_padding_and_unknown_stanzas_are_skipped(backend):
    blob, key = _container_with([(_stanzas.PADDING, bytes(100)), (0x0042, b"future")])
    assert shardseal.decrypt(blob, key) == b"payload"
    assert [s.type for s in shardseal.inspect(blob).stanzas] == ["padding", "unknown-0x0042", "direct"]


def test_a_passphrase_stanza_beside_another_is_refused():
    body = _stanzas.passphrase_body(bytes(16), 10, 8, 1, bytes(48))
    blob, key = _container_with([(_stanzas.PASSPHRASE, body)])
    with pytest.raises(FormatError, match="only key stanza"):
        shardseal.decrypt(blob, key)


def test_reference_bodies_round_trip_and_name_their_key():
    body = _stanzas.reference_body("aws-kms", "arn:aws:kms:eu-west-1:1:key/abc", b"\x01" * 100)
    parsed = _stanzas.parse_reference(body, "kms")
    assert (parsed.provider, parsed.key_ref, parsed.wrapped_key) == (
        "aws-kms", "arn:aws:kms:eu-west-1:1:key/abc", b"\x01" * 100)
    assert _stanzas.key_id(_container.Stanza(_stanzas.KMS, body)) == "aws-kms:arn:aws:kms:eu-west-1:1:key/abc"
    with pytest.raises(ValueError):
        _stanzas.reference_body("", "k", b"w")


# ---- secrets ------------------------------------------------------------------------------

def test_recipients_and_identities_do_not_pickle():
    key = shardseal.generate_key()
    direct = _envelope.DirectKey(key)
    for obj in (direct, WrapKey()):
        with pytest.raises(TypeError, match="not picklable"):
            pickle.dumps(obj)
    assert key.hex() not in repr(direct) and _envelope.DirectKey(key).key_ids[0] in repr(direct)


# ---- the audit log --------------------------------------------------------------------------

@pytest.fixture
def audit_events():
    stream = io.StringIO()
    handler = audit.enable(logging.StreamHandler(stream))
    try:
        yield lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    finally:
        audit.logger.removeHandler(handler)
        audit.logger.setLevel(logging.NOTSET)


def test_audit_log_records_key_use_and_failures(backend, audit_events, tmp_path):
    a, stranger = WrapKey(), WrapKey()
    blob = shardseal.encrypt(DATA, recipients=[a])
    shardseal.decrypt(blob, identities=[a])
    with pytest.raises(KeyNotFoundError):
        shardseal.decrypt(blob, identities=[stranger])
    tampered = bytearray(blob)
    tampered[-1] ^= 1
    with pytest.raises(AuthenticationError):
        shardseal.decrypt(bytes(tampered), identities=[a])
    events = audit_events()
    assert [e["event"] for e in events] == ["wrap", "unwrap", "key_not_found", "unwrap",
                                            "authentication_failed"]
    assert events[0]["key_id"] == a.key_id and events[0]["stanza"] == "keyring"
    assert events[2]["needed"] == [a.key_id] and events[2]["level"] == "WARNING"
    assert all({"time", "pid", "logger"} <= set(e) for e in events)
    text = json.dumps(events)
    assert a.kek.hex() not in text


def test_audit_log_names_the_file(backend, audit_events, tmp_path):
    kek = WrapKey()
    (tmp_path / "plain").write_bytes(DATA)
    shardseal.encrypt_file(tmp_path / "plain", tmp_path / "enc", recipients=[kek])
    data = bytearray((tmp_path / "enc").read_bytes())
    data[-20] ^= 1
    (tmp_path / "bad").write_bytes(bytes(data))
    with pytest.raises(AuthenticationError):
        shardseal.decrypt_file(tmp_path / "bad", tmp_path / "out", identities=[kek])
    events = audit_events()
    assert events[0]["event"] == "wrap" and events[0]["file"] == str(tmp_path / "enc")
    assert events[-1]["event"] == "authentication_failed"
    assert events[-1]["file"] == str(tmp_path / "bad")


def test_audit_enable_to_a_file_and_silence_by_default(tmp_path, capsys):
    shardseal.encrypt(b"x", recipients=[WrapKey()])  # no handler: nothing printed
    assert capsys.readouterr().err == ""
    handler = audit.enable(tmp_path / "audit.jsonl")
    try:
        shardseal.encrypt(b"x", recipients=[WrapKey()])
    finally:
        audit.logger.removeHandler(handler)
        handler.close()
        audit.logger.setLevel(logging.NOTSET)
    (line,) = (tmp_path / "audit.jsonl").read_text().splitlines()
    assert json.loads(line)["event"] == "wrap"


def test_torch_and_safetensors_take_recipients_and_identities(backend, tmp_path):
    torch = pytest.importorskip("torch")
    from shardseal import safetensors as sst
    from shardseal import torch as sstorch

    kek = WrapKey()
    tensor = torch.arange(5000, dtype=torch.float32).reshape(50, 100)
    blob = sstorch.encrypt_tensor(tensor, recipients=[kek])
    assert torch.equal(sstorch.decrypt_tensor(blob, identities=[kek]), tensor)
    sstorch.save({"w": tensor}, tmp_path / "model.pt.sseal", recipients=[kek])
    assert torch.equal(sstorch.load(tmp_path / "model.pt.sseal", identities=[kek])["w"], tensor)
    sst.save_file({"w": tensor}, tmp_path / "model.safetensors.sseal", recipients=[kek])
    assert torch.equal(sst.load_file(tmp_path / "model.safetensors.sseal", identities=[kek])["w"], tensor)
    with sst.safe_open(tmp_path / "model.safetensors.sseal", identities=[kek]) as f:
        assert torch.equal(f.get_tensor("w"), tensor)
