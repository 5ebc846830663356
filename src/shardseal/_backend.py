"""Chooses the engine behind the public API: the native module or the Python backend.

``SHARDSEAL_BACKEND`` selects it: ``auto`` (the default) takes the native module and falls
back to Python with a RuntimeWarning, ``native`` raises ImportError when the native module is
missing, ``python`` always takes the Python backend.
"""

from __future__ import annotations

import importlib
import os
import warnings
from types import ModuleType

_CHOICES = ("auto", "native", "python")


def _load(choice: str) -> tuple[str, ModuleType]:
    if choice not in _CHOICES:
        raise ValueError(f"SHARDSEAL_BACKEND must be one of {', '.join(_CHOICES)}, got {choice!r}")
    if choice != "python":
        try:
            _native = importlib.import_module(f"{__package__}._native")
        except ImportError as exc:
            if choice == "native":
                raise ImportError(
                    "SHARDSEAL_BACKEND=native but the native module shardseal._native is "
                    f"unavailable ({exc}); reinstall with a C++17 compiler and libssl-dev"
                ) from exc
            warnings.warn(
                f"shardseal: native module unavailable ({exc}); using the slower pure-Python "
                "backend. Install a C++17 compiler and libssl-dev, then reinstall shardseal.",
                RuntimeWarning,
                stacklevel=3,
            )
        else:
            return "native", _native
    from . import _pybackend

    return "python", _pybackend


name, impl = _load(os.environ.get("SHARDSEAL_BACKEND", "auto").strip().lower() or "auto")
