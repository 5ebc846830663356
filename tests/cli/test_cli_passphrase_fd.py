"""--passphrase-fd reads only the first line of its descriptor, and a bad one gives no detail."""

from __future__ import annotations

from ..cli_helpers import run


def test_passphrase_and_container_share_standard_input(tmp_path):
    (tmp_path / "p.txt").write_bytes(b"the data")
    encrypted = run("encrypt", "--passphrase-fd", "0", "--work-factor", "10", "-q", "p.txt",
                    cwd=tmp_path, input=b"correct horse\n")
    assert encrypted.returncode == 0, encrypted.stderr
    container = (tmp_path / "p.txt.sseal").read_bytes()
    # As in (echo pass; cat f.sseal) | shardseal decrypt --passphrase-fd 0 -
    result = run("decrypt", "--passphrase-fd", "0", "-q", "-", cwd=tmp_path,
                 input=b"correct horse\n" + container)
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"the data"


def test_non_utf8_passphrase_is_refused_without_detail(tmp_path):
    (tmp_path / "p.txt").write_bytes(b"the data")
    result = run("encrypt", "--passphrase-fd", "0", "--work-factor", "10", "p.txt",
                 cwd=tmp_path, input=b"passwor\xe9d\n")
    assert result.returncode == 1
    err = result.stderr.decode()
    assert "not UTF-8" in err and "Traceback" not in err
    for detail in ("0xe9", "position", "codec", "passwor"):
        assert detail not in err
    assert not (tmp_path / "p.txt.sseal").exists()
