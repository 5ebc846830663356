"""X25519 recipients (shardseal.x25519): round trips through every API on both backends, the
stanza against its specification, tampering, low-order keys, string forms and their parse
errors, identity files, and secrets kept out of pickles, reprs, errors and the audit log."""

from __future__ import annotations

import base64
import copy
import hashlib
import logging
import os
import pickle
import stat
import warnings

import numpy as np
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

import shardseal
from shardseal import AuthenticationError, FormatError, KeyNotFoundError, audit
from shardseal.keys import stanzas as _stanzas
from shardseal.keys.envelope import WrapContext
from shardseal.keyfile import KeyFileError, KeyFilePermissionWarning
from shardseal.keys.x25519 import (
    IdentityFileError,
    X25519Identity,
    X25519Recipient,
    _seal_to,
    format_identity_file,
    parse_identity_file,
    read_identity_file,
    write_identity_file,
)

# RFC 7748 section 6.1: Alice's key is used as the ephemeral key, Bob's as the recipient.
ALICE_PRIVATE = bytes.fromhex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
ALICE_PUBLIC = bytes.fromhex("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")
BOB_PRIVATE = bytes.fromhex("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb")
BOB_PUBLIC = bytes.fromhex("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f")
RFC_SHARED = bytes.fromhex("4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742")
FILE_KEY = bytes(range(200, 232))
CONTEXT = WrapContext(256, b"fixed part")
# Low-order points: 0, 1, and a point of order 8 (Wycheproof covers the rest).
LOW_ORDER_PUBLIC = [
    bytes(32),
    (1).to_bytes(32, "little"),
    bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"),
]
posix_only = pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")


@pytest.fixture(scope="module")
def bob() -> X25519Identity:
    return X25519Identity(BOB_PRIVATE)


def _recipient_id(public: bytes) -> bytes:
    return hashlib.sha256(b"shardseal/v1/x25519-recipient-id" + public).digest()[:16]


def _b32(data: bytes) -> str:
    return base64.b32encode(data).decode().rstrip("=")


def _secret_forms(identity: X25519Identity) -> list[bytes]:
    """Ways an identity's secret could leak into text: raw, hex, base64, base32, its string."""
    secret = bytes(identity._private)
    encoded = [secret.hex(), base64.b64encode(secret).decode(), _b32(secret), _b32(secret).lower(),
               identity.to_string()]
    return [secret] + [form.encode() for form in encoded]


def _assert_no_secret(text, identity: X25519Identity) -> None:
    data = text.encode() if isinstance(text, str) else bytes(text)
    for form in _secret_forms(identity):
        assert form not in data


def _stanza_offset(blob: bytes, identity: X25519Identity) -> int:
    """Where the body of the stanza addressed to identity starts in blob."""
    offset = bytes(blob).find(bytes.fromhex(identity.key_id))
    assert offset > 0
    return offset


def _flip(blob: bytes, offset: int) -> bytes:
    damaged = bytearray(blob)
    damaged[offset] ^= 0x01
    return bytes(damaged)


# ---- round trips ------------------------------------------------------------------------------


@pytest.mark.parametrize("length", [0, 1, 16384, 16385])
def test_bytes_round_trip(backend, length):
    identity = X25519Identity.generate()
    data = os.urandom(length)
    blob = shardseal.encrypt(data, recipients=[identity.recipient], metadata={"n": length})
    assert len(blob) == shardseal.encrypted_size(length, metadata={"n": length},
                                                 recipients=[identity.recipient])
    assert shardseal.decrypt(blob, identities=[identity]) == data
    assert shardseal.decrypt(blob, identities=identity) == data


def test_recipient_strings_are_accepted_by_encrypt(backend, bob):
    blob = shardseal.encrypt(b"for bob", recipients=[str(bob.recipient)])
    assert shardseal.decrypt(blob, identities=[bob]) == b"for bob"
    blob = shardseal.encrypt(b"for bob", recipients=str(bob.recipient))  # one string, not a list
    assert shardseal.decrypt(blob, identities=[bob]) == b"for bob"
    info = shardseal.inspect(blob)
    assert [(s.type, s.key_id) for s in info.stanzas] == [("x25519", bob.key_id)]


def test_suite_128(backend, bob):
    blob = shardseal.encrypt(b"x" * 1000, recipients=[bob.recipient], suite=128)
    assert shardseal.decrypt(blob, identities=[bob]) == b"x" * 1000


def test_arrays_round_trip(backend, bob):
    array = np.arange(12, dtype=np.float32).reshape(3, 4)
    blob = shardseal.encrypt_array(array, recipients=[bob.recipient])
    result = shardseal.decrypt_array(blob, identities=[bob])
    assert result.dtype == array.dtype and np.array_equal(result, array)


def test_files_round_trip(backend, bob, tmp_path):
    data = os.urandom(3 * 16384 + 7)
    (tmp_path / "plain").write_bytes(data)
    shardseal.encrypt_file(tmp_path / "plain", tmp_path / "sealed", recipients=[bob.recipient])
    shardseal.decrypt_file(tmp_path / "sealed", tmp_path / "opened", identities=[bob])
    assert (tmp_path / "opened").read_bytes() == data


def test_open_round_trip(backend, bob, tmp_path):
    data = os.urandom(2 * 16384 + 500)
    with shardseal.open(tmp_path / "sealed", "wb", recipients=[str(bob.recipient)]) as writer:
        writer.write(data)
    with shardseal.open(tmp_path / "sealed", "rb", identities=[bob]) as reader:
        reader.seek(16384 - 3)
        assert reader.read(10) == data[16384 - 3:16384 + 7]
        reader.seek(0)
        assert reader.read() == data


def test_three_recipients_each_identity_opens_alone(backend):
    identities = [X25519Identity.generate() for _ in range(3)]
    blob = shardseal.encrypt(b"shared shard", recipients=[i.recipient for i in identities])
    assert [s.key_id for s in shardseal.inspect(blob).stanzas] == [i.key_id for i in identities]
    for identity in identities:
        assert shardseal.decrypt(blob, identities=[identity]) == b"shared shard"


def test_wrong_identity_names_the_recipient_ids_needed(backend):
    readers = [X25519Identity.generate() for _ in range(2)]
    blob = shardseal.encrypt(b"secret", recipients=[r.recipient for r in readers])
    with pytest.raises(KeyNotFoundError) as info:
        shardseal.decrypt(blob, identities=[X25519Identity.generate()])
    assert info.value.key_ids == tuple(r.key_id for r in readers)
    assert f"X25519 identity {readers[0].key_id}" in str(info.value)


def test_each_wrap_uses_a_fresh_ephemeral_key(bob):
    first, second = (bob.recipient.wrap(FILE_KEY, CONTEXT) for _ in range(2))
    assert first[16:48] != second[16:48] and first[48:] != second[48:]
    assert bob.unwrap(first, CONTEXT) == bob.unwrap(second, CONTEXT) == FILE_KEY


# ---- the stanza ---------------------------------------------------------------------------------


def test_stanza_follows_the_specification():
    body = _seal_to(BOB_PUBLIC, FILE_KEY, ALICE_PRIVATE)
    # Computed here from the spec with cryptography's primitives, not with the module's helpers.
    shared = X25519PrivateKey.from_private_bytes(ALICE_PRIVATE).exchange(
        X25519PublicKey.from_public_bytes(BOB_PUBLIC))
    assert shared == RFC_SHARED
    wrap_key = HKDF(hashes.SHA256(), 32, salt=ALICE_PUBLIC + BOB_PUBLIC,
                    info=b"shardseal/v1/x25519").derive(shared)
    sealed = AESGCM(wrap_key).encrypt(bytes(12), FILE_KEY, b"")
    assert body == _recipient_id(BOB_PUBLIC) + ALICE_PUBLIC + sealed
    assert len(body) == X25519Recipient(BOB_PUBLIC).stanza_size() == 96
    assert _stanzas.parse_x25519(body) == (_recipient_id(BOB_PUBLIC), ALICE_PUBLIC, sealed)


def test_deterministic_vector(bob):
    # A regression vector for docs/FORMAT.md; the test above checks how it is derived.
    body = _seal_to(BOB_PUBLIC, FILE_KEY, ALICE_PRIVATE)
    assert body == _seal_to(BOB_PUBLIC, FILE_KEY, bytearray(ALICE_PRIVATE))
    assert body.hex() == (
        "d705e5410b979993b7f7b155032332dc"  # recipient id
        + ALICE_PUBLIC.hex()
        + "387c51a613b1b729b355de00c720611ed503c0f67c6d764d30a2d33434038608"  # sealed file key
        + "1bd692b12fd23527c0181bbe0a88e7c8")  # GCM tag
    assert bob.unwrap(body, CONTEXT) == FILE_KEY


def test_unwrap_skips_stanzas_for_other_recipients(bob):
    body = _seal_to(ALICE_PUBLIC, FILE_KEY, BOB_PRIVATE)
    assert bob.unwrap(body, CONTEXT) is None


def test_unwrap_refuses_a_malformed_body(bob):
    with pytest.raises(FormatError, match="96-byte body"):
        bob.unwrap(_seal_to(BOB_PUBLIC, FILE_KEY, ALICE_PRIVATE)[:-1], CONTEXT)


@pytest.mark.parametrize("offset, part", [(16, "ephemeral key"), (47, "ephemeral key"),
                                          (48, "sealed key"), (95, "tag")])
def test_tampered_stanza_is_an_authentication_error(bob, offset, part):
    body = _flip(_seal_to(BOB_PUBLIC, FILE_KEY, ALICE_PRIVATE), offset)
    with pytest.raises(AuthenticationError):
        bob.unwrap(body, CONTEXT)


def test_tampered_stanza_in_a_container(backend, bob):
    blob = shardseal.encrypt(b"data", recipients=[bob.recipient])
    start = _stanza_offset(blob, bob)
    for offset in (start + 16, start + 60):  # the ephemeral key, the sealed key
        with pytest.raises(AuthenticationError):
            shardseal.decrypt(_flip(blob, offset), identities=[bob])
    with pytest.raises(KeyNotFoundError):  # a changed recipient id names another key
        shardseal.decrypt(_flip(blob, start), identities=[bob])


def test_a_damaged_stanza_does_not_hide_an_intact_one(backend):
    first, second = X25519Identity.generate(), X25519Identity.generate()
    blob = shardseal.encrypt(b"data", recipients=[first.recipient, second.recipient])
    damaged = _flip(blob, _stanza_offset(blob, first) + 60)
    assert shardseal.decrypt(damaged, identities=[first, second]) == b"data"
    with pytest.raises(AuthenticationError):
        shardseal.decrypt(damaged, identities=[first])


@pytest.mark.parametrize("public", LOW_ORDER_PUBLIC, ids=["zero", "one", "order8"])
def test_low_order_recipients_are_refused_on_wrap(backend, public):
    recipient = X25519Recipient(public)
    with pytest.raises(ValueError, match="low-order"):
        recipient.wrap(FILE_KEY, CONTEXT)
    with pytest.raises(ValueError, match=recipient.key_id):
        shardseal.encrypt(b"data", recipients=[recipient])
    with pytest.raises(ValueError, match="low-order"):
        _seal_to(public, FILE_KEY, ALICE_PRIVATE)


@pytest.mark.parametrize("public", LOW_ORDER_PUBLIC, ids=["zero", "one", "order8"])
def test_low_order_ephemeral_key_is_an_authentication_error(bob, public):
    # A forged stanza whose ephemeral key makes the shared secret all zeros.
    body = _stanzas.x25519_body(_recipient_id(BOB_PUBLIC), public, bytes(48))
    with pytest.raises(AuthenticationError):
        bob.unwrap(body, CONTEXT)


def test_low_order_ephemeral_key_in_a_container(backend, bob):
    blob = bytearray(shardseal.encrypt(b"data", recipients=[bob.recipient]))
    start = _stanza_offset(blob, bob) + 16
    blob[start:start + 32] = bytes(32)
    with pytest.raises(AuthenticationError):
        shardseal.decrypt(bytes(blob), identities=[bob])


def test_wrap_checks_the_file_key_length(bob):
    with pytest.raises(ValueError, match="32 bytes"):
        bob.recipient.wrap(bytes(31), CONTEXT)


# ---- string forms ---------------------------------------------------------------------------------


def test_string_forms_follow_the_specification(bob):
    checksum = hashlib.sha256(b"shardseal/v1/x25519-recipient" + BOB_PUBLIC).digest()[:4]
    assert str(bob.recipient) == "ssealx1" + _b32(BOB_PUBLIC + checksum).lower()
    checksum = hashlib.sha256(b"shardseal/v1/x25519-identity" + BOB_PRIVATE).digest()[:4]
    assert bob.to_string() == "SSEAL-X25519-SECRET-1" + _b32(BOB_PRIVATE + checksum)
    assert len(str(bob.recipient)) == 7 + 58 and len(bob.to_string()) == 21 + 58
    assert bob.recipient.to_string() == str(bob.recipient)
    assert bob.recipient.key_id == bob.key_id == _recipient_id(BOB_PUBLIC).hex()
    assert bob.recipient.public_bytes == BOB_PUBLIC


def test_string_round_trips():
    identity = X25519Identity.generate()
    clone = X25519Identity.from_string(identity.to_string())
    assert clone.to_string() == identity.to_string() and clone.recipient == identity.recipient
    recipient = X25519Recipient.from_string(str(identity.recipient))
    assert recipient == identity.recipient and hash(recipient) == hash(identity.recipient)
    assert eval(repr(recipient), {"X25519Recipient": X25519Recipient}) == recipient
    # Surrounding whitespace from copy and paste is ignored.
    assert X25519Recipient.from_string(f"  {recipient}\n") == recipient
    assert X25519Identity.from_string(f"\t{identity.to_string()}\r\n").recipient == recipient


def _replace(text: str, index: int, char: str) -> str:
    return text[:index] + char + text[index + 1:]


def _bad_strings(good: str, prefix: str) -> list:
    """(bad string, message fragment) for each way a string can be wrong."""
    body = good[len(prefix):]
    other = "b" if body[10].lower() != "b" else "c"
    other = other if body.islower() else other.upper()
    last = body[-1]
    # The last character carries 2 unused bits: flipping one keeps the alphabet, breaks canonicity.
    alphabet = "abcdefghijklmnopqrstuvwxyz234567"
    non_canonical = alphabet[alphabet.index(last.lower()) ^ 1]
    non_canonical = non_canonical if body.islower() else non_canonical.upper()
    return [
        ("", "must start with"),
        (prefix[:-1] + body, "must start with"),
        ("x" + good, "must start with"),
        (prefix + body.swapcase(), "base32 characters"),
        (prefix + _replace(body, 5, "1"), "base32 characters"),
        (prefix + _replace(body, 5, "8"), "base32 characters"),
        (prefix + body + "====", "base32 characters"),
        (prefix + body[:20] + " " + body[20:], "base32 characters"),
        (prefix + body[:-1], "wrong length"),
        (prefix + body + body[-1], "wrong length"),
        (prefix, "wrong length"),
        (prefix + body[:-1] + non_canonical, "canonical"),
        (prefix + _replace(body, 10, other), "checksum"),
        (prefix + body[:20] + body[21] + body[20] + body[22:], "checksum"),  # swapped pair
    ]


def test_recipient_parse_errors(bob):
    good = str(bob.recipient)
    for bad, fragment in _bad_strings(good, "ssealx1"):
        if bad == good:
            continue
        with pytest.raises(ValueError, match=fragment):
            X25519Recipient.from_string(bad)
    with pytest.raises(TypeError, match="str"):
        X25519Recipient.from_string(good.encode())


def test_identity_parse_errors_never_quote_the_secret(bob):
    good = bob.to_string()
    for bad, fragment in _bad_strings(good, "SSEAL-X25519-SECRET-1"):
        if bad == good:
            continue
        with pytest.raises(ValueError, match=fragment) as info:
            X25519Identity.from_string(bad)
        body = good[len("SSEAL-X25519-SECRET-1"):]
        assert body[:20] not in str(info.value) and body[-20:] not in str(info.value)
    with pytest.raises(TypeError, match="str"):
        X25519Identity.from_string(None)


def test_an_identity_given_as_recipient_is_refused_without_quoting_it(backend, bob):
    for text in (bob.to_string(), bob.to_string().lower()):
        with pytest.raises(ValueError, match="identity, a secret key, not a recipient") as info:
            shardseal.encrypt(b"data", recipients=[text])
        _assert_no_secret(str(info.value), bob)


def test_a_recipient_given_as_identity_string_is_refused(bob):
    with pytest.raises(ValueError, match="must start with 'SSEAL-X25519-SECRET-1'"):
        X25519Identity.from_string(str(bob.recipient))


@pytest.mark.parametrize("value, error, fragment", [
    ("ssealx1abc", TypeError, "from_string"),
    (12, TypeError, "bytes-like"),
    (bytes(31), ValueError, "32 bytes"),
    (bytes(33), ValueError, "32 bytes"),
    (b"\xff" * 32, ValueError, "canonical"),  # top bit set
    ((2**255 - 19).to_bytes(32, "little"), ValueError, "canonical"),  # p itself
])
def test_recipient_constructor_errors(value, error, fragment):
    with pytest.raises(error, match=fragment):
        X25519Recipient(value)


@pytest.mark.parametrize("value, error", [("SSEAL-X25519-SECRET-1", TypeError), (None, TypeError),
                                          (bytes(31), ValueError), (bytearray(64), ValueError)])
def test_identity_constructor_errors(value, error):
    with pytest.raises(error):
        X25519Identity(value)


def test_identity_accepts_any_bytes_like_key():
    for value in (BOB_PRIVATE, bytearray(BOB_PRIVATE), memoryview(BOB_PRIVATE),
                  np.frombuffer(BOB_PRIVATE, np.uint8)):
        assert X25519Identity(value).recipient.public_bytes == BOB_PUBLIC


def test_generated_identities_differ():
    assert X25519Identity.generate().recipient != X25519Identity.generate().recipient


# ---- identity files -------------------------------------------------------------------------------


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_identity_file_format(bob):
    text = format_identity_file(bob)
    lines = text.splitlines()
    assert lines[0].startswith("# shardseal X25519 identity, created ") and lines[0].endswith("Z")
    assert lines[1] == f"# recipient: {bob.recipient}"
    assert lines[2] == bob.to_string() and len(lines) == 3
    assert parse_identity_file(text.encode()).recipient == bob.recipient


@posix_only
def test_identity_file_round_trip_is_0600(bob, tmp_path):
    path = tmp_path / "bob.sseal-id"
    write_identity_file(path, bob)
    assert mode(path) == 0o600
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert read_identity_file(path).recipient == bob.recipient
        assert read_identity_file(str(path)).recipient == bob.recipient
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bob.sseal-id"]  # no temporary left


def test_identity_file_is_not_overwritten_by_default(bob, tmp_path):
    path = tmp_path / "id"
    path.write_text("keep me\n")
    with pytest.raises(FileExistsError):
        write_identity_file(path, bob)
    assert path.read_text() == "keep me\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["id"]


@posix_only
def test_identity_file_overwrite(bob, tmp_path):
    path = tmp_path / "id"
    path.write_text("old\n")
    path.chmod(0o644)
    write_identity_file(path, bob, overwrite=True)
    assert mode(path) == 0o600
    assert read_identity_file(path).recipient == bob.recipient
    assert sorted(p.name for p in tmp_path.iterdir()) == ["id"]


@posix_only
def test_identity_file_readable_by_others_warns(bob, tmp_path):
    path = tmp_path / "id"
    write_identity_file(path, bob)
    path.chmod(0o640)
    with pytest.warns(KeyFilePermissionWarning, match=f"chmod 600 {path}"):
        identity = read_identity_file(path)
    assert identity.recipient == bob.recipient


def test_identity_file_accepts_comments_blank_lines_crlf_and_spaces(bob):
    data = f"\r\n# note\r\n\r\n   {bob.to_string()}  \r\n# end\r\n".encode()
    assert parse_identity_file(data).recipient == bob.recipient


def _corrupt(identity: X25519Identity) -> str:
    text = identity.to_string()
    return _replace(text, 30, "A" if text[30] != "A" else "B")


@pytest.mark.parametrize("make, fragment", [
    (lambda bob: b"\xff\xfe" + bob.to_string().encode(), "not UTF-8"),
    (lambda bob: b"# only a comment\n", "no identity line"),
    (lambda bob: b"", "no identity line"),
    (lambda bob: f"{bob.to_string()}\n{bob.to_string()}\n".encode(), "2 identities"),
    (lambda bob: f"{bob.recipient}\n{bob.to_string()}\n".encode(), "neither a comment"),
    (lambda bob: f"shardseal-key-1:{base64.b64encode(BOB_PRIVATE).decode()}\n".encode(), "neither a comment"),
    (lambda bob: (_corrupt(bob) + "\n").encode(), "checksum"),
    (lambda bob: (bob.to_string()[:-3] + "\n").encode(), "wrong length"),
])
def test_identity_file_parse_errors(bob, make, fragment):
    with pytest.raises(IdentityFileError, match=fragment) as info:
        parse_identity_file(make(bob), "my.id")
    assert str(info.value).startswith("my.id: ")
    assert isinstance(info.value, KeyFileError) and isinstance(info.value, ValueError)
    _assert_no_secret(str(info.value), bob)


def test_read_identity_file_errors(bob, tmp_path):
    big = tmp_path / "big"
    big.write_bytes(b"#" * (64 * 1024 + 10))
    big.chmod(0o600)
    with pytest.raises(IdentityFileError, match="larger than"):
        read_identity_file(big)
    with pytest.raises(FileNotFoundError):
        read_identity_file(tmp_path / "missing")
    with pytest.raises(IsADirectoryError):
        read_identity_file(tmp_path)


def test_write_identity_file_checks_its_argument(tmp_path):
    with pytest.raises(TypeError, match="X25519Identity"):
        write_identity_file(tmp_path / "id", X25519Identity.generate().recipient)
    assert list(tmp_path.iterdir()) == []


# ---- secrets stay secret ------------------------------------------------------------------------------


def test_keys_do_not_pickle_or_copy(bob):
    for obj in (bob, bob.recipient):
        with pytest.raises(TypeError, match="not picklable"):
            pickle.dumps(obj)
    with pytest.raises(TypeError, match="not picklable"):
        copy.deepcopy(bob)


def test_repr_and_str_show_the_key_id_only(bob):
    assert repr(bob) == str(bob) == f"X25519Identity(key_id={bob.key_id})"
    _assert_no_secret(repr(bob) + str(bob) + repr(bob.recipient) + str(bob.recipient), bob)


def test_wipe_zeroes_the_secret():
    identity = X25519Identity(BOB_PRIVATE)
    body = _seal_to(BOB_PUBLIC, FILE_KEY, ALICE_PRIVATE)
    identity.wipe()
    assert identity._private == bytearray(32)
    assert repr(identity) == f"X25519Identity(key_id={identity.key_id}, wiped)"
    with pytest.raises(ValueError, match="wiped"):
        identity.to_string()
    with pytest.raises(ValueError, match="wiped"):
        identity.unwrap(body, CONTEXT)
    assert identity.recipient.public_bytes == BOB_PUBLIC  # public, still usable


def test_no_secret_in_errors_or_the_audit_log(backend, caplog):
    alice, bob = X25519Identity(ALICE_PRIVATE), X25519Identity(BOB_PRIVATE)
    caplog.set_level(logging.INFO, logger=audit.LOGGER_NAME)
    blob = shardseal.encrypt(b"data", recipients=[bob.recipient])
    assert shardseal.decrypt(blob, identities=[bob]) == b"data"
    errors = []
    with pytest.raises(KeyNotFoundError) as info:
        shardseal.decrypt(blob, identities=[alice])
    errors.append(info.value)
    with pytest.raises(AuthenticationError) as info:
        shardseal.decrypt(_flip(blob, _stanza_offset(blob, bob) + 60), identities=[bob])
    errors.append(info.value)
    events = [(r.shardseal["event"], r.shardseal.get("key_id")) for r in caplog.records]
    assert ("wrap", bob.key_id) in events and ("unwrap", bob.key_id) in events
    assert ("unwrap_failed", bob.key_id) in events
    text = caplog.text + "".join(str(r.shardseal) for r in caplog.records)
    text += "".join(f"{e!s} {e!r}" for e in errors)
    for identity in (alice, bob):
        _assert_no_secret(text, identity)
