"""Detection: too many failures for one key or one dataset within a time window.

A watch listens to the audit events (:func:`shardseal.audit.add_listener`) and counts the
failures of each *subject*:

- ``key:ID`` for a key id: a stanza of that key that did not open (``unwrap_failed``: a wrong
  passphrase, a tampered stanza, a KMS or HSM refusal), or a container that needs that key
  and none of the given keys (``key_not_found``: someone trying keys they do not hold);
- ``folder:PATH`` for the folder of a file (a dataset; the path as the audit event names the
  file, so relative paths give relative folders) that any of these failures concerns,
  or whose payload failed to authenticate or that was refused as truncated or malformed
  (``authentication_failed``, ``rejected``); ``folder:?`` for those two when the file is not
  named (an in-memory buffer).

When one subject reaches ``threshold`` failures within ``window`` seconds the watch records
a WARNING ``alert`` audit event (rule ``failures``), calls ``callback(alert)`` (to page
someone or revoke a key) and starts counting that subject again from zero::

    import shardseal.alerts
    shardseal.alerts.watch(threshold=5, window=60, callback=lambda alert: page(alert.subject))

Only public names reach the callback: key ids, folders, counts.
"""

from __future__ import annotations

import collections
import json
import os
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Deque, Iterable, Optional

from . import audit

__all__ = ["Alert", "FailureWatch", "summarize", "watch"]

WATCHED_EVENTS = frozenset({"unwrap_failed", "key_not_found", "authentication_failed", "rejected"})
# A container names at most this many keys in one key_not_found (a hostile header: 1,024).
MAX_KEYS_PER_EVENT = 8
# Subjects remembered at once; the least recently failing one is forgotten first.
MAX_SUBJECTS = 10_000


@dataclass(frozen=True)
class Alert:
    """One alert: ``count`` failures of ``subject`` within ``window`` seconds.

    Attributes:
        rule: the rule that fired ("failures").
        subject: ``key:ID`` or ``folder:PATH`` (see the module's docstring).
        count: failures counted (the threshold).
        window: the window in seconds.
        events: the failure events' names, oldest first.
    """

    rule: str
    subject: str
    count: int
    window: float
    events: tuple[str, ...]


def subjects(event: str, fields: audit.EventFields) -> list[str]:
    """The subjects a failure event counts against (none for other events)."""
    if event not in WATCHED_EVENTS:
        return []
    path = fields.get("file")
    folder = [f"folder:{os.path.dirname(os.fsdecode(path)) or '.'}"] if path else []
    if event == "unwrap_failed":
        return [f"key:{fields.get('key_id', '')}"] + folder
    if event == "key_not_found":
        needed = list(fields.get("needed") or ())[:MAX_KEYS_PER_EVENT]
        return ([f"key:{key_id}" for key_id in dict.fromkeys(needed)] or ["key:?"]) + folder
    return folder or ["folder:?"]


class FailureWatch:
    """Counts failures per subject in a sliding window and raises alerts (see the module).

    Args:
        threshold: failures of one subject that raise an alert (at least 1).
        window: the window in seconds (more than 0).
        callback: called with each Alert, after the ``alert`` audit event is recorded.
        record: record an ``alert`` audit event (False when replaying a log).

    Raises:
        ValueError: a threshold under 1 or a window that is not positive.
    """

    def __init__(self, threshold: int = 5, window: float = 60.0,
                 callback: Optional[Callable[[Alert], object]] = None, *, record: bool = True) -> None:
        if threshold < 1:
            raise ValueError(f"threshold must be at least 1, not {threshold}")
        if not window > 0:
            raise ValueError(f"window must be positive, not {window}")
        self.threshold = threshold
        self.window = float(window)
        self.callback = callback
        self._record = record
        self._lock = threading.Lock()
        self._failures: dict[str, Deque[tuple[float, str]]] = {}

    def __call__(self, event: str, fields: audit.EventFields) -> None:
        """The audit listener: observes an event now."""
        self.observe(event, fields, time.monotonic())

    def observe(self, event: str, fields: audit.EventFields, now: float) -> list[Alert]:
        """Counts one event at time ``now`` (seconds); returns the alerts it raised."""
        raised = [alert for subject in subjects(event, fields)
                  if (alert := self._count(subject, event, now)) is not None]
        for alert in raised:
            if self._record:
                audit.record("alert", rule=alert.rule, subject=alert.subject, count=alert.count,
                             window=alert.window)
            if self.callback is not None:
                self.callback(alert)
        return raised

    def _count(self, subject: str, event: str, now: float) -> Optional[Alert]:
        with self._lock:
            seen = self._failures.pop(subject, None) or collections.deque()
            seen.append((now, event))
            while seen and seen[0][0] <= now - self.window:
                seen.popleft()
            if len(seen) < self.threshold:
                self._failures[subject] = seen  # re-inserted: most recent last
                while len(self._failures) > MAX_SUBJECTS:
                    self._failures.pop(next(iter(self._failures)))
                return None
        return Alert("failures", subject, len(seen), self.window, tuple(name for _, name in seen))

    def close(self) -> None:
        """Stops watching the audit events."""
        audit.remove_listener(self)


def watch(threshold: int = 5, window: float = 60.0,
          callback: Optional[Callable[[Alert], object]] = None) -> FailureWatch:
    """Starts a FailureWatch on this process's audit events; ``close()`` it to stop.

    Works whether or not the audit log or metrics are enabled. With metrics enabled, each
    alert is also counted in ``shardseal.alerts``.

    Raises:
        ValueError: as FailureWatch.
    """
    watcher = FailureWatch(threshold, window, callback)
    audit.add_listener(watcher)
    return watcher


# ---- summaries of a JSON audit log -------------------------------------------------------------

# Times past this (the year 9999) are not dates time.gmtime can show.
_MAX_TIME = 253402300800
_REASONS = {"authentication_failed": "authentication", "key_not_found": "wrong_key",
            "unwrap_failed": "unwrap_failed", "rejected": "rejected"}


def summarize(lines: Iterable[str], threshold: int = 5, window: float = 60.0) -> dict[str, Any]:
    """Summarizes a JSON-lines audit log (``audit.enable(path)``, ``shardseal --audit-log``).

    Replays the failures through a FailureWatch (by the events' own times) to find the
    anomalies, beside the ``alert`` events the log already holds.

    Args:
        lines: the log's lines; lines that are not audit events are counted and skipped.
        threshold: the replayed watch's failures per subject (see FailureWatch).
        window: the replayed watch's window in seconds.

    Returns:
        A JSON-serialisable dict: ``events``, ``skipped_lines``, ``first``/``last`` (times),
        ``users``, ``keys`` (per key type and id: wraps, unwraps, failures, users),
        ``failures`` (per reason), ``failure_errors`` (per reason and error class),
        ``failed_files`` (per file), ``wrong_key_attempts`` (per key id a container needed
        when no given key opened it), ``rotations`` (per result), ``alerts`` (recorded in the
        log) and ``anomalies`` (found by the replay).

    Raises:
        ValueError: as FailureWatch.
    """
    replay = FailureWatch(threshold, window, record=False)
    # JSON values of many shapes (see Returns), built up event by event.
    summary: dict[str, Any] = {"events": 0, "skipped_lines": 0, "first": None, "last": None, "users": {},
                     "keys": {}, "failures": {}, "failure_errors": {}, "failed_files": {},
                     "wrong_key_attempts": {}, "rotations": {}, "alerts": [], "anomalies": []}
    for line in lines:
        event = _parse_event(line)
        if event is None:
            summary["skipped_lines"] += bool(line.strip())
            continue
        _add_event(summary, event)
        when = event.get("time")
        for alert in replay.observe(event["event"], event, when if isinstance(when, (int, float)) else 0.0):
            summary["anomalies"].append({"subject": alert.subject, "count": alert.count,
                                         "window": alert.window, "time": when,
                                         "events": list(alert.events)})
    summary["keys"] = [dict(key_type=key_type, key_id=key_id, **counts)
                       for (key_type, key_id), counts in sorted(summary["keys"].items())]
    return summary


def _parse_event(line: str) -> Optional[audit.EventFields]:
    try:
        event = json.loads(line)
    except ValueError:
        return None
    if not isinstance(event, dict) or not isinstance(event.get("event"), str):
        return None
    # A damaged or forged line must not stop the summary: fields of the wrong type are made
    # harmless (a time that is no finite date, a file that is no string, key ids that are not).
    when = event.get("time")
    if isinstance(when, bool) or not isinstance(when, (int, float)) or not 0 <= when < _MAX_TIME:
        event["time"] = None
    if event.get("file") is not None:
        event["file"] = str(event["file"])
    needed = event.get("needed")
    event["needed"] = [str(key_id) for key_id in needed[:MAX_KEYS_PER_EVENT]] if isinstance(needed, list) else []
    return event


def _bump(counts: dict[str, int], name: object, by: int = 1) -> None:
    key = str(name)
    counts[key] = counts.get(key, 0) + by


def _add_event(summary: dict[str, Any], event: audit.EventFields) -> None:
    name = event["event"]
    summary["events"] += 1
    when = event.get("time")
    if isinstance(when, (int, float)):
        summary["first"] = when if summary["first"] is None else min(summary["first"], when)
        summary["last"] = when if summary["last"] is None else max(summary["last"], when)
    user = str(event.get("user", "?"))
    _bump(summary["users"], user)
    if name in ("wrap", "unwrap", "unwrap_failed"):
        key = summary["keys"].setdefault((str(event.get("stanza", "?")), str(event.get("key_id", "?"))),
                                         {"wraps": 0, "unwraps": 0, "failures": 0, "users": []})
        key[{"wrap": "wraps", "unwrap": "unwraps", "unwrap_failed": "failures"}[name]] += 1
        if user not in key["users"]:
            key["users"].append(user)
    if name in _REASONS:
        _bump(summary["failures"], _REASONS[name])
        _bump(summary["failure_errors"], f"{_REASONS[name]}: {event.get('error', '-')}")
        if event.get("file") is not None:
            _bump(summary["failed_files"], event["file"])
        if name == "key_not_found":
            for key_id in dict.fromkeys(list(event.get("needed") or ())[:MAX_KEYS_PER_EVENT]):
                _bump(summary["wrong_key_attempts"], key_id)
    elif name in ("rotate", "rotate_failed"):
        _bump(summary["rotations"], "failed" if name == "rotate_failed" else
              "recovered" if event.get("recovered") else "ok")
    elif name == "alert":
        summary["alerts"].append({field: event.get(field) for field in ("time", "subject", "count", "window")})
