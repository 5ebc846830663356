"""Passphrase prompts of the command line: never given as an argument. ``-p`` prompts on the
terminal without echo, ``--passphrase-fd N`` reads the first line of an open file descriptor
(for scripts), and nothing after it: ``(echo pass; cat f.sseal) | shardseal decrypt
--passphrase-fd 0 -`` works."""

from __future__ import annotations

import getpass
import os
from typing import Optional

from .. import _redact
from ..errors import KeyLoadError

MAX_PASSPHRASE_LINE = 64 * 1024


def read_passphrase(fd: Optional[int], *, confirm: bool, prompt: str = "passphrase") -> str:
    """A passphrase from file descriptor fd (its first line) or, without fd, from the terminal.

    Raises:
        KeySpecError: no terminal to prompt on, an empty passphrase, or a mismatch on confirm;
            from fd, a first line that is not UTF-8 or is longer than 64 KiB.
        OSError: fd cannot be read.
    """
    if fd is not None:
        passphrase = _redact.utf8_text(_read_line(fd))
        if passphrase is None:  # never say which byte: it is part of the passphrase
            raise KeyLoadError(f"the passphrase read from file descriptor {fd} is not UTF-8 text")
        passphrase = passphrase.rstrip("\r")
    else:
        if not os.isatty(0) and not _has_tty():
            raise KeyLoadError("no terminal to ask for the passphrase: use --passphrase-fd N")
        passphrase = getpass.getpass(f"{prompt}: ")
        if confirm and getpass.getpass(f"{prompt} (again): ") != passphrase:
            raise KeyLoadError("the passphrases do not match")
    if not passphrase:
        raise KeyLoadError("the passphrase is empty")
    return passphrase


def _read_line(fd: int) -> bytes:
    """The first line of fd (without its LF), read one byte at a time: nothing after the line
    is consumed, so the rest of the stream (a container on standard input) stays readable.

    Raises:
        KeyLoadError: no line end within MAX_PASSPHRASE_LINE bytes.
        OSError: fd cannot be read.
    """
    line = bytearray()
    while len(line) <= MAX_PASSPHRASE_LINE:
        byte = os.read(fd, 1)
        if not byte or byte == b"\n":
            return bytes(line)
        line += byte
    raise KeyLoadError(f"the passphrase read from file descriptor {fd} is longer than "
                       f"{MAX_PASSPHRASE_LINE} bytes")


def _has_tty() -> bool:
    try:
        with open("/dev/tty"):
            return True
    except OSError:
        return False
