"""Passphrase prompts of the command line: never given as an argument. ``-p`` prompts on the
terminal without echo, ``--passphrase-fd N`` reads the first line of an open file descriptor
(for scripts)."""

from __future__ import annotations

import getpass
import os
from typing import Optional

from ..errors import KeyLoadError


def read_passphrase(fd: Optional[int], *, confirm: bool, prompt: str = "passphrase") -> str:
    """A passphrase from file descriptor fd (its first line) or, without fd, from the terminal.

    Raises:
        KeySpecError: no terminal to prompt on, an empty passphrase, or a mismatch on confirm.
    """
    if fd is not None:
        with os.fdopen(os.dup(fd), "r", encoding="utf-8", errors="strict") as source:
            passphrase = source.readline().rstrip("\r\n")
    else:
        if not os.isatty(0) and not _has_tty():
            raise KeyLoadError("no terminal to ask for the passphrase: use --passphrase-fd N")
        passphrase = getpass.getpass(f"{prompt}: ")
        if confirm and getpass.getpass(f"{prompt} (again): ") != passphrase:
            raise KeyLoadError("the passphrases do not match")
    if not passphrase:
        raise KeyLoadError("the passphrase is empty")
    return passphrase


def _has_tty() -> bool:
    try:
        with open("/dev/tty"):
            return True
    except OSError:
        return False
