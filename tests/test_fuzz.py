"""The fuzz harness (fuzz/) in the default test run.

Every target replays its seed corpus (real files the library writes, and inputs that once
broke a target), then fuzzes briefly: atheris in a subprocess for a couple of seconds where it
is installed, else hypothesis for a few dozen inputs. Any exception outside a target's
documented classes, or a hang, fails. Longer runs: ``python -m fuzz TARGET --time 600``.
"""

from __future__ import annotations

import pytest

from fuzz import runner, targets
from fuzz.__main__ import TARGET_NAMES

BRIEF_SECONDS = 2
HYPOTHESIS_EXAMPLES = 40


def test_every_target_has_a_seed_corpus():
    assert set(TARGET_NAMES) == set(targets.TARGETS)
    for name in TARGET_NAMES:
        if name == "safetensors":
            pytest.importorskip("torch")
        assert runner.corpus_files(name), f"fuzz/corpus/{name} is empty: run python -m fuzz.make_corpus"


@pytest.mark.parametrize("name", TARGET_NAMES)
def test_corpus_replays_without_finding(name):
    if name == "safetensors":
        pytest.importorskip("torch")
    assert runner.replay(name, runner.corpus_files(name), strict=True) >= 1


@pytest.mark.parametrize("name", TARGET_NAMES)
def test_brief_fuzz_run_finds_nothing(name, tmp_path):
    if name == "safetensors":
        pytest.importorskip("torch")
    if runner.have_atheris():
        result = runner.brief_atheris_run(name, tmp_path, seconds=BRIEF_SECONDS)
        findings = sorted(p.name for p in tmp_path.rglob("*") if p.name.startswith(("crash-", "timeout-", "oom-")))
        assert result.returncode == 0 and not findings, (
            f"fuzz target {name} found {findings}:\n{result.stderr[-6000:]}")
        assert "stat::number_of_executed_units" in result.stderr
    else:
        assert runner.run_hypothesis(name, seconds=None, max_examples=HYPOTHESIS_EXAMPLES) >= 1


def test_hypothesis_fallback_runs():
    # CI has atheris; keep the fallback working for platforms without it.
    assert runner.run_hypothesis("keyfile", seconds=None, max_examples=10) >= 10


def test_an_undocumented_exception_is_a_finding(monkeypatch):
    def broken(data):
        with targets.documented(targets.ShardsealError):
            raise RuntimeError("not a documented class")

    monkeypatch.setitem(targets.TARGETS, "inspect", broken)
    with pytest.raises(AssertionError, match="is a finding: RuntimeError"):
        runner.replay("inspect", runner.corpus_files("inspect")[:1])


def test_a_secret_in_an_error_message_is_a_finding(monkeypatch):
    def leaky(data):
        with targets.documented(targets.ShardsealError):
            raise targets.ShardsealError(f"bad key {targets.KEY.hex()}")

    monkeypatch.setitem(targets.TARGETS, "inspect", leaky)
    with pytest.raises(AssertionError, match="is a finding: Finding"):
        runner.replay("inspect", runner.corpus_files("inspect")[:1])


def test_a_hang_is_a_finding(monkeypatch):
    monkeypatch.setattr(runner, "PER_INPUT_TIMEOUT", 1)

    def hang(data):
        while True:
            pass

    monkeypatch.setitem(targets.TARGETS, "inspect", hang)
    with pytest.raises(AssertionError, match="is a finding: Hang"):
        runner.replay("inspect", runner.corpus_files("inspect")[:1])


# Inputs of filed defects that other changes fix (fuzz/known/<target>/<name>): each is an
# xfail until its fix is merged; then move the file into fuzz/corpus/<target>/, delete the
# defect's entry in targets.KNOWN_DEFECTS and its line here.
KNOWN_REASONS: dict = {}  # input name -> the open defect it shows (none open now)
KNOWN_INPUTS = [
    pytest.param(name, path, id=f"{name}-{path.name}", marks=pytest.mark.xfail(
        strict=False, reason=KNOWN_REASONS.get(path.name, "a filed defect")))
    for name in TARGET_NAMES for path in runner.corpus_files(name, runner.KNOWN)
]


@pytest.mark.parametrize("name,path", KNOWN_INPUTS)
def test_known_defect_inputs(name, path):
    if name == "safetensors":
        pytest.importorskip("torch")
    runner.replay(name, [path], strict=True)
