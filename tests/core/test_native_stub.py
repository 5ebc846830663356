"""The .pyi stub of the native module matches the compiled module, and the Python backend
offers the same functions, so that either can stand behind the public API."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

import shardseal
from shardseal.core import _pybackend
from tests.conftest import NATIVE

STUB = Path(shardseal.__file__).with_name("_native.pyi")


def _stub_signatures() -> dict[str, list[str]]:
    """name -> parameter names, for module functions, constants and MessageKeys methods."""
    tree = ast.parse(STUB.read_text())
    found: dict[str, list[str]] = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            found[node.name] = [a.arg for a in node.args.args]
        elif isinstance(node, ast.AnnAssign):
            found[node.target.id] = []
        elif isinstance(node, ast.ClassDef):
            found[node.name] = []
            for item in node.body:
                if isinstance(item, ast.FunctionDef) and item.name != "__init__":
                    found[f"{node.name}.{item.name}"] = [a.arg for a in item.args.args[1:]]
    return found


def _native_parameters(obj) -> list[str]:
    # pybind11 puts the signature in the first docstring line: name(arg: type, ...) -> ret
    first = obj.__doc__.splitlines()[0]
    inside = first[first.index("(") + 1 : first.rindex(")")]
    names = [part.split(":")[0].strip() for part in inside.split(",") if part.strip()]
    return [n for n in names if n != "self"]


@pytest.mark.skipif(NATIVE is None, reason="native module not built")
def test_stub_matches_native_module():
    stub = _stub_signatures()
    public = {n for n in dir(NATIVE) if not n.startswith("_")}
    methods = {f"MessageKeys.{n}" for n in dir(NATIVE.MessageKeys) if not n.startswith("_")}
    assert set(stub) == public | methods
    for name, params in stub.items():
        obj = NATIVE
        for part in name.split("."):
            obj = getattr(obj, part)
        if callable(obj) and not isinstance(obj, type):
            assert _native_parameters(obj) == params, name


# Native-only: the AES-GCM kernel choice (the Python backend has one implementation) and the
# benchmark ceilings. Everything else is the engine interface both backends implement.
NATIVE_ONLY = {"kernel", "kernel_status", "select_kernel", "kernel_detail", "bench_copy", "bench_gcm_seal"}


def test_python_backend_offers_the_stub_api():
    for name, params in _stub_signatures().items():
        if name in NATIVE_ONLY:
            continue
        obj = _pybackend
        for part in name.split("."):
            obj = getattr(obj, part)
        if inspect.isfunction(obj):
            names = [p for p in inspect.signature(obj).parameters if p != "self"]
            assert names == params, name
