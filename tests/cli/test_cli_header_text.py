"""Text from a hostile header never reaches the terminal raw, and a wrong-key message stays short.

A KMS key reference may hold any character but NUL: the reviewer's file had 1,024 KMS stanzas
whose references held ANSI escapes and newlines, which ``inspect`` printed as they were and the
wrong-key error listed in full (a 66 KB line).
"""

from __future__ import annotations

import pytest

import shardseal
from shardseal import cli, errors, keyfile, kms
from shardseal.cli import _messages
from shardseal.container import header as _container
from shardseal.keys import stanzas as _stanzas

HOSTILE = "\x1b[31mRED\x1b[0m\x9b2J\u2028forged line\u2029\x7f\n"
RAW_CONTROLS = ("\x1b", "\x9b", "\u2028", "\u2029", "\x7f")


class _Provider(kms.KeyProvider):
    name = "aws-kms"

    def wrap(self, key_id, file_key, context):
        return b"W" + file_key

    def unwrap(self, key_id, wrapped, context):
        raise errors.KmsError("denied", code="AccessDeniedException", key_id=key_id,
                              provider="aws-kms")


def _hostile_container(count: int) -> bytes:
    blob = shardseal.encrypt(b"secret", recipients=[kms.KmsKey(_Provider(), "k0")],
                             metadata={"note": HOSTILE})
    header = _container.parse_header(blob)
    stanzas = [_container.Stanza(header.stanzas[0].type, _stanzas.reference_body(
        "aws-kms", f"arn:aws:kms:us-east-1:666:key/{i}{HOSTILE}", b"X" * 40)) for i in range(count)]
    payload = blob[len(header.fixed) + len(_container.encode_key_block(header.stanzas)):]
    return header.fixed + _container.encode_key_block(stanzas) + payload


@pytest.fixture()
def hostile(tmp_path, monkeypatch):
    (tmp_path / "evil.sseal").write_bytes(_hostile_container(1024))
    keyfile.write_key_file(tmp_path / "k.key", shardseal.generate_key())
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _assert_terminal_safe(text: str) -> None:
    for control in RAW_CONTROLS:
        assert control not in text, repr(control)


def test_inspect_escapes_control_characters(hostile, capsys):
    assert cli.main(["inspect", "evil.sseal"]) == 0
    out = capsys.readouterr().out
    _assert_terminal_safe(out)
    assert "\\x1b[31mRED" in out and "\\u2028" in out
    assert all(line.startswith((" ", "file", "format", "suite", "key", "metadata", "plaintext",
                                "container")) for line in out.splitlines())


def test_wrong_key_message_is_short_and_escaped(hostile, capsys):
    status = cli.main(["decrypt", "-k", "k.key", "evil.sseal", "-o", "out"])
    assert status == _messages.EXIT_WRONG_KEY
    err = capsys.readouterr().err
    _assert_terminal_safe(err)
    assert len(err.splitlines()) == 1
    assert len(err) < 4000
    assert "(and 1016 more)" in err


def test_library_message_is_capped_but_key_ids_complete():
    blob = _hostile_container(1024)
    with pytest.raises(errors.KeyNotFoundError) as info:
        shardseal.decrypt(blob, shardseal.generate_key())
    assert len(info.value.key_ids) == 1024
    assert len(str(info.value)) < 2000
    assert "(and 1016 more)" in str(info.value)


def test_terminal_safe_escapes_every_control_character():
    assert cli.terminal_safe("a\x00b\x1fc\x7fd\x85e\x9ff\u2028g\u2029h") == \
        "a\\x00b\\x1fc\\x7fd\\x85e\\x9ff\\u2028g\\u2029h"
    assert cli.terminal_safe("plain ünïcode ✓") == "plain ünïcode ✓"
