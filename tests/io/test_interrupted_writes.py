"""An interrupted write never leaves a container that authenticates (issue 10, defect 2).

Every route that writes a container is interrupted by an exception (or by garbage collection,
Ctrl-C, a dying process) and the result must be absent or fail with ``TruncatedError``; the
same routes, uninterrupted, must still produce valid containers.
"""

from __future__ import annotations

import contextlib
import gc
import io
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

import shardseal
from shardseal import TruncatedError

fsspec = pytest.importorskip("fsspec")
from fsspec.core import OpenFile  # noqa: E402  (what fsspec.open returns)

from shardseal.fsspec import SealFileSystem  # noqa: E402

KEY = bytes(range(32))
SRC = str(Path(__file__).resolve().parents[2] / "src")
MiB = 2**20
# More than one 4 MiB write batch: sealed chunks reach the destination before the failure.
BIG = 5 * MiB + 123


class Interrupted(Exception):
    pass


def _data(size: int) -> bytes:
    return bytes(i % 251 for i in range(size % 1000)) * (size // 1000) + b"z" * (size % 1000)


@pytest.fixture(params=["file", "memory"])
def target(request, tmp_path):
    """(SealFileSystem, path, chained URL) on a local folder or on fsspec's memory filesystem."""
    if request.param == "file":
        path = str(tmp_path / "x.sseal")
        url = f"sseal::file://{path}"
    else:
        path = f"/sseal-interrupt-{uuid.uuid4().hex}/x.sseal"
        url = f"sseal::memory://{path}"
    yield SealFileSystem(target_protocol=request.param, key=KEY), path, url
    if request.param == "memory":
        memory = fsspec.filesystem("memory")
        folder = path.rsplit("/", 1)[0]
        if memory.exists(folder):
            memory.rm(folder, recursive=True)


def _assert_absent(fs, path) -> None:
    assert not fs.exists(path), "an interrupted write left a file"


def _assert_absent_or_truncated(fs, path) -> None:
    if fs.exists(path):
        with pytest.raises(TruncatedError):
            fs.cat_file(path)


def _assert_truncated(blob: bytes) -> None:
    with pytest.raises(TruncatedError):
        shardseal.decrypt(blob, KEY)


# ---- fsspec ---------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 100_000, BIG])
def test_fsspec_open_exception_leaves_nothing(target, size):
    # The README's first fsspec example: OpenFile.__exit__ calls close() without the exception.
    fs, path, url = target
    with pytest.raises(Interrupted):
        with fsspec.open(url, "wb", sseal={"key": KEY}) as f:
            f.write(_data(size))
            raise Interrupted
    _assert_absent(fs, path)


def test_fsspec_open_keyboard_interrupt_leaves_nothing(target):
    fs, path, url = target
    with pytest.raises(KeyboardInterrupt):
        with fsspec.open(url, "wb", sseal={"key": KEY}) as f:
            f.write(_data(BIG))
            raise KeyboardInterrupt
    _assert_absent(fs, path)


@pytest.mark.parametrize("mode, kwargs", [("w", {}), ("wb", {"compression": "gzip"})])
def test_fsspec_open_wrapped_exception_leaves_nothing(target, mode, kwargs):
    fs, path, url = target
    with pytest.raises(Interrupted):
        with fsspec.open(url, mode, sseal={"key": KEY}, **kwargs) as f:
            f.write("text" * 1000 if mode == "w" else b"bytes" * 1000)
            raise Interrupted
    _assert_absent(fs, path)


def test_fsspec_open_reraised_exception_leaves_nothing(target):
    # Made while an exception is handled, then that same exception raised again from the
    # block (`raise exc`: a bare `raise` keeps the traceback and cannot be told apart).
    fs, path, url = target
    with pytest.raises(Interrupted):
        try:
            raise Interrupted
        except Interrupted as exc:
            with fsspec.open(url, "wb", sseal={"key": KEY}) as f:
                f.write(b"partial")
                raise exc
    _assert_absent(fs, path)


def test_fs_open_exception_leaves_nothing(target):
    fs, path, _ = target
    with pytest.raises(Interrupted), fs.open(path, "wb") as f:
        f.write(_data(BIG))
        raise Interrupted
    _assert_absent(fs, path)
    f = fs.open(path, "wb")
    with pytest.raises(Interrupted):
        try:
            f.write(_data(BIG))
            raise Interrupted
        finally:
            f.close()
    _assert_absent(fs, path)


def test_fs_open_abandoned_writers_leave_nothing(target):
    fs, path, _ = target
    for mode, data in [("wb", _data(BIG)), ("w", "text" * 1000)]:
        f = fs.open(path, mode)
        f.write(data)
        del f
        gc.collect()
        _assert_absent(fs, path)


def test_fsspec_open_abandoned_text_writer_leaves_nothing(target):
    # OpenFile.open() hands out fsspec's own TextIOWrapper: its finaliser closes our writer.
    fs, path, url = target
    opened = fsspec.open(url, "w", sseal={"key": KEY})
    f = opened.open()
    f.write("text" * 1000)
    del f, opened
    gc.collect()
    _assert_absent(fs, path)


def test_transaction_interrupted_inside(target):
    fs, path, _ = target
    with fs.transaction:
        with contextlib.suppress(Interrupted), OpenFile(fs, path, "wb") as f:
            f.write(_data(100_000))
            raise Interrupted
    _assert_absent_or_truncated(fs, path)  # memory:// keeps what it was given in a transaction

    with pytest.raises(Interrupted), fs.transaction:
        f = fs.open(path, "wb")
        f.write(_data(100_000))
        raise Interrupted
    _assert_absent_or_truncated(fs, path)


def test_transaction_interrupted_inside_is_absent_on_local_files(tmp_path):
    fs = SealFileSystem(target_protocol="file", key=KEY)
    path = str(tmp_path / "x.sseal")
    with fs.transaction:
        with contextlib.suppress(Interrupted), OpenFile(fs, path, "wb") as f:
            f.write(_data(100_000))
            raise Interrupted
    assert list(tmp_path.iterdir()) == []


def test_fsspec_clean_writes_still_complete(target):
    fs, path, url = target
    with fsspec.open(url, "wb", sseal={"key": KEY}) as f:
        f.write(_data(BIG))
    assert fs.cat_file(path) == _data(BIG)
    with fsspec.open(url, "w", sseal={"key": KEY}) as f:
        f.write("text")
    assert fs.cat_file(path) == b"text"
    f = fs.open(path, "wb")
    f.write(b"closed by hand")
    f.close()
    assert fs.cat_file(path) == b"closed by hand"
    fs.pipe_file(path, b"piped")
    assert fs.cat_file(path) == b"piped"
    with fs.transaction:
        f = fs.open(path, "wb")
        f.write(b"committed by the transaction")  # never closed: the transaction completes it
    assert fs.cat_file(path) == b"committed by the transaction"


def test_fsspec_writes_made_while_handling_an_exception_complete(target):
    fs, path, url = target
    try:
        raise KeyError("handled")
    except KeyError:
        with fsspec.open(url, "wb", sseal={"key": KEY}) as f:
            f.write(b"written in an except block")
    assert fs.cat_file(path) == b"written in an except block"


def test_process_dying_inside_fsspec_open_leaves_no_valid_container(tmp_path):
    path = tmp_path / "x.sseal"
    script = (
        "import os, fsspec\n"
        f"with fsspec.open('sseal::file://{path}', 'wb', sseal={{'key': bytes(range(32))}}) as f:\n"
        f"    f.write(b'a' * {BIG})\n"
        "    f.flush()\n"
        "    os._exit(3)\n"
    )
    env = dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""))
    result = subprocess.run([sys.executable, "-c", script], env=env, timeout=120)
    assert result.returncode == 3
    assert path.stat().st_size > BIG  # the chunks reached the file, the final one never did
    _assert_truncated(path.read_bytes())


# ---- shardseal.open -------------------------------------------------------------------------


def _close_on_exit(writer):
    """A with block that closes without saying why, as fsspec's OpenFile does."""
    return contextlib.closing(writer)


def test_path_writer_closed_during_an_exception_leaves_nothing(tmp_path):
    path = tmp_path / "x.sseal"
    with pytest.raises(Interrupted), _close_on_exit(shardseal.open(path, "wb", key=KEY)) as f:
        f.write(_data(BIG))
        raise Interrupted
    assert list(tmp_path.iterdir()) == []


def test_file_object_writer_closed_during_an_exception_is_truncated(backend):
    out = io.BytesIO()
    f = shardseal.open(out, "wb", key=KEY)
    with pytest.raises(Interrupted):
        try:
            f.write(_data(BIG))
            raise Interrupted
        finally:
            f.close()
    assert f.closed
    _assert_truncated(out.getvalue())


def test_file_object_keyboard_interrupt_is_truncated():
    out = io.BytesIO()
    with pytest.raises(KeyboardInterrupt), _close_on_exit(shardseal.open(out, "wb", key=KEY)) as f:
        f.write(_data(100_000))
        raise KeyboardInterrupt
    _assert_truncated(out.getvalue())


def test_abandoned_file_object_writers_are_truncated():
    out = io.BytesIO()
    f = shardseal.open(out, "wb", key=KEY)
    f.write(_data(100_000))
    del f
    gc.collect()
    _assert_truncated(out.getvalue())
    # A text wrapper's finaliser closes the writer it wraps: that must not complete it.
    out = io.BytesIO()
    text = io.TextIOWrapper(shardseal.open(out, "wb", key=KEY))
    text.write("text" * 1000)
    del text
    gc.collect()
    _assert_truncated(out.getvalue())


def test_close_in_an_unrelated_except_block_aborts_and_finish_completes(tmp_path):
    path = tmp_path / "x.sseal"
    f = shardseal.open(path, "wb", key=KEY)
    f.write(b"data")
    try:
        raise KeyError("unrelated")
    except KeyError:
        f.close()  # indistinguishable from a failure's cleanup: aborts
    assert f.closed and list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="aborted"):
        f.finish()

    f = shardseal.open(path, "wb", key=KEY)
    f.write(b"data")
    try:
        raise KeyError("unrelated")
    except KeyError:
        f.finish()
    f.finish()  # finishing a completed writer does nothing
    assert shardseal.decrypt(path.read_bytes(), KEY) == b"data"


def test_clean_shardseal_open_routes_still_complete(tmp_path):
    path = tmp_path / "x.sseal"
    f = shardseal.open(path, "wb", key=KEY)
    f.write(b"closed by hand")
    f.close()
    assert shardseal.decrypt(path.read_bytes(), KEY) == b"closed by hand"
    with _close_on_exit(shardseal.open(path, "wb", key=KEY)) as f:
        f.write(b"closing")
    assert shardseal.decrypt(path.read_bytes(), KEY) == b"closing"
    out = io.BytesIO()
    with io.TextIOWrapper(shardseal.open(out, "wb", key=KEY)) as text:
        text.write("text")
    assert shardseal.decrypt(out.getvalue(), KEY) == b"text"  # the writer leaves out open
    try:
        raise KeyError("handled")
    except KeyError:
        f = shardseal.open(path, "wb", key=KEY)  # made and closed while handling one exception
        f.write(b"in except")
        f.close()
    assert shardseal.decrypt(path.read_bytes(), KEY) == b"in except"
    f = shardseal.open(path, "wb", key=KEY)
    try:
        raise KeyError("handled")
    except KeyError:
        with f:  # a clean with exit says so: it completes even inside an except block
            f.write(b"with in except")
    assert shardseal.decrypt(path.read_bytes(), KEY) == b"with in except"
