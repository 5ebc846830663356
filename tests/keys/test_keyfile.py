"""Key files: the format (shardseal.keyfile) and ``shardseal keygen``."""

from __future__ import annotations

import base64
import os
import stat
import warnings

import pytest

import shardseal
from shardseal import keyfile
from shardseal.keys import direct as _direct
from shardseal.keyfile import KeyFileError, KeyFilePermissionWarning

from ..cli_helpers import assert_error, assert_ok, child_env, register_secret, run

KEY = bytes(range(32))
register_secret(KEY)
posix_only = pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


# ---- the format ------------------------------------------------------------------------------


def test_format_round_trip():
    text = keyfile.format_key_file(KEY)
    lines = text.splitlines()
    assert lines[0].startswith("# shardseal key, created ") and lines[0].endswith("Z")
    assert lines[1] == f"# key id: {_direct.key_id(KEY).hex()}"
    assert lines[2] == "shardseal-key-1:" + base64.b64encode(KEY).decode()
    assert keyfile.parse_key_file(text.encode()) == KEY


def test_comments_blank_lines_crlf_and_spaces_are_accepted():
    data = ("\r\n# a comment\r\n\r\n  shardseal-key-1:" + base64.b64encode(KEY).decode()
            + "  \r\n# trailing\r\n").encode()
    assert keyfile.parse_key_file(data) == KEY


def test_raw_32_byte_key_is_accepted(tmp_path):
    path = tmp_path / "raw.key"
    path.write_bytes(KEY)
    path.chmod(0o600)
    assert keyfile.read_key_file(path) == KEY


@pytest.mark.parametrize("data, why", [
    (b"", "no 'shardseal-key-1:' line"),
    (b"# only a comment\n", "no 'shardseal-key-1:' line"),
    (b"0123456789abcdef0123456789abcdef", "32 bytes of text"),      # a password, not a key
    (bytes(range(200, 233)), "binary"),
    (b"\xff" * 31, "binary"),
    (b"shardseal-key-1:not base64!!\n", "not valid base64"),
    (b"shardseal-key-1:" + base64.b64encode(bytes(16)) + b"\n", "16 bytes, not 32"),
    (b"shardseal-key-1:" + base64.urlsafe_b64encode(b"\xfb" * 32).rstrip(b"=") + b"\n",
     "not valid base64"),
    (b"SHARDSEAL-KEY-1:" + base64.b64encode(KEY) + b"\n", "neither a comment"),
    (b"shardseal-key-1:" + base64.b64encode(KEY) + b"\nshardseal-key-1:"
     + base64.b64encode(KEY) + b"\n", "holds 2 keys"),
    (b"hello\nshardseal-key-1:" + base64.b64encode(KEY) + b"\n", "neither a comment"),
])
def test_malformed_key_files_are_refused(data, why):
    with pytest.raises(KeyFileError, match="not a shardseal key file") as caught:
        keyfile.parse_key_file(data, "some.key")
    message = str(caught.value)
    assert message.startswith("some.key: ") and why in message
    assert base64.b64encode(KEY).decode() not in message and "not base64!!" not in message
    assert isinstance(caught.value, ValueError)


def test_large_file_is_refused_without_reading_it_all(tmp_path):
    path = tmp_path / "big"
    path.write_bytes(b"#" * (keyfile.MAX_KEY_FILE_SIZE + 1))
    path.chmod(0o600)
    with pytest.raises(KeyFileError, match="larger than"):
        keyfile.read_key_file(path)


def test_read_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        keyfile.read_key_file(tmp_path / "missing.key")
    with pytest.raises(IsADirectoryError):
        keyfile.read_key_file(tmp_path)


@posix_only
@pytest.mark.parametrize("bits", [0o640, 0o604, 0o660, 0o602])
def test_group_or_other_access_warns(tmp_path, bits):
    path = tmp_path / "k.key"
    keyfile.write_key_file(path, KEY)
    path.chmod(bits)
    with pytest.warns(KeyFilePermissionWarning, match=f"chmod 600 {path}") as record:
        assert keyfile.read_key_file(path) == KEY
    assert f"mode {bits:04o}" in str(record[0].message)


@posix_only
@pytest.mark.parametrize("bits", [0o600, 0o400])
def test_owner_only_does_not_warn(tmp_path, bits):
    path = tmp_path / "k.key"
    keyfile.write_key_file(path, KEY)
    path.chmod(bits)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert keyfile.read_key_file(path) == KEY


@posix_only
def test_write_creates_0600_and_refuses_to_overwrite(tmp_path):
    path = tmp_path / "k.key"
    keyfile.write_key_file(path, KEY)
    assert mode(path) == 0o600
    before = path.read_bytes()
    with pytest.raises(FileExistsError):
        keyfile.write_key_file(path, shardseal.generate_key())
    assert path.read_bytes() == before


@posix_only
def test_forced_write_replaces_atomically_with_0600(tmp_path):
    path = tmp_path / "k.key"
    path.write_text("old")
    path.chmod(0o644)
    other = shardseal.generate_key()
    keyfile.write_key_file(path, other, force=True)
    assert mode(path) == 0o600 and keyfile.read_key_file(path) == other
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k.key"]  # no temporary left


def test_bad_key_is_refused_by_writer(tmp_path):
    with pytest.raises(ValueError):
        keyfile.write_key_file(tmp_path / "k.key", bytes(16))
    assert not (tmp_path / "k.key").exists()


def test_key_never_in_repr_of_errors_or_warnings(tmp_path):
    path = tmp_path / "k.key"
    keyfile.write_key_file(path, KEY)
    path.chmod(0o644)
    with pytest.warns(KeyFilePermissionWarning) as record:
        keyfile.read_key_file(path)
    assert base64.b64encode(KEY).decode() not in str(record[0].message)


# ---- shardseal keygen ------------------------------------------------------------------------


@posix_only
def test_keygen_writes_0600_key_file_even_with_umask_0(tmp_path):
    result = run("keygen", "-o", "k.key", cwd=tmp_path, preexec_fn=lambda: os.umask(0),
                 check_secrets=False)
    assert_ok(result)
    path = tmp_path / "k.key"
    assert mode(path) == 0o600
    key = keyfile.read_key_file(path)
    register_secret(key)
    key_id = _direct.key_id(key).hex()
    assert f"# key id: {key_id}" in path.read_text()
    assert result.stdout == b"" and f"key id {key_id}".encode() in result.stderr
    assert base64.b64encode(key) not in result.stderr


def test_keygen_refuses_to_overwrite_and_force_replaces(tmp_path):
    path = tmp_path / "k.key"
    assert_ok(run("keygen", "-o", path, cwd=tmp_path, check_secrets=False))
    first = path.read_bytes()
    register_secret(keyfile.parse_key_file(first))
    assert_error(run("keygen", "-o", path, cwd=tmp_path), 1, "already exists", "--force")
    assert path.read_bytes() == first
    assert_ok(run("keygen", "-o", path, "--force", "-q", cwd=tmp_path, check_secrets=False))
    second = path.read_bytes()
    register_secret(keyfile.parse_key_file(second))
    assert second != first and keyfile.parse_key_file(second) != keyfile.parse_key_file(first)
    if os.name == "posix":
        assert mode(path) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k.key"]


def test_keygen_to_stdout_warns(tmp_path):
    result = run("keygen", cwd=tmp_path, check_secrets=False)
    assert_ok(result)
    key = keyfile.parse_key_file(result.stdout)
    register_secret(key)
    assert result.stderr.decode().startswith("shardseal: warning: the key is written to standard output")
    assert key not in result.stderr and base64.b64encode(key) not in result.stderr


@posix_only
def test_loose_key_file_warns_once_on_one_line_and_still_works(tmp_path):
    path = tmp_path / "k.key"
    keyfile.write_key_file(path, KEY)
    path.chmod(0o644)
    (tmp_path / "plain").write_bytes(b"data")
    result = run("encrypt", "-k", path, "plain", cwd=tmp_path)
    assert_ok(result)
    warning_lines = [l for l in result.stderr.decode().splitlines() if "warning" in l]
    assert warning_lines == [f"shardseal: warning: key file {path} is accessible by group or others "
                             f"(mode 0644); restrict it with: chmod 600 {path}"]


def test_malformed_key_file_is_exit_1(tmp_path):
    (tmp_path / "bad.key").write_text("shardseal-key-1:AAAA\n")
    (tmp_path / "plain").write_bytes(b"data")
    assert_error(run("encrypt", "-k", "bad.key", "plain", cwd=tmp_path), 1,
                 "bad.key: not a shardseal key file")
    assert not (tmp_path / "plain.sseal").exists()


def test_missing_key_file_is_exit_1(tmp_path):
    (tmp_path / "plain").write_bytes(b"data")
    assert_error(run("encrypt", "-k", "nope.key", "plain", cwd=tmp_path), 1,
                 "cannot read key file nope.key: No such file or directory")


def test_key_on_the_command_line_is_refused_and_not_echoed(tmp_path):
    (tmp_path / "plain").write_bytes(b"data")
    pasted = keyfile.format_key_file(KEY).splitlines()[-1]
    line = assert_error(run("encrypt", "-k", pasted, "plain", cwd=tmp_path), 1, "not a key")
    assert base64.b64encode(KEY).decode() not in line


def test_key_file_from_the_environment(tmp_path):
    keyfile.write_key_file(tmp_path / "k.key", KEY)
    (tmp_path / "plain").write_bytes(b"data")
    env = child_env(SHARDSEAL_KEY_FILE=str(tmp_path / "k.key"))
    assert_ok(run("encrypt", "plain", cwd=tmp_path, env=env))
    assert shardseal.decrypt((tmp_path / "plain.sseal").read_bytes(), KEY) == b"data"


def test_no_key_file_is_a_usage_error(tmp_path):
    (tmp_path / "plain").write_bytes(b"data")
    result = run("encrypt", "plain", cwd=tmp_path)
    assert result.returncode == 2 and b"SHARDSEAL_KEY_FILE" in result.stderr
    assert b"Traceback" not in result.stderr
