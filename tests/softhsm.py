"""Throwaway SoftHSM2 tokens for the PKCS#11 tests.

:class:`SoftHsm` makes a temporary token folder and a ``softhsm2.conf`` pointing at it, sets
``SOFTHSM2_CONF`` for this process and its children, and initialises tokens with
``softhsm2-util --init-token --free``. SoftHSM2 reads its configuration and its token list
when the library is initialised (``C_Initialize``), so create every token a test run needs
before the first PKCS#11 call of the process.

:func:`require` skips the calling test when SoftHSM2 or python-pkcs11 is missing, with the
reason, unless ``SHARDSEAL_REQUIRE_HSM=1`` is set (as in CI): then it fails instead, so that a
broken installation cannot pass as a run with the HSM tests skipped.

Install: ``apt-get install softhsm2`` (or ``dnf install softhsm``, ``brew install softhsm``) and
``pip install python-pkcs11`` (the ``shardseal[pkcs11]`` extra).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
from pathlib import Path
from typing import Optional

import pytest

REQUIRE_ENV = "SHARDSEAL_REQUIRE_HSM"
MODULE_ENV = "SOFTHSM2_MODULE"  # overrides the search below
MODULE_CANDIDATES = (
    "/usr/lib/softhsm/libsofthsm2.so",  # Debian, Ubuntu
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib64/pkcs11/libsofthsm2.so",  # Fedora, RHEL
    "/usr/lib/pkcs11/libsofthsm2.so",
    "/usr/local/lib/softhsm/libsofthsm2.so",  # source builds, FreeBSD
    "/opt/homebrew/lib/softhsm/libsofthsm2.so",  # macOS (Homebrew)
    "/usr/local/opt/softhsm/lib/softhsm/libsofthsm2.so",
)


def find_module() -> Optional[str]:
    """The path of libsofthsm2.so, or None."""
    override = os.environ.get(MODULE_ENV)
    if override:
        return override if Path(override).is_file() else None
    return next((path for path in MODULE_CANDIDATES if Path(path).is_file()), None)


def missing_reason() -> Optional[str]:
    """Why the SoftHSM2 tests cannot run here, or None when they can."""
    if importlib.util.find_spec("pkcs11") is None:
        return "python-pkcs11 is not installed (pip install python-pkcs11)"
    if find_module() is None:
        return (f"libsofthsm2.so not found (apt-get install softhsm2, or set {MODULE_ENV} "
                "to its path)")
    if shutil.which("softhsm2-util") is None:
        return "softhsm2-util is not on PATH (apt-get install softhsm2)"
    return None


def require() -> str:
    """The SoftHSM2 module path; skips the test (or fails it, under SHARDSEAL_REQUIRE_HSM=1)
    when SoftHSM2 or python-pkcs11 is missing.

    Raises:
        pytest.skip.Exception, pytest.fail.Exception: as described.
    """
    reason = missing_reason()
    if reason is None:
        return find_module()
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{reason}; {REQUIRE_ENV}=1 requires the PKCS#11 tests to run", pytrace=False)
    pytest.skip(reason)


class SoftHsm:
    """A SoftHSM2 token folder of its own, selected through SOFTHSM2_CONF.

    Args:
        folder: an empty folder for the configuration and the tokens.
        module: the libsofthsm2.so path (see ``require``).

    Raises:
        OSError: the folder cannot be written.
    """

    def __init__(self, folder: Path, module: str) -> None:
        self.module = module
        self.folder = Path(folder)
        self.token_dir = self.folder / "tokens"
        self.token_dir.mkdir(parents=True)
        self.conf = self.folder / "softhsm2.conf"
        self.conf.write_text(
            f"directories.tokendir = {self.token_dir}\n"
            "objectstore.backend = file\n"
            "log.level = ERROR\n"
            "slots.removable = false\n",
            encoding="utf-8",
        )
        self._previous_conf = os.environ.get("SOFTHSM2_CONF")
        os.environ["SOFTHSM2_CONF"] = str(self.conf)  # inherited by children (fork, subprocess)

    def init_token(self, label: str, pin: str, so_pin: str) -> None:
        """Initialises a new token in the first free slot.

        Raises:
            RuntimeError: softhsm2-util failed (its output is in the message).
        """
        command = ["softhsm2-util", "--init-token", "--free", "--label", label,
                   "--pin", pin, "--so-pin", so_pin]
        result = subprocess.run(command, capture_output=True, text=True, timeout=60)
        if result.returncode != 0:
            raise RuntimeError(f"softhsm2-util --init-token --label {label} failed: "
                               f"{result.stdout}{result.stderr}")

    def close(self) -> None:
        """Restores SOFTHSM2_CONF (the folder itself belongs to the caller)."""
        if self._previous_conf is None:
            os.environ.pop("SOFTHSM2_CONF", None)
        else:
            os.environ["SOFTHSM2_CONF"] = self._previous_conf
