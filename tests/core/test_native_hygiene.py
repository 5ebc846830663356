"""Build hygiene of the native module that shows from Python: it exports nothing but its
entry point, so neither the core nor a static library linked into it (ipsec-mb) can clash
with another copy of the same symbols in the process."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from tests.conftest import NATIVE

pytestmark = [
    pytest.mark.skipif(NATIVE is None, reason="native module not built"),
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="ELF dynamic symbols"),
    pytest.mark.skipif(shutil.which("nm") is None, reason="needs nm (binutils)"),
]


def _exported_symbols() -> list[str]:
    """Names the module's dynamic symbol table defines (what another library could bind to)."""
    out = subprocess.run(
        ["nm", "-D", "--defined-only", NATIVE.__file__], check=True, capture_output=True, text=True
    ).stdout
    return [line.split()[-1] for line in out.splitlines() if line.strip()]


def test_only_the_entry_point_and_libstdcxx_instantiations_are_exported() -> None:
    symbols = _exported_symbols()
    assert "PyInit__native" in symbols
    # C symbols (no _Z mangling) other than the entry point come from static libraries.
    c_symbols = [s for s in symbols if not s.startswith("_Z") and s != "PyInit__native"]
    assert c_symbols == []
    # C++ symbols: only template instantiations of the standard library (namespace std, whose
    # headers force default visibility), never shardseal's own code or pybind11's.
    demangled = subprocess.run(
        ["nm", "-D", "--defined-only", "-C", NATIVE.__file__], check=True, capture_output=True, text=True
    ).stdout
    assert "shardseal::" not in demangled
    assert "pybind11::" not in demangled
