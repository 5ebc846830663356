"""Key references: KeyFile, EnvKey and RawKey resolve to the key, pickle without it (RawKey
only on request), and never show it."""

from __future__ import annotations

import base64
import copy
import multiprocessing
import pickle
from pathlib import Path

import pytest

from shardseal import keyfile
from shardseal.keyfile import KeyFileError
from shardseal.keyref import DatasetKey, EnvKey, KeyFile, KeyRef, RawKey, as_key_ref, resolve_key

KEY = bytes(range(100, 132))


def _secret_forms(key: bytes) -> list:
    """Ways a key could leak into text or bytes: raw, hex, base64."""
    return [key, key.hex().encode(), base64.b64encode(key)]


def _assert_no_key(blob, key: bytes = KEY) -> None:
    if isinstance(blob, str):
        blob = blob.encode()
    for form in _secret_forms(key):
        assert form not in blob


@pytest.fixture
def key_path(tmp_path) -> Path:
    path = tmp_path / "team.key"
    keyfile.write_key_file(path, KEY)
    return path


def test_key_file(key_path, tmp_path, monkeypatch):
    ref = KeyFile(key_path)
    assert isinstance(ref, KeyRef)
    assert ref.resolve() == KEY
    assert repr(ref) == f"KeyFile({str(key_path)!r})"
    clone = pickle.loads(pickle.dumps(ref))
    assert clone == ref and hash(clone) == hash(ref)
    assert clone.resolve() == KEY
    _assert_no_key(pickle.dumps(ref))
    _assert_no_key(repr(ref))


def test_key_file_relative_path_is_made_absolute(key_path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ref = KeyFile("team.key")
    monkeypatch.chdir("/")
    assert ref.path == str(key_path)
    assert ref.resolve() == KEY


def test_key_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        KeyFile(tmp_path / "missing.key").resolve()
    bad = tmp_path / "bad.key"
    bad.write_text("password123\n")
    bad.chmod(0o600)
    with pytest.raises(KeyFileError) as info:
        KeyFile(bad).resolve()
    assert "password123" not in str(info.value)


def test_env_key(monkeypatch):
    monkeypatch.setenv("MY_SHARDSEAL_KEY", keyfile.format_key_file(KEY))  # whole file text
    ref = EnvKey("MY_SHARDSEAL_KEY")
    assert ref.resolve() == KEY
    line = [l for l in keyfile.format_key_file(KEY).splitlines() if l.startswith("shardseal-key-1:")][0]
    monkeypatch.setenv("MY_SHARDSEAL_KEY", line)  # just the key line
    assert ref.resolve() == KEY
    assert repr(ref) == "EnvKey('MY_SHARDSEAL_KEY')"
    clone = pickle.loads(pickle.dumps(ref))
    assert clone == ref and clone.resolve() == KEY
    _assert_no_key(pickle.dumps(ref))
    assert EnvKey().name == "SHARDSEAL_KEY"


def test_env_key_is_read_when_resolved(monkeypatch):
    ref = EnvKey("MY_SHARDSEAL_KEY")
    monkeypatch.delenv("MY_SHARDSEAL_KEY", raising=False)
    with pytest.raises(KeyFileError, match="MY_SHARDSEAL_KEY is not set"):
        ref.resolve()
    monkeypatch.setenv("MY_SHARDSEAL_KEY", "shardseal-key-1:" + base64.b64encode(KEY[:31]).decode())
    with pytest.raises(KeyFileError, match="environment variable MY_SHARDSEAL_KEY") as info:
        ref.resolve()
    _assert_no_key(str(info.value), KEY[:31])
    monkeypatch.setenv("MY_SHARDSEAL_KEY", "hunter2")
    with pytest.raises(KeyFileError) as info:
        ref.resolve()
    assert "hunter2" not in str(info.value)


@pytest.mark.parametrize("name", ["", "A=B", None])
def test_env_key_bad_name(name):
    with pytest.raises(ValueError):
        EnvKey(name)


def test_raw_key_refuses_pickle():
    ref = RawKey(KEY)
    assert ref.resolve() == KEY and not ref.allow_pickle
    with pytest.raises(TypeError, match="KeyFile") as info:
        pickle.dumps(ref)
    message = str(info.value)
    assert "EnvKey" in message and "allow_pickle=True" in message
    _assert_no_key(message)
    with pytest.raises(TypeError):
        pickle.dumps({"dataset": [ref]})  # nested, as in a dataset's __dict__


def test_raw_key_pickles_when_allowed():
    ref = RawKey(bytearray(KEY), allow_pickle=True)
    clone = pickle.loads(pickle.dumps(ref))
    assert clone.resolve() == KEY and clone.allow_pickle
    assert isinstance(clone.resolve(), bytes)


def test_raw_key_repr_shows_only_the_key_id():
    ref = RawKey(KEY)
    text = repr(ref)
    _assert_no_key(text)
    assert ref.key_id in text and len(ref.key_id) == 32
    _assert_no_key(str(ref))


def test_raw_key_copies_in_process():
    ref = RawKey(KEY)
    assert copy.copy(ref) is ref
    assert copy.deepcopy({"k": ref})["k"] is ref


@pytest.mark.parametrize("bad, error", [(b"short", ValueError), ("x" * 32, TypeError), (None, TypeError)])
def test_raw_key_checks_the_key(bad, error):
    with pytest.raises(error):
        RawKey(bad)


def test_as_key_ref(key_path):
    wrapped = as_key_ref(KEY)
    assert isinstance(wrapped, RawKey) and not wrapped.allow_pickle and wrapped.resolve() == KEY
    assert isinstance(as_key_ref(memoryview(KEY)), RawKey)
    ref = KeyFile(key_path)
    assert as_key_ref(ref) is ref

    class Vault:  # any object with resolve() is a key reference
        def resolve(self):
            return KEY

    vault = Vault()
    assert as_key_ref(vault) is vault
    assert resolve_key(vault) == KEY
    assert resolve_key(KEY) == KEY
    assert resolve_key(ref) == KEY


@pytest.mark.parametrize("bad", [str(Path("team.key")), Path("team.key"), 42, object()])
def test_as_key_ref_refuses_ambiguous_values(bad):
    with pytest.raises(TypeError, match="KeyFile|key reference"):
        as_key_ref(bad)


def test_resolve_key_checks_what_a_reference_returns():
    class Short:
        def resolve(self):
            return b"\x01" * 16

    with pytest.raises(ValueError, match="32 bytes"):
        resolve_key(Short())
    with pytest.raises(ValueError):
        as_key_ref(b"\x01" * 31)


def _resolve_in_child(ref, queue) -> None:
    queue.put(ref.resolve() == KEY)


def test_references_resolve_in_a_spawned_process(key_path, monkeypatch):
    """What a DataLoader spawn worker does: unpickle the reference and resolve it there."""
    monkeypatch.setenv("SHARDSEAL_TEST_KEY", keyfile.format_key_file(KEY))
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    for ref in (KeyFile(key_path), EnvKey("SHARDSEAL_TEST_KEY"), RawKey(KEY, allow_pickle=True)):
        process = context.Process(target=_resolve_in_child, args=(ref, queue))
        process.start()
        assert queue.get(timeout=60) is True
        process.join(60)
        assert process.exitcode == 0
    with pytest.raises(TypeError, match="allow_pickle=True"):
        context.Process(target=_resolve_in_child, args=(RawKey(KEY), queue)).start()



# ---- DatasetKey: a dataset folder's key, unwrapped from its manifest in each process ------------

@pytest.fixture
def x25519_dataset(tmp_path):
    """A dataset encrypted for an X25519 recipient, its identity file, and the shard plaintexts."""
    from shardseal import x25519
    from shardseal.manifest import Dataset

    identity = x25519.X25519Identity.generate()
    x25519.write_identity_file(tmp_path / "reader.id", identity)
    plaintexts = {f"s{i:02d}.bin.sseal": bytes([i]) * (1000 + i) for i in range(6)}
    with Dataset.create(tmp_path / "ds", recipients=[identity.recipient]) as ds:
        for name, data in plaintexts.items():
            with ds.open_shard(name, "wb") as shard:
                shard.write(data)
        key = ds.key
    return tmp_path / "ds", tmp_path / "reader.id", plaintexts, key


def test_dataset_key_resolves_pickles_without_the_key_and_never_shows_it(x25519_dataset, monkeypatch):
    folder, identity_path, _, key = x25519_dataset
    monkeypatch.chdir(identity_path.parent)
    ref = DatasetKey("ds", "reader.id")
    assert ref.folder == str(folder) and ref.identity == str(identity_path)  # made absolute
    assert resolve_key(ref) == key
    copy_ = pickle.loads(pickle.dumps(ref))
    assert copy_ == ref and hash(copy_) == hash(ref) and copy_.resolve() == key
    for text in (repr(ref), pickle.dumps(ref)):
        _assert_no_key(text, key)
    assert DatasetKey(folder, "aws-kms").identity == "aws-kms"  # a KMS name is not a path
    with pytest.raises(TypeError):
        DatasetKey(folder, 5)


def test_dataset_key_with_the_wrong_identity(x25519_dataset, tmp_path):
    from shardseal import KeyNotFoundError, x25519

    folder, _, _, _ = x25519_dataset
    x25519.write_identity_file(tmp_path / "stranger.id", x25519.X25519Identity.generate())
    with pytest.raises(KeyNotFoundError):
        DatasetKey(folder, tmp_path / "stranger.id").resolve()


def test_dataset_key_in_spawned_dataloader_workers(x25519_dataset):
    torch_data = pytest.importorskip("torch.utils.data")
    from shardseal.data import EncryptedFileDataset

    folder, identity_path, plaintexts, _ = x25519_dataset
    dataset = EncryptedFileDataset(str(folder), DatasetKey(folder, identity_path))
    loader = torch_data.DataLoader(dataset, batch_size=None, num_workers=2,
                                   multiprocessing_context="spawn")
    assert [bytes(sample) for sample in loader] == [plaintexts[name] for name in sorted(plaintexts)]
