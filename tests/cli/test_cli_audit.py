"""``shardseal audit summary LOG``: who used which key, failures and anomalies of a JSON audit
log written by ``--audit-log``; hostile log lines are printed safely."""

from __future__ import annotations

import json

from ..cli_helpers import assert_error, assert_ok, run


def test_summary_of_a_log_the_command_wrote(tmp_path):
    assert_ok(run("keygen", "-o", "good.key", cwd=tmp_path))
    assert_ok(run("keygen", "-o", "other.key", cwd=tmp_path))
    (tmp_path / "data.bin").write_bytes(b"shard" * 1000)
    log = ["--audit-log", "audit.jsonl"]
    assert_ok(run(*log, "encrypt", "-k", "good.key", "data.bin", cwd=tmp_path))
    for n in range(3):
        result = run(*log, "decrypt", "-k", "other.key", "data.bin.sseal", "-o", f"out{n}", cwd=tmp_path)
        assert result.returncode != 0
    assert_ok(run(*log, "decrypt", "-k", "good.key", "data.bin.sseal", "-o", "out", cwd=tmp_path))

    result = run("audit", "summary", "audit.jsonl", "--json", "--threshold", "3", cwd=tmp_path)
    assert_ok(result)
    summary = json.loads(result.stdout)
    [key] = summary["keys"]
    assert (key["key_type"], key["unwraps"], key["failures"]) == ("direct", 1, 0)
    assert summary["failures"] == {"wrong_key": 3}
    assert summary["wrong_key_attempts"] == {key["key_id"]: 3}
    # The key the file needs, and the folder of the file (a dataset) that was probed.
    assert [(a["subject"], a["count"]) for a in summary["anomalies"]] == [
        (f"key:{key['key_id']}", 3), ("folder:.", 3)]  # the log names data.bin.sseal
    assert len(summary["users"]) == 1 and sum(summary["users"].values()) == summary["events"]

    text = run("audit", "summary", "audit.jsonl", "--threshold", "3", cwd=tmp_path)
    assert_ok(text)
    out = text.stdout.decode()
    assert f"key:{key['key_id']}: 3 failures (key_not_found)" in out
    assert "wrong_key" in out and key["key_id"] in out


def test_hostile_lines_are_printed_escaped(tmp_path):
    lines = [json.dumps({"event": "unwrap", "time": 1.0, "stanza": "kms", "key_id": "evil\x1b[2J\x07"}),
             "\x1b]0;title\x07 not json"]
    (tmp_path / "log.jsonl").write_text("\n".join(lines) + "\n")
    result = run("audit", "summary", "log.jsonl", cwd=tmp_path)
    assert_ok(result)
    assert b"\x1b" not in result.stdout and b"\x07" not in result.stdout
    assert b"evil\\x1b[2J\\x07" in result.stdout
    assert b"1 other lines skipped" in result.stdout


def test_missing_log_and_bad_window(tmp_path):
    assert_error(run("audit", "summary", "missing.jsonl", cwd=tmp_path), 1, "missing.jsonl")
    assert run("audit", "summary", "x", "--window", "0", cwd=tmp_path).returncode == 2
