"""Completing rotations that were interrupted: replaying journals, removing the temporary
files of dead rotations (``rotation.recover``, and the start of every ``rotation.rotate``).
"""

from __future__ import annotations

import os
import stat
import warnings
from pathlib import Path
from typing import Optional

from .. import audit
from . import _journal
from ._descriptors import pread_exact, pwrite_all, remove, try_lock
from ._rewrap import MESSAGE_HEAD, difference, key_ids
from ._rotation_files import Found


def recover_found(found: Found) -> int:
    """Replays found's journals and removes its dead temporary files; returns the number of
    files repaired.

    Raises:
        OSError: a journal or file cannot be read or written.
    """
    repaired = 0
    for journal in found.journals:
        repaired += _replay_journal(journal)
    for temp in found.temps:
        _remove_if_dead(temp)
    return repaired


def _replay_journal(journal_file: Path) -> bool:
    """Completes the rotation a journal describes; True when a file was repaired."""
    try:
        fd = os.open(journal_file, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:  # finished meanwhile by its own rotation
        return False
    try:
        if not try_lock(fd):
            return False  # a rotation still running owns it
        data = os.pread(fd, _journal.MAX_SIZE + 1, 0)
        try:
            journal = _journal.decode(data)
        except ValueError:
            warnings.warn(f"{journal_file}: not a shardseal rotation journal; left alone",
                          RuntimeWarning, stacklevel=4)
            return False
        if journal is None:
            # Torn: the process died writing it, and the key block is only written after the
            # journal is durable, so the file is untouched.
            remove(journal_file)
            return False
        problem = _apply_journal(journal_file.parent, journal)
        if problem is not None:
            warnings.warn(f"{journal_file}: {problem}; the journal is left alone (delete it "
                          f"once the file is known to be right)", RuntimeWarning, stacklevel=4)
            return False
        remove(journal_file)
        return True
    finally:
        os.close(fd)


def _apply_journal(folder: Path, journal: _journal.Journal) -> Optional[str]:
    """Writes the journal's new key block into its file; returns why not, if it cannot."""
    if "/" in journal.name or journal.name in ("", ".", ".."):
        return "the journal names no file in its folder"
    target = folder / journal.name
    try:
        fd = os.open(target, os.O_RDWR | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        return f"its file {target} no longer exists"
    try:
        problem = _journal_mismatch(fd, journal)
        if problem is not None:
            return f"{target} {problem}"
        pwrite_all(fd, journal.new_block, len(journal.fixed))
        os.fsync(fd)
    finally:
        os.close(fd)
    with audit.target(target):
        old, new = (key_ids(journal.fixed + block) for block in (journal.old_block, journal.new_block))
        audit.record("rotate", mode="rewrap", added=list(difference(new, old)),
                     removed=list(difference(old, new)), recovered=True)
    return None


def _journal_mismatch(fd: int, journal: _journal.Journal) -> Optional[str]:
    """Why the file does not hold the journal's payload under an old, new or torn key block."""
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_size != journal.size:
        return "no longer has the journal's size (it was replaced)"
    fixed_size, block_size = len(journal.fixed), len(journal.new_block)
    current = pread_exact(fd, fixed_size + block_size + MESSAGE_HEAD, 0)
    block = current[fixed_size:fixed_size + block_size]
    if (current[:fixed_size] != journal.fixed
            or current[fixed_size + block_size:] != journal.message_head):
        return "no longer holds the journal's payload (it was replaced)"
    # A torn write leaves each byte from either version, never anything else.
    if any(b != old and b != new for b, old, new in zip(block, journal.old_block, journal.new_block)):
        return "has a key block that is neither the old, the new nor a mix of both"
    return None


def _remove_if_dead(temp: Path) -> None:
    """Removes a rotation's temporary file unless a running rotation holds its lock."""
    try:
        fd = os.open(temp, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        return
    try:
        if try_lock(fd):
            remove(temp)
    finally:
        os.close(fd)
