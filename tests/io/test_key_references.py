"""Every function that takes key= also takes a key reference (shardseal.keyref), resolved where
the key is used; a SealFileSystem holding a reference pickles, one holding a raw key does not."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

import shardseal
from shardseal import keyfile
from shardseal.errors import KeyFileError, KeyNotFoundError
from shardseal.keyref import EnvKey, KeyFile, RawKey

fsspec = pytest.importorskip("fsspec")

from shardseal.fsspec import SealFileSystem  # noqa: E402


@pytest.fixture
def key_path(tmp_path, key):
    path = tmp_path / "team.key"
    keyfile.write_key_file(path, key)
    return path


@pytest.fixture(params=["KeyFile", "EnvKey"])
def ref(request, key_path, monkeypatch):
    """A KeyFile, and an EnvKey whose variable holds the same key file's text."""
    if request.param == "KeyFile":
        return KeyFile(key_path)
    monkeypatch.setenv("SHARDSEAL_TEST_KEY", key_path.read_text())
    return EnvKey("SHARDSEAL_TEST_KEY")


def test_blob_functions_take_references(backend, key, ref):
    sealed = shardseal.encrypt(b"payload", ref)
    assert shardseal.decrypt(sealed, key) == b"payload"  # the same key
    assert shardseal.decrypt(shardseal.encrypt(b"payload", key), ref) == b"payload"
    out = bytearray(shardseal.encrypted_size(7))
    n = shardseal.encrypt_into(b"payload", ref, out)
    plain = bytearray(7)
    assert shardseal.decrypt_into(bytes(out[:n]), ref, plain) == 7 and plain == b"payload"
    array = np.arange(10, dtype=np.int32)
    assert (shardseal.decrypt_array(shardseal.encrypt_array(array, ref), ref) == array).all()


def test_files_take_references(backend, key, ref, tmp_path):
    with shardseal.open(tmp_path / "a.sseal", "wb", ref) as f:
        f.write(b"streamed")
    with shardseal.open(tmp_path / "a.sseal", "rb", key) as f:
        assert f.read() == b"streamed"
    with shardseal.open(tmp_path / "a.sseal", "rb", ref) as f:
        assert f.read() == b"streamed"
    (tmp_path / "plain").write_bytes(b"file" * 1000)
    assert shardseal.encrypt_file(tmp_path / "plain", tmp_path / "b.sseal", ref) == 4000
    assert shardseal.decrypt_file(tmp_path / "b.sseal", tmp_path / "out", ref) == 4000
    assert (tmp_path / "out").read_bytes() == b"file" * 1000


def test_fsspec_open_takes_references(backend, key, ref, tmp_path):
    url = f"sseal::file://{tmp_path}/c.sseal"
    with fsspec.open(url, "wb", sseal={"key": ref}) as f:
        f.write(b"chained")
    assert shardseal.decrypt((tmp_path / "c.sseal").read_bytes(), key) == b"chained"
    with fsspec.open(url, "rb", sseal={"key": ref}) as f:
        assert f.read() == b"chained"
    fs = SealFileSystem(key=ref)
    assert fs.cat(str(tmp_path / "c.sseal")) == b"chained"
    assert fs.key_id is None and fs.storage_options["key"] == ref and repr(ref) in repr(fs)


def test_reference_is_resolved_at_use_not_at_creation(tmp_path, key):
    path = tmp_path / "later.key"
    fs = SealFileSystem(key=KeyFile(path))  # no file yet: nothing is read here
    with pytest.raises(FileNotFoundError):
        fs.open(str(tmp_path / "x.sseal"), "wb")
    keyfile.write_key_file(path, key)
    fs.pipe_file(str(tmp_path / "x.sseal"), b"now")
    assert shardseal.decrypt((tmp_path / "x.sseal").read_bytes(), key) == b"now"


def test_wrong_reference_is_reported(tmp_path, key_path, monkeypatch):
    sealed = shardseal.encrypt(b"x", KeyFile(key_path))
    other = tmp_path / "other.key"
    keyfile.write_key_file(other, shardseal.generate_key())
    with pytest.raises(KeyNotFoundError):
        shardseal.decrypt(sealed, KeyFile(other))
    monkeypatch.delenv("SHARDSEAL_UNSET_KEY", raising=False)
    with pytest.raises(KeyFileError, match="SHARDSEAL_UNSET_KEY is not set"):
        shardseal.decrypt(sealed, EnvKey("SHARDSEAL_UNSET_KEY"))


def test_filesystem_with_reference_pickles_and_reads(backend, key, ref, tmp_path):
    fs = SealFileSystem(target_protocol="file", key=ref)
    fs.pipe_file(str(tmp_path / "p.sseal"), b"across processes")
    data = pickle.dumps(fs)
    assert key not in data and key.hex().encode() not in data
    copy = pickle.loads(data)
    assert copy is not fs and copy.key_ref == ref and copy._fs_token == fs._fs_token
    assert copy.cat(str(tmp_path / "p.sseal")) == b"across processes"
    with copy.open(str(tmp_path / "p.sseal"), "rb") as f:  # an opened file still refuses
        with pytest.raises(TypeError, match="cannot be pickled"):
            pickle.dumps(f)
    # Issue 12 changed this: a filesystem holding only references serialises to JSON (it used
    # to refuse with "pickle it instead"); see tests/io/test_key_model_fsspec.py.
    again = fsspec.AbstractFileSystem.from_json(fs.to_json())
    assert again.key_ref == ref and again.cat(str(tmp_path / "p.sseal")) == b"across processes"


def test_filesystem_with_raw_key_still_refuses_pickling(key):
    fs = SealFileSystem(target_protocol="memory", key=key)
    with pytest.raises(TypeError, match="holds key material and cannot be pickled"):
        pickle.dumps(fs)
    with pytest.raises(TypeError, match="not pickled unless you opt in"):
        pickle.dumps(SealFileSystem(target_protocol="memory", key=RawKey(key)))
    opted_in = pickle.loads(pickle.dumps(SealFileSystem(key=RawKey(key, allow_pickle=True))))
    assert opted_in.key_ref.resolve() == key


def test_raw_key_from_configuration_still_refused(key, monkeypatch):
    monkeypatch.setitem(fsspec.config.conf, "sseal", {"key": key})
    with pytest.raises(TypeError, match="not in fsspec's configuration"):
        SealFileSystem(target_protocol="memory")


def test_raw_key_errors_unchanged(key):
    with pytest.raises(TypeError, match="not str"):
        shardseal.encrypt(b"x", key.hex())
    with pytest.raises(ValueError, match="must be 32 bytes, got 31"):
        shardseal.decrypt(shardseal.encrypt(b"x", key), key[:31])
    with pytest.raises(TypeError, match="not str"):
        SealFileSystem(key=key.hex())


def test_rotate_takes_a_reference(key, key_path, tmp_path):
    from shardseal import x25519

    path = tmp_path / "f.sseal"
    path.write_bytes(shardseal.encrypt(b"rotated", key))
    identity = x25519.X25519Identity.generate()
    shardseal.rotate(path, key=KeyFile(key_path), recipients=[identity.recipient], reencrypt=True)
    assert shardseal.decrypt(path.read_bytes(), identities=[identity]) == b"rotated"
