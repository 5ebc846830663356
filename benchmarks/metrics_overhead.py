"""The cost of shardseal.metrics: 4 KiB random preads and 4 KiB container decrypts with
metrics enabled (OpenTelemetry SDK MeterProvider, an InMemoryMetricReader attached and
collected after every round) against metrics disabled, interleaved round by round; medians
of the per-call means and of each round's paired ratio.

    PYTHONPATH=src python benchmarks/metrics_overhead.py [--quick] [--rounds N]

Disabled (the default: shardseal.metrics.enable() never called), each counting point is one
test of a module flag and OpenTelemetry is not imported. The last lines time a decrypt's two
counting points in isolation, disabled and enabled, against a decrypt: a steadier figure than
the end-to-end difference on a loaded machine. Exits 1 if a configuration's results
are wrong (every round checks its plaintext) or, without --quick, if the overhead passes the
--limit (percent).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time

SIZE = 4096


def _time_calls(function, calls: int) -> float:
    """Mean seconds per call of function() over calls calls."""
    started = time.perf_counter()
    for _ in range(calls):
        function()
    return (time.perf_counter() - started) / calls


def _decrypt_case(shardseal):
    key = os.urandom(32)
    plaintext = os.urandom(SIZE)
    blob = shardseal.encrypt(plaintext, key)

    def run() -> None:
        shardseal.decrypt(blob, key)

    assert shardseal.decrypt(blob, key) == plaintext
    return run, lambda: None


def _pread_case(shardseal, folder: str):
    key = os.urandom(32)
    data = os.urandom(64 * SIZE + 123)
    path = os.path.join(folder, "data.sseal")
    with shardseal.open(path, "wb", key) as writer:
        writer.write(data)
    reader = shardseal.open(path, "rb", key)
    offsets = [random.Random(7).randrange(0, len(data) - SIZE) for _ in range(4096)]
    position = [0]

    def run() -> None:
        offset = offsets[position[0] % len(offsets)]
        position[0] += 1
        reader.pread(offset, SIZE)

    assert reader.pread(offsets[0], SIZE) == data[offsets[0]:offsets[0] + SIZE]
    return run, reader.close


def _counting_cost(calls: int, enabled: bool) -> float:
    """Seconds per decrypt spent on its two counting points, in isolation: as in
    container/_caches.py (the key's unwraps) and container/blob.py (the container and its
    size), enabled (two list appends) or disabled (two flag tests)."""
    from shardseal import metrics

    count_unwrap = metrics.counter("shardseal.benchmark", (("kind", "unwrap"),))
    count_container = metrics.counter("shardseal.benchmark", (("kind", "container"),))
    plaintext = bytes(SIZE)

    def counting() -> None:
        if metrics.active:
            count_unwrap(1)
        if metrics.active:
            count_container(len(plaintext))

    def without() -> None:
        pass

    saved, metrics.active = metrics.active, enabled  # no listener, no drainer: just the points
    costs = []
    try:
        for _ in range(15):
            costs.append(_time_calls(counting, calls) - _time_calls(without, calls))
            metrics.snapshot()  # drains the appended entries, as the drainer thread does
    finally:
        metrics.active = saved
    return max(0.0, statistics.median(costs))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few tiny rounds (tests)")
    parser.add_argument("--rounds", type=int, default=61)
    parser.add_argument("--calls", type=int, default=3000, help="calls per round and configuration")
    parser.add_argument("--limit", type=float, default=2.0, help="the overhead allowed, percent")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.calls = 3, 30
    import shardseal
    from shardseal import metrics

    assert "opentelemetry" not in sys.modules, "shardseal imported OpenTelemetry on its own"
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    print(f"backend {shardseal.backend}, {args.rounds} rounds x {args.calls} calls per configuration, "
          f"interleaved (order alternates); medians of per-call means")
    failed = False
    with tempfile.TemporaryDirectory(dir="/dev/shm" if os.path.isdir("/dev/shm") else None) as folder:
        cases = {"decrypt 4 KiB container": _decrypt_case(shardseal),
                 "pread 4 KiB random": _pread_case(shardseal, folder)}
        print(f"{'case':26} {'disabled us':>12} {'SDK+reader us':>14} {'overhead (median of paired ratios)'}")
        for name, (run, close) in cases.items():
            times: dict[bool, list[float]] = {False: [], True: []}
            for round_ in range(args.rounds):
                for enabled in ((False, True) if round_ % 2 else (True, False)):
                    if enabled:
                        metrics.enable(provider)
                    else:
                        metrics.disable()
                    times[enabled].append(_time_calls(run, args.calls))
                    if enabled:
                        reader.get_metrics_data()  # a collection, as a scrape would
                metrics.disable()
            close()
            off, on = statistics.median(times[False]), statistics.median(times[True])
            # Each round's pair ran back to back: the median of their ratios cancels the drift
            # of a machine that others load.
            overhead = (statistics.median(b / a for a, b in zip(times[False], times[True])) - 1) * 100
            print(f"{name:26} {off * 1e6:12.3f} {on * 1e6:14.3f} {overhead:+8.2f}%")
            failed |= overhead > args.limit
        decrypt_median = statistics.median(_time_calls(cases["decrypt 4 KiB container"][0], args.calls)
                                           for _ in range(5))
    print(f"a 4 KiB decrypt's two counting points in isolation (median of 15 x {args.calls * 10} calls; "
          f"a decrypt took {decrypt_median * 1e6:.3f} us):")
    for enabled, what in ((False, "disabled (two flag tests)"), (True, "enabled (two list appends)")):
        cost = _counting_cost(args.calls * 10, enabled)
        print(f"  {what:28} {cost * 1e9:6.1f} ns = {cost / decrypt_median * 100:.2f}% of a decrypt")
    print("OpenTelemetry imported by `import shardseal` alone: no")
    if failed and not args.quick:
        print(f"FAIL: overhead over {args.limit}%")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
