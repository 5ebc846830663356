#!/usr/bin/env python3
"""The page-fault tax: allocating ``encrypt`` / ``decrypt`` against ``encrypt_into`` / ``decrypt_into``.

The two are timed alternately, run by run (into, allocating, into, ...), so that a noisy
machine slows both alike, and the figure is the median of the per-pair ratios (target >= 0.85,
issue 11). Every output is checked against the input.
Run it as ``python benchmarks/bench_alloc.py [--size-mib 256] [--pairs 11]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np

import shardseal


def _timed(fn) -> tuple:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def measure(label: str, into, alloc, check, pairs: int) -> str:
    _timed(into), _timed(alloc)  # warm-up
    into_s, alloc_s = [], []
    for _ in range(pairs):
        seconds, _result = _timed(into)
        into_s.append(seconds)
        seconds, result = _timed(alloc)
        alloc_s.append(seconds)
        check(result)
        del result
    ratios = sorted(i / a for i, a in zip(into_s, alloc_s))
    return (f"| {label} | {statistics.median(ratios):.2f} | {ratios[0]:.2f} | {ratios[-1]:.2f} "
            f"| {statistics.median(into_s) * 1e3:.1f} | {statistics.median(alloc_s) * 1e3:.1f} |")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=256, help="buffer size in MiB (default 256)")
    parser.add_argument("--pairs", type=int, default=11, help="timed (into, allocating) pairs (default 11)")
    args = parser.parse_args(argv)
    if args.size_mib < 1 or args.pairs < 1:
        parser.error("--size-mib and --pairs must be positive")
    size = args.size_mib << 20
    data = np.frombuffer(os.urandom(size), np.uint8)
    key = shardseal.generate_key()
    enc_out = np.zeros(shardseal.encrypted_size(size), np.uint8)
    dec_out = np.zeros(size, np.uint8)
    blob = shardseal.encrypt(data, key)

    def check_blob(result) -> None:
        if shardseal.decrypt_into(result, key, dec_out) != size or not np.array_equal(dec_out, data):
            raise SystemExit("verification failed: encrypt output does not decrypt to the input")

    def check_plain(result) -> None:
        if not np.array_equal(np.frombuffer(result, np.uint8), data):
            raise SystemExit("verification failed: decrypt output differs from the input")

    print(f"# allocating vs _into, {args.size_mib} MiB, {shardseal.__version__} "
          f"({shardseal.backend_info()['backend']}, kernel {shardseal.backend_info()['kernel']}), "
          f"load {' '.join(open('/proc/loadavg').read().split()[:3]) if os.path.exists('/proc/loadavg') else '?'}\n")
    print("| operation | alloc / into (median of pairs) | min | max | into ms | allocating ms |")
    print("|---|---:|---:|---:|---:|---:|")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    threads_list = sorted({1, cores})
    for threads in threads_list:
        print(measure(f"encrypt, threads={threads}",
                      lambda: shardseal.encrypt_into(data, key, enc_out, threads=threads),
                      lambda: shardseal.encrypt(data, key, threads=threads), check_blob, args.pairs), flush=True)
        print(measure(f"decrypt, threads={threads}",
                      lambda: shardseal.decrypt_into(blob, key, dec_out, threads=threads),
                      lambda: shardseal.decrypt(blob, key, threads=threads), check_plain, args.pairs), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
