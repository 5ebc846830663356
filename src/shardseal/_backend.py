"""Chooses the engine behind the public API: the native module or the Python backend.

``SHARDSEAL_BACKEND`` selects it: ``auto`` (the default) takes the native module and falls
back to Python with a RuntimeWarning, ``native`` raises ImportError when the native module is
missing, ``python`` always takes the Python backend.
"""

from __future__ import annotations

import importlib
import os
import sys
import warnings
from types import ModuleType

_CHOICES = ("auto", "native", "python")
FALLBACK_WARNING = (
    "shardseal: native module unavailable ({reason}); using the slower pure-Python backend. "
    "To get the native module, install a C++17 compiler and the OpenSSL 3 headers "
    "(Debian/Ubuntu: apt install g++ cmake libssl-dev), then reinstall shardseal "
    "(pip install --force-reinstall --no-cache-dir shardseal; in a checkout, pip install -v . "
    "shows why the build skipped it). SHARDSEAL_BACKEND=python chooses the Python backend "
    "without this warning."
)


def _quiet_command_line() -> bool:
    """Whether this process is the shardseal command run with -q (which silences the warning:
    the package is imported before the command can parse its options)."""
    argv = list(getattr(sys, "orig_argv", sys.argv))
    is_command = os.path.basename(sys.argv[0] if sys.argv else "") == "shardseal" or any(
        argv[i:i + 2] == ["-m", "shardseal"] for i in range(len(argv)))
    return is_command and any(arg in ("-q", "--quiet") for arg in sys.argv[1:])


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
            if not _quiet_command_line():
                warnings.warn(FALLBACK_WARNING.format(reason=exc), RuntimeWarning, stacklevel=3)
        else:
            return "native", _native
    from . import _pybackend

    return "python", _pybackend


name, impl = _load(os.environ.get("SHARDSEAL_BACKEND", "auto").strip().lower() or "auto")
