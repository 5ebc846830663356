"""shardseal.dask on real clusters (distributed.LocalCluster, worker processes, no mocks):
datasets of 64 files encrypted, verified, rotated and decrypted; resumed runs; a worker killed
mid-run; raw keys refused; dask.bag / dask.array readers; the same over TLS."""

from __future__ import annotations

import hashlib
import os
import signal
from pathlib import Path

import numpy as np
import pytest

import shardseal
from shardseal import keyfile
from shardseal.keyref import KeyFile, RawKey
from shardseal.manifest import Dataset, DatasetKey
from shardseal.x25519 import X25519Identity, write_identity_file

distributed = pytest.importorskip("distributed", reason="dask.distributed is not installed (pip install shardseal[dask])")
sdask = pytest.importorskip("shardseal.dask")

N_FILES = 64


@pytest.fixture(scope="module")
def client():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as client:
        yield client


def _make_source(folder: Path, n: int = N_FILES) -> dict:
    """n files of varied sizes (empty, one chunk, across chunks) in two sub-folders."""
    contents = {}
    for i in range(n):
        size = (0, 1, 16383, 16384, 16385, 40000)[i % 6] + i
        name = f"{'a' if i % 2 else 'b'}/sample-{i:03d}.bin"
        data = hashlib.sha256(str(i).encode()).digest() * (size // 32 + 1)
        contents[name] = data[:size]
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(contents[name])
    return contents


def _identity(tmp_path: Path, name: str) -> tuple:
    identity = X25519Identity.generate()
    path = tmp_path / f"{name}.sseal-id"
    write_identity_file(path, identity)
    return identity, str(path)


def _shard_names(folder: Path) -> list:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def test_dataset_encrypted_verified_rotated_and_decrypted(client, tmp_path):
    contents = _make_source(tmp_path / "src")
    alice, alice_path = _identity(tmp_path, "alice")
    bob, bob_path = _identity(tmp_path, "bob")
    dst = tmp_path / "dst"

    report = sdask.encrypt_dataset(tmp_path / "src", dst, key=DatasetKey(dst, alice_path),
                                   recipients=[str(alice.recipient)], client=client)

    assert (report.files, report.skipped, report.nbytes) == (N_FILES, 0, sum(map(len, contents.values())))
    assert _shard_names(dst) == sorted(["manifest.sseal"] + [n + ".sseal" for n in contents])
    with Dataset.open(dst, identities=[alice]) as ds:  # the local API reads it byte for byte
        assert [s.name for s in ds.shards] == sorted(n + ".sseal" for n in contents)
        assert set(ds.shards) == set(report.shards)
        for name, data in contents.items():
            assert shardseal.decrypt((dst / (name + ".sseal")).read_bytes(), key=ds.key) == data
    assert shardseal.manifest.verify(dst, identities=[alice], deep=True).ok

    assert sdask.verify(dst, identities=[alice_path], client=client, deep=True).ok
    (dst / "b/sample-000.bin.sseal").write_bytes((dst / "b/sample-002.bin.sseal").read_bytes())
    (dst / "extra.sseal").write_bytes(b"x")
    report = sdask.verify(dst, identities=[bob_path, alice_path], client=client, deep=False)
    assert [(p.name, p.kind) for p in report.problems] == [
        ("b/sample-000.bin.sseal", "modified"), ("extra.sseal", "unlisted")]
    assert report.summary() == shardseal.manifest.verify(dst, identities=[alice]).summary()

    rotated = sdask.rotate(dst, identities=[alice_path], add=[str(bob.recipient)], client=client)
    assert rotated.files_rewrapped == 1  # the manifest: shards are under the dataset key
    with Dataset.open(dst, identities=[bob]):
        pass


def test_envelope_shards_for_public_recipients_rotated_and_decrypted(client, tmp_path):
    contents = _make_source(tmp_path / "src")
    alice, alice_path = _identity(tmp_path, "alice")
    bob, bob_path = _identity(tmp_path, "bob")
    dst = tmp_path / "dst"

    report = sdask.encrypt_dataset(f"file://{tmp_path}/src", f"file://{dst}", recipients=[alice.recipient],
                                   client=client)
    assert report.files == N_FILES and report.manifest is None
    assert all(hashlib.sha256((dst / s.name).read_bytes()).hexdigest() == s.sha256 for s in report.shards)
    again = sdask.encrypt_dataset(tmp_path / "src", dst, recipients=[str(alice.recipient)], client=client)
    assert (again.files, again.skipped) == (0, N_FILES)  # header, key ids and length checked
    assert again.shards == report.shards

    rotated = sdask.rotate(dst, identities=[alice_path], add=[str(bob.recipient)], client=client)
    assert rotated.files_rewrapped == N_FILES and not rotated.failed
    for name, data in contents.items():
        assert shardseal.decrypt((dst / (name + ".sseal")).read_bytes(), identities=[bob]) == data

    out = tmp_path / "out"
    decrypted = sdask.decrypt_dataset(dst, out, identities=[bob_path], client=client)
    assert decrypted.files == N_FILES
    assert {n: (out / n).read_bytes() for n in contents} == contents
    assert _shard_names(out) == sorted(contents)


def test_rerun_skips_good_shards_and_rewrites_damaged_ones(client, tmp_path, key):
    contents = _make_source(tmp_path / "src")
    keyfile.write_key_file(tmp_path / "team.key", key)
    ref = KeyFile(tmp_path / "team.key")
    dst = tmp_path / "dst"
    first = sdask.encrypt_dataset(tmp_path / "src", dst, key=ref, client=client)
    damaged = dst / "a/sample-001.bin.sseal"
    data = bytearray(damaged.read_bytes())
    data[-1] ^= 1  # same size, fails authentication
    damaged.write_bytes(bytes(data))
    (dst / "b/sample-004.bin.sseal").unlink()

    second = sdask.encrypt_dataset(tmp_path / "src", dst, key=ref, client=client)

    assert (second.files, second.skipped) == (2, N_FILES - 2)
    assert second.shards[2:] == first.shards[2:] or len(second.shards) == N_FILES
    for name, data in contents.items():
        assert shardseal.decrypt((dst / (name + ".sseal")).read_bytes(), key=key) == data


def test_worker_killed_mid_run_then_rerun_completes(client, tmp_path, key):
    contents = _make_source(tmp_path / "src")
    keyfile.write_key_file(tmp_path / "team.key", key)
    ref = KeyFile(tmp_path / "team.key")
    marker = str(tmp_path / "killed")
    dst = tmp_path / "dst"

    def kill_once(name):  # nested: pickled by value into the task
        if name == "a/sample-011.bin.sseal" and not os.path.exists(marker):
            open(marker, "w").close()
            os.kill(os.getpid(), signal.SIGKILL)  # part of the shard is on disk, under a temp name

    try:  # dask re-runs the lost task on the restarted worker, or gives up (KilledWorker)
        sdask.encrypt_dataset(tmp_path / "src", dst, key=ref, client=client, checkpoint=kill_once,
                              batch_files=8)
    except distributed.KilledWorker:
        pass
    assert os.path.exists(marker)

    report = sdask.encrypt_dataset(tmp_path / "src", dst, key=ref, client=client, batch_files=8)

    assert report.files + report.skipped == N_FILES and report.skipped > 0
    assert _shard_names(dst) == sorted(n + ".sseal" for n in contents)  # no temp file, no duplicate
    assert len({s.name for s in report.shards}) == N_FILES
    for name, data in contents.items():
        assert shardseal.decrypt((dst / (name + ".sseal")).read_bytes(), key=key) == data


def test_raw_key_refused_without_showing_it(client, tmp_path, key):
    _make_source(tmp_path / "src", 2)
    for raw in (key, bytearray(key), RawKey(key)):
        with pytest.raises(TypeError, match="refusing a raw key .* 32 bytes") as caught:
            sdask.encrypt_dataset(tmp_path / "src", tmp_path / "dst", key=raw, client=client)
        message = str(caught.value)
        assert key.hex() not in message and repr(key) not in message and RawKey(key).key_id not in message
    assert not (tmp_path / "dst").exists()
    with pytest.raises(TypeError, match="refusing a raw key"):
        sdask.read_bag(f"{tmp_path}/*.sseal", key)

    report = sdask.encrypt_dataset(tmp_path / "src", tmp_path / "dst", key=key, client=client, allow_raw_key=True,
                                   digests=False)
    assert report.files == 2 and report.shards == ()
    with pytest.raises(ValueError, match="digests=False"):
        sdask.encrypt_dataset(tmp_path / "src", tmp_path / "ds", key=DatasetKey(tmp_path / "ds", "id"),
                              recipients=[str(X25519Identity.generate().recipient)], digests=False)
    assert not (tmp_path / "ds").exists()


def test_unpicklable_recipient_objects_are_refused(tmp_path):
    from shardseal.keyring import Keyring

    ring = Keyring.create(tmp_path / "ring")
    ring.add("k")
    _make_source(tmp_path / "src", 1)
    with pytest.raises(TypeError, match="recipient strings"):
        sdask.encrypt_dataset(tmp_path / "src", tmp_path / "dst", recipients=[ring.recipient()])


def test_read_array_and_read_bag(client, tmp_path, key):
    from shardseal.data import write_npy_shard

    keyfile.write_key_file(tmp_path / "team.key", key)
    ref = KeyFile(tmp_path / "team.key")
    parts = [np.arange(i * 30, i * 30 + 10 * (i + 1) * 3, dtype=np.float32).reshape(-1, 3) for i in range(3)]
    for i, part in enumerate(parts):
        write_npy_shard(part, tmp_path / f"part-{i}.npy.sseal", key)

    array = sdask.read_array(f"{tmp_path}/part-*.npy.sseal", ref)

    assert array.shape == (60, 3) and array.dtype == np.float32 and array.numblocks == (3, 1)
    np.testing.assert_array_equal(array.compute(scheduler=client), np.concatenate(parts))
    np.testing.assert_array_equal(array[15:25].sum(axis=0).compute(scheduler=client),
                                  np.concatenate(parts)[15:25].sum(axis=0))
    blobs = sdask.read_bag(f"{tmp_path}/part-*.npy.sseal", ref).compute(scheduler=client)
    assert [len(b) for b in blobs] == [128 + p.nbytes for p in parts]


def _tls_peer_without_certificate_refused(address: str, ca_file: str) -> bool:
    """A TLS client that trusts the CA but shows no certificate of its own is cut off."""
    import socket
    import ssl

    host, port = address.removeprefix("tls://").rsplit(":", 1)
    context = ssl.create_default_context(cafile=ca_file)
    context.check_hostname = False
    with socket.create_connection((host, int(port)), timeout=5) as raw:
        try:
            with context.wrap_socket(raw) as conn:
                conn.sendall(b"hello")
                return conn.recv(1) == b""
        except (ssl.SSLError, ConnectionError):
            return True


def test_tls_cluster_encrypts_and_refuses_plaintext_connections(tmp_path, key):
    from .. import tls_helpers

    (tmp_path / "certs").mkdir()
    security = tls_helpers.make_security(tmp_path / "certs")
    contents = _make_source(tmp_path / "src")
    keyfile.write_key_file(tmp_path / "team.key", key)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, protocol="tls://",
                                  security=security, dashboard_address=None) as cluster:
        address = cluster.scheduler_address
        assert address.startswith("tls://")
        with distributed.Client(cluster, security=security) as client:
            assert all(a.startswith("tls://") for a in client.scheduler_info()["workers"])
            report = sdask.encrypt_dataset(tmp_path / "src", tmp_path / "dst", key=KeyFile(tmp_path / "team.key"),
                                           client=client)
        assert report.files == N_FILES
        # A client without certificates, or speaking plain TCP to the TLS port, gets nowhere.
        with pytest.raises((OSError, TimeoutError)):
            distributed.Client(address.replace("tls://", "tcp://"), timeout=3)
        assert _tls_peer_without_certificate_refused(address, security.tls_ca_file)
    for name, data in contents.items():
        assert shardseal.decrypt((tmp_path / "dst" / (name + ".sseal")).read_bytes(), key=key) == data


def test_driver_reads_no_shard_bytes(client, tmp_path, key):
    """The driver lists files and gathers (name, size, sha256): its read() calls (rchar, the
    in-process scheduler's network messages included) stay far below the dataset's size."""
    io_stats = Path("/proc/self/io")
    if not io_stats.exists():
        pytest.skip("no /proc/self/io here")
    src = tmp_path / "src"
    src.mkdir()
    for i in range(N_FILES):
        (src / f"{i:02d}.bin").write_bytes(os.urandom(256 * 1024))
    keyfile.write_key_file(tmp_path / "team.key", key)

    def rchar() -> int:
        return int(next(line for line in io_stats.read_text().splitlines() if line.startswith("rchar:")).split()[1])

    before = rchar()
    report = sdask.encrypt_dataset(src, tmp_path / "dst", key=KeyFile(tmp_path / "team.key"), client=client,
                                   progress=True)
    read = rchar() - before
    assert report.files == N_FILES
    assert read < N_FILES * 256 * 1024 / 8, f"the driver read {read} bytes"


def test_memory_filesystem_on_threaded_cluster(tmp_path, key):
    """memory:// lives in one process: a cluster of threads shares it (process workers would not)."""
    import fsspec

    keyfile.write_key_file(tmp_path / "team.key", key)
    memory = fsspec.filesystem("memory")
    for i in range(8):
        memory.pipe(f"/dask-src/{i}.bin", bytes([i]) * 20000)
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as threaded:
        report = sdask.encrypt_dataset("memory://dask-src", "memory://dask-dst", key=KeyFile(tmp_path / "team.key"),
                                       client=threaded)
    try:
        assert report.files == 8
        assert sorted(memory.ls("/dask-dst", detail=False)) == [f"/dask-dst/{i}.bin.sseal" for i in range(8)]
        assert shardseal.decrypt(memory.cat("/dask-dst/3.bin.sseal"), key=key) == bytes([3]) * 20000
    finally:
        memory.rm("/dask-src", recursive=True)
        memory.rm("/dask-dst", recursive=True)


def test_dataset_record_checks_what_it_records(tmp_path):
    from shardseal.manifest import ShardInfo

    alice = X25519Identity.generate()
    with Dataset.create(tmp_path / "ds", recipients=[alice.recipient]) as ds:
        ds.record(ShardInfo("a.sseal", 10, "0" * 64))
        for bad, error in ((ShardInfo("../a", 1, "0" * 64), ValueError), (ShardInfo("b", -1, "0" * 64), ValueError),
                           (ShardInfo("b", 1, "XY"), ValueError), (("b", 1, "0" * 64), TypeError)):
            with pytest.raises(error):
                ds.record(bad)
    with Dataset.open(tmp_path / "ds", identities=[alice]) as ds:
        assert ds.shards == (ShardInfo("a.sseal", 10, "0" * 64),)
