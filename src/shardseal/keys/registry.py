"""Recipient and identity strings: the one parser, used by the library and the command line.

Recipient strings (public by nature):

* ``ssealx1...``: an X25519 recipient (``X25519Recipient``);
* ``keyring:PATH`` or ``keyring:PATH#NAME``: a keyring's newest active KEK, or the named one
  (``KeyringRecipient``);
* ``pkcs11:token=...;object=...``: an AES key in a PKCS#11 token, RFC 7512 URI; module and PIN
  from ``$SHARDSEAL_PKCS11_MODULE`` and ``$SHARDSEAL_PKCS11_PIN`` (``Pkcs11Recipient``);
* ``aws-kms:KEY`` (a key id, ARN or alias): an AWS KMS key (``KmsRecipient``).

Identity strings:

* ``SSEAL-X25519-SECRET-1...``: an X25519 secret key (``X25519Identity``; a secret: keep it
  out of command lines and logs; the command line refuses it);
* ``keyring:PATH``: a keyring file (``KeyringIdentity``);
* ``pkcs11:token=...;object=...`` as above (``Pkcs11Identity``);
* ``aws-kms`` (any AWS KMS key) or ``aws-kms:KEY`` (``KmsIdentity``);
* anything else is the path of an identity file: a key file (``shardseal-key-1:...``), a
  keyring file or an X25519 identity file, told apart by their contents.

How types are registered: this module holds a table from each string prefix to the
``"module:Class"`` that parses it, and imports that module only when a string with its prefix
is parsed, so ``import shardseal`` (which every DataLoader worker does) loads no key type it
does not use. Every type in the table has ``from_string`` (a classmethod) and ``to_string``;
``from_string(x.to_string())`` gives an equal key. A key type outside this package adds its
prefix with ``register_recipient_type`` / ``register_identity_type``.

Passphrases have no string form on purpose: a passphrase is a secret with no public part, and
it is given as ``Passphrase(...)`` (the command line prompts for it).

``IdentityRef`` is an identity *reference*: an identity string that names where the identity
is (a file, a token, a KMS), loaded in the process that decrypts, so that it can be pickled
(DataLoader workers, dask) and serialised (``SealFileSystem.to_json``).
"""

from __future__ import annotations

import importlib
import os
from typing import Any, Iterable, Optional, Union

from .. import _redact
from . import keyfile as _keyfile, stanzas as _stanzas
from .envelope import DirectKey, Identity, Recipient, check_identities as _check_identities
from .direct import RawKeyLike

__all__ = ["Identities", "IdentityLike", "IdentityRef", "Recipients", "check_identities", "check_recipients",
           "identity_prefixes", "load_identity_file", "parse_identity", "parse_recipient",
           "recipient_prefixes", "register_identity_type", "register_recipient_type",
           "resolve_identities"]

X25519_RECIPIENT_PREFIX = "ssealx1"
X25519_SECRET_PREFIX = "SSEAL-X25519-SECRET-1"
KEYRING_FORMAT = "shardseal-keyring-1"
MAX_IDENTITY_FILE_SIZE = 1 << 20

# prefix -> "module:Class" whose from_string parses the whole string (prefix included).
_RECIPIENT_TYPES: dict[str, str] = {
    X25519_RECIPIENT_PREFIX: "shardseal.keys.x25519:X25519Recipient",
    "keyring:": "shardseal.keys.keyring:KeyringRecipient",
    "pkcs11:": "shardseal.keys.pkcs11:Pkcs11Recipient",
    "aws-kms:": "shardseal.keys.kms:KmsRecipient",
}
_IDENTITY_TYPES: dict[str, str] = {
    X25519_SECRET_PREFIX: "shardseal.keys.x25519:X25519Identity",
    "keyring:": "shardseal.keys.keyring:KeyringIdentity",
    "pkcs11:": "shardseal.keys.pkcs11:Pkcs11Identity",
    "aws-kms:": "shardseal.keys.kms:KmsIdentity",
}
# Identity strings that are a whole word, not a prefix ("aws-kms": any AWS KMS key).
_IDENTITY_WORDS: dict[str, str] = {"aws-kms": "shardseal.keys.kms:KmsIdentity"}

# The recipients argument of the encrypting functions: Recipient objects or recipient strings
# (see parse_recipient), one or several.
Recipients = Union[Recipient, str, Iterable[Union[Recipient, str]]]


def register_recipient_type(prefix: str, target: str) -> None:
    """Makes ``parse_recipient`` hand strings that start with prefix to ``target``.

    Args:
        prefix: the string prefix, such as ``"vault:"``.
        target: ``"module:Class"``; the module is imported on first use and the class's
            ``from_string(text)`` gets the whole string.

    Raises:
        ValueError: the prefix is empty or already registered, or target has no ``:``.
    """
    _register(_RECIPIENT_TYPES, prefix, target)


def register_identity_type(prefix: str, target: str) -> None:
    """As ``register_recipient_type``, for ``parse_identity``.

    Raises:
        ValueError: the prefix is empty or already registered, or target has no ``:``.
    """
    _register(_IDENTITY_TYPES, prefix, target)


def _register(table: dict[str, str], prefix: str, target: str) -> None:
    if not isinstance(prefix, str) or not prefix or prefix in table:
        raise ValueError(f"cannot register the prefix {prefix!r}: empty or already registered")
    if not isinstance(target, str) or ":" not in target:
        raise ValueError("target must be 'module:Class'")
    table[prefix] = target


def recipient_prefixes() -> tuple[str, ...]:
    """The registered recipient string prefixes."""
    return tuple(_RECIPIENT_TYPES)


def identity_prefixes() -> tuple[str, ...]:
    """The registered identity string prefixes and whole-word names (any other string is an
    identity file path)."""
    return tuple(_IDENTITY_TYPES) + tuple(_IDENTITY_WORDS)


def _type_for(table: dict[str, str], text: str, words: Optional[dict[str, str]] = None) -> Any:
    if words and text in words:
        target = words[text]
    else:
        matches = [prefix for prefix in table if text.startswith(prefix)]
        if not matches:
            return None
        target = table[max(matches, key=len)]
    module_name, _, class_name = target.partition(":")
    return getattr(importlib.import_module(module_name), class_name)


def parse_recipient(text: str) -> Recipient:
    """The recipient a recipient string names (see the module documentation).

    Raises:
        TypeError: text is not a str.
        ValueError: no registered form, an X25519 identity (a secret) given as a recipient, or
            a malformed string of a known form (messages never quote a secret).
        OSError: a keyring file that cannot be read.
        ShardsealError: what the key type raises (a damaged keyring file, ...).
    """
    if not isinstance(text, str):
        raise TypeError(f"a recipient string must be a str, not {type(text).__name__}")
    if text.strip().upper().startswith(X25519_SECRET_PREFIX):
        raise ValueError("this is an X25519 identity, a secret key, not a recipient: give its "
                         f"recipient string ({X25519_RECIPIENT_PREFIX}...) and keep the identity private")
    kind = _type_for(_RECIPIENT_TYPES, text)
    if kind is None:
        # X25519Recipient.from_string says what is wrong with a near miss (a typo, a checksum).
        kind = _type_for(_RECIPIENT_TYPES, X25519_RECIPIENT_PREFIX)
    recipient: Recipient = kind.from_string(text)
    return recipient


def parse_identity(text: str) -> Identity:
    """The identity an identity string names (see the module documentation); a string of no
    registered form is the path of an identity file (``load_identity_file``).

    Raises:
        TypeError: text is not a str.
        ValueError: a malformed string of a known form, or a file that is no identity file
            (``KeyFileError``, ``KeyringFileError``, ``IdentityFileError``).
        OSError: an identity file that cannot be read.
        ShardsealError: what the key type raises.
    """
    if not isinstance(text, str):
        raise TypeError(f"an identity string must be a str, not {type(text).__name__}")
    kind = _type_for(_IDENTITY_TYPES, text.strip() if text.strip().startswith(X25519_SECRET_PREFIX) else text,
                     _IDENTITY_WORDS)
    if kind is None:
        return load_identity_file(text)
    identity: Identity = kind.from_string(text)
    return identity


def load_identity_file(path: Union[str, "os.PathLike[str]"]) -> Identity:
    """The identity in a file: a key file (a ``DirectKey``), a keyring file or an X25519
    identity file, told apart by their contents.

    Raises:
        OSError: the file cannot be read (a missing path that might be a key is not named).
        KeyFileError, KeyringFileError, IdentityFileError: it is none of these files.
        ValueError: path is a key file's text.
    """
    name = os.fspath(path)
    if name.strip().startswith(_keyfile.KEY_LINE_PREFIX):
        raise ValueError("this is a key file's line, a key: pass the key as key= (or the key "
                         "file's path as an identity), never its text as an identity")
    _redact.refuse_missing_secret_path(name)  # a pasted key is not named in the error
    with open(name, "rb") as f:
        head = f.read(MAX_IDENTITY_FILE_SIZE + 1)
    if head.lstrip().startswith(b"{") and KEYRING_FORMAT.encode() in head:
        from . import keyring
        return keyring.Keyring.load(path)
    if X25519_SECRET_PREFIX.encode() in head:
        from . import x25519
        return x25519.read_identity_file(path)
    return DirectKey(_keyfile.read_key_file(path))


def check_recipients(recipients: Recipients) -> tuple[Recipient, ...]:
    """Validates a recipients argument: a non-empty sequence of Recipient objects (or
    recipient strings, see ``parse_recipient``).

    Raises:
        TypeError: not a sequence of recipients.
        ValueError: empty, too many, or a passphrase beside other recipients.
    """
    if isinstance(recipients, (str, bytes, Recipient)):
        recipients = [recipients]
    try:
        items = tuple(recipients)
    except TypeError:
        raise TypeError(f"recipients must be a list of recipients, not {type(recipients).__name__}") from None
    result = tuple(parse_recipient(r) if isinstance(r, str) else r for r in items)
    for recipient in result:
        if not isinstance(recipient, Recipient):
            raise TypeError(f"recipients must be Recipient objects or recipient strings, "
                            f"not {type(recipient).__name__}")
    if not 1 <= len(result) <= _stanzas.MAX_STANZAS:
        raise ValueError(f"give 1 to {_stanzas.MAX_STANZAS} recipients, got {len(result)}")
    if len(result) > 1 and any(r.stanza_type == _stanzas.PASSPHRASE for r in result):
        raise ValueError("a passphrase must be the only recipient of a file")
    return result


class IdentityRef:
    """An identity named by its string, loaded (``load()``) in the process that decrypts.

    It holds no secret: an identity file's path (made absolute), ``keyring:PATH``,
    ``pkcs11:...`` (module and PIN from the loading process's environment) or ``aws-kms[:KEY]``.
    It pickles as its string, so it crosses process boundaries; an X25519 secret string is
    refused (it *is* the secret: load it with ``X25519Identity.from_string``).

    Args:
        text: an identity string (see ``parse_identity``) or a path.

    Raises:
        TypeError: text is not a str or path.
        ValueError: text is a secret (an X25519 identity string or a key file's line).
        FileNotFoundError: text names no file and looks like a pasted key (not shown).
    """

    __slots__ = ("text",)

    def __init__(self, text: Union[str, "os.PathLike[str]"]) -> None:
        if not isinstance(text, (str, os.PathLike)):
            raise TypeError(f"an identity reference takes an identity string or path, not {type(text).__name__}")
        text = os.fspath(text)
        if text.strip().startswith((X25519_SECRET_PREFIX, _keyfile.KEY_LINE_PREFIX)):
            raise ValueError("an identity reference names where an identity is; this string is "
                             "the secret itself (load it with X25519Identity.from_string)")
        # A key pasted where a path belongs would be in this reference's repr, its pickle and
        # to_json: refused now (a key-shaped path that names no file), without showing it.
        if text.startswith("keyring:"):
            _redact.refuse_missing_secret_path(text[len("keyring:"):])
            text = "keyring:" + os.path.abspath(text[len("keyring:"):])
        elif not text.startswith(tuple(_IDENTITY_TYPES)) and text not in _IDENTITY_WORDS:
            _redact.refuse_missing_secret_path(text)
            text = os.path.abspath(text)  # a worker with another working directory finds it
        self.text = text

    @classmethod
    def from_string(cls, text: str) -> "IdentityRef":
        """The reference for an identity string (as the constructor)."""
        return cls(text)

    def to_string(self) -> str:
        """The identity string (no secret: a path, a URI or a KMS key name)."""
        return self.text

    def load(self) -> Identity:
        """Loads the identity now, in this process (``parse_identity``).

        Raises:
            OSError: an identity file that cannot be read.
            ValueError: a malformed identity string or a file that is no identity file.
        """
        return parse_identity(self.text)

    def __repr__(self) -> str:
        return f"IdentityRef({self.text!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, IdentityRef) and other.text == self.text

    def __hash__(self) -> int:
        return hash((IdentityRef, self.text))

    def __reduce__(self) -> Any:
        return (IdentityRef, (self.text,))


# What identities= takes: identities, identity strings, identity references; one or several.
IdentityLike = Union[Identity, IdentityRef, str]
Identities = Union[IdentityLike, Iterable[IdentityLike]]


def resolve_identities(identities: Any) -> Any:
    """identities with each identity string parsed and each ``IdentityRef`` loaded, now, in
    this process; None and anything else are returned as they are (checked where used).

    Raises:
        OSError: an identity file that cannot be read.
        ValueError: a malformed identity string or a file that is no identity file.
    """
    if identities is None:
        return None
    if isinstance(identities, (str, IdentityRef, Identity)):
        identities = [identities]
    try:
        items = list(identities)
    except TypeError:
        return identities
    return [parse_identity(i) if isinstance(i, str) else i.load() if isinstance(i, IdentityRef) else i
            for i in items]


def check_identities(key: Union[RawKeyLike, DirectKey, None] = None,
                     identities: Optional[Identities] = None
                     ) -> tuple[Identity, ...]:
    """``envelope.check_identities`` for an identities argument that may hold identity strings
    and references (``resolve_identities``).

    Raises:
        TypeError: neither given, or an identity that is not an Identity, a str or a reference.
        ValueError, OSError: an identity string or reference that does not load.
    """
    return _check_identities(key, resolve_identities(identities))

