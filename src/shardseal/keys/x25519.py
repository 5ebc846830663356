"""X25519 recipients: public-key envelope encryption between pipeline parties (like age).

Whoever should read a file creates an *identity* (a secret X25519 key) and hands out its
*recipient* (the public key); anyone can encrypt for the recipient, only the identity decrypts::

    identity = X25519Identity.generate()
    write_identity_file("me.sseal-id", identity)          # secret: mode 0600
    print(identity.recipient)                             # ssealx1...: share this
    blob = shardseal.encrypt(data, recipients=["ssealx1..."])
    shardseal.decrypt(blob, identities=[read_identity_file("me.sseal-id")])

Wrapping (ephemeral-static Diffie-Hellman; docs/FORMAT.md gives the stanza's bytes):

* a fresh ephemeral key pair per stanza; ``shared = X25519(ephemeral_private, recipient)``;
  an all-zero ``shared`` (the recipient is a low-order point, RFC 7748 section 6.1) is refused;
* ``wrap_key = HKDF-SHA256(ikm=shared, salt=ephemeral_public || recipient_public,
  info="shardseal/v1/x25519", L=32)``;
* ``sealed = AES-256-GCM(wrap_key, nonce=12 zero bytes, file_key, aad="")``: the nonce can be
  fixed because every stanza has its own wrap key;
* the stanza body is ``recipient_id || ephemeral_public || sealed`` (16 + 32 + 48 bytes), with
  ``recipient_id = SHA-256("shardseal/v1/x25519-recipient-id" || recipient_public)[:16]``.

String forms carry a 4-byte SHA-256 checksum, so that a mistyped character is caught:

* recipient: ``ssealx1`` + lowercase RFC 4648 base32, unpadded, of
  ``public || SHA-256("shardseal/v1/x25519-recipient" || public)[:4]``;
* identity: ``SSEAL-X25519-SECRET-1`` + uppercase base32, unpadded, of
  ``private || SHA-256("shardseal/v1/x25519-identity" || private)[:4]``.

Readers accept only those cases and the canonical encoding (the two unused bits of the last
character are zero); docs/FORMAT.md section 10 specifies the strings and identity files.

Identities never pickle and never show their secret in ``repr``, messages or logs (only the
recipient id); ``to_string`` is the one explicit way out.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from datetime import datetime, timezone
from typing import Any, Optional, Union

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .. import _redact
from ..core.buffers import BytesLike
from . import _deprecated, stanzas as _stanzas
from .envelope import Identity, Recipient, WrapContext
from ._secretfile import read_secret_file, write_secret_file
from ..errors import AuthenticationError, IdentityFileError  # IdentityFileError: kept importable from here
from .keyfile import text_lines

__all__ = [
    "IDENTITY_PREFIX",
    "RECIPIENT_PREFIX",
    "IdentityFileError",
    "X25519Identity",
    "X25519Recipient",
    "format_identity_file",
    "parse_identity_file",
    "read_identity_file",
    "write_identity_file",
]

PathLike = Union[str, "os.PathLike[str]"]

RECIPIENT_PREFIX = "ssealx1"
IDENTITY_PREFIX = "SSEAL-X25519-SECRET-1"
KEY_SIZE = 32
STANZA_SIZE = _stanzas.KEY_ID_SIZE + KEY_SIZE + _stanzas.SEALED_KEY_SIZE

_WRAP_INFO = b"shardseal/v1/x25519"
_RECIPIENT_ID_LABEL = b"shardseal/v1/x25519-recipient-id"
_RECIPIENT_CHECKSUM_LABEL = b"shardseal/v1/x25519-recipient"
_IDENTITY_CHECKSUM_LABEL = b"shardseal/v1/x25519-identity"
_CHECKSUM_SIZE = 4
_ENCODED_SIZE = 58  # unpadded base32 of 32 + 4 bytes
_ZERO_NONCE = bytes(12)  # safe: each wrap key seals exactly one file key
# A private key as the primitives take it: bytes, or the bytearray an identity wipes.
_PrivateBytes = Union[bytes, bytearray, memoryview]
_FIELD_PRIME = 2**255 - 19
_BASE32_UPPER = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")
_BASE32_LOWER = frozenset("abcdefghijklmnopqrstuvwxyz234567")
_ASCII_BLANKS = " \t\r\n"
# An identity file is a few lines; anything larger is not one (and is not read whole).
MAX_IDENTITY_FILE_SIZE = 64 * 1024


class _ZeroSharedSecret(ValueError):
    """X25519 gave the all-zero shared secret: the public key is a low-order point."""


# -- the primitives -------------------------------------------------------------------------

def _shared_secret(private: _PrivateBytes, public: bytes) -> bytes:
    """X25519(private, public), refusing the all-zero result (RFC 7748 section 6.1).

    Non-canonical public encodings are accepted and reduced as RFC 7748 section 5 says; the
    Wycheproof tests pin this function's behaviour on every edge case.

    Raises:
        ValueError: a key that is not 32 bytes; ``_ZeroSharedSecret`` (a ValueError) when
            public is a low-order point, which makes the result all zeros for every private key.
    """
    private_key = X25519PrivateKey.from_private_bytes(private)
    public_key = X25519PublicKey.from_public_bytes(bytes(public))
    try:
        shared = private_key.exchange(public_key)
    except ValueError:
        # OpenSSL refuses an all-zero result itself; report it like the check below.
        raise _ZeroSharedSecret("X25519 gave an all-zero shared secret (a low-order public key)") from None
    if hmac.compare_digest(shared, bytes(KEY_SIZE)):
        raise _ZeroSharedSecret("X25519 gave an all-zero shared secret (a low-order public key)")
    return shared


def _public_key(private: _PrivateBytes) -> bytes:
    return X25519PrivateKey.from_private_bytes(private).public_key().public_bytes_raw()


def _recipient_id(public: bytes) -> bytes:
    return hashlib.sha256(_RECIPIENT_ID_LABEL + public).digest()[:_stanzas.KEY_ID_SIZE]


def _wrap_key(shared: bytes, ephemeral_public: bytes, recipient_public: bytes) -> bytes:
    # Both public keys in the salt bind the wrap key to this exact exchange, as age does.
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=ephemeral_public + recipient_public,
                info=_WRAP_INFO)
    return hkdf.derive(shared)


def _seal_to(recipient_public: bytes, file_key: bytes, ephemeral_private: _PrivateBytes) -> bytes:
    """The x25519 stanza body carrying file_key for recipient_public, made with the given
    ephemeral private key (deterministic: the test vectors use it; ``wrap`` passes a fresh one).

    Raises:
        ValueError: file_key is not 32 bytes, a key is not 32 bytes, or recipient_public is a
            low-order point (the shared secret would be all zeros, and the file key public).
    """
    if len(file_key) != _stanzas.FILE_KEY_SIZE:
        raise ValueError(f"the file key must be {_stanzas.FILE_KEY_SIZE} bytes, got {len(file_key)}")
    recipient_public = bytes(recipient_public)
    ephemeral_public = _public_key(ephemeral_private)
    try:
        shared = _shared_secret(ephemeral_private, recipient_public)
    except _ZeroSharedSecret:
        raise ValueError(f"X25519 recipient {_recipient_id(recipient_public).hex()} is a low-order "
                         "point: nothing can be encrypted for it (anyone could open the file)") from None
    wrap_key = _wrap_key(shared, ephemeral_public, recipient_public)
    sealed = AESGCM(wrap_key).encrypt(_ZERO_NONCE, bytes(file_key), b"")
    return _stanzas.x25519_body(_recipient_id(recipient_public), ephemeral_public, sealed)


def _open_sealed(private: _PrivateBytes, public: bytes, ephemeral_public: bytes, sealed: bytes) -> bytes:
    """The file key of a stanza addressed to the key pair (private, public).

    Raises:
        AuthenticationError: the ephemeral key is a low-order point or the sealed key does not
            authenticate (a damaged or forged stanza).
    """
    try:
        shared = _shared_secret(private, ephemeral_public)
    except _ZeroSharedSecret:
        # Only a forged stanza carries a low-order ephemeral key: it must not open.
        raise AuthenticationError("the X25519 key stanza does not authenticate") from None
    try:
        return AESGCM(_wrap_key(shared, ephemeral_public, public)).decrypt(_ZERO_NONCE, sealed, b"")
    except InvalidTag:
        raise AuthenticationError("the X25519 key stanza does not authenticate") from None


# -- string forms ---------------------------------------------------------------------------

def _checksum(label: bytes, key: BytesLike) -> bytes:
    return hashlib.sha256(label + bytes(key)).digest()[:_CHECKSUM_SIZE]


def _base32(data: BytesLike) -> str:
    return base64.b32encode(bytes(data)).decode("ascii").rstrip("=")


def _decode_key_string(text: object, prefix: str, lowercase: bool, label: bytes, what: str) -> bytes:
    """The 32 key bytes of a recipient or identity string. Messages never quote the text.

    Raises:
        TypeError: text is not a str.
        ValueError: a wrong prefix, characters outside the alphabet, a wrong length, a
            non-canonical encoding or a checksum mismatch.
    """
    if not isinstance(text, str):
        raise TypeError(f"an X25519 {what} string must be a str, not {type(text).__name__}")
    # Copy and paste often brings a newline along; only ASCII blanks are ignored (FORMAT.md 10).
    text = text.strip(_ASCII_BLANKS)
    if not text.startswith(prefix):
        raise ValueError(f"not an X25519 {what} string: it must start with {prefix!r}")
    encoded = text[len(prefix):]
    alphabet, case = (_BASE32_LOWER, "lowercase") if lowercase else (_BASE32_UPPER, "uppercase")
    if not set(encoded) <= alphabet:
        raise ValueError(f"the X25519 {what} string is not valid: after {prefix!r} it must hold only "
                         f"{case} base32 characters (letters and the digits 2-7)")
    if len(encoded) != _ENCODED_SIZE:
        raise ValueError(f"the X25519 {what} string has the wrong length: {len(text)} characters, "
                         f"expected {len(prefix) + _ENCODED_SIZE} (was it cut or joined?)")
    raw = base64.b32decode(encoded.upper() + "=" * 6)
    # 58 characters hold 290 bits for 288: unused bits that are set mean a mistyped last character.
    if _base32(raw) != encoded.upper():
        raise ValueError(f"the X25519 {what} string is not valid: its last character is not "
                         "a canonical base32 ending (mistyped?)")
    key, checksum = raw[:KEY_SIZE], raw[KEY_SIZE:]
    if not hmac.compare_digest(checksum, _checksum(label, key)):
        raise ValueError(f"the X25519 {what} string is not valid: its checksum does not match "
                         "(a character was mistyped or changed)")
    return key


def _check_key_bytes(value: Any, what: str) -> memoryview:
    if isinstance(value, str):
        raise TypeError(f"an X25519 {what} key must be bytes; parse strings with from_string()")
    try:
        view = memoryview(value)
    except TypeError:
        raise TypeError(f"an X25519 {what} key must be bytes-like, not {type(value).__name__}") from None
    if view.nbytes != KEY_SIZE:
        raise ValueError(f"an X25519 {what} key must be {KEY_SIZE} bytes, got {view.nbytes}")
    return view.cast("B")


# -- recipients and identities ----------------------------------------------------------------

class X25519Recipient(Recipient):
    """An X25519 public key that file keys are wrapped for.

    Its string form (``str(recipient)``) is public and safe to print, share and commit.

    Args:
        public_bytes: the 32-byte public key, in canonical form (less than 2^255 - 19).

    Raises:
        TypeError: public_bytes is not bytes-like (use ``from_string`` for strings).
        ValueError: not 32 bytes, or a non-canonical encoding (no identity has such a key).
    """

    stanza_type = _stanzas.X25519

    def __init__(self, public_bytes: BytesLike) -> None:
        public = bytes(_check_key_bytes(public_bytes, "public"))
        if int.from_bytes(public, "little") >= _FIELD_PRIME:
            raise ValueError("not a canonical X25519 public key (its value is not below 2^255 - 19)")
        self._public = public
        self._id = _recipient_id(public)

    @classmethod
    def from_string(cls, text: str) -> X25519Recipient:
        """Parses a recipient string (``ssealx1...``); surrounding whitespace is ignored.

        Raises:
            TypeError: text is not a str.
            ValueError: not a valid recipient string (the message says why, without quoting it).
        """
        if isinstance(text, str) and text.strip(_ASCII_BLANKS).upper().startswith(IDENTITY_PREFIX):
            raise ValueError("this is an X25519 identity, a secret key, not a recipient: give its "
                             f"recipient string ({RECIPIENT_PREFIX}...) and keep the identity private")
        public = _decode_key_string(text, RECIPIENT_PREFIX, True, _RECIPIENT_CHECKSUM_LABEL, "recipient")
        return cls(public)

    def to_string(self) -> str:
        """The recipient string: ``ssealx1`` and 58 lowercase base32 characters."""
        checksum = _checksum(_RECIPIENT_CHECKSUM_LABEL, self._public)
        return RECIPIENT_PREFIX + _base32(self._public + checksum).lower()

    @property
    def public_bytes(self) -> bytes:
        """The 32-byte public key."""
        return self._public

    @property
    def key_id(self) -> str:
        """The recipient id (hex): what stanzas name and ``shardseal inspect`` shows."""
        return self._id.hex()

    def wrap(self, file_key: bytes, context: WrapContext) -> bytes:
        """A stanza body carrying file_key, under a fresh ephemeral key.

        Raises:
            ValueError: this recipient is a low-order point, or file_key is not 32 bytes.
        """
        ephemeral_private = bytearray(os.urandom(KEY_SIZE))
        try:
            return _seal_to(self._public, file_key, ephemeral_private)
        finally:
            ephemeral_private[:] = bytes(KEY_SIZE)

    def stanza_size(self) -> int:
        """The stanza body size: 96 bytes (recipient id, ephemeral key, sealed file key)."""
        return STANZA_SIZE

    def __str__(self) -> str:
        return self.to_string()

    def __repr__(self) -> str:
        return f"X25519Recipient.from_string({self.to_string()!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, X25519Recipient):
            return NotImplemented
        return self._public == other._public

    def __hash__(self) -> int:
        return hash(self._public)


class X25519Identity(Identity):
    """An X25519 secret key: opens the x25519 stanzas addressed to its recipient.

    The secret is held in a bytearray that ``wipe`` zeroes; the cryptography key objects built
    from it live only for the duration of one exchange. Not picklable; ``repr`` and ``str``
    show the recipient id only.

    Args:
        private_bytes: the 32-byte private key (any 32 bytes are a valid X25519 key).

    Raises:
        TypeError: private_bytes is not bytes-like (use ``from_string`` for strings).
        ValueError: not 32 bytes.
    """

    stanza_type = _stanzas.X25519

    def __init__(self, private_bytes: BytesLike) -> None:
        self._private = bytearray(_check_key_bytes(private_bytes, "private"))
        self._recipient = X25519Recipient(_public_key(self._private))
        self._wiped = False

    @classmethod
    def generate(cls) -> X25519Identity:
        """A new random identity from the operating system's CSPRNG."""
        secret = bytearray(os.urandom(KEY_SIZE))
        try:
            return cls(secret)
        finally:
            secret[:] = bytes(KEY_SIZE)

    @classmethod
    def from_string(cls, text: str) -> X25519Identity:
        """Parses an identity string (``SSEAL-X25519-SECRET-1...``); surrounding whitespace is
        ignored.

        Raises:
            TypeError: text is not a str.
            ValueError: not a valid identity string (the message never quotes it).
        """
        return cls(_decode_key_string(text, IDENTITY_PREFIX, False, _IDENTITY_CHECKSUM_LABEL, "identity"))

    def to_string(self) -> str:
        """The identity string: the secret key. Store it as a secret (``write_identity_file``).

        Raises:
            ValueError: the identity was wiped.
        """
        self._require_key()
        return IDENTITY_PREFIX + _base32(self._private + _checksum(_IDENTITY_CHECKSUM_LABEL, self._private))

    @property
    def recipient(self) -> X25519Recipient:
        """The public recipient that files for this identity are encrypted to."""
        return self._recipient

    @property
    def key_id(self) -> str:
        """The recipient id (hex), as ``X25519Recipient.key_id``."""
        return self._recipient.key_id

    @property
    def key_ids(self) -> tuple[str, ...]:
        return (self._recipient.key_id,)

    def unwrap(self, body: bytes, context: WrapContext) -> Optional[bytes]:
        """The file key in an x25519 stanza body, or None when it names another recipient.

        Raises:
            FormatError: the body is not 96 bytes.
            AuthenticationError: the stanza names this identity but does not open.
            ValueError: the identity was wiped.
        """
        recipient_id, ephemeral_public, sealed = _stanzas.parse_x25519(body)
        if recipient_id != self._recipient._id:
            return None
        self._require_key()
        return _open_sealed(self._private, self._recipient.public_bytes, ephemeral_public, sealed)

    def wipe(self) -> None:
        """Zeroes the secret key held by this object; it can no longer unwrap or be exported.

        Copies made elsewhere (an identity string, a file) are not affected.
        """
        self._private[:] = bytes(KEY_SIZE)
        self._wiped = True

    def _require_key(self) -> None:
        if self._wiped:
            raise ValueError(f"X25519 identity {self.key_id} was wiped")

    def __repr__(self) -> str:
        state = ", wiped" if self._wiped else ""
        return f"X25519Identity(key_id={self.key_id}{state})"


# -- identity files -------------------------------------------------------------------------

def format_identity_file(identity: X25519Identity, created: Optional[datetime] = None) -> str:
    """The text of an identity file: two comment lines (creation time, recipient) and the
    identity string.

    Raises:
        TypeError: identity is not an X25519Identity.
        ValueError: the identity was wiped.
    """
    if not isinstance(identity, X25519Identity):
        raise TypeError(f"identity must be an X25519Identity, not {type(identity).__name__}")
    created = created or datetime.now(timezone.utc)
    stamp = created.astimezone(timezone.utc).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")
    return (
        f"# shardseal X25519 identity, created {stamp}\n"
        f"# recipient: {identity.recipient}\n"
        f"{identity.to_string()}\n"
    )


def parse_identity_file(data: bytes, name: str = "identity file") -> X25519Identity:
    """The identity in an identity file's contents.

    Lines end with LF or CRLF; lines starting with ``#`` and blank lines are ignored, as are
    spaces and tabs around a line; exactly one line must be an identity string
    (docs/FORMAT.md section 10).

    Args:
        data: the file's bytes.
        name: how messages name the file (its path).

    Raises:
        IdentityFileError: data is not an identity file. The message never quotes the data.
    """
    text = _redact.utf8_text(data)  # no UnicodeDecodeError (holding the file) as __context__
    if text is None:
        raise IdentityFileError(f"{name}: not an X25519 identity file (not UTF-8 text)")
    secrets = [line for line in text_lines(text) if line and not line.startswith("#")]
    for line in secrets:
        if not line.startswith(IDENTITY_PREFIX):
            raise IdentityFileError(f"{name}: not an X25519 identity file (a line is neither a "
                                    f"comment nor '{IDENTITY_PREFIX}...')")
    if len(secrets) != 1:
        found = "no identity line" if not secrets else f"{len(secrets)} identities"
        raise IdentityFileError(f"{name}: not an X25519 identity file ({found}; an identity file "
                                "holds exactly one)")
    try:
        return X25519Identity.from_string(secrets[0])
    except ValueError as exc:
        # The parser's messages describe the problem without quoting the secret.
        raise IdentityFileError(f"{name}: {exc}") from None


def read_identity_file(path: PathLike) -> X25519Identity:
    """Reads an identity file.

    A regular file that group or others may access raises a
    ``keyfile.KeyFilePermissionWarning`` (a warning, not an error) naming the ``chmod`` that
    fixes it. Pipes work too (``<(secret-tool lookup ...)``).

    Raises:
        OSError: the file cannot be opened or read.
        IdentityFileError: it is not an identity file.
    """
    name = os.fspath(path)
    data = read_secret_file(
        name, what="identity file", limit=MAX_IDENTITY_FILE_SIZE, stacklevel=2,
        too_large=lambda: IdentityFileError(f"{name}: not an X25519 identity file (larger than "
                                            f"{MAX_IDENTITY_FILE_SIZE} bytes)"),
    )
    return parse_identity_file(data, name)


def write_identity_file(path: PathLike, identity: X25519Identity, *, force: bool = False,
                        overwrite: Optional[bool] = None) -> None:
    """Writes identity to a new identity file with mode 0600 (narrowed further by the umask).

    The text goes to a temporary file beside path, created with O_EXCL and mode 0600 (never
    readable by others, not even while written) and fsynced, which then appears under path in
    one step: readers see no file, or the old one, or the whole new one. An existing path is
    an error unless force is true (``overwrite=`` is the old, deprecated spelling).

    Raises:
        FileExistsError: path exists and force is false.
        OSError: the file cannot be written.
        TypeError: identity is not an X25519Identity.
        ValueError: the identity was wiped.
    """
    force = _deprecated.force_flag(force, overwrite, "write_identity_file")
    write_secret_file(path, format_identity_file(identity).encode("ascii"), force=force)
