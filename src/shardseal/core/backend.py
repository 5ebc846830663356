"""Chooses the engine behind the public API: the native module or the Python backend.

``SHARDSEAL_BACKEND`` selects it: ``auto`` (the default) takes the native module and falls
back to Python with a RuntimeWarning, ``native`` raises ImportError when the native module is
missing, ``python`` always takes the Python backend.

``SHARDSEAL_KERNEL`` selects the native engine's AES-GCM kernel: ``auto`` (the default) takes
Intel's ipsec-mb on CPUs with VAES + VPCLMULQDQ + AVX-512 when the module was built with it, else
OpenSSL; ``ipsec-mb`` or ``openssl`` forces one (a forced kernel that cannot run here is an
ImportError that says why). The Python backend has no kernels and ignores it. Both kernels give
identical bytes. ``backend_info()`` reports the choice.
"""

from __future__ import annotations

import importlib
import os
import sys
import warnings
from types import ModuleType
from typing import Optional, TypedDict

from .. import _redact

_CHOICES = ("auto", "native", "python")
_KERNEL_CHOICES = ("auto", "ipsec-mb", "openssl")
FALLBACK_WARNING = (
    "shardseal: native module unavailable ({reason}); using the slower pure-Python backend. "
    "To get the native module, install a C++17 compiler and the OpenSSL 3 headers "
    "(Debian/Ubuntu: apt install g++ cmake libssl-dev), then reinstall shardseal "
    "(pip install --force-reinstall --no-cache-dir shardseal; in a checkout, pip install -v . "
    "shows why the build skipped it). SHARDSEAL_BACKEND=python chooses the Python backend "
    "without this warning."
)


class BackendInfo(TypedDict):
    """What ``backend_info()`` reports (see there)."""

    backend: str
    kernel: str
    detail: str
    kernels: dict[str, Optional[str]]


def _is_command_line() -> bool:
    """Whether this process is the shardseal command (python -m shardseal, or its script)."""
    argv = list(getattr(sys, "orig_argv", sys.argv))
    return os.path.basename(sys.argv[0] if sys.argv else "") == "shardseal" or any(
        argv[i:i + 2] == ["-m", "shardseal"] for i in range(len(argv)))


def _quiet_command_line() -> bool:
    """Whether this process is the shardseal command run with -q (which silences the warning:
    the package is imported before the command can parse its options)."""
    return _is_command_line() and any(arg in ("-q", "--quiet") for arg in sys.argv[1:])


def _load(choice: str) -> tuple[str, ModuleType]:
    if choice not in _CHOICES:
        raise ValueError(f"SHARDSEAL_BACKEND must be one of {', '.join(_CHOICES)}, "
                         f"got {_redact.shown_argument(choice)}")
    if choice != "python":
        try:
            _native = importlib.import_module(".._native", __package__)
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


def _select_kernel(native: ModuleType, choice: str) -> None:
    """Applies SHARDSEAL_KERNEL to the native module.

    Raises:
        ValueError: choice is not one of auto, ipsec-mb, openssl.
        ImportError: the forced kernel cannot run here (not built in, or the CPU lacks it).
    """
    if choice not in _KERNEL_CHOICES:
        raise ValueError(f"SHARDSEAL_KERNEL must be one of {', '.join(_KERNEL_CHOICES)}, "
                         f"got {_redact.shown_argument(choice)}")
    if choice == "auto":
        return  # the native module picked the fastest kernel for this CPU at import
    reason = native.kernel_status().get(choice)
    if reason is not None:
        raise ImportError(f"SHARDSEAL_KERNEL={choice} but that AES-GCM kernel is unavailable: {reason}")
    native.select_kernel(choice)


def backend_info() -> BackendInfo:
    """What does the work: the backend, the AES-GCM kernel and the library behind it.

    Returns:
        A dict with ``backend`` ("native" or "python"), ``kernel`` (the native engine's AES-GCM
        kernel, "ipsec-mb" or "openssl"; "cryptography" for the Python backend), ``detail``
        (library version and code path) and ``kernels`` (every native kernel: None when it can
        run here, else why not; empty for the Python backend).
    """
    if name == "native":
        kernel = impl.kernel()
        return {"backend": name, "kernel": kernel, "detail": impl.kernel_detail(kernel),
                "kernels": dict(impl.kernel_status())}
    import cryptography
    from cryptography.hazmat.backends.openssl.backend import backend as openssl

    return {"backend": name, "kernel": "cryptography",
            "detail": f"cryptography {cryptography.__version__} ({openssl.openssl_version_text()}) AESGCM",
            "kernels": {}}


def _choose() -> tuple[str, ModuleType]:
    """The engine the environment asks for. In the shardseal command, a bad or unusable choice
    is one ``shardseal: error:`` line and exit status 2 (bad value) or 1 (the engine cannot
    run here), not a traceback: the package is imported before the command's own error
    handling exists.

    Raises:
        ValueError: SHARDSEAL_BACKEND or SHARDSEAL_KERNEL is not a known choice.
        ImportError: the forced backend or kernel cannot run here.
    """
    try:
        chosen, module = _load(os.environ.get("SHARDSEAL_BACKEND", "auto").strip().lower() or "auto")
        if chosen == "native":
            _select_kernel(module, os.environ.get("SHARDSEAL_KERNEL", "auto").strip().lower() or "auto")
        return chosen, module
    except (ValueError, ImportError) as exc:
        if not _is_command_line():
            raise
        message, status = " ".join(str(exc).split()), 2 if isinstance(exc, ValueError) else 1
    print(f"shardseal: error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(status)


name, impl = _choose()
