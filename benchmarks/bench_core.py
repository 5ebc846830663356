#!/usr/bin/env python3
"""Core throughput benchmark for shardseal, next to its ceilings and its peers.

On one random buffer (256 MiB by default) this script measures, in GB/s of plaintext
(1 GB = 1e9 bytes), the median, min and max over ``--repeat`` runs of:

* the ceilings: a memcpy of the buffer into a pre-faulted destination (memory bandwidth)
  and ``openssl speed -evp aes-256-gcm -bytes 16384`` in one process and with
  ``-multi <ncores>`` (the best AES-256-GCM the system OpenSSL does on 16 KiB records, the
  size of a Cobblestone chunk). Neither can be beaten, so they say how much headroom is left;
* the machine's ceilings measured in C in the same run (``_native.bench_copy`` /
  ``bench_gcm_seal``): the buffer copied in 16 KiB pieces on 1 and all threads (a cipher with
  ordinary stores cannot beat it), and a raw AES-256-GCM loop over 16 KiB chunks for each
  available kernel (ipsec-mb, OpenSSL); every row's "/ copy ceiling" column is its ratio to the
  copy ceiling with the same thread count;
* shardseal's native engine with every other available kernel (encrypt_into / decrypt_into);
* shardseal's native engine, encrypt and decrypt, threads=1 and threads=all, into a
  pre-allocated pre-faulted buffer (``encrypt_into`` / ``decrypt_into``) and allocating
  (``encrypt`` / ``decrypt``);
* shardseal's pure-Python backend (``encrypt_into`` / ``decrypt_into``, threads=1);
* the interop peer ``cryptography.cobblestone`` (update + finalize), and cryptography's
  one-shot ``AESGCM`` over the whole buffer (one nonce, no chunking).

Every timed encrypt output is decrypted (outside the timing) and compared with the input, and
every timed decrypt output is compared with the input, so a fast wrong answer aborts the run.
Output buffers are zeroed before each run so that a stale correct result cannot pass either.
At the end the script prints the ratios the performance issue sets as targets, with PASS/FAIL.

Run it as ``python benchmarks/bench_core.py [--size-mib 256] [--repeat 7] [--json out.json]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import asdict
from typing import Optional

import numpy as np

import shardseal
import shardseal.cobblestone as shardseal_cobblestone

# The shared helpers, re-exported here for scripts that import them from bench_core.
if __package__:  # imported as part of the benchmarks package (python -m benchmarks.bench_core, pytest)
    from ._common import (  # noqa: F401
        GB,
        NCORES,
        NOISY_SHARE,
        SLOW_RUN_REPEATS,
        SLOW_RUN_SECONDS,
        CpuMonitor,
        Measurement,
        Timing,
        VerificationError,
        cobblestone_parts,
        core_count,
        cpu_model,
        cryptography_openssl_version,
        openssl_cli_version,
        parse_openssl_speed,
        prefaulted,
        require_equal,
        require_parts_equal,
        time_runs,
        to_measurement,
        use_backend,
    )
else:  # run as a script: python benchmarks/bench_core.py
    from _common import (  # noqa: F401
        GB,
        NCORES,
        NOISY_SHARE,
        SLOW_RUN_REPEATS,
        SLOW_RUN_SECONDS,
        CpuMonitor,
        Measurement,
        Timing,
        VerificationError,
        cobblestone_parts,
        core_count,
        cpu_model,
        cryptography_openssl_version,
        openssl_cli_version,
        parse_openssl_speed,
        prefaulted,
        require_equal,
        require_parts_equal,
        time_runs,
        to_measurement,
        use_backend,
    )

try:
    import cryptography
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
except ImportError:  # pragma: no cover - shardseal itself depends on cryptography
    cryptography = None
    AESGCM = None

try:
    from cryptography.cobblestone import Cobblestone256Decryptor, Cobblestone256Encryptor
except ImportError:  # cryptography < 50
    Cobblestone256Decryptor = Cobblestone256Encryptor = None


def environment(ncores: int, size: int, repeat: int) -> dict:
    return {
        "cpu_model": cpu_model(),
        "cores": ncores,
        "openssl_cli": openssl_cli_version(),
        "cryptography": getattr(cryptography, "__version__", None),
        "cryptography_openssl": cryptography_openssl_version(),
        "shardseal": shardseal.__version__,
        "shardseal_backend": shardseal.backend,
        "kernel": shardseal.backend_info()["kernel"],
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "platform": platform.platform(),
        "size_bytes": size,
        "repeat": repeat,
    }



# --------------------------------------------------------------------------------------
# Ceilings


def bench_memcpy(src: np.ndarray, dst: np.ndarray, repeat: int) -> Measurement:
    def prepare():
        dst.fill(0)

    timing = time_runs("memcpy", lambda: np.copyto(dst, src), lambda _: require_equal("memcpy", dst, src),
                       repeat, prepare=prepare)
    return to_measurement("memcpy", "memcpy (np.copyto, pre-faulted dst)", None, src.nbytes, timing)




def native_module():
    from shardseal import _native  # the benchmark helpers are native-only (documented in _native.pyi)

    return _native


def bench_copy_ceiling(src: np.ndarray, dst: np.ndarray, threads: int, repeat: int) -> Measurement:
    """A C loop copying the buffer in 16 KiB pieces, split over threads like the engine."""
    native = native_module()
    tag = "1" if threads == 1 else "all"
    timing = time_runs(f"copy16k threads={threads}", lambda: native.bench_copy(src, dst, threads),
                       lambda _: require_equal(f"copy16k threads={threads}", dst, src), repeat,
                       prepare=lambda: dst.fill(0))
    return to_measurement(f"copy16k_t{tag}", "ceiling: C copy in 16 KiB pieces (pre-faulted dst)", threads,
                          src.nbytes, timing)


def verify_raw_gcm(label: str, src: np.ndarray, sealed: np.ndarray) -> None:
    """Every chunk of bench_gcm_seal's output opens with cryptography's AESGCM to the input."""
    if AESGCM is None:
        return
    aead, chunk, sealed_chunk = AESGCM(bytes(range(1, 33))), 16384, 16384 + 16
    for i in range((src.nbytes + chunk - 1) // chunk):
        body = src[i * chunk:(i + 1) * chunk]
        start = i * sealed_chunk
        nonce = bytes(4) + i.to_bytes(8, "little")
        if aead.decrypt(nonce, sealed[start:start + body.nbytes + 16], None) != body.tobytes():
            raise VerificationError(f"{label}: chunk {i} does not open to the input")


def bench_gcm_ceiling(kernel: str, src: np.ndarray, dst: np.ndarray, threads: int, repeat: int) -> Measurement:
    """The kernel's raw AES-256-GCM over 16 KiB chunks: no key derivation, no Cobblestone."""
    native = native_module()
    tag = "1" if threads == 1 else "all"
    label = f"gcm {kernel} threads={threads}"
    timing = time_runs(label, lambda: native.bench_gcm_seal(kernel, src, dst, threads),
                       lambda _: verify_raw_gcm(label, src, dst), repeat, prepare=lambda: dst.fill(0))
    return to_measurement(f"gcm_{kernel}_t{tag}", f"ceiling: raw AES-256-GCM loop in C, {kernel} kernel", threads,
                          src.nbytes, timing)


def available_kernels() -> list:
    status = native_module().kernel_status()
    return [k for k in sorted(status) if status[k] is None]


def bench_openssl_speed(key: str, label: str, procs: int, decrypt: bool, seconds: int) -> Optional[Measurement]:
    cmd = ["openssl", "speed", "-evp", "aes-256-gcm", "-bytes", "16384", "-seconds", str(seconds)]
    if decrypt:
        cmd.append("-decrypt")
    if procs > 1:
        cmd += ["-multi", str(procs)]
    monitor = CpuMonitor(NCORES)
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
        rate = parse_openssl_speed(proc.stdout + proc.stderr) / GB
    except (OSError, subprocess.CalledProcessError, ValueError) as exc:
        print(f"warning: {' '.join(cmd)} failed: {exc}", file=sys.stderr)
        return None
    return Measurement(key, label, procs, rate, rate, rate, 1, [], "one run, internally averaged",
                       monitor.others_share())


# --------------------------------------------------------------------------------------
# shardseal


class ShardsealBench:
    """shardseal encrypt/decrypt, verified after every run with the native engine."""

    def __init__(self, plaintext: np.ndarray, key: bytes, ncores: int, repeat: int) -> None:
        self.plaintext = plaintext
        self.key = key
        self.ncores = ncores
        self.repeat = repeat
        self.size = plaintext.nbytes
        self.enc_out = prefaulted(shardseal.encrypted_size(self.size))
        self.dec_out = prefaulted(self.size)
        self.check = prefaulted(self.size)
        with use_backend("native"):
            self.blob = shardseal.encrypt(plaintext, key, threads=ncores)
        self.check_container(self.blob, "reference container", independent=True)

    def check_container(self, blob, label: str, independent: bool = False) -> None:
        """Decrypts blob with the native engine (and, once, with cryptography) and compares."""
        self.check.fill(0)
        with use_backend("native"):
            written = shardseal.decrypt_into(blob, self.key, self.check, threads=self.ncores)
        if written != self.size:
            raise VerificationError(f"{label}: decrypts to {written} bytes, expected {self.size}")
        require_equal(label, self.check, self.plaintext)
        if independent:
            self.check_with_peer(blob, label)

    def check_with_peer(self, blob, label: str) -> None:
        """Opens the container's Cobblestone message with cryptography.cobblestone.

        An engine-independent check that the native output is a real C2SP message.
        """
        if Cobblestone256Decryptor is None:
            return
        input_key, context, message = cobblestone_parts(blob, self.key)
        decryptor = Cobblestone256Decryptor(input_key, context)
        self.check.fill(0)
        n = decryptor.update_into(message, self.check)
        tail = decryptor.finalize()
        self.check[n:n + len(tail)] = np.frombuffer(tail, np.uint8)
        require_equal(f"{label} (checked by cryptography.cobblestone)", self.check, self.plaintext)

    def encrypt_into(self, threads: int) -> Timing:
        first = [True]

        def run():
            return shardseal.encrypt_into(self.plaintext, self.key, self.enc_out, threads=threads)

        def verify(written):
            blob = self.enc_out[:written]
            self.check_container(blob, f"encrypt_into threads={threads}", independent=first[0])
            first[0] = False

        return time_runs("encrypt_into", run, verify, self.repeat, prepare=lambda: self.enc_out.fill(0))

    def decrypt_into(self, threads: int) -> Timing:
        def run():
            return shardseal.decrypt_into(self.blob, self.key, self.dec_out, threads=threads)

        def verify(written):
            if written != self.size:
                raise VerificationError(f"decrypt_into threads={threads}: wrote {written} bytes")
            require_equal(f"decrypt_into threads={threads}", self.dec_out, self.plaintext)

        return time_runs("decrypt_into", run, verify, self.repeat, prepare=lambda: self.dec_out.fill(0))

    def encrypt_alloc(self, threads: int) -> Timing:
        first = [True]

        def verify(blob):
            self.check_container(blob, f"encrypt threads={threads}", independent=first[0])
            first[0] = False

        return time_runs("encrypt", lambda: shardseal.encrypt(self.plaintext, self.key, threads=threads),
                               verify, self.repeat)

    def decrypt_alloc(self, threads: int) -> Timing:
        return time_runs("decrypt", lambda: shardseal.decrypt(self.blob, self.key, threads=threads),
                               lambda out: require_equal(f"decrypt threads={threads}", out, self.plaintext),
                               self.repeat)

    def run_native(self) -> list:
        results = []
        for threads in (1, self.ncores):
            tag = "1" if threads == 1 else "all"
            with use_backend("native"):
                cases = [
                    ("encrypt_into", "native encrypt_into", self.encrypt_into),
                    ("decrypt_into", "native decrypt_into", self.decrypt_into),
                    ("encrypt", "native encrypt (allocating)", self.encrypt_alloc),
                    ("decrypt", "native decrypt (allocating)", self.decrypt_alloc),
                ]
                for op, label, bench in cases:
                    results.append(to_measurement(f"native_{op}_t{tag}", label, threads, self.size, bench(threads)))
        return results

    def run_other_kernel(self, kernel: str) -> list:
        """encrypt_into / decrypt_into with a kernel other than the active one (same bytes)."""
        native = native_module()
        saved = native.kernel()
        native.select_kernel(kernel)
        results = []
        try:
            with use_backend("native"):
                for threads in (1, self.ncores):
                    tag = "1" if threads == 1 else "all"
                    results.append(to_measurement(f"native_{kernel}_encrypt_into_t{tag}",
                                                  f"native encrypt_into, {kernel} kernel", threads, self.size,
                                                  self.encrypt_into(threads)))
                    results.append(to_measurement(f"native_{kernel}_decrypt_into_t{tag}",
                                                  f"native decrypt_into, {kernel} kernel", threads, self.size,
                                                  self.decrypt_into(threads)))
        finally:
            native.select_kernel(saved)
        return results

    def run_python_backend(self) -> list:
        results = []
        with use_backend("python"):
            assert shardseal.backend == "python"
            results.append(to_measurement("python_encrypt_into_t1", "python backend encrypt_into", 1, self.size,
                                          self.encrypt_into(1)))
            results.append(to_measurement("python_decrypt_into_t1", "python backend decrypt_into", 1, self.size,
                                          self.decrypt_into(1)))
        assert shardseal.backend == "native"
        return results


# --------------------------------------------------------------------------------------
# Peers: cryptography


def bench_cryptography_cobblestone(plaintext: np.ndarray, key: bytes, repeat: int, ncores: int) -> list:
    """cryptography.cobblestone, the interop peer: update + finalize, and update_into (info)."""
    if Cobblestone256Encryptor is None:
        print("warning: cryptography.cobblestone unavailable (needs cryptography>=50)", file=sys.stderr)
        return []
    size = plaintext.nbytes
    check = prefaulted(size)

    def decrypt_message(parts: list, label: str) -> None:
        # The peer's ciphertext, opened by shardseal.cobblestone (native): also an interop check.
        message = b"".join(parts)
        check.fill(0)
        with use_backend("native"):
            shardseal_cobblestone.decrypt_into(message, key, check, threads=ncores)
        require_equal(label, check, plaintext)

    def encrypt_run():
        encryptor = Cobblestone256Encryptor(key, b"")
        return [encryptor.update(plaintext), encryptor.finalize()]

    results = []
    timing = time_runs("cryptography.cobblestone encrypt", encrypt_run,
                              lambda parts: decrypt_message(parts, "cryptography.cobblestone encrypt"),
                              repeat, cap_slow=True)
    results.append(to_measurement("cobblestone_encrypt", "cryptography.cobblestone encrypt (update+finalize)", 1,
                                  size, timing))

    with use_backend("native"):
        message = shardseal_cobblestone.encrypt(plaintext, key, threads=ncores)

    def decrypt_run():
        decryptor = Cobblestone256Decryptor(key, b"")
        return [decryptor.update(message), decryptor.finalize()]

    timing = time_runs("cryptography.cobblestone decrypt", decrypt_run,
                              lambda parts: require_parts_equal("cryptography.cobblestone decrypt", parts, plaintext),
                              repeat, cap_slow=True)
    results.append(to_measurement("cobblestone_decrypt", "cryptography.cobblestone decrypt (update+finalize)", 1,
                                  size, timing))

    # For information: the same peer into a pre-faulted buffer, i.e. without the 256 MiB
    # allocation that update() makes; separates allocation cost from crypto cost.
    enc_buf = prefaulted(len(message) + 16)
    dec_buf = prefaulted(size + 16)

    def encrypt_into_run():
        encryptor = Cobblestone256Encryptor(key, b"")
        n = encryptor.update_into(plaintext, enc_buf)
        return n, encryptor.finalize()

    def verify_encrypt_into(result):
        n, tail = result
        decrypt_message([enc_buf[:n].tobytes(), tail], "cryptography.cobblestone update_into")

    timing = time_runs("cryptography.cobblestone encrypt update_into", encrypt_into_run, verify_encrypt_into,
                              repeat, prepare=lambda: enc_buf.fill(0), cap_slow=True)
    results.append(to_measurement("cobblestone_encrypt_update_into",
                                  "cryptography.cobblestone encrypt (update_into, info)", 1, size, timing))

    def decrypt_into_run():
        decryptor = Cobblestone256Decryptor(key, b"")
        n = decryptor.update_into(message, dec_buf)
        return n, decryptor.finalize()

    def verify_decrypt_into(result):
        n, tail = result
        require_parts_equal("cryptography.cobblestone decrypt update_into", [dec_buf[:n], tail], plaintext)

    timing = time_runs("cryptography.cobblestone decrypt update_into", decrypt_into_run, verify_decrypt_into,
                              repeat, prepare=lambda: dec_buf.fill(0), cap_slow=True)
    results.append(to_measurement("cobblestone_decrypt_update_into",
                                  "cryptography.cobblestone decrypt (update_into, info)", 1, size, timing))
    return results


def bench_aesgcm_oneshot(plaintext: np.ndarray, key: bytes, repeat: int) -> list:
    """cryptography's AESGCM over the whole buffer in one call (one nonce, no chunking)."""
    if AESGCM is None:
        return []
    size = plaintext.nbytes
    aead = AESGCM(key)
    nonce = os.urandom(12)

    def verify_encrypt(ciphertext):
        require_equal("AESGCM encrypt", aead.decrypt(nonce, ciphertext, None), plaintext)

    results = []
    timing = time_runs("AESGCM encrypt", lambda: aead.encrypt(nonce, plaintext, None), verify_encrypt,
                              repeat, cap_slow=True)
    results.append(to_measurement("aesgcm_encrypt", "cryptography AESGCM.encrypt (one-shot)", 1, size, timing))

    ciphertext = aead.encrypt(nonce, plaintext, None)
    timing = time_runs("AESGCM decrypt", lambda: aead.decrypt(nonce, ciphertext, None),
                              lambda out: require_equal("AESGCM decrypt", out, plaintext), repeat, cap_slow=True)
    results.append(to_measurement("aesgcm_decrypt", "cryptography AESGCM.decrypt (one-shot)", 1, size, timing))
    return results


# --------------------------------------------------------------------------------------
# Report


def ceiling_for(m: Measurement, by_key: dict, ncores: int) -> Optional[Measurement]:
    """The 16 KiB-piece copy ceiling with the row's thread count (all threads for the multi-process rows)."""
    threads = ncores if m.threads is None else m.threads
    return by_key.get("copy16k_t1" if threads == 1 else "copy16k_tall")


def format_table(rows: list, ncores: int = NCORES) -> str:
    by_key = {m.key: m for m in rows}
    lines = [
        "| Measurement | threads | GB/s median | GB/s min | GB/s max | / copy ceiling | runs | other CPU | note |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for m in rows:
        threads = "" if m.threads is None else str(m.threads)
        others = "?" if m.others_cpu is None else f"{100 * m.others_cpu:.0f}%"
        ceiling = ceiling_for(m, by_key, ncores)
        ratio = f"{m.median / ceiling.median:.2f}" if ceiling is not None and ceiling.median > 0 else "n/a"
        lines.append(f"| {m.label} | {threads} | {m.median:.2f} | {m.min:.2f} | {m.max:.2f} | {ratio} | {m.runs} "
                     f"| {others} | {m.note} |")
    return "\n".join(lines)


def evaluate_targets(by_key: dict, ncores: int) -> list:
    """The ratios the issue sets as targets: (description, ratio or None, target, extra)."""

    def ratio(num: str, den: str) -> Optional[float]:
        if num in by_key and den in by_key and by_key[den].median > 0:
            return by_key[num].median / by_key[den].median
        return None

    def info(num: str, den: str, what: str) -> str:
        r = ratio(num, den)
        return "" if r is None else f"  [{r:.3f}x {what}]"

    multi = f"openssl speed -multi {ncores}"
    kernel = native_module().kernel()
    ceilings = []
    for op in ("encrypt", "decrypt"):
        ceilings += [
            (f"native {op}_into threads=1 / C copy in 16 KiB pieces threads=1",
             ratio(f"native_{op}_into_t1", "copy16k_t1"), 0.85,
             info(f"native_{op}_into_t1", f"gcm_{kernel}_t1", f"raw {kernel} GCM loop, info")),
            (f"native {op}_into threads=all / C copy in 16 KiB pieces threads=all",
             ratio(f"native_{op}_into_tall", "copy16k_tall"), 0.80,
             info(f"native_{op}_into_tall", f"gcm_{kernel}_tall", f"raw {kernel} GCM loop, info")),
            (f"native {op} (allocating) / native {op}_into, threads=all",
             ratio(f"native_{op}_tall", f"native_{op}_into_tall"), 0.85,
             info(f"native_{op}_t1", f"native_{op}_into_t1", "threads=1, info")),
        ]
    ceilings += [
        ("native encrypt_into threads=1 / cryptography AESGCM.encrypt over the whole buffer",
         ratio("native_encrypt_into_t1", "aesgcm_encrypt"), 1.0, ""),
        ("native encrypt_into threads=all / cryptography.cobblestone update_into",
         ratio("native_encrypt_into_tall", "cobblestone_encrypt_update_into"), 1.8, ""),
    ]
    return ceilings + [
        (f"native encrypt_into threads=all / {multi}", ratio("native_encrypt_into_tall", "openssl_multi"), 0.85, ""),
        (f"native decrypt_into threads=all / {multi}", ratio("native_decrypt_into_tall", "openssl_multi"), 0.85,
         info("native_decrypt_into_tall", "openssl_multi_decrypt", "openssl -decrypt -multi, info")),
        ("native encrypt_into threads=all / cryptography.cobblestone encrypt",
         ratio("native_encrypt_into_tall", "cobblestone_encrypt"), 8.0,
         info("native_encrypt_into_tall", "cobblestone_encrypt_update_into", "its update_into, info")),
        ("native decrypt_into threads=all / cryptography.cobblestone decrypt",
         ratio("native_decrypt_into_tall", "cobblestone_decrypt"), 4.0,
         info("native_decrypt_into_tall", "cobblestone_decrypt_update_into", "its update_into, info")),
        ("native encrypt_into threads=1 / openssl speed (1 process)",
         ratio("native_encrypt_into_t1", "openssl_single"), 0.85, ""),
        ("native decrypt_into threads=1 / openssl speed (1 process)",
         ratio("native_decrypt_into_t1", "openssl_single"), 0.85,
         info("native_decrypt_into_t1", "openssl_single_decrypt", "openssl -decrypt, info")),
        ("python backend encrypt_into / cryptography.cobblestone encrypt",
         ratio("python_encrypt_into_t1", "cobblestone_encrypt"), 3.0,
         info("python_encrypt_into_t1", "cobblestone_encrypt_update_into", "its update_into, info")),
    ]


def main(argv: Optional[list] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=256, help="buffer size in MiB (default 256)")
    parser.add_argument("--repeat", type=int, default=7, help="timed runs per measurement (default 7)")
    parser.add_argument("--json", metavar="PATH", help="also write all results to this JSON file")
    parser.add_argument("--openssl-seconds", type=int, default=3, help="openssl speed -seconds (default 3)")
    args = parser.parse_args(argv)
    if args.size_mib < 1 or args.repeat < 1 or args.openssl_seconds < 1:
        parser.error("--size-mib, --repeat and --openssl-seconds must be positive")

    started = time.perf_counter()
    run_monitor = CpuMonitor(NCORES)
    ncores = NCORES
    size = args.size_mib << 20
    env = environment(ncores, size, args.repeat)
    if env["shardseal_backend"] != "native":
        print("error: shardseal.backend is not 'native'; this benchmark measures the native engine", file=sys.stderr)
        return 2

    print("# shardseal core benchmark\n")
    print(f"- CPU: {env['cpu_model']}")
    print(f"- cores (sched_getaffinity): {ncores}")
    print(f"- OpenSSL (CLI / shardseal native): {env['openssl_cli']}")
    print(f"- cryptography {env['cryptography']} (bundled {env['cryptography_openssl']})")
    print(f"- shardseal {env['shardseal']}, backend: {env['shardseal_backend']}, AES-GCM kernel: "
          f"{env['kernel']} (available: {', '.join(available_kernels())})")
    print(f"- Python {env['python']}, numpy {env['numpy']}")
    print(f"- buffer: {args.size_mib} MiB of random bytes, {args.repeat} timed runs after 1 warm-up;"
          f" GB/s = 1e9 plaintext bytes/s\n", flush=True)

    results = []

    def step(what: str) -> None:
        print(f"... {what} ({time.perf_counter() - started:.0f} s)", file=sys.stderr, flush=True)

    step("openssl speed")
    for key, label, procs, decrypt in [
        ("openssl_single", "openssl speed aes-256-gcm 16 KiB, encrypt", 1, False),
        ("openssl_multi", f"openssl speed aes-256-gcm 16 KiB -multi {ncores}, encrypt", ncores, False),
        ("openssl_single_decrypt", "openssl speed aes-256-gcm 16 KiB, -decrypt", 1, True),
        ("openssl_multi_decrypt", f"openssl speed aes-256-gcm 16 KiB -multi {ncores}, -decrypt", ncores, True),
    ]:
        m = bench_openssl_speed(key, label, procs, decrypt, args.openssl_seconds)
        if m is not None:
            results.append(m)

    step("generating input")
    plaintext = np.frombuffer(os.urandom(size), dtype=np.uint8)
    key = shardseal.generate_key()

    try:
        step("memcpy")
        copy_dst = prefaulted(size)
        results.insert(0, bench_memcpy(plaintext, copy_dst, args.repeat))
        step("ceilings: 16 KiB copy, raw GCM per kernel")
        for threads in (1, ncores):
            results.append(bench_copy_ceiling(plaintext, copy_dst, threads, args.repeat))
        del copy_dst
        gcm_dst = prefaulted(size + (size + 16383) // 16384 * 16)
        for kernel_name in available_kernels():
            for threads in (1, ncores):
                results.append(bench_gcm_ceiling(kernel_name, plaintext, gcm_dst, threads, args.repeat))
        del gcm_dst
        step(f"shardseal native ({native_module().kernel()} kernel)")
        bench = ShardsealBench(plaintext, key, ncores, args.repeat)
        results += bench.run_native()
        for kernel_name in available_kernels():
            if kernel_name != native_module().kernel():
                step(f"shardseal native, {kernel_name} kernel")
                results += bench.run_other_kernel(kernel_name)
        step("shardseal python backend")
        results += bench.run_python_backend()
        del bench
        step("cryptography.cobblestone")
        results += bench_cryptography_cobblestone(plaintext, key, args.repeat, ncores)
        step("cryptography AESGCM")
        results += bench_aesgcm_oneshot(plaintext, key, args.repeat)
    except VerificationError as exc:
        print(f"\nERROR: verification failed: {exc}", file=sys.stderr)
        return 1

    print(format_table(results))
    others = run_monitor.others_share()
    print("\n'other CPU' is the share of all cores that other processes used during that row's runs")
    if others is not None:
        print(f"(whole run: {100 * others:.0f}%).", end="")
        if others > NOISY_SHARE:
            print(f" WARNING: the machine was busy; threads={ncores} figures and their ratios are unreliable.",
                  end="")
    print("\n")

    by_key = {m.key: m for m in results}
    targets = evaluate_targets(by_key, ncores)
    print("## Targets\n")
    target_json = []
    for description, r, target, extra in targets:
        if r is None:
            verdict, shown = "SKIP", "n/a"
        else:
            verdict, shown = ("PASS" if r >= target else "FAIL"), f"{r:.3f}x"
        print(f"- {verdict}: {description} = {shown} (target >= {target}x){extra}")
        target_json.append({"target": description, "ratio": r, "min_ratio": target, "verdict": verdict})
    elapsed = time.perf_counter() - started
    print(f"\ntotal time: {elapsed:.0f} s")

    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"environment": env, "results": [asdict(m) for m in results], "targets": target_json,
                       "total_seconds": elapsed}, f, indent=2)
            f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
