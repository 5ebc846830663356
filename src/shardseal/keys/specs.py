"""How recipients and identities are named by strings: the command line, key references.

Recipients (``-r``, ``--add``), public by nature:

* ``ssealx1...``: an X25519 recipient string (``shardseal keygen --x25519`` prints it);
* ``keyring:PATH`` or ``keyring:PATH#NAME``: a keyring's newest active KEK, or the named one;
* ``pkcs11:token=...;object=...``: an AES key in a PKCS#11 token (RFC 7512 URI; the module
  and PIN come from ``$SHARDSEAL_PKCS11_MODULE`` and ``$SHARDSEAL_PKCS11_PIN``);
* ``aws-kms:KEY`` (a key id, ARN or alias): an AWS KMS key (credentials, region and endpoint
  from the usual AWS settings).

Identities (``-i``): the path of a key file, a keyring file or an X25519 identity file (told
apart by their contents), or ``pkcs11:...`` / ``aws-kms`` / ``aws-kms:KEY`` as above.

Passphrases are never given on the command line: the command prompts for them
(``shardseal.cli._prompt``).
"""

from __future__ import annotations

import os

from . import keyfile, registry as _registry
from .. import _redact
from .envelope import DirectKey, Identity, Recipient
from ..errors import KeyLoadError, KeySpecError, ShardsealError

X25519_RECIPIENT_PREFIX = "ssealx1"
X25519_SECRET_PREFIX = "SSEAL-X25519-SECRET-1"
KEYRING_FORMAT = "shardseal-keyring-1"
MAX_IDENTITY_FILE_SIZE = 1 << 20


def parse_recipient(text: str) -> Recipient:
    """The recipient a command-line string names (see the module documentation).

    Raises:
        KeySpecError: an unknown form, or one that names something unusable.
    """
    if text.startswith(X25519_SECRET_PREFIX):
        raise KeySpecError("-r takes a recipient (public), not an X25519 identity (secret): "
                           "keep that one private")
    if not text.startswith((X25519_RECIPIENT_PREFIX, "keyring:", "pkcs11:", "aws-kms:")):
        raise KeySpecError(f"unknown recipient {_shown(text)}: expected ssealx1..., "
                           "keyring:PATH[#NAME], pkcs11:token=...;object=... or aws-kms:KEY")
    try:
        if text.startswith("keyring:"):
            path, _, name = text[len("keyring:"):].partition("#")
            return _load_keyring(path).recipient(name or None)
        # The forms the library itself takes as recipient strings.
        return _registry.parse_recipient(text)
    except (ValueError, OSError, ShardsealError) as exc:
        reason = _reason(exc)
    # Raised here, not in the except block: the failure (an OSError's filename is the text)
    # must not stay attached as __context__.
    raise KeyLoadError(f"recipient {_shown(text)}: {reason}")


def load_identity(spec: str) -> Identity:
    """The identity a command-line string names: a file path, or a PKCS#11 / KMS reference.

    Raises:
        KeySpecError: a file that cannot be read or is no identity file, or a bad reference.
    """
    try:
        if spec.startswith("pkcs11:"):
            from . import pkcs11
            return pkcs11.Pkcs11Key.from_uri(spec)
        if spec == "aws-kms" or spec.startswith("aws-kms:"):
            from . import kms
            return kms.parse_identity(spec)
        return _load_identity_file(spec)
    except OSError as exc:
        shown = _shown(spec) if _looks_like_secret(spec) or _redact.looks_like_secret(spec) else spec
        message = f"cannot read identity {shown}: {exc.strerror or type(exc).__name__}"
    except (ValueError, ShardsealError) as exc:
        if isinstance(exc, (KeySpecError, KeyLoadError)):
            raise
        message = f"identity {_shown(spec)}: {_reason(exc)}"
    # Raised outside the except blocks: the failure (an OSError's filename is spec) must not
    # stay attached as __context__.
    raise KeyLoadError(message)


def _load_identity_file(path: str) -> Identity:
    if _looks_like_secret(path):
        # A key pasted where a path belongs: never echo it back.
        raise KeyLoadError("-i takes the path of an identity file, not a key: "
                           "keys are never given on the command line")
    with open(path, "rb") as f:
        head = f.read(MAX_IDENTITY_FILE_SIZE + 1)
    if head.lstrip().startswith(b"{") and KEYRING_FORMAT.encode() in head:
        return _load_keyring(path)
    if X25519_SECRET_PREFIX.encode() in head:
        from . import x25519
        return x25519.read_identity_file(path)
    return DirectKey(keyfile.read_key_file(path))


def _load_keyring(path: str):
    from . import keyring
    return keyring.Keyring.load(path)


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
