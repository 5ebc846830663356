"""Runs the ``shardseal`` command in a subprocess, for test_cli.py and test_keyfile.py.

Every run is checked for leaked key material: the test key files register their keys in
SECRETS, and no command's output may contain one (except keygen writing its key file to stdout).
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from pathlib import Path

import shardseal

# The directory holding the shardseal package under test: src/ in a checkout, site-packages
# when installed. Put first on the child's path so that it runs this very package.
PACKAGE_ROOT = str(Path(shardseal.__file__).resolve().parent.parent)
SECRETS: list[bytes] = []


def child_env(**changes) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("SHARDSEAL_KEY_FILE", "SHARDSEAL_DEBUG")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (PACKAGE_ROOT, env.get("PYTHONPATH")) if p)
    for name, value in changes.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


def command(*args) -> list[str]:
    return [sys.executable, "-m", "shardseal", *map(str, args)]


def register_secret(key: bytes) -> None:
    SECRETS.extend([key, base64.b64encode(key), key.hex().encode()])


def assert_no_secret(*outputs: bytes) -> None:
    for output in outputs:
        for secret in SECRETS:
            assert secret not in output, "key material in the command's output"


def run(*args, cwd, input=None, env=None, check_secrets=True, **popen) -> subprocess.CompletedProcess:
    result = subprocess.run(command(*args), cwd=cwd, input=input, capture_output=True,
                            env=env or child_env(), timeout=120, **popen)
    if check_secrets:
        assert_no_secret(result.stdout, result.stderr)
    return result


def assert_ok(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    assert b"Traceback" not in result.stderr


def error_lines(result: subprocess.CompletedProcess) -> list[str]:
    """stderr without warning lines."""
    return [line for line in result.stderr.decode().splitlines()
            if not line.startswith("shardseal: warning: ")]


def assert_error(result: subprocess.CompletedProcess, status: int, *fragments: str) -> str:
    """The command failed with this status and exactly one 'shardseal: error:' line."""
    lines = error_lines(result)
    assert result.returncode == status, result.stderr.decode(errors="replace")
    assert b"Traceback" not in result.stderr
    assert len(lines) == 1 and lines[0].startswith("shardseal: error: "), lines
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]
