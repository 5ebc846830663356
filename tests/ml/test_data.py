"""shardseal.data: encrypted datasets in real DataLoaders (fork and spawn workers), random row
access that decrypts only the row's chunks, rank/worker splitting and tamper detection."""

from __future__ import annotations

import io
import os
import pickle
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch.utils.data import DataLoader  # noqa: E402

import shardseal  # noqa: E402
from shardseal import keyfile  # noqa: E402
from shardseal.ml import data  # noqa: E402
from shardseal.core.layout import CHUNK_SIZE, SEALED_CHUNK_SIZE  # noqa: E402
from shardseal.data import (  # noqa: E402
    EncryptedArrayDataset,
    EncryptedFileDataset,
    EncryptedWebDataset,
    write_npy_shard,
    write_webdataset_shards,
)
from shardseal.errors import AuthenticationError, FormatError, ShardsealError  # noqa: E402
from shardseal.keyref import EnvKey, KeyFile, RawKey  # noqa: E402

KEY = bytes(range(1, 33))
SRC = str(Path(__file__).resolve().parents[2] / "src")
N_SAMPLES = 60
PER_SHARD = 9  # 7 shards: 6 of 9 samples and one of 6


def make_samples(n: int = N_SAMPLES, seed: int = 0) -> list:
    rng = np.random.default_rng(seed)
    samples = []
    for i in range(n):
        size = int(rng.integers(0, 40_000))  # up to a few chunks, often across chunk boundaries
        samples.append({"__key__": f"sample{i:05d}", "bin": rng.bytes(size), "cls": str(i % 7)})
    return samples


def plain(sample: dict) -> dict:
    """A sample as the dataset yields it (bytes fields, no __url__)."""
    out = {k: (v.encode() if isinstance(v, str) and k != "__key__" else v) for k, v in sample.items()}
    out.pop("__url__", None)
    return out


def write_plain_tar_shards(samples: list, folder: Path) -> list:
    """The same shards in plaintext, written with tarfile alone."""
    paths = []
    for start in range(0, len(samples), PER_SHARD):
        path = folder / f"plain-{start // PER_SHARD:03d}.tar"
        with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
            for sample in samples[start : start + PER_SHARD]:
                for ext, value in plain(sample).items():
                    if ext == "__key__":
                        continue
                    info = tarfile.TarInfo(f"{sample['__key__']}.{ext}")
                    info.size = len(value)
                    tar.addfile(info, io.BytesIO(value))
        paths.append(path)
    return paths


def read_plain_tar_shards(paths: list) -> list:
    """WebDataset grouping over plaintext tars, written independently of shardseal.data."""
    result = []
    for path in paths:
        with tarfile.open(path, "r") as tar:
            for member in tar:
                key, ext = member.name.split(".", 1)
                if not result or result[-1]["__key__"] != key or result[-1].get("__shard__") != str(path):
                    result.append({"__key__": key, "__shard__": str(path)})
                result[-1][ext] = tar.extractfile(member).read()
    for sample in result:
        del sample["__shard__"]
    return result


def round_robin(per_worker: list) -> list:
    """The order a DataLoader yields an IterableDataset's items in (in_order=True): one item
    from each worker in turn, skipping workers that are done."""
    out, iters = [], [iter(items) for items in per_worker]
    while iters:
        alive = []
        for it in iters:
            item = next(it, None)
            if item is not None:
                out.append(item)
                alive.append(it)
        iters = alive
    return out


def expected_order(samples: list, shard_order: list, workers: int, rank: int = 0, world: int = 1) -> list:
    """The keys a DataLoader over shards (listed by index in shard_order) yields."""
    shards = [samples[i * PER_SHARD : (i + 1) * PER_SHARD] for i in range(len(shard_order))]
    mine = shard_order[rank::world]
    per_worker = [[s["__key__"] for i in mine[w::workers] for s in shards[i]] for w in range(workers)]
    return round_robin(per_worker)


@pytest.fixture(scope="module")
def samples():
    return make_samples()


@pytest.fixture(scope="module")
def shard_dir(tmp_path_factory, samples):
    folder = tmp_path_factory.mktemp("wds")
    paths = write_webdataset_shards(samples, str(folder / "train-%03d.tar.sseal"), KEY,
                                    max_samples_per_shard=PER_SHARD)
    assert len(paths) == 7
    return folder


@pytest.fixture(scope="module")
def shard_paths(shard_dir):
    return [str(p) for p in sorted(shard_dir.glob("*.sseal"))]


@pytest.fixture(scope="module")
def key_path(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("key") / "team.key"
    keyfile.write_key_file(path, KEY)
    return path


def keys_of(items) -> list:
    return [item["__key__"] for item in items]


# ---------------------------------------------------------------------------------------
# EncryptedWebDataset


def test_webdataset_round_trip_matches_plaintext_shards(samples, shard_paths, tmp_path):
    got = list(EncryptedWebDataset(shard_paths, KEY))
    assert [plain(s) for s in got] == [plain(s) for s in samples]
    assert all(s["__url__"] in shard_paths for s in got)
    # The same samples through plaintext tar shards and tarfile alone.
    assert read_plain_tar_shards(write_plain_tar_shards(samples, tmp_path)) == [plain(s) for s in got]
    # Each decrypted shard is an ordinary tar file.
    out = tmp_path / "shard0.tar"
    shardseal.decrypt_file(shard_paths[0], out, KEY)
    assert read_plain_tar_shards([out]) == [plain(s) for s in samples[:PER_SHARD]]


def test_webdataset_shard_lists(shard_dir, shard_paths):
    assert data.expand_urls(shard_dir) == shard_paths
    assert data.expand_urls(str(shard_dir / "train-{000..006}.tar.sseal")) == shard_paths
    assert data.expand_urls(str(shard_dir / "train-00{5,6}.tar.sseal")) == shard_paths[5:]
    assert data.expand_urls(shard_paths[0]) == shard_paths[:1]
    with pytest.raises(ValueError):
        data.expand_urls([])


def test_webdataset_decoders(samples, shard_paths):
    ds = EncryptedWebDataset(shard_paths[:1], KEY, decode={"cls": int, "bin": len})
    assert [(s["cls"], s["bin"]) for s in ds] == [(int(s["cls"]), len(s["bin"])) for s in samples[:PER_SHARD]]
    ds = EncryptedWebDataset(shard_paths[:1], KEY, decode=lambda s: s["__key__"])
    assert list(ds) == keys_of(samples[:PER_SHARD])
    with pytest.raises(TypeError):
        EncryptedWebDataset(shard_paths, KEY, decode=42)


def test_webdataset_fsspec_urls(samples, shard_paths):
    fsspec = pytest.importorskip("fsspec")
    fs = fsspec.filesystem("memory")
    urls = []
    for path in shard_paths[:2]:
        url = f"memory://shardseal-test-data/{Path(path).name}"
        fs.pipe_file(url, Path(path).read_bytes())
        urls.append(url)
    expected = [plain(s) for s in samples[: 2 * PER_SHARD]]
    try:
        assert [plain(s) for s in EncryptedWebDataset(urls, KEY)] == expected
        assert [plain(s) for s in EncryptedWebDataset(["sseal::" + u for u in urls], KEY)] == expected
        assert [plain(s) for s in EncryptedWebDataset([Path(p).as_uri() for p in shard_paths[:2]], KEY)] == expected
    finally:
        fs.rm("/shardseal-test-data", recursive=True)


@pytest.mark.parametrize("shuffle", [False, True])
def test_webdataset_dataloader_fork(samples, shard_paths, shuffle):
    """2 fork workers, raw key bytes: every sample exactly once, in the order the shard split
    and the DataLoader's round robin give; the same order again for the same seed and epoch."""
    ds = EncryptedWebDataset(shard_paths, KEY, shuffle_shards=shuffle, seed=1234, threads=2)
    runs = {}
    for epoch in (0, 1, 0):
        ds.set_epoch(epoch)
        loader = DataLoader(ds, batch_size=None, num_workers=2, multiprocessing_context="fork")
        got = [plain(s) for s in loader]
        order = [shard_paths.index(u) for u in ds.shard_order(epoch)]
        assert keys_of(got) == expected_order(samples, order, workers=2)
        assert sorted(got, key=lambda s: s["__key__"]) == [plain(s) for s in samples]
        runs.setdefault(epoch, []).append(keys_of(got))
    assert runs[0][0] == runs[0][1]
    assert (runs[0][0] != runs[1][0]) == shuffle
    if shuffle:
        assert EncryptedWebDataset(shard_paths, KEY, shuffle_shards=True, seed=99).shard_order(0) != ds.shard_order(0)


def test_webdataset_dataloader_spawn_key_file(samples, shard_paths, key_path):
    ds = EncryptedWebDataset(shard_paths, KeyFile(key_path), shuffle_shards=True, seed=7)
    ds.set_epoch(3)
    loader = DataLoader(ds, batch_size=None, num_workers=2, multiprocessing_context="spawn")
    got = [plain(s) for s in loader]
    order = [shard_paths.index(u) for u in ds.shard_order()]
    assert keys_of(got) == expected_order(samples, order, workers=2)
    assert sorted(got, key=lambda s: s["__key__"]) == [plain(s) for s in samples]


@pytest.mark.filterwarnings("ignore:Got pickle error")
def test_spawn_with_raw_key_bytes_fails_clearly(shard_paths):
    ds = EncryptedWebDataset(shard_paths, KEY)
    loader = DataLoader(ds, batch_size=None, num_workers=2, multiprocessing_context="spawn")
    with pytest.raises(TypeError) as info:
        next(iter(loader))
    message = str(info.value)
    assert "KeyFile" in message and "EnvKey" in message and "allow_pickle=True" in message
    for form in (KEY, KEY.hex().encode()):
        assert form not in message.encode()


@pytest.mark.parametrize("workers", [0, 2])
def test_ranks_partition_the_shards(samples, shard_paths, monkeypatch, workers):
    """WORLD_SIZE=2 and RANK=0/1 in the environment, as torchrun sets them."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    seen = []
    for rank in (0, 1):
        monkeypatch.setenv("RANK", str(rank))
        ds = EncryptedWebDataset(shard_paths, KEY, shuffle_shards=True, seed=5)
        loader = DataLoader(ds, batch_size=None, num_workers=workers,
                            multiprocessing_context="fork" if workers else None)
        got = keys_of(loader)
        order = [shard_paths.index(u) for u in ds.shard_order()]
        assert got == expected_order(samples, order, workers=max(1, workers), rank=rank, world=2)
        seen.append(got)
    assert not set(seen[0]) & set(seen[1])
    assert sorted(seen[0] + seen[1]) == keys_of(samples)
    assert len(seen[0]) + len(seen[1]) == N_SAMPLES


def test_bad_rank_environment(shard_paths, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "2")
    with pytest.raises(ValueError, match="RANK"):
        list(EncryptedWebDataset(shard_paths, KEY))


def test_workers_split_the_shards_in_process(samples, shard_paths, monkeypatch):
    class Info:
        def __init__(self, id, num_workers):
            self.id, self.num_workers = id, num_workers

    ds = EncryptedWebDataset(shard_paths, KEY)
    parts = []
    for worker in range(3):
        monkeypatch.setattr(data, "_worker_info", lambda w=worker: Info(w, 3))
        parts.append(keys_of(ds))
    assert sorted(sum(parts, [])) == keys_of(samples)
    assert parts[0] == keys_of(samples[0:9] + samples[27:36] + samples[54:])


def _tampered_copy(path: str, folder: Path, where: str) -> str:
    blob = bytearray(Path(path).read_bytes())
    if where == "middle":
        blob[len(blob) // 2] ^= 1
    elif where == "last byte":  # inside the final chunk: only tar padding there
        blob[-1] ^= 1
    elif where == "truncated":
        del blob[-SEALED_CHUNK_SIZE // 2 :]
    out = folder / Path(path).name
    out.write_bytes(bytes(blob))
    return str(out)


@pytest.mark.parametrize("where", ["middle", "last byte", "truncated"])
def test_tampered_shard_raises_from_iteration(samples, shard_paths, tmp_path, where):
    bad = _tampered_copy(shard_paths[1], tmp_path, where)
    urls = [shard_paths[0], bad, shard_paths[2]]
    yielded = []
    with pytest.raises(ShardsealError) as info:
        for sample in EncryptedWebDataset(urls, KEY):
            yielded.append(sample["__key__"])
    if where != "truncated":
        assert isinstance(info.value, AuthenticationError)
    # The good shard came first; the bad one never yields its last sample (it is held back
    # until the whole shard, final chunk included, has authenticated); nothing after it.
    assert yielded[:PER_SHARD] == keys_of(samples[:PER_SHARD])
    assert samples[2 * PER_SHARD - 1]["__key__"] not in yielded
    assert len(yielded) < 2 * PER_SHARD


def test_tampered_shard_raises_through_dataloader(shard_paths, tmp_path):
    urls = list(shard_paths)
    urls[3] = _tampered_copy(shard_paths[3], tmp_path, "middle")
    loader = DataLoader(EncryptedWebDataset(urls, KEY), batch_size=None, num_workers=2,
                        multiprocessing_context="fork")
    iterator = iter(loader)
    try:
        with pytest.raises(AuthenticationError):
            for _ in iterator:
                pass
    finally:
        # Left to the garbage collector, an iterator whose worker raised takes ~10 s to
        # stop its workers (a torch behaviour, also with plain datasets).
        iterator._shutdown_workers()


def test_wrong_key_raises(shard_paths):
    with pytest.raises(shardseal.KeyNotFoundError):
        list(EncryptedWebDataset(shard_paths, bytes(32)))


# ---------------------------------------------------------------------------------------
# write_webdataset_shards


def test_write_shards_limits(samples, tmp_path):
    paths = write_webdataset_shards(samples, str(tmp_path / "s-%04d.tar.sseal"), KEY,
                                    max_bytes_per_shard=100_000, start_index=10)
    assert Path(paths[0]).name == "s-0010.tar.sseal" and len(paths) > 5
    sizes = [shardseal.inspect(Path(p).read_bytes()).plaintext_size for p in paths]
    assert all(size <= 100_000 for size in sizes)
    assert [plain(s) for s in EncryptedWebDataset(paths, KEY)] == [plain(s) for s in samples]
    paths = write_webdataset_shards(iter(samples), str(tmp_path / "n-%d.tar.sseal"), RawKey(KEY),
                                    max_samples_per_shard=25)
    assert len(paths) == 3
    assert keys_of(EncryptedWebDataset(paths[2], KEY)) == keys_of(samples[50:])


def test_write_shards_one_large_sample_gets_its_own_shard(tmp_path):
    samples = [{"__key__": "a", "x": b"1" * 10}, {"__key__": "b", "x": b"2" * 50_000},
               {"__key__": "c", "x": b"3" * 10}]
    paths = write_webdataset_shards(samples, str(tmp_path / "%d.tar.sseal"), KEY, max_bytes_per_shard=20_000)
    assert [keys_of(EncryptedWebDataset(p, KEY)) for p in paths] == [["a"], ["b"], ["c"]]


def test_write_shards_field_types_and_names(tmp_path):
    samples = [{"__key__": "dir/sub/x001", "seg.png": np.arange(4, dtype=np.uint8), "txt": "héllo",
                "__url__": "ignored", "long" + "e" * 150: b"x"}]
    paths = write_webdataset_shards(samples, str(tmp_path / "%d.tar.sseal"), KEY)
    (got,) = list(EncryptedWebDataset(paths, KEY))
    assert got["__key__"] == "dir/sub/x001"
    assert got["seg.png"] == bytes(range(4)) and got["txt"] == "héllo".encode()
    assert got["long" + "e" * 150] == b"x"


@pytest.mark.parametrize("sample", [
    {"x": b"no key"}, {"__key__": "a.b", "x": b""}, {"__key__": "", "x": b""},
    {"__key__": "only"}, {"__key__": "k", "x": 3.5}, {"__key__": "k", "a/b": b""},
])
def test_write_shards_rejects_bad_samples(sample, tmp_path):
    with pytest.raises((ValueError, TypeError)):
        write_webdataset_shards([sample], str(tmp_path / "%d.tar.sseal"), KEY)
    assert not list(tmp_path.iterdir())  # the aborted shard left nothing behind


def test_write_shards_failure_discards_the_open_shard(samples, tmp_path):
    def broken():
        yield from samples[:12]
        raise RuntimeError("source failed")

    with pytest.raises(RuntimeError, match="source failed"):
        write_webdataset_shards(broken(), str(tmp_path / "%d.tar.sseal"), KEY, max_samples_per_shard=10)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["0.tar.sseal"]
    assert keys_of(EncryptedWebDataset(str(tmp_path / "0.tar.sseal"), KEY)) == keys_of(samples[:10])


@pytest.mark.parametrize("pattern", ["plain.tar.sseal", "shard-%%d.tar.sseal"])
def test_write_shards_needs_a_numbered_pattern(pattern, tmp_path):
    with pytest.raises(ValueError, match="%-field"):
        write_webdataset_shards([], str(tmp_path / pattern), KEY)


# ---------------------------------------------------------------------------------------
# EncryptedArrayDataset and write_npy_shard


@pytest.fixture(scope="module")
def array():
    return np.random.default_rng(3).standard_normal((700, 37)).astype(np.float32)  # 148-byte rows


@pytest.fixture(scope="module")
def array_path(tmp_path_factory, array):
    path = tmp_path_factory.mktemp("npy") / "rows.npy.sseal"
    write_npy_shard(array, path, KEY)
    return path


class _PlainRows(torch.utils.data.Dataset):
    def __init__(self, array):
        self.array = array

    def __len__(self):
        return len(self.array)

    def __getitem__(self, i):
        return self.array[i].copy()


def test_npy_shard_is_an_npy_file(array, array_path):
    restored = np.load(io.BytesIO(shardseal.decrypt(array_path.read_bytes(), KEY)))
    np.testing.assert_array_equal(restored, array)


@pytest.mark.parametrize("value", [
    np.arange(10, dtype=">i8"),
    np.asfortranarray(np.arange(60, dtype=np.float64).reshape(6, 10)),
    np.zeros((3, 0), np.int16),
    np.zeros(5, dtype=[("a", "<i4"), ("b", "S3", (2,))]),
    np.arange(24, dtype=np.uint8).reshape(2, 3, 4)[:, ::2],
    np.zeros((6, 2), dtype=[("名", "<i4")]),  # a non-Latin-1 field name: .npy format 3.0
])
@pytest.mark.filterwarnings("ignore:Stored array in format 3.0")
def test_array_dataset_rows(value, tmp_path):
    path = tmp_path / "a.sseal"
    write_npy_shard(value, path, KEY)
    ds = EncryptedArrayDataset(path, KEY)
    assert len(ds) == len(value) and ds.shape == value.shape and ds.dtype == value.dtype
    for i in range(len(value)):
        row = ds[i]
        if value.ndim == 1:
            assert row == value[i] and not isinstance(row, np.ndarray)
        else:
            np.testing.assert_array_equal(row, value[i])
            assert row.flags.writeable and row.dtype == value.dtype
    np.testing.assert_array_equal(np.asarray(ds[-1]), np.asarray(value[-1]))
    with pytest.raises(IndexError):
        ds[len(value)]


def test_array_dataset_shuffled_dataloader_fork(array, array_path):
    """2 fork workers, shuffle=True with a seeded generator: the same batches as the same
    DataLoader over the plaintext array."""
    def run(dataset, workers):
        loader = DataLoader(dataset, batch_size=32, shuffle=True, num_workers=workers,
                            generator=torch.Generator().manual_seed(11),
                            multiprocessing_context="fork" if workers else None)
        return [batch for batch in loader]

    got = run(EncryptedArrayDataset(array_path, KEY), 2)
    expected = run(_PlainRows(array), 0)
    assert len(got) == len(expected) == 22
    for a, b in zip(got, expected):
        assert torch.equal(a, b)
    assert not torch.equal(torch.cat(got), torch.from_numpy(array))  # it was shuffled


def test_array_dataset_dataloader_spawn_env_key(array, array_path, monkeypatch):
    monkeypatch.setenv("SHARDSEAL_TEST_KEY", keyfile.format_key_file(KEY))
    ds = EncryptedArrayDataset(array_path, EnvKey("SHARDSEAL_TEST_KEY"))
    loader = DataLoader(ds, batch_size=100, shuffle=True, num_workers=2, multiprocessing_context="spawn",
                        generator=torch.Generator().manual_seed(5))
    got = torch.cat(list(loader))
    reference = DataLoader(_PlainRows(array), batch_size=100, shuffle=True,
                           generator=torch.Generator().manual_seed(5))
    expected = torch.cat(list(reference))
    assert torch.equal(got, expected)
    assert sorted(map(tuple, got.tolist())) == sorted(map(tuple, array.tolist()))


class _CountingKeys:
    """Wraps a reader's MessageKeys and records the chunk indices each call decrypts."""

    def __init__(self, inner):
        self.inner = inner
        self.chunks: list = []

    def open_chunks_into(self, first, sealed, out, final, threads):
        count = -(-len(sealed) // SEALED_CHUNK_SIZE)
        self.chunks.extend(range(first, first + count))
        return self.inner.open_chunks_into(first, sealed, out, final, threads)

    def read_into(self, fd, data_start, plaintext_size, offset, out, threads):
        end = min(offset + len(out), plaintext_size)
        if offset < end:
            self.chunks.extend(range(offset // CHUNK_SIZE, (end - 1) // CHUNK_SIZE + 1))
        return self.inner.read_into(fd, data_start, plaintext_size, offset, out, threads)

    def __getattr__(self, name):
        return getattr(self.inner, name)


@pytest.mark.parametrize("row_bytes", [148, 5000, 100_000])
def test_row_reads_decrypt_only_their_chunks(tmp_path, row_bytes):
    rows = 40 if row_bytes > 10_000 else 600
    value = np.random.default_rng(0).integers(0, 255, (rows, row_bytes), dtype=np.uint8)
    path = tmp_path / "rows.sseal"
    write_npy_shard(value, path, KEY)
    ds = EncryptedArrayDataset(path, KEY, cache_chunks=4)
    reader = ds._reader()
    counting = reader._keys = _CountingKeys(reader._keys)
    offset = ds._data_offset
    total_chunks = -(-(offset + value.nbytes) // CHUNK_SIZE)
    for i in [rows // 2, 1, rows - 2, rows // 3 + 1, rows - 1]:
        counting.chunks.clear()
        reader._cache.clear()  # rows share chunks: count each read from a cold cache
        np.testing.assert_array_equal(ds[i], value[i])
        start, end = offset + i * row_bytes, offset + (i + 1) * row_bytes
        wanted = list(range(start // CHUNK_SIZE, (end - 1) // CHUNK_SIZE + 1))
        if end == offset + value.nbytes:
            assert wanted[-1] == total_chunks - 1  # the last row's read ends in the final chunk
        assert sorted(counting.chunks) == wanted
        assert len(wanted) < total_chunks / 4
    if row_bytes < CHUNK_SIZE:
        counting.chunks.clear()
        ds[rows - 1]
        assert counting.chunks == []  # its chunk is still in the reader's cache


def test_array_dataset_errors(tmp_path):
    not_npy = tmp_path / "x.sseal"
    not_npy.write_bytes(shardseal.encrypt(b"just some bytes, no npy header", KEY))
    with pytest.raises(FormatError, match="not an .npy"):
        EncryptedArrayDataset(not_npy, KEY)
    fortran = io.BytesIO()
    np.lib.format.write_array(fortran, np.asfortranarray(np.ones((3, 4))))
    path = tmp_path / "f.sseal"
    path.write_bytes(shardseal.encrypt(fortran.getvalue(), KEY))
    with pytest.raises(FormatError, match="Fortran"):
        EncryptedArrayDataset(path, KEY)
    huge = bytearray(b"\x93NUMPY\x02\x00") + (2**20).to_bytes(4, "little") + b" " * 100
    path.write_bytes(shardseal.encrypt(bytes(huge), KEY))
    with pytest.raises(FormatError, match="header"):
        EncryptedArrayDataset(path, KEY)
    short = io.BytesIO()
    np.save(short, np.ones((10, 3)))
    path.write_bytes(shardseal.encrypt(short.getvalue()[:-8], KEY))
    with pytest.raises(FormatError, match="describes"):
        EncryptedArrayDataset(path, KEY)
    with pytest.raises(ValueError):
        write_npy_shard(np.float32(1.0), tmp_path / "scalar.sseal", KEY)
    with pytest.raises(TypeError):
        write_npy_shard(np.array([object()]), tmp_path / "obj.sseal", KEY)
    with pytest.raises(shardseal.KeyNotFoundError):
        EncryptedArrayDataset(not_npy, bytes(32))


def test_tampered_row_raises(array, array_path, tmp_path):
    blob = bytearray(array_path.read_bytes())
    header = shardseal.inspect(bytes(blob)).header_size
    chunk = 5
    blob[header + 32 + chunk * SEALED_CHUNK_SIZE + 100] ^= 1  # 32: salt + commitment
    path = tmp_path / "bad.sseal"
    path.write_bytes(bytes(blob))
    ds = EncryptedArrayDataset(path, KEY)
    row = (chunk * CHUNK_SIZE + 1000 - ds._data_offset) // array[0].nbytes
    np.testing.assert_array_equal(ds[0], array[0])
    with pytest.raises(AuthenticationError):
        ds[row]


# ---------------------------------------------------------------------------------------
# EncryptedFileDataset


@pytest.fixture(scope="module")
def file_dir(tmp_path_factory, samples):
    folder = tmp_path_factory.mktemp("files")
    for i, sample in enumerate(samples[:24]):
        sub = folder / f"part{i % 3}"
        sub.mkdir(exist_ok=True)
        (sub / f"{sample['__key__']}.bin.sseal").write_bytes(shardseal.encrypt(sample["bin"], KEY))
    (folder / "notes.txt").write_text("not a sample")
    return folder


def _file_order(samples) -> list:
    return sorted(samples[:24], key=lambda s: (f"part{int(s['__key__'][6:]) % 3}", s["__key__"]))


def test_file_dataset(samples, file_dir):
    ds = EncryptedFileDataset(file_dir, KEY)
    expected = _file_order(samples)
    assert len(ds) == 24 and ds.files[0].startswith(str(file_dir / "part0"))
    assert [ds[i] for i in range(len(ds))] == [s["bin"] for s in expected]
    assert EncryptedFileDataset(ds.files[:2], KEY, decode=len)[1] == len(expected[1]["bin"])
    assert ds[-1] == expected[-1]["bin"]
    with pytest.raises(IndexError):
        ds[24]


def test_file_dataset_empty_folder(tmp_path):
    with pytest.raises(ValueError, match="no \\*.sseal files"):
        EncryptedFileDataset(tmp_path, KEY)


def _length(b: bytes) -> int:
    return len(b)


def test_file_dataset_dataloader_fork_after_parent_used_the_pool(samples, file_dir, tmp_path):
    """Fork workers decrypt multi-MiB files on 2 threads: the native thread pool, already
    running in the parent, is recreated in each child (the pool takes >= 128 chunks)."""
    shardseal.decrypt(shardseal.encrypt(bytes(8 * 2**20), KEY, threads=2), KEY, threads=2)
    rng = np.random.default_rng(9)
    contents = [rng.bytes(n) for n in (3 * 2**20, 1000, 5 * 2**20 + 7, 0, 2**22, 70_000)]
    for i, content in enumerate(contents):
        (tmp_path / f"{i}.sseal").write_bytes(shardseal.encrypt(content, KEY))
    ds = EncryptedFileDataset(tmp_path, KEY, threads=2)
    assert ds[0] == contents[0]  # the parent resolved the key and used the pool first

    def run(dataset, workers):
        return list(DataLoader(dataset, batch_size=None, shuffle=True, num_workers=workers,
                               multiprocessing_context="fork" if workers else None,
                               generator=torch.Generator().manual_seed(3)))

    got = run(ds, 2)
    assert got == run(contents, 0)
    assert got != contents
    ds = EncryptedFileDataset(file_dir, KEY, decode=_length)
    assert run(ds, 2) == run([len(s["bin"]) for s in _file_order(samples)], 0)


# ---------------------------------------------------------------------------------------
# Per-process state, pickling, torch-less import


def test_datasets_pickle_without_key_material(shard_paths, array_path, file_dir, key_path):
    for ds in (EncryptedWebDataset(shard_paths, KeyFile(key_path)),
               EncryptedArrayDataset(array_path, KeyFile(key_path)),
               EncryptedFileDataset(file_dir, KeyFile(key_path))):
        for _ in ds if isinstance(ds, EncryptedWebDataset) else [ds[0]]:
            pass  # key resolved and files opened in this process
        blob = pickle.dumps(ds)
        assert KEY not in blob and KEY.hex().encode() not in blob
        clone = pickle.loads(blob)
        assert clone._local.get() == {}
        first = next(iter(clone)) if isinstance(clone, EncryptedWebDataset) else clone[0]
        assert first is not None
        assert KEY not in repr(ds).encode()
    with pytest.raises(TypeError, match="allow_pickle"):
        pickle.dumps(EncryptedArrayDataset(array_path, KEY))
    clone = pickle.loads(pickle.dumps(EncryptedArrayDataset(array_path, RawKey(KEY, allow_pickle=True))))
    assert clone[0].shape == (37,)


def test_forked_child_reopens_files(array_path, monkeypatch):
    ds = EncryptedArrayDataset(array_path, KEY)
    ds[0]
    parent_reader = ds._reader()
    assert ds._reader() is parent_reader
    monkeypatch.setattr(os, "getpid", lambda: -1)  # as if in a forked child
    child_reader = ds._reader()
    assert child_reader is not parent_reader
    assert ds._reader() is child_reader
    ds.close()
    assert child_reader.closed


def test_dataset_key_arguments(shard_paths, key_path):
    with pytest.raises(TypeError, match="KeyFile"):
        EncryptedWebDataset(shard_paths, str(key_path))
    with pytest.raises(ValueError):
        EncryptedWebDataset(shard_paths, b"short")
    with pytest.raises(ValueError, match="threads"):
        EncryptedWebDataset(shard_paths, KEY, threads=0)


def test_data_module_without_torch(tmp_path):
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import numpy as np, shardseal.data as d\n"
        f"d.write_npy_shard(np.ones(3), {str(tmp_path / 'a.sseal')!r}, bytes(range(1, 33)))\n"
        f"print(d.write_webdataset_shards([{{'__key__': 'k', 'x': b'1'}}], {str(tmp_path / '%d.sseal')!r}, bytes(32)))\n"
        "try:\n"
        f"    d.EncryptedArrayDataset({str(tmp_path / 'a.sseal')!r}, bytes(range(1, 33)))\n"
        "except ImportError as exc:\n"
        "    print('ImportError:', exc)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": SRC}, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "ImportError:" in result.stdout and 'shardseal[torch]' in result.stdout
