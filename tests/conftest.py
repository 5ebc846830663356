"""Shared fixtures: every test that takes `backend` runs once per available backend."""

from __future__ import annotations

import importlib
import os
from pathlib import Path

import pytest

from shardseal.core import backend as _backend, _pybackend

WYCHEPROOF = Path(__file__).resolve().parents[1] / "testdata" / "wycheproof"


def _native_module():
    try:
        return importlib.import_module("shardseal._native")
    except ImportError:
        if os.environ.get("SHARDSEAL_REQUIRE_NATIVE") == "1":
            raise
        return None


NATIVE = _native_module()
BACKENDS = {"python": _pybackend}
if NATIVE is not None:
    BACKENDS["native"] = NATIVE


@pytest.fixture(params=sorted(BACKENDS))
def backend(request, monkeypatch):
    """Routes the public API through one backend; yields that backend's module."""
    monkeypatch.setattr(_backend, "name", request.param)
    monkeypatch.setattr(_backend, "impl", BACKENDS[request.param])
    return BACKENDS[request.param]


@pytest.fixture
def fixed_salt(monkeypatch):
    """Makes every container use the same salt, so that two backends' bytes can be compared."""
    salt = bytes(range(24))
    monkeypatch.setattr("shardseal.container.blob.random_salt", lambda: salt)
    return salt


@pytest.fixture
def key():
    return bytes(range(32))
