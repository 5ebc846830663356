"""OpenTelemetry metrics: key use, containers opened and sealed, failures, rotations.

Off until the application calls :func:`enable`; until then nothing is counted, OpenTelemetry
is not imported and each counting point costs one test of a module flag. ``enable()`` needs
``opentelemetry-api`` (``pip install shardseal[otel]``) and reports through the global
MeterProvider (or the one given); without the OpenTelemetry SDK that provider is a no-op.

The counting points keep plain in-process tallies (a counting point appends a number to a
list: one C call, atomic, no lock; a thread folds the lists into totals every second), and the
counters are OpenTelemetry *observable* counters whose callbacks read the totals when a
reader collects: an OpenTelemetry counter's ``add`` costs ~20 us with the SDK, several
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
                                        [``shardseal.alert.subject``: ``key:ID``, or
                                        ``folder`` (``folder:PATH`` with ``record_paths``)]
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

import os
import threading
from typing import TYPE_CHECKING, Any, Callable, Iterable, Optional

from . import audit

if TYPE_CHECKING:  # opentelemetry-api is optional: imported where enable() runs
    from opentelemetry.metrics import CallbackOptions, Histogram, MeterProvider, Observation

__all__ = ["MAX_SERIES", "active", "container_counter", "counter", "disable", "enable", "snapshot"]

# True between enable() and disable(). The counting points test it before anything else.
active = False

# At most this many attribute sets per instrument and process; later ones are counted under
# {"shardseal.overflow": True}. A hostile header can name 1,024 key ids, and files naming
# fresh ones must not use up the series of the other instruments (a key's unwraps).
MAX_SERIES = 2000
# A series' attributes: (name, value) pairs (as ``counter`` takes them), and a series is
# (instrument, attributes).
_Attributes = tuple[tuple[str, Any], ...]
_Series = tuple[str, _Attributes]
_OVERFLOW: _Attributes = (("shardseal.overflow", True),)

_registry_lock = threading.Lock()
_drain_lock = threading.Lock()
# (count series, sum series or None) -> its tally; a series is (instrument, attributes).
_tallies: dict[tuple[_Series, Optional[_Series]], _Tally] = {}
_series_count: dict[str, int] = {}  # instrument -> its tallies
# How often the drainer thread folds pending entries into totals (bounds their memory).
DRAIN_INTERVAL = 1.0
_drainer: Optional[threading.Thread] = None
_stop_drainer = threading.Event()
_record_paths = False
_histogram: Optional[Histogram] = None
# The provider reported to (its instruments report nothing once another one is enabled), and
# every provider given instruments so far, with its histogram.
_provider: Optional[MeterProvider] = None
_providers: list[tuple[MeterProvider, Histogram]] = []

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
# Bucket bounds of the latency histogram, seconds: a local HSM answers in about a millisecond,
# a cloud KMS in tens, a throttled one in seconds.
LATENCY_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]
_UNWRAP_REASONS = {"WrongPassphraseError": "wrong_passphrase", "KmsError": "kms",
                   "HsmError": "hsm", "Pkcs11LoginError": "hsm"}
_REJECT_REASONS = {"TruncatedError": "truncation", "FormatError": "format"}


# ---- tallies -----------------------------------------------------------------------------

class _Tally:
    """One tally: a counting point appends a number (``add``: a list's append, one C call,
    atomic, no lock); the drainer thread and collections fold the entries into ``count`` and
    ``total`` under ``_drain_lock``.

    Attributes:
        add: appends one entry (the plaintext size of a container, 1 for an event).
        count_series: the (instrument, attributes) that counts the entries.
        sum_series: the (instrument, attributes) that sums their values, or None.
    """

    __slots__ = ("add", "count", "count_series", "pending", "sum_series", "total")

    def __init__(self, count_series: _Series, sum_series: Optional[_Series]) -> None:
        self.count_series = count_series
        self.sum_series = sum_series
        self.pending: list[int] = []
        self.add: Callable[[int], None] = self.pending.append
        self.count = 0
        self.total = 0

    def drain(self) -> None:
        """Folds the pending entries into count and total (under _drain_lock)."""
        pending = self.pending
        n = len(pending)
        if n:
            # Appends after len() land past n: slicing and deleting the first n loses none.
            values = pending[:n]
            del pending[:n]
            self.count += n
            if self.sum_series is not None:
                self.total += sum(values)


def _tally(count_series: _Series, sum_series: Optional[_Series] = None) -> _Tally:
    """The tally of these series, made on first use; past MAX_SERIES, an overflow one."""
    key = (count_series, sum_series)
    tally = _tallies.get(key)
    if tally is not None:
        return tally
    with _registry_lock:
        if key not in _tallies and _series_count.get(count_series[0], 0) >= MAX_SERIES:
            count_series = (count_series[0], _OVERFLOW)
            sum_series = None if sum_series is None else (sum_series[0], _OVERFLOW)
            key = (count_series, sum_series)
        if key not in _tallies:
            _tallies[key] = _Tally(count_series, sum_series)
            _series_count[count_series[0]] = _series_count.get(count_series[0], 0) + 1
        return _tallies[key]


def counter(instrument: str, attributes: Iterable[tuple[str, Any]] = ()) -> Callable[[int], None]:
    """The counting function of one series: call it with 1 per occurrence, only while
    ``active``. A counting point may keep the function: it stays valid for the process."""
    return _tally((instrument, tuple(attributes))).add


def container_counter(direction: str, operation: str) -> Callable[[int], None]:
    """The counting function of containers opened or sealed by one operation: call it with
    the plaintext size of each container, only while ``active``.

    Args:
        direction: "opened" or "sealed".
        operation: the API's name for it: "decrypt", "encrypt", "stream", ...
    """
    count_name, bytes_name = CONTAINER_INSTRUMENTS[direction]
    attributes = (("shardseal.operation", operation),)
    return _tally((count_name, attributes), (bytes_name, attributes)).add


def _drained() -> list[_Tally]:
    """Every tally, drained (the caller holds _drain_lock)."""
    with _registry_lock:
        tallies = list(_tallies.values())
    for tally in tallies:
        tally.drain()
    return tallies


def snapshot() -> dict[str, dict[tuple[tuple[str, Any], ...], int]]:
    """The counts so far: instrument -> {attributes (name/value pairs): count}.

    Counts start at zero when metrics are enabled. The histogram is not included.
    """
    result: dict[str, dict[_Attributes, int]] = {}
    with _drain_lock:
        for tally in _drained():
            for series, value in ((tally.count_series, tally.count), (tally.sum_series, tally.total)):
                if series is not None and value:
                    instrument, attributes = series
                    counts = result.setdefault(instrument, {})
                    counts[attributes] = counts.get(attributes, 0) + value
    return result


def _reset_tallies() -> None:
    with _drain_lock:
        for tally in _drained():
            tally.count = tally.total = 0


def _drain_forever(stop: threading.Event) -> None:
    while not stop.wait(DRAIN_INTERVAL):
        with _drain_lock:
            _drained()


def _start_drainer() -> None:
    global _drainer, _stop_drainer
    _stop_drainer = threading.Event()
    _drainer = threading.Thread(target=_drain_forever, args=(_stop_drainer,),
                                name="shardseal-metrics", daemon=True)
    _drainer.start()


def _stop() -> None:
    global _drainer
    _stop_drainer.set()
    _drainer = None


def _after_fork_in_child() -> None:
    # A forked worker (a DataLoader's) counts its own work from zero (the parent reports what
    # it inherited); the locks may have been held by a parent thread, and the drainer thread
    # did not survive the fork.
    global _registry_lock, _drain_lock
    _registry_lock, _drain_lock = threading.Lock(), threading.Lock()
    for tally in _tallies.values():
        tally.pending.clear()
        tally.count = tally.total = 0
    if active:
        _start_drainer()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


# ---- the audit events ------------------------------------------------------------------------

def _key_attributes(fields: audit.EventFields) -> _Attributes:
    attributes: list[tuple[str, str]] = []
    if "stanza" in fields:
        attributes.append(("shardseal.key.type", str(fields["stanza"])))
    if "key_id" in fields:
        attributes.append(("shardseal.key.id", str(fields["key_id"])))
    return tuple(attributes)


def _failure(reason: str, attributes: _Attributes, fields: audit.EventFields) -> None:
    attributes = (("shardseal.reason", reason),) + attributes
    if _record_paths and fields.get("file") is not None:
        attributes += (("shardseal.file", str(fields["file"])),)
    counter("shardseal.failures", attributes)(1)


def _on_event(event: str, fields: audit.EventFields) -> None:
    """Counts one audit event (an audit listener while metrics are enabled)."""
    counter("shardseal.audit.events", (("shardseal.event", event),))(1)
    if event == "unwrap":
        counter("shardseal.key.unwraps", _key_attributes(fields))(1)
    elif event == "wrap":
        counter("shardseal.key.wraps", _key_attributes(fields))(1)
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
        counter("shardseal.rotations", (("shardseal.rotation.mode", str(fields.get("mode", ""))),
                                        ("shardseal.rotation.result", result)))(1)
    elif event == "alert":
        subject = str(fields.get("subject"))
        if subject.startswith("folder:") and not _record_paths:
            subject = "folder"  # a folder is a path: in attributes only with record_paths
        counter("shardseal.alerts", (("shardseal.alert.subject", subject),))(1)
    if "seconds" in fields and fields.get("stanza") in _REMOTE_KEY_TYPES and _histogram is not None:
        _record_latency(_histogram, event, fields)


def _record_latency(histogram: Histogram, event: str, fields: audit.EventFields) -> None:
    operation = "wrap" if event == "wrap" else "unwrap"
    outcome = "error" if event == "unwrap_failed" else "ok"
    histogram.record(float(fields["seconds"]), {"shardseal.key.type": str(fields["stanza"]),
                                                 "shardseal.operation": operation,
                                                 "shardseal.outcome": outcome})


# ---- OpenTelemetry -------------------------------------------------------------------------

def _observer(instrument: str, provider: MeterProvider) -> Callable[[CallbackOptions], list[Observation]]:
    def observe(options: CallbackOptions) -> list[Observation]:
        from opentelemetry.metrics import Observation
        counts = snapshot().get(instrument, {}) if active and provider is _provider else {}
        return [Observation(value, dict(attributes)) for attributes, value in counts.items()]
    return observe


def enable(meter_provider: Optional[MeterProvider] = None, *, record_paths: bool = False) -> None:
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
    global active, _histogram, _provider, _record_paths
    try:
        from opentelemetry import metrics as otel
    except ImportError as exc:
        raise ImportError("shardseal.metrics.enable() needs opentelemetry-api: "
                          "pip install 'shardseal[otel]'") from exc
    disable()
    provider = meter_provider if meter_provider is not None else otel.get_meter_provider()
    _provider = provider
    _histogram = _instruments(provider)
    _record_paths = record_paths
    _reset_tallies()
    audit.add_listener(_on_event)
    active = True
    _start_drainer()


def _instruments(provider: MeterProvider) -> Histogram:
    """Creates the instruments on a provider once (a provider keeps what it was given);
    returns its histogram."""
    for known, histogram in _providers:
        if known is provider:
            return histogram
    meter = provider.get_meter("shardseal", _version())
    for name, (unit, description) in _COUNTERS.items():
        meter.create_observable_counter(name, callbacks=[_observer(name, provider)], unit=unit,
                                        description=description)
    name, unit, description = ("shardseal.key.operation.duration", "s",
                               "Duration of KMS and HSM wraps and unwraps")
    try:  # the SDK's default buckets (0 ... 10,000) suit milliseconds, not seconds
        histogram = meter.create_histogram(name=name, unit=unit, description=description,
                                           explicit_bucket_boundaries_advisory=LATENCY_BUCKETS)
    except TypeError:  # opentelemetry-api before 1.23
        histogram = meter.create_histogram(name=name, unit=unit, description=description)
    _providers.append((provider, histogram))
    return histogram


def _version() -> str:
    from importlib import metadata
    try:
        return metadata.version("shardseal")
    except metadata.PackageNotFoundError:  # run from a source tree
        return ""


def disable() -> None:
    """Stops counting; the instruments report nothing more."""
    global active, _histogram, _provider
    active = False
    _provider = None
    _stop()
    audit.remove_listener(_on_event)
    _histogram = None
