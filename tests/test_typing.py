"""The typed public API: mypy --strict passes on every module of src/shardseal and on correct usage, and
flags each intended mistake in tests/typing_cases/mistakes.py with the expected error code.

The mypy settings (strict, the whole package) are in pyproject.toml under [tool.mypy].
"""

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("mypy", reason="mypy is not installed (pip install shardseal[test])")

ROOT = Path(__file__).resolve().parents[1]
CASES = ROOT / "tests" / "typing_cases"
ERROR = re.compile(r"^(?P<path>[^:]+):(?P<line>\d+): error: .*\[(?P<code>[a-z-]+)\]$")
EXPECT = re.compile(r"#\s*expect:\s*(?P<code>[a-z-]+)\s*$")


def run_mypy(*files: Path, cache: Path) -> subprocess.CompletedProcess:
    # From the repository root so that pyproject.toml's [tool.mypy] applies.
    return subprocess.run([sys.executable, "-m", "mypy", "--cache-dir", str(cache), "--no-error-summary",
                           *(str(f) for f in files)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_covered_modules_and_correct_usage_pass_strict(tmp_path):
    # No file arguments: the covered src modules listed in [tool.mypy] files.
    covered = run_mypy(cache=tmp_path)
    assert covered.returncode == 0, covered.stdout + covered.stderr
    usage = run_mypy(CASES / "usage.py", cache=tmp_path)
    assert usage.returncode == 0, usage.stdout + usage.stderr


def test_each_intended_mistake_is_flagged(tmp_path):
    source = CASES / "mistakes.py"
    expected = {}
    for number, line in enumerate(source.read_text().splitlines(), 1):
        found = EXPECT.search(line)
        if found:
            expected[number] = found["code"]
    assert len(expected) >= 15
    result = run_mypy(source, cache=tmp_path)
    reported: dict[int, set[str]] = {}
    for line in result.stdout.splitlines():
        error = ERROR.match(line)
        if error:
            assert Path(error["path"]).name == "mistakes.py", line  # nothing in shardseal itself
            reported.setdefault(int(error["line"]), set()).add(error["code"])
    assert result.returncode == 1, result.stdout + result.stderr
    assert {line: {code} for line, code in expected.items()} == reported, result.stdout
