"""The audit log: one structured event per key use and per authentication failure.

Events go to the standard ``logging`` logger ``"shardseal.audit"`` at INFO level (failures at
WARNING), so they reach whatever handlers an application already has. Each record carries the
event's fields in ``record.shardseal`` (a dict) and :class:`JsonFormatter` writes them as one
JSON object per line, for log shippers and SIEMs::

    import logging, shardseal.audit
    shardseal.audit.enable()          # JSON lines on stderr; or pass a handler / a path

Events and their fields (every event also has ``event``, ``time``, ``pid``, ``user`` (the
process's user name), and ``file`` when the operation is on a named file):

=====================  ===================================================================
``wrap``               a file key was wrapped for a recipient: ``stanza``, ``key_id``
``unwrap``             a stanza was opened: ``stanza``, ``key_id``
``unwrap_failed``      a stanza addressed to the given identity did not open (a wrong
                       passphrase, a damaged stanza, an HSM or KMS refusal): ``stanza``,
                       ``key_id``, ``error``
``key_not_found``      no given identity matches a stanza: ``needed`` (the key ids)
``authentication_failed``  the payload or its commitment did not authenticate: ``error``
``rejected``           a container was refused as cut short or malformed: ``error``
                       (``TruncatedError``, ``FormatError``)
``rotate``             a file's key block was rewritten: ``mode`` (rewrap, reencrypt),
                       ``added``, ``removed`` (key ids); ``recovered`` (true) when
                       ``rotation.recover()`` completed an interrupted rotation
``rotate_failed``      a file's rotation failed: ``mode``, ``error`` (the exception's class)
``dataset_create``     a dataset manifest was created: ``dataset_key_id``
``dataset_open``       a dataset manifest was opened: ``dataset_key_id``, ``shards``
``dataset_save``       a dataset manifest was rewritten: ``dataset_key_id``, ``shards``
``verify``             a dataset folder was checked against its manifest: ``ok``,
                       ``problems``, ``shards``, ``deep``
``alert``              a ``shardseal.alerts`` watch saw too many failures: ``rule``,
                       ``subject``, ``count``, ``window``
=====================  ===================================================================

``wrap``, ``unwrap`` and ``unwrap_failed`` also carry ``seconds``: how long the recipient or
identity took (a KMS or HSM round trip, a scrypt run).

Listeners (:func:`add_listener`) see every event, logged or not: ``shardseal.metrics`` and
``shardseal.alerts`` count events this way.

Only public key ids ever appear; never key material, passphrases or plaintext.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import getpass
import json
import logging
import os
import re
import threading
import time
from types import TracebackType
from typing import Any, Callable, Iterator, Literal, Optional, Union

from .errors import AuthenticationError, FormatError, TruncatedError

__all__ = ["LOGGER_NAME", "JsonFormatter", "add_listener", "enable", "logger", "record",
           "record_rejection", "remove_listener", "target"]

LOGGER_NAME = "shardseal.audit"
logger = logging.getLogger(LOGGER_NAME)
# A library must not print on its own: without configured handlers, events go nowhere
# (instead of logging's last-resort stderr handler).
logger.addHandler(logging.NullHandler())

# An event's fields, name -> value: each event has its own (see the table above) and a JSON
# log gives them back as it parsed them, so their values are typed as they come (str, int,
# float, bool, lists).
EventFields = dict[str, Any]
Listener = Callable[[str, EventFields], None]
# A file the events are about, as os.fsdecode takes it.
_Path = Union[str, bytes, "os.PathLike[str]", "os.PathLike[bytes]"]

_FAILURES = {"unwrap_failed", "key_not_found", "authentication_failed", "rejected"}
_WARNINGS = _FAILURES | {"alert", "rotate_failed"}
# Called as listener(event, fields) for every event; a tuple, replaced (never changed in
# place) so that record() iterates it without a lock.
_listeners: tuple[Listener, ...] = ()
_listeners_lock = threading.Lock()
_current_file: contextvars.ContextVar[Optional[str]] = contextvars.ContextVar(
    "shardseal_audit_file", default=None)


def record(event: str, **fields: Any) -> None:
    """Logs one audit event, then tells the listeners. Field values must be public (key ids,
    counts, paths)."""
    level = logging.WARNING if event in _WARNINGS else logging.INFO
    if logger.isEnabledFor(level):
        _log(level, event, fields)
    for listener in _listeners:
        _notify(listener, event, fields)


def _log(level: int, event: str, fields: EventFields) -> None:
    data: EventFields = {"event": event, "time": time.time(), "pid": os.getpid(), "user": _user()}
    path = _current_file.get()
    if path is not None:
        data["file"] = path
    data.update(fields)
    summary = " ".join(f"{name}={_one_line(value)}" for name, value in fields.items())
    logger.log(level, "shardseal %s %s", event, summary, extra={"shardseal": data})


# A value from a file or a folder's name (an alert's subject) must not break the message's
# line (a forged line for a plain-text handler) or hold a terminal escape: escaped there.
_CONTROL_CHARACTERS = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def _one_line(value: object) -> str:
    return _CONTROL_CHARACTERS.sub(lambda m: ascii(m.group())[1:-1], str(value))


@functools.lru_cache(maxsize=None)
def _user() -> str:
    """The name of the user running this process (its uid when it has none)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError, ImportError):  # no login name and no passwd entry (a container)
        return str(os.getuid()) if hasattr(os, "getuid") else "?"


def _notify(listener: Listener, event: str, fields: EventFields) -> None:
    path = _current_file.get()
    try:
        listener(event, fields if path is None else {**fields, "file": path})
    except Exception as exc:  # a monitoring bug must not turn a good decryption into an error
        logger.error("shardseal audit listener %r failed on %s: %s", listener, event,
                     type(exc).__name__)


def add_listener(listener: Listener) -> None:
    """Calls ``listener(event, fields)`` for every audit event from now on, whether or not the
    log records it (``fields`` holds the event's fields and ``file`` when known).

    A listener runs on the thread that records the event, inside the library's call: it must
    be quick and must not raise (an exception is logged and ignored).
    """
    global _listeners
    with _listeners_lock:
        if listener not in _listeners:
            _listeners = _listeners + (listener,)


def remove_listener(listener: Listener) -> None:
    """Stops calling a listener added with :func:`add_listener` (no error if it was not)."""
    global _listeners
    with _listeners_lock:
        _listeners = tuple(known for known in _listeners if known != listener)


def record_rejection(exc: BaseException) -> None:
    """Records a ``rejected`` event when exc is a TruncatedError or a FormatError."""
    if isinstance(exc, (TruncatedError, FormatError)):
        record("rejected", error=type(exc).__name__)


class authentication_failures:  # noqa: N801 - used like a function: `with ...():`
    """Records an ``authentication_failed`` event for an AuthenticationError raised inside
    (a ``rejected`` event for a TruncatedError or FormatError), naming the file ``path``
    when given.

    A class rather than a generator-based context manager: it wraps every chunk read of a
    decrypting stream, where a generator's setup would cost more than the bookkeeping.
    """

    __slots__ = ("_path",)

    def __init__(self, path: Optional[_Path] = None) -> None:
        self._path = path

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: Optional[type[BaseException]], exc: Optional[BaseException],
                 traceback: Optional[TracebackType]) -> Literal[False]:
        if exc_type is not None and issubclass(exc_type, AuthenticationError):
            with target(self._path):
                record("authentication_failed", error=str(exc))
        elif exc is not None:  # exc_type is not None: `with` passes both or neither
            with target(self._path):
                record_rejection(exc)
        return False


@contextlib.contextmanager
def target(path: Optional[_Path]) -> Iterator[None]:
    """Names the file that the events recorded inside the ``with`` block are about
    (None: leave it as it is)."""
    if path is None:
        yield
        return
    token = _current_file.set(os.fsdecode(path))
    try:
        yield
    finally:
        _current_file.reset(token)


class JsonFormatter(logging.Formatter):
    """Formats records as one JSON object per line.

    Audit records give their event fields; other records give ``time``, ``level``,
    ``logger`` and ``message``.
    """

    def format(self, record: logging.LogRecord) -> str:
        data = dict(getattr(record, "shardseal", None) or {})
        if not data:
            data = {"time": record.created, "message": record.getMessage()}
        data.setdefault("level", record.levelname)
        data.setdefault("logger", record.name)
        return json.dumps(data, sort_keys=True, default=str)


def enable(destination: Union[None, str, "os.PathLike[str]", logging.Handler] = None, *,
           json_lines: bool = True, level: int = logging.INFO) -> logging.Handler:
    """Sends audit events to stderr, a file (appended) or a given handler.

    Args:
        destination: None for stderr, a path to append to, or a logging.Handler.
        json_lines: format records with JsonFormatter (else a plain one-line text).
        level: INFO records every key use; WARNING only failures.

    Returns:
        The handler that was added to the ``shardseal.audit`` logger.
    """
    if isinstance(destination, logging.Handler):
        handler = destination
    elif destination is None:
        handler = logging.StreamHandler()
    else:
        handler = logging.FileHandler(os.fspath(destination), encoding="utf-8")
    if json_lines:
        handler.setFormatter(JsonFormatter())
    logger.addHandler(handler)
    logger.setLevel(level)
    return handler
