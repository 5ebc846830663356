"""Exit statuses and messages: the one mapping from exceptions to what the command prints."""

from __future__ import annotations

import os
import re
import sys
from types import FrameType
from typing import NoReturn, Optional, TextIO, Union

import shardseal

from .. import _redact
from .._atomic import TEMP_SUFFIX
from ..errors import (
    AuthenticationError,
    FormatError,
    KeyNotFoundError,
    ShardsealError,
    TruncatedError,
)

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_AUTHENTICATION = 3
EXIT_WRONG_KEY = 4
EXIT_FORMAT = 5
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143
STDIO = "-"
DEBUG_ENV = "SHARDSEAL_DEBUG"


class CliError(Exception):
    """A user-facing error (exit status 1): its message is the whole explanation."""


class Terminated(BaseException):
    """SIGTERM, raised in the main thread so that partial outputs are cleaned up."""


class FileFailed(Exception):
    """Processing one input failed; says which, and how far a folder had got."""

    def __init__(self, source: str, target: Optional[str], cause: BaseException, done: int = 0,
                 total: int = 1) -> None:
        super().__init__(source)
        self.source, self.target, self.cause = source, target, cause
        self.done, self.total = done, total


# ---- errors: the one mapping from exceptions to exit statuses and messages -----------------


def exit_status(exc: BaseException) -> int:
    """The exit status for an exception that ended a command."""
    if isinstance(exc, FileFailed):
        return exit_status(exc.cause)
    if isinstance(exc, (AuthenticationError, TruncatedError)):
        return EXIT_AUTHENTICATION
    if isinstance(exc, KeyNotFoundError):
        return EXIT_WRONG_KEY
    if isinstance(exc, FormatError):
        return EXIT_FORMAT
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    if isinstance(exc, Terminated):
        return EXIT_TERMINATED
    return EXIT_ERROR


def describe(exc: BaseException) -> str:
    """A one-line message for an exception (never any key material: no message holds any)."""
    if isinstance(exc, FileFailed):
        return _describe_file_failure(exc)
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted"
    if isinstance(exc, Terminated):
        return "terminated"
    if isinstance(exc, BrokenPipeError):
        return "the output pipe was closed before all data was written"
    if isinstance(exc, OSError):
        return _describe_os_error(exc)
    if isinstance(exc, AuthenticationError):
        return f"{exc} (the data was modified or corrupted)"
    if isinstance(exc, (ShardsealError, CliError, ValueError, TypeError)):
        return str(exc)
    if isinstance(exc, PermissionError):
        return str(exc)
    return f"unexpected {type(exc).__name__}: {exc} (set {DEBUG_ENV}=1 for a traceback)"


def _describe_os_error(exc: OSError, fallback_name: Optional[str] = None) -> str:
    if exc.strerror is None:
        return str(exc) or type(exc).__name__
    name = exc.filename
    name = os.fsdecode(name) if isinstance(name, (str, bytes, os.PathLike)) else None
    if name is None or name.endswith(TEMP_SUFFIX):
        name = fallback_name  # a temporary file's name means nothing to the user
    return f"{shown_path(name)}: {exc.strerror}" if name is not None else exc.strerror


def _describe_file_failure(failure: FileFailed) -> str:
    cause = failure.cause
    if isinstance(cause, OSError) and not isinstance(cause, BrokenPipeError):
        message = _describe_os_error(cause, fallback_name=_display(failure.target))
    else:
        message = f"{_display(failure.source)}: {describe(cause)}"
    if failure.total > 1:
        message += f" (stopped after {failure.done} of {failure.total} files)"
    return message


def _display(path: Optional[str]) -> Optional[str]:
    return "standard input" if path == STDIO else path


def shown_path(path: str) -> str:
    """A path argument as messages show it: hidden when it names nothing and might be a key."""
    if os.path.lexists(path) or not _redact.looks_like_secret(path):
        return path
    return _redact.shown_argument(path)


# The command-line arguments that might be secrets (a key pasted where a path or an option
# belongs): no message line ever shows one of them, whatever produced it (argparse included).
_secret_arguments: list[str] = []


def note_secret_arguments(argv: list[str]) -> None:
    _secret_arguments.clear()
    for argument in argv:
        for candidate in (argument, argument.partition("=")[2], argument.partition(":")[2],
                          argument.partition("#")[0].partition(":")[2]):
            if candidate and _redact.looks_like_secret(candidate) and not os.path.lexists(candidate):
                _secret_arguments.extend({candidate, repr(candidate)[1:-1]})
    _secret_arguments.sort(key=len, reverse=True)


def scrubbed(message: str) -> str:
    for secret in _secret_arguments:
        if secret in message:
            message = message.replace(secret, _redact.shown_argument(secret))
    return message


def backend_line() -> str:
    """The engine for --version and demo: backend, AES-GCM kernel and its library."""
    info = shardseal.backend_info()
    if info["backend"] == "native":
        return f"native, AES-GCM kernel {info['kernel']}: {info['detail']}"
    return f"python: {info['detail']}"


def _one_line(message: str) -> str:
    return terminal_safe(" ".join(scrubbed(message).split()))


# C0 and C1 control characters, DEL and the Unicode line and paragraph separators: text from
# a header (a KMS key reference, metadata) or a file name could otherwise move the cursor,
# recolour or rewrite the terminal, or forge extra lines of output.
_CONTROL_CHARACTERS = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def terminal_safe(text: str) -> str:
    """text with every control character escaped (\\x1b, \\u2028): safe to print."""
    return _CONTROL_CHARACTERS.sub(
        lambda m: f"\\x{ord(m.group()):02x}" if ord(m.group()) < 0x100 else f"\\u{ord(m.group()):04x}",
        text)


def lines_safe(text: str) -> str:
    """terminal_safe for each line of text (its line breaks kept)."""
    return "\n".join(terminal_safe(line) for line in text.split("\n"))


def print_error(message: str) -> None:
    print(f"shardseal: error: {_one_line(message)}", file=sys.stderr, flush=True)


def print_note(message: str) -> None:
    print(lines_safe(message), file=sys.stderr, flush=True)


def print_warning(message: str) -> None:
    print(f"shardseal: warning: {_one_line(message)}", file=sys.stderr, flush=True)


def show_warning(message: Union[Warning, str], category: type[Warning], filename: str, lineno: int,
                 file: Optional[TextIO] = None, line: Optional[str] = None) -> None:
    print_warning(str(message))  # every warning (a loose key file's mode) as one line


def on_sigterm(signum: int, frame: Optional[FrameType]) -> NoReturn:
    raise Terminated()
