"""shardseal next to its ceilings and its peers, on this machine: ``python -m benchmarks``.

In one run, on the same random buffers, it measures encrypt and decrypt throughput over message
sizes (4 KiB to 1 GiB; ``--quick``: up to 64 MiB) and per-call latency on small messages
(64 B to 4 KiB) of:

* the ceilings: memcpy of the buffer (1 thread and split across 1..all threads),
  ``openssl speed -evp aes-256-gcm`` (16 KiB records in cache, 1..all processes) and, for
  information, cryptography's AESGCM looping over one 16 KiB record in cache (its bundled
  OpenSSL may be newer than the system one);
* shardseal's native engine with threads = 1, 2, 4, ... all cores, into a caller buffer and
  allocating, and its pure-Python backend;
* the peers: ``cryptography.cobblestone`` (the same format), cryptography's AESGCM (one-shot and
  in 16 KiB chunks with encrypt_into) and Fernet, pycryptodome AES-GCM, tink StreamingAead (and
  tink Aead for small messages), pyrage (age) and pure-Python AES (pyaes, small sizes only,
  larger sizes extrapolated and marked).

Each figure is the median over repeated timed runs, with min and max, wall and CPU time. Every
output is verified outside the timing (see ``peers.py``). It writes ``results.json``,
``results.md`` and ``results.png`` to ``--out`` (default ``benchmarks/results/``) and prints the
Markdown tables. Missing optional peers are skipped with a note.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Optional

import numpy as np

import shardseal

from . import peers
from ._common import (
    GB,
    NCORES,
    NOISY_SHARE,
    CpuMonitor,
    VerificationError,
    cpu_model,
    cryptography_openssl_version,
    load_average,
    native_openssl,
    openssl_cli_version,
    parse_openssl_speed,
    time_runs,
)

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30
SIZES = [4 * KiB, 64 * KiB, 1 * MiB, 16 * MiB, 256 * MiB, 1 * GiB]
QUICK_SIZES = [4 * KiB, 64 * KiB, 1 * MiB, 16 * MiB, 64 * MiB]
LATENCY_SIZES = [64, 256, 1 * KiB, 4 * KiB]
CPU_FLAGS = ("aes", "pclmulqdq", "avx", "avx2", "avx512f", "avx512bw", "avx512vl", "vaes", "vpclmulqdq", "sha_ni")
DEFAULT_OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


@dataclass
class Settings:
    quick: bool
    repeat: int  # timed runs per row (fewer for slow rows, down to min_runs)
    min_runs: int
    target_seconds: float  # small messages: calls are batched until one run lasts about this long
    row_budget: float  # seconds of runs + verification one row should take at most (beyond min_runs)
    max_run_seconds: float  # a row whose run is estimated slower than this is not run at that size
    openssl_seconds: int

    @classmethod
    def make(cls, quick: bool) -> "Settings":
        if quick:
            return cls(True, repeat=3, min_runs=2, target_seconds=0.01, row_budget=2.0, max_run_seconds=1.5,
                       openssl_seconds=1)
        return cls(False, repeat=5, min_runs=3, target_seconds=0.03, row_budget=5.0, max_run_seconds=4.0,
                   openssl_seconds=2)


@dataclass
class Row:
    """One measured (or skipped, or extrapolated) figure."""

    kind: str  # "throughput", "latency" or "cipher" (openssl speed and the in-cache loop)
    impl: str
    label: str
    group: str  # "ceiling", "shardseal" or "peer"
    cipher: str
    op: str  # "encrypt", "decrypt" or "copy"
    size: int  # bytes per call
    threads: Optional[int]  # None: the library's default (all cores for shardseal)
    calls: int = 0  # calls per timed run
    runs: int = 0
    gbps: Optional[float] = None  # median of the runs, 1e9 plaintext bytes per wall second
    gbps_min: Optional[float] = None
    gbps_max: Optional[float] = None
    us_per_call: Optional[float] = None  # median wall microseconds per call
    us_min: Optional[float] = None
    us_max: Optional[float] = None
    wall_seconds: list = field(default_factory=list)  # per run
    cpu_seconds: list = field(default_factory=list)  # per run, this process (all threads) or the child
    cpu_per_wall: Optional[float] = None  # median CPU / median wall: cores kept busy
    others_cpu: Optional[float] = None  # share of all cores other processes used meanwhile
    verified: bool = False
    extrapolated: bool = False
    note: str = ""


def log(started: float, what: str) -> None:
    print(f"... {what} ({time.perf_counter() - started:.0f} s)", file=sys.stderr, flush=True)


def fmt_size(n: int) -> str:
    for unit, value in (("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if n >= value and n % value == 0:
            return f"{n // value} {unit}"
    return f"{n} B"


# --------------------------------------------------------------------------------------
# Environment


def cpu_flags() -> list:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    present = set(line.split(":", 1)[1].split())
                    return [flag for flag in CPU_FLAGS if flag in present]
    except OSError:
        pass
    return []


def memory_total() -> Optional[int]:
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return None


def git_revision() -> Optional[str]:
    """The checkout's commit (with "+dirty" when src/ or cpp/ has changes), if it is a git checkout."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        head = subprocess.run(["git", "-C", root, "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              check=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", root, "status", "--porcelain", "--", "src", "cpp"], capture_output=True,
                               text=True, check=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("+dirty" if dirty else "")


def environment(ncores: int) -> dict:
    import cryptography

    return {
        "cpu_model": cpu_model(),
        "cores": ncores,
        "cpu_flags": cpu_flags(),
        "memory_bytes": memory_total(),
        "openssl_cli": openssl_cli_version(),
        "openssl_native": native_openssl(),
        "cryptography": cryptography.__version__,
        "cryptography_openssl": cryptography_openssl_version(),
        "shardseal": shardseal.__version__,
        "shardseal_backend": shardseal.backend,
        "git": git_revision(),
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "platform": platform.platform(),
        "peers": {name: peers.module_version(module) for name, module in
                  (("pycryptodome", "Crypto"), ("tink", "tink"), ("pyrage", "pyrage"), ("pyaes", "pyaes"),
                   ("matplotlib", "matplotlib"))},
        "hidden_modules": [n for n in os.environ.get(peers.HIDE_ENV, "").split(",") if n.strip()],
        "loadavg_start": load_average(),
    }


# --------------------------------------------------------------------------------------
# Measuring


def rates(row: Row, size: int, calls: int, seconds: list, cpu: list) -> Row:
    gbps = [calls * size / s / GB for s in seconds]
    us = [s / calls * 1e6 for s in seconds]
    row.runs = len(seconds)
    row.gbps, row.gbps_min, row.gbps_max = statistics.median(gbps), min(gbps), max(gbps)
    row.us_per_call, row.us_min, row.us_max = statistics.median(us), min(us), max(us)
    row.wall_seconds = [round(s, 6) for s in seconds]
    row.cpu_seconds = [round(c, 6) for c in cpu]
    if cpu:
        row.cpu_per_wall = statistics.median(cpu) / statistics.median(seconds)
    return row


def measure(impl: peers.Impl, op: str, kind: str, size: int, settings: Settings,
            estimate: Optional[float] = None) -> Row:
    """Times impl's op on the Data impl was set up with; estimate: seconds per call, if known."""
    row = Row(kind, impl.name, impl.label, impl.group, impl.cipher, op, size, impl.threads)
    if estimate is not None and estimate > settings.max_run_seconds:
        row.note = f"not run: ~{estimate:.0f} s per call expected (cap {settings.max_run_seconds:g} s)"
        return row
    runner = peers.Runner(impl, op, settings.target_seconds)
    with impl.context():
        runner.calibrate()
        per_run = runner.first_seconds if runner.calls == 1 else settings.target_seconds
        per_run += runner.calls * runner.verify_seconds
        runs = int(settings.row_budget // max(per_run, 1e-9))
        runs = max(settings.min_runs, min(settings.repeat, runs))
        # a batched row warms up with one whole batch; a one-call row was warmed up by calibrate()
        timing = time_runs(f"{impl.label} {op} {fmt_size(size)}", runner.run, runner.verify, runs,
                           prepare=runner.prepare, warmup=runner.calls > 1)
    row.calls = runner.calls
    row.others_cpu = timing.others_cpu
    row.verified = True
    if runs < settings.repeat:
        row.note = f"{runs} runs (slow row)"
    return rates(row, size, runner.calls, timing.seconds, timing.cpu_seconds)


def extrapolate(row: Row, size: int, threads: Optional[int]) -> Row:
    out = Row(row.kind, row.impl, row.label, row.group, row.cipher, row.op, size, threads)
    out.gbps = out.gbps_min = out.gbps_max = row.gbps
    out.us_per_call = size / (row.gbps * GB) * 1e6
    out.extrapolated = True
    out.note = f"extrapolated from {fmt_size(row.size)} (constant bytes/s)"
    return out


def bench_openssl(threads: list, seconds: int) -> list:
    """openssl speed -evp aes-256-gcm -bytes 16384 with 1 process and -multi t, encrypt and decrypt."""
    rows = []
    for procs in threads:
        for op in ("encrypt", "decrypt"):
            cmd = ["openssl", "speed", "-evp", "aes-256-gcm", "-bytes", "16384", "-seconds", str(seconds)]
            if op == "decrypt":
                cmd.append("-decrypt")
            if procs > 1:
                cmd += ["-multi", str(procs)]
            row = Row("cipher", "openssl_speed", f"openssl speed -evp aes-256-gcm, 16 KiB{' -multi' if procs > 1 else ''}",
                      "ceiling", "AES-256-GCM (system OpenSSL)", op, 16 * KiB, procs)
            monitor = CpuMonitor(NCORES)
            t0, wall0 = os.times(), time.perf_counter()
            try:
                proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
                rate = parse_openssl_speed(proc.stdout + proc.stderr) / GB
            except (OSError, subprocess.CalledProcessError, ValueError) as exc:
                print(f"warning: {' '.join(cmd)} failed: {exc}", file=sys.stderr)
                continue
            t1, wall = os.times(), time.perf_counter() - wall0
            cpu = (t1.children_user + t1.children_system) - (t0.children_user + t0.children_system)
            row.runs, row.calls = 1, 1
            row.gbps = row.gbps_min = row.gbps_max = rate
            row.us_per_call = row.us_min = row.us_max = 16 * KiB / (rate * GB) * 1e6
            row.wall_seconds, row.cpu_seconds = [round(wall, 3)], [round(cpu, 3)]
            row.cpu_per_wall = cpu / wall
            row.others_cpu = monitor.others_share()
            row.note = " ".join(cmd[1:]) + ": one run, averaged by openssl over CPU-user seconds"
            rows.append(row)
    return rows


def bench_incache_aesgcm(settings: Settings) -> list:
    """cryptography's AESGCM.encrypt_into / decrypt_into over one 16 KiB record, in cache, 1 thread.

    Like openssl speed (a cipher ceiling) but with the OpenSSL that cryptography bundles. Every
    call writes the same buffer with the same nonce, so the last output stands for all of them.
    """
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    size, calls = 16 * KiB, 4096
    key, nonce = os.urandom(32), os.urandom(12)
    aead = AESGCM(key)
    plaintext = os.urandom(size)
    ciphertext = aead.encrypt(nonce, plaintext, None)
    enc_out, dec_out = bytearray(size + 16), bytearray(size)
    rows = []
    for op in ("encrypt", "decrypt"):
        if op == "encrypt":
            def run():
                for _ in range(calls):
                    aead.encrypt_into(nonce, plaintext, None, enc_out)

            def verify(_):
                if bytes(enc_out) != ciphertext:
                    raise VerificationError("in-cache AESGCM encrypt: wrong ciphertext")
        else:
            def run():
                for _ in range(calls):
                    aead.decrypt_into(nonce, ciphertext, None, dec_out)

            def verify(_):
                if bytes(dec_out) != plaintext:
                    raise VerificationError("in-cache AESGCM decrypt: wrong plaintext")
        timing = time_runs(f"in-cache AESGCM {op}", run, verify, settings.repeat)
        row = Row("cipher", "aesgcm_incache", "cryptography AESGCM, one 16 KiB record in cache", "ceiling",
                  f"AES-256-GCM ({cryptography_openssl_version()}, bundled)", op, size, 1, calls=calls,
                  verified=True, others_cpu=timing.others_cpu,
                  note="encrypt_into/decrypt_into loop over the same record; GIL held, so 1 thread")
        rows.append(rates(row, size, calls, timing.seconds, timing.cpu_seconds))
    return rows


def bench_throughput(impls: list, sizes: list, settings: Settings, ncores: int, started: float) -> list:
    rows: list = []
    last: dict = {}  # (impl, op) -> the row at the previous size, for estimates and extrapolation
    for size in sizes:
        log(started, f"throughput, {fmt_size(size)}: generating input")
        data = peers.Data(size, ncores)
        for impl in impls:
            if impl.min_size is not None and size < impl.min_size:
                for op in impl.ops:
                    row = Row("throughput", impl.name, impl.label, impl.group, impl.cipher, op, size, impl.threads)
                    row.note = f"not run below {fmt_size(impl.min_size)}"
                    rows.append(row)
                continue
            measured_max = impl.max_measured
            if measured_max is not None and size > measured_max:
                for op in impl.ops:
                    if (impl.name, op) in last and last[impl.name, op].gbps:
                        rows.append(extrapolate(last[impl.name, op], size, impl.threads))
                continue
            estimates = {}
            for op in impl.ops:
                prev = last.get((impl.name, op))
                if prev is not None and prev.gbps:
                    estimates[op] = size / (prev.gbps * GB)
            if estimates and all(e > settings.max_run_seconds for e in estimates.values()) \
                    and len(estimates) == len(impl.ops):
                for op in impl.ops:
                    rows.append(measure(impl, op, "throughput", size, settings, estimates[op]))
                continue
            log(started, f"throughput, {fmt_size(size)}: {impl.label}"
                         f"{'' if impl.threads in (None, 1) and impl.group == 'peer' else f' threads={impl.threads}'}")
            impl.setup(data)
            try:
                for op in impl.ops:
                    row = measure(impl, op, "throughput", size, settings, estimates.get(op))
                    rows.append(row)
                    if row.gbps:
                        last[impl.name, op] = row
            finally:
                impl.teardown()
                gc.collect()
        del data
        gc.collect()
    return rows


def bench_latency(impls: list, sizes: list, settings: Settings, ncores: int, started: float) -> list:
    rows = []
    for size in sizes:
        log(started, f"latency, {fmt_size(size)}")
        data = peers.Data(size, ncores)
        for impl in impls:
            impl.setup(data)
            try:
                for op in impl.ops:
                    rows.append(measure(impl, op, "latency", size, settings))
            finally:
                impl.teardown()
        del data
        gc.collect()
    return rows


# --------------------------------------------------------------------------------------
# Tables


def fmt_rate(v: Optional[float]) -> str:
    if v is None:
        return "–"
    return f"{v:.3g}" if v < 100 else f"{v:.0f}"


def fmt_us(v: Optional[float]) -> str:
    if v is None:
        return "–"
    return f"{v:.3g}" if v < 1000 else f"{v:.0f}"


def row_name(row: Row, ncores: int) -> str:
    if row.impl.startswith(("memcpy", "native_", "python_")):
        threads = "all cores" if row.threads is None else f"{row.threads} thread{'s' if row.threads != 1 else ''}"
        return f"{row.label}, {threads}"
    return row.label


def series(rows: list, kind: str) -> dict:
    """{(impl, threads): {op: {size: row}}} in first-seen order."""
    out: dict = {}
    for row in rows:
        if row.kind == kind:
            out.setdefault((row.impl, row.threads), {}).setdefault(row.op, {})[row.size] = row
    return out


def throughput_table(rows: list, op: str, sizes: list, ncores: int) -> str:
    head = f"| {op} GB/s (median) | cipher, format | " + " | ".join(fmt_size(s) for s in sizes) + " |"
    lines = [head, "|---|---|" + "---:|" * len(sizes)]
    for (_impl, _threads), by_op in series(rows, "throughput").items():
        cells = by_op.get(op) or by_op.get("copy")
        if not cells:
            continue
        first = next(iter(cells.values()))
        values = []
        for size in sizes:
            row = cells.get(size)
            if row is None or row.gbps is None:
                values.append("–")
            elif row.extrapolated:
                values.append(f"({fmt_rate(row.gbps)})")
            else:
                values.append(fmt_rate(row.gbps))
        name = row_name(first, ncores)
        if first.group == "shardseal":
            name = f"**{name}**"
        lines.append(f"| {name} | {first.cipher} | " + " | ".join(values) + " |")
    return "\n".join(lines)


def threads_table(rows: list, size: int, threads: list) -> str:
    lines = [f"| GB/s at {fmt_size(size)} (openssl: 16 KiB in cache) | " + " | ".join(
        f"{t} thread{'s' if t > 1 else ''}" for t in threads) + " |", "|---|" + "---:|" * len(threads)]
    wanted = [("memcpy", "copy", "memcpy (np.copyto, split across threads)"),
              ("openssl_speed", "encrypt", "openssl speed -evp aes-256-gcm (processes), encrypt"),
              ("openssl_speed", "decrypt", "openssl speed -evp aes-256-gcm (processes), decrypt"),
              ("native_into", "encrypt", "shardseal native encrypt_into"),
              ("native_into", "decrypt", "shardseal native decrypt_into"),
              ("native_alloc", "encrypt", "shardseal native encrypt (allocating)"),
              ("native_alloc", "decrypt", "shardseal native decrypt (allocating)")]
    for prefix, op, name in wanted:
        cells = []
        for t in threads:
            match = [r for r in rows if r.impl.startswith(prefix) and r.op == op and r.threads == t and
                     (r.kind == "cipher" or r.size == size)]
            cells.append(fmt_rate(match[0].gbps) if match else "–")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def latency_table(rows: list, sizes: list) -> str:
    lines = ["| µs per call, encrypt / decrypt (median) | " + " | ".join(fmt_size(s) for s in sizes) + " |",
             "|---|" + "---:|" * len(sizes)]
    for (_impl, _threads), by_op in series(rows, "latency").items():
        first = next(iter(next(iter(by_op.values())).values()))
        cells = []
        for size in sizes:
            enc, dec = by_op.get("encrypt", {}).get(size), by_op.get("decrypt", {}).get(size)
            cells.append(f"{fmt_us(enc.us_per_call if enc else None)} / {fmt_us(dec.us_per_call if dec else None)}")
        name = f"**{first.label}**" if first.group == "shardseal" else first.label
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def cipher_lines(rows: list) -> list:
    out = []
    for row in rows:
        if row.kind != "cipher":
            continue
        procs = "" if row.impl != "openssl_speed" else (f", {row.threads} processes" if row.threads > 1 else ", 1 process")
        out.append(f"- {row.label}{procs}, {row.op}: **{fmt_rate(row.gbps)} GB/s**"
                   + (f" (min {fmt_rate(row.gbps_min)}, max {fmt_rate(row.gbps_max)}, {row.runs} runs)"
                      if row.runs > 1 else ""))
    return out


def detail_table(rows: list) -> str:
    lines = ["| kind | implementation | op | size | threads | calls/run | runs | GB/s median | min | max | "
             "µs/call | wall s/run | CPU s/run | CPU/wall | other CPU | verified | note |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|"]
    for r in rows:
        wall = statistics.median(r.wall_seconds) if r.wall_seconds else None
        cpu = statistics.median(r.cpu_seconds) if r.cpu_seconds else None
        lines.append(
            f"| {r.kind} | {r.label} | {r.op} | {fmt_size(r.size)} | {'' if r.threads is None else r.threads} | "
            f"{r.calls or ''} | {r.runs or ''} | {fmt_rate(r.gbps)} | {fmt_rate(r.gbps_min)} | {fmt_rate(r.gbps_max)} | "
            f"{fmt_us(r.us_per_call)} | {'' if wall is None else f'{wall:.4g}'} | {'' if cpu is None else f'{cpu:.4g}'} | "
            f"{'' if r.cpu_per_wall is None else f'{r.cpu_per_wall:.2f}'} | "
            f"{'?' if r.others_cpu is None else f'{100 * r.others_cpu:.0f}%'} | "
            f"{'yes' if r.verified else ('extrapolated' if r.extrapolated else 'no')} | {r.note} |")
    return "\n".join(lines)


def report(result: dict, details: bool) -> str:
    env, settings = result["environment"], result["settings"]
    rows = [Row(**r) for r in result["rows"]]
    sizes, latency_sizes, threads = settings["sizes"], settings["latency_sizes"], settings["threads"]
    ncores = env["cores"]
    out = ["# shardseal benchmark", ""]
    out += [f"- CPU: {env['cpu_model']}, {ncores} cores; flags: {' '.join(env['cpu_flags'])}",
            f"- OpenSSL: CLI {env['openssl_cli']}; shardseal native: {env['openssl_native']}; "
            f"cryptography {env['cryptography']} bundles {env['cryptography_openssl']}",
            f"- shardseal {env['shardseal']} ({env['shardseal_backend']}, git {env.get('git') or '?'}), Python {env['python']}, "
            f"numpy {env['numpy']}, {env['platform']}",
            "- peers: " + ", ".join(f"{k} {v or 'missing'}" for k, v in env["peers"].items()),
            f"- load average (1, 5, 15 min) at start: {env['loadavg_start']}, at end: {env.get('loadavg_end', '?')}; "
            f"other processes used {result.get('others_cpu_pct', '?')}% of the CPU during the run",
            f"- mode: {'--quick' if settings['quick'] else 'full'}, up to {settings['repeat']} timed runs per figure "
            f"(at least {settings['min_runs']}), total {result['total_seconds']:.0f} s",
            ""]
    if result["unavailable"]:
        out += ["Skipped (not installed or hidden): " + "; ".join(
            f"{u['label']}: {u['reason']}" for u in result["unavailable"]), ""]
    out += ["## Ceilings: AES-256-GCM in cache", ""] + cipher_lines(rows) + [""]
    out += ["## Throughput", "",
            "GB/s = 1e9 plaintext bytes per wall second, median of the timed runs; every output verified. "
            "shardseal rows in bold; memcpy rows are the same in both tables. "
            "(x) = extrapolated, – = not run (see notes).", ""]
    out += [throughput_table(rows, "encrypt", sizes, ncores), "", throughput_table(rows, "decrypt", sizes, ncores), ""]
    biggest = max(sizes)
    out += ["## Threads", "", threads_table(rows, biggest, threads), ""]
    out += ["## Small messages: latency per call", "", latency_table(rows, latency_sizes), ""]
    grouped: dict = {}  # (name, note) -> sizes
    for r in rows:
        if r.note and r.kind != "cipher" and (r.gbps is None or r.extrapolated):
            name = row_name(r, ncores) + (f", {r.op}" if r.note.startswith("not run: ~") else "")
            grouped.setdefault((name, r.note), set()).add(r.size)
    if grouped:
        out += ["Notes:", ""] + [f"- {name}: {note} ({', '.join(fmt_size(s) for s in sorted(sz))})"
                                 for (name, note), sz in grouped.items()] + [""]
    if details:
        out += ["## All figures", "", "CPU s/run: CPU time of the process (all threads) per timed run; CPU/wall: "
                "cores kept busy; other CPU: share of all cores other processes used meanwhile.", "",
                detail_table(rows), ""]
    return "\n".join(out)


# --------------------------------------------------------------------------------------
# Main


def parse_sizes(text: str) -> list:
    units = {"": 1, "B": 1, "K": KiB, "KIB": KiB, "M": MiB, "MIB": MiB, "G": GiB, "GIB": GiB}
    sizes = []
    for part in text.split(","):
        part = part.strip().upper()
        number = part.rstrip("KMGIB")
        sizes.append(int(number) * units[part[len(number):]])
    return sizes


def main(argv: Optional[list] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="sizes up to 64 MiB, fewer runs (under 2 minutes)")
    parser.add_argument("--out", default=DEFAULT_OUT, help="output folder (default benchmarks/results/)")
    parser.add_argument("--sizes", help="throughput sizes, e.g. 4K,1M,256M (default 4K,64K,1M,16M,256M,1G)")
    parser.add_argument("--latency-sizes", help="small-message sizes (default 64,256,1K,4K)")
    parser.add_argument("--threads", help="thread counts, e.g. 1,2,4 (default 1, 2, 4, ... all cores)")
    parser.add_argument("--repeat", type=int, help="timed runs per figure (default 5; --quick 3)")
    parser.add_argument("--only", help="comma-separated implementation names (prefixes) to run, e.g. native,memcpy")
    parser.add_argument("--skip", help="comma-separated implementation names (prefixes) to leave out")
    parser.add_argument("--no-plot", action="store_true", help="do not draw results.png")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    settings = Settings.make(args.quick)
    if args.repeat:
        settings.repeat = max(1, args.repeat)
        settings.min_runs = min(settings.min_runs, settings.repeat)
    sizes = parse_sizes(args.sizes) if args.sizes else (QUICK_SIZES if args.quick else SIZES)
    latency_sizes = parse_sizes(args.latency_sizes) if args.latency_sizes else LATENCY_SIZES
    ncores = NCORES
    threads = [int(t) for t in args.threads.split(",")] if args.threads else peers.thread_counts(ncores)
    if shardseal.backend != "native":
        print("error: shardseal.backend is not 'native'; build the native engine first", file=sys.stderr)
        return 2

    monitor = CpuMonitor(ncores)
    env = environment(ncores)
    only = tuple(args.only.split(",")) if args.only else None
    skip = tuple(args.skip.split(",")) if args.skip else ()

    def selected(name: str) -> bool:
        return (only is None or name.startswith(only)) and not (skip and name.startswith(skip))

    impls = [i for i in peers.implementations(threads) if selected(i.name)]
    unavailable, usable = [], []
    for impl in impls:
        try:
            impl.load()
            usable.append(impl)
        except peers.Unavailable as exc:
            print(f"note: skipping {impl.label}: {exc}", file=sys.stderr)
            unavailable.append({"impl": impl.name, "label": impl.label, "reason": str(exc)})

    print(f"# shardseal benchmark: {env['cpu_model']}, {ncores} cores, {env['openssl_cli']}, "
          f"load {env['loadavg_start']}", file=sys.stderr)
    rows: list = []
    try:
        if selected("openssl_speed"):
            log(started, "openssl speed")
            rows += bench_openssl(threads, settings.openssl_seconds)
        if selected("aesgcm_incache"):
            log(started, "in-cache AESGCM")
            rows += bench_incache_aesgcm(settings)
        rows += bench_throughput([i for i in usable if i.throughput], sizes, settings, ncores, started)
        rows += bench_latency([i for i in usable if i.latency], latency_sizes, settings, ncores, started)
    except VerificationError as exc:
        print(f"\nERROR: verification failed: {exc}", file=sys.stderr)
        return 1

    others = monitor.others_share()
    env["loadavg_end"] = load_average()
    result = {
        "schema": "shardseal-bench/1",
        "environment": env,
        "settings": {**asdict(settings), "sizes": sizes, "latency_sizes": latency_sizes, "threads": threads},
        "unavailable": unavailable,
        "rows": [asdict(r) for r in rows],
        "others_cpu_pct": None if others is None else round(100 * others),
        "total_seconds": time.perf_counter() - started,
    }
    os.makedirs(args.out, exist_ok=True)
    json_path, md_path, png_path = (os.path.join(args.out, f"results.{ext}") for ext in ("json", "md", "png"))
    with open(json_path, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=1)
        f.write("\n")
    if not args.no_plot:
        try:
            from .plot import plot

            plot(result, png_path)
        except ImportError as exc:
            print(f"note: no plot ({exc}); pip install matplotlib", file=sys.stderr)
            png_path = None
    else:
        png_path = None
    result["total_seconds"] = time.perf_counter() - started
    with open(md_path, "w", encoding="utf-8") as f:
        f.write(report(result, details=True))
        if png_path:
            f.write(f"\n![throughput]({os.path.basename(png_path)})\n")
    print(report(result, details=False))
    if others is not None and others > NOISY_SHARE:
        print(f"WARNING: other processes used {100 * others:.0f}% of the CPU during the run: figures with "
              f"threads > 1 are unreliable; rerun on a quiet machine.")
    print(f"\nwrote {json_path}, {md_path}" + (f", {png_path}" if png_path else ""))
    print(f"total time: {time.perf_counter() - started:.0f} s")
    return 0
