"""Bounded memory: encrypt_file / decrypt_file (and streaming through shardseal.open) on a
4 GiB file keep the process's peak RSS under 300 MiB.

Each operation runs in a fresh child process that reports its own peak RSS (VmHWM) and
its run time; ``pytest -m slow -s`` prints them. About 30-40 s here (2 cores, local disk),
so marked slow. Needs ~8.5 GiB of free disk space in the pytest temporary folder.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

import shardseal

pytestmark = pytest.mark.slow

SIZE = 4 * 2**30 + 54321
LIMIT = 300 * 2**20
KEY = bytes(range(32))
MARKERS = {0: b"start", 2**31 - 3: b"2^31", 2**32 - 5: b"at-2^32", SIZE - 4: b"end!"}

CHILD = r"""
import json, os, sys, time
import shardseal
mode, src, dst = sys.argv[1:4]
key = bytes(range(32))
started = time.perf_counter()
if mode == "encrypt_file":
    shardseal.encrypt_file(src, dst, key)
elif mode == "decrypt_file":
    shardseal.decrypt_file(src, dst, key)
elif mode == "read":  # stream the whole container in 8 MiB reads, plus a few random reads
    with shardseal.open(src, "rb", key=key) as r:
        while r.read(8 * 2**20):
            pass
        for offset in (0, 2**31, 2**32 - 5):
            r.pread(offset, 3 * 2**20)
elif mode == "write":  # 4 GiB through open(..., "wb") into a discarding file object
    block = bytes(8 * 2**20 + 3)
    with open(os.devnull, "wb") as sink, shardseal.open(sink, "wb", key=key) as w:
        while w.tell() < int(dst):
            w.write(block)
elapsed = time.perf_counter() - started
# VmHWM is this process image's own peak; ru_maxrss would also count the peak of the parent
# that forked it (Linux carries it across fork and exec).
with open("/proc/self/status") as status:
    rss = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmHWM:"))
print(json.dumps({"rss": rss, "seconds": elapsed}))
"""


def _run(mode: str, src, dst) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    result = subprocess.run([sys.executable, "-c", CHILD, mode, str(src), str(dst)],
                            capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.skipif(sys.platform != "linux", reason="/proc/self/status and sparse files")
def test_peak_rss_of_whole_file_functions_on_4_gib(tmp_path):
    if shardseal.backend != "native":
        pytest.skip("the Python backend would take minutes")
    src, enc, dec = tmp_path / "sparse", tmp_path / "enc", tmp_path / "dec"
    try:
        with open(src, "wb") as f:
            f.truncate(SIZE)  # sparse source; the encrypted file is 4 GiB of real data
            for offset, marker in MARKERS.items():
                f.seek(offset)
                f.write(marker)
        baseline = _run("write", "-", 0)  # the interpreter with shardseal imported
        figures = {
            "encrypt_file": _run("encrypt_file", src, enc),
            "decrypt_file": _run("decrypt_file", enc, dec),
            "read": _run("read", enc, "-"),
            "write": _run("write", "-", SIZE),
        }
        started = time.perf_counter()
        assert enc.stat().st_size == shardseal.encrypted_size(SIZE)
        assert dec.stat().st_size == SIZE
        with open(dec, "rb") as f:
            for offset, marker in MARKERS.items():
                f.seek(offset)
                assert f.read(len(marker)) == marker
            # everything else is zeros: spot-check one 8 MiB block per 256 MiB
            for offset in range(2**20, SIZE, 256 * 2**20):
                f.seek(offset)
                block = f.read(8 * 2**20)
                assert block.count(0) == len(block)
        report = ", ".join(f"{mode} {fig['rss'] / 2**20:.0f} MiB in {fig['seconds']:.1f} s"
                           for mode, fig in figures.items())
        print(f"\npeak RSS on 4 GiB: baseline {baseline['rss'] / 2**20:.0f} MiB; {report}; "
              f"check {time.perf_counter() - started:.1f} s")
        for mode, fig in figures.items():
            assert fig["rss"] < LIMIT, f"{mode}: peak RSS {fig['rss'] / 2**20:.0f} MiB"
    finally:
        for path in (src, enc, dec):
            path.unlink(missing_ok=True)
