"""Envelope encryption: wrapping a file's key for recipients and unwrapping it with identities.

A container made with a direct key uses that key as its *file key*. A container made for
recipients gets a fresh random 32-byte file key, wrapped once per recipient into a key stanza;
any one identity that opens a stanza recovers it. Either way the Cobblestone input key is
derived from the file key as for a direct key (``direct.input_key``).

Recipient and Identity are the extension points: a new key store (a KMS, an HSM) needs one
class of each, or a ``kms.KeyProvider``. Recipient strings are parsed in ``keys.registry``;
the header of a new container is planned in ``container``.
"""

from __future__ import annotations

import abc
import hashlib
import time
from dataclasses import dataclass
from typing import Any, ClassVar, Iterable, NoReturn, Optional, Protocol, Sequence, Union

from ..core import backend as _backend, layout as _layout
from . import direct as _direct, stanzas as _stanzas
from .. import audit
from .direct import RawKeyLike
from .stanzas import Stanza
from ..errors import AuthenticationError, FormatError, KeyNotFoundError, ShardsealError

FILE_KEY_SIZE = _stanzas.FILE_KEY_SIZE

# How many stanzas one identity may try to open (an unwrap that does not return None) in one
# decryption. A hostile file can hold 1,024 stanzas addressed to, say, any key of a KMS
# provider; without a bound each would cost a KMS request, an HSM operation or a scrypt run.
# Identity subclasses may lower it (a passphrase: 1). docs/FORMAT.md section 4, step 7.
MAX_UNWRAP_ATTEMPTS = 8


class SealedHeader(Protocol):
    """What unwrapping needs of a parsed header (``container.header.Header``)."""

    @property
    def suite(self) -> int: ...
    @property
    def fixed(self) -> bytes: ...
    @property
    def stanzas(self) -> Sequence[Stanza]: ...


@dataclass(frozen=True)
class WrapContext:
    """What a recipient or identity may bind a wrapped key to: the container's fixed part.

    The fixed part (suite and metadata) never changes when keys are re-wrapped, so a KMS
    encryption context or an AAD built from it stays valid through rotation.
    """

    suite: int
    fixed: bytes

    @property
    def header_digest(self) -> str:
        """SHA-256 of the fixed part, hex: a short public name for the file's header."""
        return hashlib.sha256(self.fixed).hexdigest()


class Recipient(abc.ABC):
    """Someone a file key is wrapped for. Subclasses set ``stanza_type`` and implement wrap."""

    stanza_type: ClassVar[int]

    @property
    @abc.abstractmethod
    def key_id(self) -> str:
        """The public id of the key this recipient wraps with (shown by inspect and errors)."""

    @abc.abstractmethod
    def wrap(self, file_key: bytes, context: WrapContext) -> bytes:
        """Returns the stanza body that carries file_key for this recipient."""

    def stanza_size(self) -> Optional[int]:
        """The body size ``wrap`` returns, if known without wrapping (for encrypted_size)."""
        return None

    def __reduce__(self) -> NoReturn:
        raise TypeError(f"{type(self).__name__} objects are not picklable")


class Identity(abc.ABC):
    """Something that can open stanzas of one type. Subclasses set ``stanza_type``.

    Attributes:
        max_unwrap_attempts: how many stanzas addressed to this identity (an ``unwrap`` that
            does not return None) one decryption tries before giving up; ``MAX_UNWRAP_ATTEMPTS``
            (8) unless a subclass sets fewer.
    """

    stanza_type: ClassVar[int]
    max_unwrap_attempts: ClassVar[int] = MAX_UNWRAP_ATTEMPTS

    @property
    @abc.abstractmethod
    def key_ids(self) -> tuple[str, ...]:
        """The public ids of the keys this identity holds."""

    @abc.abstractmethod
    def unwrap(self, body: bytes, context: WrapContext) -> Optional[bytes]:
        """Returns the 32-byte file key, or None when the stanza is not addressed to this
        identity (another key id).

        Raises:
            ShardsealError: the stanza is addressed to this identity but does not open
                (a wrong passphrase, a damaged stanza, a refusal by an HSM or KMS).
        """

    def __reduce__(self) -> NoReturn:
        raise TypeError(f"{type(self).__name__} objects hold secret keys and are not picklable")


class DirectKey(Identity):
    """The caller's own 32-byte key as an identity: it opens the direct stanza naming it."""

    stanza_type = _stanzas.DIRECT

    def __init__(self, key: RawKeyLike) -> None:
        self._key = _direct.check_key(key)
        self._id = _direct.key_id(self._key)

    @property
    def key_ids(self) -> tuple[str, ...]:
        return (self._id.hex(),)

    def unwrap(self, body: bytes, context: WrapContext) -> Optional[bytes]:
        return self._key if body == self._id else None

    def __repr__(self) -> str:
        return f"DirectKey(key_id={self._id.hex()})"


# The identities argument of the decrypting functions: one identity or several, tried in order.
Identities = Union[Identity, Iterable[Identity]]


def check_identities(key: Union[RawKeyLike, DirectKey, None] = None,
                     identities: Optional[Identities] = None) -> tuple[Identity, ...]:
    """The identities to try, in order: the direct key first, then the given identities.

    Raises:
        TypeError: neither given, or an identity that is not an Identity.
    """
    result: list[Identity] = []
    if key is not None:
        result.append(key if isinstance(key, DirectKey) else DirectKey(key))
    if identities is not None:
        if isinstance(identities, Identity):
            identities = [identities]
        for identity in identities:
            if not isinstance(identity, Identity):
                raise TypeError(f"identities must be Identity objects, not {type(identity).__name__}")
            result.append(identity)
    if not result:
        raise TypeError("give key= or identities=")
    return tuple(result)


def wrap_for(recipients: Sequence[Recipient], file_key: bytes, context: WrapContext) -> list[Stanza]:
    """One stanza per recipient carrying file_key (audited)."""
    stanzas = []
    for recipient in recipients:
        started = time.perf_counter()
        body = recipient.wrap(file_key, context)
        stanza = Stanza(recipient.stanza_type, bytes(body))
        _stanzas.TYPES[stanza.type].check(stanza.body)
        audit.record("wrap", stanza=stanza.type_name, key_id=recipient.key_id,
                     seconds=time.perf_counter() - started)
        stanzas.append(stanza)
    return stanzas


def stanza_size(recipient: Recipient, suite: int, fixed: bytes) -> int:
    """The encoded size of the stanza a recipient makes (its head included)."""
    size = recipient.stanza_size()
    if size is None:
        size = len(recipient.wrap(bytes(FILE_KEY_SIZE), WrapContext(suite, fixed)))
    return 6 + size


def unwrap_file_key(header: SealedHeader, identities: Iterable[Identity]) -> bytes:
    """The file key, from the first identity (in the caller's order) that opens a stanza.

    Each identity, in order, is offered the stanzas of its type in header order; the first
    key returned wins. An identity that has made ``max_unwrap_attempts`` attempts (unwraps
    that raised) is offered no more stanzas (docs/FORMAT.md section 4, step 7).

    Raises:
        KeyNotFoundError: no identity matches any stanza (it names the key ids needed), or an
            identity gave up after ``max_unwrap_attempts`` failed attempts and nothing opened.
        ShardsealError: a stanza addressed to an identity failed to open and nothing else
            matched (e.g. WrongPassphraseError, AuthenticationError, KmsError).
        FormatError: an identity returned a file key that is not 32 bytes.
    """
    context = WrapContext(header.suite, header.fixed)
    failure: Optional[ShardsealError] = None
    gave_up: Optional[Identity] = None
    identities = tuple(identities)
    for identity in identities:
        attempts = 0
        for stanza in header.stanzas:
            if stanza.type != identity.stanza_type:
                continue
            if attempts >= identity.max_unwrap_attempts:
                gave_up = gave_up or identity
                break
            started = time.perf_counter()
            try:
                file_key = identity.unwrap(stanza.body, context)
            except ShardsealError as exc:
                attempts += 1
                audit.record("unwrap_failed", stanza=stanza.type_name, key_id=_stanzas.key_id(stanza),
                             error=type(exc).__name__, seconds=time.perf_counter() - started)
                failure = failure or exc
                continue
            if file_key is not None:
                if len(file_key) != FILE_KEY_SIZE:
                    raise FormatError(f"the {stanza.type_name} stanza holds a {len(file_key)}-byte "
                                      f"file key, not {FILE_KEY_SIZE}")
                audit.record("unwrap", stanza=stanza.type_name, key_id=_stanzas.key_id(stanza),
                             seconds=time.perf_counter() - started)
                return bytes(file_key)
    if gave_up is not None:
        raise _gave_up(header, gave_up, failure)
    if failure is not None:
        raise failure
    raise _key_not_found(header, identities)


def unwrap_input_key(header: SealedHeader, key: Union[RawKeyLike, DirectKey, None] = None,
                     identities: Optional[Identities] = None) -> bytes:
    """The Cobblestone input key of a parsed header (see unwrap_file_key)."""
    file_key = unwrap_file_key(header, check_identities(key, identities))
    return _direct.input_key(file_key, header.suite)


_NEEDS = {
    _stanzas.DIRECT: "key id {}",
    _stanzas.KEYRING: "keyring key {}",
    _stanzas.PASSPHRASE: "the passphrase",
    _stanzas.X25519: "X25519 identity {}",
    _stanzas.PKCS11: "PKCS#11 key {}",
    _stanzas.KMS: "KMS key {}",
}


def proven_message_keys(header: SealedHeader, file_key: bytes, message_head: bytes) -> Any:
    """The message's keys (``MessageKeys``) for a file key, once the message's commitment
    (``message_head`` = salt || commitment) proves the key right.

    Raises:
        AuthenticationError: the commitment does not match: a wrong key, or a tampered header
            or commitment (audited as ``authentication_failed``).
    """
    salt, commitment = message_head[:_layout.SALT_SIZE], message_head[_layout.SALT_SIZE:]
    keys = _backend.impl.MessageKeys(header.suite, _direct.input_key(file_key, header.suite), salt,
                                     header.fixed)
    if not keys.commitment_matches(commitment):
        audit.record("authentication_failed", error="commitment mismatch")
        raise AuthenticationError()
    return keys


def _gave_up(header: SealedHeader, identity: Identity,
             failure: Optional[ShardsealError]) -> KeyNotFoundError:
    needed = tuple(_stanzas.key_id(s) for s in header.stanzas if s.type in _NEEDS)
    audit.record("key_not_found", needed=list(needed))
    first = f"; the first failed with {type(failure).__name__}" if failure is not None else ""
    return KeyNotFoundError(
        f"gave up on this container: identity {' or '.join(identity.key_ids)} failed to open "
        f"{identity.max_unwrap_attempts} stanzas addressed to it and the container holds more "
        f"(a reader tries at most that many per identity{first})", needed)


def _key_not_found(header: SealedHeader, identities: Sequence[Identity]) -> KeyNotFoundError:
    stanzas = [s for s in header.stanzas if s.type in _NEEDS]
    needed = tuple(_stanzas.key_id(s) for s in stanzas)
    audit.record("key_not_found", needed=list(needed))
    if not stanzas:
        return KeyNotFoundError("this container has no key stanza this library can open")
    if len(identities) == 1 and isinstance(identities[0], DirectKey):
        subject = "the key does not open this container"
    else:
        subject = "none of the given keys and identities opens this container"
    # A hostile header can hold a thousand stanzas: the message names the first few only
    # (key_ids keeps them all).
    wants = " or ".join(_NEEDS[s.type].format(_stanzas.key_id(s)) for s in stanzas[:_LISTED_KEYS])
    if len(stanzas) > _LISTED_KEYS:
        wants += f" (and {len(stanzas) - _LISTED_KEYS} more)"
    return KeyNotFoundError(f"{subject}; it needs {wants}", needed)


_LISTED_KEYS = 8
