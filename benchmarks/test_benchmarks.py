"""The comparison as a pytest-benchmark suite: ``pytest benchmarks/ --benchmark-only``.

One test per implementation, operation and size (4 KiB, 1 MiB, 64 MiB throughput; 64 B latency),
grouped by operation and size so that pytest-benchmark's table compares like with like. Each
round is one batch of calls (``peers.Runner``); every output of every round is verified outside
the timing, before the next round and after the last. ``extra_info`` holds the calls per round
and the median throughput in GB/s. With ``--benchmark-disable`` each test runs once, verified:
a smoke test of every peer (SHARDSEAL_BENCH_TINY=1 limits it to small sizes).
"""

from __future__ import annotations

import os

import pytest

from ._common import GB, NCORES
from .peers import Runner, Unavailable, implementations, thread_counts

KiB, MiB = 1 << 10, 1 << 20
# SHARDSEAL_BENCH_TINY=1 (the default test run's smoke test): small sizes only, seconds in all.
TINY = os.environ.get("SHARDSEAL_BENCH_TINY") == "1"
SIZES = [4 * KiB, 64 * KiB] if TINY else [4 * KiB, 1 * MiB, 64 * MiB]
LATENCY_SIZES = [64]


def _label(size: int) -> str:
    return f"{size // MiB}MiB" if size >= MiB else (f"{size // KiB}KiB" if size >= KiB else f"{size}B")


def _cases():
    for impl in implementations(thread_counts(NCORES)):
        for op in impl.ops:
            sizes = [s for s in SIZES if impl.throughput and (impl.max_measured is None or s <= impl.max_measured)
                     and (impl.min_size is None or s >= impl.min_size)]
            sizes += [s for s in LATENCY_SIZES if impl.latency]
            for size in sizes:
                yield pytest.param(impl, op, size, id=f"{impl.name}-{op}-{_label(size)}")


@pytest.mark.parametrize(("impl", "op", "size"), list(_cases()))
def test_throughput(benchmark, data_for, impl, op, size):
    try:
        impl.load()
    except Unavailable as exc:
        pytest.skip(f"{impl.label}: {exc}")
    benchmark.group = f"{op} {_label(size)}"
    impl.setup(data_for(size))
    try:
        runner = Runner(impl, op, target_seconds=0.01)
        pending: list = []

        def setup():  # untimed: verify the previous round's outputs, zero the output buffers
            while pending:
                runner.verify(pending.pop())
            runner.prepare()

        def target():
            pending.append(runner.run())

        with impl.context():
            runner.calibrate()
            benchmark.pedantic(target, setup=setup, rounds=3 if size >= 16 * MiB else 7, warmup_rounds=1)
            setup()  # verifies the last round
        benchmark.extra_info.update({"implementation": impl.label, "cipher": impl.cipher, "threads": impl.threads,
                                     "size": size, "calls_per_round": runner.calls})
        stats = getattr(benchmark, "stats", None)
        if stats is not None and getattr(stats, "stats", None) is not None and stats.stats.median > 0:
            benchmark.extra_info["GB/s (median)"] = round(runner.calls * size / stats.stats.median / GB, 4)
    finally:
        impl.teardown()
