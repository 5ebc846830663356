"""shardseal.checkpoint: sharded encrypted checkpoints, the sealed index, shards bound to their
checkpoint, tampering that fails exactly the tensors of one shard, no plaintext on disk."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
st = pytest.importorskip("safetensors.torch")

import shardseal
import shardseal.checkpoint as ck
from shardseal.errors import AuthenticationError, FormatError, KeyNotFoundError


def listing(folder) -> set[str]:
    """Every path under folder."""
    found = set()
    for root, dirs, files in os.walk(folder, onerror=lambda error: None):
        for name in dirs + files:
            found.add(os.path.join(root, name))
    return found


class TempWatch:
    """Watches for temporary files: Python's temporary folder is redirected to a private empty
    one (it must stay empty), and the files that appear in the system's /tmp meanwhile (other
    processes share it) must not hold a plaintext safetensors header or index."""

    def __init__(self, monkeypatch, tmp_path) -> None:
        self.private = tmp_path / "private-tmp"
        self.private.mkdir(parents=True)
        monkeypatch.setenv("TMPDIR", str(self.private))
        monkeypatch.setattr(tempfile, "tempdir", str(self.private))
        self.system = Path("/tmp")
        self.before = self._top_level()

    def _top_level(self) -> set[str]:
        return {entry.path for entry in os.scandir(self.system)}

    def check(self) -> None:
        assert listing(self.private) == set()
        for path in self._top_level() - self.before:
            for found in [path, *listing(path)] if os.path.isdir(path) else [path]:
                if os.path.isfile(found) and not os.path.islink(found):
                    with open(found, "rb") as f:
                        head = f.read(1 << 20)
                    assert b"data_offsets" not in head and b"weight_map" not in head, found


@pytest.fixture
def temp_watch(monkeypatch, tmp_path):
    return TempWatch(monkeypatch, tmp_path)


def no_plaintext_weights(folder) -> None:
    """No file in folder is (or starts like) a plaintext safetensors file or index."""
    for path in Path(folder).rglob("*"):
        if path.is_file() and path.suffix != ".json":
            shardseal.inspect(path)  # a container (FormatError otherwise)
            data = path.read_bytes()
            assert b"data_offsets" not in data and b"weight_map" not in data, path


def state_dict(count: int = 10) -> dict:
    torch.manual_seed(1)
    tensors = {f"layers.{i}.weight": torch.randn(64, 100) for i in range(count)}
    tensors["norm.bias"] = torch.randn(7).to(torch.bfloat16)
    tensors["steps"] = torch.tensor(3)
    return tensors


@pytest.fixture
def key():
    return shardseal.generate_key()


@pytest.fixture
def sharded(tmp_path, key):
    tensors = state_dict()
    written = ck.save_checkpoint(tensors, tmp_path / "ckpt", max_shard_size=80_000, key=key)
    return tmp_path / "ckpt", tensors, written


def test_round_trip_four_shards_sealed_index(sharded, key):
    folder, tensors, written = sharded
    assert written == [f"model-0000{i}-of-00004.safetensors.sseal" for i in range(1, 5)] + [
        "model.safetensors.index.json.sseal"]
    assert sorted(os.listdir(folder)) == sorted(written)
    no_plaintext_weights(folder)
    loaded = ck.load_checkpoint(folder, key=key)
    assert list(loaded) == sorted(tensors)
    for name, tensor in tensors.items():
        assert loaded[name].dtype == tensor.dtype and torch.equal(loaded[name], tensor)


def test_no_plaintext_temp_file(tmp_path, key, temp_watch):
    folder = tmp_path / "ckpt"
    ck.save_checkpoint(state_dict(), folder, max_shard_size=80_000, key=key)
    after_save = listing(folder)
    ck.load_checkpoint(folder, key=key)
    with ck.open_checkpoint(folder, key=key) as checkpoint:
        checkpoint.get_tensor("layers.3.weight")
    assert listing(folder) == after_save
    temp_watch.check()
    no_plaintext_weights(folder)


def test_one_shard_has_no_index(tmp_path, key):
    tensors = state_dict(2)
    assert ck.save_checkpoint(tensors, tmp_path, key=key) == ["model.safetensors.sseal"]
    loaded = ck.load_checkpoint(tmp_path, key=key)
    assert all(torch.equal(loaded[n], t) for n, t in tensors.items())
    # Its plaintext is the safetensors file safetensors writes.
    plain = shardseal.decrypt((tmp_path / "model.safetensors.sseal").read_bytes(), key)
    assert st.load(plain).keys() == tensors.keys()


def test_tied_weights_stored_once(tmp_path, key):
    tensors = state_dict(2)
    tensors["tied"] = tensors["layers.0.weight"]
    ck.save_checkpoint(tensors, tmp_path, key=key)
    assert "tied" not in ck.load_checkpoint(tmp_path, key=key)


def test_tampered_shard_fails_exactly_its_tensors(sharded, key):
    folder, tensors, _ = sharded
    with ck.open_checkpoint(folder, key=key) as checkpoint:
        weight_map = dict(checkpoint.weight_map)
    victim = "model-00002-of-00004.safetensors"
    path = folder / (victim + ck.SEALED_SUFFIX)
    data = bytearray(path.read_bytes())
    data[shardseal.inspect(path).header_size + 5] ^= 1  # its salt: the whole shard fails
    path.write_bytes(bytes(data))
    with ck.open_checkpoint(folder, key=key) as checkpoint:
        for name in tensors:
            if weight_map[name] == victim:
                with pytest.raises(AuthenticationError):
                    checkpoint.get_tensor(name)
            else:
                assert torch.equal(checkpoint.get_tensor(name), tensors[name])
    with pytest.raises(AuthenticationError):
        ck.load_checkpoint(folder, key=key)


def test_tampered_chunk_fails_only_the_tensor_in_it(tmp_path, key):
    # Two tensors of 4 chunks each per shard: chunk 6 of a shard lies inside its second one.
    tensors = {f"t{i}": torch.full((16384,), float(i)) for i in range(4)}
    ck.save_checkpoint(tensors, tmp_path, max_shard_size=2 * 4 * 16384, key=key)
    with ck.open_checkpoint(tmp_path, key=key) as checkpoint:
        file = checkpoint.weight_map["t1"]
    path = tmp_path / (file + ck.SEALED_SUFFIX)
    data = bytearray(path.read_bytes())
    data[shardseal.inspect(path).header_size + 56 + 6 * (16384 + 16) + 100] ^= 1
    path.write_bytes(bytes(data))
    failed = []
    with ck.open_checkpoint(tmp_path, key=key) as checkpoint:
        for name in checkpoint.keys():
            try:
                assert torch.equal(checkpoint.get_tensor(name), tensors[name])
            except AuthenticationError:
                failed.append(name)
    assert failed == ["t1"]


def test_swapped_shards_fail(sharded, key):
    folder, _, _ = sharded
    first, second = folder / "model-00001-of-00004.safetensors.sseal", folder / "model-00002-of-00004.safetensors.sseal"
    a, b = first.read_bytes(), second.read_bytes()
    first.write_bytes(b)
    second.write_bytes(a)
    with pytest.raises(AuthenticationError, match="another file"):
        ck.load_checkpoint(folder, key=key)


def test_shard_from_another_checkpoint_fails(tmp_path, key):
    tensors = state_dict()
    ck.save_checkpoint(tensors, tmp_path / "a", max_shard_size=80_000, key=key)
    changed = dict(tensors, **{"layers.0.weight": torch.zeros(64, 100)})
    ck.save_checkpoint(changed, tmp_path / "b", max_shard_size=80_000, key=key)
    name = "model-00001-of-00004.safetensors.sseal"
    shutil.copyfile(tmp_path / "b" / name, tmp_path / "a" / name)  # same name, same tensors
    with pytest.raises(AuthenticationError, match="another checkpoint"):
        ck.load_checkpoint(tmp_path / "a", key=key)


def test_tampered_sealed_index_fails(sharded, key):
    folder, _, _ = sharded
    index = folder / "model.safetensors.index.json.sseal"
    data = bytearray(index.read_bytes())
    data[-3] ^= 1
    index.write_bytes(bytes(data))
    with pytest.raises(AuthenticationError):
        ck.load_checkpoint(folder, key=key)


def test_wrong_key(sharded):
    folder, _, _ = sharded
    with pytest.raises(KeyNotFoundError):
        ck.load_checkpoint(folder, key=shardseal.generate_key())


def test_plain_index(tmp_path, key):
    tensors = state_dict()
    written = ck.save_checkpoint(tensors, tmp_path, max_shard_size=80_000, key=key, seal_index=False)
    assert written[-1] == "model.safetensors.index.json"
    index = json.loads((tmp_path / written[-1]).read_text())
    assert set(index["weight_map"]) == set(tensors)  # what a plain index shows: every name
    loaded = ck.load_checkpoint(tmp_path, key=key)
    assert all(torch.equal(loaded[n], t) for n, t in tensors.items())
    # An edited plain index cannot move a tensor to another shard unnoticed.
    name = next(iter(index["weight_map"]))
    index["weight_map"][name] = "model-00004-of-00004.safetensors"
    (tmp_path / written[-1]).write_text(json.dumps(index))
    with pytest.raises(AuthenticationError, match="does not hold"):
        ck.load_checkpoint(tmp_path, key=key)


def test_plain_index_cannot_drop_a_shard(tmp_path, key):
    ck.save_checkpoint(state_dict(), tmp_path, max_shard_size=80_000, key=key, seal_index=False)
    path = tmp_path / "model.safetensors.index.json"
    index = json.loads(path.read_text())
    index["weight_map"] = {n: f for n, f in index["weight_map"].items() if f != "model-00004-of-00004.safetensors"}
    path.write_text(json.dumps(index))
    with pytest.raises(AuthenticationError, match="lists 3 shards"):
        ck.load_checkpoint(tmp_path, key=key)


def test_sealed_index_cannot_be_replaced_by_a_plain_one(sharded, key):
    folder, _, _ = sharded
    with ck.open_checkpoint(folder, key=key) as checkpoint:
        index = {"metadata": {}, "weight_map": checkpoint.weight_map}
    (folder / "model.safetensors.index.json.sseal").unlink()
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(AuthenticationError, match="index was sealed"):
        ck.load_checkpoint(folder, key=key)


def test_threads_share_one_reader(sharded, key):
    from concurrent.futures import ThreadPoolExecutor

    folder, tensors, _ = sharded
    with ck.open_checkpoint(folder, key=key) as checkpoint, ThreadPoolExecutor(4) as pool:
        got = dict(zip(tensors, pool.map(checkpoint.get_tensor, tensors)))
    assert all(torch.equal(got[n], t) for n, t in tensors.items())


def test_hostile_index(tmp_path, key):
    ck.save_checkpoint(state_dict(), tmp_path, max_shard_size=80_000, key=key, seal_index=False)
    index_path = tmp_path / "model.safetensors.index.json"
    index_path.write_text(json.dumps({"weight_map": {"a": "../../etc/passwd"}}))
    with pytest.raises(FormatError, match="outside the folder"):
        ck.load_checkpoint(tmp_path, key=key)
    index_path.write_text("{not json")
    with pytest.raises(FormatError, match="not valid JSON"):
        ck.load_checkpoint(tmp_path, key=key)


def test_encrypt_and_decrypt_a_folder(tmp_path, key):
    tensors = state_dict()
    plain = tmp_path / "plain"
    plain.mkdir()
    names = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
    halves = [dict(list(tensors.items())[:6]), dict(list(tensors.items())[6:])]
    for name, half in zip(names, halves):
        st.save_file(half, plain / name, metadata={"format": "pt"})
    index = {"metadata": {"total_size": 123}, "weight_map": {t: n for n, h in zip(names, halves) for t in h}}
    (plain / "model.safetensors.index.json").write_text(json.dumps(index))
    (plain / "config.json").write_text('{"model_type": "x"}')

    written = ck.encrypt_checkpoint(plain, tmp_path / "sealed", key=key)
    assert sorted(written) == sorted([n + ".sseal" for n in names] + ["model.safetensors.index.json.sseal",
                                                                       "config.json"])
    no_plaintext_weights(tmp_path / "sealed")
    loaded = ck.load_checkpoint(tmp_path / "sealed", key=key)
    assert all(torch.equal(loaded[n], t) for n, t in tensors.items())

    ck.decrypt_checkpoint(tmp_path / "sealed", tmp_path / "again", key=key)
    for name in names:  # byte for byte
        assert (tmp_path / "again" / name).read_bytes() == (plain / name).read_bytes()
    assert json.loads((tmp_path / "again" / "model.safetensors.index.json").read_text()) == index
    assert (tmp_path / "again" / "config.json").read_text() == '{"model_type": "x"}'


def test_recipients(tmp_path):
    x25519 = pytest.importorskip("shardseal.x25519")
    identity = x25519.X25519Identity.generate()
    tensors = state_dict()
    ck.save_checkpoint(tensors, tmp_path, max_shard_size=80_000, recipients=[identity.recipient])
    loaded = ck.load_checkpoint(tmp_path, identities=[identity])
    assert all(torch.equal(loaded[n], t) for n, t in tensors.items())


def test_memory_url(key):
    fsspec = pytest.importorskip("fsspec")
    url = f"sseal::memory://ckpt-{uuid.uuid4().hex}"
    tensors = state_dict()
    try:
        ck.save_checkpoint(tensors, url, max_shard_size=80_000, key=key)
        loaded = ck.load_checkpoint(url, key=key)
        assert all(torch.equal(loaded[n], t) for n, t in tensors.items())
    finally:
        memory = fsspec.filesystem("memory")
        memory.rm(url.split("://")[1], recursive=True)


@pytest.mark.parametrize("text, expected", [("5GB", 5 * 10**9), ("500MiB", 500 * 2**20), (1000, 1000),
                                            ("2 kb", 2000), ("1.5GB", 1_500_000_000)])
def test_parse_size(text, expected):
    assert ck.parse_size(text) == expected


@pytest.mark.parametrize("bad, error", [("5 parsecs", ValueError), (0, ValueError), (-1, ValueError),
                                        (True, TypeError), (1.5, TypeError)])
def test_parse_size_refuses(bad, error):
    with pytest.raises(error):
        ck.parse_size(bad)


def test_missing_checkpoint(tmp_path, key):
    with pytest.raises(FileNotFoundError):
        ck.load_checkpoint(tmp_path, key=key)


def test_plain_index_naming_no_shard_fails(tmp_path, key):
    # An edited plain index that names no shard would bind nothing: load_checkpoint returned an
    # empty state dict (and transformers a randomly initialised model) instead of failing.
    ck.save_checkpoint(state_dict(), tmp_path, max_shard_size=80_000, key=key, seal_index=False)
    path = tmp_path / "model.safetensors.index.json"
    index = json.loads(path.read_text())
    index["weight_map"] = {}
    path.write_text(json.dumps(index))
    with pytest.raises(AuthenticationError, match="names no shard"):
        ck.load_checkpoint(tmp_path, key=key)


def test_sealed_index_cannot_be_replaced_by_an_empty_plain_one(sharded, key):
    folder, _, _ = sharded
    (folder / "model.safetensors.index.json.sseal").unlink()
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {}}))
    with pytest.raises(AuthenticationError, match="names no shard"):
        ck.load_checkpoint(folder, key=key)


def test_deeply_nested_index_is_a_format_error(tmp_path, key):
    ck.save_checkpoint(state_dict(), tmp_path, max_shard_size=80_000, key=key, seal_index=False)
    depth = 200_000
    (tmp_path / "model.safetensors.index.json").write_text('{"weight_map": ' + "[" * depth + "]" * depth + "}")
    with pytest.raises(FormatError, match="not valid JSON"):
        ck.load_checkpoint(tmp_path, key=key)


@pytest.mark.parametrize("extra", ["consolidated.safetensors", "pytorch_model.bin", "optimizer.pt"])
def test_encrypt_folder_refuses_to_copy_other_weights_in_clear(tmp_path, key, extra):
    # copy_other_files copied every other file as it is: a folder holding a second copy of the
    # weights (Mistral's consolidated.safetensors, a legacy pytorch_model.bin) or training
    # state got that copy written in clear next to the encrypted shards.
    plain = tmp_path / "plain"
    plain.mkdir()
    st.save_file(state_dict(), plain / "model.safetensors")
    (plain / "config.json").write_text('{"model_type": "x"}')
    (plain / extra).write_bytes((plain / "model.safetensors").read_bytes())
    with pytest.raises(ValueError, match=extra):
        ck.encrypt_checkpoint(plain, tmp_path / "sealed", key=key)
    assert listing(tmp_path / "sealed") == set()  # refused before anything was written
    written = ck.encrypt_checkpoint(plain, tmp_path / "sealed", key=key, copy_other_files=False)
    assert written == ["model.safetensors.sseal"]
    no_plaintext_weights(tmp_path / "sealed")


@pytest.mark.parametrize("second", [{"max_shard_size": "1GB"}, {"max_shard_size": 80_000, "seal_index": False}])
def test_saving_again_into_a_folder_loads_the_new_checkpoint(tmp_path, key, second):
    # The index of an earlier save stayed: a later unsharded save loaded the OLD weights
    # silently, and a sealed index left beside a new plain one failed as if tampered with.
    old = state_dict()
    new = {name: tensor + 1 for name, tensor in old.items()}
    ck.save_checkpoint(old, tmp_path, max_shard_size=80_000, key=key)
    ck.save_checkpoint(new, tmp_path, key=key, **second)
    loaded = ck.load_checkpoint(tmp_path, key=key)
    assert all(torch.equal(loaded[n], t) for n, t in new.items())


def test_encrypting_again_into_a_folder_loads_the_new_checkpoint(tmp_path, key):
    tensors = state_dict()
    plain = tmp_path / "plain"
    plain.mkdir()
    st.save_file(tensors, plain / "model.safetensors")
    ck.save_checkpoint({n: t + 1 for n, t in tensors.items()}, tmp_path / "sealed", max_shard_size=80_000, key=key)
    ck.encrypt_checkpoint(plain, tmp_path / "sealed", key=key)
    loaded = ck.load_checkpoint(tmp_path / "sealed", key=key)
    assert all(torch.equal(loaded[n], t) for n, t in tensors.items())


def test_a_shard_swapped_after_its_check_is_not_loaded(tmp_path, key, monkeypatch):
    # load_checkpoint checked each shard's binding on one open and bulk-read it from a second
    # one: a shard of another checkpoint swapped in between was loaded unchecked.
    import shardseal.ml.safetensors as mst

    tensors = state_dict()
    ck.save_checkpoint(tensors, tmp_path / "a", max_shard_size=80_000, key=key)
    ck.save_checkpoint({n: t + 1 for n, t in tensors.items()}, tmp_path / "b", max_shard_size=80_000, key=key)
    victim = "model-00001-of-00004.safetensors.sseal"
    original = mst.open_target
    swapped = []

    def open_then_swap(filename, *args, **kwargs):
        opened = original(filename, *args, **kwargs)
        if str(filename).endswith(victim) and not swapped:  # the attacker swaps right after the first open
            os.replace(tmp_path / "b" / victim, tmp_path / "a" / victim)
            swapped.append(filename)
        return opened

    monkeypatch.setattr(mst, "open_target", open_then_swap)
    try:
        loaded = ck.load_checkpoint(tmp_path / "a", key=key)
    except AuthenticationError:
        return
    assert swapped and all(torch.equal(loaded[n], t) for n, t in tensors.items())


def test_a_key_passed_as_the_folder_is_not_shown(tmp_path, key, monkeypatch):
    monkeypatch.chdir(tmp_path)
    secret = shardseal.generate_key().hex()
    for call in (lambda: ck.load_checkpoint(secret, key=key), lambda: ck.encrypt_checkpoint(secret, "out", key=key)):
        with pytest.raises(FileNotFoundError) as info:
            call()
        assert secret[:16] not in str(info.value)


def test_memory_url_with_a_plain_index(key):
    # The plain index went through the sseal:: filesystem (which wants a key of its own):
    # save_checkpoint failed with TypeError after writing the shards.
    fsspec = pytest.importorskip("fsspec")
    url = f"sseal::memory://ckpt-{uuid.uuid4().hex}"
    tensors = state_dict()
    try:
        ck.save_checkpoint(tensors, url, max_shard_size=80_000, key=key, seal_index=False)
        loaded = ck.load_checkpoint(url, key=key)
        assert all(torch.equal(loaded[n], t) for n, t in tensors.items())
        ck.save_checkpoint(tensors, url, key=key)  # unsharded now: the plain index goes
        assert ck.open_checkpoint(url, key=key).files() == ["model.safetensors"]
    finally:
        memory = fsspec.filesystem("memory")
        memory.rm(url.split("://")[1], recursive=True)


def test_decrypt_checkpoint_writes_the_shard_it_checked(tmp_path, key, monkeypatch):
    # decrypt_checkpoint checked a shard on one open and decrypted it from a second one: a
    # shard of another checkpoint (same key) swapped in between was written out unchecked.
    import shardseal.io.files as files

    tensors = state_dict()
    ck.save_checkpoint(tensors, tmp_path / "a", max_shard_size=80_000, key=key)
    ck.save_checkpoint({n: t + 1 for n, t in tensors.items()}, tmp_path / "b", max_shard_size=80_000, key=key)
    victim = "model-00001-of-00004.safetensors"
    expected = shardseal.decrypt((tmp_path / "a" / (victim + ".sseal")).read_bytes(), key)
    original = files.open
    swapped = []

    def open_then_swap(file, *args, **kwargs):
        opened = original(file, *args, **kwargs)
        if str(file).endswith(victim + ".sseal") and not swapped:  # the attacker swaps right after
            os.replace(tmp_path / "b" / (victim + ".sseal"), tmp_path / "a" / (victim + ".sseal"))
            swapped.append(file)
        return opened

    monkeypatch.setattr(files, "open", open_then_swap)
    try:
        ck.decrypt_checkpoint(tmp_path / "a", tmp_path / "out", key=key)
    except AuthenticationError:
        return
    assert swapped and (tmp_path / "out" / victim).read_bytes() == expected
