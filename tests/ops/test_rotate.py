"""shardseal.rotation: re-wrapping file keys without touching payloads, re-encryption, recovery.

The recipients here are a small test-local keyring KEK (AES key wrap, RFC 3394, under a 32-byte
KEK with a 16-byte id, in well-formed keyring stanzas) and a scrypt passphrase, so that rotation
is tested independently of the recipient modules; when ``shardseal.keyring`` exists, a few
tests also run against it. tests/test_rotate_crash.py imports ``Kek`` from here.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import importlib.util
import logging
import os
from pathlib import Path

import numpy as np
import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

import shardseal
from shardseal import audit
from shardseal.container import header as _container
from shardseal.keys import envelope as _envelope, stanzas as _stanzas
from shardseal.io import files as _files
from shardseal.ops import _journal as rotate_journal
from shardseal.errors import (
    AuthenticationError,
    FormatError,
    KeyNotFoundError,
    WrongPassphraseError,
)
from shardseal.rotation import (
    JOURNAL_SUFFIX,
    TEMP_SUFFIX,
    RotationReport,
    journal_path,
    recover,
    rotate,
)

from ..kek_helpers import KekIdentity, KekRecipient

HAS_KEYRING = importlib.util.find_spec("shardseal.keyring") is not None
HAS_PASSPHRASE = importlib.util.find_spec("shardseal.passphrase") is not None
HAS_X25519 = importlib.util.find_spec("shardseal.x25519") is not None


# ---- test recipients ----------------------------------------------------------------------


class Kek:
    """A named test KEK: ``.recipient``, ``.identity`` and ``.id`` (the key id string)."""

    def __init__(self, name: str) -> None:
        kek = hashlib.sha256(b"rotate-test-kek/" + name.encode()).digest()
        kek_id = hashlib.sha256(b"rotate-test-kek-id/" + name.encode()).digest()[:16]
        self.recipient = KekRecipient(kek, kek_id)
        self.identity = KekIdentity(kek, kek_id)
        self.id = kek_id.hex()


class TestPassphrase(_envelope.Recipient, _envelope.Identity):
    """A passphrase recipient and identity (scrypt with the smallest allowed work factor)."""

    __test__ = False  # not a pytest test class
    stanza_type = _stanzas.PASSPHRASE

    def __init__(self, passphrase: bytes) -> None:
        self._passphrase = passphrase

    @property
    def key_id(self) -> str:
        return "passphrase"

    @property
    def key_ids(self) -> tuple:
        return ("passphrase",)

    def _aead(self, salt: bytes) -> AESGCM:
        return AESGCM(Scrypt(salt=salt, length=32, n=1 << 10, r=8, p=1).derive(self._passphrase))

    def wrap(self, file_key: bytes, context: _envelope.WrapContext) -> bytes:
        salt = os.urandom(_stanzas.PASSPHRASE_SALT_SIZE)
        sealed = self._aead(salt).encrypt(bytes(12), file_key, context.fixed)
        return _stanzas.passphrase_body(salt, 10, 8, 1, sealed)

    def unwrap(self, body: bytes, context: _envelope.WrapContext):
        parsed = _stanzas.parse_passphrase(body)
        try:
            return self._aead(parsed.salt).decrypt(bytes(12), parsed.sealed_key, context.fixed)
        except InvalidTag:
            raise WrongPassphraseError() from None


A, B, C = Kek("a"), Kek("b"), Kek("c")
PLAIN = np.random.default_rng(7).integers(0, 256, 3 * 16384 + 123, dtype=np.uint8).tobytes()


# ---- helpers ------------------------------------------------------------------------------


def make(path: Path, keks=(A,), data: bytes = PLAIN, **kwargs) -> Path:
    path.write_bytes(shardseal.encrypt(data, recipients=[k.recipient for k in keks], **kwargs))
    return path


def split(path: Path) -> tuple:
    """(fixed part, key block, payload) of a container file."""
    blob = path.read_bytes()
    header = _container.parse_header(blob)
    return header.fixed, blob[len(header.fixed):header.size], blob[header.size:]


def key_ids(path: Path) -> list:
    return [s.key_id for s in shardseal.inspect(path.read_bytes()).stanzas if s.type != "padding"]


def opens(path: Path, kek: Kek, data: bytes = PLAIN) -> bool:
    try:
        assert shardseal.decrypt(path.read_bytes(), identities=[kek.identity]) == data
    except KeyNotFoundError:
        return False
    return True


def leftovers(folder: Path) -> list:
    return sorted(p.name for p in folder.rglob("*")
                  if p.name.endswith((JOURNAL_SUFFIX, TEMP_SUFFIX, _files.TEMP_SUFFIX)))


class _Crash(BaseException):
    """Stands in for the process dying at a step (no clean-up runs for the journal)."""


def crash_at(step: str):
    """A rotate(checkpoint=...) callback that stops the rotation at step."""
    def checkpoint(name: str) -> None:
        if name == step:
            raise _Crash(step)
    return checkpoint


# ---- re-wrapping --------------------------------------------------------------------------


def test_rewrap_new_kek_in_place_keeps_payload_and_fixed_part(tmp_path, backend):
    path = make(tmp_path / "f.sseal", metadata={"split": "train"})
    fixed, block, payload = split(path)
    inode = path.stat().st_ino
    report = rotate(path, identities=[A.identity], add=[B.recipient], remove=[A.id])
    assert (report.files_rewrapped, report.in_place, report.copied) == (1, 1, 0)
    assert path.stat().st_ino == inode
    new_fixed, new_block, new_payload = split(path)
    assert (new_fixed, new_payload) == (fixed, payload)
    assert len(new_block) == len(block) and new_block != block
    assert key_ids(path) == [B.id]
    assert opens(path, B) and not opens(path, A)
    with pytest.raises(KeyNotFoundError) as info:
        shardseal.decrypt(path.read_bytes(), identities=[A.identity])
    assert info.value.key_ids == (B.id,)
    assert shardseal.inspect(path.read_bytes()).metadata == {"split": "train"}
    assert leftovers(tmp_path) == []
    # journal and key block only: far less than the payload
    assert report.bytes_written < 1024 and report.bytes_payload == len(payload)


def test_adding_a_recipient_copies_the_payload_and_keeps_the_mode(tmp_path, backend):
    path = make(tmp_path / "f.sseal")
    path.chmod(0o640)
    fixed, _, payload = split(path)
    inode = path.stat().st_ino
    report = rotate(path, identities=[A.identity], add=[B.recipient])
    assert (report.in_place, report.copied) == (0, 1)
    assert path.stat().st_ino != inode
    assert path.stat().st_mode & 0o777 == 0o640
    assert split(path)[0] == fixed and split(path)[2] == payload
    assert key_ids(path) == [A.id, B.id]
    assert opens(path, A) and opens(path, B)
    assert report.bytes_written == path.stat().st_size
    assert leftovers(tmp_path) == []


def test_removing_a_recipient_pads_in_place_and_adding_back_reuses_the_padding(tmp_path):
    path = make(tmp_path / "f.sseal", keks=(A, B))
    size, inode = path.stat().st_size, path.stat().st_ino
    report = rotate(path, identities=[A.identity], remove=[B.recipient])
    assert report.in_place == 1
    stanzas = shardseal.inspect(path.read_bytes()).stanzas
    assert [s.type for s in stanzas] == ["keyring", "padding"]
    assert (path.stat().st_size, path.stat().st_ino) == (size, inode)
    assert opens(path, A) and not opens(path, B)
    report = rotate(path, identities=[A.identity], add=[C.recipient])
    assert report.in_place == 1 and path.stat().st_ino == inode
    assert key_ids(path) == [A.id, C.id]
    assert [s.type for s in shardseal.inspect(path.read_bytes()).stanzas] == ["keyring", "keyring"]
    assert opens(path, C)


def test_complete_recipient_set_keeps_unchanged_stanzas(tmp_path):
    path = make(tmp_path / "f.sseal", keks=(A, B))
    old_b = _container.parse_header(path.read_bytes()).stanzas[1]
    rotate(path, identities=[A.identity], recipients=[B.recipient, C.recipient])
    stanzas = _container.parse_header(path.read_bytes()).stanzas
    assert key_ids(path) == [B.id, C.id]
    assert stanzas[0] == old_b  # kept as it was, not wrapped again
    assert opens(path, B) and opens(path, C) and not opens(path, A)


def test_cobblestone_128_files_rotate(tmp_path):
    path = make(tmp_path / "f.sseal", suite=128)
    rotate(path, identities=[A.identity], recipients=[B.recipient])
    assert opens(path, B) and shardseal.inspect(path.read_bytes()).suite == "cobblestone-128"


def test_array_files_keep_their_metadata(tmp_path):
    array = np.arange(1000, dtype=">f4").reshape(10, 100)
    path = tmp_path / "a.sseal"
    path.write_bytes(shardseal.encrypt_array(array, recipients=[A.recipient], metadata={"n": 1}))
    for reencrypt in (False, True):
        fixed = split(path)[0]
        rotate(path, identities=[A.identity, B.identity], recipients=[B.recipient], reencrypt=reencrypt)
        assert split(path)[0] == fixed
        np.testing.assert_array_equal(
            shardseal.decrypt_array(path.read_bytes(), identities=[B.identity]), array)


def test_already_rotated_files_are_skipped_without_writing(tmp_path):
    path = make(tmp_path / "f.sseal")
    rotate(path, identities=[A.identity], add=[B.recipient])
    before = (path.read_bytes(), path.stat().st_mtime_ns, path.stat().st_ino)
    report = rotate(path, identities=[A.identity], add=[B.recipient])
    assert report.files_skipped == 1 and report.files_rewrapped == 0 and report.bytes_written == 0
    assert report.skipped == ((str(path), "already in the requested state"),)
    assert (path.read_bytes(), path.stat().st_mtime_ns, path.stat().st_ino) == before
    # nothing of it to remove either
    assert rotate(path, identities=[A.identity], remove=[C.id]).files_skipped == 1


def test_direct_key_files_are_skipped_unless_reencrypted(tmp_path, key):
    path = tmp_path / "d.sseal"
    path.write_bytes(shardseal.encrypt(PLAIN, key))
    before = path.read_bytes()
    report = rotate(path, key=key, add=[B.recipient])
    assert report.files_skipped == 1 and "direct-key" in report.skipped[0][1]
    assert path.read_bytes() == before
    report = rotate(path, key=key, recipients=[B.recipient], reencrypt=True)
    assert report.files_reencrypted == 1
    assert opens(path, B)
    with pytest.raises(KeyNotFoundError):
        shardseal.decrypt(path.read_bytes(), key)


def test_read_only_file_is_rotated_by_copy(tmp_path, monkeypatch):
    path = make(tmp_path / "f.sseal")
    path.chmod(0o444)
    real_open = os.open

    def no_write(file, flags, *args):
        if flags & os.O_RDWR and Path(file) == path:
            raise PermissionError(errno.EACCES, "Permission denied", str(file))
        return real_open(file, flags, *args)

    monkeypatch.setattr(os, "open", no_write)  # as for a user without write permission
    report = rotate(path, identities=[A.identity], recipients=[B.recipient])
    monkeypatch.undo()
    assert (report.in_place, report.copied) == (0, 1)
    assert path.stat().st_mode & 0o777 == 0o444 and opens(path, B)


# ---- verification before writing ----------------------------------------------------------


def test_no_matching_identity_raises_with_the_path(tmp_path):
    path = make(tmp_path / "f.sseal")
    before = path.read_bytes()
    with pytest.raises(KeyNotFoundError) as info:
        rotate(path, identities=[C.identity], add=[B.recipient])
    assert str(info.value).startswith(str(path)) and info.value.key_ids == (A.id,)
    assert path.read_bytes() == before and leftovers(tmp_path) == []


def test_a_stanza_with_a_wrong_file_key_is_refused(tmp_path):
    path = make(tmp_path / "f.sseal", keks=(A, B))
    fixed, _, payload = split(path)
    # B's stanza now carries another key: it unwraps, but fails the commitment.
    forged = [_container.parse_header(path.read_bytes()).stanzas[0],
              _container.Stanza(_stanzas.KEYRING, B.recipient.wrap(os.urandom(32), None))]
    path.write_bytes(fixed + _container.encode_key_block(forged) + payload)
    before = path.read_bytes()
    with pytest.raises(AuthenticationError):
        rotate(path, identities=[B.identity], add=[C.recipient])
    assert path.read_bytes() == before


def test_a_damaged_container_is_an_error_not_a_skip(tmp_path):
    path = make(tmp_path / "f.sseal")
    blob = bytearray(path.read_bytes())
    blob[6:8] = b"\n\x1a"  # CRLF -> LF mangling
    path.write_bytes(bytes(blob))
    with pytest.raises(FormatError, match="in transit"):
        rotate(tmp_path, identities=[A.identity], add=[B.recipient])


# ---- re-encryption ------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 16384, 16385, _files.FILE_BLOCK_SIZE + 16384 + 5])
def test_reencrypt_gives_a_fresh_key_and_salt(tmp_path, backend, size):
    data = os.urandom(size)
    path = make(tmp_path / "f.sseal", data=data, metadata={"k": "v"})
    old_fixed, old_block, old_payload = split(path)
    report = rotate(path, identities=[A.identity], recipients=[A.recipient, B.recipient],
                    reencrypt=True, threads=2)
    assert report.files_reencrypted == 1 and report.bytes_written == path.stat().st_size
    fixed, _, payload = split(path)
    assert fixed == old_fixed and len(payload) == len(old_payload)
    assert payload[:24] != old_payload[:24] and payload[56:] != old_payload[56:]
    assert opens(path, A, data) and opens(path, B, data)
    # The old stanzas (hence the old file key) do not open the new payload.
    with pytest.raises(AuthenticationError):
        shardseal.decrypt(old_fixed + old_block + payload, identities=[A.identity])


def test_reencrypt_with_reads_ending_inside_chunks(tmp_path, monkeypatch):
    monkeypatch.setattr(_files, "FILE_BLOCK_SIZE", 3 * 16384 + 7)
    data = os.urandom(10 * 16384 + 99)
    path = make(tmp_path / "f.sseal", data=data)
    rotate(path, identities=[A.identity], recipients=[B.recipient], reencrypt=True)
    assert opens(path, B, data)


def test_reencrypt_of_a_tampered_file_leaves_it_alone(tmp_path):
    path = make(tmp_path / "f.sseal")
    blob = bytearray(path.read_bytes())
    blob[-5] ^= 1
    path.write_bytes(bytes(blob))
    with pytest.raises(AuthenticationError):
        rotate(path, identities=[A.identity], recipients=[B.recipient], reencrypt=True)
    assert path.read_bytes() == bytes(blob) and leftovers(tmp_path) == []


# ---- passphrases ---------------------------------------------------------------------------


def _passphrase_kinds():
    yield pytest.param(TestPassphrase, id="test-local")
    if HAS_PASSPHRASE:
        from shardseal.passphrase import MIN_WORK_FACTOR, Passphrase

        yield pytest.param(lambda p: Passphrase(p, work_factor=MIN_WORK_FACTOR), id="shardseal.passphrase")


@pytest.mark.parametrize("passphrase", list(_passphrase_kinds()))
def test_passphrase_stays_alone(tmp_path, passphrase):
    path = make(tmp_path / "f.sseal")
    secret = passphrase(b"correct horse")
    with pytest.raises(ValueError, match="passphrase"):
        rotate(path, identities=[A.identity], add=[secret])
    rotate(path, identities=[A.identity], recipients=[secret])
    assert key_ids(path) == ["passphrase"]
    new = passphrase(b"battery staple")
    with pytest.raises(ValueError, match="passphrase"):
        rotate(path, identities=[secret], add=[new])  # the old passphrase stanza is still there
    report = rotate(path, identities=[secret], recipients=[new])  # a new passphrase: re-wrapped
    assert report.in_place == 1
    assert shardseal.decrypt(path.read_bytes(), identities=[new]) == PLAIN
    with pytest.raises(WrongPassphraseError):
        shardseal.decrypt(path.read_bytes(), identities=[secret])


# ---- folders, dry runs, reports -----------------------------------------------------------


def tree(root: Path) -> dict:
    (root / "sub" / "deeper").mkdir(parents=True)
    files = {
        "top": make(root / "top.sseal"),
        "grow": make(root / "sub" / "grow.sseal"),
        "deep": make(root / "sub" / "deeper" / "deep.sseal", keks=(A, C)),
    }
    (root / "notes.txt").write_text("not a container")
    (root / "link.sseal").symlink_to(files["top"])
    (root / ".x.abc.sseal-tmp").write_bytes(b"half written")
    return files


def test_folders_are_searched_recursively(tmp_path):
    files = tree(tmp_path)
    report = rotate(tmp_path, identities=[A.identity], recipients=[B.recipient])
    assert report.files_rewrapped == 3
    reasons = dict(report.skipped)
    assert reasons[str(tmp_path / "notes.txt")] == "not a shardseal container"
    assert "symbolic link" in reasons[str(tmp_path / "link.sseal")]
    assert "temporary" in reasons[str(tmp_path / ".x.abc.sseal-tmp")]
    assert report.files_skipped == 3
    for path in files.values():
        assert key_ids(path) == [B.id] and opens(path, B)
    assert (tmp_path / "link.sseal").is_symlink()


def test_non_recursive_and_explicit_file_lists(tmp_path):
    files = tree(tmp_path)
    report = rotate(tmp_path, identities=[A.identity], add=[B.recipient], recursive=False)
    assert report.files_rewrapped == 1 and key_ids(files["grow"]) == [A.id]
    report = rotate([files["grow"], files["deep"], files["grow"]], identities=[A.identity],
                    add=[B.recipient])
    assert report.files_rewrapped == 2
    assert key_ids(files["deep"]) == [A.id, C.id, B.id]


def test_dry_run_changes_nothing(tmp_path):
    files = tree(tmp_path)
    before = {p: p.read_bytes() for p in files.values()}
    report = rotate(tmp_path, identities=[A.identity], add=[B.recipient], remove=[C.id], dry_run=True)
    assert report.dry_run and report.bytes_written == 0
    # top and grow grow (copy); deep swaps C for B (in place)
    assert (report.files_rewrapped, report.copied, report.in_place) == (3, 2, 1)
    assert report.summary().startswith("would rotate 3 files (1 in place, 2 copied")
    assert {p: p.read_bytes() for p in files.values()} == before
    assert leftovers(tmp_path) == [".x.abc.sseal-tmp"]  # only the one that was there
    with pytest.raises(KeyNotFoundError):  # a dry run still checks the identities
        rotate(tmp_path, identities=[C.identity], add=[B.recipient], dry_run=True)


def test_summary_and_report(tmp_path):
    make(tmp_path / "a.sseal")
    make(tmp_path / "b.sseal", keks=(B,))
    report = rotate(tmp_path, identities=[A.identity], add=[B.recipient])
    assert isinstance(report, RotationReport)
    assert report.summary().startswith("rotated 1 file (0 in place, 1 copied, 0 re-encrypted), skipped 1")
    with pytest.raises(AttributeError):
        report.copied = 5  # frozen


def test_keep_going_lists_failures(tmp_path):
    good = make(tmp_path / "a.sseal")
    bad = make(tmp_path / "b.sseal", keks=(C,))
    report = rotate(tmp_path, identities=[A.identity], add=[B.recipient], keep_going=True)
    assert report.files_rewrapped == 1 and opens(good, B)
    assert [p for p, _ in report.failed] == [str(bad)] and "none of the given keys" in report.failed[0][1]
    assert "failed 1" in report.summary()


def test_keep_going_also_lists_files_that_would_lose_every_key(tmp_path):
    keeps = make(tmp_path / "a.sseal", keks=(A, B))
    loses = make(tmp_path / "b.sseal")
    report = rotate(tmp_path, identities=[A.identity], remove=[A.id], keep_going=True)
    assert report.failed[0][0] == str(loses) and "every key stanza" in report.failed[0][1]
    assert key_ids(keeps) == [B.id] and key_ids(loses) == [A.id]


def test_progress_callback_gets_each_path(tmp_path, capsys):
    paths = [make(tmp_path / f"{i}.sseal") for i in range(3)]
    seen = []
    rotate(tmp_path, identities=[A.identity], add=[B.recipient], progress=seen.append)
    assert seen == [str(p) for p in paths]
    rotate(tmp_path, identities=[A.identity], remove=[B.id], progress=True)
    assert "3/3" in capsys.readouterr().err


def test_an_error_stops_the_run_and_earlier_files_stay_rotated(tmp_path):
    first = make(tmp_path / "a.sseal")
    second = make(tmp_path / "b.sseal", keks=(C,))
    with pytest.raises(KeyNotFoundError, match="b.sseal"):
        rotate([first, second], identities=[A.identity], add=[B.recipient])
    assert opens(first, B) and not opens(second, B)


def test_audit_records_one_rotate_event_per_file(tmp_path, caplog):
    path = make(tmp_path / "f.sseal", keks=(A, C))
    with caplog.at_level(logging.INFO, logger=audit.LOGGER_NAME):
        rotate(path, identities=[A.identity], add=[B.recipient], remove=[C.id])
    events = [r.shardseal for r in caplog.records if getattr(r, "shardseal", {}).get("event") == "rotate"]
    assert len(events) == 1
    assert events[0]["mode"] == "rewrap" and events[0]["file"] == str(path)
    assert (events[0]["added"], events[0]["removed"]) == ([B.id], [C.id])


# ---- bad arguments ------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs, error", [
    (dict(add=[B.recipient]), TypeError),                                  # no identities
    (dict(identities=[A.recipient], add=[B.recipient]), TypeError),        # not an identity
    (dict(identities=[A.identity]), ValueError),                           # nothing to do
    (dict(identities=[A.identity], add=[B.recipient], recipients=[C.recipient]), TypeError),
    (dict(identities=[A.identity], recipients=[]), ValueError),
    (dict(identities=[A.identity], add=[B.recipient], reencrypt=True), ValueError),
    (dict(identities=[A.identity], remove=[42]), TypeError),
    (dict(identities=[A.identity], remove=[""]), ValueError),
    (dict(identities=[A.identity], add=[b"raw key"]), TypeError),
    (dict(identities=[A.identity], add=[B.recipient, TestPassphrase(b"x")]), ValueError),
    (dict(identities=[A.identity], add=[B.recipient], threads=0), ValueError),
])
def test_bad_arguments(tmp_path, kwargs, error):
    path = make(tmp_path / "f.sseal")
    before = path.read_bytes()
    with pytest.raises(error):
        rotate(path, **kwargs)
    assert path.read_bytes() == before


def test_bad_paths(tmp_path):
    with pytest.raises(FileNotFoundError):
        rotate(tmp_path / "missing", identities=[A.identity], add=[B.recipient])
    with pytest.raises(ValueError):
        rotate([], identities=[A.identity], add=[B.recipient])
    with pytest.raises(TypeError):
        rotate(42, identities=[A.identity], add=[B.recipient])


def test_removing_every_key_is_refused_before_any_file_changes(tmp_path):
    keeps = make(tmp_path / "a.sseal", keks=(A, B))
    loses = make(tmp_path / "b.sseal", keks=(A,))
    before = (keeps.read_bytes(), loses.read_bytes())
    with pytest.raises(ValueError, match="b.sseal.*every key stanza"):
        rotate(tmp_path, identities=[A.identity], remove=[A.id])
    assert (keeps.read_bytes(), loses.read_bytes()) == before


def test_recipients_do_not_pickle():
    import pickle

    with pytest.raises(TypeError):
        pickle.dumps(A.recipient)


# ---- journals and recovery ----------------------------------------------------------------


def interrupted(tmp_path, step: str) -> tuple:
    """A file whose in-place rotation A -> B stopped at step; (path, its old bytes)."""
    path = make(tmp_path / "f.sseal")
    old = path.read_bytes()
    with pytest.raises(_Crash):
        rotate(path, identities=[A.identity], recipients=[B.recipient], checkpoint=crash_at(step))
    assert journal_path(path).exists()
    return path, old


@pytest.mark.parametrize("step, state", [("journal", "old"), ("header", "new")])
def test_recover_completes_an_interrupted_rotation(tmp_path, step, state):
    path, old = interrupted(tmp_path, step)
    assert (path.read_bytes() == old) == (state == "old")
    assert opens(path, A if state == "old" else B)
    assert recover(tmp_path) == 1
    assert leftovers(tmp_path) == [] and opens(path, B) and not opens(path, A)
    assert split(path)[2] == old[len(old) - len(split(path)[2]):]


def test_recover_repairs_a_torn_key_block(tmp_path):
    path, old = interrupted(tmp_path, "journal")
    header = _container.parse_header(old)
    rotate_module_journal = rotate_journal.decode(journal_path(path).read_bytes())
    torn = bytearray(old)
    half = len(header.fixed) + (header.size - len(header.fixed)) // 2
    torn[half:header.size] = rotate_module_journal.new_block[half - len(header.fixed):]
    path.write_bytes(bytes(torn))
    with pytest.raises((KeyNotFoundError, AuthenticationError, FormatError)):
        shardseal.decrypt(path.read_bytes(), identities=[A.identity, B.identity])
    assert recover(path) == 1
    assert opens(path, B) and leftovers(tmp_path) == []


def test_the_next_rotate_recovers_first(tmp_path):
    path, _ = interrupted(tmp_path, "journal")
    report = rotate(tmp_path, identities=[B.identity], recipients=[B.recipient])
    assert report.recovered == 1 and report.files_skipped == 1
    assert "recovered 1 unfinished" in report.summary()
    assert opens(path, B) and leftovers(tmp_path) == []


def test_journal_of_a_replaced_file_is_left_alone(tmp_path):
    path, _ = interrupted(tmp_path, "journal")
    make(path, keks=(C,))  # someone wrote a new file under the name
    replaced = path.read_bytes()
    with pytest.warns(RuntimeWarning, match="replaced"):
        assert recover(tmp_path) == 0
    assert path.read_bytes() == replaced and journal_path(path).exists()
    # An in-place rotation of that file refuses to overwrite the journal.
    with pytest.warns(RuntimeWarning), pytest.raises(FileExistsError, match="journal"):
        rotate(path, identities=[C.identity], recipients=[B.recipient])
    journal_path(path).unlink()
    assert rotate(path, identities=[C.identity], recipients=[B.recipient]).in_place == 1


def test_journal_of_a_deleted_file_is_left_alone(tmp_path):
    path, _ = interrupted(tmp_path, "journal")
    path.unlink()
    with pytest.warns(RuntimeWarning, match="no longer exists"):
        assert recover(tmp_path) == 0
    assert journal_path(path).exists()


@pytest.mark.parametrize("keep", [0, 5, 40, -1])
def test_a_torn_journal_is_removed_and_the_file_is_untouched(tmp_path, keep):
    path, old = interrupted(tmp_path, "journal")
    journal = journal_path(path)
    data = journal.read_bytes()
    journal.write_bytes(data[:keep] if keep >= 0 else data[:-1] + bytes([data[-1] ^ 1]))
    assert recover(tmp_path) == 0
    assert not journal.exists() and path.read_bytes() == old


def test_a_foreign_file_named_like_a_journal_is_left_alone(tmp_path):
    make(tmp_path / "f.sseal")
    foreign = tmp_path / ".f.sseal.sseal-rotate"
    foreign.write_bytes(b"someone else's data")
    with pytest.warns(RuntimeWarning, match="not a shardseal rotation journal"):
        assert recover(tmp_path) == 0
    assert foreign.read_bytes() == b"someone else's data"


def test_recover_removes_dead_temp_files_and_keeps_live_ones(tmp_path):
    make(tmp_path / "f.sseal")
    dead = tmp_path / f".f.sseal.dead1{TEMP_SUFFIX}"
    live = tmp_path / f".f.sseal.live1{TEMP_SUFFIX}"
    dead.write_bytes(b"partial copy")
    live.write_bytes(b"being written")
    with open(live, "rb") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # a running rotation holds it
        assert recover(tmp_path / "f.sseal") == 0
        assert not dead.exists() and live.exists()
    recover(tmp_path)
    assert leftovers(tmp_path) == []


def test_recover_leaves_a_live_journal_alone(tmp_path):
    path, old = interrupted(tmp_path, "journal")
    with open(journal_path(path), "rb") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        assert recover(tmp_path) == 0
    assert path.read_bytes() == old
    assert recover(tmp_path) == 1


def test_checkpoint_is_told_every_step_in_order(tmp_path):
    in_place, copied = make(tmp_path / "a.sseal"), make(tmp_path / "b.sseal", keks=(C,))
    steps = []
    rotate(in_place, identities=[A.identity], recipients=[B.recipient], checkpoint=steps.append)
    assert steps == ["file", "journal", "header"]
    steps.clear()
    rotate(copied, identities=[C.identity], add=[B.recipient], checkpoint=steps.append)
    assert steps == ["file", "copied"]
    steps.clear()
    rotate(copied, identities=[B.identity], recipients=[A.recipient], reencrypt=True,
           checkpoint=steps.append)
    assert steps == ["file", "copied"]


def test_checkpoint_must_be_callable(tmp_path):
    path = make(tmp_path / "f.sseal")
    with pytest.raises(TypeError, match="checkpoint must be callable"):
        rotate(path, identities=[A.identity], add=[B.recipient], checkpoint=0.004)


def test_no_test_delay_environment_variable_is_read(tmp_path, monkeypatch):
    # The crash tests used to slow rotation down through SHARDSEAL_ROTATE_TEST_DELAY, read by
    # the production code; they now pass checkpoint=.
    monkeypatch.setenv("SHARDSEAL_ROTATE_TEST_DELAY", "not a number")
    path = make(tmp_path / "f.sseal")
    assert rotate(path, identities=[A.identity], recipients=[B.recipient]).in_place == 1


def test_a_crash_before_the_rename_leaves_the_original(tmp_path):
    path = make(tmp_path / "f.sseal")
    old = path.read_bytes()
    with pytest.raises(_Crash):
        rotate(path, identities=[A.identity], add=[B.recipient], checkpoint=crash_at("copied"))
    assert path.read_bytes() == old and leftovers(tmp_path) == []  # the temp file was discarded


def test_in_place_on_a_filesystem_without_hard_links(tmp_path, monkeypatch):
    def no_links(*args, **kwargs):
        raise PermissionError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    path = make(tmp_path / "f.sseal")
    assert rotate(path, identities=[A.identity], recipients=[B.recipient]).in_place == 1
    assert opens(path, B) and leftovers(tmp_path) == []


def test_long_file_names_get_distinct_journals(tmp_path):
    one = tmp_path / ("x" * 230 + "1")
    two = tmp_path / ("x" * 230 + "2")
    assert journal_path(one) != journal_path(two)
    assert len(journal_path(one).name.encode()) <= 255
    make(one)
    assert rotate(one, identities=[A.identity], recipients=[B.recipient]).in_place == 1


# ---- with shardseal.keyring, when it exists -------------------------------------------------


@pytest.mark.skipif(not HAS_KEYRING, reason="shardseal.keyring is not there yet")
def test_keyring_rotation_old_kek_to_new(tmp_path):
    from shardseal.keyring import Keyring

    keyring = Keyring.create(tmp_path / "ring")
    keyring.add("old")
    path = tmp_path / "f.sseal"
    path.write_bytes(shardseal.encrypt(PLAIN, recipients=[keyring.recipient("old")]))
    old_id = key_ids(path)[0]
    keyring.add("new")
    payload = split(path)[2]
    report = rotate(path, identities=[keyring], add=[keyring.recipient("new")], remove=[old_id])
    assert report.in_place == 1 and split(path)[2] == payload
    keyring.set_state("old", "destroyed")
    assert shardseal.decrypt(path.read_bytes(), identities=[keyring]) == PLAIN
    assert old_id not in key_ids(path)


@pytest.mark.skipif(not HAS_X25519, reason="shardseal.x25519 is not there yet")
def test_x25519_recipients(tmp_path):
    from shardseal.x25519 import X25519Identity

    alice, bob = X25519Identity.generate(), X25519Identity.generate()
    path = make(tmp_path / "f.sseal")
    report = rotate(path, identities=[A.identity], recipients=[alice.recipient])
    assert report.copied == 1  # an X25519 stanza is larger than a keyring stanza
    report = rotate(path, identities=[alice], add=[str(bob.recipient)], remove=[alice.key_id])
    assert report.in_place == 1
    assert shardseal.decrypt(path.read_bytes(), identities=[bob]) == PLAIN
    with pytest.raises(KeyNotFoundError):
        shardseal.decrypt(path.read_bytes(), identities=[alice])
