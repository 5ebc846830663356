"""The documentation site builds with warnings as errors, and its API reference is complete.

`mkdocs build --strict` fails on any warning: a docstring that documents a parameter the
function does not have, a malformed Google-style section (``Raises:`` entries must be
``ExceptionType: description``), a broken link between pages. The build runs in a subprocess
into a temporary folder, so the tree stays clean.
"""

from __future__ import annotations

import ast
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# The documented import paths (docs/ARCHITECTURE.md) and their pages under docs/api/.
API_PAGES = {
    "shardseal": "shardseal",
    **{f"shardseal.{name}": name for name in (
        "cobblestone", "torch", "safetensors", "data", "fsspec", "keyring", "x25519",
        "passphrase", "pkcs11", "kms", "keyfile", "keyref", "manifest", "rotation", "cleanup",
        "errors", "audit", "metrics", "alerts", "dask",
    )},
}


def _missing_docs_tools() -> str:
    for module, package in (("mkdocs", "mkdocs"), ("mkdocstrings", "mkdocstrings"),
                            ("mkdocstrings_handlers.python", "mkdocstrings-python")):
        try:
            found = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:
            found = False
        if not found:
            return package
    return ""


def _declared_all(module_name: str) -> list:
    """The module's ``__all__``, read from its source (no import: torch may be missing)."""
    parts = module_name.split(".")[1:]
    source = ROOT / "src" / "shardseal" / (f"{parts[0]}.py" if parts else "__init__.py")
    for node in ast.parse(source.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and any(
                isinstance(target, ast.Name) and target.id == "__all__" for target in node.targets):
            return list(ast.literal_eval(node.value))
    raise AssertionError(f"{source} declares no __all__")


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    missing = _missing_docs_tools()
    if missing:
        pytest.skip(f"{missing} is not installed: pip install '.[docs]' to build the documentation")
    site_dir = tmp_path_factory.mktemp("site")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site_dir)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    output = result.stdout + result.stderr
    warnings = [line for line in output.splitlines() if re.match(r"\s*(WARNING|ERROR)\b", line)]
    assert result.returncode == 0 and not warnings, (
        f"mkdocs build --strict failed (exit status {result.returncode}):\n{output}")
    return site_dir


def test_docs_build_strict_without_warnings(site):
    assert (site / "index.html").is_file()
    assert (site / "tour" / "index.html").is_file()  # README.md, published by docs/_hooks.py


def test_tour_links_stay_inside_the_site(site):
    """README links into docs/ become page links; links to other repository files, plain text."""
    tour = (site / "tour" / "index.html").read_text(encoding="utf-8")
    assert 'href="../KEYS/"' in tour
    assert 'href="docs/' not in tour
    assert 'href="examples/' not in tour


@pytest.mark.parametrize("module_name", sorted(API_PAGES))
def test_api_page_documents_every_public_name(site, module_name):
    """Each name in a documented module's ``__all__`` has an entry (or a mention) on its page."""
    page = (site / "api" / API_PAGES[module_name] / "index.html").read_text(encoding="utf-8")
    anchors = set(re.findall(r'id="([^"]+)"', page))
    undocumented = [name for name in _declared_all(module_name)
                    if f"{module_name}.{name}" not in anchors
                    and f"{module_name}.{name}" not in page]
    assert not undocumented, f"{module_name}: no entry on its API page for {undocumented}"
