"""The exceptions shardseal raises.

Every decryption failure is a :class:`ShardsealError`. Bad arguments (a key of the wrong
length, a read-only output buffer) raise the built-in ``TypeError`` or ``ValueError``.
Malformed key, keyring and identity files, and unusable command-line key specifications, raise
the ``*FileError`` / ``KeySpecError`` / ``KeyLoadError`` classes below: each is a
``ShardsealError`` and also a ``ValueError`` (what they were before they moved here; the old
names ``shardseal.keyfile.KeyFileError``, ``shardseal.keyring.KeyringFileError`` and
``shardseal.x25519.IdentityFileError`` still work).

No message, ``repr``, argument or chained exception (``__cause__``, ``__context__``) of any of
them holds key material, a passphrase, or a string that might be one: where a bad argument
could be a secret, messages show its type and length instead.
"""

from __future__ import annotations

__all__ = [
    "AuthenticationError",
    "FormatError",
    "HsmError",
    "IdentityFileError",
    "KeyFileError",
    "KeyLoadError",
    "KeyNotFoundError",
    "KeySpecError",
    "KeyringFileError",
    "KmsError",
    "ManifestChangedError",
    "Pkcs11LoginError",
    "ShardMismatchError",
    "ShardsealError",
    "TruncatedError",
    "WrongPassphraseError",
]


class ShardsealError(Exception):
    """Base class of every shardseal error."""


class AuthenticationError(ShardsealError):
    """The data did not authenticate: it was tampered with, or the key or context is wrong.

    The message never says which, so that failures give an attacker no oracle.
    """

    def __init__(self, message: str = "message authentication failed") -> None:
        super().__init__(message)


class TruncatedError(ShardsealError):
    """The message ends early: it lacks its final chunk or part of its header."""


class FormatError(ShardsealError, ValueError):
    """The input is not a shardseal container this version can read.

    Raised for a wrong magic, an unknown format version, suite or critical stanza type, and
    for header fields that break the format's length limits.
    """


class KeyNotFoundError(ShardsealError):
    """None of the given keys can open the container.

    Attributes:
        key_ids: the hex key ids of the stanzas the container holds.
    """

    def __init__(self, message: str, key_ids: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.key_ids = tuple(key_ids)


class WrongPassphraseError(KeyNotFoundError):
    """The passphrase does not open the container's passphrase stanza.

    A corrupted passphrase stanza is a ``FormatError`` instead (the stanza has a checksum), and
    a corrupted payload an ``AuthenticationError``, so the three can be told apart.
    """

    def __init__(self, message: str = "wrong passphrase") -> None:
        super().__init__(message, ("passphrase",))


class KmsError(ShardsealError):
    """A KMS refused to wrap or unwrap a key, or could not be reached.

    Raised for access denied, a disabled, missing or pending-deletion key, throttling, missing
    credentials and an unreachable endpoint. A wrapped key the KMS rejects as invalid (a
    tampered stanza, or one copied from another file) is an ``AuthenticationError`` instead.

    Attributes:
        code: the provider's error code, e.g. ``"AccessDeniedException"``,
            ``"DisabledException"``, ``"NotFoundException"``, ``"KMSInvalidStateException"``,
            or the client error's class name, e.g. ``"EndpointConnectionError"``.
        key_id: the key reference the request was for.
        provider: the provider's name, e.g. ``"aws-kms"``.
    """

    def __init__(self, message: str, *, code: str, key_id: str, provider: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.key_id = key_id
        self.provider = provider


class ShardMismatchError(AuthenticationError):
    """A shard file differs from what the manifest records for it (its size or SHA-256).

    The shard was replaced, swapped with another shard, rolled back to an older version or
    altered. Unlike a plain AuthenticationError the message names the shard: the manifest's
    sizes and digests give an attacker nothing to learn from it.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)


class ManifestChangedError(ShardsealError):
    """The manifest file changed on disk since this Dataset read or wrote it.

    Another writer updated it, or its keys were rotated; ``save`` refuses to overwrite that
    change. Open the dataset again and repeat the update.
    """


class HsmError(ShardsealError):
    """The PKCS#11 module failed or refused an operation (other than a login or an unwrap)."""


class Pkcs11LoginError(HsmError, PermissionError):
    """The token refused the login: a wrong, locked or expired PIN, or a PIN was needed.

    The message names the token and never contains the PIN.
    """


class KeyFileError(ShardsealError, ValueError):
    """The file is not a shardseal key file (or a raw 32-byte key).

    Also importable as ``shardseal.keyfile.KeyFileError``. Messages never quote the file's data.
    """


class IdentityFileError(KeyFileError):
    """The file is not an X25519 identity file (a ``KeyFileError``, so a ``ValueError``).

    Also importable as ``shardseal.x25519.IdentityFileError``.
    """


class KeyringFileError(ShardsealError, ValueError):
    """The file is not a valid shardseal keyring. Messages never quote key material.

    Also importable as ``shardseal.keyring.KeyringFileError``.
    """


class KeySpecError(ShardsealError, ValueError):
    """A recipient or identity on the command line in no known form (a usage error)."""


class KeyLoadError(ShardsealError, ValueError):
    """A recipient or identity that names something unreadable or unusable."""
