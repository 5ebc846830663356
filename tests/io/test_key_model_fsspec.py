"""SealFileSystem and fsspec.open(..., sseal=...) take identities and identity references as well
as key references; with references only, the filesystem pickles and serialises to JSON (the
references as their strings); raw keys and loaded identities refuse, without showing a key."""

from __future__ import annotations

import json
import pickle

import pytest

import shardseal
from shardseal import keyfile, keyref, x25519
import shardseal.keyring as keyring

fsspec = pytest.importorskip("fsspec")

from shardseal.fsspec import SealFileSystem  # noqa: E402


@pytest.fixture
def setup(tmp_path, key):
    """A key file, a keyring file and an X25519 identity file, and a container for each."""
    keyfile.write_key_file(tmp_path / "team.key", key)
    ring = keyring.Keyring.create(tmp_path / "ring.json")
    ring.add("kek-1")
    identity = x25519.X25519Identity.generate()
    x25519.write_identity_file(tmp_path / "me.id", identity)
    (tmp_path / "direct.sseal").write_bytes(shardseal.encrypt(b"direct", key))
    (tmp_path / "ring.sseal").write_bytes(shardseal.encrypt(b"ring", recipients=[ring.recipient()]))
    (tmp_path / "x.sseal").write_bytes(shardseal.encrypt(b"x25519", recipients=[identity.recipient]))
    return tmp_path, identity


def _identity_forms(folder):
    return {
        "identity file string": [str(folder / "me.id")],
        "IdentityRef": [keyref.IdentityRef(folder / "me.id")],
        "keyring string": [f"keyring:{folder / 'ring.json'}"],
    }


@pytest.mark.parametrize("form", ["identity file string", "IdentityRef", "keyring string"])
def test_identity_references_read_pickle_and_serialise(backend, setup, form):
    folder, _ = setup
    identities = _identity_forms(folder)[form]
    target = "x.sseal" if "keyring" not in form else "ring.sseal"
    fs = SealFileSystem(target_protocol="file", identities=identities)
    expected = fs.cat(str(folder / target))
    copy = pickle.loads(pickle.dumps(fs))
    assert copy.identity_refs == fs.identity_refs and copy.cat(str(folder / target)) == expected
    again = fsspec.AbstractFileSystem.from_json(fs.to_json())
    assert isinstance(again, SealFileSystem) and again.identity_refs == fs.identity_refs
    assert again.cat(str(folder / target)) == expected
    with fsspec.open(f"sseal::file://{folder / target}", "rb", sseal={"identities": identities}) as f:
        assert f.read() == expected


def test_key_and_identity_references_together(backend, setup):
    folder, _ = setup
    fs = SealFileSystem(target_protocol="file", key=keyref.KeyFile(folder / "team.key"),
                        identities=[str(folder / "me.id")])
    assert fs.cat(str(folder / "direct.sseal")) == b"direct"
    assert fs.cat(str(folder / "x.sseal")) == b"x25519"
    dumped = json.loads(fs.to_json())
    assert dumped["key"] == f"keyfile:{folder / 'team.key'}"
    assert dumped["identities"] == [str(folder / "me.id")]
    again = fsspec.AbstractFileSystem.from_json(fs.to_json())
    assert again.key_ref == keyref.KeyFile(folder / "team.key")
    assert again.cat(str(folder / "x.sseal")) == b"x25519"
    # Writing takes the key.
    fs.pipe_file(str(folder / "new.sseal"), b"new")
    assert shardseal.decrypt((folder / "new.sseal").read_bytes(), identities=[str(folder / "team.key")]) == b"new"


def test_env_key_reference_serialises(backend, setup, monkeypatch, key):
    folder, _ = setup
    monkeypatch.setenv("SHARDSEAL_FS_KEY", (folder / "team.key").read_text())
    fs = SealFileSystem(target_protocol="file", key=keyref.EnvKey("SHARDSEAL_FS_KEY"))
    assert json.loads(fs.to_json())["key"] == "env:SHARDSEAL_FS_KEY"
    again = fsspec.AbstractFileSystem.from_json(fs.to_json())
    assert again.cat(str(folder / "direct.sseal")) == b"direct"
    assert key.hex() not in fs.to_json()


def test_loaded_identities_refuse_pickling_and_json(setup):
    folder, identity = setup
    fs = SealFileSystem(target_protocol="file", identities=[identity])
    assert fs.cat(str(folder / "x.sseal")) == b"x25519"
    assert fs.storage_options["identity_ids"] == list(identity.key_ids)
    assert "identities" not in fs.storage_options
    secret = identity.to_string()
    for text in (repr(fs), str(fs.storage_options), fs._fs_token):
        assert secret not in text
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(fs)
    with pytest.raises(TypeError, match="cannot be serialised"):
        fs.to_json()
    with pytest.raises(TypeError, match="not both"):
        SealFileSystem(target_protocol="file", identities=[identity, str(folder / "me.id")])


def test_raw_keys_refuse_json_without_showing_the_key(key):
    for fs in (SealFileSystem(target_protocol="memory", key=key),
               SealFileSystem(target_protocol="memory", key=keyref.RawKey(key)),
               SealFileSystem(target_protocol="memory", key=keyref.RawKey(key, allow_pickle=True))):
        with pytest.raises(TypeError) as info:
            fs.to_json()
        text = str(info.value) + repr(info.value.__context__) + repr(info.value.__cause__)
        assert key.hex() not in text and repr(key) not in text


def test_secret_identity_strings_are_not_kept(setup):
    _, identity = setup
    with pytest.raises(ValueError, match="secret itself") as info:
        SealFileSystem(target_protocol="memory", identities=[identity.to_string()])
    assert identity.to_string() not in str(info.value)


def test_dataset_key_pickles_but_has_no_json_form(tmp_path, key):
    from shardseal.keyref import DatasetKey

    fs = SealFileSystem(target_protocol="file", key=DatasetKey(tmp_path, tmp_path / "me.id"))
    assert pickle.loads(pickle.dumps(fs)).key_ref == fs.key_ref
    with pytest.raises(TypeError, match="no string form"):
        fs.to_json()
