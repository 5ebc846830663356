"""shardseal._atomic: the one atomic writer and the one fsync_folder error policy.

Key files, keyrings, identity files and key rotation used to carry their own temporary-file
code, with a second ``_fsync_folder`` that swallowed every error (EIO included). They now go
through ``AtomicFile``; these tests pin the shared behaviour.
"""

from __future__ import annotations

import errno
import os
import stat
import sys

import pytest

from shardseal import _atomic, keyfile

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX folders and modes")

KEY = bytes(range(32))


def _fail_folder_fsync(monkeypatch, code: int) -> None:
    """os.fsync fails with code on folders only (files still sync)."""
    real = os.fsync

    def fsync(fd):
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            raise OSError(code, os.strerror(code))
        return real(fd)

    monkeypatch.setattr(os, "fsync", fsync)


def _leftovers(folder) -> list:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(_atomic.TEMP_SUFFIX))


@pytest.mark.parametrize("code", [errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP])
def test_fsync_folder_skips_file_systems_that_cannot_sync_a_folder(tmp_path, monkeypatch, code):
    _fail_folder_fsync(monkeypatch, code)
    _atomic.fsync_folder(tmp_path)  # no error
    with _atomic.AtomicFile(tmp_path / "f") as out:
        out.file.write(b"data")
        out.commit()
    assert (tmp_path / "f").read_bytes() == b"data"


@pytest.mark.parametrize("code", [errno.EIO, errno.ENOSPC])
def test_fsync_folder_raises_real_failures(tmp_path, monkeypatch, code):
    _fail_folder_fsync(monkeypatch, code)
    with pytest.raises(OSError) as info:
        _atomic.fsync_folder(tmp_path)
    assert info.value.errno == code


def test_a_key_file_write_reports_a_folder_fsync_io_error(tmp_path, monkeypatch):
    # The secret-file writer used to swallow every error of the folder's fsync, so a key file
    # whose rename may not survive a crash was reported as written.
    _fail_folder_fsync(monkeypatch, errno.EIO)
    with pytest.raises(OSError) as info:
        keyfile.write_key_file(tmp_path / "k.key", KEY)
    assert info.value.errno == errno.EIO
    assert _leftovers(tmp_path) == []


def test_a_key_file_write_skips_an_unsupported_folder_fsync(tmp_path, monkeypatch):
    _fail_folder_fsync(monkeypatch, errno.EINVAL)
    keyfile.write_key_file(tmp_path / "k.key", KEY)
    assert keyfile.read_key_file(tmp_path / "k.key") == KEY


def test_an_existing_key_file_is_named_in_the_error_not_the_temporary_file(tmp_path):
    path = tmp_path / "k.key"
    keyfile.write_key_file(path, KEY)
    with pytest.raises(FileExistsError) as info:
        keyfile.write_key_file(path, bytes(32))
    assert info.value.filename == str(path) and info.value.filename2 is None
    assert keyfile.read_key_file(path) == KEY and _leftovers(tmp_path) == []


def test_without_hard_links_a_key_file_is_created_but_never_replaced(tmp_path, monkeypatch):
    def no_links(*args, **kwargs):
        raise PermissionError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    path = tmp_path / "k.key"
    keyfile.write_key_file(path, KEY)
    assert keyfile.read_key_file(path) == KEY
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with pytest.raises(FileExistsError) as info:
        keyfile.write_key_file(path, bytes(32))
    assert info.value.filename == str(path)
    assert keyfile.read_key_file(path) == KEY and _leftovers(tmp_path) == []


def test_a_secret_file_keeps_the_umask_narrowing(tmp_path):
    old = os.umask(0o277)
    try:
        keyfile.write_key_file(tmp_path / "k.key", KEY)
        keyfile.write_key_file(tmp_path / "k.key", KEY, force=True)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "k.key").stat().st_mode) == 0o400


def test_temporary_file_is_0600_and_locked_while_written_then_gets_its_mode(tmp_path):
    fcntl = pytest.importorskip("fcntl")
    with _atomic.AtomicFile(tmp_path / "f", 0o644, suffix=".x-tmp") as out:
        assert out.temp.name.startswith(".f.") and out.temp.name.endswith(".x-tmp")
        assert stat.S_IMODE(out.temp.stat().st_mode) == 0o600
        with open(out.temp, "rb") as other, pytest.raises(BlockingIOError):
            fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.write(out.fd, b"raw")
        out.commit()
    assert stat.S_IMODE((tmp_path / "f").stat().st_mode) == 0o644
    assert (tmp_path / "f").read_bytes() == b"raw" and os.listdir(tmp_path) == ["f"]


def test_keep_open_holds_the_lock_until_the_block_ends(tmp_path):
    fcntl = pytest.importorskip("fcntl")
    with _atomic.AtomicFile(tmp_path / "j") as out:
        out.file.write(b"journal")
        out.commit(replace=False, keep_open=True)
        with open(tmp_path / "j", "rb") as other:
            with pytest.raises(BlockingIOError):
                fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
    with open(tmp_path / "j", "rb") as other:
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
    assert os.listdir(tmp_path) == ["j"]


def test_an_exception_in_the_block_removes_the_temporary_file(tmp_path):
    with pytest.raises(RuntimeError), _atomic.AtomicFile(tmp_path / "f") as out:
        out.file.write(b"part")
        raise RuntimeError
    assert os.listdir(tmp_path) == []
