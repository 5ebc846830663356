#!/usr/bin/env python3
"""Small-message and random-read benchmark for shardseal's native engine, on every kernel.

Per available AES-GCM kernel (ipsec-mb, OpenSSL), in one run, this script measures:

* the time per call of ``shardseal.encrypt`` / ``decrypt`` of a 4 KiB and a 64 B container
  (direct key, so the key cache is warm as in a loop over many small objects), and of
  ``shardseal.cobblestone.encrypt`` / ``decrypt`` of a 64 B message: the median, min and max
  over ``--repeat`` timings of ``--calls`` calls each;
* random 4 KiB reads at 4 KiB-aligned offsets (fixed seed) of a ``--read-file-mib`` file in
  ``--dir`` (default /dev/shm: no disk in the figure) through
  ``shardseal.open(path, "rb", key=...)``: ``reader.pread(off, 4096)`` and
  ``reader.preadinto(off, buf)``, next to ``os.pread(fd, 4096, off)`` of the plaintext file at
  the same offsets, as reads per second and the ratio to os.pread measured in the same round;
* the floor of such a read: ``os.preadv`` of the whole 16,400-byte sealed chunk a 4 KiB read
  must authenticate (into a reused buffer), and with it the ceiling of any pread-based reader:
  that pread plus one in-cache chunk open of the kernel, no Python and no copy.

Every timed output is checked: each small call's result is decrypted or compared with its
input, and a sample of the reads is compared with the plaintext file, so a fast wrong answer
aborts the run. At the end it prints the issue's targets with PASS/FAIL.

Run it as ``python benchmarks/bench_small.py [--read-file-mib 1024] [--reads 20000] [--repeat 7]``.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from typing import Callable, Optional

import shardseal
import shardseal.cobblestone as cobblestone

MiB = 1 << 20
READ_SIZE = 4096
CHUNK = 16384
SEALED_CHUNK = CHUNK + 16
MESSAGE_HEADER = 56  # salt and commitment, before chunk 0
SEED = 11
VERIFY_READS = 200
TARGET_CONTAINER_4K_US = 4.0
TARGET_COBBLESTONE_64_US = 2.5
TARGET_READ_RATIO = 0.30


class VerificationError(RuntimeError):
    """A timed operation produced a wrong result."""


def native_module():
    from shardseal import _native  # the benchmark measures the native engine's kernels

    return _native


def available_kernels() -> list:
    return sorted(k for k, reason in native_module().kernel_status().items() if reason is None)


def per_call_us(run: Callable[[], object], calls: int, repeat: int) -> tuple:
    """Median, min and max microseconds per call over `repeat` timings of `calls` calls."""
    run()  # warm-up: caches, thread-local managers
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(calls):
            run()
        times.append((time.perf_counter() - start) / calls * 1e6)
    return statistics.median(times), min(times), max(times)


def small_cases(key: bytes) -> list:
    """(name, run, verify) for each small-message call; verify checks one result."""
    data_4k, data_64 = os.urandom(4096), os.urandom(64)
    sealed_4k = shardseal.encrypt(data_4k, key=key)
    sealed_64 = shardseal.encrypt(data_64, key=key)
    message_64 = cobblestone.encrypt(data_64, key)

    def same(expected: bytes):
        def check(got):
            if got != expected:
                raise VerificationError("a decrypted result differs from the plaintext")
        return check

    def opens_to(expected: bytes, decrypt):
        def check(got):
            if decrypt(got) != expected:
                raise VerificationError("an encrypted result does not decrypt to the plaintext")
        return check

    return [
        ("container encrypt 4 KiB", lambda: shardseal.encrypt(data_4k, key=key),
         opens_to(data_4k, lambda b: shardseal.decrypt(b, key=key))),
        ("container decrypt 4 KiB", lambda: shardseal.decrypt(sealed_4k, key=key), same(data_4k)),
        ("container encrypt 64 B", lambda: shardseal.encrypt(data_64, key=key),
         opens_to(data_64, lambda b: shardseal.decrypt(b, key=key))),
        ("container decrypt 64 B", lambda: shardseal.decrypt(sealed_64, key=key), same(data_64)),
        ("cobblestone.encrypt 64 B", lambda: cobblestone.encrypt(data_64, key),
         opens_to(data_64, lambda b: cobblestone.decrypt(b, key))),
        ("cobblestone.decrypt 64 B", lambda: cobblestone.decrypt(message_64, key), same(data_64)),
    ]


def bench_small(key: bytes, calls: int, repeat: int) -> list:
    rows = []
    for name, run, verify in small_cases(key):
        verify(run())
        med, lo, hi = per_call_us(run, calls, repeat)
        verify(run())
        rows.append((name, med, lo, hi))
    return rows


def write_files(folder: str, size: int, key: bytes) -> tuple:
    plain = os.path.join(folder, "plain.bin")
    sealed = os.path.join(folder, "plain.sseal")
    with open(plain, "wb") as f:
        for done in range(0, size, 64 * MiB):
            f.write(os.urandom(min(64 * MiB, size - done)))
    shardseal.encrypt_file(plain, sealed, key)
    return plain, sealed


def read_loops(fd: int, reader, sealed_fd: int) -> dict:
    buf = bytearray(READ_SIZE)
    sealed_buf = bytearray(SEALED_CHUNK)
    data_start = reader.header.size + MESSAGE_HEADER

    def sealed_chunk_pread(offsets):
        # The bytes any authenticated 4 KiB read must move: its whole sealed chunk.
        preadv = os.preadv
        for off in offsets:
            preadv(sealed_fd, [sealed_buf], data_start + off // CHUNK * SEALED_CHUNK)

    def os_pread(offsets):
        pread = os.pread
        for off in offsets:
            pread(fd, READ_SIZE, off)

    def reader_pread(offsets):
        pread = reader.pread
        for off in offsets:
            pread(off, READ_SIZE)

    def reader_preadinto(offsets):
        preadinto = reader.preadinto
        for off in offsets:
            preadinto(off, buf)

    return {"os.pread": os_pread, "reader.pread": reader_pread, "reader.preadinto": reader_preadinto,
            "floor: os.preadv of the 16,400 B sealed chunk": sealed_chunk_pread}


def chunk_open_us(calls: int, repeat: int) -> float:
    """Median µs to open one sealed 16 KiB chunk already in cache (the kernel in use)."""
    native = native_module()
    keys = native.MessageKeys(256, os.urandom(32), os.urandom(24), b"")
    plain = bytearray(os.urandom(CHUNK))
    sealed = bytearray(SEALED_CHUNK)
    keys.seal_chunks_into(0, plain, sealed, False, 1)
    out = bytearray(CHUNK)
    med, _, _ = per_call_us(lambda: keys.open_chunks_into(0, sealed, out, False, 1), calls, repeat)
    if out != plain:
        raise VerificationError("the in-cache chunk open gave a wrong plaintext")
    return med


def verify_reads(fd: int, reader, offsets: list) -> None:
    buf = bytearray(READ_SIZE)
    for off in offsets[:VERIFY_READS]:
        expected = os.pread(fd, READ_SIZE, off)
        if reader.pread(off, READ_SIZE) != expected:
            raise VerificationError(f"reader.pread({off}, {READ_SIZE}) differs from the plaintext")
        if reader.preadinto(off, buf) != len(expected) or bytes(buf[: len(expected)]) != expected:
            raise VerificationError(f"reader.preadinto({off}) differs from the plaintext")


def bench_reads(plain: str, sealed: str, key: bytes, offsets: list, repeat: int) -> dict:
    """name -> (median, min, max) reads/s, and the per-round ratios to os.pread."""
    fd = os.open(plain, os.O_RDONLY)
    sealed_fd = os.open(sealed, os.O_RDONLY)
    try:
        with shardseal.open(sealed, "rb", key=key) as reader:  # keys made with the kernel in use
            verify_reads(fd, reader, offsets)
            loops = read_loops(fd, reader, sealed_fd)
            for loop in loops.values():
                loop(offsets[:1000])  # warm-up
            rates: dict = {name: [] for name in loops}
            for _ in range(repeat):  # interleaved, so that a noisy moment hits every row
                for name, loop in loops.items():
                    start = time.perf_counter()
                    loop(offsets)
                    rates[name].append(len(offsets) / (time.perf_counter() - start))
            verify_reads(fd, reader, offsets[::7])
    finally:
        os.close(fd)
        os.close(sealed_fd)
    ratios = {name: [r / b for r, b in zip(rs, rates["os.pread"])] for name, rs in rates.items()}
    return {name: (statistics.median(rs), min(rs), max(rs), statistics.median(ratios[name]),
                   min(ratios[name]), max(ratios[name])) for name, rs in rates.items()}


def add_read_ceiling(reads: dict, open_us: float) -> None:
    """The best a read that authenticates its chunk can do with pread: the sealed chunk's pread
    plus one in-cache chunk open (no Python, no copy), as reads/s and as a ratio to os.pread."""
    floor_rate = reads["floor: os.preadv of the 16,400 B sealed chunk"][0]
    base = reads["os.pread"][0]
    rate = 1 / (1 / floor_rate + open_us * 1e-6)
    reads["ceiling: sealed-chunk pread + in-cache chunk open"] = (rate, rate, rate, rate / base, rate / base,
                                                                   rate / base)


def run_kernel(kernel: str, args, key: bytes, files: tuple, offsets: list) -> tuple:
    native = native_module()
    saved = native.kernel()
    native.select_kernel(kernel)
    try:
        shardseal.clear_key_cache()  # no key prepared under the other kernel
        small = bench_small(key, args.calls, args.repeat)
        reads = bench_reads(*files, key, offsets, args.repeat)
        add_read_ceiling(reads, chunk_open_us(args.calls, args.repeat))
    finally:
        native.select_kernel(saved)
        shardseal.clear_key_cache()
    return small, reads


def report(kernel: str, small: list, reads: dict) -> list:
    print(f"\n### Kernel: {kernel}\n")
    print("| call | µs/call median | min | max |")
    print("|---|---:|---:|---:|")
    for name, med, lo, hi in small:
        print(f"| {name} | {med:.2f} | {lo:.2f} | {hi:.2f} |")
    print("\n| random 4 KiB read | reads/s median | min | max | µs/read | vs os.pread median (min-max) |")
    print("|---|---:|---:|---:|---:|---|")
    for name, (med, lo, hi, ratio, rlo, rhi) in reads.items():
        print(f"| {name} | {med:,.0f} | {lo:,.0f} | {hi:,.0f} | {1e6 / med:.2f} | {ratio:.2f} ({rlo:.2f}-{rhi:.2f}) |")
    by_name = {name: med for name, med, _, _ in small}
    targets = [
        (f"{kernel}: container encrypt 4 KiB, µs", by_name["container encrypt 4 KiB"], "<=", TARGET_CONTAINER_4K_US),
        (f"{kernel}: container decrypt 4 KiB, µs", by_name["container decrypt 4 KiB"], "<=", TARGET_CONTAINER_4K_US),
        (f"{kernel}: cobblestone.encrypt 64 B, µs", by_name["cobblestone.encrypt 64 B"], "<=", TARGET_COBBLESTONE_64_US),
        (f"{kernel}: cobblestone.decrypt 64 B, µs", by_name["cobblestone.decrypt 64 B"], "<=", TARGET_COBBLESTONE_64_US),
        (f"{kernel}: reader.pread / os.pread", reads["reader.pread"][3], ">=", TARGET_READ_RATIO),
        (f"{kernel}: reader.preadinto / os.pread", reads["reader.preadinto"][3], ">=", TARGET_READ_RATIO),
        (f"{kernel}: ceiling of any pread-based authenticated read / os.pread (info)",
         reads["ceiling: sealed-chunk pread + in-cache chunk open"][3], None, None),
    ]
    return targets


def main(argv: Optional[list] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=5000, help="calls per timing of a small message")
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--read-file-mib", type=int, default=1024)
    parser.add_argument("--reads", type=int, default=20000, help="random reads per timing")
    parser.add_argument("--dir", default="/dev/shm" if os.path.isdir("/dev/shm") else None)
    args = parser.parse_args(argv)
    if shardseal.backend_info()["backend"] != "native":
        print("the native module is not available: nothing to measure", file=sys.stderr)
        return 1
    key = os.urandom(32)
    size = args.read_file_mib * MiB
    rng = random.Random(SEED)
    offsets = [rng.randrange(size // READ_SIZE) * READ_SIZE for _ in range(args.reads)]
    print("# shardseal small messages and random reads\n")
    print(f"- shardseal {shardseal.__version__}, {shardseal.backend_info()['detail']}; kernels: "
          f"{', '.join(available_kernels())}; load average {os.getloadavg()[0]:.2f}")
    print(f"- small calls: {args.calls} calls per timing, {args.repeat} timings; reads: {args.reads} random "
          f"4 KiB-aligned reads of a {args.read_file_mib} MiB file in {args.dir}, {args.repeat} rounds")
    targets = []
    with tempfile.TemporaryDirectory(prefix="shardseal-bench-small-", dir=args.dir) as folder:
        files = write_files(folder, size, key)
        for kernel in available_kernels():
            small, reads = run_kernel(kernel, args, key, files, offsets)
            targets += report(kernel, small, reads)
    print("\n## Targets (medians)\n")
    for label, value, op, limit in targets:
        if op is None:
            print(f"- {label}: {value:.2f}")
            continue
        ok = value <= limit if op == "<=" else value >= limit
        print(f"- {label}: {value:.2f} (target {op} {limit}) {'PASS' if ok else 'FAIL'}")
    print(f"\nload average at the end: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
