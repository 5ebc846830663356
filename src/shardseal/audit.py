"""The audit log: one structured event per key use and per authentication failure.

Events go to the standard ``logging`` logger ``"shardseal.audit"`` at INFO level (failures at
WARNING), so they reach whatever handlers an application already has. Each record carries the
event's fields in ``record.shardseal`` (a dict) and :class:`JsonFormatter` writes them as one
JSON object per line, for log shippers and SIEMs::

    import logging, shardseal.audit
    shardseal.audit.enable()          # JSON lines on stderr; or pass a handler / a path

Events and their fields (every event also has ``event``, ``time``, ``pid``, and ``file`` when
the operation is on a named file):

=====================  ===================================================================
``wrap``               a file key was wrapped for a recipient: ``stanza``, ``key_id``
``unwrap``             a stanza was opened: ``stanza``, ``key_id``
``unwrap_failed``      a stanza addressed to the given identity did not open (a wrong
                       passphrase, a damaged stanza, an HSM or KMS refusal): ``stanza``,
                       ``key_id``, ``error``
``key_not_found``      no given identity matches a stanza: ``needed`` (the key ids)
``authentication_failed``  the payload or its commitment did not authenticate: ``error``
``rotate``             a file's key block was rewritten: ``mode`` (rewrap, reencrypt),
                       ``added``, ``removed`` (key ids); ``recovered`` (true) when
                       ``rotation.recover()`` completed an interrupted rotation
``dataset_create``     a dataset manifest was created: ``dataset_key_id``
``dataset_open``       a dataset manifest was opened: ``dataset_key_id``, ``shards``
``dataset_save``       a dataset manifest was rewritten: ``dataset_key_id``, ``shards``
``verify``             a dataset folder was checked against its manifest: ``ok``,
                       ``problems``, ``shards``, ``deep``
=====================  ===================================================================

Only public key ids ever appear; never key material, passphrases or plaintext.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import os
import time
from typing import Iterator, Literal, Optional, Union

from .errors import AuthenticationError

__all__ = ["LOGGER_NAME", "JsonFormatter", "enable", "logger", "record", "target"]

LOGGER_NAME = "shardseal.audit"
logger = logging.getLogger(LOGGER_NAME)
# A library must not print on its own: without configured handlers, events go nowhere
# (instead of logging's last-resort stderr handler).
logger.addHandler(logging.NullHandler())

_FAILURES = {"unwrap_failed", "key_not_found", "authentication_failed"}
_current_file: contextvars.ContextVar[Optional[str]] = contextvars.ContextVar(
    "shardseal_audit_file", default=None)


def record(event: str, **fields) -> None:
    """Logs one audit event. Field values must be public (key ids, counts, paths)."""
    level = logging.WARNING if event in _FAILURES else logging.INFO
    if not logger.isEnabledFor(level):
        return
    data = {"event": event, "time": time.time(), "pid": os.getpid()}
    path = _current_file.get()
    if path is not None:
        data["file"] = path
    data.update(fields)
    summary = " ".join(f"{name}={value}" for name, value in fields.items())
    logger.log(level, "shardseal %s %s", event, summary, extra={"shardseal": data})


class authentication_failures:  # noqa: N801 - used like a function: `with ...():`
    """Records an ``authentication_failed`` event for an AuthenticationError raised inside,
    naming the file ``path`` when given.

    A class rather than a generator-based context manager: it wraps every chunk read of a
    decrypting stream, where a generator's setup would cost more than the bookkeeping.
    """

    __slots__ = ("_path",)

    def __init__(self, path=None) -> None:
        self._path = path

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type, exc, traceback) -> Literal[False]:
        if exc_type is not None and issubclass(exc_type, AuthenticationError):
            with target(self._path):
                record("authentication_failed", error=str(exc))
        return False


@contextlib.contextmanager
def target(path) -> Iterator[None]:
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


def enable(destination: Union[None, str, os.PathLike, logging.Handler] = None, *,
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
