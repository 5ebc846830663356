"""Passphrase encryption: round trips, the stanza against an independent scrypt, the three
failure classes (wrong passphrase, corrupted stanza, corrupted payload), Unicode
normalisation, the stand-alone rule, hostile scrypt parameters, and secrecy."""

from __future__ import annotations

import base64
import hashlib
import io
import logging
import pickle
import struct

import numpy as np
import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

import shardseal
from shardseal import audit
from shardseal.keys import passphrase
from shardseal.container import header as _container
from shardseal.keys import stanzas as _stanzas
from shardseal.container.header import Stanza
from shardseal.keys.envelope import WrapContext
from shardseal.errors import (
    AuthenticationError,
    FormatError,
    KeyNotFoundError,
    ShardsealError,
    WrongPassphraseError,
)
from shardseal.passphrase import Passphrase

WF = 10  # the format's minimum work factor: fast tests
SECRET = "correct horse battery staple"
DATA = bytes(range(256)) * 130  # 33,280 bytes: three chunks


def sealed(data=DATA, secret=SECRET, work_factor=WF, **kwargs) -> bytes:
    return shardseal.encrypt(data, recipients=[Passphrase(secret, work_factor=work_factor)], **kwargs)


def the_stanza(blob: bytes) -> Stanza:
    (stanza,) = _container.parse_header(blob).stanzas
    return stanza


def with_stanzas(blob: bytes, stanzas) -> bytes:
    """blob with its key block replaced (the fixed part and payload kept)."""
    header = _container.parse_header(blob)
    return header.fixed + _container.encode_key_block(list(stanzas)) + blob[header.size:]


def flip(blob: bytes, index: int) -> bytes:
    tampered = bytearray(blob)
    tampered[index] ^= 0x01
    return bytes(tampered)


# ---- round trips ----------------------------------------------------------------------------

def test_round_trip_through_every_entry_point(backend, tmp_path):
    key = Passphrase(SECRET, work_factor=WF)
    blob = shardseal.encrypt(DATA, recipients=[key], metadata={"split": "train"})
    assert len(blob) == shardseal.encrypted_size(len(DATA), recipients=[key], metadata={"split": "train"})
    assert shardseal.decrypt(blob, identities=[Passphrase(SECRET)]) == DATA
    assert [(s.type, s.key_id) for s in shardseal.inspect(blob).stanzas] == [("passphrase", "passphrase")]

    array = np.linspace(0, 1, 500, dtype=np.float32).reshape(5, 100)
    assert np.array_equal(shardseal.decrypt_array(shardseal.encrypt_array(array, recipients=[key]),
                                                  identities=[key]), array)

    src, enc, dec = tmp_path / "plain", tmp_path / "enc", tmp_path / "dec"
    src.write_bytes(DATA)
    shardseal.encrypt_file(src, enc, recipients=[key])
    shardseal.decrypt_file(enc, dec, identities=[key])
    assert dec.read_bytes() == DATA

    with shardseal.open(tmp_path / "stream", "wb", recipients=[key]) as writer:
        writer.write(DATA)
    with shardseal.open(tmp_path / "stream", "rb", identities=[key]) as reader:
        reader.seek(30000)
        assert reader.read() == DATA[30000:]


def test_unwrap_uses_the_stanzas_own_parameters(backend):
    blob = sealed(work_factor=11)
    parsed = _stanzas.parse_passphrase(the_stanza(blob).body)
    assert (parsed.log2_n, parsed.r, parsed.p) == (11, 8, 1)
    # The reader's default work factor (18) is not used: this would otherwise be slow and fail.
    assert shardseal.decrypt(blob, identities=[Passphrase(SECRET)]) == DATA


def test_each_file_gets_a_fresh_salt(backend):
    first, second = (_stanzas.parse_passphrase(the_stanza(sealed(b"x")).body) for _ in range(2))
    assert first.salt != second.salt and first.sealed_key != second.sealed_key


def test_the_stanza_matches_an_independent_scrypt():
    """FORMAT.md 2.8 recomputed with hashlib's scrypt (a different binding) and AESGCM."""
    secret, file_key, salt = "pässword".encode(), bytes(range(32)), bytes(range(100, 116))
    body = passphrase._seal(secret, file_key, salt, 10, 8, 1)
    wrap_key = hashlib.scrypt(secret, salt=b"shardseal/v1/passphrase" + salt, n=1024, r=8, p=1, dklen=32)
    head = salt + bytes([10, 8, 1]) + AESGCM(wrap_key).encrypt(bytes(12), file_key, b"")
    checksum = hashlib.sha256(b"shardseal/v1/passphrase-stanza-checksum" + head).digest()[:8]
    assert body == head + checksum
    assert len(body) == Passphrase(SECRET).stanza_size() == 75
    assert passphrase._unseal(secret, body) == file_key


def test_other_scrypt_parameters_open(backend):
    secret, file_key = b"pw", bytes(range(32))
    for log2_n, r, p in ((10, 1, 1), (10, 4, 3), (11, 8, 2)):
        body = passphrase._seal(secret, file_key, bytes(16), log2_n, r, p)
        assert Passphrase(secret).unwrap(body, WrapContext(256, b"")) == file_key


# ---- the three failures ---------------------------------------------------------------------

def test_wrong_passphrase(backend):
    blob = sealed()
    with pytest.raises(WrongPassphraseError, match="wrong passphrase") as caught:
        shardseal.decrypt(blob, identities=[Passphrase(SECRET + "!")])
    assert isinstance(caught.value, KeyNotFoundError)
    assert caught.value.key_ids == ("passphrase",)


def test_a_passphrase_identity_does_not_open_other_files(backend, key):
    blob = shardseal.encrypt(DATA, key)
    with pytest.raises(KeyNotFoundError) as caught:
        shardseal.decrypt(blob, identities=[Passphrase(SECRET)])
    assert not isinstance(caught.value, WrongPassphraseError)


@pytest.mark.parametrize("offset", [0, 15, 16, 17, 18, 19, 40, 66, 67, 74])
def test_a_corrupted_stanza_is_a_format_error(backend, offset):
    blob = sealed()
    start = blob.index(the_stanza(blob).body)
    damaged = flip(blob, start + offset)
    with pytest.raises(FormatError, match="corrupted"):
        shardseal.decrypt(damaged, identities=[Passphrase(SECRET)])
    with pytest.raises(FormatError):
        shardseal.inspect(damaged)


def test_a_forged_stanza_with_a_good_checksum_is_a_wrong_passphrase(backend):
    # The checksum catches accidents, not attackers: a recomputed one passes, and the seal fails.
    blob = sealed()
    body = bytearray(the_stanza(blob).body)
    body[30] ^= 1
    head = bytes(body[:67])
    body[67:] = hashlib.sha256(b"shardseal/v1/passphrase-stanza-checksum" + head).digest()[:8]
    with pytest.raises(WrongPassphraseError):
        shardseal.decrypt(with_stanzas(blob, [Stanza(_stanzas.PASSPHRASE, bytes(body))]),
                          identities=[Passphrase(SECRET)])


@pytest.mark.parametrize("from_end", [1, 100, 20000])
def test_a_corrupted_payload_is_an_authentication_error(backend, from_end):
    blob = sealed()
    with pytest.raises(AuthenticationError) as caught:
        shardseal.decrypt(flip(blob, len(blob) - from_end), identities=[Passphrase(SECRET)])
    assert not isinstance(caught.value, (KeyNotFoundError, FormatError))


def test_the_three_failures_are_told_apart(backend):
    blob = sealed()
    stanza_start = blob.index(the_stanza(blob).body)
    outcomes = {}
    for label, data, secret in [("wrong", blob, "nope"), ("stanza", flip(blob, stanza_start + 20), SECRET),
                                ("payload", flip(blob, len(blob) - 1), SECRET)]:
        with pytest.raises(ShardsealError) as caught:
            shardseal.decrypt(data, identities=[Passphrase(secret)])
        outcomes[label] = type(caught.value)
    assert outcomes == {"wrong": WrongPassphraseError, "stanza": FormatError, "payload": AuthenticationError}


# ---- Unicode ----------------------------------------------------------------------------------

@pytest.mark.parametrize("text", ["café", "Ångström", "한국어 암호", "ﬁ ligature"])
def test_nfc_and_nfd_spellings_are_the_same_passphrase(backend, text):
    import unicodedata

    nfc, nfd = unicodedata.normalize("NFC", text), unicodedata.normalize("NFD", text)
    blob = sealed(secret=nfd)
    assert shardseal.decrypt(blob, identities=[Passphrase(nfc)]) == DATA
    assert shardseal.decrypt(blob, identities=[Passphrase(nfc.encode("utf-8"))]) == DATA
    if nfc != nfd:
        # Bytes are taken as they are: the decomposed bytes are another passphrase.
        with pytest.raises(WrongPassphraseError):
            shardseal.decrypt(blob, identities=[Passphrase(nfd.encode("utf-8"))])


def test_bytes_like_passphrases(backend):
    blob = sealed(secret=b"\x00\xffbinary")
    for form in (bytearray(b"\x00\xffbinary"), memoryview(b"\x00\xffbinary")):
        assert shardseal.decrypt(blob, identities=[Passphrase(form)]) == DATA


# ---- bad arguments ----------------------------------------------------------------------------

@pytest.mark.parametrize("args, kwargs, error, fragment", [
    (("",), {}, ValueError, "empty"),
    ((b"",), {}, ValueError, "empty"),
    (("\ud800",), {}, ValueError, "Unicode"),
    ((None,), {}, TypeError, "str or bytes"),
    ((1234,), {}, TypeError, "str or bytes"),
    (("pw",), {"work_factor": 9}, ValueError, "10 to 22"),
    (("pw",), {"work_factor": 23}, ValueError, "10 to 22"),
    (("pw",), {"work_factor": "18"}, TypeError, "int"),
    (("pw",), {"work_factor": True}, TypeError, "int"),
])
def test_bad_arguments(args, kwargs, error, fragment):
    with pytest.raises(error, match=fragment):
        Passphrase(*args, **kwargs)


def test_seal_checks_its_inputs():
    with pytest.raises(ValueError, match="file key"):
        passphrase._seal(b"pw", bytes(31), bytes(16), 10, 8, 1)
    with pytest.raises(ValueError, match="salt"):
        passphrase._seal(b"pw", bytes(32), bytes(15), 10, 8, 1)
    with pytest.raises(ValueError, match="scrypt"):
        passphrase._seal(b"pw", bytes(32), bytes(16), 23, 8, 1)


# ---- a passphrase stands alone ----------------------------------------------------------------

def test_a_passphrase_beside_other_recipients_is_refused(backend, tmp_path):
    from shardseal.keyring import Keyring

    ring = Keyring.create(tmp_path / "ring")
    ring.add("a")
    for recipients in ([Passphrase(SECRET, work_factor=WF), ring.recipient()],
                       [Passphrase(SECRET, work_factor=WF), Passphrase("other", work_factor=WF)]):
        with pytest.raises(ValueError, match="only recipient"):
            shardseal.encrypt(DATA, recipients=recipients)


def test_a_file_with_a_passphrase_and_another_stanza_is_refused(backend, key):
    blob = sealed()
    direct = _container.parse_header(shardseal.encrypt(b"", key)).stanzas[0]
    for extra in (direct, the_stanza(sealed(secret="other"))):
        mixed = with_stanzas(blob, [the_stanza(blob), extra])
        with pytest.raises(FormatError, match="only key stanza"):
            shardseal.decrypt(mixed, identities=[Passphrase(SECRET)])
        with pytest.raises(FormatError):
            shardseal.decrypt(mixed, key)


def test_padding_beside_a_passphrase_is_fine(backend):
    blob = sealed()
    padded = with_stanzas(blob, [Stanza(_stanzas.PADDING, bytes(40)), the_stanza(blob)])
    assert shardseal.decrypt(padded, identities=[Passphrase(SECRET)]) == DATA


# ---- hostile parameters -----------------------------------------------------------------------

def _body_with(log2_n: int, r: int, p: int) -> bytes:
    """A well-formed stanza (good checksum) claiming the given scrypt parameters."""
    head = bytes(16) + struct.pack(">BBB", log2_n, r, p) + bytes(48)
    return head + hashlib.sha256(b"shardseal/v1/passphrase-stanza-checksum" + head).digest()[:8]


@pytest.mark.parametrize("log2_n, r, p", [(22, 32, 1), (22, 9, 1), (22, 8, 2), (21, 8, 16), (17, 32, 16)])
def test_stanzas_demanding_too_much_scrypt_work_are_refused_before_any(log2_n, r, p):
    # Each is within the format's field bounds but beyond what this library ever writes:
    # refused when the header is parsed (FORMAT.md 2.8), so also by inspect and a direct key.
    body = _body_with(log2_n, r, p)
    with pytest.raises(FormatError, match="more scrypt work"):
        _stanzas.parse_passphrase(body)
    with pytest.raises(FormatError, match="more scrypt work"):
        Passphrase(SECRET).unwrap(body, WrapContext(256, b""))
    forged = with_stanzas(sealed(), [Stanza(_stanzas.PASSPHRASE, body)])
    with pytest.raises(FormatError, match="more scrypt work"):
        shardseal.inspect(forged)
    with pytest.raises(FormatError, match="more scrypt work"):
        shardseal.decrypt(forged, shardseal.generate_key())
    with pytest.raises(FormatError, match="more scrypt work"):
        shardseal.decrypt(forged, identities=[Passphrase(SECRET)])


def test_a_writer_refuses_scrypt_parameters_a_reader_refuses():
    with pytest.raises(ValueError, match="more scrypt work"):
        passphrase._seal(b"pw", bytes(32), bytes(16), 22, 32, 1)


def test_the_largest_writable_stanza_is_within_the_reader_limit():
    passphrase._check_cost(passphrase.MAX_WORK_FACTOR, passphrase.SCRYPT_R, passphrase.SCRYPT_P)


def test_out_of_range_parameters_are_a_format_error(backend):
    blob = sealed()
    forged = with_stanzas(blob, [Stanza(_stanzas.PASSPHRASE, _body_with(23, 8, 1))])
    with pytest.raises(FormatError, match="log2"):
        shardseal.decrypt(forged, identities=[Passphrase(SECRET)])


# ---- secrecy ----------------------------------------------------------------------------------

def secret_forms(secret: bytes) -> list[bytes]:
    return [secret, secret.hex().encode(), base64.b64encode(secret)]


def test_wipe_zeroes_the_passphrase(backend):
    key = Passphrase(SECRET, work_factor=WF)
    held = key._secret
    assert bytes(held) == SECRET.encode()
    blob = shardseal.encrypt(b"x", recipients=[key])
    key.wipe()
    assert held == bytes(len(SECRET)) and "wiped" in repr(key)
    with pytest.raises(ValueError, match="wiped"):
        shardseal.encrypt(b"x", recipients=[key])
    with pytest.raises(ValueError, match="wiped"):
        shardseal.decrypt(blob, identities=[key])
    key.wipe()  # twice is fine
    with Passphrase(SECRET) as scoped:
        held = scoped._secret
    assert held == bytes(len(SECRET))


def test_a_passphrase_never_pickles_or_shows(backend):
    secret = "hunter2 but much longer"
    key = Passphrase(secret, work_factor=WF)
    with pytest.raises(TypeError, match="not picklable"):
        pickle.dumps(key)
    stream = io.StringIO()
    handler = audit.enable(logging.StreamHandler(stream))
    texts = [repr(key), str(key)]
    try:
        blob = shardseal.encrypt(DATA, recipients=[key])
        shardseal.decrypt(blob, identities=[key])
        for bad_blob, identity in [(blob, Passphrase(secret + "x")),
                                   (flip(blob, blob.index(the_stanza(blob).body) + 3), key),
                                   (flip(blob, len(blob) - 1), key)]:
            with pytest.raises(ShardsealError) as caught:
                shardseal.decrypt(bad_blob, identities=[identity])
            texts.append(str(caught.value))
    finally:
        audit.logger.removeHandler(handler)
        audit.logger.setLevel(logging.NOTSET)
    log = stream.getvalue()
    assert '"event": "wrap"' in log and '"event": "unwrap_failed"' in log
    assert '"key_id": "passphrase"' in log
    everything = "\n".join(texts + [log]).encode()
    for form in secret_forms(secret.encode()):
        assert form not in everything
    assert repr(key) == "Passphrase(<hidden>, work_factor=10)"
