"""PKCS#11 token access for ``keys.pkcs11``: python-pkcs11 loaded per process, one shared
logged-in session per token, and the key operations done inside the token.

``keys.pkcs11`` holds the key type (:class:`~shardseal.keys.pkcs11.Pkcs11Recipient`) and its
documentation (sessions, threads and fork, errors); this module holds what the key type calls
into: loading python-pkcs11 and the module (``Module``, ``module_for``), the shared session of a
token (``TokenSession``, ``Module.acquire``/``release``), and wrapping, unwrapping, reading
attributes and generating a KEK inside a token. What it needs of a key is a ``TokenKey``.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import threading
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Callable, Iterable, Optional, Protocol, TypeVar, Union

from .. import _redact
from ._pkcs11uri import MODULE_ENV, PIN_ENV
from ..errors import AuthenticationError, HsmError, KeyNotFoundError, Pkcs11LoginError

KEK_BITS = 256

PathLike = Union[str, "os.PathLike[str]"]

_T = TypeVar("_T")

# -- what this module uses of python-pkcs11's objects (it has no type information) ------------


class P11Object(Protocol):
    """A python-pkcs11 object handle: attributes by ``Attribute``, ``destroy()``."""

    def __getitem__(self, attribute: Any) -> Any: ...

    def destroy(self) -> None: ...


class P11SecretKey(P11Object, Protocol):
    """A python-pkcs11 ``SecretKey`` (``wrap_key``/``unwrap_key`` exist when permitted)."""

    label: str
    key_type: Any  # a pkcs11.KeyType member

    def wrap_key(self, key: P11Object, *, mechanism: Any = ...) -> bytes: ...

    def unwrap_key(self, object_class: Any, key_type: Any, key_data: bytes, *, mechanism: Any = ...,
                   capabilities: Any = ..., template: Any = ...) -> P11Object: ...


class P11Session(Protocol):
    """A python-pkcs11 ``Session``."""

    def close(self) -> None: ...

    def create_object(self, attrs: dict[Any, Any]) -> P11Object: ...

    def get_key(self, *, object_class: Any = ..., key_type: Any = ...,
                label: Optional[str] = ...) -> P11SecretKey: ...

    def get_objects(self, attrs: dict[Any, Any]) -> Iterable[P11Object]: ...

    def generate_key(self, key_type: Any, key_length: int, *, label: Optional[str] = ...,
                     store: bool = ..., capabilities: Any = ...,
                     template: Optional[dict[Any, Any]] = ...) -> P11SecretKey: ...


class P11Token(Protocol):
    """A python-pkcs11 ``Token``."""

    def open(self, *, rw: bool = ..., user_pin: Optional[str] = ...) -> P11Session: ...


class P11Lib(Protocol):
    """A loaded python-pkcs11 ``lib``."""

    def get_token(self, *, token_label: str) -> P11Token: ...

    def finalize(self) -> None: ...

    def initialize(self) -> None: ...


@dataclass(frozen=True)
class TokenKey:
    """What opening a token's session (and generating a key there) needs of a key, taken from
    it when its session is acquired (the PIN: the key's own bytearray, not a copy)."""

    token_label: str
    key_label: str
    uri: str
    module: str
    pin: Optional[bytearray] = field(repr=False)
    pin_digest: Optional[bytes] = field(repr=False)
    pin_wiped: bool
    owner: object = field(repr=False)  # the key itself, named in messages by its repr


# -- loading python-pkcs11 and the module -------------------------------------------------------

def python_pkcs11() -> ModuleType:
    """python-pkcs11, imported on first use so that ``import shardseal`` never needs it."""
    try:
        import pkcs11
    except ImportError as exc:
        raise ImportError("shardseal.pkcs11 needs python-pkcs11: pip install 'shardseal[pkcs11]'") from exc
    return pkcs11


def _errors(*names: str) -> tuple[type[BaseException], ...]:
    exceptions = python_pkcs11().exceptions
    return tuple(getattr(exceptions, name) for name in names)


def stale_session_errors() -> tuple[type[BaseException], ...]:
    # The session went away (a logout elsewhere in the process, a network HSM that
    # reconnected): worth one retry with a fresh session.
    return _errors("SessionHandleInvalid", "SessionClosed", "UserNotLoggedIn", "DeviceRemoved",
                   "TokenNotPresent")


def stale_handle_errors() -> tuple[type[BaseException], ...]:
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


def hsm_error(action: str, exc: BaseException) -> HsmError:
    detail = str(exc).strip()
    # python-pkcs11 leaves most of its errors empty: the class names the CKR_ code.
    return HsmError(f"PKCS#11 {action} failed: {type(exc).__name__}{': ' + detail if detail else ''}")


def module_path(module: Optional[PathLike]) -> str:
    if module is None:
        module = os.environ.get(MODULE_ENV) or None
        if module is None:
            raise ValueError(f"no PKCS#11 module: pass module= (the path of the token's PKCS#11 "
                             f"library, e.g. /usr/lib/softhsm/libsofthsm2.so) or set {MODULE_ENV}")
    path = os.fspath(module)
    if not isinstance(path, str) or not path:
        raise TypeError("module must be a non-empty str or os.PathLike path")
    return path


def pin_bytes(pin: object) -> Optional[bytearray]:
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


def pin_digest(pin: Optional[bytearray]) -> Optional[bytes]:
    return None if pin is None else hmac.new(_PIN_DIGEST_KEY, pin, hashlib.sha256).digest()


class TokenSession:
    """One session on one token, shared by every key of that token in this process."""

    def __init__(self, token: P11Token, session: P11Session, pin_digest: Optional[bytes]) -> None:
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


class Module:
    """A PKCS#11 library loaded in this process and its shared sessions (one per token).

    Every call into the library happens under ``lock``: python-pkcs11 calls ``C_Initialize``
    without locking callbacks, which tells the library that calls are never concurrent.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.lock = threading.RLock()
        self._lib: Optional[P11Lib] = None
        self._pid: Optional[int] = None
        self._tokens: dict[str, TokenSession] = {}

    def library(self) -> P11Lib:
        """The python-pkcs11 library object, (re-)initialised for this process. Holds lock."""
        pid = os.getpid()
        lib = self._lib
        if lib is None:
            try:
                lib = self._lib = python_pkcs11().lib(self.path)
            except python_pkcs11().PKCS11Error as exc:
                raise HsmError(f"cannot load the PKCS#11 module: {exc}") from None
        elif self._pid != pid:
            self._restart_in_child(lib)
        self._pid = pid
        return lib

    def _restart_in_child(self, lib: P11Lib) -> None:
        # PKCS#11 says a forked child must call C_Initialize before anything else and must not
        # use its parent's sessions: forget them (without closing: they are the parent's).
        self._tokens = {}
        try:
            lib.finalize()
        except python_pkcs11().PKCS11Error:
            pass  # some modules reset themselves in the child and say "not initialised"
        try:
            lib.initialize()
        except python_pkcs11().PKCS11Error as exc:
            if "already initialized" not in str(exc):
                raise hsm_error(f"re-initialisation of {self.path} after fork", exc) from None

    def acquire(self, key: TokenKey) -> TokenSession:
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
        elif not _same_pin(shared.pin_digest, key.pin_digest):
            raise Pkcs11LoginError(
                f"this process is logged in to PKCS#11 token {key.token_label!r} with "
                f"{'no PIN' if shared.pin_digest is None else 'another PIN'}: PKCS#11 shares one "
                "login per token and process, so give every key of a token the same PIN")
        shared.users += 1
        return shared

    def release(self, shared: TokenSession) -> None:
        """Drops one user of a shared session; the last one closes it. Holds lock."""
        if shared.dead or shared.pid != os.getpid():
            return  # already closed, or inherited from a parent process
        shared.users -= 1
        if shared.users <= 0:
            self.discard(shared)

    def discard(self, shared: TokenSession) -> None:
        """Closes a session that went stale so that the next use opens a fresh one."""
        label = next((name for name, s in self._tokens.items() if s is shared), None)
        if label is not None:
            del self._tokens[label]
        shared.close_quietly()


def _same_pin(a: Optional[bytes], b: Optional[bytes]) -> bool:
    if a is None or b is None:
        return a is b
    return hmac.compare_digest(a, b)


def _open_session(lib: P11Lib, key: TokenKey) -> TokenSession:
    errors = python_pkcs11().exceptions
    try:
        token = lib.get_token(token_label=key.token_label)
    except errors.NoSuchToken:
        raise KeyNotFoundError(f"PKCS#11 token {key.token_label!r} not found in module "
                               f"{key.module} (needed for {key.uri})", (key.uri,)) from None
    except errors.MultipleTokensReturned:
        raise HsmError(f"several PKCS#11 tokens are labelled {key.token_label!r} in "
                       f"{key.module}") from None
    except errors.PKCS11Error as exc:
        raise hsm_error(f"token lookup for {key.uri}", exc) from None
    if key.pin is None:
        if key.pin_wiped:
            raise Pkcs11LoginError(f"the PIN of {key.owner!r} was wiped: create a new key object")
        return TokenSession(token, _call_module(f"opening a session on {key.uri}", token.open), None)
    try:
        session = _login(token, key, key.pin)
    except errors.UserAlreadyLoggedIn:
        # Code outside shardseal logged this process in: its login covers this session too.
        session = _call_module(f"opening a session on {key.uri}", token.open)
    return TokenSession(token, session, key.pin_digest)


def _login(token: P11Token, key: TokenKey, pin: bytearray) -> P11Session:
    """A session logged in with pin, key's PIN. Keeps the PIN's str copy out of tracebacks."""
    errors = python_pkcs11().exceptions
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
        failure = hsm_error(f"login to token {key.token_label!r}", exc)
    finally:
        del pin_text
    if failure is not None:
        raise failure
    raise Pkcs11LoginError(f"PKCS#11 login to token {key.token_label!r} failed: {message}")


def _call_module(action: str, function: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
    try:
        return function(*args, **kwargs)
    except python_pkcs11().PKCS11Error as exc:
        raise hsm_error(action, exc) from None


_MODULES: dict[str, Module] = {}
_MODULES_LOCK = threading.Lock()


def module_for(path: str) -> Module:
    with _MODULES_LOCK:
        module = _MODULES.get(path)
        if module is None:
            module = _MODULES[path] = Module(path)
        return module


def _reset_locks_in_child() -> None:
    # A lock held by another thread at fork() stays held forever in the child: start afresh.
    global _MODULES_LOCK
    _MODULES_LOCK = threading.Lock()
    for module in _MODULES.values():
        module.lock = threading.RLock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_locks_in_child)


# -- wrapping and unwrapping inside the token ------------------------------------------------------

def _session_key_template(value: Optional[bytes] = None) -> dict[Any, Any]:
    p11 = python_pkcs11()
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


def _require_use(kek: P11SecretKey, method: str, use: str, attribute: str) -> None:
    # python-pkcs11 gives a key object the methods its attributes permit.
    if not hasattr(kek, method):
        raise HsmError(f"the PKCS#11 key {kek.label!r} does not permit {use} ({attribute} is false)")


def wrap_in_token(session: P11Session, kek: P11SecretKey, file_key: bytes) -> bytes:
    """RFC 3394-wraps file_key under kek without the KEK leaving the token."""
    p11 = python_pkcs11()
    _require_use(kek, "wrap_key", "wrapping", "CKA_WRAP")
    temporary = session.create_object(_session_key_template(file_key))
    try:
        return kek.wrap_key(temporary, mechanism=p11.Mechanism.AES_KEY_WRAP)
    finally:
        temporary.destroy()


def unwrap_in_token(session: P11Session, kek: P11SecretKey, wrapped: bytes, *,
                     mechanism: Any = None, key_type: Any = None) -> bytes:
    """The key that wrapped decrypts to under kek, unwrapped inside the token and read back.

    Raises:
        AuthenticationError: the token refuses the wrapped key (it fails RFC 3394's integrity
            check: tampered, or wrapped under another key).
        PKCS11Error: anything else (handled by the caller).
    """
    p11 = python_pkcs11()
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


def release(module: Module, shared: TokenSession) -> None:
    with module.lock:
        module.release(shared)


def read_key_attributes(session: P11Session, kek: P11SecretKey) -> dict[str, Any]:
    p11 = python_pkcs11()
    names = ("token", "private", "sensitive", "always_sensitive", "extractable",
             "never_extractable", "wrap", "unwrap", "encrypt", "decrypt")
    result: dict[str, Any] = {"key_type": kek.key_type.name, "value_len": kek[p11.Attribute.VALUE_LEN]}
    for name in names:
        result[name] = bool(kek[getattr(p11.Attribute, name.upper())])
    return result


def generate_kek(shared: TokenSession, key: TokenKey) -> None:
    p11 = python_pkcs11()
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
        raise hsm_error(action, exc) from None
    finally:
        try:
            writer.close()
        except errors.PKCS11Error:
            pass
