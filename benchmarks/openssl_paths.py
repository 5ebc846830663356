"""Which AES-GCM code path OpenSSL takes on this CPU: ``python -m benchmarks.openssl_paths``.

OpenSSL picks its assembly at run time from a capability vector (CPUID), which the environment
variable ``OPENSSL_ia32cap`` can mask. This script masks one capability at a time and measures:

* ``openssl speed -evp aes-256-gcm -bytes 16384`` (the system OpenSSL, the one shardseal's native
  engine links),
* shardseal's native ``encrypt_into`` with threads=1 on 64 MiB (same library, in process),
* cryptography's ``AESGCM.encrypt_into`` over one 16 KiB record in cache (the OpenSSL that
  cryptography bundles, which may be a different version),

each in a fresh process. A capability whose removal lowers a figure is one that library's
AES-GCM uses; one whose removal changes nothing is not used. It also counts, in each library's
machine code (objdump), the AES instructions on 512-bit (zmm), 256-bit (ymm) and 128-bit
(xmm) registers: VAES on zmm is the AVX-512 AES-GCM path. Syntax of the masks (OpenSSL 3.0):
``~A:~B`` clears bits A of the CPUID leaf-1 vector (EDX | ECX << 32) and bits B of the leaf-7
vector (EBX | ECX << 32); ``:~B`` keeps the first vector as it is.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys

MASKS = [
    ("", "nothing (default)"),
    (":~0x60000000000", "VAES + VPCLMULQDQ (leaf 7 ECX bits 9, 10)"),
    (":~0x10000", "AVX512F (leaf 7 EBX bit 16)"),
    ("~0x1000000000000000:~0", "AVX (leaf 1 ECX bit 28)"),
    ("~0x40000000000000:~0", "MOVBE (leaf 1 ECX bit 22)"),
    ("~0x200000000:~0", "PCLMULQDQ (leaf 1 ECX bit 1)"),
    ("~0x200000000000000:~0", "AES-NI (leaf 1 ECX bit 25)"),
]

_IN_PROCESS = r"""
import os, sys, time
import numpy as np
import shardseal
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
key = os.urandom(32)
size = int(sys.argv[1])
data = np.frombuffer(os.urandom(size), np.uint8)
out = np.zeros(shardseal.encrypted_size(size), np.uint8)
def timed(f, n):
    r = []
    for _ in range(n):
        t = time.perf_counter(); f(); r.append(time.perf_counter() - t)
    return min(r)
native = size / timed(lambda: shardseal.encrypt_into(data, key, out, threads=1), 5) / 1e9
aead, nonce, record, buf = AESGCM(key), os.urandom(12), os.urandom(16384), bytearray(16384 + 16)
def loop():
    for _ in range(4096):
        aead.encrypt_into(nonce, record, None, buf)
bundled = 4096 * 16384 / timed(loop, 5) / 1e9
print(f"{native:.3f} {bundled:.3f}")
"""

_OPENSSL_RATE = re.compile(r"^\s*(?:AES-256-GCM|aes-256-gcm|evp)\s+([0-9.]+)k\s*$", re.MULTILINE)


def openssl_speed(env: dict) -> str:
    try:
        out = subprocess.run(["openssl", "speed", "-evp", "aes-256-gcm", "-bytes", "16384", "-seconds", "1"],
                             capture_output=True, text=True, env=env, check=True).stdout
        return f"{float(_OPENSSL_RATE.findall(out)[-1]) * 1000 / 1e9:.2f}"
    except (OSError, subprocess.CalledProcessError, IndexError, ValueError):
        return "n/a"


class InProcessError(RuntimeError):
    """The in-process measurement failed with every capability present: a bug, not a mask."""


def in_process(env: dict, size: int, masked: bool) -> tuple:
    proc = subprocess.run([sys.executable, "-c", _IN_PROCESS, str(size)], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        if not masked:  # nothing masked: a failure here is a broken script or library
            raise InProcessError(f"in-process measurement failed:\n{proc.stderr}")
        print(f"note: in-process measurement failed under this mask: {proc.stderr.strip().splitlines()[-1:]}",
              file=sys.stderr)
        return "n/a", "n/a"
    native, bundled = proc.stdout.split()
    return f"{float(native):.2f}", f"{float(bundled):.2f}"


def instruction_counts(path: str) -> str:
    if not shutil.which("objdump") or not os.path.exists(path):
        return "objdump or library not available"
    text = subprocess.run(["objdump", "-d", "--no-show-raw-insn", path], capture_output=True, text=True).stdout
    counts = {}
    for reg in ("zmm", "ymm", "xmm"):
        counts[f"vaesenc {reg}"] = len(re.findall(rf"\bvaesenc\s+[^\n]*%{reg}", text))
        counts[f"vpclmul* {reg}"] = len(re.findall(rf"\bvpclmul\w*\s+[^\n]*%{reg}", text))
    counts["aesenc (SSE)"] = len(re.findall(r"\baesenc\s", text))
    return ", ".join(f"{k}: {v}" for k, v in counts.items())


def libraries() -> list:
    libs = []
    try:
        from shardseal import _native

        out = subprocess.run(["ldd", _native.__file__], capture_output=True, text=True).stdout
        found = re.search(r"libcrypto\S*\s+=>\s+(\S+)", out)
        if found:
            libs.append(("system libcrypto (openssl CLI, shardseal native)", os.path.realpath(found.group(1))))
    except ImportError:
        pass
    try:
        import cryptography.hazmat.bindings._rust as rust

        libs.append(("cryptography's bundled OpenSSL (_rust.abi3.so)", rust.__file__))
    except ImportError:
        pass
    return libs


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="smoke test: no mask, 1 MiB, no instruction counts (seconds)")
    args = parser.parse_args(argv)
    masks = MASKS[:1] if args.quick else MASKS
    size = (1 << 20) if args.quick else (64 << 20)
    print(__doc__.split("\n\n")[0] + "\n")
    flags = []
    with open("/proc/cpuinfo", encoding="utf-8") as f:
        for line in f:
            if line.startswith("flags"):
                present = set(line.split(":", 1)[1].split())
                flags = [x for x in ("aes", "pclmulqdq", "avx", "movbe", "avx2", "avx512f", "vaes", "vpclmulqdq")
                         if x in present]
                break
    print(f"CPU flags present: {' '.join(flags)}\n")
    for what, path in libraries():
        print(f"- {what}: {path}\n  {'(--quick: not counted)' if args.quick else instruction_counts(path)}")
    print()
    print("| OPENSSL_ia32cap | capability masked | openssl speed 16 KiB, GB/s | shardseal native encrypt_into "
          f"threads=1 {size >> 20} MiB, GB/s | cryptography AESGCM 16 KiB in cache, GB/s |")
    print("|---|---|---:|---:|---:|")
    for mask, what in masks:
        env = dict(os.environ)
        env.pop("OPENSSL_ia32cap", None)
        if mask:
            env["OPENSSL_ia32cap"] = mask
        native, bundled = in_process(env, size, masked=bool(mask))
        print(f"| `{mask or '(unset)'}` | {what} | {openssl_speed(env)} | {native} | {bundled} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
