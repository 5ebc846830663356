"""The README's Python examples run as written (the Usage section and the data example).

Each section's ``python`` code blocks are joined, in order, into one script and run in a
fresh folder by a separate interpreter, as a reader pasting them would.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from .cli_helpers import child_env

README = Path(__file__).resolve().parent.parent / "README.md"


def section_code(title: str) -> str:
    """The python blocks of the README section ``## title`` (up to the next ``## ``)."""
    text = README.read_text(encoding="utf-8")
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    section = text[start:end if end != -1 else None]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert blocks, f"no python code in README section {title!r}"
    return "\n".join(blocks)


def run_script(code: str, folder: Path) -> subprocess.CompletedProcess:
    script = folder / "example.py"
    script.write_text(code, encoding="utf-8")
    return subprocess.run([sys.executable, str(script)], cwd=folder, capture_output=True,
                          env=child_env(), timeout=300)


def test_usage_examples_run(tmp_path):
    result = run_script(section_code("Usage"), tmp_path)
    assert result.returncode == 0, result.stderr.decode(errors="replace")


def test_training_data_example_runs(tmp_path):
    pytest.importorskip("torch")
    result = run_script(section_code("Training from encrypted data"), tmp_path)
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    assert len(list((tmp_path / "shards").glob("train-*.tar.sseal"))) > 2


def test_homomorphic_encryption_example_runs(tmp_path):
    pytest.importorskip("tenseal")
    code = section_code("Computing on encrypted data (homomorphic encryption)")
    # The example's result, checked: the average of the three clients' updates (0, 1, 2).
    code += "\nimport numpy as np\nassert np.allclose(average, 1.0, atol=1e-5), average\n"
    result = run_script(code, tmp_path)
    assert result.returncode == 0, result.stderr.decode(errors="replace")
