"""OpenTelemetry metrics: key use, containers opened and sealed, failures, rotations.

Off until the application calls :func:`enable`; until then nothing is counted, OpenTelemetry
is not imported and each counting point costs one test of a module flag. ``enable()`` needs
``opentelemetry-api`` (``pip install shardseal[otel]``) and reports through the global
MeterProvider (or the one given); without the OpenTelemetry SDK that provider is a no-op.

The counting points keep plain in-process tallies (one list of integers per thread, no lock),
and the counters are OpenTelemetry *observable* counters whose callbacks add the tallies up
when a reader collects: an OpenTelemetry counter's ``add`` costs ~20 us with the SDK, several
times a 4 KiB decryption. Only the latency histogram of KMS and HSM calls is recorded as the
call ends (a call costs milliseconds).

Instruments (attributes in brackets; key ids are public names, never key material):

======================================  =================================================
``shardseal.container.opens``           containers decrypted [``shardseal.operation``]
``shardseal.container.opened_bytes``    their plaintext bytes [``shardseal.operation``]
``shardseal.container.seals``           containers encrypted [``shardseal.operation``]
``shardseal.container.sealed_bytes``    their plaintext bytes [``shardseal.operation``]
``shardseal.key.unwraps``               file keys unwrapped [``shardseal.key.type``,
                                        ``shardseal.key.id``]
``shardseal.key.wraps``                 file keys wrapped [``shardseal.key.type``,
                                        ``shardseal.key.id``]
``shardseal.failures``                  refusals [``shardseal.reason``, and
                                        ``shardseal.key.type``/``shardseal.key.id`` when
                                        known; ``shardseal.file`` with ``record_paths``]
``shardseal.rotations``                 files rotated [``shardseal.rotation.mode``,
                                        ``shardseal.rotation.result``]
``shardseal.alerts``                    alerts raised by ``shardseal.alerts`` watches
                                        [``shardseal.alert.subject``]
``shardseal.audit.events``              every audit event [``shardseal.event``]
``shardseal.key.operation.duration``    histogram, seconds, of KMS and HSM wraps and unwraps
                                        [``shardseal.key.type``, ``shardseal.operation``,
                                        ``shardseal.outcome``]
======================================  =================================================

Failure reasons: ``authentication`` (a tampered payload, header or commitment), ``wrong_key``
(no given key opens the container), ``wrong_passphrase``, ``kms`` and ``hsm`` (the KMS or HSM
refused or failed), ``unwrap`` (another stanza that did not open), ``truncation`` and
``format`` (a container cut short or malformed).
"""

from __future__ import annotations

import threading
from typing import Any, Callable, Iterable, Optional

from . import audit

__all__ = ["MAX_SERIES", "active", "disable", "enable", "snapshot"]

# True between enable() and disable(). The counting points test it before anything else.
active = False

# At most this many attribute sets per process (all instruments together); later ones are
# counted under {"shardseal.overflow": True}. A hostile header can name 1,024 key ids.
MAX_SERIES = 2000
_OVERFLOW = (("shardseal.overflow", True),)

_registry_lock = threading.Lock()
# (instrument, attributes) -> slot: the index of its tally in every thread's list.
_slots: dict[tuple[str, tuple], int] = {}
_series: list[tuple[str, tuple]] = []
_thread_tallies: list[list[int]] = []
_local = threading.local()
_record_paths = False
_histogram: Any = None

CONTAINER_INSTRUMENTS = {"opened": ("shardseal.container.opens", "shardseal.container.opened_bytes"),
                         "sealed": ("shardseal.container.seals", "shardseal.container.sealed_bytes")}
_COUNTERS = {
    "shardseal.container.opens": ("{container}", "Containers decrypted (opened for reading)"),
    "shardseal.container.opened_bytes": ("By", "Plaintext bytes of the containers decrypted"),
    "shardseal.container.seals": ("{container}", "Containers encrypted"),
    "shardseal.container.sealed_bytes": ("By", "Plaintext bytes of the containers encrypted"),
    "shardseal.key.unwraps": ("{key}", "File keys unwrapped, by key type and key id"),
    "shardseal.key.wraps": ("{key}", "File keys wrapped, by key type and key id"),
    "shardseal.failures": ("{failure}", "Refused decryptions and unwraps, by reason"),
    "shardseal.rotations": ("{file}", "Files whose keys were rotated, by mode and result"),
    "shardseal.alerts": ("{alert}", "Alerts raised by shardseal.alerts watches"),
    "shardseal.audit.events": ("{event}", "Audit events, by event name"),
}
_REMOTE_KEY_TYPES = {"kms", "pkcs11"}
_UNWRAP_REASONS = {"WrongPassphraseError": "wrong_passphrase", "KmsError": "kms",
                   "HsmError": "hsm", "Pkcs11LoginError": "hsm"}
_REJECT_REASONS = {"TruncatedError": "truncation", "FormatError": "format"}


# ---- tallies -----------------------------------------------------------------------------

def series(instrument: str, attributes: Iterable[tuple[str, Any]] = ()) -> int:
    """The slot of one instrument's tally for one attribute set (registered on first use).

    The slot stays valid for the life of the process, so a counting point may compute it
    once (at import, or when it caches a key) and pass it to :func:`add`.
    """
    entry = (instrument, tuple(attributes))
    slot = _slots.get(entry)
    if slot is not None:
        return slot
    with _registry_lock:
        slot = _slots.get(entry)
        if slot is None:
            if len(_series) >= MAX_SERIES:
                overflow = (instrument, _OVERFLOW)
                if overflow in _slots:
                    return _slots[overflow]
                entry = overflow
            slot = len(_series)
            _series.append(entry)
            _slots[entry] = slot
    return slot


def add(slot: int, amount: int = 1) -> None:
    """Adds amount to a tally (see :func:`series`). Call only when ``active``."""
    try:
        _local.tally[slot] += amount
    except (AttributeError, IndexError):
        _grow_tally(slot)[slot] += amount


def add_container(slot: int, nbytes: int) -> None:
    """Counts one container opened or sealed and its plaintext bytes: slot is the count's
    (:func:`container_series`), slot + 1 the bytes'. Call only when ``active``."""
    try:
        tally = _local.tally
        tally[slot] += 1
        tally[slot + 1] += nbytes
    except (AttributeError, IndexError):
        tally = _grow_tally(slot + 1)
        tally[slot] += 1
        tally[slot + 1] += nbytes


def container_series(direction: str, operation: str) -> int:
    """The slot pair (count, count + 1 = bytes) of containers opened or sealed by one
    operation, for :func:`add_container`.

    Args:
        direction: "opened" or "sealed".
        operation: the API's name for it: "decrypt", "encrypt", "stream", ...
    """
    count_name, bytes_name = CONTAINER_INSTRUMENTS[direction]
    attributes = (("shardseal.operation", operation),)
    with _registry_lock:  # the two slots must be adjacent
        known = _slots.get((count_name, attributes))
        if known is not None:
            return known
        slot = len(_series)
        for name in (count_name, bytes_name):
            _series.append((name, attributes))
            _slots[(name, attributes)] = len(_series) - 1
    return slot


def _grow_tally(slot: int) -> list[int]:
    """This thread's tally, created or grown to hold slot."""
    tally = getattr(_local, "tally", None)
    if tally is None:
        tally = _local.tally = []
        with _registry_lock:
            _thread_tallies.append(tally)
    if len(tally) <= slot:
        tally.extend([0] * (max(len(_series), slot + 1) - len(tally)))
    return tally


def snapshot() -> dict[str, dict[tuple, int]]:
    """The counts so far: instrument -> {attributes (sorted name/value pairs): count}.

    Counts start at zero when metrics are enabled. The histogram is not included.
    """
    with _registry_lock:
        tallies = [list(tally) for tally in _thread_tallies]  # a list copy is atomic
        series_now = list(_series)
    result: dict[str, dict[tuple, int]] = {}
    for slot, (instrument, attributes) in enumerate(series_now):
        total = sum(tally[slot] for tally in tallies if slot < len(tally))
        if total:
            result.setdefault(instrument, {})[attributes] = total
    return result


def _reset_tallies() -> None:
    with _registry_lock:
        for tally in _thread_tallies:
            tally[:] = [0] * len(tally)


# ---- the audit events ------------------------------------------------------------------------

def _key_attributes(fields: dict) -> tuple:
    attributes = []
    if "stanza" in fields:
        attributes.append(("shardseal.key.type", str(fields["stanza"])))
    if "key_id" in fields:
        attributes.append(("shardseal.key.id", str(fields["key_id"])))
    return tuple(attributes)


def _failure(reason: str, attributes: tuple, fields: dict) -> None:
    attributes = (("shardseal.reason", reason),) + attributes
    if _record_paths and fields.get("file") is not None:
        attributes += (("shardseal.file", str(fields["file"])),)
    add(series("shardseal.failures", attributes))


def _on_event(event: str, fields: dict) -> None:
    """Counts one audit event (an audit listener while metrics are enabled)."""
    add(series("shardseal.audit.events", (("shardseal.event", event),)))
    if event == "unwrap":
        add(series("shardseal.key.unwraps", _key_attributes(fields)))
    elif event == "wrap":
        add(series("shardseal.key.wraps", _key_attributes(fields)))
    elif event == "unwrap_failed":
        _failure(_UNWRAP_REASONS.get(str(fields.get("error")), "unwrap"), _key_attributes(fields), fields)
    elif event == "key_not_found":
        needed = list(fields.get("needed") or ())
        # One failure per refusal, named by the first key the container needs.
        _failure("wrong_key", (("shardseal.key.id", str(needed[0])),) if needed else (), fields)
    elif event == "authentication_failed":
        _failure("authentication", (), fields)
    elif event == "rejected":
        _failure(_REJECT_REASONS.get(str(fields.get("error")), "format"), (), fields)
    elif event in ("rotate", "rotate_failed"):
        result = "failed" if event == "rotate_failed" else "recovered" if fields.get("recovered") else "ok"
        add(series("shardseal.rotations", (("shardseal.rotation.mode", str(fields.get("mode", ""))),
                                           ("shardseal.rotation.result", result))))
    elif event == "alert":
        add(series("shardseal.alerts", (("shardseal.alert.subject", str(fields.get("subject"))),)))
    if "seconds" in fields and fields.get("stanza") in _REMOTE_KEY_TYPES and _histogram is not None:
        _record_latency(event, fields)


def _record_latency(event: str, fields: dict) -> None:
    operation = "wrap" if event == "wrap" else "unwrap"
    outcome = "error" if event == "unwrap_failed" else "ok"
    _histogram.record(float(fields["seconds"]), {"shardseal.key.type": str(fields["stanza"]),
                                                 "shardseal.operation": operation,
                                                 "shardseal.outcome": outcome})


# ---- OpenTelemetry -------------------------------------------------------------------------

def _observer(instrument: str) -> Callable[[Any], list]:
    def observe(options: Any) -> list:
        from opentelemetry.metrics import Observation
        counts = snapshot().get(instrument, {}) if active else {}
        return [Observation(value, dict(attributes)) for attributes, value in counts.items()]
    return observe


def enable(meter_provider: Optional[Any] = None, *, record_paths: bool = False) -> None:
    """Starts counting, reported through OpenTelemetry instruments of the meter ``shardseal``.

    Counts start from zero. Calling it again (with another provider, say) starts over.

    Args:
        meter_provider: an ``opentelemetry.metrics.MeterProvider``; None uses the global one
            (``opentelemetry.metrics.set_meter_provider``).
        record_paths: add the file's path (``shardseal.file``) to failures. Off by default:
            paths may be private and every distinct path is a new time series.

    Raises:
        ImportError: ``opentelemetry-api`` is not installed (``pip install shardseal[otel]``).
    """
    global active, _histogram, _record_paths
    try:
        from opentelemetry import metrics as otel
    except ImportError as exc:
        raise ImportError("shardseal.metrics.enable() needs opentelemetry-api: "
                          "pip install 'shardseal[otel]'") from exc
    disable()
    provider = meter_provider if meter_provider is not None else otel.get_meter_provider()
    meter = provider.get_meter("shardseal", _version())
    for name, (unit, description) in _COUNTERS.items():
        meter.create_observable_counter(name, callbacks=[_observer(name)], unit=unit,
                                        description=description)
    _histogram = meter.create_histogram("shardseal.key.operation.duration", unit="s",
                                        description="Duration of KMS and HSM wraps and unwraps")
    _record_paths = record_paths
    _reset_tallies()
    audit.add_listener(_on_event)
    active = True


def _version() -> str:
    from importlib import metadata
    try:
        return metadata.version("shardseal")
    except metadata.PackageNotFoundError:  # run from a source tree
        return ""


def disable() -> None:
    """Stops counting; the instruments report nothing more."""
    global active, _histogram
    active = False
    audit.remove_listener(_on_event)
    _histogram = None
