"""How messages show a value that might be a secret: by its type and length, never its content.

A key handed to the wrong parameter (``open(path, key)``, ``encrypt(data, key, suite=key)``) or
a key pasted where the command line wants a path must not come back in an error message, a
log line or a traceback. Messages about bad arguments therefore call ``shown`` instead of
formatting the value with ``{value!r}``.
"""

from __future__ import annotations

import errno
import os
import re
import string
import sys
from collections.abc import Sized
from typing import Optional, Union

if sys.version_info >= (3, 12):
    from collections.abc import Buffer
else:
    from typing_extensions import Buffer

# A path a message may have to name (file descriptors and file objects are accepted at run
# time too: they have no name to hide).
PathArg = Union[str, bytes, "os.PathLike[str]", "os.PathLike[bytes]"]

# Short strings such as modes ('r', 'w+b') are too short to be a key or a passphrase worth
# hiding, and showing them makes the message useful.
_SHORT_STR = 4
_PATH_LIKE_CHARS = frozenset(string.ascii_letters + string.digits + "._-/~:#")
_SEPARATORS = re.compile(r"[./_\-~:#]")
_WORDS = re.compile(r"-{0,2}[a-z]+(?:-[a-z]+)*")
_MIN_SECRET_CHARS = 16
# Key file lines and X25519 identity strings (keyfile.KEY_LINE_PREFIX, x25519.IDENTITY_PREFIX).
_SECRET_PREFIXES = ("shardseal-key-1:", "SSEAL-X25519-SECRET-1")


def shown(value: object) -> str:
    """A description of value safe for any message: its repr only when it cannot be a secret.

    None, bools, ints, floats and strings of at most 4 printable characters are shown as they
    are; anything else as its type and length, such as ``bytes of length 32`` or
    ``str of length 44``.
    """
    if value is None or isinstance(value, (bool, int, float)):
        return repr(value)
    if isinstance(value, str) and len(value) <= _SHORT_STR and value.isprintable():
        return repr(value)
    kind = type(value).__name__
    try:
        if isinstance(value, Sized):
            return f"{kind} of length {len(value)}"
    except Exception:  # a len() that fails: the type alone
        pass
    return f"a {kind} object"  # no len(): the type alone


def looks_like_secret(text: str) -> bool:
    """Whether a command-line string might be key material rather than a word, name or path.

    Key material is at least 16 characters in any encoding (hex, base32, base64, a key file
    line, an X25519 identity string) or holds bytes that are not printable. Shorter strings,
    option-like words (``--new-passphrase-fd``, ``decrypt-only``) and strings that read like
    paths (only letters, digits and ``._-/~:#``, with a ``.`` or ``/``, and no part of 16 or
    more letters and digits between those separators) are not; everything else might be.
    """
    stripped = text.strip()
    if stripped.startswith(_SECRET_PREFIXES) or not text.isprintable():
        return True
    if len(text) < _MIN_SECRET_CHARS or _WORDS.fullmatch(text):
        return False
    if not set(text) <= _PATH_LIKE_CHARS or ("." not in text and "/" not in text):
        return True
    # base64 keys hold '/', and hex or base32 keys are long runs of letters and digits.
    return any(len(part) >= _MIN_SECRET_CHARS for part in _SEPARATORS.split(text))


def shown_argument(text: str) -> str:
    """A command-line string as messages may show it: repr'd unless it might be a secret."""
    if looks_like_secret(text):
        return f"(an argument of {len(text)} characters, not shown in case it is a key)"
    return repr(text)


def utf8_text(data: Buffer) -> Optional[str]:
    """data decoded as UTF-8, or None when it is not UTF-8.

    Callers raise their own error when this returns None, outside any ``except`` block: an
    error raised while a ``UnicodeDecodeError`` is handled keeps it as ``__context__`` (even
    ``from None`` only hides it from the traceback), and that error's ``.object`` is the
    whole secret being decoded.
    """
    try:
        return bytes(data).decode("utf-8")
    except UnicodeDecodeError:
        return None


def utf8_bytes(text: str) -> Optional[bytes]:
    """text encoded as UTF-8, or None when it holds lone surrogates (see ``utf8_text``)."""
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return None


def ascii_bytes(text: str) -> Optional[bytes]:
    """text encoded as ASCII, or None when it is not ASCII (see ``utf8_text``)."""
    try:
        return text.encode("ascii")
    except UnicodeEncodeError:
        return None


def hidden_path(path: PathArg) -> Optional[str]:
    """How a message names path when it names nothing and might be a key, else None.

    A key pasted where a path belongs (``read_key_file(key)``, ``encrypt_file(hex_key, ...)``)
    would otherwise come back in the FileNotFoundError's message and ``filename``.
    """
    try:
        text = os.fsdecode(path)
    except TypeError:  # a file descriptor or a file object: no name to hide
        return None
    if not looks_like_secret(text):
        return None
    try:
        if os.path.lexists(text):
            return None
    except ValueError:  # an embedded NUL byte: names no file
        pass
    return f"(a path of {len(text)} characters, not shown in case it is a key)"


def refuse_missing_secret_path(path: PathArg, *, for_writing: bool = False) -> None:
    """Raises FileNotFoundError naming path by its length when it names nothing and might be a
    key; does nothing otherwise (the caller's own open then reports any other failure).
    With for_writing, a path that is about to be created is refused only when its folder is
    missing too.

    Call it before opening, outside any ``except`` block, so that no OSError holding the path
    becomes the error's ``__context__``.

    Raises:
        FileNotFoundError: path names nothing and looks like a key.
    """
    shown_name = hidden_path(path)
    if shown_name is not None and for_writing:
        folder = os.path.dirname(os.fsdecode(path)) or os.curdir
        if os.path.isdir(folder):
            return
    if shown_name is not None:
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), shown_name)
