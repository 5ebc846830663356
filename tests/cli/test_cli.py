"""The ``shardseal`` command, run as ``python -m shardseal`` in a subprocess."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time

import pytest

import shardseal
from shardseal import keyfile
from shardseal.keys import direct as _direct

from ..cli_helpers import (
    assert_error,
    assert_no_secret,
    assert_ok,
    child_env,
    command,
    register_secret,
    run,
)

KEY = bytes(range(100, 132))
OTHER_KEY = bytes(range(200, 232))
register_secret(KEY)
register_secret(OTHER_KEY)
KEY_ID = _direct.key_id(KEY).hex()
MIB = 2**20


@pytest.fixture
def work(tmp_path):
    """A folder with key files (key.key, other.key) and a 1 MiB + 5 bytes input file."""
    keyfile.write_key_file(tmp_path / "key.key", KEY)
    keyfile.write_key_file(tmp_path / "other.key", OTHER_KEY)
    (tmp_path / "data.bin").write_bytes(os.urandom(MIB + 5))
    return tmp_path


def names(folder) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def leftovers(folder) -> list[str]:
    return [name for name in names(folder) if "tmp" in name]


# ---- basics ----------------------------------------------------------------------------------


def test_version(tmp_path):
    result = run("--version", cwd=tmp_path)
    assert_ok(result)
    line = result.stdout.decode().strip()
    # The version, then the engine (issue 11): backend and, for the native one, the AES-GCM kernel.
    assert line.startswith(f"shardseal {shardseal.__version__} (")
    info = shardseal.backend_info()
    assert info["backend"] in line and (info["backend"] == "python" or f"kernel {info['kernel']}" in line)


def test_help_lists_commands_and_exit_statuses(tmp_path):
    result = run("--help", cwd=tmp_path)
    assert_ok(result)
    text = result.stdout.decode()
    for word in ("keygen", "encrypt", "decrypt", "inspect", "demo", "exit status:", "130"):
        assert word in text
    assert "exit status:" in run("decrypt", "--help", cwd=tmp_path).stdout.decode()


def test_demo_still_works(tmp_path):
    result = run("demo", "--size-mib", "8", cwd=tmp_path)
    assert_ok(result)
    out = result.stdout.decode()
    assert "float32 array (8192, 256), 8 MiB" in out and "ok: round trip verified" in out


@pytest.mark.parametrize("args", [
    [],                                             # no command
    ["frobnicate"],                                 # unknown command
    ["encrypt", "-k", "key.key"],                   # no INPUT
    ["encrypt", "-k", "key.key", "--suite", "512", "data.bin"],
    ["encrypt", "-k", "key.key", "--metadata", "[1, 2]", "data.bin"],
    ["decrypt", "-k", "key.key", "--threads", "0", "data.bin.sseal"],
])
def test_bad_usage_is_exit_2(work, args):
    result = run(*args, cwd=work)
    assert result.returncode == 2, result.stderr
    assert b"Traceback" not in result.stderr and b"usage: shardseal" in result.stderr
    assert names(work) == ["data.bin", "key.key", "other.key"]


# ---- files -----------------------------------------------------------------------------------


def test_file_round_trip_with_default_names(work):
    original = (work / "data.bin").read_bytes()
    result = run("encrypt", "-k", "key.key", "data.bin", cwd=work)
    assert_ok(result)
    assert result.stderr.decode().startswith(f"encrypted 1 file, {len(original)} bytes (1.0 MiB) in ")
    sealed = (work / "data.bin.sseal").read_bytes()
    assert shardseal.decrypt(sealed, KEY) == original
    (work / "data.bin").unlink()
    result = run("decrypt", "-k", "key.key", "data.bin.sseal", cwd=work)
    assert_ok(result)
    assert (work / "data.bin").read_bytes() == original
    assert result.stderr.decode().startswith(f"decrypted 1 file, {len(original)} bytes")


def test_file_round_trip_with_output_options(work):
    original = (work / "data.bin").read_bytes()
    (work / "out").mkdir()
    assert_ok(run("encrypt", "-k", "key.key", "-o", "sealed.bin", "--threads", "2", "--suite", "128",
                  "--metadata", '{"split": "train"}', "-q", "data.bin", cwd=work))
    assert shardseal.inspect((work / "sealed.bin").read_bytes()).suite == "cobblestone-128"
    result = run("decrypt", "-k", "key.key", "-o", "plain.bin", "-q", "sealed.bin", cwd=work)
    assert_ok(result)
    assert result.stderr == b"" and result.stdout == b""  # --quiet
    assert (work / "plain.bin").read_bytes() == original
    # -o naming an existing folder puts the default name inside it
    assert_ok(run("encrypt", "-k", "key.key", "-o", "out", "data.bin", cwd=work))
    assert_ok(run("decrypt", "-k", "key.key", "-o", "out", "out/data.bin.sseal", cwd=work))
    assert (work / "out" / "data.bin").read_bytes() == original


def test_several_inputs_get_default_names(work):
    (work / "second").write_bytes(b"second")
    result = run("encrypt", "-k", "key.key", "data.bin", "second", cwd=work)
    assert_ok(result)
    assert result.stderr.decode().startswith(f"encrypted 2 files, {MIB + 5 + 6} bytes")
    assert shardseal.decrypt((work / "second.sseal").read_bytes(), KEY) == b"second"
    assert_error(run("encrypt", "-k", "key.key", "-o", "x", "data.bin", "second", cwd=work), 1,
                 "-o needs a single INPUT")


def test_existing_output_needs_force(work):
    (work / "data.bin.sseal").write_bytes(b"precious")
    assert_error(run("encrypt", "-k", "key.key", "data.bin", cwd=work), 1,
                 "data.bin.sseal already exists (use --force to overwrite)")
    assert (work / "data.bin.sseal").read_bytes() == b"precious"
    assert_ok(run("encrypt", "-k", "key.key", "--force", "data.bin", cwd=work))
    assert shardseal.decrypt((work / "data.bin.sseal").read_bytes(), KEY) == (work / "data.bin").read_bytes()
    assert_error(run("decrypt", "-k", "key.key", "data.bin.sseal", cwd=work), 1,
                 "data.bin already exists")
    assert_ok(run("decrypt", "-k", "key.key", "--force", "data.bin.sseal", cwd=work))
    assert leftovers(work) == []


def test_missing_input_is_exit_1(work):
    assert_error(run("encrypt", "-k", "key.key", "nope.bin", cwd=work), 1,
                 "nope.bin: No such file or directory")
    assert_error(run("decrypt", "-k", "key.key", "nope.sseal", cwd=work), 1,
                 "nope.sseal: No such file or directory")
    assert_error(run("inspect", "nope.sseal", cwd=work), 1, "nope.sseal: No such file or directory")


def test_decrypt_needs_sseal_suffix_or_output(work):
    assert_ok(run("encrypt", "-k", "key.key", "-o", "sealed", "data.bin", cwd=work))
    assert_error(run("decrypt", "-k", "key.key", "sealed", cwd=work), 1,
                 "does not end in .sseal", "-o")


def test_tampered_file_is_exit_3_and_leaves_no_output(work):
    assert_ok(run("encrypt", "-k", "key.key", "data.bin", cwd=work))
    (work / "data.bin").unlink()
    sealed = bytearray((work / "data.bin.sseal").read_bytes())
    sealed[len(sealed) // 2] ^= 0x04
    (work / "data.bin.sseal").write_bytes(sealed)
    assert_error(run("decrypt", "-k", "key.key", "data.bin.sseal", cwd=work), 3,
                 "data.bin.sseal: message authentication failed")
    assert not (work / "data.bin").exists() and leftovers(work) == []


def test_truncated_file_is_exit_3(work):
    assert_ok(run("encrypt", "-k", "key.key", "data.bin", "-o", "t.sseal", cwd=work))
    (work / "t.sseal").write_bytes((work / "t.sseal").read_bytes()[:-100])
    assert_error(run("decrypt", "-k", "key.key", "t.sseal", cwd=work), 3, "t.sseal")
    assert not (work / "t").exists() and leftovers(work) == []


def test_wrong_key_is_exit_4_and_names_the_needed_key_id(work):
    assert_ok(run("encrypt", "-k", "key.key", "data.bin", cwd=work))
    assert_error(run("decrypt", "-k", "other.key", "-o", "plain", "data.bin.sseal", cwd=work), 4,
                 "data.bin.sseal: the key does not open this container", KEY_ID)
    assert not (work / "plain").exists() and leftovers(work) == []


def test_not_a_shardseal_file_is_exit_5(work):
    (work / "notes.txt.sseal").write_text("just some text, long enough to pass the magic\n")
    assert_error(run("decrypt", "-k", "key.key", "notes.txt.sseal", cwd=work), 5,
                 "notes.txt.sseal: not a shardseal container")
    assert_error(run("inspect", "notes.txt.sseal", cwd=work), 5, "not a shardseal container")
    assert not (work / "notes.txt").exists()


def test_python_backend_decrypts_what_native_encrypted(work):
    assert_ok(run("encrypt", "-k", "key.key", "data.bin", cwd=work))
    env = child_env(SHARDSEAL_BACKEND="python")
    assert_ok(run("decrypt", "-k", "key.key", "-o", "plain", "data.bin.sseal", cwd=work, env=env))
    assert (work / "plain").read_bytes() == (work / "data.bin").read_bytes()


def test_debug_env_adds_a_traceback(work):
    env = child_env(SHARDSEAL_DEBUG="1")
    result = run("decrypt", "-k", "key.key", "nope.sseal", cwd=work, env=env)
    assert result.returncode == 1 and b"Traceback" in result.stderr
    assert result.stderr.decode().splitlines()[-1].startswith("shardseal: error: ")


# ---- pipes -----------------------------------------------------------------------------------


def test_pipe_round_trip(work):
    """encrypt - -o - | decrypt - -o -, on a multi-MiB input that arrives through a pipe."""
    data = os.urandom(5 * MIB + 12345)
    env = child_env()
    encrypt = subprocess.Popen(command("encrypt", "-k", "key.key", "-", "-o", "-"), cwd=work,
                               env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    decrypt = subprocess.Popen(command("decrypt", "-k", "key.key", "-", "-o", "-"), cwd=work,
                               env=env, stdin=encrypt.stdout, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    encrypt.stdout.close()  # the decrypt process owns the read end now

    def feed():
        encrypt.stdin.write(data)
        encrypt.stdin.close()

    feeder = threading.Thread(target=feed)
    feeder.start()
    plain, decrypt_err = decrypt.communicate(timeout=120)
    feeder.join()
    encrypt_err = encrypt.stderr.read()
    encrypt.stderr.close()
    assert encrypt.wait(timeout=60) == 0, encrypt_err
    assert decrypt.returncode == 0, decrypt_err
    assert plain == data
    assert encrypt_err.decode().startswith(f"encrypted 1 file, {len(data)} bytes")
    assert decrypt_err.decode().startswith(f"decrypted 1 file, {len(data)} bytes")
    assert_no_secret(plain, encrypt_err, decrypt_err)


def test_stdin_to_file_and_file_to_stdout(work):
    data = os.urandom(3 * MIB)
    assert_ok(run("encrypt", "-k", "key.key", "-", "-o", "piped.sseal", cwd=work, input=data))
    assert shardseal.decrypt((work / "piped.sseal").read_bytes(), KEY) == data
    result = run("decrypt", "-k", "key.key", "piped.sseal", "-o", "-", cwd=work)
    assert_ok(result)
    assert result.stdout == data
    result = run("decrypt", "-k", "key.key", "-", cwd=work, input=(work / "piped.sseal").read_bytes())
    assert_ok(result)
    assert result.stdout == data  # stdin defaults to stdout
    result = run("decrypt", "-k", "key.key", "-", "-o", "back", "-q", cwd=work,
                 input=(work / "piped.sseal").read_bytes())
    assert_ok(result)
    assert (work / "back").read_bytes() == data


def test_tampered_stdin_to_file_leaves_no_output(work):
    sealed = bytearray(shardseal.encrypt(os.urandom(MIB), KEY))
    sealed[-20] ^= 1  # the final chunk: everything before it authenticates
    assert_error(run("decrypt", "-k", "key.key", "-", "-o", "plain", cwd=work, input=bytes(sealed)),
                 3, "standard input: message authentication failed")
    assert not (work / "plain").exists() and leftovers(work) == []
    assert_error(run("decrypt", "-k", "other.key", "-", "-o", "plain", cwd=work,
                     input=bytes(sealed)), 4)
    assert_error(run("decrypt", "-k", "key.key", "-", cwd=work, input=b"hello, world " * 10), 5)
    assert not (work / "plain").exists() and leftovers(work) == []


def test_closed_output_pipe_is_one_line_exit_1(work):
    (work / "big").write_bytes(bytes(8 * MIB))
    process = subprocess.Popen(command("encrypt", "-k", "key.key", "big", "-o", "-"), cwd=work,
                               env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    process.stdout.read(100)
    process.stdout.close()
    stderr = process.stderr.read()
    process.stderr.close()
    assert process.wait(timeout=60) == 1
    lines = stderr.decode().splitlines()
    assert len(lines) == 1 and "output pipe was closed" in lines[0], lines


@pytest.mark.skipif(os.name != "posix", reason="POSIX signals")
@pytest.mark.parametrize("signum, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_interrupt_leaves_no_partial_output(work, signum, status):
    # The child starts with the default SIGINT disposition, as from a terminal: a test runner
    # started as a background job (`cmd &` without job control) ignores SIGINT, and Python
    # keeps an inherited SIG_IGN, so the signal would never reach the command.
    process = subprocess.Popen(command("encrypt", "-k", "key.key", "-", "-o", "out.sseal"),
                               cwd=work, env=child_env(), stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    process.stdin.write(os.urandom(MIB))  # and then the input stalls: the pipe stays open
    process.stdin.flush()
    deadline = time.monotonic() + 30
    while not leftovers(work) and time.monotonic() < deadline:
        time.sleep(0.02)  # wait for the temporary output file
    assert leftovers(work), "the temporary output never appeared"
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=60)
    process.stdin.close()
    assert process.returncode == status, stderr
    assert stderr.decode().splitlines() == [f"shardseal: error: {'interrupted' if status == 130 else 'terminated'}"]
    assert names(work) == ["data.bin", "key.key", "other.key"]


# ---- folders ---------------------------------------------------------------------------------


def make_tree(root):
    files = {
        "top.txt": b"top\n",
        "a/b/deep.bin": os.urandom(300_000),
        "a/empty": b"",
        "c/d/e/f.json": b'{"x": 1}',
    }
    for name, data in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return files


def test_folder_round_trip(work):
    files = make_tree(work / "tree")
    (work / "tree" / "already.sseal").write_bytes(b"skipped by encrypt")
    result = run("encrypt", "-k", "key.key", "tree", "-o", "enc", cwd=work)
    assert_ok(result)
    total = sum(len(d) for d in files.values())
    assert result.stderr.decode().startswith(f"encrypted {len(files)} files, {total} bytes")
    assert names(work / "enc") == sorted(
        ["a", "a/b", "a/b/deep.bin.sseal", "a/empty.sseal", "c", "c/d", "c/d/e",
         "c/d/e/f.json.sseal", "top.txt.sseal"])
    (work / "enc" / "README").write_text("decrypt takes only *.sseal files")
    result = run("decrypt", "-k", "key.key", "enc", "-o", "dec", cwd=work)
    assert_ok(result)
    assert result.stderr.decode().startswith(f"decrypted {len(files)} files, {total} bytes")
    for name, data in files.items():
        assert (work / "dec" / name).read_bytes() == data
    assert not (work / "dec" / "README").exists() and not (work / "dec" / "already").exists()


def test_folder_refuses_existing_outputs_and_writes_nothing(work):
    make_tree(work / "tree")
    (work / "enc" / "c" / "d" / "e").mkdir(parents=True)
    (work / "enc" / "c" / "d" / "e" / "f.json.sseal").write_bytes(b"precious")
    assert_error(run("encrypt", "-k", "key.key", "tree", "-o", "enc", cwd=work), 1,
                 "f.json.sseal already exists; nothing was written (use --force to overwrite)")
    assert names(work / "enc") == ["c", "c/d", "c/d/e", "c/d/e/f.json.sseal"]
    assert_ok(run("encrypt", "-k", "key.key", "tree", "-o", "enc", "--force", cwd=work))
    assert shardseal.decrypt((work / "enc" / "c/d/e/f.json.sseal").read_bytes(), KEY) == b'{"x": 1}'


def test_folder_needs_an_output_folder(work):
    make_tree(work / "tree")
    assert_error(run("encrypt", "-k", "key.key", "tree", cwd=work), 1, "tree is a folder", "-o")
    assert_error(run("encrypt", "-k", "key.key", "tree", "-o", "-", cwd=work), 1, "standard output")
    assert_error(run("encrypt", "-k", "key.key", "tree", "-o", "data.bin", cwd=work), 1,
                 "not a folder")


def test_folder_output_inside_input_is_not_walked(work):
    files = make_tree(work / "tree")
    assert_ok(run("encrypt", "-k", "key.key", "tree", "-o", "tree/enc", "-q", cwd=work))
    assert_ok(run("encrypt", "-k", "key.key", "tree", "-o", "tree/enc", "--force", "-q", cwd=work))
    assert len(list((work / "tree" / "enc").rglob("*.sseal"))) == len(files)
    assert not (work / "tree" / "enc" / "enc").exists()


def test_folder_stops_at_the_first_failure_and_keeps_finished_files(work):
    make_tree(work / "tree")
    assert_ok(run("encrypt", "-k", "key.key", "tree", "-o", "enc", "-q", cwd=work))
    bad = work / "enc" / "c" / "d" / "e" / "f.json.sseal"
    sealed = bytearray(bad.read_bytes())
    sealed[-1] ^= 1
    bad.write_bytes(sealed)
    line = assert_error(run("decrypt", "-k", "key.key", "enc", "-o", "dec", cwd=work), 3,
                        "f.json.sseal: message authentication failed", "of 4 files")
    assert "stopped after 3 of 4 files" in line  # top.txt, then a/, then c/
    assert (work / "dec" / "a" / "b" / "deep.bin").exists()
    assert not (work / "dec" / "c" / "d" / "e" / "f.json").exists() and leftovers(work) == []


# ---- inspect ---------------------------------------------------------------------------------


def test_inspect_needs_no_key(work):
    assert_ok(run("encrypt", "-k", "key.key", "--metadata", '{"split": "train", "n": 3}',
                  "data.bin", cwd=work))
    size = (work / "data.bin.sseal").stat().st_size
    result = run("inspect", "data.bin.sseal", cwd=work)
    assert_ok(result)
    text = result.stdout.decode()
    for expected in ("suite:       cobblestone-256", f"key id {KEY_ID}", '"split": "train"',
                     f"plaintext:   {MIB + 5} bytes", f"container:   {size} bytes"):
        assert expected in text, text

    result = run("inspect", "--json", "data.bin.sseal", cwd=work)
    assert_ok(result)
    info = json.loads(result.stdout)
    assert info["suite"] == "cobblestone-256" and info["version"] == 1
    assert info["stanzas"] == [{"type": "direct", "key_id": KEY_ID}]
    assert info["metadata"] == {"split": "train", "n": 3}
    assert info["plaintext_size"] == MIB + 5 and info["container_size"] == size
    assert info["array"] is None and info["content_type"] is None
    expected = shardseal.inspect((work / "data.bin.sseal").read_bytes())
    assert info["header_size"] == expected.header_size

    piped = run("inspect", "--json", "-", cwd=work, input=(work / "data.bin.sseal").read_bytes())
    assert_ok(piped)
    assert {**json.loads(piped.stdout), "file": "data.bin.sseal"} == info


def test_inspect_shows_arrays(work):
    import numpy as np

    (work / "w.sseal").write_bytes(shardseal.encrypt_array(np.zeros((3, 4), "<f4"), KEY, suite=128))
    info = json.loads(run("inspect", "--json", "w.sseal", cwd=work).stdout)
    assert info["array"] == {"dtype": "<f4", "shape": [3, 4]} and info["suite"] == "cobblestone-128"
    text = run("inspect", "w.sseal", cwd=work).stdout.decode()
    assert "numpy.ndarray" in text and '"shape": [3, 4]' in text


def test_inspect_escapes_control_characters(work):
    (work / "m.sseal").write_bytes(shardseal.encrypt(b"", KEY, metadata={"x": "\x1b[31m\x9b1m"}))
    result = run("inspect", "m.sseal", cwd=work)
    assert_ok(result)
    assert b"\x1b" not in result.stdout and "\x9b".encode() not in result.stdout
    assert "\\u001b[31m\\u009b1m" in result.stdout.decode()


@pytest.mark.skipif(os.name != "posix", reason="needs a pseudo-terminal")
@pytest.mark.parametrize("quiet", [False, True])
def test_progress_bar_only_on_a_terminal(work, quiet):
    import fcntl
    import pty
    import struct
    import termios

    make_tree(work / "tree")
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    args = ["encrypt", "-k", "key.key", "tree", "-o", "enc"] + (["-q"] if quiet else [])
    process = subprocess.Popen(command(*args), cwd=work, env=child_env(), stdout=subprocess.PIPE,
                               stderr=slave)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    assert process.wait(timeout=60) == 0
    process.stdout.close()
    terminal = b"".join(chunks).decode()
    if quiet:
        assert terminal == ""
    else:
        assert "encrypt tree" in terminal and "4/4 files" in terminal and "100%" in terminal
        assert "encrypted 4 files" in terminal
