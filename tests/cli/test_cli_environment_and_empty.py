"""A bad engine choice in the environment, and inspect of an empty input."""

from __future__ import annotations

import pytest

from ..cli_helpers import child_env, run

LONG_VALUE = "0123456789abcdef0123456789abcdef"


@pytest.mark.parametrize("variable", ["SHARDSEAL_BACKEND", "SHARDSEAL_KERNEL"])
@pytest.mark.parametrize("value", ["xyz", LONG_VALUE])
def test_bad_engine_choice_is_one_line_usage_error(tmp_path, variable, value):
    result = run("--version", cwd=tmp_path, env=child_env(**{variable: value}))
    err = result.stderr.decode()
    assert result.returncode == 2, err
    assert "Traceback" not in err
    assert err.startswith(f"shardseal: error: {variable} must be one of")
    assert len(err.splitlines()) == 1
    assert LONG_VALUE not in err
    if value == "xyz":
        assert "'xyz'" in err


def test_library_message_does_not_echo_a_long_value(tmp_path):
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-c", "import shardseal"], capture_output=True,
                            env=child_env(SHARDSEAL_BACKEND=LONG_VALUE), timeout=60)
    assert result.returncode != 0
    assert b"ValueError: SHARDSEAL_BACKEND must be one of" in result.stderr
    assert LONG_VALUE.encode() not in result.stderr


def test_inspect_of_an_empty_input_is_a_format_error(tmp_path):
    (tmp_path / "empty.sseal").write_bytes(b"")
    for args, stdin in ((["inspect", "empty.sseal"], None), (["inspect", "-"], b"")):
        result = run(*args, cwd=tmp_path, input=stdin)
        assert result.returncode == 5, result.stderr
        assert b"the input is empty" in result.stderr
