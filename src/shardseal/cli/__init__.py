"""The ``shardseal`` command: keygen, encrypt, decrypt, inspect, keyring, rotate, verify, clean,
demo.

Modules, top to bottom:

* ``_parser``: ``build_parser``, the argparse definition of every command;
* ``_commands``: one small function per command (``cmd_*``), returning an exit status, and the
  transfer helpers: files through ``encrypt_file``/``decrypt_file`` (atomic, bounded memory),
  pipes through ``shardseal.open`` (streaming), folders as a list of files;
* ``_demo``: ``shardseal demo``;
* ``_messages``: exit statuses, and the one mapping from exceptions to one-line messages
  (``exit_status`` and ``describe``);
* here, ``main``: the only place that turns exceptions into messages and exit statuses.

Keys are only ever read from key files (``-k KEYFILE`` or ``SHARDSEAL_KEY_FILE``), identity
files (``-i``) or key stores (PKCS#11, KMS), never taken from the command line, and never
printed; passphrases are read without echo or from a file descriptor (``keys.specs``).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import traceback
import warnings
from types import FrameType
from typing import Any, Callable, Optional, Union

from .. import audit
from ..errors import KeySpecError
from ._commands import AUDIT_LOG_ENV
from ._messages import (
    DEBUG_ENV,
    FileFailed,
    Terminated,
    describe,
    exit_status,
    lines_safe,
    note_secret_arguments,
    on_sigterm,
    print_error,
    scrubbed,
    show_warning,
    terminal_safe,
)
from ._parser import build_parser

__all__ = ["build_parser", "describe", "exit_status", "main", "terminal_safe"]

# What signal.signal takes and returns (typeshed's private signal._HANDLER).
_SignalHandler = Union[Callable[[int, Optional[FrameType]], Any], int, signal.Handlers, None]


def main(argv: Optional[list[str]] = None) -> int:
    """Runs the command line; returns the exit status (argparse exits 2 on bad usage)."""
    note_secret_arguments(sys.argv[1:] if argv is None else list(argv))
    parser = build_parser()
    args = parser.parse_args(argv)
    audit_log = args.audit_log or os.environ.get(AUDIT_LOG_ENV)
    audit_handler = None
    with warnings.catch_warnings():
        warnings.showwarning = show_warning
        previous = _install_sigterm_handler()
        try:
            if audit_log:
                audit_handler = audit.enable(audit_log)
            status: int = args.handler(args)  # every cmd_* returns its exit status
            return status
        except KeySpecError as exc:
            usage: argparse.ArgumentParser = getattr(args, "subparser", parser)
            usage.error(str(exc))
        except (Exception, KeyboardInterrupt, Terminated) as exc:
            if os.environ.get(DEBUG_ENV) == "1":
                print(lines_safe(scrubbed(traceback.format_exc())), end="", file=sys.stderr)
            if isinstance(exc, BrokenPipeError) or (isinstance(exc, FileFailed)
                                                    and isinstance(exc.cause, BrokenPipeError)):
                _silence_stdout()
            print_error(describe(exc))
            return exit_status(exc)
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
            if audit_handler is not None:
                audit.logger.removeHandler(audit_handler)
                audit_handler.close()


def _install_sigterm_handler() -> _SignalHandler:
    try:
        return signal.signal(signal.SIGTERM, on_sigterm)
    except ValueError:  # not the main thread (main() called from a library)
        return None


def _silence_stdout() -> None:
    """After a broken pipe, keeps the interpreter's final flush of stdout from failing."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass
