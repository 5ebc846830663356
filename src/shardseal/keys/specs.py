"""The command line's wording around the one string parser, ``keys.registry``.

``-r``/``--add`` take recipient strings and ``-i`` identity strings, exactly as the library's
functions take them (``registry.parse_recipient``, ``registry.parse_identity``; the forms are
listed there). This module only adds what a command line needs:

* errors as ``KeySpecError`` (an unknown form: a usage error) or ``KeyLoadError`` (a form that
  names something unreadable or unusable), with messages that never echo a pasted secret;
* secrets are refused: an X25519 identity string or a key file's line given as ``-r`` or
  ``-i`` (keys are never given on the command line; ``-i`` takes the identity *file*).

Passphrases are never given on the command line: the command prompts for them
(``shardseal.cli._prompt``).
"""

from __future__ import annotations

import os

from . import keyfile, registry as _registry
from .. import _redact
from .envelope import Identity, Recipient
from ..errors import KeyLoadError, KeySpecError, ShardsealError
from .registry import X25519_SECRET_PREFIX


def parse_recipient(text: str) -> Recipient:
    """The recipient a command-line string names (``registry.parse_recipient``).

    Raises:
        KeySpecError: an unknown form, or a secret given as a recipient.
        KeyLoadError: a known form that names something unusable.
    """
    if text.startswith(X25519_SECRET_PREFIX):
        raise KeySpecError("-r takes a recipient (public), not an X25519 identity (secret): "
                           "keep that one private")
    if not text.startswith(_registry.recipient_prefixes()):
        raise KeySpecError(f"unknown recipient {_shown(text)}: expected ssealx1..., "
                           "keyring:PATH[#NAME], pkcs11:token=...;object=... or aws-kms:KEY")
    try:
        return _registry.parse_recipient(text)
    except (ValueError, OSError, ShardsealError) as exc:
        reason = _reason(exc)
    # Raised here, not in the except block: the failure (an OSError's filename is the text)
    # must not stay attached as __context__.
    raise KeyLoadError(f"recipient {_shown(text)}: {reason}")


def load_identity(spec: str) -> Identity:
    """The identity a command-line string names (``registry.parse_identity``), secrets refused.

    Raises:
        KeyLoadError: a secret pasted where a path belongs, a file that cannot be read or is
            no identity file, or a bad reference.
    """
    if _looks_like_secret(spec):
        # A key pasted where a path belongs: never echo it back.
        raise KeyLoadError("-i takes the path of an identity file, not a key: "
                           "keys are never given on the command line")
    try:
        return _registry.parse_identity(spec)
    except OSError as exc:
        shown = _shown(spec) if _redact.looks_like_secret(spec) else spec
        message = f"cannot read identity {shown}: {exc.strerror or type(exc).__name__}"
    except (ValueError, ShardsealError) as exc:
        if isinstance(exc, (KeySpecError, KeyLoadError)):
            raise
        message = f"identity {_shown(spec)}: {_reason(exc)}"
    # Raised outside the except blocks: the failure (an OSError's filename is spec) must not
    # stay attached as __context__.
    raise KeyLoadError(message)


def _looks_like_secret(text: str) -> bool:
    stripped = text.strip()
    return stripped.startswith((keyfile.KEY_LINE_PREFIX, X25519_SECRET_PREFIX))


def _shown(text: str) -> str:
    """text for a message: hidden when it might be a secret, unless it names an existing file."""
    if _looks_like_secret(text):
        return "(hidden: looks like a secret)"
    if os.path.lexists(text):
        return repr(text)
    return _redact.shown_argument(text)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror  # str(exc) would repeat the file name, which may be a pasted key
    return str(exc) or type(exc).__name__
