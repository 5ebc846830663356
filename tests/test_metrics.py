"""shardseal.metrics and shardseal.alerts: exact counts through the OpenTelemetry SDK's
InMemoryMetricReader after the tampering scenarios and a rotation; no key bytes in any metric
attribute or audit line; nothing imported or counted while metrics are off."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

import shardseal
from shardseal import alerts, audit, metrics
from shardseal.keys import envelope as _envelope
from shardseal.errors import AuthenticationError, FormatError, KeyNotFoundError, KmsError, TruncatedError
from shardseal.kms import KeyProvider, KmsIdentity, KmsKey
from shardseal.rotation import rotate

from .cli_helpers import child_env
from .kek_helpers import KekIdentity, KekRecipient

otel_sdk = pytest.importorskip("opentelemetry.sdk.metrics")
from opentelemetry.sdk.metrics.export import InMemoryMetricReader  # noqa: E402

KEY = hashlib.sha256(b"metrics-test-direct-key").digest()
WRONG_KEY = hashlib.sha256(b"metrics-test-wrong-key").digest()
DATA = bytes(range(256)) * 20  # 5,120 bytes


def kek(name: str) -> tuple[KekRecipient, KekIdentity, bytes, str]:
    secret = hashlib.sha256(b"metrics-test-kek/" + name.encode()).digest()
    kek_id = hashlib.sha256(b"metrics-test-kek-id/" + name.encode()).digest()[:16]
    return KekRecipient(secret, kek_id), KekIdentity(secret, kek_id), secret, kek_id.hex()


def direct_key_id(key: bytes) -> str:
    return _envelope.DirectKey(key).key_ids[0]


@pytest.fixture
def reader():
    """Metrics enabled on a fresh SDK MeterProvider; a clean key cache; an audit log in memory."""
    shardseal.clear_key_cache()
    memory = InMemoryMetricReader()
    memory.provider = otel_sdk.MeterProvider(metric_readers=[memory])
    metrics.enable(memory.provider)
    stream = io.StringIO()
    handler = audit.enable(logging.StreamHandler(stream), level=logging.WARNING)
    memory.audit_text = stream.getvalue
    try:
        yield memory
    finally:
        metrics.disable()
        audit.logger.removeHandler(handler)
        audit.logger.setLevel(logging.NOTSET)
        shardseal.clear_key_cache()


def collect(memory: InMemoryMetricReader) -> dict:
    """instrument -> {frozenset of attribute items: value} (histograms: (count, sum))."""
    result: dict = {}
    data = memory.get_metrics_data()
    for resource in data.resource_metrics if data else ():
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                points = result.setdefault(metric.name, {})
                for point in metric.data.data_points:
                    value = getattr(point, "value", None)
                    if value is None:
                        value = (point.count, point.sum)
                    points[frozenset(point.attributes.items())] = value
    return result


def attrs(**items) -> frozenset:
    return frozenset((f"shardseal.{name.replace('_', '.')}", value) for name, value in items.items())


def run_scenarios(tmp_path) -> dict:
    """The tampering tests' kinds of damage, a keyring file and its rotation. Returns facts."""
    blob = shardseal.encrypt(DATA, KEY)
    for _ in range(3):
        assert shardseal.decrypt(blob, KEY) == DATA
    out = bytearray(len(DATA))
    assert shardseal.decrypt_into(blob, KEY, out) == len(DATA)
    flipped = bytearray(blob)
    flipped[-5] ^= 1  # a payload bit: the key unwraps, the chunk fails
    with pytest.raises(AuthenticationError):
        shardseal.decrypt(bytes(flipped), KEY)
    with pytest.raises(KeyNotFoundError):
        shardseal.decrypt(blob, WRONG_KEY)
    with pytest.raises(TruncatedError):
        shardseal.decrypt(blob[:20], KEY)  # cut inside the header
    magic = bytearray(blob)
    magic[0] ^= 1
    with pytest.raises(FormatError):
        shardseal.decrypt(bytes(magic), KEY)

    old_recipient, old_identity, old_secret, old_id = kek("old")
    new_recipient, new_identity, new_secret, new_id = kek("new")
    (tmp_path / "plain").write_bytes(DATA)
    shardseal.encrypt_file(tmp_path / "plain", tmp_path / "shard.sseal", recipients=[old_recipient])
    report = rotate(tmp_path / "shard.sseal", identities=[old_identity], add=[new_recipient], remove=[old_id])
    assert report.files_rewrapped == 1
    with shardseal.open(tmp_path / "shard.sseal", "rb", identities=[new_identity]) as stream:
        assert stream.read() == DATA
    with pytest.raises(KeyNotFoundError):
        shardseal.open(tmp_path / "shard.sseal", "rb", identities=[old_identity])
    return {"old_id": old_id, "new_id": new_id, "secrets": [KEY, WRONG_KEY, old_secret, new_secret]}


def test_counts_after_tampering_and_a_rotation(backend, reader, tmp_path):
    facts = run_scenarios(tmp_path)
    got = collect(reader)
    key_id = direct_key_id(KEY)
    assert got["shardseal.container.opens"] == {attrs(operation="decrypt"): 4, attrs(operation="stream"): 1}
    assert got["shardseal.container.opened_bytes"] == {attrs(operation="decrypt"): 4 * len(DATA),
                                                       attrs(operation="stream"): len(DATA)}
    assert got["shardseal.container.seals"] == {attrs(operation="encrypt"): 1, attrs(operation="stream"): 1}
    assert got["shardseal.container.sealed_bytes"] == {attrs(operation="encrypt"): len(DATA),
                                                       attrs(operation="stream"): len(DATA)}
    # 4 good decryptions and the bit flip's (the key unwrapped before the chunk failed);
    # the rotation unwrapped with the old KEK, the reader with the new one.
    assert got["shardseal.key.unwraps"] == {
        attrs(key_type="direct", key_id=key_id): 5,
        attrs(key_type="keyring", key_id=facts["old_id"]): 1,
        attrs(key_type="keyring", key_id=facts["new_id"]): 1,
    }
    assert got["shardseal.key.wraps"] == {attrs(key_type="keyring", key_id=facts["old_id"]): 1,
                                          attrs(key_type="keyring", key_id=facts["new_id"]): 1}
    assert got["shardseal.failures"] == {
        attrs(reason="authentication"): 1,
        attrs(reason="wrong_key", key_id=key_id): 1,
        attrs(reason="wrong_key", key_id=facts["new_id"]): 1,
        attrs(reason="truncation"): 1,
        attrs(reason="format"): 1,
    }
    assert got["shardseal.rotations"] == {attrs(rotation_mode="rewrap", rotation_result="ok"): 1}
    assert "shardseal.alerts" not in got or not got["shardseal.alerts"]
    assert metrics.snapshot()["shardseal.container.opens"][(("shardseal.operation", "decrypt"),)] == 4


def test_no_key_bytes_in_attributes_or_audit_lines(backend, reader, tmp_path):
    audit.logger.setLevel(logging.INFO)
    facts = run_scenarios(tmp_path)
    got = collect(reader)
    text = json.dumps([[sorted(map(str, a)) for a in points] for points in got.values()])
    text += reader.audit_text()
    assert "authentication_failed" in text and "unwrap" in text
    for secret in facts["secrets"]:
        for form in (secret.hex(), secret.hex().upper(), base64.b64encode(secret).decode(),
                     base64.urlsafe_b64encode(secret).decode().rstrip("="),
                     base64.b64encode(secret).decode().rstrip("="), secret.decode("latin-1")):
            assert form not in text


def test_record_paths_is_opt_in(backend, tmp_path):
    bad = tmp_path / "bad.sseal"
    blob = bytearray(shardseal.encrypt(DATA, KEY))
    blob[-5] ^= 1
    bad.write_bytes(bytes(blob))
    for record_paths in (False, True):
        memory = InMemoryMetricReader()
        metrics.enable(otel_sdk.MeterProvider(metric_readers=[memory]), record_paths=record_paths)
        try:
            with pytest.raises(AuthenticationError):
                with shardseal.open(bad, "rb", KEY) as stream:
                    stream.read()
            failures = collect(memory)["shardseal.failures"]
        finally:
            metrics.disable()
        expected = attrs(reason="authentication")
        if record_paths:
            expected |= {("shardseal.file", str(bad))}
        assert failures == {expected: 1}


def test_kms_and_hsm_latency_histogram(reader):
    # envelope.py times every wrap and unwrap; only KMS and HSM stanzas reach the histogram.
    audit.record("unwrap", stanza="kms", key_id="arn:aws:kms:eu-west-1:1:key/k", seconds=0.25)
    audit.record("unwrap_failed", stanza="pkcs11", key_id="token/label", error="HsmError", seconds=0.5)
    audit.record("unwrap", stanza="keyring", key_id="00", seconds=0.001)
    got = collect(reader)["shardseal.key.operation.duration"]
    assert got == {attrs(key_type="kms", operation="unwrap", outcome="ok"): (1, 0.25),
                   attrs(key_type="pkcs11", operation="unwrap", outcome="error"): (1, 0.5)}
    assert collect(reader)["shardseal.failures"] == {attrs(reason="hsm", key_type="pkcs11", key_id="token/label"): 1}


def test_series_past_the_limit_count_as_overflow(reader, monkeypatch):
    monkeypatch.setattr(metrics, "MAX_SERIES", 0)  # every new attribute set is past the bound
    for n in range(5):
        audit.record("unwrap", stanza="keyring", key_id=f"overflow-test-{n}")
    unwraps = collect(reader)["shardseal.key.unwraps"]
    assert unwraps == {frozenset({("shardseal.overflow", True)}): 5}


def test_a_failing_listener_does_not_fail_decryption(reader):
    def broken(event, fields):
        raise RuntimeError("monitoring bug")

    audit.add_listener(broken)
    try:
        blob = shardseal.encrypt(DATA, recipients=[kek("a")[0]])
        assert shardseal.decrypt(blob, identities=[kek("a")[1]]) == DATA
    finally:
        audit.remove_listener(broken)


def test_disabled_metrics_import_and_count_nothing():
    code = ("import sys, shardseal\n"
            "from shardseal import metrics\n"
            "k = bytes(32)\n"
            "b = shardseal.encrypt(b'x' * 4096, k)\n"
            "assert shardseal.decrypt(b, k) == b'x' * 4096\n"
            "assert not metrics.active and metrics.snapshot() == {}\n"
            "assert not any(m.startswith('opentelemetry') for m in sys.modules), 'imported'\n")
    result = subprocess.run([sys.executable, "-c", code], env=child_env(), capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr


def test_enable_without_opentelemetry_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "opentelemetry", None)
    with pytest.raises(ImportError, match=r"shardseal\[otel\]"):
        metrics.enable()
    assert not metrics.active


# ---- alerts --------------------------------------------------------------------------------

def test_watch_alerts_once_per_threshold_and_records_a_warning(backend, reader):
    stream = io.StringIO()
    handler = audit.enable(logging.StreamHandler(stream), level=logging.WARNING)
    raised = []
    watch = alerts.watch(threshold=3, window=60, callback=raised.append)
    try:
        blob = shardseal.encrypt(DATA, KEY)
        for _ in range(5):
            with pytest.raises(KeyNotFoundError):
                shardseal.decrypt(blob, WRONG_KEY)
    finally:
        watch.close()
        audit.logger.removeHandler(handler)
    key_id = direct_key_id(KEY)
    assert raised == [alerts.Alert("failures", f"key:{key_id}", 3, 60.0, ("key_not_found",) * 3)]
    logged = [json.loads(line) for line in stream.getvalue().splitlines()]
    alert_events = [e for e in logged if e["event"] == "alert"]
    assert len(alert_events) == 1 and alert_events[0]["level"] == "WARNING"
    assert alert_events[0]["subject"] == f"key:{key_id}" and alert_events[0]["count"] == 3
    assert collect(reader)["shardseal.alerts"] == {attrs(alert_subject=f"key:{key_id}"): 1}


def test_watch_window_and_subjects():
    watch = alerts.FailureWatch(threshold=2, window=10, record=False)
    assert watch.observe("unwrap_failed", {"key_id": "a"}, 0.0) == []
    assert watch.observe("unwrap_failed", {"key_id": "a"}, 10.5) == []  # the first one expired
    [alert] = watch.observe("unwrap_failed", {"key_id": "a"}, 11.0)
    assert (alert.subject, alert.count) == ("key:a", 2)
    assert watch.observe("unwrap", {"key_id": "a"}, 12.0) == []  # not a failure
    assert watch.observe("authentication_failed", {"file": "/data/set1/x.sseal"}, 0) == []
    [alert] = watch.observe("rejected", {"file": "/data/set1/y.sseal"}, 1)
    assert alert.subject == "folder:/data/set1"
    assert watch.observe("key_not_found", {"needed": ["b"], "file": "/data/set2/x.sseal"}, 2) == []
    raised = watch.observe("unwrap_failed", {"key_id": "c", "file": "/data/set2/y.sseal"}, 3)
    assert [a.subject for a in raised] == ["folder:/data/set2"]  # key:b and key:c once each
    with pytest.raises(ValueError):
        alerts.FailureWatch(threshold=0)
    with pytest.raises(ValueError):
        alerts.FailureWatch(window=0)


def test_watch_counts_every_key_a_container_needs_up_to_a_bound():
    watch = alerts.FailureWatch(threshold=1, window=10, record=False)
    needed = [f"{n:032x}" for n in range(1000)]
    raised = watch.observe("key_not_found", {"needed": needed}, 0)
    assert [a.subject for a in raised] == [f"key:{k}" for k in needed[:alerts.MAX_KEYS_PER_EVENT]]


def test_summarize_an_audit_log():
    lines = [json.dumps({"event": "wrap", "time": 1.0, "user": "ann", "stanza": "keyring", "key_id": "k1"}),
             json.dumps({"event": "unwrap", "time": 2.0, "user": "bob", "stanza": "keyring", "key_id": "k1"}),
             "not json", "",
             json.dumps({"event": "rotate", "time": 3.0, "mode": "rewrap", "added": [], "removed": []})]
    lines += [json.dumps({"event": "key_not_found", "time": 10.0 + n, "user": "eve", "needed": ["k1"],
                          "file": "/d/x.sseal"}) for n in range(3)]
    summary = alerts.summarize(lines, threshold=3, window=60)
    assert summary["events"] == 6 and summary["skipped_lines"] == 1
    assert summary["keys"] == [{"key_type": "keyring", "key_id": "k1", "wraps": 1, "unwraps": 1,
                                "failures": 0, "users": ["ann", "bob"]}]
    assert summary["failures"] == {"wrong_key": 3}
    assert summary["wrong_key_attempts"] == {"k1": 3}
    assert summary["failed_files"] == {"/d/x.sseal": 3}
    assert summary["rotations"] == {"ok": 1}
    assert [(a["subject"], a["count"], a["time"]) for a in summary["anomalies"]] == [
        ("key:k1", 3, 12.0), ("folder:/d", 3, 12.0)]


def test_enabling_again_neither_duplicates_nor_leaks_counts(reader):
    blob = shardseal.encrypt(DATA, KEY)
    metrics.enable(reader.provider)  # the same provider again: the same instruments
    shardseal.decrypt(blob, KEY)
    assert collect(reader)["shardseal.container.opens"] == {attrs(operation="decrypt"): 1}
    other = InMemoryMetricReader()
    metrics.enable(otel_sdk.MeterProvider(metric_readers=[other]))
    shardseal.decrypt(blob, KEY)
    assert collect(other)["shardseal.container.opens"] == {attrs(operation="decrypt"): 1}
    assert not collect(reader).get("shardseal.container.opens")  # the old provider is no longer fed


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork")
def test_a_forked_worker_counts_from_zero(reader):
    blob = shardseal.encrypt(DATA, KEY)
    shardseal.decrypt(blob, KEY)
    pid = os.fork()
    if pid == 0:  # the child: its own counts only
        status = 1
        try:
            shardseal.decrypt(blob, KEY)
            opens = metrics.snapshot()["shardseal.container.opens"]
            status = 0 if opens == {(("shardseal.operation", "decrypt"),): 1} else 3
        finally:
            os._exit(status)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert metrics.snapshot()["shardseal.container.opens"] == {(("shardseal.operation", "decrypt"),): 1}


class SlowProvider(KeyProvider):
    """A KMS stand-in: AES-GCM keys in memory, 20 ms per call, refusing key ids "denied-*"."""

    name = "slow-test"

    def __init__(self) -> None:
        self._key = AESGCM(hashlib.sha256(b"metrics-test-kms").digest())

    def wrap(self, key_id, file_key, context):
        time.sleep(0.02)
        nonce = os.urandom(12)
        return nonce + self._key.encrypt(nonce, bytes(file_key), key_id.encode())

    def unwrap(self, key_id, wrapped, context):
        time.sleep(0.02)
        if key_id.startswith("denied"):
            raise KmsError("refused", code="AccessDeniedException", key_id=key_id, provider=self.name)
        return self._key.decrypt(wrapped[:12], wrapped[12:], key_id.encode())


def test_kms_calls_reach_the_latency_histogram(reader):
    provider = SlowProvider()
    blob = shardseal.encrypt(DATA, recipients=[KmsKey(provider, "k1")])
    assert shardseal.decrypt(blob, identities=[KmsIdentity(provider)]) == DATA
    denied = shardseal.encrypt(DATA, recipients=[KmsKey(provider, "denied-1")])
    with pytest.raises(KmsError):
        shardseal.decrypt(denied, identities=[KmsIdentity(provider)])
    got = collect(reader)
    durations = got["shardseal.key.operation.duration"]
    assert {k: v[0] for k, v in durations.items()} == {
        attrs(key_type="kms", operation="wrap", outcome="ok"): 2,
        attrs(key_type="kms", operation="unwrap", outcome="ok"): 1,
        attrs(key_type="kms", operation="unwrap", outcome="error"): 1,
    }
    assert all(total >= 0.02 * count for count, total in durations.values())
    [failure] = got["shardseal.failures"]
    assert dict(failure)["shardseal.reason"] == "kms"


def test_counts_from_many_threads_are_exact(reader):
    import threading

    blob = shardseal.encrypt(DATA, KEY)

    def work() -> None:
        for _ in range(300):
            shardseal.decrypt(blob, KEY)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    got = collect(reader)
    assert got["shardseal.container.opens"] == {attrs(operation="decrypt"): 1200}
    assert got["shardseal.container.opened_bytes"] == {attrs(operation="decrypt"): 1200 * len(DATA)}
    assert got["shardseal.key.unwraps"] == {attrs(key_type="direct", key_id=direct_key_id(KEY)): 1200}


def test_prometheus_names_of_the_docs(backend, tmp_path):
    """docs/metrics.md's queries use these names: the SDK's Prometheus exporter makes them."""
    exporter = pytest.importorskip("opentelemetry.exporter.prometheus")
    prometheus_client = pytest.importorskip("prometheus_client")
    meter_provider = otel_sdk.MeterProvider(metric_readers=[exporter.PrometheusMetricReader()])
    try:
        metrics.enable(meter_provider)
        blob = shardseal.encrypt(DATA, KEY)
        shardseal.decrypt(blob, KEY)
        with pytest.raises(KeyNotFoundError):
            shardseal.decrypt(blob, WRONG_KEY)
        provider = SlowProvider()
        shardseal.decrypt(shardseal.encrypt(DATA, recipients=[KmsKey(provider, "k1")]),
                          identities=[KmsIdentity(provider)])
        text = prometheus_client.generate_latest(prometheus_client.REGISTRY).decode()
    finally:
        metrics.disable()
        meter_provider.shutdown()  # unregisters the exporter's collector
    docs = (Path(__file__).parent.parent / "docs" / "metrics.md").read_text(encoding="utf-8")
    for name in ("shardseal_container_opens_total", "shardseal_container_opened_bytes_total",
                 "shardseal_key_unwraps_total", "shardseal_failures_total",
                 "shardseal_key_operation_duration_seconds_bucket"):
        assert name in text and name in docs, name
    assert 'shardseal_reason="wrong_key"' in text
    assert 'le="0.025"' in text  # seconds buckets, not the SDK's millisecond defaults
