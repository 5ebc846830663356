"""shardseal encrypt/decrypt/verify/rotate --scheduler ADDRESS on a real Dask cluster: the same
outputs, files and exit statuses as the local run."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

import shardseal
from shardseal import keyfile
from shardseal.manifest import Dataset
from shardseal.x25519 import X25519Identity, write_identity_file

from ..cli_helpers import assert_error, assert_ok, register_secret, run

distributed = pytest.importorskip("distributed", reason="dask.distributed is not installed (pip install shardseal[dask])")

N_FILES = 64


@pytest.fixture(scope="module")
def scheduler():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster:
        yield cluster.scheduler_address


def _source(folder: Path) -> dict:
    contents = {f"d{i % 3}/f{i:02d}.bin": bytes([i]) * (i * 700) for i in range(N_FILES)}
    for name, data in contents.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    return contents


def _summary(result) -> str:
    """The summary line, its timing removed."""
    return re.sub(r" in [0-9.]+ s$", "", result.stderr.decode().strip().splitlines()[-1])


def test_encrypt_and_decrypt_folder_on_cluster(scheduler, tmp_path, key):
    register_secret(key)
    contents = _source(tmp_path / "src")
    keyfile.write_key_file(tmp_path / "k", key)

    cluster_run = run("encrypt", "src", "-o", "enc", "-k", "k", "--scheduler", scheduler, cwd=tmp_path)
    local_run = run("encrypt", "src", "-o", "enc-local", "-k", "k", cwd=tmp_path)

    assert_ok(cluster_run)
    assert _summary(cluster_run) == _summary(local_run)
    assert _summary(cluster_run).startswith(f"encrypted {N_FILES} files, {sum(map(len, contents.values()))} bytes")
    for name, data in contents.items():
        assert shardseal.decrypt((tmp_path / "enc" / (name + ".sseal")).read_bytes(), key=key) == data

    decrypted = run("decrypt", "enc", "-o", "dec", "-k", "k", "--scheduler", scheduler, cwd=tmp_path)
    assert_ok(decrypted)
    assert {n: (tmp_path / "dec" / n).read_bytes() for n in contents} == contents

    keyfile.write_key_file(tmp_path / "other", shardseal.generate_key())
    wrong = run("decrypt", "enc", "-o", "dec2", "-k", "other", "--scheduler", scheduler, cwd=tmp_path)
    local_wrong = run("decrypt", "enc", "-o", "dec3", "-k", "other", cwd=tmp_path)
    assert wrong.returncode == local_wrong.returncode == 4
    assert not (tmp_path / "dec2").exists() or not any((tmp_path / "dec2").rglob("*.bin"))


def test_verify_and_rotate_on_cluster(scheduler, tmp_path):
    alice, bob = X25519Identity.generate(), X25519Identity.generate()
    write_identity_file(tmp_path / "alice", alice)
    with Dataset.create(tmp_path / "ds", recipients=[alice.recipient]) as ds:
        for i in range(N_FILES):
            with ds.open_shard(f"s/{i:03d}.sseal", "wb") as f:
                f.write(bytes([i]) * 5000)

    for deep in ([], ["--deep"]):
        cluster_run = run("verify", "ds", "-i", "alice", *deep, "--scheduler", scheduler, cwd=tmp_path)
        local_run = run("verify", "ds", "-i", "alice", *deep, cwd=tmp_path)
        assert_ok(cluster_run)
        assert (cluster_run.stdout, cluster_run.stderr) == (local_run.stdout, local_run.stderr)

    (tmp_path / "ds/s/007.sseal").write_bytes((tmp_path / "ds/s/008.sseal").read_bytes())
    cluster_run = run("verify", "ds", "-i", "alice", "--scheduler", scheduler, cwd=tmp_path)
    local_run = run("verify", "ds", "-i", "alice", cwd=tmp_path)
    assert cluster_run.returncode == local_run.returncode == 3
    assert (cluster_run.stdout, cluster_run.stderr) == (local_run.stdout, local_run.stderr)

    envelope = tmp_path / "env"
    envelope.mkdir()
    for i in range(N_FILES):
        (envelope / f"{i}.sseal").write_bytes(shardseal.encrypt(bytes([i]) * 100, recipients=[alice.recipient]))
    shutil.copytree(envelope, tmp_path / "env-local")
    rotated = run("rotate", "env", "-i", "alice", "--add", str(bob.recipient), "--scheduler", scheduler,
                  cwd=tmp_path)
    local_rotated = run("rotate", "env-local", "-i", "alice", "--add", str(bob.recipient), cwd=tmp_path)
    assert_ok(rotated)
    assert rotated.stderr == local_rotated.stderr
    assert _summary(rotated).startswith(f"rotated {N_FILES} files (0 in place, {N_FILES} copied")
    assert shardseal.decrypt((envelope / "5.sseal").read_bytes(), identities=[bob]) == bytes([5]) * 100


def test_passphrase_refused_with_scheduler(scheduler, tmp_path):
    _source(tmp_path / "src")
    result = run("encrypt", "src", "-o", "enc", "-p", "--passphrase-fd", "0", "--scheduler", scheduler,
                 cwd=tmp_path, input=b"pw\n")
    assert_error(result, 1, "passphrase cannot be used with --scheduler")
