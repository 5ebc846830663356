"""The package layout of docs/ARCHITECTURE.md holds: layers, no cycles, no private names used
across modules, and the documented short import paths.

The layer, cycle and private-module rules are import-linter contracts in pyproject.toml
(``[tool.importlinter]``), run here as ``lint-imports`` does; the private-name rule (no
``from x import _name`` or ``module._name`` across modules) is checked on the source below,
because import-linter sees modules, not the names taken from them.
"""

from __future__ import annotations

import ast
import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .cli_helpers import PACKAGE_ROOT  # the package under test: src/ or site-packages

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = Path(PACKAGE_ROOT) / "shardseal"

# The documented short paths and where their code lives.
PUBLIC_MODULES = {
    "cobblestone": "core.cobblestone",
    "keyfile": "keys.keyfile",
    "keyring": "keys.keyring",
    "passphrase": "keys.passphrase",
    "x25519": "keys.x25519",
    "pkcs11": "keys.pkcs11",
    "kms": "keys.kms",
    "keyref": "keys.keyref",
    "fsspec": "io.fsspec",
    "cleanup": "io.cleanup",
    "torch": "ml.torch",
    "safetensors": "ml.safetensors",
    "checkpoint": "ml.checkpoint",
    "transformers": "ml.transformers",
    "data": "ml.data",
    "he": "ml.he",
    "manifest": "ops.manifest",
    "rotation": "ops.rotation",
    "dask": "ops.dask",
}


def test_import_linter_contracts_are_kept():
    pytest.importorskip("importlinter", reason="import-linter is in the test extra")
    code = ("import sys\nfrom importlinter.cli import lint_imports\n"
            f"sys.exit(lint_imports(config_filename={str(ROOT / 'pyproject.toml')!r}, no_cache=True, no_logo=True))")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([PACKAGE_ROOT, os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    assert "0 broken" in proc.stdout


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _absolute(module: str, is_package: bool, level: int, name: str | None) -> str:
    base = module.split(".") if is_package else module.split(".")[:-1]
    if level > 1:
        base = base[: len(base) - (level - 1)]
    return ".".join(base + (name.split(".") if name else []))


def _is_submodule(parent: str, name: str) -> bool:
    folder = PACKAGE.parent.joinpath(*parent.split("."))
    return (folder / f"{name}.py").is_file() or (folder / name / "__init__.py").is_file() or (
        any(folder.glob(f"{name}.*.so")) or (folder / f"{name}.pyi").is_file())


def _private_name_uses(path: Path, module: str | None = None) -> list[str]:
    module = module or _module_name(path)
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    imported_modules = set()  # local names bound to shardseal modules
    for node in ast.walk(tree):
        if not isinstance(node, ast.ImportFrom):
            continue
        source = (_absolute(module, path.name == "__init__.py", node.level, node.module) if node.level
                  else node.module or "")
        if not source.startswith("shardseal"):
            continue
        for alias in node.names:
            if _is_submodule(source, alias.name):
                imported_modules.add(alias.asname or alias.name)
            elif alias.name.startswith("_") and not alias.name.startswith("__"):
                found.append(f"{module}:{node.lineno}: from {source} import {alias.name}")
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                and node.value.id in imported_modules
                and node.attr.startswith("_") and not node.attr.startswith("__")):
            found.append(f"{module}:{node.lineno}: {node.value.id}.{node.attr}")
    return found


def test_no_module_uses_a_private_name_of_another():
    found = [use for path in sorted(PACKAGE.rglob("*.py")) for use in _private_name_uses(path)]
    assert not found, "private names used across modules:\n" + "\n".join(found)


def test_the_private_name_check_sees_a_violation(tmp_path):
    # The check above must not pass vacuously: both forms of a private name are flagged.
    bad = tmp_path / "stream.py"
    bad.write_text("from ..container import blob\nfrom ..container.blob import plan_header, _x\n"
                   "blob._random_salt()\n", encoding="utf-8")
    found = _private_name_uses(bad, module="shardseal.io.stream")
    assert found == ["shardseal.io.stream:2: from shardseal.container.blob import _x",
                     "shardseal.io.stream:3: blob._random_salt"]


@pytest.mark.parametrize("short", sorted(PUBLIC_MODULES))
def test_documented_short_paths_export_the_home_modules_names(short):
    if short in ("torch", "safetensors", "checkpoint", "transformers"):
        pytest.importorskip("torch")
    public = importlib.import_module(f"shardseal.{short}")
    home = importlib.import_module(f"shardseal.{PUBLIC_MODULES[short]}")
    for name in getattr(home, "__all__", ()):
        assert getattr(public, name) is getattr(home, name), f"shardseal.{short}.{name}"
    for name in public.__all__:
        assert getattr(public, name) is not None


def test_fsspec_entry_point_names_the_file_system():
    pytest.importorskip("fsspec")
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    line = next(line for line in text.splitlines() if line.startswith("sseal = "))
    module, _, attribute = line.split('"')[1].partition(":")
    from shardseal.fsspec import SealFileSystem

    assert getattr(importlib.import_module(module), attribute) is SealFileSystem
