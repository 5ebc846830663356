"""Crash safety of encrypt_file / decrypt_file: a child process working on a ~200 MiB file is
killed at points spread over its run.

* SIGKILL (the process dies, no clean-up runs): the destination either does not exist or is
  complete and valid; the source is byte-identical. Temporary files (``.<dst>.*.sseal-tmp``)
  MAY be left behind: nothing can remove them after SIGKILL. Nothing else may appear.
* SIGINT (Ctrl-C: KeyboardInterrupt, the clean-up runs): as above, and no temporary file is
  left behind either.

The whole module runs in about 25-35 s (2 cores, a local disk); the timings are printed
(``pytest -s``).
"""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import shardseal

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

SIZE = 200 * 2**20 + 12345
KEY = bytes(range(32))
RUNS = 10
TEMP = re.compile(r"^\.dst\.[^/]+\.sseal-tmp$")

CHILD = r"""
import sys, time
import shardseal
function, src, dst = sys.argv[1:4]
print("ready", flush=True)
started = time.perf_counter()
try:
    getattr(shardseal, function)(src, dst, bytes(range(32)))
except KeyboardInterrupt:
    print("interrupted", flush=True)
    sys.exit(3)
print(f"done {time.perf_counter() - started:.3f}", flush=True)
"""


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("crash")
    data = random.Random(1).randbytes(SIZE)
    (folder / "plain").write_bytes(data)
    shardseal.encrypt_file(folder / "plain", folder / "enc", KEY)
    yield folder, data
    for path in folder.iterdir():
        path.unlink()


def _child(function: str, src: Path, dst: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    # Default SIGINT disposition, as from a terminal (a runner started as `cmd &` ignores it).
    proc = subprocess.Popen([sys.executable, "-c", CHILD, function, str(src), str(dst)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
    return proc


_DURATIONS: dict = {}


def _calibrate(function: str, src: Path, dst: Path) -> float:
    """How long the child takes from "ready" to done (measured once per function)."""
    if function not in _DURATIONS:
        proc = _child(function, src, dst)
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        dst.unlink()
        _DURATIONS[function] = float(out.split()[1])
    return _DURATIONS[function]


def _check(folder: Path, function: str, src: Path, dst: Path, data: bytes, source_bytes: bytes,
           in_place: bool = False) -> tuple:
    """Checks the state after a kill; removes the destination and temp files. Returns
    (destination complete?, temp files found)."""
    names = {p.name for p in folder.iterdir()}
    temps = sorted(n for n in names if TEMP.match(n))
    expected = {"plain", "enc"} | ({"dst"} if dst.exists() else set())
    assert names - set(temps) == expected, f"unexpected files: {names - set(temps) - expected}"
    complete = False
    if in_place:
        now = dst.read_bytes()
        if now != data:  # not the old plaintext: must be the complete new container
            assert shardseal.decrypt(now, KEY) == data
            complete = True
        dst.write_bytes(data)
    else:
        assert src.read_bytes() == source_bytes, "the source changed"
        if dst.exists():
            result = dst.read_bytes()
            if function == "encrypt_file":
                assert shardseal.decrypt(result, KEY) == data, "a destination that does not decrypt"
            else:
                assert result == data, "a destination that is not the plaintext"
            complete = True
            dst.unlink()
    for name in temps:
        (folder / name).unlink()
    return complete, temps


@pytest.mark.parametrize("function", ["encrypt_file", "decrypt_file"])
def test_sigkill_at_random_points(files, function):
    folder, data = files
    src = folder / ("plain" if function == "encrypt_file" else "enc")
    dst = folder / "dst"
    source_bytes = src.read_bytes()
    duration = _calibrate(function, src, dst)
    rng = random.Random(function)
    # spread over the run and past its expected end (the run time varies with the disk)
    delays = [duration * (i + rng.random()) / RUNS * 1.4 for i in range(RUNS)]
    outcomes = []
    for delay in delays:
        proc = _child(function, src, dst)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
        complete, temps = _check(folder, function, src, dst, data, source_bytes)
        outcomes.append((round(delay, 3), proc.returncode, "complete" if complete else "absent", len(temps)))
    print(f"\n{function}: {duration:.2f} s for {SIZE / 2**20:.0f} MiB; kills (delay, rc, dst, temps): {outcomes}")
    assert any(o[2] == "absent" for o in outcomes)  # the kills did land mid-run


@pytest.mark.parametrize("function", ["encrypt_file", "decrypt_file"])
def test_sigint_leaves_no_temp_files(files, function):
    folder, data = files
    src = folder / ("plain" if function == "encrypt_file" else "enc")
    dst = folder / "dst"
    source_bytes = src.read_bytes()
    duration = _calibrate(function, src, dst)
    rng = random.Random(function + "int")
    outcomes = []
    for i in range(4):
        proc = _child(function, src, dst)
        time.sleep(duration * (i + rng.random()) / 4)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
        # Finished, or caught KeyboardInterrupt. A signal that lands after the call returned,
        # while the interpreter shuts down (handlers back to SIG_DFL), kills it: finished too.
        finished_then_killed = proc.returncode == -signal.SIGINT and out.startswith("done")
        assert proc.returncode in (0, 3) or finished_then_killed, (proc.returncode, out, err)
        complete, temps = _check(folder, function, src, dst, data, source_bytes)
        outcomes.append((proc.returncode, "complete" if complete else "absent"))
        assert temps == [], f"temp files left after Ctrl-C: {temps}"
    print(f"\n{function} SIGINT: {outcomes}")


def test_sigkill_in_place_encrypt(files):
    """encrypt_file(p, p): after a kill p holds either the old plaintext or the whole container."""
    folder, data = files
    path = folder / "dst"
    path.write_bytes(data)
    duration = _calibrate("encrypt_file", folder / "plain", folder / "dst")
    outcomes = []
    for i in range(3):
        path.write_bytes(data)
        proc = _child("encrypt_file", path, path)
        time.sleep(duration * (i + 0.5) / 3 * 1.2)
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
        complete, temps = _check(folder, "encrypt_file", path, path, data, data, in_place=True)
        outcomes.append(("complete" if complete else "old", len(temps)))
    path.unlink()
    print(f"\nin place: {outcomes}")


@pytest.mark.parametrize("command", ["encrypt", "decrypt"])
def test_sigkill_of_the_command_line(files, command):
    folder, data = files
    from shardseal import keyfile

    key_path = folder.parent / f"cli-{command}.key"
    keyfile.write_key_file(key_path, KEY)
    src = folder / ("plain" if command == "encrypt" else "enc")
    dst = folder / "dst"
    source_bytes = src.read_bytes()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    argv = [sys.executable, "-m", "shardseal", command, "-k", str(key_path), "-q", "-o", str(dst), str(src)]
    started = time.perf_counter()
    subprocess.run(argv, env=env, check=True, timeout=120)
    duration = time.perf_counter() - started  # includes interpreter start-up
    dst.unlink()
    rng = random.Random(command)
    outcomes = []
    for i in range(RUNS):
        proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        time.sleep(duration * (i + rng.random()) / RUNS * 1.2)
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
        function = "encrypt_file" if command == "encrypt" else "decrypt_file"
        complete, temps = _check(folder, function, src, dst, data, source_bytes)
        outcomes.append("complete" if complete else "absent")
    key_path.unlink()
    print(f"\nshardseal {command}: {duration:.2f} s; kills: {outcomes}")
    assert "absent" in outcomes
