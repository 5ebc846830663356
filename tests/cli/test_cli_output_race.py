"""Folder outputs are written without following links, even links that appear after the checks.

The reviewer's reproducer raced a loop swapping ``OUT/sub`` for a link to a folder outside
while ``decrypt DIR -o OUT`` ran: a write that checked the path first and opened it afterwards
could put plaintext outside OUT. These tests plant the link deterministically, between the
checks and the write, by wrapping the function that writes each file.
"""

from __future__ import annotations

import os

import pytest

import shardseal
from shardseal import _atomic, cli, keyfile
from shardseal.cli import _commands, _messages


@pytest.fixture()
def tree(tmp_path):
    key = shardseal.generate_key()
    keyfile.write_key_file(tmp_path / "k.key", key)
    (tmp_path / "plain" / "sub").mkdir(parents=True)
    (tmp_path / "plain" / "sub" / "a.txt").write_bytes(b"plaintext secret")
    (tmp_path / "enc" / "sub").mkdir(parents=True)
    shardseal.encrypt_file(tmp_path / "plain" / "sub" / "a.txt", tmp_path / "enc" / "sub" / "a.txt.sseal", key)
    (tmp_path / "outside").mkdir()
    return tmp_path


def _swap_for_link(folder, target):
    """Moves folder away and leaves a link to target in its place."""
    os.rename(folder, str(folder) + ".real")
    os.symlink(target, folder)


def _outside_files(tree):
    return sorted(p.name for p in (tree / "outside").iterdir())


@pytest.mark.parametrize("command, source, writer", [
    ("decrypt", "enc", "decrypt_file"),
    ("encrypt", "plain", "encrypt_file"),
])
def test_link_swapped_in_just_before_the_write_is_not_followed(tree, monkeypatch, command, source,
                                                                 writer):
    out = tree / "out"
    (out / "sub").mkdir(parents=True)
    real_writer = getattr(shardseal, writer)

    def swap_then_write(*args, **kwargs):
        _swap_for_link(out / "sub", tree / "outside")
        return real_writer(*args, **kwargs)

    monkeypatch.setattr(shardseal, writer, swap_then_write)
    monkeypatch.chdir(tree)
    cli.main([command, "-q", "-k", "k.key", source, "-o", "out"])
    assert _outside_files(tree) == []


@pytest.mark.parametrize("command, source", [("decrypt", "enc"), ("encrypt", "plain")])
def test_link_planted_after_the_check_makes_the_write_fail(tree, monkeypatch, capsys, command,
                                                           source):
    out = tree / "out"
    (out / "sub").mkdir(parents=True)
    real_check = _commands._refuse_links_below
    checked = []

    def check_then_plant(root, target):
        # Every check runs before the link appears; it appears right after the first one.
        if not checked:
            real_check(root, target)
            checked.append(target)
            _swap_for_link(out / "sub", tree / "outside")

    monkeypatch.setattr(_commands, "_refuse_links_below", check_then_plant)
    monkeypatch.chdir(tree)
    status = cli.main([command, "-q", "-k", "k.key", source, "-o", "out"])
    assert status == _messages.EXIT_ERROR
    assert _outside_files(tree) == []
    assert "is a symbolic link" in capsys.readouterr().err


def test_folder_outputs_still_written_into_new_sub_folders(tree, monkeypatch):
    monkeypatch.chdir(tree)
    assert cli.main(["decrypt", "-q", "-k", "k.key", "enc", "-o", "out"]) == 0
    assert (tree / "out" / "sub" / "a.txt").read_bytes() == b"plaintext secret"
    assert [p.name for p in (tree / "out" / "sub").iterdir()] == ["a.txt"]  # no temp file left
    assert cli.main(["encrypt", "-q", "-k", "k.key", "plain", "-o", "out2"]) == 0
    assert (tree / "out2" / "sub" / "a.txt.sseal").exists()


def test_atomic_file_with_dir_fd_refuses_a_path(tmp_path):
    fd = os.open(tmp_path, os.O_RDONLY)
    try:
        with pytest.raises(ValueError):
            _atomic.AtomicFile("a/b", dir_fd=fd)
    finally:
        os.close(fd)
