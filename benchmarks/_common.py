"""Helpers shared by the benchmark scripts: machine info, noise monitoring, timing, verification.

``bench_core.py``, ``bench_files.py`` and the ``python -m benchmarks`` comparison import these, so
that every benchmark measures, verifies and describes the machine the same way. Run as scripts
(``python benchmarks/bench_core.py``) they import this module as ``_common``; as a package
(``python -m benchmarks``, pytest) as ``benchmarks._common``.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import os
import platform
import re
import statistics
import struct
import subprocess
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np

import shardseal
from shardseal.core import backend as _backend, _pybackend

GB = 1e9
SLOW_RUN_SECONDS = 1.0  # a peer run slower than this gets fewer repeats
SLOW_RUN_REPEATS = 3
NOISY_SHARE = 0.05  # other processes above this share of the machine make the run suspect


class VerificationError(RuntimeError):
    """A timed operation produced a wrong result."""


@dataclass
class Measurement:
    """One row of the results table: throughputs in GB/s over the timed runs."""

    key: str
    label: str
    threads: Optional[int]
    median: float
    min: float
    max: float
    runs: int
    seconds: list = field(default_factory=list)
    note: str = ""
    others_cpu: Optional[float] = None  # share of all cores other processes used meanwhile


# --------------------------------------------------------------------------------------
# Environment


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def core_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


NCORES = core_count()


def openssl_cli_version() -> str:
    try:
        return subprocess.run(["openssl", "version"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError) as exc:
        return f"unavailable ({exc})"


def cryptography_openssl_version() -> str:
    try:
        from cryptography.hazmat.backends.openssl.backend import backend

        return backend.openssl_version_text()
    except Exception as exc:  # noqa: BLE001 - informational only
        return f"unknown ({exc})"

def command_version(cmd: list, lines: int = 1) -> str:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"unavailable ({exc})"
    out = (proc.stdout or proc.stderr).strip().splitlines()
    return "; ".join(out[:lines]) if out else "unknown"


def native_openssl() -> str:
    """The OpenSSL library the native engine has loaded (from /proc/self/maps)."""
    try:
        from shardseal import _native  # noqa: F401 - loads libcrypto

        with open("/proc/self/maps", encoding="utf-8") as f:
            paths = sorted({line.split()[-1] for line in f if "libcrypto" in line and "/" in line})
        if not paths:
            return "not found in /proc/self/maps (statically linked?)"
        lib = ctypes.CDLL(paths[0])
        version = lib.OpenSSL_version
        version.restype = ctypes.c_char_p
        version.argtypes = [ctypes.c_int]
        return f"{version(0).decode()} ({paths[0]})"
    except Exception as exc:  # noqa: BLE001 - informational only
        return f"unknown ({exc})"



def drop_caches() -> bool:
    """Flushes dirty pages and drops the page cache (root only); returns whether it dropped."""
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w", encoding="ascii") as f:
            f.write("3\n")
        return True
    except OSError:
        return False


def load_average() -> str:
    try:
        with open("/proc/loadavg", encoding="ascii") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "unknown"


# --------------------------------------------------------------------------------------
# Noise: how much CPU other processes took while we measured


class CpuMonitor:
    """Measures the share of all cores that *other* processes used over an interval.

    From /proc/stat (whole machine, steal included) minus this process's own CPU time
    (threads and waited-for children included). On a 2-core box one busy neighbour is 50%,
    enough to halve any threads=all figure, so each row reports it.
    """

    _TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

    def __init__(self, ncores: int) -> None:
        self.ncores = ncores
        self.start = self._sample()

    @classmethod
    def _machine_busy(cls) -> Optional[float]:
        try:
            with open("/proc/stat", encoding="ascii") as f:
                fields = [int(x) for x in f.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        # user nice system idle iowait irq softirq steal ...
        busy = fields[0] + fields[1] + fields[2] + sum(fields[5:8])
        return busy / cls._TICK

    @classmethod
    def _sample(cls) -> tuple:
        t = os.times()
        return time.perf_counter(), cls._machine_busy(), t.user + t.system + t.children_user + t.children_system

    def others_share(self) -> Optional[float]:
        wall0, busy0, own0 = self.start
        wall1, busy1, own1 = self._sample()
        if busy0 is None or busy1 is None or wall1 <= wall0:
            return None
        others = (busy1 - busy0) - (own1 - own0)
        return min(1.0, max(0.0, others / ((wall1 - wall0) * self.ncores)))


# --------------------------------------------------------------------------------------
# Helpers


def prefaulted(size: int) -> np.ndarray:
    """A uint8 buffer whose pages are all touched, so page faults stay out of the timing."""
    buf = np.empty(size, dtype=np.uint8)
    buf.fill(0)
    return buf


@contextlib.contextmanager
def use_backend(name: str):
    """Temporarily switches shardseal's engine to "native" or "python"."""
    saved = (_backend.name, _backend.impl)
    if name == "python":
        _backend.impl, _backend.name = _pybackend, "python"
    elif name == "native":
        from shardseal import _native

        _backend.impl, _backend.name = _native, "native"
    else:
        raise ValueError(name)
    try:
        yield
    finally:
        _backend.name, _backend.impl = saved


@dataclass
class Timing:
    seconds: list
    note: str
    others_cpu: Optional[float]
    cpu_seconds: list = field(default_factory=list)  # CPU time of this process (all threads) per timed run


def time_runs(label: str, run: Callable[[], object], verify: Callable[[object], None], repeat: int, *,
              prepare: Optional[Callable[[], None]] = None, cap_slow: bool = False, warmup: bool = True,
              slow_seconds: float = SLOW_RUN_SECONDS, slow_repeats: int = SLOW_RUN_REPEATS) -> Timing:
    """Times ``run`` ``repeat`` times after one untimed warm-up run (none with warmup=False).

    ``prepare`` runs before each run (outside the timing), ``verify`` checks each result
    (outside the timing), the warm-up's too. With cap_slow, a first timed run slower than
    slow_seconds limits the timed runs to slow_repeats. Each run records its wall time
    (``seconds``) and the CPU time this process spent in it, all threads (``cpu_seconds``).
    """
    monitor = CpuMonitor(NCORES)
    note = ""
    runs = repeat
    seconds = []
    cpu_seconds = []
    i = -1 if warmup else 0  # -1 is the warm-up
    while i < runs:
        if prepare is not None:
            prepare()
        gc.collect()
        gc.disable()
        try:
            cpu_start = time.process_time()
            start = time.perf_counter()
            result = run()
            elapsed = time.perf_counter() - start
            cpu = time.process_time() - cpu_start
        finally:
            gc.enable()
        try:
            verify(result)
        except VerificationError:
            raise
        except Exception as exc:
            raise VerificationError(f"{label}: verification raised {type(exc).__name__}: {exc}") from exc
        del result
        if i >= 0:
            seconds.append(elapsed)
            cpu_seconds.append(cpu)
            if cap_slow and i == 0 and elapsed > slow_seconds and runs > slow_repeats:
                runs = slow_repeats
                note = f"{elapsed:.2f} s/run > {slow_seconds:g} s: only {runs} runs"
        i += 1
    return Timing(seconds, note, monitor.others_share(), cpu_seconds)


def to_measurement(key: str, label: str, threads: Optional[int], size: int, timing: Timing) -> Measurement:
    rates = [size / s / GB for s in timing.seconds]
    return Measurement(key, label, threads, statistics.median(rates), min(rates), max(rates), len(rates),
                       [round(s, 6) for s in timing.seconds], timing.note, timing.others_cpu)


COMPARE_BLOCK = 16 << 20  # compare in blocks: np.array_equal makes a bool temporary the size of its input


def require_equal(label: str, got, expected: np.ndarray) -> None:
    got = np.frombuffer(got, dtype=np.uint8) if not isinstance(got, np.ndarray) else got
    if got.nbytes != expected.nbytes:
        raise VerificationError(f"{label}: output does not match the input")
    for start in range(0, expected.nbytes, COMPARE_BLOCK):
        if not np.array_equal(got[start:start + COMPARE_BLOCK], expected[start:start + COMPARE_BLOCK]):
            raise VerificationError(f"{label}: output does not match the input")


def require_parts_equal(label: str, parts: list, expected: np.ndarray) -> None:
    """Compares consecutive byte strings with the input without joining them."""
    offset = 0
    for part in parts:
        chunk = np.frombuffer(part, dtype=np.uint8)
        if offset + chunk.nbytes > expected.nbytes or not np.array_equal(chunk, expected[offset:offset + chunk.nbytes]):
            raise VerificationError(f"{label}: output does not match the input")
        offset += chunk.nbytes
    if offset != expected.nbytes:
        raise VerificationError(f"{label}: output has {offset} bytes, expected {expected.nbytes}")



_OPENSSL_LINE = re.compile(r"^\s*(?:AES-256-GCM|aes-256-gcm|evp)\s+([0-9.]+)k\s*$", re.MULTILINE)


def parse_openssl_speed(output: str) -> float:
    """The 16384-bytes figure of ``openssl speed -bytes 16384``, in bytes/s (last row wins)."""
    rows = _OPENSSL_LINE.findall(output)
    if not rows:
        raise ValueError("no AES-256-GCM row in openssl speed output")
    return float(rows[-1]) * 1000.0


# --------------------------------------------------------------------------------------
# An engine-independent view of a container, from docs/FORMAT.md and the public API alone

_FIXED_PREFIX = struct.Struct(">10sBBI")  # FORMAT.md 2.1: magic, version, suite id, metadata length M


def cobblestone_parts(blob, key: bytes) -> tuple:
    """The Cobblestone (input key, context, message) of a direct-key Cobblestone-256 container.

    Built from the format spec and ``shardseal.inspect`` only, so that a benchmark can open the
    native engine's output with an independent implementation (cryptography.cobblestone) without
    depending on the library's private modules: the context is the fixed part (``16 + M`` bytes,
    FORMAT.md 2.1), the message starts at ``header_size``, and a direct key is the Cobblestone-256
    input key itself (FORMAT.md 2.2).

    Raises:
        ValueError: the container is not Cobblestone-256.
        shardseal.FormatError, shardseal.TruncatedError: blob is not a complete container.
    """
    view = memoryview(blob).cast("B")
    info = shardseal.inspect(view)
    if info.suite != "cobblestone-256":
        raise ValueError(f"expected a cobblestone-256 container, got {info.suite}")
    _magic, _version, _suite, metadata_len = _FIXED_PREFIX.unpack(view[:_FIXED_PREFIX.size])
    return bytes(key), bytes(view[:_FIXED_PREFIX.size + metadata_len]), view[info.header_size:]
