"""Crash safety of shardseal.rotation: a child process rotating a folder is killed with SIGKILL.

The folder holds 32 small containers in four groups, so that one rotation (add B, remove A)
exercises every way of writing:

* ``[A]``    -> ``[B]``     same key block size: in place (journal, pwrite, no journal);
* ``[A, C]`` -> ``[C, B]``  same size: in place;
* ``[A, B]`` -> ``[B]``     smaller: in place, with a padding stanza;
* ``[C]``    -> ``[C, B]``  the key block grows: copy to a temporary file and rename.

The child sleeps a few milliseconds at every step, through rotate()'s documented
``checkpoint`` callback, so that kills spread over the run land between steps. After
each kill every file must be in its old or its new state (byte-identical payload, decrypting
with the right identity); at most one journal and one temporary file may be left. ``recover()``
must then leave no journal or temporary file, and a full ``rotate()`` must finish the job.
The module takes about 10-15 s.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import shardseal
from shardseal.container import header as _container
from shardseal.ops.rotation import (
    JOURNAL_SUFFIX,
    TEMP_SUFFIX,
    recover,
    rotate,
)

from .test_rotate import A, B, C

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

GROUPS = {"swap": (A,), "swap-second": (A, C), "shrink": (A, B), "grow": (C,)}
EXPECTED = {"swap": [B.id], "swap-second": [C.id, B.id], "shrink": [B.id], "grow": [C.id, B.id]}
PER_GROUP = 8
RUNS = 10
STEP_DELAY = "0.004"
REPO = Path(__file__).resolve().parents[2]
PACKAGE_ROOT = Path(shardseal.__file__).resolve().parent.parent

CHILD = r"""
import sys, time
from shardseal.rotation import rotate
from tests.ops.test_rotate import A, B, C
delay = float(sys.argv[2])
print("ready", flush=True)
started = time.perf_counter()
report = rotate(sys.argv[1], identities=[A.identity, C.identity], add=[B.recipient], remove=[A.id],
                checkpoint=lambda step: time.sleep(delay))
print(f"done {time.perf_counter() - started:.3f} {report.in_place} {report.copied}", flush=True)
"""


def _rotate_in_parent(folder: Path):
    return rotate(folder, identities=[A.identity, C.identity], add=[B.recipient], remove=[A.id])


@pytest.fixture(scope="module")
def originals() -> dict:
    """name -> (group, plaintext, container bytes)."""
    rng = random.Random(5)
    files = {}
    for group, keks in GROUPS.items():
        for i in range(PER_GROUP):
            data = rng.randbytes(rng.randrange(0, 40000))
            blob = shardseal.encrypt(data, recipients=[k.recipient for k in keks], metadata={"i": i})
            files[f"{group}-{i:02d}.sseal"] = (group, data, blob)
    return files


def _restore(folder: Path, originals: dict) -> None:
    for path in folder.iterdir():
        path.unlink()
    for name, (_, _, blob) in originals.items():
        (folder / name).write_bytes(blob)


def _child(folder: Path, delay: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(PACKAGE_ROOT), str(REPO)])}
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(folder), delay], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
    return proc


def _state(path: Path, group: str, data: bytes, blob: bytes) -> str:
    """"old" or "new"; fails the test for anything else."""
    current = path.read_bytes()
    if current == blob:
        assert shardseal.decrypt(current, identities=[GROUPS[group][0].identity]) == data
        return "old"
    old_header = _container.parse_header(blob)
    header = _container.parse_header(current)
    assert header.fixed == old_header.fixed, path
    assert current[header.size:] == blob[old_header.size:], f"{path}: payload changed"
    key_ids = [s.key_id for s in shardseal.inspect(current).stanzas if s.type != "padding"]
    assert key_ids == EXPECTED[group], path
    assert shardseal.decrypt(current, identities=[B.identity]) == data
    with pytest.raises(shardseal.KeyNotFoundError):
        shardseal.decrypt(current, identities=[A.identity])
    return "new"


def _states(folder: Path, originals: dict) -> dict:
    return {name: _state(folder / name, group, data, blob)
            for name, (group, data, blob) in originals.items()}


def _leftovers(folder: Path) -> list:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith((JOURNAL_SUFFIX, TEMP_SUFFIX)))


def test_sigkill_leaves_every_file_old_or_new(tmp_path, originals):
    folder = tmp_path / "shards"
    folder.mkdir()
    _restore(folder, originals)
    proc = _child(folder, STEP_DELAY)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    duration = float(out.split()[1])
    assert out.split()[2:] == ["24", "8"]  # 24 in place, 8 copied
    assert set(_states(folder, originals).values()) == {"new"}

    rng = random.Random(11)
    mixed = 0
    seen_leftovers = set()
    started = time.perf_counter()
    for run in range(RUNS):
        _restore(folder, originals)
        proc = _child(folder, STEP_DELAY)
        # Spread the kills over the whole run, with some jitter.
        time.sleep(duration * (run + rng.random()) / RUNS)
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
        left = _leftovers(folder)
        assert len([n for n in left if n.endswith(JOURNAL_SUFFIX)]) <= 1, left
        assert len([n for n in left if n.endswith(TEMP_SUFFIX)]) <= 1, left
        seen_leftovers.update(n.rsplit(".", 1)[-1] for n in left)
        states = _states(folder, originals)
        mixed += len(set(states.values())) == 2

        recover(folder)
        assert _leftovers(folder) == []
        after = _states(folder, originals)
        # recover only moves a journaled file forward, never back
        assert all(after[n] == "new" for n, s in states.items() if s == "new")

        report = _rotate_in_parent(folder)
        assert report.files_rewrapped + report.files_skipped == len(originals)
        assert set(_states(folder, originals).values()) == {"new"}
        assert _leftovers(folder) == []
    print(f"\nrotation {duration:.2f} s; {RUNS} kills in {time.perf_counter() - started:.1f} s, "
          f"{mixed} mid-way; leftovers seen: {sorted(seen_leftovers)}")
    assert mixed >= RUNS // 2  # the kills really landed inside the rotation
