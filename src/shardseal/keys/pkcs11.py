"""PKCS#11 HSM key-encryption keys: file keys wrapped and unwrapped inside a token.

A :class:`Pkcs11Recipient` names an AES-256 key object in a PKCS#11 token (a hardware security
module, a smart card, SoftHSM2) that never leaves it. It is both a recipient (it wraps a file's
key for the container's key block) and an identity (it unwraps it again)::

    from shardseal import pkcs11
    kek = pkcs11.create_kek("ml-keys", "kek-2026", module="/usr/lib/softhsm/libsofthsm2.so",
                            pin="1234")            # once: generates the key in the token
    blob = shardseal.encrypt(data, recipients=[kek])
    with pkcs11.Pkcs11Recipient("ml-keys", "kek-2026") as kek:   # module and PIN from the environment
        data = shardseal.decrypt(blob, identities=[kek])

**The key stays in the token.** ``create_kek`` generates it there with ``CKA_SENSITIVE`` true,
``CKA_EXTRACTABLE`` false and ``CKA_WRAP``/``CKA_UNWRAP`` as its only uses (no ``CKA_ENCRYPT``,
``CKA_DECRYPT``, ``CKA_SIGN``). Wrapping creates the file key as a short-lived session object
and exports it with ``C_WrapKey``; unwrapping imports the wrapped key with ``C_UnwrapKey`` as an
extractable session key and reads its ``CKA_VALUE`` (the file key has to come back to the host
to decrypt the payload), then destroys it.

**Mechanism: CKM_AES_KEY_WRAP (RFC 3394).** SoftHSM2 2.6.1 offers both ``CKM_AES_KEY_WRAP``
(RFC 3394) and ``CKM_AES_KEY_WRAP_PAD`` (RFC 5649); the tests run Wycheproof's vectors for both
through the token. RFC 3394 is used because a file key is always 32 bytes, a multiple of the
8-byte block, so padding buys nothing, and because ``CKM_AES_KEY_WRAP_PAD`` is ambiguous across
vendors (some implement it as PKCS#7 padding followed by RFC 3394, which is why PKCS#11 3.0 added
``CKM_AES_KEY_WRAP_KWP``), while ``CKM_AES_KEY_WRAP`` means RFC 3394 everywhere it exists. The
wrapped key is the 40-byte RFC 3394 output, the same construction as the keyring stanza, so a
stanza can be checked, or opened in an emergency, with any RFC 3394 implementation by whoever
holds the key (the tests do that with ``cryptography``'s ``aes_key_unwrap``).

**The stanza** (type ``_stanzas.PKCS11``) is ``_stanzas.reference_body("pkcs11", uri,
wrapped)``, where ``uri`` is an RFC 7512 PKCS#11 URI naming the token and the key,
``pkcs11:token=ml-keys;object=kek-2026`` (percent-encoded as RFC 7512 says). It never holds a
PIN or a module path. The URI is also the key's public id (``key_id``).

**Configuration.** ``module`` is the path of the PKCS#11 library (the environment variable
``SHARDSEAL_PKCS11_MODULE`` when not given); ``pin`` the user PIN (``SHARDSEAL_PKCS11_PIN``; no PIN
means no login, for tokens whose key objects are public). The PIN is held in a bytearray that
``wipe()`` and ``close()`` zero; python-pkcs11 takes it as a ``str`` while logging in, a short-lived
copy Python cannot wipe. No ``repr``, message or audit event contains it.

**Sessions, threads and fork.** PKCS#11 logs in per process and token, not per session: every
session of a process on a token shares one login, and logging out of one logs out all. So the
keys of one module share one logged-in session per token (opened on first use, closed when the
last key using it is closed or garbage-collected), and keys for the same token must be given
the same PIN (another one is refused with :class:`Pkcs11LoginError`; a PIN is checked by the
token on the first login only). python-pkcs11 initialises the library without locking callbacks,
which promises the library that no two threads call it at once, so every call goes through one
lock per module: a key can be shared by threads. A forked child (a DataLoader worker) must not
use its parent's sessions: the first use in a new process re-initialises the library
(``C_Finalize``, ``C_Initialize``) and logs in afresh, with the PIN the key still holds.

**Errors.** Bad arguments and malformed URIs raise ``ValueError`` (``TypeError`` for wrong
types); a missing token or key raises :class:`~shardseal.errors.KeyNotFoundError` naming the
URI; a rejected PIN raises :class:`Pkcs11LoginError` (also a ``PermissionError``); a wrapped
key that the token refuses to unwrap raises :class:`~shardseal.errors.AuthenticationError`;
any other failure of the module raises :class:`HsmError` naming the PKCS#11 error.

Requires ``pip install 'shardseal[pkcs11]'`` (python-pkcs11), imported on first use only.
"""

from __future__ import annotations

import os
import threading
import weakref
from typing import Any, Callable, Optional, TypeVar, Union

from . import _deprecated, _pkcs11session as _p11s, envelope as _envelope, stanzas as _stanzas
from ._pkcs11session import KEK_BITS as KEK_BITS, PathLike as PathLike
from ._pkcs11uri import MODULE_ENV, PIN_ENV, make_uri, parse_uri
from ..errors import AuthenticationError, HsmError, KeyNotFoundError, Pkcs11LoginError

__all__ = [
    "MODULE_ENV",
    "PIN_ENV",
    "HsmError",
    "Pkcs11Identity",
    "Pkcs11Recipient",
    "Pkcs11LoginError",
    "create_kek",
    "make_uri",
    "parse_uri",
]

PROVIDER = _stanzas.PKCS11_PROVIDER
WRAPPED_SIZE = _stanzas.AES_KW_SIZE  # RFC 3394 output for the 32-byte file key

_T = TypeVar("_T")

# The token access (python-pkcs11, sessions, operations inside the token) is in _pkcs11session.
# Kept under its old name: tests/keys/test_pkcs11.py runs the Wycheproof vectors through it.
_unwrap_in_token = _p11s.unwrap_in_token

_KEYS: "weakref.WeakSet[Pkcs11Recipient]" = weakref.WeakSet()


def _reset_key_locks_in_child() -> None:
    # A lock held by another thread at fork() stays held forever in the child: start afresh
    # (_pkcs11session does the same for its module locks, registered before this).
    for key in list(_KEYS):
        key._lock = threading.RLock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_key_locks_in_child)


# -- the key ---------------------------------------------------------------------------------------

class Pkcs11Recipient(_envelope.Recipient, _envelope.Identity):
    """An AES key-encryption key inside a PKCS#11 token: a recipient and an identity.

    One class for both roles, also named ``Pkcs11Identity``: the token's key is symmetric, the
    same handle wraps and unwraps, so a recipient and an identity are the same object. Its
    string form is its RFC 7512 URI (``from_string``/``to_string``; no PIN in it).
    ``Pkcs11Key`` is the old name (deprecated).

    Args:
        token_label: the token's label (``CKA_LABEL`` of the token, 1..32 UTF-8 bytes).
        key_label: the key object's ``CKA_LABEL``.
        module: path of the PKCS#11 library; default: the ``SHARDSEAL_PKCS11_MODULE``
            environment variable.
        pin: the user PIN (str or bytes); default: ``SHARDSEAL_PKCS11_PIN``, else no login.

    Nothing touches the token until the key is first used. Close the key (or use it as a
    context manager) to wipe the PIN and release the session.

    Raises:
        TypeError: an argument has the wrong type.
        ValueError: a bad label or PIN, or no module given and none in the environment.
        ImportError: python-pkcs11 is not installed.
    """

    stanza_type = _stanzas.PKCS11

    def __init__(self, token_label: str, key_label: str, *, module: Optional[PathLike] = None,
                 pin: Union[str, bytes, None] = None) -> None:
        _p11s.python_pkcs11()  # fail early, with the install hint, rather than at first use
        self._uri = make_uri(token_label, key_label)
        self._token_label, self._key_label = token_label, key_label
        self._module_path = _p11s.module_path(module)
        self._pin = _p11s.pin_bytes(pin)
        self._pin_digest = _p11s.pin_digest(self._pin)
        self._pin_wiped = False
        self._lock = threading.RLock()
        self._shared: Optional[_p11s.TokenSession] = None
        # (shared session, kek object) of the last lookup
        self._kek: Optional[tuple[_p11s.TokenSession, _p11s.P11SecretKey]] = None
        self._closed = False
        self._finalizer: Optional[weakref.finalize[[_p11s.Module, _p11s.TokenSession], Pkcs11Recipient]] = None
        _KEYS.add(self)

    @classmethod
    def from_uri(cls, uri: str, module: Optional[PathLike] = None,
                 pin: Union[str, bytes, None] = None) -> Pkcs11Recipient:
        """The key an RFC 7512 URI names, e.g. ``pkcs11:token=ml-keys;object=kek-2026``.

        Raises:
            TypeError, ValueError: a malformed URI (see ``parse_uri``) or bad arguments.
        """
        token_label, key_label = parse_uri(uri)
        return cls(token_label, key_label, module=module, pin=pin)

    @classmethod
    def from_string(cls, text: str) -> "Pkcs11Recipient":
        """The key a ``pkcs11:token=...;object=...`` string names; module and PIN from the
        environment (``$SHARDSEAL_PKCS11_MODULE``, ``$SHARDSEAL_PKCS11_PIN``).

        Raises:
            TypeError, ValueError: a malformed URI, or no module in the environment.
            ImportError: python-pkcs11 is not installed.
        """
        return cls.from_uri(text)

    def to_string(self) -> str:
        """The key's URI (public: token and key labels, never the PIN or the module)."""
        return self._uri

    # -- public names ------------------------------------------------------------------------

    @property
    def uri(self) -> str:
        """The key's RFC 7512 URI, as stored in the stanza."""
        return self._uri

    @property
    def token_label(self) -> str:
        """The token's label."""
        return self._token_label

    @property
    def key_label(self) -> str:
        """The key object's label."""
        return self._key_label

    @property
    def module(self) -> str:
        """The PKCS#11 library path."""
        return self._module_path

    @property
    def key_id(self) -> str:
        """The public id of the key: its URI."""
        return self._uri

    @property
    def key_ids(self) -> tuple[str, ...]:
        """The public ids of the keys this identity holds: its URI."""
        return (self._uri,)

    def __repr__(self) -> str:
        state = ", closed" if self._closed else ""
        return f"Pkcs11Key({self._uri!r}{state})"  # the repr reads "a PKCS#11 key"; tests pin it

    # -- Recipient and Identity ----------------------------------------------------------------

    def stanza_size(self) -> int:
        """The size of the stanza body ``wrap`` returns (known without the token)."""
        return 1 + len(PROVIDER) + 2 + len(self._uri.encode("utf-8")) + WRAPPED_SIZE

    def wrap(self, file_key: bytes, context: _envelope.WrapContext) -> bytes:
        """The pkcs11 stanza body carrying file_key, wrapped inside the token.

        Raises:
            ValueError: file_key is not 32 bytes, or the key is closed.
            KeyNotFoundError: the token or the key is not there.
            Pkcs11LoginError: the token refuses the PIN.
            HsmError: the module failed.
        """
        file_key = bytes(file_key)
        if len(file_key) != _stanzas.FILE_KEY_SIZE:
            raise ValueError(f"a file key is {_stanzas.FILE_KEY_SIZE} bytes, got {len(file_key)}")
        wrapped = self._call("wrapping a file key", lambda session, kek: _p11s.wrap_in_token(session, kek, file_key))
        return _stanzas.reference_body(PROVIDER, self._uri, wrapped)

    def unwrap(self, body: bytes, context: _envelope.WrapContext) -> Optional[bytes]:
        """The file key in a pkcs11 stanza addressed to this key; None for another key.

        Raises:
            FormatError: the stanza's URI or wrapped key is malformed.
            AuthenticationError: the token refuses the wrapped key (tampered, or wrapped under
                another key of the same name).
            KeyNotFoundError: the token or the key is not there.
            Pkcs11LoginError: the token refuses the PIN.
            HsmError: the module failed.
            ValueError: the key is closed.
        """
        # The header parser has checked the body already; checked again for a direct call.
        parsed = _stanzas.parse_pkcs11(bytes(body))
        if parse_uri(parsed.key_ref) != (self._token_label, self._key_label):
            return None
        file_key = self._call("unwrapping a file key",
                              lambda session, kek: _p11s.unwrap_in_token(session, kek, parsed.wrapped_key))
        if len(file_key) != _stanzas.FILE_KEY_SIZE:
            raise AuthenticationError()
        return file_key

    # -- inspection ------------------------------------------------------------------------------

    def key_attributes(self) -> dict[str, Any]:
        """The key object's security-relevant attributes, read from the token.

        Returns:
            A dict: ``key_type`` ("AES"), ``value_len`` (bytes), and the booleans ``token``,
            ``private``, ``sensitive``, ``always_sensitive``, ``extractable``,
            ``never_extractable``, ``wrap``, ``unwrap``, ``encrypt``, ``decrypt``.

        Raises:
            KeyNotFoundError, Pkcs11LoginError, HsmError: as for ``wrap``.
        """
        return self._call("reading key attributes", _p11s.read_key_attributes)

    # -- lifecycle --------------------------------------------------------------------------------

    def wipe(self) -> None:
        """Zeroes the PIN held by this object. A session already logged in stays usable; a
        new login (in a forked child, after a token reconnect) then fails."""
        with self._lock:
            if self._pin is not None:
                self._pin[:] = bytes(len(self._pin))
                self._pin = None
                self._pin_wiped = True

    def close(self) -> None:
        """Wipes the PIN and releases the token session (the last key of a token closes it).
        Closing twice is fine."""
        with self._lock:
            self.wipe()
            self._closed = True
            self._kek = None
            if self._finalizer is not None:
                self._finalizer()  # releases the shared session, once
                self._finalizer = None
            self._shared = None

    def __enter__(self) -> Pkcs11Recipient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- internals ------------------------------------------------------------------------------

    def _call(self, action: str, operation: Callable[[_p11s.P11Session, _p11s.P11SecretKey], _T]) -> _T:
        """Runs operation(session, kek) under the module lock, retrying once on a stale session."""
        with self._lock:
            if self._closed:
                raise ValueError(f"{self!r} is closed")
            module = _p11s.module_for(self._module_path)
            with module.lock:
                for attempt in range(2):
                    try:
                        session, kek = self._session_and_kek(module)
                        return operation(session, kek)
                    except _p11s.stale_session_errors() + _p11s.stale_handle_errors() as exc:
                        if attempt:
                            raise _p11s.hsm_error(f"{action} with {self._uri}", exc) from None
                        if isinstance(exc, _p11s.stale_session_errors()) and self._shared is not None:
                            module.discard(self._shared)
                        self._kek = None
                    except _p11s.python_pkcs11().PKCS11Error as exc:
                        raise _p11s.hsm_error(f"{action} with {self._uri}", exc) from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _session_and_kek(self, module: _p11s.Module) -> tuple[_p11s.P11Session, _p11s.P11SecretKey]:
        shared = self._acquire(module)
        if self._kek is not None and self._kek[0] is shared:
            return shared.session, self._kek[1]
        kek = self._find_kek(shared)
        self._kek = (shared, kek)
        return shared.session, kek

    def _acquire(self, module: _p11s.Module) -> _p11s.TokenSession:
        shared = self._shared
        if shared is not None and not shared.dead and shared.pid == os.getpid():
            return shared
        self._kek = None
        shared = module.acquire(self._token_key())
        self._shared = shared
        if self._finalizer is not None:
            self._finalizer.detach()  # the old session died or belongs to the parent process
        # Releases the session when this key is closed or garbage-collected (never in another
        # process: release() checks the pid).
        self._finalizer = weakref.finalize(self, _p11s.release, module, shared)
        return shared

    def _find_kek(self, shared: _p11s.TokenSession) -> _p11s.P11SecretKey:
        p11 = _p11s.python_pkcs11()
        try:
            return shared.session.get_key(object_class=p11.ObjectClass.SECRET_KEY,
                                          key_type=p11.KeyType.AES, label=self._key_label)
        except p11.exceptions.NoSuchKey:
            hint = "" if shared.pin_digest is not None else " (no PIN was given: a private key needs a login)"
            raise KeyNotFoundError(f"PKCS#11 key {self._uri} not found: token {self._token_label!r} "
                                   f"has no AES secret key labelled {self._key_label!r}{hint}",
                                   (self._uri,)) from None
        except p11.exceptions.MultipleObjectsReturned:
            raise HsmError(f"token {self._token_label!r} has several AES keys labelled "
                           f"{self._key_label!r}; {self._uri} must name one") from None

    def _generate(self) -> None:
        """Generates the KEK in the token (see create_kek)."""
        with self._lock:
            module = _p11s.module_for(self._module_path)
            with module.lock:
                shared = self._acquire(module)
                _p11s.generate_kek(shared, self._token_key())

    def _token_key(self) -> _p11s.TokenKey:
        """What the token access needs of this key, as it is now."""
        return _p11s.TokenKey(self._token_label, self._key_label, self._uri, self._module_path,
                              self._pin, self._pin_digest, self._pin_wiped, self)



def create_kek(token_label: str, key_label: str, *, module: Optional[PathLike] = None,
               pin: Union[str, bytes, None] = None) -> Pkcs11Recipient:
    """Generates a non-extractable AES-256 key-encryption key in a token.

    The key is a token object with ``CKA_SENSITIVE`` true, ``CKA_EXTRACTABLE`` false, and
    ``CKA_WRAP``/``CKA_UNWRAP`` as its only permitted uses. Arguments as for ``Pkcs11Recipient``.

    Returns:
        The new key, ready to use.

    Raises:
        ValueError: the token already holds an object with that label (a key is never
            replaced), or bad arguments.
        KeyNotFoundError: no such token.
        Pkcs11LoginError: the token refuses the PIN, or none was given and it needs one.
        HsmError: the module failed.
    """
    key = Pkcs11Recipient(token_label, key_label, module=module, pin=pin)
    try:
        key._generate()
    except BaseException:
        key.close()
        raise
    return key


# The same class in its identity role (see Pkcs11Recipient).
Pkcs11Identity = Pkcs11Recipient

__getattr__ = _deprecated.module_getattr(__name__, globals(), {"Pkcs11Key": "Pkcs11Recipient"},
                                           short_path="shardseal.pkcs11")
