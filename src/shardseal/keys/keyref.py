"""Key references: where a key comes from, without carrying the key itself.

A dataset, or anything else that crosses a process boundary (DataLoader workers started with
``spawn`` or ``forkserver``, multiprocessing pools, Ray or dask tasks), should hold a *key
reference* and resolve it in each process, so that key material is never pickled by accident:

* :class:`KeyFile` ``(path)``: a key file (see :mod:`shardseal.keyfile`), read on ``resolve()``;
* :class:`EnvKey` ``(name)``: an environment variable holding a key file's *text*, e.g.
  ``export SHARDSEAL_KEY="$(cat team.key)"`` (the ``shardseal-key-1:...`` line, comments
  allowed). For a variable that holds a key file's *path*, such as the command line's
  ``SHARDSEAL_KEY_FILE``, use ``KeyFile(os.environ["SHARDSEAL_KEY_FILE"])``;
* :class:`RawKey` ``(key, allow_pickle=False)``: 32 key bytes already in memory. Pickling one
  raises ``TypeError`` unless it was created with ``allow_pickle=True``, the explicit opt-in
  for sending a raw key to other processes (inside the pickle, in the clear);
* ``DatasetKey`` ``(folder, identity)``: the dataset key of a dataset folder
  (:mod:`shardseal.manifest`, where the class lives; also ``shardseal.keyref.DatasetKey``), unwrapped from its manifest in each process with an identity
  named by a string: the path of a key file, keyring file or X25519 identity file, a
  ``pkcs11:`` URI or ``aws-kms``, so that workers reach an HSM or a KMS themselves.

String forms (``to_string``/``from_string``, and ``parse_key_ref`` for either): ``keyfile:PATH``
and ``env:NAME``. They name where the key is, never the key, so ``SealFileSystem.to_json``
writes them; a ``RawKey`` has no string form (``to_string`` raises ``TypeError``).

Identities have references too: ``IdentityRef`` (``shardseal.keys.registry``, re-exported by
``shardseal.keyref``) names an identity file, a keyring, a PKCS#11 key or a KMS key by its
identity string and loads it in the process that decrypts.

``resolve()`` returns the 32 key bytes. No ``repr`` or message here contains key material; a
``RawKey``'s repr shows its public key id, the fingerprint ``shardseal inspect`` prints.
Any object with a ``resolve() -> bytes`` method works where a key reference is expected.
"""

from __future__ import annotations

import os
import re
from typing import TypeVar, Union, cast

from .. import _redact
from . import direct as _direct
from ..core.buffers import BytesLike
from .direct import RawKeyLike
from .keyfile import KeyFileError, parse_key_file, read_key_file

__all__ = ["DEFAULT_ENV_VAR", "EnvKey", "KeyFile", "KeyLike", "KeyRef", "RawKey", "as_key_ref",
           "is_key_ref", "parse_key_ref", "resolve_key", "resolve_reference"]

KEYFILE_PREFIX = "keyfile:"
ENV_PREFIX = "env:"

PathLike = Union[str, "os.PathLike[str]"]

DEFAULT_ENV_VAR = "SHARDSEAL_KEY"
# A hex key pasted where a variable's name belongs is a valid name: refused, not kept.
_KEY_SHAPED_NAME = re.compile(r"[0-9A-Fa-f]{32,}")

_PICKLE_REFUSED = (
    "a RawKey holds the key itself and is not pickled unless you opt in (DataLoader workers "
    "started with 'spawn' or 'forkserver' receive their dataset pickled): pass "
    "shardseal.keyref.KeyFile(path) or shardseal.keyref.EnvKey(name) instead, so that each "
    "process loads the key itself, or RawKey(key, allow_pickle=True) to send the raw key to "
    "the other processes explicitly"
)


class KeyRef:
    """Base class of key references: ``resolve()`` returns the 32-byte key."""

    __slots__ = ()

    def resolve(self) -> bytes:  # pragma: no cover - abstract
        raise NotImplementedError


# The key= argument of every function that encrypts or decrypts: the raw 32 key bytes (any
# bytes-like object; str is refused), or a key reference resolved where the key is used.
KeyLike = Union[BytesLike, KeyRef]

_Other = TypeVar("_Other")


class KeyFile(KeyRef):
    """A key in a key file, read each time it is resolved.

    The path is made absolute when the reference is created, so that a worker process with
    another working directory finds the same file. Pickles as its path.

    Raises:
        FileNotFoundError: path names no file and looks like a pasted key (not shown).
    """

    __slots__ = ("path",)

    def __init__(self, path: PathLike) -> None:
        if isinstance(path, bytes):
            path = os.fsdecode(path)
        # A key pasted where the path belongs would be in this reference's repr, its pickle
        # and to_json: refused now (a key-shaped path that names no file), without showing it.
        _redact.refuse_missing_secret_path(os.fspath(path))
        self.path = os.path.abspath(os.fspath(path))

    def resolve(self) -> bytes:
        """Reads the key file.

        Raises:
            OSError: it cannot be read.
            KeyFileError: it is not a key file.
        """
        return read_key_file(self.path)

    @classmethod
    def from_string(cls, text: str) -> "KeyFile":
        """The reference ``keyfile:PATH`` names.

        Raises:
            ValueError: text is not a ``keyfile:`` string.
        """
        return cls(_after_prefix(text, KEYFILE_PREFIX))

    def to_string(self) -> str:
        """``keyfile:PATH`` (the absolute path; no secret)."""
        return KEYFILE_PREFIX + self.path

    def __repr__(self) -> str:
        return f"KeyFile({self.path!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, KeyFile) and other.path == self.path

    def __hash__(self) -> int:
        return hash((KeyFile, self.path))

    def __reduce__(self) -> tuple[type[KeyFile], tuple[str]]:
        return (KeyFile, (self.path,))


class EnvKey(KeyRef):
    """A key whose key file text is in an environment variable (default ``SHARDSEAL_KEY``).

    The variable holds what a key file holds: the ``shardseal-key-1:<base64>`` line, with or
    without the comment lines (``export SHARDSEAL_KEY="$(cat team.key)"``). It is read each
    time the reference is resolved, in the process that resolves it: worker processes inherit
    the environment of the process that starts them. Pickles as the variable's name.
    """

    __slots__ = ("name",)

    def __init__(self, name: str = DEFAULT_ENV_VAR) -> None:
        if not isinstance(name, str) or not name or "=" in name or _KEY_SHAPED_NAME.fullmatch(name):
            # Not repr(name): a key pasted where the variable's name belongs must not show.
            shown = _redact.shown_argument(name) if isinstance(name, str) else _redact.shown(name)
            raise ValueError(f"not an environment variable name: {shown}")
        self.name = name

    def resolve(self) -> bytes:
        """Parses the variable's key file text.

        Raises:
            KeyFileError: the variable is unset or does not hold a key file's text (the
                message names the variable, never its value).
        """
        value = os.environ.get(self.name)
        if value is None:
            raise KeyFileError(f"environment variable {self.name} is not set (it should hold a "
                               "key file's text, e.g. export "
                               f'{self.name}="$(cat team.key)")')
        return parse_key_file(os.fsencode(value), f"environment variable {self.name}")

    @classmethod
    def from_string(cls, text: str) -> "EnvKey":
        """The reference ``env:NAME`` names.

        Raises:
            ValueError: text is not an ``env:`` string, or NAME is no variable name.
        """
        return cls(_after_prefix(text, ENV_PREFIX))

    def to_string(self) -> str:
        """``env:NAME`` (the variable's name, never its value)."""
        return ENV_PREFIX + self.name

    def __repr__(self) -> str:
        return f"EnvKey({self.name!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, EnvKey) and other.name == self.name

    def __hash__(self) -> int:
        return hash((EnvKey, self.name))

    def __reduce__(self) -> tuple[type[EnvKey], tuple[str]]:
        return (EnvKey, (self.name,))


class RawKey(KeyRef):
    """32 key bytes held in memory.

    Pickling raises ``TypeError`` unless ``allow_pickle=True``: the explicit opt-in for sending
    the raw key to other processes (a pickle carries it in the clear). ``copy.copy`` and
    ``copy.deepcopy`` return the same object (it is immutable).

    Raises:
        TypeError, ValueError: key is not 32 bytes.
    """

    __slots__ = ("_key", "allow_pickle")

    def __init__(self, key: RawKeyLike, allow_pickle: bool = False) -> None:
        self._key = _direct.check_key(key)
        self.allow_pickle = bool(allow_pickle)

    def resolve(self) -> bytes:
        return self._key

    @property
    def key_id(self) -> str:
        """The key's public fingerprint (hex), as ``shardseal inspect`` shows it."""
        return _direct.key_id(self._key).hex()

    def __repr__(self) -> str:
        return f"RawKey(<key id {self.key_id}>, allow_pickle={self.allow_pickle})"

    def to_string(self) -> str:
        """A raw key has no string form: it would be the key itself.

        Raises:
            TypeError: always.
        """
        raise TypeError("a RawKey has no string form (it would be the key): use "
                        "shardseal.keyref.KeyFile(path) or EnvKey(name)")

    def __reduce__(self) -> tuple[type[RawKey], tuple[bytes, bool]]:
        if not self.allow_pickle:
            raise TypeError(_PICKLE_REFUSED)
        return (RawKey, (self._key, True))

    def __copy__(self) -> "RawKey":
        return self

    def __deepcopy__(self, memo: object) -> "RawKey":
        return self


def _after_prefix(text: str, prefix: str) -> str:
    if not isinstance(text, str):
        raise TypeError(f"a key reference string must be a str, not {type(text).__name__}")
    if not text.startswith(prefix) or len(text) == len(prefix):
        raise ValueError(f"not a {prefix}... key reference string")
    return text[len(prefix):]


def parse_key_ref(text: str) -> KeyRef:
    """The key reference a string names: ``keyfile:PATH`` or ``env:NAME``.

    Raises:
        TypeError: text is not a str.
        ValueError: neither form (the message never quotes text: it might be a key).
    """
    if isinstance(text, str) and text.startswith(KEYFILE_PREFIX):
        return KeyFile.from_string(text)
    if isinstance(text, str) and text.startswith(ENV_PREFIX):
        return EnvKey.from_string(text)
    if not isinstance(text, str):
        raise TypeError(f"a key reference string must be a str, not {type(text).__name__}")
    raise ValueError("not a key reference string (expected keyfile:PATH or env:NAME)")


def as_key_ref(key: KeyLike) -> KeyRef:
    """A key reference for key: a reference (anything with ``resolve()``) is returned as is,
    raw key bytes are wrapped in ``RawKey(key, allow_pickle=False)``.

    Raises:
        TypeError: a str or path (ambiguous: wrap it in KeyFile or EnvKey), or another type.
        ValueError: raw key bytes that are not 32 bytes long.
    """
    if isinstance(key, KeyRef):
        return key
    if isinstance(key, (str, os.PathLike)):  # before duck typing: pathlib.Path has resolve()
        raise TypeError(f"a key must be 32 bytes or a key reference, not {type(key).__name__}: "
                        "use shardseal.keyref.KeyFile(path) for a key file or "
                        "shardseal.keyref.EnvKey(name) for an environment variable")
    if not isinstance(key, type) and callable(getattr(key, "resolve", None)):
        # Safe: a duck-typed reference has a callable resolve(), all that a KeyRef offers.
        return cast(KeyRef, key)
    try:
        # numpy's stubs declare ndarray a Buffer only for Python 3.12+ (core/buffers.py).
        memoryview(key)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError("a key must be 32 bytes or a key reference (KeyFile, EnvKey, RawKey), "
                        f"not {type(key).__name__}") from None
    return RawKey(key)


def is_key_ref(key: object) -> bool:
    """Whether key is a key reference: a KeyRef, or any object with a ``resolve()`` method
    (but not a class, a str or a path: ``pathlib.Path`` has a ``resolve()`` of its own)."""
    if isinstance(key, KeyRef):
        return True
    if isinstance(key, (str, bytes, os.PathLike, type)):
        return False
    return callable(getattr(key, "resolve", None))


def resolve_reference(key: Union[KeyRef, _Other]) -> Union[bytes, _Other]:
    """The 32 key bytes of a key reference, resolved now, in this process; anything else
    (raw key bytes, a ``DirectKey``, None) is returned unchanged, to be checked where it is
    used exactly as before.

    The functions that take ``key=`` call this where they use the key, so a reference crosses
    process boundaries as what it names (a path, a variable's name) and is resolved by the
    process that reads or writes.

    Raises:
        TypeError, ValueError: the reference resolved to something that is not 32 bytes.
        OSError, KeyFileError: a KeyFile or EnvKey that cannot be read (and what other
            references raise).
    """
    if is_key_ref(key):
        return _direct.check_key(key.resolve())  # type: ignore[union-attr]
    return key  # type: ignore[return-value]


def resolve_key(key: KeyLike) -> bytes:
    """The 32 key bytes of a key reference or of raw key bytes.

    Raises:
        TypeError, ValueError: as ``as_key_ref``, or the reference resolved to something that is
            not 32 bytes.
        OSError, KeyFileError: a KeyFile or EnvKey that cannot be read.
    """
    return _direct.check_key(as_key_ref(key).resolve())
