#!/usr/bin/env python3
"""Parquet Modular Encryption with shardseal keys: reading 2M rows against plain Parquet.

One table of ``--rows`` rows (int64 ids, int64 user ids, float64 scores, a dictionary-encoded
string label, a timestamp) is written once as plain Parquet and once per PME configuration,
with the data keys wrapped for a ``shardseal.keyring`` KEK (``keyring:PATH#NAME``):

* ``PME GCM, every column + footer``: uniform encryption, AES_GCM_V1 (every page authenticated);
* ``PME GCM_CTR, every column + footer``: AES_GCM_CTR_V1 (page data in AES-CTR);
* ``PME GCM, 2 of 5 columns``: column keys for two columns, the others in clear.

Each round reads every file once with ``pyarrow.parquet.read_table`` (all threads), in an order
that rotates from round to round, so that load from other processes falls on every variant
alike. PME reads are timed twice: with one ``crypto_factory`` shared by all rounds (pyarrow's
key cache: the keyring unwraps once, as in a loader that reads many files), and with a new
factory per read (every read unwraps its keys). The figures are medians (min, max) of wall
seconds over ``--repeat`` rounds, and medians of the CPU seconds this process used per read
(all its threads: the cost of the work, less disturbed than wall time by other processes on
a shared machine); ratio = PME / plain. The issue's target: within 10%.
Every read is checked against the written table. ``--single-thread`` reads with
``use_threads=False``: the CPU cost, less disturbed by other processes on a shared machine.

Run it as ``python benchmarks/parquet_pme.py [--rows 2000000] [--repeat 9] [--dir DIR]``;
``--quick`` is a tiny run for the tests.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

import shardseal
import shardseal.keyring
import shardseal.parquet as sp

TARGET = 1.10


def make_table(rows: int) -> pa.Table:
    rng = np.random.default_rng(2026)
    labels = np.array([f"label-{i:04d}" for i in range(1000)])
    return pa.table({
        "id": pa.array(np.arange(rows, dtype=np.int64)),
        "user_id": pa.array(rng.integers(0, 1 << 40, rows, dtype=np.int64)),
        "score": pa.array(rng.random(rows)),
        "label": pa.array(labels[rng.integers(0, len(labels), rows)]),
        "ts": pa.array(rng.integers(1_600_000_000_000, 1_700_000_000_000, rows), pa.timestamp("ms")),
    })


def write_files(table: pa.Table, folder: Path, ring_path: Path) -> dict:
    """{variant: path}, the plain file first."""
    footer, pii = f"keyring:{ring_path}#footer", f"keyring:{ring_path}#pii"
    files = {"plain": folder / "plain.parquet"}
    pq.write_table(table, files["plain"])
    files["PME GCM, every column + footer"] = folder / "gcm.parquet"
    sp.write_table(table, files["PME GCM, every column + footer"], footer_key=footer)
    files["PME GCM_CTR, every column + footer"] = folder / "ctr.parquet"
    sp.write_table(table, files["PME GCM_CTR, every column + footer"], footer_key=footer,
                   algorithm="AES_GCM_CTR_V1")
    files["PME GCM, 2 of 5 columns"] = folder / "cols.parquet"
    sp.write_table(table, files["PME GCM, 2 of 5 columns"], footer_key=footer,
                   column_keys={pii: ["user_id", "label"]})
    return files


def timed(read, expected: pa.Table) -> tuple:
    """(wall seconds, CPU seconds of this process) of one read, checked."""
    start, cpu_start = time.perf_counter(), time.process_time()
    result = read()
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    if not result.equals(expected):
        raise SystemExit("a read returned a different table")
    return seconds, cpu_seconds


def run(rows: int, repeat: int, folder: Path, use_threads: bool = True) -> int:
    table = make_table(rows)
    ring = shardseal.keyring.Keyring.create(folder / "ring.json")
    ring.add("footer")
    ring.add("pii")
    ring.save()
    files = write_files(table, folder, ring.path)
    shared = sp.crypto_factory(identities=[ring])
    readers = {"plain": lambda: pq.read_table(files["plain"], use_threads=use_threads)}
    for name, path in files.items():
        if name == "plain":
            continue
        readers[f"{name} (shared factory)"] = (
            lambda path=path: sp.read_table(path, identities=[ring], factory=shared, use_threads=use_threads))
        readers[f"{name} (new factory per read)"] = (
            lambda path=path: sp.read_table(path, identities=[ring], use_threads=use_threads))
    for read in readers.values():  # warm-up: page cache, pyarrow's pools, the shared key cache
        timed(read, table)
    times: dict = {name: [] for name in readers}
    cpu_times: dict = {name: [] for name in readers}
    names = list(readers)
    for round_ in range(repeat):
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            seconds, cpu_seconds = timed(readers[name], table)
            times[name].append(seconds)
            cpu_times[name].append(cpu_seconds)

    plain = statistics.median(times["plain"])
    plain_cpu = statistics.median(cpu_times["plain"])
    print(f"# PME read vs plain Parquet: {rows:,} rows, {repeat} round(s), pyarrow {pa.__version__}, "
          f"shardseal backend {shardseal.backend}, {os.cpu_count()} CPUs, "
          f"{'all threads' if use_threads else 'use_threads=False'}, load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print()
    print("| file | size MiB | wall s, median (min, max) | wall ratio to plain | CPU s, median | CPU ratio to plain |")
    print("|---|---:|---:|---:|---:|---:|")
    for name in names:
        file_name = name.split(" (")[0]
        size = files[file_name].stat().st_size / (1 << 20)
        median = statistics.median(times[name])
        print(f"| {name} | {size:.1f} | {median:.4f} ({min(times[name]):.4f}, {max(times[name]):.4f}) | "
              f"{median / plain:.3f} | {statistics.median(cpu_times[name]):.4f} | "
              f"{statistics.median(cpu_times[name]) / plain_cpu:.3f} |")
    main = "PME GCM, every column + footer (shared factory)"
    wall_ratio = statistics.median(times[main]) / plain
    cpu_ratio = statistics.median(cpu_times[main]) / plain_cpu
    print()
    print(f"Target: PME (GCM, every column, shared factory) within {TARGET - 1:.0%} of plain: "
          f"wall {wall_ratio:.3f}x ({'met' if wall_ratio <= TARGET else 'NOT met'}), "
          f"CPU {cpu_ratio:.3f}x ({'met' if cpu_ratio <= TARGET else 'NOT met'})")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--repeat", type=int, default=9)
    parser.add_argument("--dir", default="/dev/shm" if os.path.isdir("/dev/shm") else None,
                        help="where the files go (default /dev/shm: no disk in the figures)")
    parser.add_argument("--single-thread", action="store_true",
                        help="read with use_threads=False (CPU cost, less sensitive to other load)")
    parser.add_argument("--quick", action="store_true", help="2,000 rows, 1 round (a smoke test)")
    args = parser.parse_args(argv)
    rows, repeat = (2000, 1) if args.quick else (args.rows, args.repeat)
    with tempfile.TemporaryDirectory(prefix="parquet-pme-", dir=args.dir) as folder:
        return run(rows, repeat, Path(folder), use_threads=not args.single_thread)


if __name__ == "__main__":
    sys.exit(main())
