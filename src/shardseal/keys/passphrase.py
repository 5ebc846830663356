"""Passphrase encryption: a file that opens with a passphrase (scrypt), like age's.

    blob = shardseal.encrypt(data, recipients=[Passphrase("correct horse battery staple")])
    shardseal.decrypt(blob, identities=[Passphrase("correct horse battery staple")])

Wrapping (docs/FORMAT.md section 2.8 gives the stanza's bytes):

* ``W = scrypt(P, salt = "shardseal/v1/passphrase" || S, N = 2**work_factor, r = 8, p = 1,
  dkLen = 32)`` with ``S`` 16 random bytes per stanza, and ``P`` the passphrase: text is
  NFC-normalised and UTF-8 encoded (so that the same passphrase typed on two systems that
  compose accents differently gives the same bytes); bytes are used as they are;
* ``sealed = AES-256-GCM(W, nonce = 12 zero bytes, file_key, aad = "")``: the nonce can be
  fixed because every stanza has its own salt, hence its own ``W``;
* the stanza holds ``S``, ``log2(N)``, ``r``, ``p``, ``sealed`` and a checksum.

Reading uses the stanza's own scrypt parameters, not the object's ``work_factor``. The errors
tell three failures apart: a corrupted stanza (its checksum does not match) is a
``FormatError``, found before any scrypt work; a wrong passphrase is a
``WrongPassphraseError`` (a ``KeyNotFoundError``); a corrupted payload after a good passphrase
is an ``AuthenticationError``.

A passphrase must be the only recipient of a file: ``encrypt`` refuses a passphrase beside
other recipients (ValueError) and readers refuse such files (FormatError), so that nobody
else can also open (or have made) a file that its passphrase holder believes is theirs alone.

The passphrase is held in a bytearray that ``wipe()`` zeroes (Python may still hold the str or
bytes it was given; nothing can be done about those). It never appears in ``repr``, messages
or logs, and a ``Passphrase`` never pickles.
"""

from __future__ import annotations

import os
import unicodedata
from typing import Optional, Union

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from .. import _redact
from ..core.buffers import BytesLike
from . import stanzas as _stanzas
from .envelope import Identity, Recipient, WrapContext
from ..errors import FormatError, WrongPassphraseError

__all__ = ["DEFAULT_WORK_FACTOR", "MAX_WORK_FACTOR", "MIN_WORK_FACTOR", "Passphrase", "PassphraseIdentity",
           "PassphraseRecipient"]

DEFAULT_WORK_FACTOR = 18  # log2(N): about 256 MiB and a fraction of a second per stanza
MIN_WORK_FACTOR = _stanzas.SCRYPT_MIN_LOG2_N
MAX_WORK_FACTOR = _stanzas.SCRYPT_MAX_LOG2_N
SCRYPT_R, SCRYPT_P = 8, 1
STANZA_SIZE = (_stanzas.PASSPHRASE_SALT_SIZE + 3 + _stanzas.SEALED_KEY_SIZE
               + _stanzas.PASSPHRASE_CHECKSUM_SIZE)

# What a reader will spend on one stanza: no more than the largest stanza this library writes
# (log2(N) = 22, r = 8, p = 1), checked when the header is parsed (docs/FORMAT.md 2.8).
MAX_SCRYPT_MEMORY = _stanzas.SCRYPT_MAX_MEMORY  # 128 * r * N bytes: 4 GiB
MAX_SCRYPT_COST = _stanzas.SCRYPT_MAX_COST  # N * r * p

_SALT_LABEL = b"shardseal/v1/passphrase"
_WRAP_KEY_SIZE = 32
_ZERO_NONCE = bytes(12)  # safe: each stanza's scrypt key seals exactly one file key

# A passphrase as callers give it: text (NFC-normalised, UTF-8 encoded) or bytes.
PassphraseLike = Union[str, BytesLike]
# An encoded passphrase as the primitives take it (the bytearray an object wipes, or bytes).
_SecretBytes = Union[bytes, bytearray]


def _encode_passphrase(passphrase: PassphraseLike) -> bytearray:
    """The passphrase's bytes: text NFC-normalised and UTF-8 encoded, bytes as they are.

    Raises:
        TypeError: passphrase is not str or bytes-like.
        ValueError: it is empty, or text that is not valid Unicode (lone surrogates).
    """
    if isinstance(passphrase, str):
        # No UnicodeEncodeError (whose .object is the passphrase) may become __context__.
        utf8 = _redact.utf8_bytes(unicodedata.normalize("NFC", passphrase))
        if utf8 is None:
            raise ValueError("the passphrase is not valid Unicode text")
        encoded = bytearray(utf8)
    else:
        try:
            # numpy's stubs declare ndarray a Buffer only for Python 3.12+ (core/buffers.py).
            encoded = bytearray(memoryview(passphrase).cast("B"))  # type: ignore[arg-type]
        except TypeError:
            raise TypeError(f"a passphrase must be str or bytes, not {type(passphrase).__name__}") from None
    if not encoded:
        raise ValueError("the passphrase is empty")
    return encoded


def _check_work_factor(work_factor: object) -> int:
    if isinstance(work_factor, bool) or not isinstance(work_factor, int):
        raise TypeError(f"work_factor must be an int (log2 of scrypt's N), not {type(work_factor).__name__}")
    if not MIN_WORK_FACTOR <= work_factor <= MAX_WORK_FACTOR:
        raise ValueError(f"work_factor must be {MIN_WORK_FACTOR} to {MAX_WORK_FACTOR} "
                         f"(log2 of scrypt's N), got {work_factor}")
    return work_factor


def _check_cost(log2_n: int, r: int, p: int) -> None:
    """Refuses scrypt parameters beyond what this library writes, before any work.

    Raises:
        FormatError: the stanza asks for more memory or work than a reader spends.
    """
    _stanzas.check_scrypt_parameters(log2_n, r, p, FormatError)


def _wrap_key(passphrase: _SecretBytes, salt: bytes, log2_n: int, r: int, p: int) -> bytearray:
    """W = scrypt(passphrase, label || salt, 2**log2_n, r, p), into a bytearray to wipe."""
    kdf = Scrypt(salt=_SALT_LABEL + bytes(salt), length=_WRAP_KEY_SIZE, n=2**log2_n, r=r, p=p)
    if hasattr(kdf, "derive_into"):  # cryptography >= 47: no immutable copy of W
        key = bytearray(_WRAP_KEY_SIZE)
        kdf.derive_into(passphrase, key)
        return key
    return bytearray(kdf.derive(bytes(passphrase)))


def _seal(passphrase: _SecretBytes, file_key: bytes, salt: bytes, log2_n: int, r: int, p: int) -> bytes:
    """The passphrase stanza body carrying file_key, for an explicit salt and scrypt
    parameters (deterministic: test vectors use it; ``Passphrase.wrap`` passes a random salt).

    Args:
        passphrase: the passphrase's bytes (already NFC-normalised and encoded, if text).
        file_key: the 32-byte file key.
        salt: the stanza's 16 random bytes (the scrypt salt is a label followed by them).
        log2_n, r, p: the scrypt parameters, within the format's bounds.

    Raises:
        ValueError: a file key that is not 32 bytes, a salt that is not 16 bytes, or scrypt
            parameters out of the format's bounds.
    """
    if len(file_key) != _stanzas.FILE_KEY_SIZE:
        raise ValueError(f"the file key must be {_stanzas.FILE_KEY_SIZE} bytes, got {len(file_key)}")
    if len(salt) != _stanzas.PASSPHRASE_SALT_SIZE:
        raise ValueError(f"the salt must be {_stanzas.PASSPHRASE_SALT_SIZE} bytes, got {len(salt)}")
    # The bounds are checked before the (possibly long) scrypt run.
    _stanzas.check_scrypt_parameters(log2_n, r, p, ValueError)
    key = _wrap_key(passphrase, salt, log2_n, r, p)
    try:
        sealed = AESGCM(key).encrypt(_ZERO_NONCE, bytes(file_key), b"")
    finally:
        key[:] = bytes(len(key))
    return _stanzas.passphrase_body(bytes(salt), log2_n, r, p, sealed)


def _unseal(passphrase: _SecretBytes, body: bytes) -> bytes:
    """The file key in a passphrase stanza body.

    Raises:
        FormatError: a corrupted stanza (bad checksum), or scrypt parameters out of bounds or
            beyond what a reader spends (see MAX_SCRYPT_MEMORY and MAX_SCRYPT_COST).
        WrongPassphraseError: the passphrase does not open the stanza.
    """
    parsed = _stanzas.parse_passphrase(body)  # checks the scrypt bounds and limits too
    key = _wrap_key(passphrase, parsed.salt, parsed.log2_n, parsed.r, parsed.p)
    try:
        return AESGCM(key).decrypt(_ZERO_NONCE, parsed.sealed_key, b"")
    except InvalidTag:
        raise WrongPassphraseError() from None
    finally:
        key[:] = bytes(len(key))


class Passphrase(Recipient, Identity):
    """A passphrase: the recipient that seals a file key with it, and the identity that
    opens it again.

    One class for both roles (also named ``PassphraseRecipient`` and ``PassphraseIdentity``):
    a passphrase is symmetric, the same secret seals and opens, and it has no public part to
    split off. It has no string form either (no ``from_string``/``to_string``): the string
    would be the secret itself; the command line prompts for it.

    Args:
        passphrase: the passphrase, text (NFC-normalised, UTF-8 encoded) or bytes (used as
            they are). Never empty.
        work_factor: log2 of scrypt's N when wrapping (18: about 256 MiB of memory; each
            step up doubles time and memory). Unwrapping always uses the stanza's own
            parameters.

    Raises:
        TypeError: passphrase is not str or bytes-like, or work_factor is not an int.
        ValueError: an empty passphrase, text that is not valid Unicode, or work_factor
            outside 10..22.
    """

    stanza_type = _stanzas.PASSPHRASE
    max_unwrap_attempts = 1  # one scrypt run per decryption (a file holds one such stanza)

    def __init__(self, passphrase: PassphraseLike, *, work_factor: int = DEFAULT_WORK_FACTOR) -> None:
        self._work_factor = _check_work_factor(work_factor)
        self._secret: Optional[bytearray] = _encode_passphrase(passphrase)

    @property
    def work_factor(self) -> int:
        """log2 of scrypt's N for the stanzas this object writes."""
        return self._work_factor

    @property
    def key_id(self) -> str:
        """``"passphrase"``: a passphrase has no public id (the stanza names none)."""
        return "passphrase"

    @property
    def key_ids(self) -> tuple[str, ...]:
        """``("passphrase",)``."""
        return ("passphrase",)

    def wrap(self, file_key: bytes, context: WrapContext) -> bytes:
        """A passphrase stanza body carrying file_key, with a fresh random salt.

        Raises:
            ValueError: the passphrase was wiped, or file_key is not 32 bytes.
        """
        salt = os.urandom(_stanzas.PASSPHRASE_SALT_SIZE)
        return _seal(self._require_secret(), file_key, salt, self._work_factor, SCRYPT_R, SCRYPT_P)

    def stanza_size(self) -> int:
        """The passphrase stanza body size: 75 bytes."""
        return STANZA_SIZE

    def unwrap(self, body: bytes, context: WrapContext) -> Optional[bytes]:
        """The file key of a passphrase stanza (every passphrase stanza is addressed to
        whoever holds a passphrase, so this never returns None).

        Raises:
            FormatError: a corrupted stanza, or one that asks for too much scrypt work.
            WrongPassphraseError: this passphrase does not open the stanza.
            ValueError: the passphrase was wiped.
        """
        return _unseal(self._require_secret(), body)

    def wipe(self) -> None:
        """Zeroes the passphrase in memory; the object can no longer wrap or unwrap."""
        if self._secret is not None:
            self._secret[:] = bytes(len(self._secret))
            self._secret = None

    def _require_secret(self) -> bytearray:
        if self._secret is None:
            raise ValueError("this passphrase was wiped from memory")
        return self._secret

    def __enter__(self) -> "Passphrase":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.wipe()

    def __repr__(self) -> str:
        state = "wiped" if self._secret is None else "hidden"
        return f"Passphrase(<{state}>, work_factor={self._work_factor})"


# The names of Passphrase in its two roles (the same class: see its documentation).
PassphraseRecipient = Passphrase
PassphraseIdentity = Passphrase
