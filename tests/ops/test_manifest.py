"""shardseal.manifest: dataset keys, the encrypted manifest and ``verify``.

The manifest is opened through a key-encryption key: ``shardseal.keyring`` when it exists,
else a local AES key wrap (RFC 3394) recipient/identity pair of the same stanza type.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
import logging
import os
import pickle
import shutil

import pytest

import shardseal
from shardseal import manifest
from shardseal.container import blob as _blob, header as _container
from shardseal.core import backend as _backend
from shardseal.keys import envelope as _envelope, direct as _direct
from shardseal.errors import (
    AuthenticationError,
    FormatError,
    KeyNotFoundError,
    ShardsealError,
)
from shardseal.manifest import (
    CONTENT_TYPE,
    FORMAT,
    Dataset,
    ManifestChangedError,
    Problem,
    ShardInfo,
    ShardMismatchError,
)

from ..kek_helpers import KekIdentity, KekRecipient

CHUNK = 16384
HAVE_KEYRING = importlib.util.find_spec("shardseal.keyring") is not None
HAVE_ROTATE = importlib.util.find_spec("shardseal.rotation") is not None


# --------------------------------------------------------------------------------------
# A key-encryption key for the manifest


@pytest.fixture
def make_kek(tmp_path):
    """Returns a function name -> (recipient, identity) for a new key-encryption key."""
    def make(name: str):
        if HAVE_KEYRING:
            from shardseal import keyring

            kr = keyring.Keyring.create(tmp_path / f"{name}.keyring")
            kr.add(name)
            return kr.recipient(), kr
        kek, kek_id = os.urandom(32), os.urandom(16)
        return KekRecipient(kek, kek_id), KekIdentity(kek, kek_id)
    return make


@pytest.fixture
def kek(make_kek):
    return make_kek("team")


@pytest.fixture
def folder(tmp_path):
    return tmp_path / "dataset"


def write_shard(ds: Dataset, name: str, data: bytes) -> None:
    with ds.open_shard(name, "wb") as f:
        f.write(data)


def make_dataset(folder, kek, shards: dict) -> None:
    recipient, _ = kek
    with Dataset.create(folder, recipients=[recipient]) as ds:
        for name, data in shards.items():
            write_shard(ds, name, data)


def reopen(folder, kek) -> Dataset:
    return Dataset.open(folder, identities=[kek[1]])


def check(folder, kek, deep: bool = False):
    return manifest.verify(folder, identities=[kek[1]], deep=deep)


SHARDS = {
    "a.sseal": b"",
    "b.sseal": b"x",
    "train/c.sseal": os.urandom(2 * CHUNK + 500),
}


# --------------------------------------------------------------------------------------
# Round trip


def test_create_write_reopen_verify(backend, folder, kek):
    make_dataset(folder, kek, SHARDS)
    with reopen(folder, kek) as ds:
        assert [s.name for s in ds.shards] == sorted(SHARDS)
        for info in ds.shards:
            blob = (folder / info.name).read_bytes()
            assert info == ShardInfo(info.name, len(blob), hashlib.sha256(blob).hexdigest())
            # Each shard is an ordinary direct-key container under the dataset key.
            assert shardseal.inspect(blob).stanzas[0].key_id == ds.key_id
            assert shardseal.decrypt(blob, ds.key) == SHARDS[info.name]
            with ds.open_shard(info.name, "rb", verify=True) as reader:
                assert reader.read() == SHARDS[info.name]
        report = ds.verify(deep=True)
    assert report.ok and report.problems == ()
    assert report.shards_checked == 3
    assert report.bytes_checked == sum(s.size for s in ds.shards)
    assert report.summary().startswith("OK: 3 shards")
    info = shardseal.inspect((folder / manifest.MANIFEST_NAME).read_bytes())
    assert info.content_type == CONTENT_TYPE
    assert [s.type for s in info.stanzas] == ["keyring"]


def test_manifest_plaintext_schema(folder, kek):
    make_dataset(folder, kek, {"b.sseal": b"2", "a.sseal": b"1"})
    blob = (folder / manifest.MANIFEST_NAME).read_bytes()
    document = shardseal.decrypt(blob, identities=[kek[1]])
    parsed = json.loads(document)
    assert _container.canonical_json(parsed) == document
    assert set(parsed) == {"format", "dataset_key", "dataset_key_id", "shards", "created", "updated"}
    assert parsed["format"] == FORMAT
    key = base64.b64decode(parsed["dataset_key"])
    assert parsed["dataset_key_id"] == _direct.key_id(key).hex()
    assert [s["name"] for s in parsed["shards"]] == ["a.sseal", "b.sseal"]


def test_any_recipient_type_opens_the_manifest(folder):
    # The manifest only uses the Recipient / Identity interface: a local AES-KW pair works.
    kek, kek_id = os.urandom(32), os.urandom(16)
    pair = (KekRecipient(kek, kek_id), KekIdentity(kek, kek_id))
    make_dataset(folder, pair, SHARDS)
    with reopen(folder, pair) as ds:
        write_shard(ds, "d.sseal", b"d")
    report = check(folder, pair, deep=True)
    assert report.ok and report.shards_checked == 4


def test_encrypt_file_and_add_existing(folder, kek, tmp_path):
    source = tmp_path / "plain.bin"
    source.write_bytes(os.urandom(CHUNK * 3 + 7))
    with Dataset.create(folder, recipients=[kek[0]]) as ds:
        assert ds.encrypt_file(source, "enc.sseal") == CHUNK * 3 + 7
        shardseal.encrypt_file(source, folder / "external.sseal", key=ds.key)
        info = ds.add_existing("external.sseal")
        assert info.size == (folder / "external.sseal").stat().st_size
    with reopen(folder, kek) as ds:
        for name in ("enc.sseal", "external.sseal"):
            with ds.open_shard(name) as reader:
                assert reader.read() == source.read_bytes()
    assert check(folder, kek, deep=True).ok


def test_add_existing_refuses_a_shard_under_another_key(folder, kek):
    with Dataset.create(folder, recipients=[kek[0]]) as ds:
        (folder / "foreign.sseal").write_bytes(shardseal.encrypt(b"data", shardseal.generate_key()))
        with pytest.raises(KeyNotFoundError, match="not encrypted under this dataset's key"):
            ds.add_existing("foreign.sseal")
        with pytest.raises(FileNotFoundError):
            ds.add_existing("absent.sseal")
        assert ds.shards == ()


def test_encrypted_file_dataset_reads_the_shards(folder, kek):
    pytest.importorskip("torch")
    from shardseal.data import EncryptedFileDataset

    make_dataset(folder, kek, SHARDS)
    with reopen(folder, kek) as ds:
        dataset = EncryptedFileDataset(ds.shard_paths(), key=ds.key, threads=1)
        assert [dataset[i] for i in range(len(dataset))] == [SHARDS[n] for n in sorted(SHARDS)]


# --------------------------------------------------------------------------------------
# What verify detects


def problems_of(report) -> list:
    return [(p.name, p.kind) for p in report.problems]


def test_missing_shard(folder, kek):
    make_dataset(folder, kek, SHARDS)
    (folder / "b.sseal").unlink()
    report = check(folder, kek)
    assert not report.ok
    assert problems_of(report) == [("b.sseal", "missing")]
    assert "1 missing" in report.summary() and "b.sseal" in report.summary()


def test_swapped_shards(folder, kek):
    make_dataset(folder, kek, {"one.sseal": b"1" * 100, "two.sseal": b"2" * 100})
    one, two = folder / "one.sseal", folder / "two.sseal"
    data_one, data_two = one.read_bytes(), two.read_bytes()
    one.write_bytes(data_two)
    two.write_bytes(data_one)
    # Both still decrypt under the dataset key: only the manifest tells them apart.
    with reopen(folder, kek) as ds:
        assert shardseal.decrypt(one.read_bytes(), ds.key) == b"2" * 100
        with pytest.raises(ShardMismatchError, match="one.sseal"):
            ds.open_shard("one.sseal", "rb", verify=True)
    assert problems_of(check(folder, kek)) == [("one.sseal", "modified"), ("two.sseal", "modified")]


def test_rolled_back_shard(folder, kek):
    make_dataset(folder, kek, {"s.sseal": b"version 1"})
    old = (folder / "s.sseal").read_bytes()
    with reopen(folder, kek) as ds:
        write_shard(ds, "s.sseal", b"version 2")
    assert check(folder, kek).ok
    (folder / "s.sseal").write_bytes(old)  # same size, a valid older container
    report = check(folder, kek, deep=True)
    assert problems_of(report) == [("s.sseal", "modified")]
    assert "rolled back" in report.problems[0].detail


def test_one_modified_byte(folder, kek):
    make_dataset(folder, kek, SHARDS)
    path = folder / "train" / "c.sseal"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(data)
    assert problems_of(check(folder, kek)) == [("train/c.sseal", "modified")]


def test_size_change_is_reported_and_refused_on_read(folder, kek):
    make_dataset(folder, kek, SHARDS)
    with open(folder / "b.sseal", "ab") as f:
        f.write(b"\0")
    assert problems_of(check(folder, kek)) == [("b.sseal", "modified")]
    with reopen(folder, kek) as ds:
        with pytest.raises(ShardMismatchError, match="bytes but the manifest records"):
            ds.open_shard("b.sseal", "rb")
        with pytest.raises(KeyError):
            ds.open_shard("unlisted.sseal", "rb")


def test_unlisted_shards(folder, kek):
    make_dataset(folder, kek, SHARDS)
    with reopen(folder, kek) as ds:
        key = ds.key
    (folder / "extra.sseal").write_bytes(shardseal.encrypt(b"e", key))
    (folder / "train" / "more.sseal").write_bytes(shardseal.encrypt(b"m", key))
    (folder / "notes.txt").write_text("not a shard")
    report = check(folder, kek)
    assert problems_of(report) == [("extra.sseal", "unlisted"), ("train/more.sseal", "unlisted")]


def test_deep_verify_decrypts_every_chunk(folder, kek):
    with Dataset.create(folder, recipients=[kek[0]]) as ds:
        blob = bytearray(shardseal.encrypt(os.urandom(3 * CHUNK), ds.key))
        blob[-CHUNK] ^= 0x01  # inside a chunk: the header and commitment still check out
        (folder / "bad.sseal").write_bytes(blob)
        ds.add_existing("bad.sseal")
    assert check(folder, kek).ok  # the file is exactly what the manifest records
    report = check(folder, kek, deep=True)
    assert problems_of(report) == [("bad.sseal", "corrupt")]
    assert "AuthenticationError" in report.problems[0].detail


def test_a_folder_in_place_of_a_shard_is_missing(folder, kek):
    make_dataset(folder, kek, SHARDS)
    (folder / "b.sseal").unlink()
    (folder / "b.sseal").mkdir()
    assert problems_of(check(folder, kek)) == [("b.sseal", "missing")]


def test_remove(folder, kek):
    make_dataset(folder, kek, SHARDS)
    with reopen(folder, kek) as ds:
        ds.remove("b.sseal")
        with pytest.raises(KeyError):
            ds.remove("b.sseal")
    # The file is left in place, so it is now unlisted until deleted.
    assert problems_of(check(folder, kek)) == [("b.sseal", "unlisted")]
    (folder / "b.sseal").unlink()
    assert check(folder, kek).ok


# --------------------------------------------------------------------------------------
# The manifest: tampering, keys, rotation


def manifest_path(folder):
    return folder / manifest.MANIFEST_NAME


def key_block_offsets(blob: bytes) -> tuple:
    """(start of the first stanza's body, the header's size)."""
    header = _container.parse_header(blob)
    return len(header.fixed) + 2 + 6, header.size


def test_manifest_payload_tampering(folder, kek):
    make_dataset(folder, kek, SHARDS)
    path = manifest_path(folder)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(data)
    with pytest.raises(AuthenticationError):
        reopen(folder, kek)


def test_manifest_key_stanza_tampering(folder, kek):
    make_dataset(folder, kek, SHARDS)
    path = manifest_path(folder)
    good = path.read_bytes()
    body, _ = key_block_offsets(good)
    wrapped = bytearray(good)
    wrapped[body + 16] ^= 0x01  # inside the wrapped file key
    path.write_bytes(wrapped)
    with pytest.raises(ShardsealError):
        reopen(folder, kek)
    renamed = bytearray(good)
    renamed[body] ^= 0x01  # the KEK id: the stanza now names another key
    path.write_bytes(renamed)
    with pytest.raises(KeyNotFoundError):
        reopen(folder, kek)


def test_wrong_identity(folder, kek, make_kek):
    make_dataset(folder, kek, SHARDS)
    other = make_kek("other")
    with pytest.raises(KeyNotFoundError):
        Dataset.open(folder, identities=[other[1]])
    with pytest.raises(KeyNotFoundError):
        manifest.verify(folder, identities=[other[1]])


def test_a_container_that_is_not_a_manifest(folder, kek):
    folder.mkdir()
    manifest_path(folder).write_bytes(shardseal.encrypt(b"{}", recipients=[kek[0]]))
    with pytest.raises(FormatError, match="not a shardseal dataset manifest"):
        reopen(folder, kek)


def test_updates_keep_the_key_block(folder, kek):
    make_dataset(folder, kek, {"a.sseal": b"a"})
    before = manifest_path(folder).read_bytes()
    _, header_size = key_block_offsets(before)
    # Reopened with an identity only: no recipient is needed to add shards.
    with reopen(folder, kek) as ds:
        write_shard(ds, "b.sseal", b"b")
    after = manifest_path(folder).read_bytes()
    assert after[:header_size] == before[:header_size]  # fixed part and key block
    assert after[header_size:header_size + 24] != before[header_size:header_size + 24]  # fresh salt
    with reopen(folder, kek) as ds:
        assert [s.name for s in ds.shards] == ["a.sseal", "b.sseal"]


def test_save_without_changes_writes_nothing(folder, kek):
    make_dataset(folder, kek, SHARDS)
    before = manifest_path(folder).read_bytes()
    with reopen(folder, kek) as ds:
        ds.save()
    assert manifest_path(folder).read_bytes() == before


@pytest.mark.skipif(not HAVE_ROTATE, reason="shardseal.rotation is not available yet")
def test_rotating_the_manifest_leaves_every_shard_untouched(folder, kek, make_kek):
    from shardseal import rotation as rotate

    make_dataset(folder, kek, SHARDS)
    shards_before = {name: (folder / name).read_bytes() for name in SHARDS}
    manifest_before = manifest_path(folder).read_bytes()
    new = make_kek("new")
    rotate.rotate(manifest_path(folder), identities=[kek[1]], recipients=[new[0]])
    assert {name: (folder / name).read_bytes() for name in SHARDS} == shards_before
    # Only the manifest's key block changed: same fixed part, same payload.
    manifest_after = manifest_path(folder).read_bytes()
    before, after = _container.parse_header(manifest_before), _container.parse_header(manifest_after)
    assert after.fixed == before.fixed
    assert manifest_after[after.size:] == manifest_before[before.size:]
    assert after.stanzas != before.stanzas
    assert check(folder, new, deep=True).ok


def test_rewrapping_the_key_block_needs_no_shard_change(folder, kek, make_kek):
    # What a KEK rotation does to the manifest, by hand: a new key block, the same fixed part
    # and payload. The dataset opens with the new KEK only, and every shard still verifies.
    make_dataset(folder, kek, SHARDS)
    stale = reopen(folder, kek)
    blob = manifest_path(folder).read_bytes()
    header = _container.parse_header(blob)
    file_key = _envelope.unwrap_file_key(header, [kek[1]])
    new = make_kek("new")
    stanzas = _envelope.wrap_for([new[0]], file_key, _envelope.WrapContext(header.suite, header.fixed))
    manifest_path(folder).write_bytes(header.fixed + _container.encode_key_block(stanzas) + blob[header.size:])
    with pytest.raises(KeyNotFoundError):
        reopen(folder, kek)
    assert check(folder, new, deep=True).ok
    # A dataset opened before the rotation must not write the old key block back.
    write_shard(stale, "late.sseal", b"late")
    with pytest.raises(ManifestChangedError):
        stale.save()
    stale.close()


def test_save_refuses_to_overwrite_a_changed_manifest(folder, kek):
    make_dataset(folder, kek, SHARDS)
    first, second = reopen(folder, kek), reopen(folder, kek)
    write_shard(first, "one.sseal", b"1")
    first.save()
    write_shard(second, "two.sseal", b"2")
    with pytest.raises(ManifestChangedError):
        second.save()
    first.close()
    second.close()
    with reopen(folder, kek) as ds:
        assert "one.sseal" in {s.name for s in ds.shards}


# --------------------------------------------------------------------------------------
# Strict parsing of the manifest plaintext


def seal_manifest(folder, recipient, plaintext: bytes, content_type: str = CONTENT_TYPE) -> None:
    """Writes a manifest container holding an arbitrary plaintext."""
    folder.mkdir(exist_ok=True)
    plan = _blob.plan_header(None, [recipient], 256, _blob.header_metadata(None, {"content_type": content_type}))
    blob = _backend.impl.seal(256, plan.input_key, os.urandom(24), plan.fixed, plaintext, 1, plan.header)
    manifest_path(folder).write_bytes(blob)


def valid_document(**changes) -> dict:
    key = os.urandom(32)
    document = {
        "format": FORMAT,
        "dataset_key": base64.b64encode(key).decode(),
        "dataset_key_id": _direct.key_id(key).hex(),
        "shards": [{"name": "a.sseal", "size": 100, "sha256": "0" * 64}],
        "created": "2024-05-01T12:00:00+00:00",
        "updated": "2024-05-01T12:00:00+00:00",
    }
    document.update(changes)
    return document


def shard_entry(**changes) -> list:
    entry = {"name": "a.sseal", "size": 100, "sha256": "0" * 64}
    entry.update(changes)
    return [entry]


def without(field: str) -> dict:
    document = valid_document()
    del document[field]
    return document


BAD_DOCUMENTS = {
    "not canonical": lambda: json.dumps(valid_document()).encode(),
    "not utf-8": lambda: b"\xff{}",
    "not an object": lambda: b"[]",
    "unknown field": lambda: _container.canonical_json(valid_document(extra=1)),
    "missing field": lambda: _container.canonical_json(without("updated")),
    "other format": lambda: _container.canonical_json(valid_document(format="shardseal-dataset-2")),
    "short key": lambda: _container.canonical_json(valid_document(dataset_key=base64.b64encode(b"k" * 31).decode())),
    "key not base64": lambda: _container.canonical_json(valid_document(dataset_key="!" * 44)),
    "key id mismatch": lambda: _container.canonical_json(valid_document(dataset_key_id="0" * 32)),
    "shards not a list": lambda: _container.canonical_json(valid_document(shards={})),
    "parent name": lambda: _container.canonical_json(valid_document(shards=shard_entry(name="../a.sseal"))),
    "absolute name": lambda: _container.canonical_json(valid_document(shards=shard_entry(name="/a.sseal"))),
    "empty component": lambda: _container.canonical_json(valid_document(shards=shard_entry(name="a//b.sseal"))),
    "dot component": lambda: _container.canonical_json(valid_document(shards=shard_entry(name="./a.sseal"))),
    "backslash": lambda: _container.canonical_json(valid_document(shards=shard_entry(name="a\\b.sseal"))),
    "empty name": lambda: _container.canonical_json(valid_document(shards=shard_entry(name=""))),
    "manifest name": lambda: _container.canonical_json(valid_document(shards=shard_entry(name="manifest.sseal"))),
    "name not a string": lambda: _container.canonical_json(valid_document(shards=shard_entry(name=3))),
    "duplicate names": lambda: _container.canonical_json(valid_document(shards=shard_entry() * 2)),
    "bool size": lambda: _container.canonical_json(valid_document(shards=shard_entry(size=True))),
    "negative size": lambda: _container.canonical_json(valid_document(shards=shard_entry(size=-1))),
    "upper-case digest": lambda: _container.canonical_json(valid_document(shards=shard_entry(sha256="A" * 64))),
    "short digest": lambda: _container.canonical_json(valid_document(shards=shard_entry(sha256="0" * 63))),
    "extra shard field": lambda: _container.canonical_json(valid_document(shards=shard_entry(mode=1))),
    "naive time": lambda: _container.canonical_json(valid_document(created="2024-05-01T12:00:00")),
    "time with Z": lambda: _container.canonical_json(valid_document(created="2024-05-01T12:00:00Z")),
    "not a time": lambda: _container.canonical_json(valid_document(updated="yesterday")),
}


@pytest.mark.parametrize("case", sorted(BAD_DOCUMENTS))
def test_malformed_manifest_plaintext(folder, kek, case):
    seal_manifest(folder, kek[0], BAD_DOCUMENTS[case]())
    with pytest.raises(FormatError):
        reopen(folder, kek)


def test_a_valid_handmade_manifest_opens(folder, kek):
    document = valid_document()
    seal_manifest(folder, kek[0], _container.canonical_json(document))
    with reopen(folder, kek) as ds:
        assert ds.key == base64.b64decode(document["dataset_key"])
        assert ds.shards == (ShardInfo("a.sseal", 100, "0" * 64),)
        assert ds.created == document["created"]
    assert problems_of(check(folder, kek)) == [("a.sseal", "missing")]


# --------------------------------------------------------------------------------------
# Arguments, keys and the writer's life cycle


def test_create_refuses_an_existing_manifest(folder, kek):
    make_dataset(folder, kek, {})
    with pytest.raises(FileExistsError):
        Dataset.create(folder, recipients=[kek[0]])


def test_create_checks_recipients_before_writing(folder):
    with pytest.raises(ValueError):
        Dataset.create(folder, recipients=[])
    with pytest.raises(TypeError):
        Dataset.create(folder, recipients=[object()])
    assert not folder.exists()


def test_bad_arguments(folder, kek):
    with pytest.raises(TypeError, match="Dataset.create"):
        Dataset()
    with pytest.raises(ValueError):
        Dataset.create(folder, recipients=[kek[0]], manifest_name="sub/manifest.sseal")
    with Dataset.create(folder, recipients=[kek[0]]) as ds:
        for name in ("", "/abs.sseal", "../up.sseal", "a//b.sseal", "a/./b.sseal", "a\\b.sseal",
                     manifest.MANIFEST_NAME):
            with pytest.raises(ValueError, match="invalid shard name"):
                ds.open_shard(name, "wb")
        with pytest.raises(TypeError):
            ds.open_shard(b"a.sseal", "wb")
        with pytest.raises(ValueError, match="mode"):
            ds.open_shard("a.sseal", "ab")
        with pytest.raises(TypeError):
            ds.open_shard("a.sseal", "rb", metadata={"x": 1})
    with pytest.raises(FileNotFoundError):
        Dataset.open(folder / "absent", identities=[kek[1]])


def test_custom_manifest_name(folder, kek):
    with Dataset.create(folder, recipients=[kek[0]], manifest_name="index.sseal") as ds:
        write_shard(ds, "a.sseal", b"a")
    report = manifest.verify(folder, identities=[kek[1]], manifest_name="index.sseal")
    assert report.ok and report.shards_checked == 1


def test_keys_never_pickle_or_print_and_close_wipes(folder, kek):
    with Dataset.create(folder, recipients=[kek[0]]) as ds:
        key = ds.key
        with pytest.raises(TypeError, match="not picklable"):
            pickle.dumps(ds)
        assert len(key) == 32 and ds.key_id == _direct.key_id(key).hex()
        for text in (repr(ds), str(ds)):
            assert key.hex() not in text and base64.b64encode(key).decode() not in text
            assert ds.key_id in text
    with pytest.raises(ValueError, match="closed"):
        _ = ds.key
    assert bytes(ds._key) == bytes(32)  # the bytearray itself was zeroed
    ds.wipe()  # idempotent


def test_exception_in_with_block_saves_nothing(folder, kek):
    make_dataset(folder, kek, {})
    before = manifest_path(folder).read_bytes()
    with pytest.raises(RuntimeError):
        with reopen(folder, kek) as ds:
            write_shard(ds, "a.sseal", b"a")
            raise RuntimeError("stop")
    assert manifest_path(folder).read_bytes() == before


def test_failed_shard_write_records_nothing(folder, kek):
    with Dataset.create(folder, recipients=[kek[0]]) as ds:
        with pytest.raises(RuntimeError):
            with ds.open_shard("a.sseal", "wb") as f:
                f.write(b"partial")
                raise RuntimeError("interrupted")
        assert ds.shards == ()
    assert sorted(os.listdir(folder)) == [manifest.MANIFEST_NAME]


def test_open_writers_block_save_and_close_discards_them(folder, kek):
    ds = Dataset.create(folder, recipients=[kek[0]])
    writer = ds.open_shard("a.sseal", "wb")
    writer.write(b"data")
    with pytest.raises(ValueError, match="still open"):
        ds.save()
    ds.close()
    assert writer.closed
    assert sorted(os.listdir(folder)) == [manifest.MANIFEST_NAME]


def test_audit_events(folder, kek, caplog):
    make_dataset(folder, kek, SHARDS)
    (folder / "a.sseal").unlink()
    with caplog.at_level(logging.INFO, logger="shardseal.audit"):
        with reopen(folder, kek) as ds:
            key, key_id = ds.key, ds.key_id
            ds.verify()
    events = {r.shardseal["event"]: r.shardseal for r in caplog.records if hasattr(r, "shardseal")}
    assert events["dataset_open"]["dataset_key_id"] == key_id
    assert events["dataset_open"]["shards"] == 3
    assert events["verify"]["ok"] is False and events["verify"]["problems"] == 1
    assert events["verify"]["file"] == str(manifest_path(folder))
    text = caplog.text + repr([r.shardseal for r in caplog.records if hasattr(r, "shardseal")])
    assert key.hex() not in text and base64.b64encode(key).decode() not in text


def test_verify_report_summary_lists_each_problem():
    report = manifest.VerifyReport(
        (Problem("a.sseal", "missing", "the file does not exist"),
         Problem("b.sseal", "modified", "its SHA-256 differs")), 2, 10)
    assert not report.ok
    lines = report.summary().splitlines()
    assert lines[0].startswith("FAILED: 2 problems (1 missing, 1 modified)")
    assert lines[1].split() == ["missing", "a.sseal:", "the", "file", "does", "not", "exist"]


def test_copied_dataset_still_verifies(folder, kek, tmp_path):
    # Names are relative, so a dataset moved or copied elsewhere keeps verifying.
    make_dataset(folder, kek, SHARDS)
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    assert check(copy, kek, deep=True).ok
