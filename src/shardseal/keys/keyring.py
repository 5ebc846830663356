"""Keyrings: files of named 256-bit key-encryption keys (KEKs) that wrap file keys.

A keyring wraps each file's random key under one of its KEKs (AES key wrap, RFC 3394), so
that retiring a KEK means re-wrapping key stanzas, never re-encrypting payloads::

    ring = Keyring.create("team.keyring")        # mode 0600
    ring.add("2026-q4")                          # a new active KEK, saved at once
    blob = shardseal.encrypt(data, recipients=[ring.recipient()])   # the newest active KEK
    shardseal.decrypt(blob, identities=[Keyring.load("team.keyring")])

Every KEK has a name, an id, a creation time and a state:

* ``active``: wraps and unwraps; ``recipient()`` picks the newest active KEK by default;
* ``decrypt-only``: unwraps only (a KEK being retired: re-wrap its files, then destroy it);
* ``destroyed``: its key bytes are removed from the file for good. The id, name, creation time
  and state stay, so that an error can say which destroyed KEK a file needed. There is no way
  back from this state.

``kek_id = HKDF-Expand-SHA-512(KEK, "shardseal/v1/keyring-kek-id", 16)``, shown as hex; the
keyring stanza is ``kek_id || AES-KW(KEK, file_key)`` (docs/FORMAT.md section 2.7).

The file is UTF-8 JSON::

    {
      "format": "shardseal-keyring-1",
      "keys": [
        {"id": "<32 hex digits>", "name": "2026-q4", "created": "2026-11-25T23:30:00Z",
         "state": "active", "key": "<the 32 key bytes, standard base64>"}
      ]
    }

``key`` is absent exactly when the state is ``destroyed``. docs/FORMAT.md section 11 is the
full specification. Reading is strict: anything else
(an unknown format or field, duplicate names or ids, bad or non-canonical base64, a key that is not 32 bytes, an
id that does not match its key, an unknown state, a destroyed entry that still holds key bytes,
a file over 1 MiB) is a :class:`KeyringFileError`. Keyring files are written atomically (a
temporary file in the same folder, fsynced, renamed over the old one, the folder fsynced) with
mode 0600 from their creation; reading one that group or others may access warns with
:class:`~shardseal.keyfile.KeyFilePermissionWarning`.

A keyring object saves after every change. ``add`` and ``set_state`` hold an exclusive lock
(``flock`` on the keyring's folder) and first bring the object up to date
with the file, so that processes changing one keyring at once never lose each other's keys:
a key added elsewhere appears, and a key destroyed elsewhere is wiped here too.

No message, ``repr`` or log here ever contains key material: only paths, names, ids and states.
Key bytes are held in bytearrays that :meth:`Keyring.wipe` zeroes (Python itself may still hold
copies, e.g. the decoded JSON text; nothing can be done about those).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import os
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import ContextManager, Iterator, NoReturn, Optional, Union

from cryptography.hazmat.primitives import keywrap

from ..core import backend as _backend
from ..core.buffers import BytesLike
from .. import _redact
from . import _deprecated, stanzas as _stanzas
from .envelope import Identity, Recipient, WrapContext
from .._atomic import folder_lock
from ._secretfile import read_secret_file
# Saves go through this module-level name: tests patch it to make a save fail.
from ._secretfile import write_secret_file as _write_file
from ..errors import AuthenticationError, KeyringFileError  # KeyringFileError: kept importable from here


__all__ = [
    "ACTIVE",
    "DECRYPT_ONLY",
    "DESTROYED",
    "FORMAT",
    "STATES",
    "KekInfo",
    "Keyring",
    "KeyringFileError",
    "KeyringIdentity",
    "KeyringRecipient",
    "kek_id",
    "unwrap_key",
    "unwrap_key_with_padding",
    "wrap_key",
    "wrap_key_with_padding",
]

PathLike = Union[str, "os.PathLike[str]"]

FORMAT = "shardseal-keyring-1"
ACTIVE, DECRYPT_ONLY, DESTROYED = "active", "decrypt-only", "destroyed"
STATES = (ACTIVE, DECRYPT_ONLY, DESTROYED)
KEK_SIZE = 32
MAX_KEYRING_FILE_SIZE = 1 << 20
MAX_NAME_LENGTH = 128
STANZA_SIZE = _stanzas.KEY_ID_SIZE + _stanzas.AES_KW_SIZE

_KEK_ID_INFO = b"shardseal/v1/keyring-kek-id"
_TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
# ASCII digits only: Python's \d would also take other scripts' digits.
_TIME_PATTERN = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z")
_ID_PATTERN = re.compile(r"[0-9a-f]{32}")
_AES_KEY_SIZES = (16, 24, 32)
_ENTRY_FIELDS = frozenset({"id", "name", "created", "state", "key"})


@dataclass(frozen=True)
class KekInfo:
    """The public facts about one KEK of a keyring (never its key bytes).

    Attributes:
        id: the KEK id, 32 lowercase hex digits (what key stanzas and errors name).
        name: the name given to ``Keyring.add``.
        created: when it was added (UTC, whole seconds).
        state: ``"active"``, ``"decrypt-only"`` or ``"destroyed"``.
    """

    id: str
    name: str
    created: datetime
    state: str


# -- AES key wrap (RFC 3394) and with padding (RFC 5649) -------------------------------------

def _buffer(value: BytesLike, what: str) -> memoryview:
    if isinstance(value, str):
        raise TypeError(f"{what} must be bytes, not str")
    try:
        # numpy's stubs declare ndarray a Buffer only for Python 3.12+ (core/buffers.py).
        return memoryview(value).cast("B")  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(f"{what} must be a bytes-like object, not {type(value).__name__}") from None


def _check_kek(kek: BytesLike) -> memoryview:
    view = _buffer(kek, "the key-encryption key")
    if view.nbytes not in _AES_KEY_SIZES:
        raise ValueError(f"the key-encryption key must be 16, 24 or 32 bytes, got {view.nbytes}")
    return view


def wrap_key(kek: BytesLike, key: BytesLike) -> bytes:
    """AES key wrap (RFC 3394, default IV) of key under kek.

    Args:
        kek: the AES key-encryption key: 16, 24 or 32 bytes.
        key: the key to wrap: a multiple of 8 bytes, at least 16 (NIST SP 800-38F).

    Returns:
        The wrapped key, 8 bytes longer than key.

    Raises:
        TypeError: an argument is not bytes-like.
        ValueError: a length out of range.
    """
    kek_view, key_view = _check_kek(kek), _buffer(key, "the key to wrap")
    if key_view.nbytes < 16 or key_view.nbytes % 8:
        raise ValueError(f"AES key wrap takes a key of 16 or more bytes, a multiple of 8; "
                         f"got {key_view.nbytes}")
    return keywrap.aes_key_wrap(kek_view, key_view)


def unwrap_key(kek: BytesLike, wrapped: BytesLike) -> bytes:
    """Undoes ``wrap_key``, checking the RFC 3394 integrity value.

    Raises:
        TypeError: an argument is not bytes-like.
        ValueError: kek or wrapped has an impossible length (wrapped: a multiple of 8 bytes,
            at least 24).
        AuthenticationError: the integrity check fails (a wrong KEK or a damaged wrapped key).
    """
    kek_view, wrapped_view = _check_kek(kek), _buffer(wrapped, "the wrapped key")
    if wrapped_view.nbytes < 24 or wrapped_view.nbytes % 8:
        raise ValueError(f"an AES-wrapped key is 24 or more bytes, a multiple of 8; got {wrapped_view.nbytes}")
    try:
        return keywrap.aes_key_unwrap(kek_view, wrapped_view)
    except keywrap.InvalidUnwrap:
        raise AuthenticationError("the wrapped key does not authenticate") from None


def wrap_key_with_padding(kek: BytesLike, key: BytesLike) -> bytes:
    """AES key wrap with padding (RFC 5649) of key under kek: any key of 1 byte or more.

    Raises:
        TypeError: an argument is not bytes-like.
        ValueError: kek is not 16, 24 or 32 bytes, or key is empty (or 4 GiB or more).
    """
    kek_view, key_view = _check_kek(kek), _buffer(key, "the key to wrap")
    if not 1 <= key_view.nbytes < 2**32:
        raise ValueError(f"AES key wrap with padding takes 1 byte to 4 GiB, got {key_view.nbytes}")
    return keywrap.aes_key_wrap_with_padding(kek_view, key_view)


def unwrap_key_with_padding(kek: BytesLike, wrapped: BytesLike) -> bytes:
    """Undoes ``wrap_key_with_padding``, checking the RFC 5649 integrity value and padding.

    Raises:
        TypeError: an argument is not bytes-like.
        ValueError: kek or wrapped has an impossible length (wrapped: a multiple of 8 bytes,
            at least 16).
        AuthenticationError: the integrity check or the padding check fails.
    """
    kek_view, wrapped_view = _check_kek(kek), _buffer(wrapped, "the wrapped key")
    if wrapped_view.nbytes < 16 or wrapped_view.nbytes % 8:
        raise ValueError(f"an AES-KWP-wrapped key is 16 or more bytes, a multiple of 8; got {wrapped_view.nbytes}")
    try:
        return keywrap.aes_key_unwrap_with_padding(kek_view, wrapped_view)
    except keywrap.InvalidUnwrap:
        raise AuthenticationError("the wrapped key does not authenticate") from None


def kek_id(kek: BytesLike) -> bytes:
    """The 16-byte public id of a 32-byte KEK: HKDF-Expand-SHA-512(kek, keyring-kek-id info).

    Raises:
        TypeError: kek is not bytes-like.
        ValueError: kek is not 32 bytes.
    """
    view = _buffer(kek, "a keyring KEK")
    if view.nbytes != KEK_SIZE:
        raise ValueError(f"a keyring KEK must be {KEK_SIZE} bytes, got {view.nbytes}")
    derived: bytes = _backend.impl.hkdf_expand_sha512(view, _KEK_ID_INFO, _stanzas.KEY_ID_SIZE)
    return derived


# -- one KEK ------------------------------------------------------------------------------

class _Kek:
    """A keyring entry. ``key`` is a bytearray, or None once destroyed or wiped."""

    __slots__ = ("id", "name", "created", "state", "key")

    def __init__(self, id: bytes, name: str, created: datetime, state: str, key: Optional[bytearray]) -> None:
        self.id, self.name, self.created, self.state, self.key = id, name, created, state, key

    def info(self) -> KekInfo:
        return KekInfo(self.id.hex(), self.name, self.created, self.state)

    def wipe(self) -> None:
        if self.key is not None:
            self.key[:] = bytes(len(self.key))
            self.key = None

    def describe(self) -> str:
        return f"keyring key {self.name!r} (id {self.id.hex()})"

    def __repr__(self) -> str:
        return f"<KEK {self.name!r} id={self.id.hex()} {self.state}>"


def _check_name(name: object) -> str:
    """A valid KEK name, or ValueError (the name itself is not quoted: it may be anything)."""
    if not isinstance(name, str):
        raise TypeError(f"a key name must be a str, not {type(name).__name__}")
    if not 1 <= len(name) <= MAX_NAME_LENGTH or not name.isprintable() or name != name.strip():
        raise ValueError(f"a key name must be 1 to {MAX_NAME_LENGTH} printable characters "
                         "without leading or trailing spaces")
    if _ID_PATTERN.fullmatch(name):
        # Keys are looked up by name or id: a name that reads as an id would be ambiguous.
        raise ValueError("a key name must not look like a key id (32 hex digits)")
    return name


def _stamp(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime(_TIME_FORMAT)


_PREFIX = "keyring:"


def _split_keyring_string(text: str) -> tuple[str, str]:
    if not isinstance(text, str):
        raise TypeError(f"a keyring string must be a str, not {type(text).__name__}")
    if not text.startswith(_PREFIX) or len(text) == len(_PREFIX):
        raise ValueError("not a keyring string (expected keyring:PATH or keyring:PATH#NAME)")
    path, _, name = text[len(_PREFIX):].partition("#")
    return path, name


# -- the recipient ------------------------------------------------------------------------

class KeyringRecipient(Recipient):
    """An active keyring KEK as a recipient: it wraps file keys (RFC 3394) under that KEK.

    Made by ``Keyring.recipient``. It shares its key bytes with the keyring (no copy): when the
    keyring is wiped, or the KEK leaves the active state, the recipient stops wrapping.
    ``wipe()`` detaches it from the keyring; ``Keyring.wipe()`` zeroes the bytes.
    """

    stanza_type = _stanzas.KEYRING

    def __init__(self, kek: _Kek, keyring_path: str) -> None:
        self._kek: Optional[_Kek] = kek
        self._id = kek.id
        self._name = kek.name
        self._keyring_path = keyring_path

    @property
    def key_id(self) -> str:
        """The KEK id (hex)."""
        return self._id.hex()

    @property
    def name(self) -> str:
        """The KEK's name in its keyring."""
        return self._name

    def wrap(self, file_key: bytes, context: WrapContext) -> bytes:
        """The keyring stanza body: KEK id || AES-KW(KEK, file_key).

        Raises:
            ValueError: the recipient was wiped, the keyring wiped, or the KEK is no longer
                active; file_key is not 32 bytes.
        """
        kek = self._kek
        if kek is not None and kek.state != ACTIVE:
            raise ValueError(f"{kek.describe()} is {kek.state}: only active keys wrap")
        if kek is None or kek.key is None:
            raise ValueError(f"keyring key {self._name!r} (id {self.key_id}) was wiped from memory")
        if len(file_key) != _stanzas.FILE_KEY_SIZE:
            raise ValueError(f"the file key must be {_stanzas.FILE_KEY_SIZE} bytes, got {len(file_key)}")
        return _stanzas.keyring_body(self._id, wrap_key(kek.key, file_key))

    def stanza_size(self) -> int:
        """The keyring stanza body size: 56 bytes."""
        return STANZA_SIZE

    def wipe(self) -> None:
        """Detaches this recipient from its keyring's key bytes: it no longer wraps."""
        self._kek = None

    @classmethod
    def from_string(cls, text: str) -> "KeyringRecipient":
        """The recipient ``keyring:PATH`` (the newest active KEK) or ``keyring:PATH#NAME`` (the
        KEK named or with that id) names: loads the keyring file.

        Raises:
            TypeError: text is not a str.
            ValueError: not a ``keyring:`` string; no such active KEK.
            OSError: the keyring file cannot be read.
            KeyringFileError: it is not a keyring file.
        """
        path, name = _split_keyring_string(text)
        return Keyring.load(path).recipient(name or None)

    def to_string(self) -> str:
        """``keyring:PATH#NAME``: the keyring file and the KEK's name (public, no key)."""
        return f"{_PREFIX}{self._keyring_path}#{self._name}"

    def __repr__(self) -> str:
        return f"KeyringRecipient(name={self._name!r}, id={self.key_id}, keyring={self._keyring_path!r})"


# -- the keyring --------------------------------------------------------------------------

class Keyring(Identity):
    """A keyring file's KEKs, in memory. It is the identity that opens keyring stanzas (also
    named ``KeyringIdentity``; its string form is ``keyring:PATH``).

    Make one with ``Keyring.create`` or ``Keyring.load``; every change (``add``,
    ``set_state``) is saved at once. As an identity it opens stanzas wrapped under any of its
    active or decrypt-only KEKs; a stanza that names a destroyed KEK is not opened (decryption
    then raises ``KeyNotFoundError`` naming that KEK's id). Use it in a ``with`` block to wipe
    its keys at the end.

    Raises:
        TypeError: the constructor is called directly with a path that is not path-like.
    """

    stanza_type = _stanzas.KEYRING

    def __init__(self, path: PathLike, entries: list[_Kek]) -> None:
        # Internal: callers use create() or load().
        self._path = Path(os.fspath(path))
        self._entries = list(entries)
        self._wiped = False

    # -- construction ---------------------------------------------------------------------

    @classmethod
    def create(cls, path: PathLike, *, force: bool = False, overwrite: Optional[bool] = None) -> "Keyring":
        """Writes a new empty keyring file (mode 0600) and returns it.

        Raises:
            FileExistsError: path exists and force is false (``overwrite=`` is the old,
                deprecated spelling of ``force=``).
            OSError: the file cannot be written.
        """
        ring = cls(path, [])
        force = _deprecated.force_flag(force, overwrite, "Keyring.create")
        _write_file(ring._path, _encode([]), force=force)
        return ring

    @classmethod
    def load(cls, path: PathLike) -> "Keyring":
        """Reads a keyring file.

        A regular file that group or others may access raises a ``KeyFilePermissionWarning``
        (a warning, not an error) naming the ``chmod`` that fixes it.

        Raises:
            OSError: the file cannot be opened or read (IsADirectoryError for a folder).
            KeyringFileError: it is not a valid keyring file.
        """
        name = os.fspath(path)
        data = read_secret_file(
            name, what="keyring file", limit=MAX_KEYRING_FILE_SIZE, stacklevel=2,
            too_large=lambda: KeyringFileError(f"{name}: not a shardseal keyring (larger than "
                                               f"{MAX_KEYRING_FILE_SIZE} bytes)"),
        )
        return cls(name, _decode(data, name))

    @classmethod
    def from_string(cls, text: str) -> "Keyring":
        """The keyring ``keyring:PATH`` names, loaded (as ``load``).

        Raises:
            TypeError: text is not a str.
            ValueError: not a ``keyring:PATH`` string (a ``#NAME`` is for recipients).
            OSError, KeyringFileError: as ``load``.
        """
        path, name = _split_keyring_string(text)
        if name:
            raise ValueError("an identity is a whole keyring: give keyring:PATH without #NAME")
        return cls.load(path)

    def to_string(self) -> str:
        """``keyring:PATH``: where the keyring file is (public: no key)."""
        return f"{_PREFIX}{os.fspath(self._path)}"

    # -- public facts ---------------------------------------------------------------------

    @property
    def path(self) -> Path:
        """The keyring file's path."""
        return self._path

    @property
    def keys(self) -> tuple[KekInfo, ...]:
        """Every KEK's public facts, oldest first (destroyed ones included)."""
        return tuple(entry.info() for entry in self._entries)

    @property
    def key_ids(self) -> tuple[str, ...]:
        """The ids (hex) of the KEKs that can unwrap: the active and decrypt-only ones."""
        return tuple(e.id.hex() for e in self._entries if e.key is not None)

    # -- changes --------------------------------------------------------------------------

    def add(self, name: str) -> KekInfo:
        """Adds a new random active KEK named name, and saves the keyring.

        Raises:
            TypeError: name is not a str.
            ValueError: an invalid name or one already in the keyring (destroyed keys keep
                their names), or the keyring was wiped.
            OSError: the file cannot be written (the keyring is then left unchanged).
        """
        self._check_not_wiped()
        name = _check_name(name)
        with self._locked():
            if any(entry.name == name for entry in self._entries):
                raise ValueError(f"keyring {self._path} already has a key named {name!r}")
            key = bytearray(os.urandom(KEK_SIZE))
            created = datetime.now(timezone.utc).replace(microsecond=0)
            entry = _Kek(kek_id(key), name, created, ACTIVE, key)
            self._entries.append(entry)
            try:
                self._write()
            except BaseException:
                self._entries.pop()
                entry.wipe()
                raise
        return entry.info()

    def set_state(self, name_or_id: str, state: str) -> KekInfo:
        """Moves a KEK to another state and saves the keyring.

        ``"destroyed"`` removes the key bytes from the file and zeroes them in memory; a
        destroyed KEK cannot come back. Setting the state a KEK already has changes nothing.

        Raises:
            TypeError: name_or_id is not a str.
            ValueError: an unknown state, no such KEK, a destroyed KEK asked to come back, or
                the keyring was wiped.
            OSError: the file cannot be written (the KEK then keeps its old state).
        """
        self._check_not_wiped()
        if state not in STATES:
            raise ValueError(f"state must be one of {', '.join(STATES)}, got {state!r}")
        with self._locked():
            entry = self._find(name_or_id)
            if entry.state == state:
                return entry.info()
            if entry.state == DESTROYED:
                raise ValueError(f"{entry.describe()} was destroyed: it cannot become {state}")
            old_state, old_key = entry.state, entry.key
            entry.state = state
            if state == DESTROYED:
                entry.key = None  # saved without its bytes; zeroed only once that file is in place
            try:
                self._write()
            except BaseException:
                entry.state, entry.key = old_state, old_key
                raise
        if state == DESTROYED and old_key is not None:
            old_key[:] = bytes(len(old_key))
        return entry.info()

    def save(self) -> None:
        """Writes the keyring to its file, atomically, with mode 0600.

        Raises:
            ValueError: the keyring was wiped (saving it would destroy every key).
            OSError: the file cannot be written.
        """
        self._check_not_wiped()
        with self._lock():
            self._write()

    def _write(self) -> None:
        _write_file(self._path, _encode(self._entries), force=True)

    def _lock(self) -> ContextManager[None]:
        """The keyring's folder lock (a save renames a new file over the keyring)."""
        return folder_lock(self._path.parent)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Holds the lock with this object brought up to date with the file (see _reload)."""
        with self._lock():
            self._reload()
            yield

    def _reload(self) -> None:
        """Takes in what other processes saved since this object read the file: new keys are
        added, state changes applied (a key destroyed there is wiped here), and keys no longer
        in the file dropped. Entries are updated in place, so recipients made from this
        keyring see the changes."""
        try:
            with open(self._path, "rb") as file:
                data = file.read(MAX_KEYRING_FILE_SIZE + 1)
        except FileNotFoundError:
            return  # not saved yet (or removed): this object's state is all there is
        if len(data) > MAX_KEYRING_FILE_SIZE:
            raise KeyringFileError(f"{self._path}: not a shardseal keyring (larger than "
                                   f"{MAX_KEYRING_FILE_SIZE} bytes)")
        on_disk = _decode(data, os.fspath(self._path))
        mine = {entry.id: entry for entry in self._entries}
        merged = []
        for fresh in on_disk:
            entry = mine.get(fresh.id)
            if entry is None:
                merged.append(fresh)
                continue
            entry.state = fresh.state
            if fresh.key is None:
                entry.wipe()
            fresh.wipe()
            merged.append(entry)
        self._entries = merged

    def wipe(self) -> None:
        """Zeroes every key in memory. The keyring (and its recipients) can no longer wrap,
        unwrap or save; the file is untouched."""
        for entry in self._entries:
            entry.wipe()
        self._wiped = True

    # -- wrapping -------------------------------------------------------------------------

    def recipient(self, name_or_id: Optional[str] = None) -> KeyringRecipient:
        """A recipient that wraps under one active KEK: the named one, or by default the
        newest active one.

        Raises:
            TypeError: name_or_id is not a str or None.
            ValueError: no such KEK, the named KEK is not active, no active KEK at all, or the
                keyring was wiped.
        """
        self._check_not_wiped()
        if name_or_id is None:
            entry = self._newest_active()
        else:
            entry = self._find(name_or_id)
            if entry.state != ACTIVE:
                raise ValueError(f"{entry.describe()} is {entry.state}: only active keys wrap")
        return KeyringRecipient(entry, str(self._path))

    def unwrap(self, body: bytes, context: WrapContext) -> Optional[bytes]:
        """The file key of a keyring stanza wrapped under one of this keyring's KEKs, or None
        for a stanza naming another KEK or a destroyed one.

        Raises:
            FormatError: a malformed stanza body.
            AuthenticationError: the stanza names a KEK of this keyring but does not unwrap
                (it was damaged or forged).
            ValueError: the keyring was wiped.
        """
        self._check_not_wiped()
        wanted, wrapped = _stanzas.parse_keyring(body)
        for entry in self._entries:
            if entry.id == wanted:
                return None if entry.key is None else unwrap_key(entry.key, wrapped)
        return None

    # -- helpers --------------------------------------------------------------------------

    def _check_not_wiped(self) -> None:
        if self._wiped:
            raise ValueError(f"keyring {self._path} was wiped from memory; load it again")

    def _find(self, name_or_id: str) -> _Kek:
        if not isinstance(name_or_id, str):
            raise TypeError(f"name_or_id must be a str, not {type(name_or_id).__name__}")
        as_id = name_or_id.lower()
        for entry in self._entries:
            if entry.name == name_or_id or entry.id.hex() == as_id:
                return entry
        raise ValueError(f"keyring {self._path} has no key named {name_or_id!r} or with that id")

    def _newest_active(self) -> _Kek:
        active = [(entry.created, index, entry) for index, entry in enumerate(self._entries)
                  if entry.state == ACTIVE]
        if not active:
            raise ValueError(f"keyring {self._path} has no active key (add one first)")
        return max(active, key=lambda item: item[:2])[2]

    def __enter__(self) -> "Keyring":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.wipe()

    def __repr__(self) -> str:
        keys = ", ".join(f"{e.name!r} {e.id.hex()} {e.state}" for e in self._entries)
        return f"Keyring({str(self._path)!r}, keys=[{keys}])"


# -- the file format ----------------------------------------------------------------------

def _encode(entries: list[_Kek]) -> bytes:
    keys = []
    for entry in entries:
        item = {"id": entry.id.hex(), "name": entry.name, "created": _stamp(entry.created),
                "state": entry.state}
        if entry.key is not None:
            item["key"] = base64.b64encode(entry.key).decode("ascii")
        keys.append(item)
    document = {"format": FORMAT, "keys": keys}
    return (json.dumps(document, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def _decode(data: bytes, name: str) -> list[_Kek]:
    """The entries of a keyring file's contents (see the module documentation).

    Raises:
        KeyringFileError: anything malformed. Messages never quote the data.
    """
    document = _parse_json(data, name)
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise KeyringFileError(f"{name}: not a shardseal keyring (its format is not '{FORMAT}')")
    if set(document) != {"format", "keys"} or not isinstance(document["keys"], list):
        raise KeyringFileError(f"{name}: not a valid keyring: it must hold exactly 'format' and "
                               "a 'keys' list")
    entries: list[_Kek] = []
    try:
        for number, item in enumerate(document["keys"], 1):
            entries.append(_decode_entry(item, f"{name}: key entry {number}"))
        _check_unique(entries, name)
    except KeyringFileError:
        for entry in entries:  # the keys read so far are not handed out: zero them
            entry.wipe()
        raise
    return entries


def _parse_json(data: bytes, name: str) -> object:
    def no_duplicates(pairs: list[tuple[str, object]]) -> dict[str, object]:
        names = [key for key, _ in pairs]
        if len(set(names)) != len(names):
            raise KeyringFileError(f"{name}: not a valid keyring: a JSON object repeats a field")
        return dict(pairs)

    def no_constants(_: str) -> NoReturn:
        raise KeyringFileError(f"{name}: not a valid keyring: NaN or Infinity in the JSON")

    def bounded_int(text: str) -> int:
        # No keyring field is a number; a long one must not reach int(), which refuses over
        # 4,300 digits with a bare ValueError.
        if len(text) > 20:
            raise KeyringFileError(f"{name}: not a valid keyring: a number of {len(text)} characters")
        return int(text)

    # The errors are raised outside the except blocks: a decoding error kept as __context__
    # would hold the whole file (UnicodeDecodeError.object, JSONDecodeError.doc), keys included.
    text = _redact.utf8_text(data)
    if text is None:
        raise KeyringFileError(f"{name}: not a shardseal keyring (not UTF-8 text)")
    try:
        return json.loads(text, object_pairs_hook=no_duplicates, parse_constant=no_constants,
                          parse_int=bounded_int)
    except RecursionError:  # Python's parser recurses per nesting level; holds no file bytes
        raise KeyringFileError(f"{name}: not a shardseal keyring (JSON nested too deeply)") from None
    except json.JSONDecodeError as exc:
        # exc.msg and the position never quote the text itself.
        where = f"{exc.msg} at line {exc.lineno} column {exc.colno}"
    raise KeyringFileError(f"{name}: not a shardseal keyring (not JSON: {where})")


def _decode_entry(item: object, where: str) -> _Kek:
    if not isinstance(item, dict):
        raise KeyringFileError(f"{where} is not a JSON object")
    if not set(item) <= _ENTRY_FIELDS or not {"id", "name", "created", "state"} <= set(item):
        raise KeyringFileError(f"{where} must have the fields id, name, created, state and "
                               "(unless destroyed) key, and no others")
    id_hex, name, created, state = item["id"], item["name"], item["created"], item["state"]
    try:
        name = _check_name(name)
    except (TypeError, ValueError) as exc:
        raise KeyringFileError(f"{where} has an invalid name: {exc}") from None
    where = f"{where} ({name!r})"
    if not isinstance(id_hex, str) or not _ID_PATTERN.fullmatch(id_hex):
        raise KeyringFileError(f"{where}: its id must be 32 lowercase hex digits")
    if state not in STATES:
        raise KeyringFileError(f"{where}: unknown state (expected one of {', '.join(STATES)})")
    created = _parse_time(created, where)
    key = _decode_key(item, state, where)
    if key is not None and kek_id(key).hex() != id_hex:
        key[:] = bytes(len(key))
        raise KeyringFileError(f"{where}: its id {id_hex} does not match its key")
    return _Kek(bytes.fromhex(id_hex), name, created, state, key)


def _decode_key(item: dict[str, object], state: str, where: str) -> Optional[bytearray]:
    if state == DESTROYED:
        if "key" in item:
            raise KeyringFileError(f"{where} is destroyed but still holds key bytes")
        return None
    encoded = item.get("key")
    if not isinstance(encoded, str):
        raise KeyringFileError(f"{where} is {state} but has no key (a base64 string)")
    key = None
    ascii_key = _redact.ascii_bytes(encoded)
    if ascii_key is not None:
        with contextlib.suppress(binascii.Error):
            key = bytearray(base64.b64decode(ascii_key, validate=True))
    if key is None:  # raised here, not in an except block: the key is not kept as __context__
        raise KeyringFileError(f"{where}: its key is not valid base64")
    if len(key) != KEK_SIZE:
        size = len(key)
        key[:] = bytes(size)
        raise KeyringFileError(f"{where}: its key is {size} bytes, not {KEK_SIZE}")
    if base64.b64encode(key).decode("ascii") != encoded:
        # Nonzero unused bits in the last character: one key would have several spellings.
        key[:] = bytes(KEK_SIZE)
        raise KeyringFileError(f"{where}: its key is not canonical base64")
    return key


def _parse_time(text: object, where: str) -> datetime:
    if not isinstance(text, str) or not _TIME_PATTERN.fullmatch(text):
        raise KeyringFileError(f"{where}: created must be a UTC time like 2026-11-25T23:30:00Z")
    try:
        return datetime.strptime(text, _TIME_FORMAT).replace(tzinfo=timezone.utc)
    except ValueError:
        raise KeyringFileError(f"{where}: created is not a valid date and time") from None


def _check_unique(entries: list[_Kek], name: str) -> None:
    seen_names, seen_ids = set(), set()
    for entry in entries:
        if entry.name in seen_names:
            raise KeyringFileError(f"{name}: two keys are named {entry.name!r}")
        if entry.id in seen_ids:
            raise KeyringFileError(f"{name}: two keys have the id {entry.id.hex()}")
        seen_names.add(entry.name)
        seen_ids.add(entry.id)



# The keyring in its identity role: a Keyring is the identity that opens keyring stanzas. Kept
# as the same class, not a rename: a Keyring is also the keyring file's editor (create, add,
# set_state), which is what most code that names it does.
KeyringIdentity = Keyring
