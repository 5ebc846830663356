"""Key files: how the ``shardseal`` command stores a 32-byte key on disk.

A key file is UTF-8 text::

    # shardseal key, created 2025-11-25T21:30:00Z
    # key id: 5f0c3a...e1
    shardseal-key-1:q2Bv...3Jc=

* lines end with LF or CRLF; spaces and tabs around a line are ignored;
* lines starting with ``#`` are comments and blank lines are ignored (``keygen`` writes the
  creation time and the key id, the public fingerprint that ``shardseal inspect`` shows for the
  files a key opens; neither is checked when reading);
* exactly one line is ``shardseal-key-1:`` followed by the 32 key bytes in canonical standard
  base64 (RFC 4648 section 4, with its ``=`` padding and zero unused bits: 44 characters).

docs/FORMAT.md section 9 is the full specification.

``read_key_file`` also accepts a raw binary file of exactly 32 bytes (the key itself), unless
all 32 bytes are printable text: that is almost certainly a password or a hex string cut
short, never 32 random bytes, and is refused.

Key files should be readable by their owner only. ``write_key_file`` creates them with mode
0600 (never wider, not even for a moment) and ``read_key_file`` warns with a
:class:`KeyFilePermissionWarning` when group or others may read or write one.

No message, warning or ``repr`` here ever contains key material.
"""

from __future__ import annotations

import base64
import binascii
import os
from datetime import datetime, timezone
from typing import Optional, Union

from . import direct as _direct
from .. import _redact
from ._secretfile import KeyFilePermissionWarning, read_secret_file, write_secret_file
from ..errors import KeyFileError  # defined in errors; kept importable from here

__all__ = [
    "KEY_LINE_PREFIX",
    "KeyFileError",
    "KeyFilePermissionWarning",
    "format_key_file",
    "parse_key_file",
    "read_key_file",
    "text_lines",
    "write_key_file",
]

PathLike = Union[str, "os.PathLike[str]"]

KEY_LINE_PREFIX = "shardseal-key-1:"
KEY_SIZE = _direct.KEY_SIZE
# A key file is a few lines; anything larger is not one (and is not read whole).
MAX_KEY_FILE_SIZE = 64 * 1024
_PRINTABLE = frozenset(range(0x20, 0x7F)) | frozenset(b"\t\r\n")


def format_key_file(key: bytes, created: Optional[datetime] = None) -> str:
    """The text of a key file holding key (see the module documentation for the format).

    Raises:
        TypeError, ValueError: key is not 32 bytes.
    """
    key = _direct.check_key(key)
    created = created or datetime.now(timezone.utc)
    stamp = created.astimezone(timezone.utc).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")
    encoded = base64.b64encode(key).decode("ascii")
    return (
        f"# shardseal key, created {stamp}\n"
        f"# key id: {_direct.key_id(key).hex()}\n"
        f"{KEY_LINE_PREFIX}{encoded}\n"
    )


def parse_key_file(data: bytes, name: str = "key file") -> bytes:
    """The 32-byte key in a key file's contents (text format, or the raw 32 bytes).

    Args:
        data: the file's bytes.
        name: how messages name the file (its path).

    Raises:
        KeyFileError: data is not a key file. The message never quotes the data.
    """
    data = bytes(data)
    if len(data) == KEY_SIZE:
        if all(byte in _PRINTABLE for byte in data):
            raise KeyFileError(f"{name}: not a shardseal key file (32 bytes of text, not a raw "
                               "32-byte key; create keys with 'shardseal keygen')")
        return data
    text = _redact.utf8_text(data)
    if text is None:
        raise KeyFileError(f"{name}: not a shardseal key file (binary, and not 32 bytes long)")
    keys = []
    for line in text_lines(text):
        if not line or line.startswith("#"):
            continue
        if not line.startswith(KEY_LINE_PREFIX):
            raise KeyFileError(f"{name}: not a shardseal key file (a line is neither a comment "
                               f"nor '{KEY_LINE_PREFIX}...')")
        keys.append(_decode_key_line(line[len(KEY_LINE_PREFIX):], name))
    if not keys:
        raise KeyFileError(f"{name}: not a shardseal key file (no '{KEY_LINE_PREFIX}' line)")
    if len(keys) > 1:
        raise KeyFileError(f"{name}: not a shardseal key file (it holds {len(keys)} keys; "
                           "a key file holds exactly one)")
    return keys[0]


def text_lines(text: str) -> list[str]:
    """The lines of a key or identity file: split at LF (a CR before it is part of the line
    end), spaces and tabs around each line removed. Only these characters count as line
    ends and blanks, whatever Unicode calls whitespace (docs/FORMAT.md section 8)."""
    return [line.strip(" \t\r") for line in text.split("\n")]


def _decode_key_line(encoded: str, name: str) -> bytes:
    # No exception of the decoding may become this error's __context__: it would hold the key.
    encoded = encoded.strip(" \t")
    ascii_line = _redact.ascii_bytes(encoded)
    key = _b64decode(ascii_line) if ascii_line is not None else None
    if key is None:
        raise KeyFileError(f"{name}: not a shardseal key file (the key is not valid base64)")
    if len(key) != KEY_SIZE:
        raise KeyFileError(f"{name}: not a shardseal key file (the key is {len(key)} bytes, "
                           f"not {KEY_SIZE})")
    if base64.b64encode(key).decode("ascii") != encoded:
        # Nonzero unused bits in the last character: one key would have several spellings.
        raise KeyFileError(f"{name}: not a shardseal key file (the key is not canonical base64: "
                           "its last character before '=' is mistyped)")
    return key


def _b64decode(data: bytes) -> Optional[bytes]:
    try:
        return base64.b64decode(data, validate=True)
    except binascii.Error:
        return None


def read_key_file(path: PathLike) -> bytes:
    """Reads the 32-byte key from a key file.

    Any readable file works, pipes included (``-k <(secret-tool lookup ...)``); a regular file
    that group or others may access raises a :class:`KeyFilePermissionWarning` (a warning, not
    an error) naming the ``chmod`` that fixes it.

    Raises:
        OSError: the file cannot be opened or read.
        KeyFileError: it is not a key file.
    """
    name = os.fspath(path)
    data = read_secret_file(
        name, what="key file", limit=MAX_KEY_FILE_SIZE, stacklevel=2,
        too_large=lambda: KeyFileError(f"{name}: not a shardseal key file (larger than "
                                       f"{MAX_KEY_FILE_SIZE} bytes)"),
    )
    return parse_key_file(data, name)


def write_key_file(path: PathLike, key: bytes, *, force: bool = False) -> None:
    """Writes key to a new key file with mode 0600 (narrowed further by the umask).

    The key is written to a temporary file beside path, created with O_EXCL and mode 0600 (so
    it is never readable by others, not even while being written) and fsynced, which then
    appears under path in one step: readers see no file (or the old one) or the whole new one.
    Without force an existing path is an error; with force the file is renamed over it.
    ``force`` is the one overwrite flag of the library and the command line (``--force``).

    Raises:
        FileExistsError: path exists and force is false.
        OSError: the file cannot be written.
        TypeError, ValueError: key is not 32 bytes.
    """
    write_secret_file(path, format_key_file(key).encode("ascii"), force=force)
