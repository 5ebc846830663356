"""Every benchmark entry point runs, on tiny sizes, in the default test run.

The benchmarks import the library like any user does; a refactor that breaks one of them
(issue 10: ``python -m benchmarks --quick`` died on a removed private function) fails here, not
months later in someone's terminal. Each script runs in a subprocess, as its README command does,
and must exit 0; every benchmark verifies its own outputs, so a wrong result fails too.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .cli_helpers import PACKAGE_ROOT  # the package under test: src/ or site-packages

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks"
TIMEOUT = 120  # each takes seconds; the bound only stops a hang
RAM_DIR = "/dev/shm" if os.path.isdir("/dev/shm") else None  # no page-cache drops for other processes

pytestmark = pytest.mark.skipif(not BENCH.is_dir(), reason="benchmarks/ is not in this checkout")


def _run(args: list, tmp_path: Path, **env) -> str:
    full_env = dict(os.environ, PYTHONPATH=os.pathsep.join([PACKAGE_ROOT, str(ROOT)]), **env)
    proc = subprocess.run([sys.executable, *args], cwd=tmp_path, env=full_env, capture_output=True, text=True,
                          timeout=TIMEOUT)
    assert proc.returncode == 0, f"{' '.join(args)} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc.stdout


def _needs_native() -> None:
    import shardseal

    if shardseal.backend != "native":
        pytest.skip("the benchmarks measure the native engine, which is not built here")


def _dir(tmp_path: Path) -> str:
    return RAM_DIR or str(tmp_path)


def test_compare_quick(tmp_path):
    _needs_native()
    out = _run(["-m", "benchmarks", "--quick", "--sizes", "4K,64K", "--latency-sizes", "64", "--repeat", "1",
                "--out", str(tmp_path / "results"), "--no-plot"], tmp_path)
    assert "wrote" in out
    assert (tmp_path / "results" / "results.json").is_file()


def test_plot(tmp_path):
    pytest.importorskip("matplotlib")
    _needs_native()
    _run(["-m", "benchmarks", "--sizes", "4K", "--latency-sizes", "64", "--threads", "1", "--repeat", "1",
          "--only", "native,memcpy", "--out", str(tmp_path), "--no-plot"], tmp_path)
    _run(["-m", "benchmarks.plot", str(tmp_path / "results.json"), str(tmp_path / "out.png")], tmp_path)
    assert (tmp_path / "out.png").stat().st_size > 0


def test_bench_core(tmp_path):
    _needs_native()
    out = _run([str(BENCH / "bench_core.py"), "--size-mib", "1", "--repeat", "1", "--openssl-seconds", "1"], tmp_path)
    assert "## Targets" in out


def test_bench_files(tmp_path):
    _needs_native()
    _run([str(BENCH / "bench_files.py"), "--size-mib", "1", "--read-file-mib", "1", "--reads", "1000",
          "--repeat", "1", "--dirs", _dir(tmp_path)], tmp_path)


def test_bench_small(tmp_path):
    _needs_native()
    out = _run([str(BENCH / "bench_small.py"), "--calls", "20", "--repeat", "1", "--read-file-mib", "1",
                "--reads", "1000", "--dir", _dir(tmp_path)], tmp_path)
    assert "## Targets" in out


def test_bench_rotate(tmp_path):
    _run([str(BENCH / "bench_rotate.py"), "--files", "3", "--mib", "1", "--repeat", "1", "--dir", str(tmp_path)],
         tmp_path)


def test_bench_he_quick(tmp_path):
    pytest.importorskip("tenseal", reason="the he extra")
    out = _run([str(BENCH / "he.py"), "--quick"], tmp_path)
    assert "wrapper overhead" in out and "FedAvg round" in out


def test_bench_dataloader(tmp_path):
    pytest.importorskip("torch")
    _run([str(BENCH / "bench_dataloader.py"), "--gib", "0.01", "--shard-mib", "1", "--sample-kib", "16",
          "--workers", "1", "--epochs", "1", "--no-fernet", "--dir", _dir(tmp_path)], tmp_path)


def test_bench_safetensors(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("safetensors")
    _run([str(BENCH / "bench_safetensors.py"), "--gib", "0.01", "--repeat", "1", "--dir", _dir(tmp_path)], tmp_path)


def test_bench_checkpoint(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("safetensors")
    pytest.importorskip("aiohttp")
    out = _run([str(BENCH / "bench_checkpoint.py"), "--quick", "--dir", _dir(tmp_path)], tmp_path)
    assert "load_checkpoint" in out and "bytes moved" in out


def test_parquet_pme(tmp_path):
    pytest.importorskip("pyarrow.parquet.encryption")
    out = _run([str(BENCH / "parquet_pme.py"), "--quick", "--dir", str(tmp_path)], tmp_path)
    assert "| plain |" in out and "Target:" in out


def test_bench_alloc(tmp_path):
    out = _run([str(BENCH / "bench_alloc.py"), "--size-mib", "1", "--pairs", "1"], tmp_path)
    assert "| encrypt, threads=1 |" in out


def test_openssl_paths(tmp_path):
    _needs_native()
    _run(["-m", "benchmarks.openssl_paths", "--quick"], tmp_path)


def test_pytest_benchmark_suite(tmp_path):
    """benchmarks/test_benchmarks.py, once per test, verified (a stand-in fixture without the plugin)."""
    _needs_native()
    args = ["-m", "pytest", "-q", "-p", "no:cacheprovider", str(BENCH)]
    if importlib.util.find_spec("pytest_benchmark") is not None:
        args.append("--benchmark-disable")
    out = _run(args, tmp_path, SHARDSEAL_BENCH_TINY="1")
    assert " passed" in out


def test_dask_cluster(tmp_path):
    pytest.importorskip("distributed", reason="dask.distributed is not installed (pip install shardseal[dask])")
    out = _run([str(BENCH / "dask_cluster.py"), "--quick", "--dir", _dir(tmp_path)], tmp_path)
    assert "cluster(2) / local" in out and "driver bytes read" in out


def test_every_entry_point_is_covered():
    """A new bench_*.py (or other script with a main) must get a test above."""
    covered = {"__main__.py", "compare.py", "plot.py", "bench_core.py", "bench_files.py", "bench_rotate.py",
               "bench_dataloader.py", "bench_safetensors.py", "bench_checkpoint.py", "openssl_paths.py", "bench_alloc.py", "bench_small.py",
               "parquet_pme.py", "metrics_overhead.py", "dask_cluster.py", "he.py"}
    scripts = {p.name for p in BENCH.glob("*.py") if "__main__" in p.read_text(encoding="utf-8")}
    assert scripts <= covered, f"benchmark entry points without a smoke test: {sorted(scripts - covered)}"


def test_metrics_overhead(tmp_path):
    pytest.importorskip("opentelemetry.sdk.metrics")
    _needs_native()
    out = _run([str(BENCH / "metrics_overhead.py"), "--quick"], tmp_path)
    assert "decrypt 4 KiB container" in out and "pread 4 KiB random" in out
