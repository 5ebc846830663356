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

import hashlib
import hmac
import os
import threading
import weakref
from types import ModuleType
from typing import Any, Callable, Iterable, Optional, Protocol, TypeVar, Union

from . import _deprecated, envelope as _envelope, stanzas as _stanzas
from .. import _redact
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
KEK_BITS = 256

PathLike = Union[str, "os.PathLike[str]"]

_T = TypeVar("_T")

# -- what this module uses of python-pkcs11's objects (it has no type information) ------------


class _P11Object(Protocol):
    """A python-pkcs11 object handle: attributes by ``Attribute``, ``destroy()``."""

    def __getitem__(self, attribute: Any) -> Any: ...

    def destroy(self) -> None: ...


class _P11SecretKey(_P11Object, Protocol):
    """A python-pkcs11 ``SecretKey`` (``wrap_key``/``unwrap_key`` exist when permitted)."""

    label: str
    key_type: Any  # a pkcs11.KeyType member

    def wrap_key(self, key: _P11Object, *, mechanism: Any = ...) -> bytes: ...

    def unwrap_key(self, object_class: Any, key_type: Any, key_data: bytes, *, mechanism: Any = ...,
                   capabilities: Any = ..., template: Any = ...) -> _P11Object: ...


class _P11Session(Protocol):
    """A python-pkcs11 ``Session``."""

    def close(self) -> None: ...

    def create_object(self, attrs: dict[Any, Any]) -> _P11Object: ...

    def get_key(self, *, object_class: Any = ..., key_type: Any = ...,
                label: Optional[str] = ...) -> _P11SecretKey: ...

    def get_objects(self, attrs: dict[Any, Any]) -> Iterable[_P11Object]: ...

    def generate_key(self, key_type: Any, key_length: int, *, label: Optional[str] = ...,
                     store: bool = ..., capabilities: Any = ...,
                     template: Optional[dict[Any, Any]] = ...) -> _P11SecretKey: ...


class _P11Token(Protocol):
    """A python-pkcs11 ``Token``."""

    def open(self, *, rw: bool = ..., user_pin: Optional[str] = ...) -> _P11Session: ...


class _P11Lib(Protocol):
    """A loaded python-pkcs11 ``lib``."""

    def get_token(self, *, token_label: str) -> _P11Token: ...

    def finalize(self) -> None: ...

    def initialize(self) -> None: ...


# -- loading python-pkcs11 and the module -------------------------------------------------------

def _p11() -> ModuleType:
    """python-pkcs11, imported on first use so that ``import shardseal`` never needs it."""
    try:
        import pkcs11
    except ImportError as exc:
        raise ImportError("shardseal.pkcs11 needs python-pkcs11: pip install 'shardseal[pkcs11]'") from exc
    return pkcs11


def _errors(*names: str) -> tuple[type[BaseException], ...]:
    exceptions = _p11().exceptions
    return tuple(getattr(exceptions, name) for name in names)


def _stale_session_errors() -> tuple[type[BaseException], ...]:
    # The session went away (a logout elsewhere in the process, a network HSM that
    # reconnected): worth one retry with a fresh session.
    return _errors("SessionHandleInvalid", "SessionClosed", "UserNotLoggedIn", "DeviceRemoved",
                   "TokenNotPresent")


def _stale_handle_errors() -> tuple[type[BaseException], ...]:
    # The key object behind a cached handle went away (deleted, or replaced under the same
    # label): worth one retry with a fresh lookup.
    return _errors("ObjectHandleInvalid", "KeyHandleInvalid", "WrappingKeyHandleInvalid",
                   "UnwrappingKeyHandleInvalid")


def _refused_unwrap_errors() -> tuple[type[BaseException], ...]:
    # What a token answers when a wrapped key does not decrypt under the KEK: RFC 3394's
    # integrity check failed (SoftHSM2 says CKR_GENERAL_ERROR), or the data has a bad size.
    return _errors("WrappedKeyInvalid", "WrappedKeyLenRange", "EncryptedDataInvalid",
                   "EncryptedDataLenRange", "DataInvalid", "DataLenRange", "GeneralError",
                   "FunctionFailed", "TemplateInconsistent", "KeySizeRange")


def _hsm_error(action: str, exc: BaseException) -> HsmError:
    detail = str(exc).strip()
    # python-pkcs11 leaves most of its errors empty: the class names the CKR_ code.
    return HsmError(f"PKCS#11 {action} failed: {type(exc).__name__}{': ' + detail if detail else ''}")


def _module_path(module: Optional[PathLike]) -> str:
    if module is None:
        module = os.environ.get(MODULE_ENV) or None
        if module is None:
            raise ValueError(f"no PKCS#11 module: pass module= (the path of the token's PKCS#11 "
                             f"library, e.g. /usr/lib/softhsm/libsofthsm2.so) or set {MODULE_ENV}")
    path = os.fspath(module)
    if not isinstance(path, str) or not path:
        raise TypeError("module must be a non-empty str or os.PathLike path")
    return path


def _pin_bytes(pin: object) -> Optional[bytearray]:
    if pin is None:
        pin = os.environ.get(PIN_ENV) or None
        if pin is None:
            return None
    if isinstance(pin, str):
        value = bytearray(pin.encode("utf-8"))
    elif isinstance(pin, (bytes, bytearray, memoryview)):
        value = bytearray(pin)
        if _redact.utf8_text(value) is None:  # no UnicodeDecodeError holding the PIN as context
            raise ValueError("a PIN must be UTF-8 text")
    else:
        raise TypeError(f"pin must be a str or bytes, not {type(pin).__name__}")
    if not value:
        raise ValueError("a PIN must not be empty (give None for no login)")
    return value


# A per-process secret for comparing PINs without keeping them in the shared session registry.
_PIN_DIGEST_KEY = os.urandom(32)


def _pin_digest(pin: Optional[bytearray]) -> Optional[bytes]:
    return None if pin is None else hmac.new(_PIN_DIGEST_KEY, pin, hashlib.sha256).digest()


class _TokenSession:
    """One session on one token, shared by every key of that token in this process."""

    def __init__(self, token: _P11Token, session: _P11Session, pin_digest: Optional[bytes]) -> None:
        self.token = token
        self.session = session
        self.pin_digest = pin_digest
        self.pid = os.getpid()
        self.users = 0
        self.dead = False

    def close_quietly(self) -> None:
        self.dead = True
        try:
            self.session.close()  # logs out first when this session logged in
        except Exception:  # noqa: BLE001 - a session that is already gone is fine
            pass


class _Module:
    """A PKCS#11 library loaded in this process and its shared sessions (one per token).

    Every call into the library happens under ``lock``: python-pkcs11 calls ``C_Initialize``
    without locking callbacks, which tells the library that calls are never concurrent.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.lock = threading.RLock()
        self._lib: Optional[_P11Lib] = None
        self._pid: Optional[int] = None
        self._tokens: dict[str, _TokenSession] = {}

    def library(self) -> _P11Lib:
        """The python-pkcs11 library object, (re-)initialised for this process. Holds lock."""
        pid = os.getpid()
        lib = self._lib
        if lib is None:
            try:
                lib = self._lib = _p11().lib(self.path)
            except _p11().PKCS11Error as exc:
                raise HsmError(f"cannot load the PKCS#11 module: {exc}") from None
        elif self._pid != pid:
            self._restart_in_child(lib)
        self._pid = pid
        return lib

    def _restart_in_child(self, lib: _P11Lib) -> None:
        # PKCS#11 says a forked child must call C_Initialize before anything else and must not
        # use its parent's sessions: forget them (without closing: they are the parent's).
        self._tokens = {}
        try:
            lib.finalize()
        except _p11().PKCS11Error:
            pass  # some modules reset themselves in the child and say "not initialised"
        try:
            lib.initialize()
        except _p11().PKCS11Error as exc:
            if "already initialized" not in str(exc):
                raise _hsm_error(f"re-initialisation of {self.path} after fork", exc) from None

    def acquire(self, key: Pkcs11Recipient) -> _TokenSession:
        """The shared session of key's token, opened (and logged in) if needed. Holds lock.

        Raises:
            KeyNotFoundError: no such token.
            Pkcs11LoginError: the PIN is refused, or differs from the one this process used.
            HsmError: the module failed.
        """
        lib = self.library()
        shared = self._tokens.get(key.token_label)
        if shared is None:
            shared = _open_session(lib, key)
            self._tokens[key.token_label] = shared
        elif not _same_pin(shared.pin_digest, key._pin_digest):
            raise Pkcs11LoginError(
                f"this process is logged in to PKCS#11 token {key.token_label!r} with "
                f"{'no PIN' if shared.pin_digest is None else 'another PIN'}: PKCS#11 shares one "
                "login per token and process, so give every key of a token the same PIN")
        shared.users += 1
        return shared

    def release(self, shared: _TokenSession) -> None:
        """Drops one user of a shared session; the last one closes it. Holds lock."""
        if shared.dead or shared.pid != os.getpid():
            return  # already closed, or inherited from a parent process
        shared.users -= 1
        if shared.users <= 0:
            self.discard(shared)

    def discard(self, shared: _TokenSession) -> None:
        """Closes a session that went stale so that the next use opens a fresh one."""
        label = next((name for name, s in self._tokens.items() if s is shared), None)
        if label is not None:
            del self._tokens[label]
        shared.close_quietly()


def _same_pin(a: Optional[bytes], b: Optional[bytes]) -> bool:
    if a is None or b is None:
        return a is b
    return hmac.compare_digest(a, b)


def _open_session(lib: _P11Lib, key: Pkcs11Recipient) -> _TokenSession:
    errors = _p11().exceptions
    try:
        token = lib.get_token(token_label=key.token_label)
    except errors.NoSuchToken:
        raise KeyNotFoundError(f"PKCS#11 token {key.token_label!r} not found in module "
                               f"{key.module} (needed for {key.uri})", (key.uri,)) from None
    except errors.MultipleTokensReturned:
        raise HsmError(f"several PKCS#11 tokens are labelled {key.token_label!r} in "
                       f"{key.module}") from None
    except errors.PKCS11Error as exc:
        raise _hsm_error(f"token lookup for {key.uri}", exc) from None
    if key._pin is None:
        if key._pin_wiped:
            raise Pkcs11LoginError(f"the PIN of {key!r} was wiped: create a new key object")
        return _TokenSession(token, _call_module(f"opening a session on {key.uri}", token.open), None)
    try:
        session = _login(token, key, key._pin)
    except errors.UserAlreadyLoggedIn:
        # Code outside shardseal logged this process in: its login covers this session too.
        session = _call_module(f"opening a session on {key.uri}", token.open)
    return _TokenSession(token, session, key._pin_digest)


def _login(token: _P11Token, key: Pkcs11Recipient, pin: bytearray) -> _P11Session:
    """A session logged in with pin, key's PIN. Keeps the PIN's str copy out of tracebacks."""
    errors = _p11().exceptions
    message, failure = None, None
    pin_text = bytes(pin).decode("utf-8")
    try:
        return token.open(user_pin=pin_text)
    except (errors.PinIncorrect, errors.PinInvalid, errors.PinLenRange):
        message = "the PIN is incorrect"
    except errors.PinLocked:
        message = "the PIN is locked"
    except errors.PinExpired:
        message = "the PIN has expired"
    except errors.UserPinNotInitialized:
        message = "the token has no user PIN yet"
    except errors.UserAlreadyLoggedIn:
        raise
    except errors.PKCS11Error as exc:
        failure = _hsm_error(f"login to token {key.token_label!r}", exc)
    finally:
        del pin_text
    if failure is not None:
        raise failure
    raise Pkcs11LoginError(f"PKCS#11 login to token {key.token_label!r} failed: {message}")


def _call_module(action: str, function: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
    try:
        return function(*args, **kwargs)
    except _p11().PKCS11Error as exc:
        raise _hsm_error(action, exc) from None


_MODULES: dict[str, _Module] = {}
_MODULES_LOCK = threading.Lock()
_KEYS: "weakref.WeakSet[Pkcs11Recipient]" = weakref.WeakSet()


def _module(path: str) -> _Module:
    with _MODULES_LOCK:
        module = _MODULES.get(path)
        if module is None:
            module = _MODULES[path] = _Module(path)
        return module


def _reset_locks_in_child() -> None:
    # A lock held by another thread at fork() stays held forever in the child: start afresh.
    global _MODULES_LOCK
    _MODULES_LOCK = threading.Lock()
    for module in _MODULES.values():
        module.lock = threading.RLock()
    for key in list(_KEYS):
        key._lock = threading.RLock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_locks_in_child)


# -- wrapping and unwrapping inside the token ------------------------------------------------------

def _session_key_template(value: Optional[bytes] = None) -> dict[Any, Any]:
    p11 = _p11()
    template = {
        p11.Attribute.TOKEN: False,
        p11.Attribute.PRIVATE: False,  # works in a public session too; it lives a moment
        p11.Attribute.EXTRACTABLE: True,
    }
    if value is not None:
        template.update({
            p11.Attribute.CLASS: p11.ObjectClass.SECRET_KEY,
            p11.Attribute.KEY_TYPE: p11.KeyType.AES,
            p11.Attribute.VALUE: value,
            p11.Attribute.SENSITIVE: True,  # it only needs to be wrapped, never read back
        })
    return template


def _require_use(kek: _P11SecretKey, method: str, use: str, attribute: str) -> None:
    # python-pkcs11 gives a key object the methods its attributes permit.
    if not hasattr(kek, method):
        raise HsmError(f"the PKCS#11 key {kek.label!r} does not permit {use} ({attribute} is false)")


def _wrap_in_token(session: _P11Session, kek: _P11SecretKey, file_key: bytes) -> bytes:
    """RFC 3394-wraps file_key under kek without the KEK leaving the token."""
    p11 = _p11()
    _require_use(kek, "wrap_key", "wrapping", "CKA_WRAP")
    temporary = session.create_object(_session_key_template(file_key))
    try:
        return kek.wrap_key(temporary, mechanism=p11.Mechanism.AES_KEY_WRAP)
    finally:
        temporary.destroy()


def _unwrap_in_token(session: _P11Session, kek: _P11SecretKey, wrapped: bytes, *,
                     mechanism: Any = None, key_type: Any = None) -> bytes:
    """The key that wrapped decrypts to under kek, unwrapped inside the token and read back.

    Raises:
        AuthenticationError: the token refuses the wrapped key (it fails RFC 3394's integrity
            check: tampered, or wrapped under another key).
        PKCS11Error: anything else (handled by the caller).
    """
    p11 = _p11()
    _require_use(kek, "unwrap_key", "unwrapping", "CKA_UNWRAP")
    template = _session_key_template()
    template[p11.Attribute.SENSITIVE] = False  # the file key has to come back to the host
    try:
        unwrapped = kek.unwrap_key(
            p11.ObjectClass.SECRET_KEY, key_type or p11.KeyType.AES, bytes(wrapped),
            mechanism=mechanism or p11.Mechanism.AES_KEY_WRAP,
            capabilities=p11.MechanismFlag(0), template=template)
    except _refused_unwrap_errors():
        raise AuthenticationError() from None
    try:
        return bytes(unwrapped[p11.Attribute.VALUE])
    finally:
        unwrapped.destroy()


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
        _p11()  # fail early, with the install hint, rather than at first use
        self._uri = make_uri(token_label, key_label)
        self._token_label, self._key_label = token_label, key_label
        self._module_path = _module_path(module)
        self._pin = _pin_bytes(pin)
        self._pin_digest = _pin_digest(self._pin)
        self._pin_wiped = False
        self._lock = threading.RLock()
        self._shared: Optional[_TokenSession] = None
        # (shared session, kek object) of the last lookup
        self._kek: Optional[tuple[_TokenSession, _P11SecretKey]] = None
        self._closed = False
        self._finalizer: Optional[weakref.finalize[[_Module, _TokenSession], Pkcs11Recipient]] = None
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
        wrapped = self._call("wrapping a file key", lambda session, kek: _wrap_in_token(session, kek, file_key))
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
                              lambda session, kek: _unwrap_in_token(session, kek, parsed.wrapped_key))
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
        return self._call("reading key attributes", _read_key_attributes)

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

    def _call(self, action: str, operation: Callable[[_P11Session, _P11SecretKey], _T]) -> _T:
        """Runs operation(session, kek) under the module lock, retrying once on a stale session."""
        with self._lock:
            if self._closed:
                raise ValueError(f"{self!r} is closed")
            module = _module(self._module_path)
            with module.lock:
                for attempt in range(2):
                    try:
                        session, kek = self._session_and_kek(module)
                        return operation(session, kek)
                    except _stale_session_errors() + _stale_handle_errors() as exc:
                        if attempt:
                            raise _hsm_error(f"{action} with {self._uri}", exc) from None
                        if isinstance(exc, _stale_session_errors()) and self._shared is not None:
                            module.discard(self._shared)
                        self._kek = None
                    except _p11().PKCS11Error as exc:
                        raise _hsm_error(f"{action} with {self._uri}", exc) from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _session_and_kek(self, module: _Module) -> tuple[_P11Session, _P11SecretKey]:
        shared = self._acquire(module)
        if self._kek is not None and self._kek[0] is shared:
            return shared.session, self._kek[1]
        kek = self._find_kek(shared)
        self._kek = (shared, kek)
        return shared.session, kek

    def _acquire(self, module: _Module) -> _TokenSession:
        shared = self._shared
        if shared is not None and not shared.dead and shared.pid == os.getpid():
            return shared
        self._kek = None
        shared = module.acquire(self)
        self._shared = shared
        if self._finalizer is not None:
            self._finalizer.detach()  # the old session died or belongs to the parent process
        # Releases the session when this key is closed or garbage-collected (never in another
        # process: release() checks the pid).
        self._finalizer = weakref.finalize(self, _release, module, shared)
        return shared

    def _find_kek(self, shared: _TokenSession) -> _P11SecretKey:
        p11 = _p11()
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
            module = _module(self._module_path)
            with module.lock:
                shared = self._acquire(module)
                _generate_kek(shared, self)


def _release(module: _Module, shared: _TokenSession) -> None:
    with module.lock:
        module.release(shared)


def _read_key_attributes(session: _P11Session, kek: _P11SecretKey) -> dict[str, Any]:
    p11 = _p11()
    names = ("token", "private", "sensitive", "always_sensitive", "extractable",
             "never_extractable", "wrap", "unwrap", "encrypt", "decrypt")
    result: dict[str, Any] = {"key_type": kek.key_type.name, "value_len": kek[p11.Attribute.VALUE_LEN]}
    for name in names:
        result[name] = bool(kek[getattr(p11.Attribute, name.upper())])
    return result


def _generate_kek(shared: _TokenSession, key: Pkcs11Recipient) -> None:
    p11 = _p11()
    errors = p11.exceptions
    action = f"creating {key.uri}"
    existing = _call_module(action, lambda: list(shared.session.get_objects({p11.Attribute.LABEL: key.key_label})))
    if existing:
        raise ValueError(f"token {key.token_label!r} already holds an object labelled "
                         f"{key.key_label!r}: choose another label (a KEK is never replaced)")
    # A read-write session for the token object; it shares the shared session's login and,
    # opened without a PIN, closes without logging the process out.
    writer = _call_module(action, shared.token.open, rw=True)
    try:
        writer.generate_key(
            p11.KeyType.AES, KEK_BITS, label=key.key_label, store=True,
            capabilities=p11.MechanismFlag.WRAP | p11.MechanismFlag.UNWRAP,
            template={p11.Attribute.SENSITIVE: True, p11.Attribute.EXTRACTABLE: False,
                      p11.Attribute.PRIVATE: shared.pin_digest is not None})
    except errors.UserNotLoggedIn:
        raise Pkcs11LoginError(f"creating a key in token {key.token_label!r} needs a login: "
                               f"pass pin= or set {PIN_ENV}") from None
    except errors.PKCS11Error as exc:
        raise _hsm_error(action, exc) from None
    finally:
        try:
            writer.close()
        except errors.PKCS11Error:
            pass


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
