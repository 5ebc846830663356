"""``shardseal clean`` removes only what shardseal made, never hangs, and never leaves the tree.

Reviewer findings: a FIFO named like a temporary file hung the clean (opened without
O_NONBLOCK); it removed a 0644 file another user owned; a folder swapped for a link during the
scan could lead it outside; the temporary files of key, keyring and identity files (which hold
keys after a SIGKILL) were named ``.tmp`` and never cleaned.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

import shardseal
from shardseal import cleanup, keyfile, keyring
from shardseal.io.files import TEMP_SUFFIX

from ..cli_helpers import child_env

OLD = time.time() - 7200


def _leftover(folder, name: str, mode: int = 0o600):
    path = folder / f".{name}.abc123{TEMP_SUFFIX}"
    path.write_bytes(b"left behind")
    path.chmod(mode)
    os.utime(path, (OLD, OLD))
    return path


def test_a_fifo_named_like_a_temporary_file_does_not_hang(tmp_path):
    fifo = tmp_path / f".pipe.abc123{TEMP_SUFFIX}"
    os.mkfifo(fifo, 0o600)
    os.utime(fifo, (OLD, OLD))
    code = f"import shardseal; print(shardseal.clean_temp_files({str(tmp_path)!r}).kept)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, env=child_env(),
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert b"not a regular file" in result.stdout
    assert fifo.exists()


def test_files_shardseal_did_not_make_are_kept(tmp_path):
    ours = _leftover(tmp_path, "ours")
    wide = _leftover(tmp_path, "wide", mode=0o644)
    theirs = _leftover(tmp_path, "theirs")
    if os.geteuid() == 0:
        os.chown(theirs, 4242, 4242)
    report = shardseal.clean_temp_files(tmp_path)
    assert report.removed == [str(ours)]
    assert wide.exists()
    kept = dict(report.kept)
    assert "not made by shardseal" in kept[str(wide)]
    if os.geteuid() == 0:
        assert theirs.exists() and "not made by shardseal" in kept[str(theirs)]


def test_a_folder_swapped_for_a_link_during_the_scan_is_not_entered(tmp_path, monkeypatch):
    tree, outside = tmp_path / "tree", tmp_path / "outside"
    (tree / "sub").mkdir(parents=True)
    outside.mkdir()
    victim = _leftover(outside, "victim")
    real_scandir = os.scandir

    class Listing:
        def __init__(self, entries):
            self.entries = entries

        def __enter__(self):
            return iter(self.entries)

        def __exit__(self, *exc):
            return False

    def scandir_then_swap(target):
        with real_scandir(target) as entries:
            listed = list(entries)
            for entry in listed:
                entry.is_dir(follow_symlinks=False), entry.is_symlink()  # cache what was seen
        if (tree / "sub").is_dir() and not (tree / "sub").is_symlink():
            os.rename(tree / "sub", tree / "sub.real")
            os.symlink(outside, tree / "sub")
        return Listing(listed)

    monkeypatch.setattr(os, "scandir", scandir_then_swap)
    cleanup.clean_temp_files(tree)
    assert victim.exists()


@pytest.mark.parametrize("writer", ["key file", "keyring"])
def test_killed_secret_file_writes_leave_files_clean_removes(tmp_path, writer):
    key_path = tmp_path / ("k.key" if writer == "key file" else "ring.json")
    if writer == "key file":
        keyfile.write_key_file(key_path, shardseal.generate_key())
        call = f"keyfile.write_key_file({str(key_path)!r}, shardseal.generate_key(), force=True)"
    else:
        keyring.Keyring.create(key_path)
        call = f"shardseal.keyring.Keyring.create({str(key_path)!r}, overwrite=True)"
    # SIGKILL just before the temporary file (holding a key) is renamed into place.
    code = ("import os, shardseal, shardseal.keyring\nfrom shardseal import keyfile\n"
            "os.replace = lambda *a, **k: os.kill(os.getpid(), 9)\n" + call + "\n")
    subprocess.run([sys.executable, "-c", code], env=child_env(), timeout=60)
    [left] = [p for p in tmp_path.iterdir() if p.name.startswith(f".{key_path.name}.")]
    assert left.name.endswith(TEMP_SUFFIX)
    os.utime(left, (OLD, OLD))
    assert shardseal.clean_temp_files(tmp_path).removed == [str(left)]
