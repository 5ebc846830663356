"""Issue 10's command-line defects: deep metadata, symbolic links in folder mode, leftover
temporary files, keyring destroy, empty inputs, the fallback warning under -q, and the error
classes and ``inspect`` sizes of the library."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

import shardseal
from shardseal import errors, keyfile, keyring, x25519
from shardseal.io.files import TEMP_SUFFIX

from ..cli_helpers import assert_error, assert_ok, child_env, register_secret, run

KEY = bytes(range(50, 82))
register_secret(KEY)
OLD = time.time() - 3600


@pytest.fixture
def work(tmp_path):
    keyfile.write_key_file(tmp_path / "key.key", KEY)
    return tmp_path


# ---- defect 5: inspect of metadata nested 600 deep ------------------------------------------


def test_inspect_of_deeply_nested_metadata_is_a_format_error(work):
    # The writer refuses such metadata, so the hostile header is made by hand: metadata bytes
    # nested 600 deep in place of a real container's (its length field updated).
    blob = shardseal.encrypt(b"x", KEY)
    deep = b'{"a":' * 600 + b"1" + b"}" * 600
    metadata_len = int.from_bytes(blob[12:16], "big")
    (work / "deep.sseal").write_bytes(blob[:12] + len(deep).to_bytes(4, "big") + deep + blob[16 + metadata_len:])
    with pytest.raises(errors.FormatError, match="nested more than 64 levels"):
        shardseal.inspect((work / "deep.sseal").read_bytes())
    for extra in ([], ["--json"]):
        result = run("inspect", *extra, "deep.sseal", cwd=work)
        assert_error(result, 5, "nested more than 64 levels deep")


# ---- defect 7: symbolic links in folder mode ------------------------------------------------


def test_encrypt_folder_does_not_follow_links_out_of_the_tree(work):
    (work / "outside").mkdir()
    (work / "outside" / "secret.txt").write_bytes(b"not for the dataset")
    (work / "in").mkdir()
    (work / "in" / "a.txt").write_bytes(b"a")
    os.symlink("../outside/secret.txt", work / "in" / "leak.txt")
    os.symlink("../outside", work / "in" / "linked-folder")
    result = run("encrypt", "-k", "key.key", "in", "-o", "out", cwd=work)
    assert_ok(result)
    assert sorted(os.listdir(work / "out")) == ["a.txt.sseal"]
    stderr = result.stderr.decode()
    assert "skipped in/leak.txt: a symbolic link" in stderr
    assert "skipped in/linked-folder: a symbolic link" in stderr


def test_decrypt_folder_refuses_to_write_through_a_link_in_the_output(work):
    (work / "in" / "sub").mkdir(parents=True)
    shardseal.encrypt_file(__file__, work / "in" / "sub" / "x.py.sseal", KEY)
    (work / "elsewhere").mkdir()
    (work / "out").mkdir()
    os.symlink("../elsewhere", work / "out" / "sub")
    result = run("decrypt", "-k", "key.key", "in", "-o", "out", cwd=work)
    assert_error(result, 1, "out/sub is a symbolic link", "never written through links")
    assert os.listdir(work / "elsewhere") == []


# ---- defect 8: leftover temporary files ----------------------------------------------------


def _leftover(folder, name: str, age: float = OLD):
    path = folder / f".{name}.abc123{TEMP_SUFFIX}"
    path.write_bytes(b"plaintext a killed decrypt left")
    path.chmod(0o600)  # as shardseal creates its temporary files (clean removes no other)
    os.utime(path, (age, age))
    return path


def test_clean_removes_old_leftovers_and_keeps_recent_and_live_ones(work):
    (work / "sub").mkdir()
    stale = _leftover(work, "a")
    stale_below = _leftover(work / "sub", "b")
    recent = _leftover(work, "c", age=time.time())
    with shardseal.open(work / "live.sseal", "wb", key=KEY) as writer:
        writer.write(b"still writing")
        [live] = [p for p in work.iterdir() if p.name.startswith(".live.sseal.")]
        os.utime(live, (OLD, OLD))  # an old file, but its writer holds the lock
        report = shardseal.clean_temp_files(work)
        assert live.exists()
        assert (str(live), "locked by a live writer") in report.kept
    assert sorted(report.removed) == sorted([str(stale), str(stale_below)])
    assert not stale.exists() and not stale_below.exists() and recent.exists()
    assert shardseal.decrypt((work / "live.sseal").read_bytes(), KEY) == b"still writing"


def test_clean_command(work):
    stale = _leftover(work, "a")
    recent = _leftover(work, "b", age=time.time() - 120)
    os.symlink(stale.name, work / f".link.x{TEMP_SUFFIX}")
    result = run("clean", "--dry-run", ".", cwd=work)
    assert_ok(result)
    assert stale.exists() and f"would remove {stale.name}" in result.stdout.decode()
    assert_ok(run("clean", ".", cwd=work))
    assert not stale.exists() and recent.exists() and os.path.islink(work / f".link.x{TEMP_SUFFIX}")
    assert_ok(run("clean", "--older-than", "1", ".", cwd=work))
    assert not recent.exists()


def test_clean_after_sigkill_of_a_decrypt(work):
    # A decrypt killed mid-write leaves its .sseal-tmp file; clean removes it once it is old.
    shardseal.encrypt_file(__file__, work / "x.sseal", KEY)
    code = ("import os, shardseal, shardseal.io.files as f\n"
            "a = f.AtomicFile('out'); a.file.write(b'partial'); a.file.flush()\n"
            "os.kill(os.getpid(), 9)\n")
    subprocess.run([sys.executable, "-c", code], cwd=work, env=child_env(), timeout=60)
    [left] = [p for p in work.iterdir() if p.name.endswith(TEMP_SUFFIX)]
    assert shardseal.clean_temp_files(work).removed == []  # recent: kept
    os.utime(left, (OLD, OLD))
    assert shardseal.clean_temp_files(work).removed == [str(left)]


# ---- defect 9 -------------------------------------------------------------------------------


def test_every_error_class_is_a_shardseal_error_and_old_names_still_work():
    assert shardseal.HsmError is errors.HsmError
    assert shardseal.Pkcs11LoginError is errors.Pkcs11LoginError
    for cls in (errors.KeyFileError, errors.KeyringFileError, errors.IdentityFileError,
                errors.KeySpecError, errors.KeyLoadError):
        assert issubclass(cls, errors.ShardsealError) and issubclass(cls, ValueError)
        assert getattr(shardseal, cls.__name__) is cls
    assert keyfile.KeyFileError is errors.KeyFileError
    assert keyring.KeyringFileError is errors.KeyringFileError
    assert x25519.IdentityFileError is errors.IdentityFileError
    with pytest.raises(errors.ShardsealError):
        keyfile.parse_key_file(b"nonsense")


def test_keyring_destroy_needs_yes_without_a_terminal(work):
    assert_ok(run("keyring", "create", "ring.json", cwd=work))
    assert_ok(run("keyring", "add", "ring.json", "kek1", cwd=work))
    result = run("keyring", "destroy", "ring.json", "kek1", cwd=work)
    assert result.returncode == 2 and b"--yes" in result.stderr
    assert keyring.Keyring.load(work / "ring.json").keys[0].state == "active"
    assert_ok(run("keyring", "destroy", "--yes", "ring.json", "kek1", cwd=work))
    assert keyring.Keyring.load(work / "ring.json").keys[0].state == "destroyed"


def test_empty_input_is_not_a_container_exit_5(work):
    assert_error(run("decrypt", "-k", "key.key", "-", cwd=work, input=b""), 5, "empty")
    (work / "empty.sseal").write_bytes(b"")
    assert_error(run("decrypt", "-k", "key.key", "empty.sseal", cwd=work), 5, "empty")


def test_inspect_reads_sizes_from_paths_and_files_and_prefixes_are_unknown(work):
    blob = shardseal.encrypt(bytes(100_000), KEY)
    path = work / "x.sseal"
    path.write_bytes(blob)
    assert shardseal.inspect(path).plaintext_size == 100_000
    assert shardseal.inspect(str(path)).plaintext_size == 100_000
    with open(path, "rb") as file:
        assert shardseal.inspect(file).plaintext_size == 100_000
    prefix = blob[:4096]
    assert shardseal.inspect(prefix, partial=True).plaintext_size is None
    assert shardseal.inspect(prefix, container_size=len(blob)).plaintext_size == 100_000
    # A prefix whose length is that of some complete container: only partial=True says so.
    cut = blob[:shardseal.inspect(blob).header_size + 56 + 16400 + 500]
    assert shardseal.inspect(cut, partial=True).plaintext_size is None


def test_fallback_warning_says_how_to_get_the_native_module_and_q_silences_it(work):
    env = child_env(SHARDSEAL_BACKEND="auto")
    code = ("import sys, importlib.abc\n"
            "class Block(importlib.abc.MetaPathFinder):\n"
            "    def find_spec(self, name, path, target=None):\n"
            "        if name == 'shardseal._native': raise ImportError('blocked for the test')\n"
            "sys.meta_path.insert(0, Block())\n"
            "sys.argv = ['shardseal'] + sys.argv[1:]\n"
            "from shardseal.__main__ import main\n"
            "sys.exit(main())\n")
    loud = subprocess.run([sys.executable, "-c", code, "keygen", "-o", "a.key"], cwd=work,
                          env=env, capture_output=True, timeout=60)
    assert loud.returncode == 0
    assert b"apt install g++" in loud.stderr and b"pip install -v ." in loud.stderr
    quiet = subprocess.run([sys.executable, "-c", code, "keygen", "-q", "-o", "b.key"], cwd=work,
                           env=env, capture_output=True, timeout=60)
    assert quiet.returncode == 0 and quiet.stderr == b""


def test_license_file_is_apache_2():
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    with open(os.path.join(root, "LICENSE"), encoding="utf-8") as f:
        text = f.read()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text
