"""Defects found by an adversarial review of the key model, shardseal.dask and the metrics
(one test per finding; each failed before its fix)."""

from __future__ import annotations

import json

import pytest

from shardseal import alerts


HOSTILE_AUDIT_LINES = [
    {"event": "authentication_failed", "time": 1e300, "file": "a/b"},  # out of time_t's range
    {"event": "authentication_failed", "time": float("nan"), "file": "a/b"},
    {"event": "authentication_failed", "time": 1, "file": 5},  # a file that is no path
    {"event": "key_not_found", "time": 1, "needed": 5},  # not a list
    {"event": "key_not_found", "time": 1, "needed": [[1], {"a": 1}]},  # unhashable key ids
    {"event": "unwrap_failed", "time": 1, "key_id": ["x"], "file": ["y"]},
    {"event": "alert", "time": 1e300, "subject": "key:k", "count": 3, "window": 60},
]


@pytest.mark.parametrize("event", HOSTILE_AUDIT_LINES, ids=lambda e: json.dumps(e)[:60])
def test_audit_summary_survives_a_hostile_log_line(event, tmp_path):
    """One damaged or forged line must not stop the summary (it would hide every anomaly)."""
    from shardseal.cli._commands import _audit_text

    good = json.dumps({"event": "key_not_found", "time": 10.0, "needed": ["k1"], "file": "/d/x"})
    summary = alerts.summarize([json.dumps(event), good], threshold=1, window=60)
    assert summary["events"] == 2
    assert ("key:k1", 1) in [(a["subject"], a["count"]) for a in summary["anomalies"]]
    json.dumps(summary, allow_nan=False)
    _audit_text(summary, 1, 60)


# ---- shardseal.dask: identities sent to the workers ------------------------------------------

@pytest.fixture(scope="module")
def threaded_client():
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as client:
        yield client


def test_dask_refuses_an_x25519_secret_as_identity_before_sending_it(tmp_path):
    """An identity string that *is* the secret must not be pickled into every task."""
    sdask = pytest.importorskip("shardseal.dask")
    from shardseal.x25519 import X25519Identity

    secret = X25519Identity.generate().to_string()
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.sseal").write_bytes(b"x")
    for call in (lambda: sdask.decrypt_dataset(tmp_path / "src", tmp_path / "out", identities=[secret]),
                 lambda: sdask.rotate(tmp_path / "src", identities=[secret], remove=["00"]),
                 lambda: sdask.verify(tmp_path / "src", identities=[secret])):
        with pytest.raises(ValueError, match="secret") as info:
            call()  # refused on the driver, before a client is looked for ("No clients found")
        assert secret not in str(info.value) and secret[22:] not in str(info.value)


def test_dask_takes_keyring_identity_strings_and_identity_refs(tmp_path, threaded_client):
    """The one key model: keyring:PATH and IdentityRef work as identities on the cluster too."""
    sdask = pytest.importorskip("shardseal.dask")
    import shardseal
    from shardseal.keyring import Keyring
    from shardseal.keyref import IdentityRef

    ring = Keyring.create(tmp_path / "team.keyring")
    ring.add("k1")
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.bin").write_bytes(b"hello" * 1000)
    sdask.encrypt_dataset(tmp_path / "src", tmp_path / "enc", recipients=[ring.recipient().to_string()],
                          client=threaded_client)
    for identity in (f"keyring:{tmp_path / 'team.keyring'}", IdentityRef(tmp_path / "team.keyring")):
        out = tmp_path / f"out-{type(identity).__name__}"
        report = sdask.decrypt_dataset(tmp_path / "enc", out, identities=[identity], client=threaded_client)
        assert report.files == 1 and (out / "a.bin").read_bytes() == b"hello" * 1000
    assert shardseal.decrypt((tmp_path / "enc" / "a.bin.sseal").read_bytes(),
                             identities=[f"keyring:{tmp_path / 'team.keyring'}"]) == b"hello" * 1000


# ---- a key pasted where a reference's path or name belongs ------------------------------------

PASTED_HEX = "3f" * 8 + "a1b2c3d4e5f60718" * 3  # 64 hex digits, as `openssl rand -hex 32` prints
PASTED_B64 = "q3Zk/9mW0yP+u1cL0s8TQy1XyZf4mJb3Hk7Ue2N6rAo="


@pytest.mark.parametrize("pasted", [PASTED_HEX, PASTED_B64], ids=["hex", "base64"])
@pytest.mark.parametrize("make", ["KeyFile", "EnvKey", "IdentityRef", "DatasetKey", "SealFileSystem identities",
                                  "SealFileSystem keyfile", "IdentityRef keyring:"])
def test_a_pasted_key_never_becomes_a_reference(make, pasted, tmp_path, monkeypatch):
    """A reference is repr'd, pickled to workers and written by to_json: built from a key pasted
    where its path (or variable name) belongs, it would carry the key to all of those. It is
    refused when built, by an error that does not show it."""
    import pickle

    from shardseal.fsspec import SealFileSystem
    from shardseal.keyref import DatasetKey, EnvKey, IdentityRef, KeyFile

    monkeypatch.chdir(tmp_path)
    makers = {
        "KeyFile": lambda: KeyFile(pasted),
        "EnvKey": lambda: EnvKey(pasted),
        "IdentityRef": lambda: IdentityRef(pasted),
        "IdentityRef keyring:": lambda: IdentityRef("keyring:" + pasted),
        "DatasetKey": lambda: DatasetKey(tmp_path, pasted),
        "SealFileSystem identities": lambda: SealFileSystem(target_protocol="file", identities=[pasted]),
        "SealFileSystem keyfile": lambda: SealFileSystem(target_protocol="file", key="keyfile:" + pasted),
    }
    try:
        made = makers[make]()
    except (ValueError, OSError) as exc:
        text = str(exc) + repr(exc.args) + str(getattr(exc, "filename", ""))
        assert pasted not in text and pasted[:16] not in text
        assert exc.__context__ is None or pasted not in str(exc.__context__)
        return
    shown = repr(made) + pickle.dumps(made).decode("latin-1")
    with contextlib_suppress():
        shown += made.to_json()
    assert pasted not in shown


def contextlib_suppress():
    import contextlib

    return contextlib.suppress(Exception)


def test_references_to_ordinary_paths_and_names_still_work(tmp_path, monkeypatch):
    from shardseal.keyref import EnvKey, IdentityRef, KeyFile

    monkeypatch.chdir(tmp_path)
    assert KeyFile("team.key").path == str(tmp_path / "team.key")  # need not exist yet
    assert KeyFile("/mnt/keys/team-2026.key").path == "/mnt/keys/team-2026.key"
    assert IdentityRef("/mnt/keys/alice.sseal-id").to_string() == "/mnt/keys/alice.sseal-id"
    assert EnvKey("SHARDSEAL_KEY").name == "SHARDSEAL_KEY"
    assert EnvKey("MY_VERY_LONG_DATASET_ENCRYPTION_KEY_VARIABLE").name.startswith("MY_")
    long_name = tmp_path / ("k" * 40)  # a key-shaped name that is an existing file stays usable
    long_name.write_text("x")
    assert KeyFile(str(long_name)).path == str(long_name)


# ---- a hostile header's KMS key reference ------------------------------------------------------

def test_a_hostile_key_reference_in_a_header_forges_no_log_line_and_no_terminal_escape(caplog):
    """A KMS stanza's key reference is free UTF-8 from the file: its public name (the key id
    in errors, audit events, metric attributes and alert subjects) must not carry line breaks
    or terminal escapes."""
    import logging
    import os

    import shardseal
    from shardseal.errors import KeyNotFoundError, KmsError
    from shardseal.kms import KeyProvider, KmsIdentity, KmsRecipient

    class Refusing(KeyProvider):
        name = "evil"

        def wrap(self, key_id, file_key, context):
            return b"w" * 40

        def unwrap(self, key_id, wrapped, context):
            raise KmsError("refused", code="AccessDenied", key_id="k", provider=self.name)

    hostile = 'k\n{"event":"unwrap","key_id":"forged"}\x1b[2J\u2028\x9b'
    blob = shardseal.encrypt(b"data", recipients=[KmsRecipient(Refusing(), hostile)])
    with caplog.at_level(logging.INFO, logger="shardseal.audit"):
        with pytest.raises(KmsError):
            shardseal.decrypt(blob, identities=[KmsIdentity(Refusing())])
        with pytest.raises(KeyNotFoundError) as info:
            shardseal.decrypt(blob, key=os.urandom(32))
    texts = [str(info.value)] + list(info.value.key_ids) + [r.getMessage() for r in caplog.records]
    for text in texts:
        assert not any(c in text for c in "\n\x1b\u2028\x9b"), repr(text)
    assert "forged" in str(info.value)  # still named, escaped


def test_ordinary_kms_key_ids_are_unchanged():
    from shardseal.keys import stanzas

    body = stanzas.reference_body("aws-kms", "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab", b"w" * 40)
    assert stanzas.TYPES[stanzas.KMS].key_id(body) == "aws-kms:arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab"


# ---- shardseal.dask: a resumed run keeps only shards of the current source --------------------

def test_a_resumed_run_rewrites_swapped_and_stale_shards(tmp_path, threaded_client, key):
    """Two shards of the same size swapped in the output folder (or a source edited in place
    since the last run) authenticate under the key and have the right size: a resumed run
    kept them, and a dataset's manifest then recorded the wrong files as good."""
    sdask = pytest.importorskip("shardseal.dask")
    import shardseal
    from shardseal import keyfile
    from shardseal.keyref import KeyFile

    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    contents = {"a.bin": b"A" * 20000, "b.bin": b"B" * 20000, "c.bin": b"C" * 20000}
    for name, data in contents.items():
        (src / name).write_bytes(data)
    keyfile.write_key_file(tmp_path / "team.key", key)
    ref = KeyFile(tmp_path / "team.key")
    sdask.encrypt_dataset(src, dst, key=ref, client=threaded_client)
    a, b = (dst / "a.bin.sseal").read_bytes(), (dst / "b.bin.sseal").read_bytes()
    (dst / "a.bin.sseal").write_bytes(b)
    (dst / "b.bin.sseal").write_bytes(a)
    contents["c.bin"] = b"D" * 20000
    (src / "c.bin").write_bytes(contents["c.bin"])

    again = sdask.encrypt_dataset(src, dst, key=ref, client=threaded_client)

    assert (again.files, again.skipped) == (3, 0)
    for name, data in contents.items():
        assert shardseal.decrypt((dst / (name + ".sseal")).read_bytes(), key=key) == data
    assert (sdask.encrypt_dataset(src, dst, key=ref, client=threaded_client).skipped) == 3


# ---- metrics: paths only when the user opts in -------------------------------------------------

def test_a_folder_alert_puts_no_path_in_metric_attributes_unless_paths_are_recorded(tmp_path):
    """Issue 16: "paths only if the user opts in" (record_paths). A folder alert's subject is
    a path: it went into shardseal.alerts' attribute anyway."""
    pytest.importorskip("opentelemetry.sdk.metrics")
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    import shardseal
    from shardseal import metrics
    from shardseal.errors import KeyNotFoundError

    folder = tmp_path / "private-project"
    folder.mkdir()
    (folder / "a.sseal").write_bytes(shardseal.encrypt(b"x", bytes(32)))
    for record_paths in (False, True):
        metrics.enable(MeterProvider(metric_readers=[InMemoryMetricReader()]), record_paths=record_paths)
        watch = alerts.watch(threshold=1, window=60)
        try:
            with pytest.raises(KeyNotFoundError):
                shardseal.decrypt_file(str(folder / "a.sseal"), str(tmp_path / "out"), bytes(range(32)))
            subjects = [dict(a)["shardseal.alert.subject"] for a in metrics.snapshot()["shardseal.alerts"]]
        finally:
            watch.close()
            metrics.disable()
        assert any(s.startswith("key:") for s in subjects)
        assert any(s.startswith("folder") for s in subjects)
        assert any("private-project" in s for s in subjects) == record_paths, subjects


def test_an_alert_on_a_folder_named_with_a_line_break_forges_no_plain_audit_line(tmp_path, caplog):
    """Anyone who can name a folder in a shared dataset can put a line break in an alert's
    subject; the audit message (a plain-text handler's line) must stay one line."""
    import logging

    from shardseal import audit

    watch = alerts.FailureWatch(threshold=1, window=60)
    with caplog.at_level(logging.INFO, logger="shardseal.audit"):
        watch.observe("authentication_failed",
                      {"file": 'evil\n{"event": "unwrap", "forged": 1}\x1b[2J/x.sseal'}, 0.0)
        audit.record("rotate", mode="rewrap", note="a\nb")
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2 and all("\n" not in m and "\x1b" not in m for m in messages), messages
    assert caplog.records[0].shardseal["subject"].startswith("folder:evil\n")  # JSON keeps it exact


def test_hostile_key_ids_do_not_use_up_the_series_of_other_instruments(monkeypatch):
    """Files that each name a fresh key id (key_not_found) made new failure series until the
    process-wide bound; every later series, a legitimate key's unwraps included, then lost
    its attributes. The bound holds per instrument: failures cannot starve key use."""
    pytest.importorskip("opentelemetry.sdk.metrics")
    import os

    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    import shardseal
    from shardseal import audit, metrics

    # Series made by earlier tests in this process stay: room for exactly one more key.
    unwrap_series = metrics._series_count.get("shardseal.key.unwraps", 0)
    failure_series = metrics._series_count.get("shardseal.failures", 0)
    monkeypatch.setattr(metrics, "MAX_SERIES", unwrap_series + 1)
    metrics.enable(MeterProvider(metric_readers=[InMemoryMetricReader()]))
    try:
        for n in range(200):
            audit.record("key_not_found", needed=[f"hostile-{n:028x}"])
        key = os.urandom(32)
        shardseal.decrypt(shardseal.encrypt(b"x", key), key)
        snapshot = metrics.snapshot()
    finally:
        metrics.disable()
    [unwraps] = snapshot["shardseal.key.unwraps"]
    assert ("shardseal.overflow", True) not in unwraps
    # Still bounded, with its overflow series.
    assert metrics._series_count["shardseal.failures"] <= max(failure_series, unwrap_series + 1) + 1
