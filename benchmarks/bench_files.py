#!/usr/bin/env python3
"""File benchmark for shardseal: whole files next to cp, age and gpg, and random 4 KiB reads.

For each folder of ``--dirs`` (by default /dev/shm, RAM-backed so that the software and not the
disk is measured, and /var/tmp, on disk) and one file of random bytes (2 GiB by default,
written once with os.urandom in 64 MiB blocks and copied to the other folders), this script
measures in GB/s of plaintext (1 GB = 1e9 bytes per wall second) the median, min and max over
``--repeat`` runs, after one untimed warm-up run, of:

* ``cp --reflink=never`` of the plaintext (the I/O ceiling);
* ``shardseal.encrypt_file`` and ``shardseal.decrypt_file`` (in-process, threads=all cores);
* ``age`` encrypt and decrypt to an X25519 recipient;
* ``gpg --symmetric --cipher-algo AES256 --compress-algo none`` and ``gpg -d``;
* for information, the stages of shardseal's pipeline: reading the file, writing a file,
  read + encrypt without writing, read + decrypt without writing, and (once, in memory)
  ``encrypt_into`` / ``decrypt_into`` of a buffer of the same size.

``encrypt_file``/``decrypt_file`` write atomically and fsync their output; cp, age and gpg do
not. Every tool is therefore timed twice in the same run: the command alone, and the command
plus an fsync of its output file and folder (for shardseal that fsync finds nothing left to
do). The targets use the second figure, the like-for-like one. Before each run the previous
output is deleted and ``os.sync()`` is called; on a disk folder the page cache is also dropped
(``/proc/sys/vm/drop_caches``) when that is allowed, so disk runs are cold-cache, else they
are warm-cache and the output says so. The first (warm-up) output of every tool is verified
against the source, comparing the files in 64 MiB blocks, outside the timing.

Then, on a 1 GiB encrypted file in /dev/shm, it measures random 4 KiB reads per second through
``shardseal.open(path, "rb", key=...)``, with ``reader.pread`` and with seek + read, against
``os.pread`` on the plaintext file at the same offsets (fixed seed; 4 KiB-aligned offsets for
the targets, unaligned ones for information), one thread, plus two threads on one handle.

At the end it prints the targets with PASS/FAIL: shardseal >= 0.8x cp, >= 2x age, >= 5x gpg,
encrypt and decrypt, per folder, and pread (and seek + read) >= 0.25x os.pread.

Run it as ``python benchmarks/bench_files.py [--size-mib 2048] [--repeat 3] [--read-file-mib 1024]
[--reads 100000] [--json out.json] [--dirs /dev/shm,/var/tmp] [--quick]``.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Optional

import numpy as np

import shardseal

if __package__:  # imported as part of the benchmarks package (python -m benchmarks.bench_files, pytest)
    from ._common import (
        GB,
        NCORES,
        NOISY_SHARE,
        CpuMonitor,
        VerificationError,
        command_version,
        cpu_model,
        drop_caches,
        load_average,
        native_openssl,
        openssl_cli_version,
        prefaulted,
        require_equal,
        time_runs,
    )
else:  # run as a script: python benchmarks/bench_files.py
    from _common import (
        GB,
        NCORES,
        NOISY_SHARE,
        CpuMonitor,
        VerificationError,
        command_version,
        cpu_model,
        drop_caches,
        load_average,
        native_openssl,
        openssl_cli_version,
        prefaulted,
        require_equal,
        time_runs,
    )

MiB = 1 << 20
GEN_BLOCK = 64 * MiB  # os.urandom and file comparison block
IO_BLOCK = 8 * MiB  # the block size of shardseal's encrypt_file/decrypt_file
READ_SIZE = 4096
SEED = 20240601
WARMUP_READS = 1000
VERIFY_READS = 2000
PASSPHRASE = "shardseal-bench-passphrase"
FILE_TARGETS = (("cp", 0.8), ("age", 2.0), ("gpg", 5.0))
READ_TARGET = 0.25
RAM_FILESYSTEMS = ("tmpfs", "ramfs")


# --------------------------------------------------------------------------------------
# Environment


def mount_of(path: str) -> tuple:
    """(filesystem type, device, mount point) of the mount holding path."""
    path = os.path.realpath(path)
    best = ("unknown", "unknown", "")
    try:
        with open("/proc/mounts", encoding="utf-8") as f:
            for line in f:
                device, mount, fstype = line.split()[:3]
                mount = mount.replace("\\040", " ")
                inside = path == mount or path.startswith(mount.rstrip("/") + "/")
                if inside and len(mount) >= len(best[2]):
                    best = (fstype, device, mount)
    except OSError:
        pass
    return best


def free_page_reporting() -> Optional[str]:
    """A note when the kernel reports free memory to a hypervisor (a VM with a balloon device)."""
    order = "/sys/module/page_reporting/parameters/page_reporting_order"
    if not os.path.exists(order) or not os.path.isdir("/sys/bus/virtio/drivers/virtio_balloon"):
        return None
    try:
        with open(order, encoding="ascii") as f:
            value = f.read().strip()
    except OSError:
        value = "?"
    return (f"free page reporting to the hypervisor is on (virtio_balloon, page_reporting_order={value}): memory "
            "freed and left idle for ~2 s goes back to the host, and touching it again costs host page faults "
            "(sys time; about 2 s per GiB on one such VM); each run starts right after deleting the previous "
            "output, so it mostly reuses that memory, but long runs (gpg, age) and the disk folder can pay this")


# --------------------------------------------------------------------------------------
# Scratch space, cleaned up at the end and on Ctrl-C / SIGTERM


class Scratch:
    def __init__(self) -> None:
        self.dirs: list = []
        self.gnupghome: Optional[str] = None

    def mkdtemp(self, parent: str, prefix: str = "shardseal-bench-") -> str:
        path = tempfile.mkdtemp(prefix=prefix, dir=parent)
        self.dirs.append(path)
        return path

    def cleanup(self) -> None:
        if self.gnupghome is not None:
            # Stops only the gpg-agent that gpg started for this temporary home.
            env = dict(os.environ, GNUPGHOME=self.gnupghome)
            try:
                subprocess.run(["gpgconf", "--kill", "gpg-agent"], env=env, capture_output=True, timeout=30,
                               check=False)
            except (OSError, subprocess.SubprocessError):
                pass
        for path in reversed(self.dirs):
            shutil.rmtree(path, ignore_errors=True)
        self.dirs.clear()


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


# --------------------------------------------------------------------------------------
# Files


def write_random_file(path: str, size: int) -> None:
    with open(path, "wb") as f:
        left = size
        while left > 0:
            n = min(GEN_BLOCK, left)
            f.write(os.urandom(n))
            left -= n


def files_equal(a: str, b: str) -> bool:
    with open(a, "rb") as fa, open(b, "rb") as fb:
        if os.fstat(fa.fileno()).st_size != os.fstat(fb.fileno()).st_size:
            return False
        while True:
            block = fa.read(GEN_BLOCK)
            if block != fb.read(GEN_BLOCK):
                return False
            if not block:
                return True


def first_block_differs(a: str, b: str) -> bool:
    with open(a, "rb") as fa, open(b, "rb") as fb:
        return fa.read(MiB) != fb.read(MiB)


def remove(path: Optional[str]) -> None:
    if path is not None:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


def fsync_path(path: str) -> None:
    """fsyncs a file and its folder (what shardseal's atomic write does for its output)."""
    for target in (path, os.path.dirname(path) or "."):
        fd = os.open(target, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def run_command(cmd: list, env: Optional[dict] = None) -> None:
    proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          env=env, check=False)
    if proc.returncode != 0:
        raise VerificationError(f"{' '.join(cmd)} exited with {proc.returncode}: "
                                f"{proc.stderr.decode(errors='replace').strip()}")


# --------------------------------------------------------------------------------------
# Timing of whole-file operations


@dataclass
class FileRow:
    """One tool or stage in one folder: GB/s of plaintext over the timed runs."""

    folder: str
    key: str
    label: str
    info: bool  # a pipeline stage, not a compared tool
    runs: int
    median: float  # the command alone
    min: float
    max: float
    median_fsync: Optional[float]  # the command plus fsync of its output (None without output)
    min_fsync: Optional[float]
    max_fsync: Optional[float]
    seconds: list = field(default_factory=list)
    seconds_fsync: list = field(default_factory=list)
    others_cpu: Optional[float] = None
    note: str = ""
    cpu_user: Optional[float] = None  # median CPU seconds per run (this process + waited children)
    cpu_sys: Optional[float] = None

    def durable(self) -> float:
        return self.median if self.median_fsync is None else self.median_fsync


def cpu_seconds() -> tuple:
    """(user, system) CPU seconds of this process, all its threads and its waited-for children."""
    t = os.times()
    return t.user + t.children_user, t.system + t.children_system


def time_file_op(folder: str, key: str, label: str, size: int, run: Callable[[], None], *, output: Optional[str],
                 repeat: int, cold: bool, expected_size: Optional[int] = None,
                 after_warmup: Optional[Callable[[], None]] = None, info: bool = False, note: str = "") -> FileRow:
    """Times run() repeat times after one untimed warm-up run (verified by after_warmup).

    Before each run: output deleted, os.sync(), and with cold the page cache dropped. Each
    run records the command's wall time and, with an output, the time once the output file
    and its folder are fsynced as well.
    """
    monitor = CpuMonitor(NCORES)
    seconds, seconds_fsync, user, system = [], [], [], []
    for i in range(-1, repeat):
        remove(output)
        if cold:
            drop_caches()
        else:
            os.sync()
        cpu0 = cpu_seconds()
        start = time.perf_counter()
        run()
        mid = time.perf_counter()
        cpu1 = cpu_seconds()
        if output is not None:
            fsync_path(output)
        end = time.perf_counter()
        if output is not None and expected_size is not None and os.path.getsize(output) != expected_size:
            raise VerificationError(f"{folder}: {label}: output has {os.path.getsize(output)} bytes, "
                                    f"expected {expected_size}")
        if i < 0:
            if after_warmup is not None:
                after_warmup()
        else:
            seconds.append(mid - start)
            seconds_fsync.append(end - start)
            user.append(cpu1[0] - cpu0[0])
            system.append(cpu1[1] - cpu0[1])
    rates = [size / s / GB for s in seconds]
    if output is not None:
        rates_fsync = [size / s / GB for s in seconds_fsync]
        fs = (statistics.median(rates_fsync), min(rates_fsync), max(rates_fsync))
    else:
        fs = (None, None, None)
        seconds_fsync = []
    return FileRow(folder, key, label, info, len(rates), statistics.median(rates), min(rates), max(rates), *fs,
                   [round(s, 4) for s in seconds], [round(s, 4) for s in seconds_fsync], monitor.others_share(),
                   note, statistics.median(user), statistics.median(system))


class _DiscardSink(io.RawIOBase):
    """A writable raw stream that drops everything (to time read + encrypt without a write)."""

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        return memoryview(data).nbytes


class Peers:
    """The keys and commands of the peers: age (X25519 recipient) and gpg (symmetric)."""

    def __init__(self, scratch: Scratch, keydir: str) -> None:
        self.age = shutil.which("age") is not None and shutil.which("age-keygen") is not None
        self.gpg = shutil.which("gpg") is not None
        self.identity = os.path.join(keydir, "age-identity.txt")
        self.recipient = ""
        if self.age:
            run_command(["age-keygen", "-o", self.identity])
            self.recipient = subprocess.run(["age-keygen", "-y", self.identity], capture_output=True, text=True,
                                            check=True).stdout.strip()
        self.gpg_env = None
        if self.gpg:
            home = os.path.join(keydir, "gnupg")
            os.mkdir(home, 0o700)
            scratch.gnupghome = home
            self.gpg_env = dict(os.environ, GNUPGHOME=home)

    def gpg_base(self) -> list:
        return ["gpg", "--batch", "--yes", "--quiet", "--pinentry-mode", "loopback", "--passphrase", PASSPHRASE]


def bench_folder(folder: str, label_folder: str, src: str, size: int, key: bytes, peers: Peers, repeat: int,
                 cold: bool, cp_cmd: list, log: Callable[[str], None]) -> list:
    rows = []
    work = os.path.dirname(src)

    def file_op(tool_key, label, run, output, expected_size=None, after_warmup=None, info=False, note=""):
        log(f"{label_folder}: {label}")
        row = time_file_op(label_folder, tool_key, label, size, run, output=output, repeat=repeat, cold=cold,
                           expected_size=expected_size, after_warmup=after_warmup, info=info, note=note)
        rows.append(row)
        return row

    def verify_same(out, what):
        def check():
            if not files_equal(out, src):
                raise VerificationError(f"{label_folder}: {what}: output differs from the source")
        return check

    def verify_encrypted(out, what):
        def check():
            if not first_block_differs(out, src):
                raise VerificationError(f"{label_folder}: {what}: output starts like the plaintext")
        return check

    # cp: the I/O ceiling
    out = os.path.join(work, "cp.out")
    file_op("cp", f"{' '.join(cp_cmd)} (plaintext copy)", lambda: run_command(cp_cmd + [src, out]), out, size,
            verify_same(out, "cp"))
    remove(out)

    # shardseal, in-process, threads = all cores
    enc = os.path.join(work, "shardseal.sseal")
    dec = os.path.join(work, "shardseal.dec")
    file_op("shardseal_encrypt", f"shardseal.encrypt_file threads={NCORES}",
            lambda: shardseal.encrypt_file(src, enc, key, threads=NCORES), enc, None,
            verify_encrypted(enc, "encrypt_file"))
    file_op("shardseal_decrypt", f"shardseal.decrypt_file threads={NCORES}",
            lambda: shardseal.decrypt_file(enc, dec, key, threads=NCORES), dec, size,
            verify_same(dec, "encrypt_file + decrypt_file"))
    remove(dec)

    # The stages of shardseal's pipeline, for information
    def read_plain():
        buf = bytearray(IO_BLOCK)
        with open(src, "rb", buffering=0) as f:
            while f.readinto(buf):
                pass

    def read_decrypt():
        buf = bytearray(IO_BLOCK)
        with shardseal.open(enc, "rb", key=key, threads=NCORES) as reader:
            while reader.readinto(buf):
                pass

    block = os.urandom(IO_BLOCK)
    written = os.path.join(work, "write.out")

    def write_file():
        with open(written, "wb", buffering=0) as f:
            left = size
            while left > 0:
                n = min(IO_BLOCK, left)
                f.write(block if n == IO_BLOCK else block[:n])
                left -= n

    def read_encrypt():
        buf = bytearray(IO_BLOCK)
        with open(src, "rb", buffering=0) as f, shardseal.open(_DiscardSink(), "wb", key=key,
                                                                threads=NCORES) as writer:
            while True:
                n = f.readinto(buf)
                if not n:
                    break
                writer.write(memoryview(buf)[:n])

    file_op("stage_read_decrypt", "stage: read + decrypt, no write (shardseal.open 'rb' readinto 8 MiB)",
            read_decrypt, None, info=True)
    remove(enc)
    file_op("stage_read", "stage: read the plaintext (Python readinto, 8 MiB blocks)", read_plain, None, info=True)
    file_op("stage_write", "stage: write a file (Python write, 8 MiB blocks)", write_file, written, size,
            info=True)
    remove(written)
    file_op("stage_read_encrypt", "stage: read + encrypt, no write (shardseal.open 'wb' to a discarding sink)",
            read_encrypt, None, info=True, note="no read-ahead thread")

    # age
    if peers.age:
        enc = os.path.join(work, "age.age")
        dec = os.path.join(work, "age.dec")
        file_op("age_encrypt", "age -r X25519 (encrypt)",
                lambda: run_command(["age", "-r", peers.recipient, "-o", enc, src]), enc, None,
                verify_encrypted(enc, "age"))
        file_op("age_decrypt", "age -d -i identity (decrypt)",
                lambda: run_command(["age", "-d", "-i", peers.identity, "-o", dec, enc]), dec, size,
                verify_same(dec, "age encrypt + decrypt"))
        remove(enc)
        remove(dec)

    # gpg
    if peers.gpg:
        enc = os.path.join(work, "gpg.gpg")
        dec = os.path.join(work, "gpg.dec")
        gpg_enc = peers.gpg_base() + ["--symmetric", "--cipher-algo", "AES256", "--compress-algo", "none", "-o",
                                      enc, src]
        gpg_dec = peers.gpg_base() + ["-d", "-o", dec, enc]
        file_op("gpg_encrypt", "gpg --symmetric AES256, no compression (encrypt)",
                lambda: run_command(gpg_enc, peers.gpg_env), enc, None, verify_encrypted(enc, "gpg"))
        file_op("gpg_decrypt", "gpg -d (decrypt)", lambda: run_command(gpg_dec, peers.gpg_env), dec, size,
                verify_same(dec, "gpg encrypt + decrypt"))
        remove(enc)
        remove(dec)
    return rows


def bench_in_memory(src: str, size: int, key: bytes, repeat: int, log: Callable[[str], None]) -> list:
    """encrypt_into / decrypt_into of the same bytes in memory, threads=all (the crypto stage)."""
    plaintext = prefaulted(size)
    view = memoryview(plaintext)
    done = 0
    with open(src, "rb", buffering=0) as f:
        while done < size:  # one read() returns at most 2 GiB - 4 KiB on Linux
            n = f.readinto(view[done:done + GEN_BLOCK])
            if not n:
                raise VerificationError("short read of the source")
            done += n
    sealed = prefaulted(shardseal.encrypted_size(size))
    check = prefaulted(size)
    rows = []

    def encrypt():
        return shardseal.encrypt_into(plaintext, key, sealed, threads=NCORES)

    def verify_encrypt(written):
        check.fill(0)
        shardseal.decrypt_into(sealed[:written], key, check, threads=NCORES)
        require_equal("in-memory encrypt_into", check, plaintext)

    log("in memory: encrypt_into")
    timing = time_runs("encrypt_into", encrypt, verify_encrypt, repeat, prepare=lambda: sealed.fill(0))
    rows.append(("memory_encrypt", f"in memory: shardseal.encrypt_into threads={NCORES}", timing))
    written = shardseal.encrypt_into(plaintext, key, sealed, threads=NCORES)
    blob = sealed[:written]

    def verify_decrypt(n):
        if n != size:
            raise VerificationError(f"in-memory decrypt_into wrote {n} bytes")
        require_equal("in-memory decrypt_into", check, plaintext)

    log("in memory: decrypt_into")
    timing = time_runs("decrypt_into", lambda: shardseal.decrypt_into(blob, key, check, threads=NCORES),
                       verify_decrypt, repeat, prepare=lambda: check.fill(0))
    rows.append(("memory_decrypt", f"in memory: shardseal.decrypt_into threads={NCORES}", timing))
    out = []
    for key_, label, t in rows:
        rates = [size / s / GB for s in t.seconds]
        out.append(FileRow("memory", key_, label, True, len(rates), statistics.median(rates), min(rates),
                           max(rates), None, None, None, [round(s, 4) for s in t.seconds], [], t.others_cpu,
                           "pre-faulted buffers"))
    return out


# --------------------------------------------------------------------------------------
# Random 4 KiB reads


@dataclass
class ReadRow:
    key: str
    label: str
    offsets: str  # "aligned" or "unaligned"
    threads: int
    runs: int
    median: float  # reads per second
    min: float
    max: float
    others_cpu: Optional[float] = None


def _loop_os_pread(fd: int, offsets: list) -> None:
    pread = os.pread
    for off in offsets:
        pread(fd, READ_SIZE, off)


def _loop_reader_pread(reader, offsets: list) -> None:
    pread = reader.pread
    for off in offsets:
        pread(off, READ_SIZE)


def _loop_seek_read(reader, offsets: list) -> None:
    seek, read = reader.seek, reader.read
    for off in offsets:
        seek(off)
        read(READ_SIZE)


def _read_worker(loop: Callable[[list], None], part: list, barrier: threading.Barrier, errors: list) -> None:
    barrier.wait()
    try:
        loop(part)
    except BaseException as exc:  # noqa: BLE001 - re-raised by time_reads
        errors.append(exc)


def time_reads(loop: Callable[[list], None], offsets: list, threads: int, repeat: int) -> tuple:
    """Median, min and max reads/s of loop over offsets, split between threads, after a warm-up."""
    loop(offsets[:WARMUP_READS])
    rates = []
    monitor = CpuMonitor(NCORES)
    for _ in range(repeat):
        if threads == 1:
            start = time.perf_counter()
            loop(offsets)
            elapsed = time.perf_counter() - start
        else:
            barrier = threading.Barrier(threads + 1)
            errors: list = []
            workers = [threading.Thread(target=_read_worker, args=(loop, offsets[i::threads], barrier, errors))
                       for i in range(threads)]
            for w in workers:
                w.start()
            barrier.wait()
            start = time.perf_counter()
            for w in workers:
                w.join()
            elapsed = time.perf_counter() - start
            if errors:
                raise errors[0]
        rates.append(len(offsets) / elapsed)
    return statistics.median(rates), min(rates), max(rates), monitor.others_share()


def verify_reads(reader, fd: int, offsets: list) -> None:
    sample = offsets[:VERIFY_READS]
    for off in sample:
        expected = os.pread(fd, READ_SIZE, off)
        if reader.pread(off, READ_SIZE) != expected:
            raise VerificationError(f"reader.pread({off}, {READ_SIZE}) differs from the plaintext")
        reader.seek(off)
        if reader.read(READ_SIZE) != expected:
            raise VerificationError(f"seek({off}) + read({READ_SIZE}) differs from the plaintext")
    # Two threads on the one handle, each checking its share.
    bad = []

    def worker(part):
        for off in part:
            if reader.pread(off, READ_SIZE) != os.pread(fd, READ_SIZE, off):
                bad.append(off)

    workers = [threading.Thread(target=worker, args=(sample[i::2],)) for i in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    if bad:
        raise VerificationError(f"2-thread reader.pread differs from the plaintext at offset {bad[0]}")


def bench_random_reads(folder: str, size: int, key: bytes, count: int, repeat: int,
                       log: Callable[[str], None], scratch: Scratch) -> list:
    work = scratch.mkdtemp(folder)
    plain = os.path.join(work, "reads.plain")
    sealed = os.path.join(work, "reads.sseal")
    log(f"random reads: writing {size // MiB} MiB and encrypting it in {folder}")
    write_random_file(plain, size)
    shardseal.encrypt_file(plain, sealed, key, threads=NCORES)
    rng = random.Random(SEED)
    offset_sets = {
        "aligned": [rng.randrange(size // READ_SIZE) * READ_SIZE for _ in range(count)],
        "unaligned": [rng.randrange(size - READ_SIZE + 1) for _ in range(count)],
    }
    rows = []
    fd = os.open(plain, os.O_RDONLY)
    try:
        with shardseal.open(sealed, "rb", key=key) as reader:
            for kind, offsets in offset_sets.items():
                verify_reads(reader, fd, offsets)
                cases = [
                    ("os_pread", "os.pread(fd, 4096, off) on the plaintext", 1,
                     lambda offs: _loop_os_pread(fd, offs)),
                    ("reader_pread", "shardseal reader.pread(off, 4096)", 1,
                     lambda offs: _loop_reader_pread(reader, offs)),
                    ("reader_seek_read", "shardseal reader.seek(off); reader.read(4096)", 1,
                     lambda offs: _loop_seek_read(reader, offs)),
                    ("os_pread_t2", "os.pread on the plaintext, 2 threads", 2,
                     lambda offs: _loop_os_pread(fd, offs)),
                    ("reader_pread_t2", "shardseal reader.pread, 2 threads on one handle", 2,
                     lambda offs: _loop_reader_pread(reader, offs)),
                ]
                for key_, label, threads, loop in cases:
                    log(f"random reads ({kind}): {label}")
                    med, lo, hi, others = time_reads(loop, offsets, threads, repeat)
                    rows.append(ReadRow(f"{key_}_{kind}", label, kind, threads, repeat, med, lo, hi, others))
    finally:
        os.close(fd)
        remove(plain)
        remove(sealed)
    return rows


# --------------------------------------------------------------------------------------
# Report


def fmt_pct(share: Optional[float]) -> str:
    return "?" if share is None else f"{100 * share:.0f}%"


def format_file_table(rows: list) -> str:
    lines = [
        ("| Tool / stage | GB/s median | min | max | +fsync GB/s median | min | max | CPU s user+sys | runs "
         "| other CPU | note |"),
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        if r.median_fsync is None:
            fs = "— | — | —"
        else:
            fs = f"{r.median_fsync:.2f} | {r.min_fsync:.2f} | {r.max_fsync:.2f}"
        cpu = "" if r.cpu_user is None else f"{r.cpu_user:.2f}+{r.cpu_sys:.2f}"
        lines.append(f"| {r.label} | {r.median:.2f} | {r.min:.2f} | {r.max:.2f} | {fs} | {cpu} | {r.runs} "
                     f"| {fmt_pct(r.others_cpu)} | {r.note} |")
    return "\n".join(lines)


def format_read_table(rows: list) -> str:
    base = {(r.offsets, r.threads): r.median for r in rows if r.key.startswith("os_pread")}
    lines = [
        ("| Reader | offsets | threads | reads/s median | min | max | µs/read | vs os.pread (same threads) "
         "| other CPU |"),
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        ratio = r.median / base[(r.offsets, r.threads)] if base.get((r.offsets, r.threads)) else None
        shown = "" if ratio is None else f"{ratio:.3f}x"
        lines.append(f"| {r.label} | {r.offsets} | {r.threads} | {r.median:,.0f} | {r.min:,.0f} | {r.max:,.0f} "
                     f"| {1e6 / r.median:.2f} | {shown} | {fmt_pct(r.others_cpu)} |")
    return "\n".join(lines)


def file_targets(rows: list, folders: list) -> list:
    """(description, ratio or None, target, extra) for every folder, op and peer."""
    targets = []
    for folder in folders:
        by_key = {r.key: r for r in rows if r.folder == folder}
        for op in ("encrypt", "decrypt"):
            ours = by_key.get(f"shardseal_{op}")
            for peer, target in FILE_TARGETS:
                theirs = by_key.get("cp" if peer == "cp" else f"{peer}_{op}")
                what = "cp" if peer == "cp" else f"{peer} {op}"
                description = f"{folder}: shardseal {op}_file / {what}"
                if ours is None or theirs is None:
                    targets.append((description, None, target, ""))
                    continue
                ratio = ours.durable() / theirs.durable()
                extra = f"  [without the peer's fsync: {ours.median / theirs.median:.3f}x, info]"
                targets.append((description, ratio, target, extra))
    return targets


def read_targets(rows: list) -> list:
    by_key = {r.key: r for r in rows}
    targets = []
    for kind in ("aligned", "unaligned"):
        base = by_key.get(f"os_pread_{kind}")
        for key_, what in (("reader_pread", "reader.pread"), ("reader_seek_read", "seek + read")):
            ours = by_key.get(f"{key_}_{kind}")
            ratio = ours.median / base.median if ours and base else None
            info = kind != "aligned"
            targets.append((f"random 4 KiB reads, {kind} offsets, 1 thread: {what} / os.pread", ratio,
                            READ_TARGET, "", info))
    return targets


def stage_summary(rows: list, folders: list, size: int) -> list:
    """Seconds per stage next to encrypt_file/decrypt_file: which stage limits the pipeline."""
    mem = {r.key: r for r in rows if r.folder == "memory"}
    lines = []

    def secs(r) -> Optional[float]:
        return None if r is None else size / (r.durable() * GB)

    for folder in folders:
        by_key = {r.key: r for r in rows if r.folder == folder}
        read, write, cp = by_key.get("stage_read"), by_key.get("stage_write"), by_key.get("cp")
        for op, crypto, partial in (("encrypt", mem.get("memory_encrypt"), by_key.get("stage_read_encrypt")),
                                    ("decrypt", mem.get("memory_decrypt"), by_key.get("stage_read_decrypt"))):
            total = by_key.get(f"shardseal_{op}")
            parts = {"read": secs(read), f"{op} in memory": secs(crypto), "write+fsync": secs(write)}
            if total is None or cp is None or partial is None or None in parts.values():
                continue
            serial = sum(parts.values())
            shown = ", ".join(f"{name} {s:.2f} s" for name, s in parts.items())
            lines.append(f"- {folder}: {op}_file {secs(total):.2f} s ({total.durable():.2f} GB/s). Stages alone: "
                         f"{shown}; their sum {serial:.2f} s, the slowest {max(parts.values()):.2f} s. "
                         f"read+{op} without the write: {secs(partial):.2f} s. cp (+fsync): {secs(cp):.2f} s.")
    return lines


def main(argv: Optional[list] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, help="file size in MiB (default 2048; --quick 256)")
    parser.add_argument("--repeat", type=int, help="timed runs per measurement (default 3; --quick 1)")
    parser.add_argument("--read-file-mib", type=int, help="random-read file size in MiB (default 1024; --quick 256)")
    parser.add_argument("--reads", type=int, help="random 4 KiB reads per run (default 100000; --quick 20000)")
    parser.add_argument("--dirs", default="/dev/shm,/var/tmp",
                        help="comma-separated folders to benchmark in (default /dev/shm,/var/tmp)")
    parser.add_argument("--json", metavar="PATH", help="also write all results to this JSON file")
    parser.add_argument("--warm-cache", action="store_true",
                        help="do not drop the page cache before runs in disk folders")
    parser.add_argument("--quick", action="store_true", help="smoke test: 256 MiB, 1 run, 20000 reads")
    args = parser.parse_args(argv)
    defaults = (256, 1, 256, 20000) if args.quick else (2048, 3, 1024, 100000)
    for name, default in zip(("size_mib", "repeat", "read_file_mib", "reads"), defaults):
        if getattr(args, name) is None:
            setattr(args, name, default)
    if min(args.size_mib, args.repeat, args.read_file_mib, args.reads) < 1:
        parser.error("sizes, --repeat and --reads must be positive")
    if args.reads < WARMUP_READS:
        parser.error(f"--reads must be at least {WARMUP_READS}")
    folders = [d for d in (x.strip() for x in args.dirs.split(",")) if d]
    for d in folders:
        if not os.path.isdir(d):
            parser.error(f"not a folder: {d}")
    if shardseal.backend != "native":
        print("error: shardseal.backend is not 'native'; this benchmark measures the native engine", file=sys.stderr)
        return 2

    signal.signal(signal.SIGTERM, _raise_interrupt)
    signal.signal(signal.SIGHUP, _raise_interrupt)
    scratch = Scratch()
    try:
        return _run(args, folders, scratch)
    except VerificationError as exc:
        print(f"\nERROR: verification failed: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted; temporary files removed", file=sys.stderr)
        return 130
    finally:
        scratch.cleanup()


def _run(args, folders: list, scratch: Scratch) -> int:
    started = time.perf_counter()
    run_monitor = CpuMonitor(NCORES)
    size = args.size_mib * MiB
    read_size = args.read_file_mib * MiB

    def log(what: str) -> None:
        print(f"... {what} ({time.perf_counter() - started:.0f} s)", file=sys.stderr, flush=True)

    can_drop = drop_caches()
    cold = can_drop and not args.warm_cache
    cp_cmd = ["cp", "--reflink=never"]
    probe_dir = scratch.mkdtemp(tempfile.gettempdir(), "shardseal-bench-keys-")
    os.chmod(probe_dir, 0o700)
    probe = os.path.join(probe_dir, "probe")
    with open(probe, "wb") as f:
        f.write(b"x")
    try:
        run_command(cp_cmd + [probe, probe + ".copy"])
    except VerificationError:
        cp_cmd = ["cp"]
    remove(probe)
    remove(probe + ".copy")
    peers = Peers(scratch, probe_dir)

    mounts = {d: mount_of(d) for d in folders}
    labels = {}
    for d in folders:
        fstype, device, _ = mounts[d]
        labels[d] = f"{d} ({fstype}{', RAM' if fstype in RAM_FILESYSTEMS else ' on ' + device})"
    disk_cache = ("cold: page cache dropped (sync; echo 3 > /proc/sys/vm/drop_caches) before every run" if cold
                  else "WARM-CACHE: " + ("--warm-cache given" if can_drop else
                                         "dropping the page cache failed (no permission)") +
                  ", so the inputs are read from the page cache, not the disk")
    env = {
        "cpu_model": cpu_model(),
        "cores": NCORES,
        "openssl_cli": openssl_cli_version(),
        "openssl_native": native_openssl(),
        "shardseal": shardseal.__version__,
        "shardseal_backend": shardseal.backend,
        "age": command_version(["age", "--version"]) if peers.age else "not installed",
        "gpg": command_version(["gpg", "--version"], 2) if peers.gpg else "not installed",
        "cp": command_version(["cp", "--version"]) + f" ({' '.join(cp_cmd)})",
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "platform": platform.platform(),
        "load_average_at_start": load_average(),
        "free_page_reporting": free_page_reporting(),
        "folders": {d: {"fstype": m[0], "device": m[1], "mount": m[2]} for d, m in mounts.items()},
        "disk_page_cache": disk_cache,
        "size_bytes": size,
        "repeat": args.repeat,
        "read_file_bytes": read_size,
        "reads": args.reads,
    }

    print("# shardseal file benchmark\n")
    print(f"- CPU: {env['cpu_model']}")
    print(f"- cores (sched_getaffinity): {NCORES}")
    print(f"- OpenSSL: CLI {env['openssl_cli']}; loaded by shardseal's native engine: {env['openssl_native']}")
    print(f"- shardseal {env['shardseal']}, backend: {env['shardseal_backend']}")
    print(f"- age {env['age']}; {env['gpg']}; {env['cp']}")
    print(f"- Python {env['python']}, {env['platform']}; load average at start: {env['load_average_at_start']}")
    print(f"- file: {args.size_mib} MiB of random bytes (os.urandom), {args.repeat} timed runs per row after 1 "
          f"untimed warm-up whose output is verified; GB/s = 1e9 plaintext bytes / wall seconds")
    print(f"- folders: {'; '.join(labels[d] for d in folders)}")
    if env["free_page_reporting"]:
        print(f"- VM: {env['free_page_reporting']}")
    print("- before every run: previous output deleted, os.sync(); disk folders: " + disk_cache)
    print("- 'GB/s' times the command alone; '+fsync GB/s' adds fsync of the output file and its folder inside "
          "the timing. shardseal's encrypt_file/decrypt_file already fsync (atomic write), cp/age/gpg do not, "
          "so the targets compare the '+fsync' figures (identical in RAM folders). 'CPU s user+sys' is the median "
          "CPU time per run of this process and its child (the command alone)\n", flush=True)

    if len(set(labels.values())) != len(labels):
        print("warning: two folders have the same label", file=sys.stderr)

    key = shardseal.generate_key()
    # One source file, generated once and copied (untimed) to the other folders.
    sources = {}
    for i, d in enumerate(folders):
        work = scratch.mkdtemp(d)
        sources[d] = os.path.join(work, "plain.bin")
        if i == 0:
            log(f"writing {args.size_mib} MiB of random bytes in {d}")
            write_random_file(sources[d], size)
        else:
            log(f"copying the source to {d}")
            shutil.copyfile(sources[folders[0]], sources[d])
    os.sync()

    file_rows = bench_in_memory(sources[folders[0]], size, key, args.repeat, log)
    for d in folders:
        is_ram = mounts[d][0] in RAM_FILESYSTEMS
        file_rows += bench_folder(d, labels[d], sources[d], size, key, peers, args.repeat, cold and not is_ram,
                                  cp_cmd, log)
        remove(sources[d])

    read_folder = "/dev/shm" if os.path.isdir("/dev/shm") else folders[0]
    read_rows = bench_random_reads(read_folder, read_size, key, args.reads, args.repeat, log, scratch)

    print("## Whole files\n")
    print("In memory, for reference (the crypto stage alone, same size):\n")
    print(format_file_table([r for r in file_rows if r.folder == "memory"]))
    for d in folders:
        print(f"\n### {labels[d]}\n")
        print(format_file_table([r for r in file_rows if r.folder == labels[d]]))
    print(f"\n## Random 4 KiB reads ({args.read_file_mib} MiB file in {read_folder}, {args.reads} reads per run, "
          f"seed {SEED}, median of {args.repeat} runs after {WARMUP_READS} warm-up reads)\n")
    print(format_read_table(read_rows))

    others = run_monitor.others_share()
    print("\n'other CPU' is the share of all cores that other processes used while a row ran", end="")
    if others is not None:
        print(f" (whole run: {100 * others:.0f}%).", end="")
        if others > NOISY_SHARE:
            print(f" WARNING: the machine was busy; threads={NCORES} figures and their ratios are unreliable.",
                  end="")
    print("\n")

    print("## Where shardseal's file time goes (seconds for the whole file)\n")
    for line in stage_summary(file_rows, [labels[d] for d in folders], size):
        print(line)

    print("\n## Targets\n")
    target_json = []
    for description, r, target, extra in file_targets(file_rows, [labels[d] for d in folders]):
        verdict = "SKIP" if r is None else ("PASS" if r >= target else "FAIL")
        shown = "n/a" if r is None else f"{r:.3f}x"
        print(f"- {verdict}: {description} (+fsync) = {shown} (target >= {target}x){extra}")
        target_json.append({"target": description, "ratio": r, "min_ratio": target, "verdict": verdict})
    for description, r, target, extra, info in read_targets(read_rows):
        verdict = "SKIP" if r is None else ("PASS" if r >= target else "FAIL")
        if info:
            verdict = f"info ({verdict})"
        shown = "n/a" if r is None else f"{r:.3f}x"
        print(f"- {verdict}: {description} = {shown} (target >= {target}x){extra}")
        target_json.append({"target": description, "ratio": r, "min_ratio": target, "verdict": verdict})
    elapsed = time.perf_counter() - started
    print(f"\ntotal time: {elapsed:.0f} s")

    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"environment": env, "files": [asdict(r) for r in file_rows],
                       "random_reads": [asdict(r) for r in read_rows], "targets": target_json,
                       "total_seconds": elapsed}, f, indent=2)
            f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
