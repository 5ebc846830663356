"""dask.bag.read_text over sseal:: URLs on a distributed cluster of worker processes, the key
given as a reference that each worker resolves itself (pip install "shardseal[dask]")."""

from __future__ import annotations

import os

import pytest

import shardseal
from shardseal import keyfile
from shardseal.keyref import KeyFile

pytest.importorskip("fsspec")
dask_bag = pytest.importorskip("dask.bag", reason="dask is not installed (pip install shardseal[dask])")
distributed = pytest.importorskip("distributed", reason="dask.distributed is not installed (pip install shardseal[dask])")


def test_read_text_on_local_cluster_with_key_reference(tmp_path, key):
    key_path = tmp_path / "team.key"
    keyfile.write_key_file(key_path, key)
    for name, text in (("a", "alpha\nbeta\n"), ("b", "gamma\n")):
        (tmp_path / f"{name}.txt.sseal").write_bytes(shardseal.encrypt(text.encode(), key))

    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as client:
        bag = dask_bag.read_text(f"sseal::file://{tmp_path}/*.txt.sseal",
                                 storage_options={"sseal": {"key": KeyFile(key_path)}})
        lines = bag.map(lambda line: (line, os.getpid())).compute(scheduler=client)
        workers = set(client.run(os.getpid).values())

    assert sorted(line for line, _ in lines) == ["alpha\n", "beta\n", "gamma\n"]
    assert len(workers) == 2 and {pid for _, pid in lines} <= workers  # read by the workers
    assert os.getpid() not in workers
