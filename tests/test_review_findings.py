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
