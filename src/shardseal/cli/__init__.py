"""The ``shardseal`` command: keygen, encrypt, decrypt, inspect, keyring, rotate, verify, clean,
demo.

Layers, top to bottom:

* ``build_parser``: the argparse definition of every command;
* ``cmd_*``: one small function per command, returning an exit status;
* the transfer helpers: files through ``encrypt_file``/``decrypt_file`` (atomic, bounded
  memory), pipes through ``shardseal.open`` (streaming), folders as a list of files;
* ``main``: the only place that turns exceptions into one-line messages and exit statuses
  (``exit_status`` and ``describe``).

Keys are only ever read from key files (``-k KEYFILE`` or ``SHARDSEAL_KEY_FILE``), identity
files (``-i``) or key stores (PKCS#11, KMS), never taken from the command line, and never
printed; passphrases are read without echo or from a file descriptor (``keys.specs``).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import re
import signal
import stat
import sys
import time
import traceback
import warnings
from dataclasses import dataclass
from typing import BinaryIO, Callable, Optional

import shardseal

from ..container import header as _container
from ..keys import direct as _keys, specs as _keyspec, keyfile
from .. import _redact, audit
from ..keys.specs import KeySpecError
from ..keys.envelope import DirectKey
from ..container.blob import container_info
from ..io.files import TEMP_SUFFIX, AtomicFile
from ..io.stream import read_exact
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

SUFFIX = ".sseal"
STDIO = "-"
KEY_FILE_ENV = "SHARDSEAL_KEY_FILE"
AUDIT_LOG_ENV = "SHARDSEAL_AUDIT_LOG"
DEBUG_ENV = "SHARDSEAL_DEBUG"
# Streams (pipes) move data in blocks of this size.
BLOCK_SIZE = 8 * 2**20

EPILOG = """\
exit status:
  0    success
  1    error: a missing or unreadable file, an output that exists (see --force),
       a bad key file
  2    bad command-line usage
  3    authentication failed: the data was modified, corrupted or truncated
       (verify: a shard is missing, modified or unlisted)
  4    wrong key: the container was not encrypted to the given key, identities or
       passphrase
  5    not a shardseal container (an empty input included), a format this version
       cannot read, or (inspect) metadata nested too deeply to display
  130  interrupted (Ctrl-C); no partial output file is left behind
  143  terminated (SIGTERM); likewise

environment:
  SHARDSEAL_KEY_FILE  key file used when no -k, -r, -i or -p is given
  SHARDSEAL_AUDIT_LOG append the audit log (JSON lines) to this file (or --audit-log)
  SHARDSEAL_PKCS11_MODULE, SHARDSEAL_PKCS11_PIN  the PKCS#11 library and PIN for pkcs11: keys
  AWS_*               AWS KMS settings (region, credentials, AWS_ENDPOINT_URL_KMS)
  SHARDSEAL_DEBUG=1   print a traceback with every error
  SHARDSEAL_BACKEND   auto (default), native or python
"""


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
    return f"{_shown_path(name)}: {exc.strerror}" if name is not None else exc.strerror


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


def _shown_path(path: str) -> str:
    """A path argument as messages show it: hidden when it names nothing and might be a key."""
    if os.path.lexists(path) or not _redact.looks_like_secret(path):
        return path
    return _redact.shown_argument(path)


# The command-line arguments that might be secrets (a key pasted where a path or an option
# belongs): no message line ever shows one of them, whatever produced it (argparse included).
_secret_arguments: list[str] = []


def _note_secret_arguments(argv: list[str]) -> None:
    _secret_arguments.clear()
    for argument in argv:
        for candidate in (argument, argument.partition("=")[2], argument.partition(":")[2],
                          argument.partition("#")[0].partition(":")[2]):
            if candidate and _redact.looks_like_secret(candidate) and not os.path.lexists(candidate):
                _secret_arguments.extend({candidate, repr(candidate)[1:-1]})
    _secret_arguments.sort(key=len, reverse=True)


def _scrubbed(message: str) -> str:
    for secret in _secret_arguments:
        if secret in message:
            message = message.replace(secret, _redact.shown_argument(secret))
    return message


def _backend_line() -> str:
    """The engine for --version and demo: backend, AES-GCM kernel and its library."""
    info = shardseal.backend_info()
    if info["backend"] == "native":
        return f"native, AES-GCM kernel {info['kernel']}: {info['detail']}"
    return f"python: {info['detail']}"


def _one_line(message: str) -> str:
    return " ".join(_scrubbed(message).split())


def _error(message: str) -> None:
    print(f"shardseal: error: {_one_line(message)}", file=sys.stderr, flush=True)


def _note(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _warn(message: str) -> None:
    print(f"shardseal: warning: {_one_line(message)}", file=sys.stderr, flush=True)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    _warn(str(message))  # every warning (a loose key file's mode) as one line


def _on_sigterm(signum, frame):
    raise Terminated()


class _Parser(argparse.ArgumentParser):
    """argparse, with usage errors scrubbed of arguments that might be keys."""

    def error(self, message: str):
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {_scrubbed(message)}\n")


def main(argv: Optional[list[str]] = None) -> int:
    """Runs the command line; returns the exit status (argparse exits 2 on bad usage)."""
    _note_secret_arguments(sys.argv[1:] if argv is None else list(argv))
    parser = build_parser()
    args = parser.parse_args(argv)
    audit_log = args.audit_log or os.environ.get(AUDIT_LOG_ENV)
    audit_handler = None
    with warnings.catch_warnings():
        warnings.showwarning = _show_warning
        previous = _install_sigterm_handler()
        try:
            if audit_log:
                audit_handler = audit.enable(audit_log)
            return args.handler(args)
        except KeySpecError as exc:
            getattr(args, "subparser", parser).error(str(exc))
        except (Exception, KeyboardInterrupt, Terminated) as exc:
            if os.environ.get(DEBUG_ENV) == "1":
                print(_scrubbed(traceback.format_exc()), end="", file=sys.stderr)
            if isinstance(exc, BrokenPipeError) or (isinstance(exc, FileFailed)
                                                    and isinstance(exc.cause, BrokenPipeError)):
                _silence_stdout()
            _error(describe(exc))
            return exit_status(exc)
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
            if audit_handler is not None:
                audit.logger.removeHandler(audit_handler)
                audit_handler.close()


def _install_sigterm_handler():
    try:
        return signal.signal(signal.SIGTERM, _on_sigterm)
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


# ---- argument parsing -----------------------------------------------------------------------


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {_redact.shown_argument(text)}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _json_object(text: str) -> dict:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("must be a JSON object, such as '{\"split\": \"train\"}'")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="shardseal",
        description="Authenticated encryption (AES-GCM, C2SP chunked encryption) for "
                    "machine-learning data: files, folders and pipes.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version",
                        version=f"shardseal {shardseal.__version__} ({_backend_line()})")
    parser.add_argument("--audit-log", metavar="PATH",
                        help=f"append audit events (key use, failures) as JSON lines to PATH "
                             f"(default: ${AUDIT_LOG_ENV})")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_keygen(commands)
    _add_encrypt(commands)
    _add_decrypt(commands)
    _add_inspect(commands)
    _add_keyring(commands)
    _add_rotate(commands)
    _add_verify(commands)
    _add_clean(commands)
    _add_demo(commands)
    return parser


def _subcommand(commands, name: str, help: str, description: str) -> argparse.ArgumentParser:
    return commands.add_parser(name, help=help, description=description, epilog=EPILOG,
                               formatter_class=argparse.RawDescriptionHelpFormatter)


def _add_keygen(commands) -> None:
    sub = _subcommand(commands, "keygen", "create a new random key file",
                      "Creates a random 32-byte key and writes it as a key file with mode 0600. "
                      "With --x25519, creates an X25519 identity instead and prints its public "
                      "recipient string (give it to whoever encrypts for you: -r ssealx1...). "
                      "Without -o the key file is written to standard output.")
    sub.add_argument("-o", "--output", metavar="KEYFILE", help="the key file to create")
    sub.add_argument("--x25519", action="store_true",
                     help="an X25519 identity (public-key encryption) instead of a symmetric key")
    sub.add_argument("--force", action="store_true", help="replace an existing key file")
    sub.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")
    sub.set_defaults(handler=cmd_keygen)


def _add_passphrase_options(sub: argparse.ArgumentParser, help: str) -> None:
    sub.add_argument("-p", "--passphrase", action="store_true", help=help)
    sub.add_argument("--passphrase-fd", type=int, metavar="FD",
                     help="read the passphrase from the first line of file descriptor FD "
                          "(for scripts; implies -p)")


def _add_transfer_options(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("inputs", nargs="+", metavar="INPUT",
                     help="a file, a folder (recursively) or - for standard input")
    sub.add_argument("-k", "--key-file", metavar="KEYFILE",
                     help=f"the key file (default: ${KEY_FILE_ENV}); keys are never taken "
                          "from the command line")
    sub.add_argument("-o", "--output", metavar="OUT",
                     help="the output file, - for standard output, or the output folder when "
                          "INPUT is a folder")
    sub.add_argument("--threads", type=_positive_int, metavar="N",
                     help="worker threads (default: every available CPU)")
    sub.add_argument("--force", action="store_true", help="overwrite existing outputs")
    sub.add_argument("-q", "--quiet", action="store_true",
                     help="no progress bar and no summary line")
    sub.set_defaults(subparser=sub)


def _add_encrypt(commands) -> None:
    sub = _subcommand(
        commands, "encrypt", "encrypt files, folders or standard input",
        "Encrypts each INPUT to INPUT.sseal (or to -o). A folder is encrypted recursively into "
        "the folder -o names, mirroring its tree and skipping files that already end in .sseal.")
    _add_transfer_options(sub)
    sub.add_argument("-r", "--recipient", action="append", metavar="RECIPIENT", default=[],
                     help="encrypt for RECIPIENT instead of a key file (repeatable; any one of "
                          "them decrypts): ssealx1... (X25519), keyring:PATH[#NAME], "
                          "pkcs11:token=...;object=..., aws-kms:KEY")
    _add_passphrase_options(sub, "encrypt with a passphrase (asked twice, without echo); the "
                                 "passphrase must be the only recipient")
    sub.add_argument("--work-factor", type=int, default=18, metavar="LOG2N",
                     help="scrypt cost for -p: log2 of N (default 18, about a second)")
    sub.add_argument("--metadata", type=_json_object, metavar="JSON",
                     help="a JSON object stored in the header: authenticated, NOT secret")
    sub.add_argument("--suite", type=int, choices=(256, 128), default=256,
                     help="256: AES-256-GCM (default); 128: AES-128-GCM")
    sub.set_defaults(handler=cmd_encrypt)


def _add_decrypt(commands) -> None:
    sub = _subcommand(
        commands, "decrypt", "decrypt files, folders or standard input",
        "Decrypts each INPUT.sseal to INPUT (or to -o). A folder is decrypted recursively into "
        "the folder -o names, taking only its *.sseal files. An output file appears only once "
        "all of its data has authenticated; on standard output, data written before a failure "
        "cannot be taken back, so check the exit status.")
    _add_transfer_options(sub)
    _add_identity_options(sub)
    sub.set_defaults(handler=cmd_decrypt)


def _add_identity_options(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("-i", "--identity", action="append", metavar="IDENTITY", default=[],
                     help="decrypt with IDENTITY (repeatable, tried in order): the path of a "
                          "key file, keyring file or X25519 identity file; pkcs11:...; aws-kms")
    _add_passphrase_options(sub, "decrypt with a passphrase (asked without echo)")


def _add_inspect(commands) -> None:
    sub = _subcommand(
        commands, "inspect", "show a container's header (no key needed)",
        "Prints what a container's header says: format version, suite, the key ids it is "
        "encrypted to, metadata, array description and plaintext size. No key is needed, so "
        "nothing is authenticated: decrypt verifies all of it.")
    sub.add_argument("input", metavar="INPUT", help="a container file, or - for standard input")
    sub.add_argument("--json", action="store_true", help="print one JSON object")
    sub.set_defaults(handler=cmd_inspect)


def _add_keyring(commands) -> None:
    sub = _subcommand(
        commands, "keyring", "create and manage a keyring of key-encryption keys",
        "A keyring file holds named 256-bit key-encryption keys (KEKs) with ids, creation times "
        "and states: active (wraps and unwraps), decrypt-only (a retiring key: unwraps only), "
        "destroyed (its key bytes are erased for good). Encrypt with -r keyring:PATH (the newest "
        "active key) and decrypt with -i PATH.")
    sub.add_argument("action", choices=("create", "add", "list", "retire", "destroy"),
                     help="create PATH; add PATH NAME (a new active key); list PATH; "
                          "retire PATH NAME (decrypt-only); destroy PATH NAME")
    sub.add_argument("path", metavar="PATH", help="the keyring file")
    sub.add_argument("name", nargs="?", metavar="NAME", help="a key's name or id")
    sub.add_argument("--force", action="store_true", help="create: replace an existing file")
    sub.add_argument("-y", "--yes", action="store_true",
                     help="destroy: do not ask for confirmation (required without a terminal)")
    sub.set_defaults(handler=cmd_keyring, subparser=sub)


def _add_rotate(commands) -> None:
    sub = _subcommand(
        commands, "rotate", "re-wrap file keys: add or remove recipients, move to a new KEK",
        "Rewrites only the key block of each container (the payload bytes stay unchanged), in "
        "place when its size allows and otherwise through a temporary file, crash-safe either "
        "way. --reencrypt instead decrypts and encrypts again with a new file key (for a key "
        "that leaked); it needs the complete new set of recipients (-r).")
    sub.add_argument("inputs", nargs="+", metavar="INPUT", help="container files or folders")
    _add_identity_options(sub)
    sub.add_argument("--add", action="append", metavar="RECIPIENT", default=[],
                     help="wrap the file key for RECIPIENT too (as encrypt -r)")
    sub.add_argument("--remove", action="append", metavar="KEY_ID", default=[],
                     help="remove the stanza of KEY_ID (as inspect shows it), or of a recipient")
    sub.add_argument("-r", "--recipient", action="append", metavar="RECIPIENT", default=[],
                     help="the complete new set of recipients (instead of --add/--remove)")
    sub.add_argument("--new-passphrase", action="store_true",
                     help="change the passphrase: the new one (asked twice) becomes the only recipient")
    sub.add_argument("--new-passphrase-fd", type=int, metavar="FD",
                     help="read the new passphrase from file descriptor FD (implies --new-passphrase)")
    sub.add_argument("--reencrypt", action="store_true",
                     help="re-encrypt with a new file key (reads and writes every byte)")
    sub.add_argument("--dry-run", action="store_true", help="report what would change, change nothing")
    sub.add_argument("--no-recursive", action="store_true", help="do not descend into sub-folders")
    sub.add_argument("--threads", type=_positive_int, metavar="N", help="worker threads for --reencrypt")
    sub.add_argument("-q", "--quiet", action="store_true", help="no summary line")
    sub.set_defaults(handler=cmd_rotate, subparser=sub)


def _add_verify(commands) -> None:
    sub = _subcommand(
        commands, "verify", "check a dataset against its manifest",
        "Opens the dataset manifest (manifest.sseal) with the given identities and checks that "
        "every shard it lists exists with its recorded size and SHA-256, and that no unlisted "
        "shard is present: a missing, swapped, rolled-back or modified shard is reported and the "
        "exit status is 3. --deep also decrypts every shard.")
    sub.add_argument("folder", metavar="FOLDER", help="the dataset folder")
    _add_identity_options(sub)
    sub.add_argument("-k", "--key-file", metavar="KEYFILE", help="a key file that opens the manifest")
    sub.add_argument("--manifest", default="manifest.sseal", metavar="NAME",
                     help="the manifest's file name in FOLDER (default manifest.sseal)")
    sub.add_argument("--deep", action="store_true", help="also decrypt every shard")
    sub.add_argument("--json", action="store_true", help="print the report as JSON")
    sub.set_defaults(handler=cmd_verify, subparser=sub)


def _add_clean(commands) -> None:
    sub = _subcommand(
        commands, "clean", "remove temporary files that killed runs left behind",
        "Removes the .*.sseal-tmp files that a killed writer (SIGKILL, power loss) left in "
        "FOLDER and its sub-folders; a decrypt's holds plaintext. A file is removed only when "
        "it is older than --older-than minutes and no live writer holds its lock, so a running "
        "encrypt or decrypt is never disturbed. Symbolic links are neither followed nor removed.")
    sub.add_argument("folders", nargs="+", metavar="FOLDER", help="the folders to clean")
    sub.add_argument("--older-than", type=_minutes, default=10.0, metavar="MINUTES",
                     help="only remove files last modified at least this long ago (default 10)")
    sub.add_argument("--dry-run", action="store_true", help="list what would be removed")
    sub.add_argument("--no-recursive", action="store_true", help="do not descend into sub-folders")
    sub.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")
    sub.set_defaults(handler=cmd_clean, subparser=sub)


def _minutes(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {_redact.shown_argument(text)}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError("must be a number of minutes, 0 or more")
    return value


def _add_demo(commands) -> None:
    demo = commands.add_parser("demo", help="encrypt, inspect and decrypt a synthetic shard in memory")
    demo.add_argument("--size-mib", type=int, default=256, help="shard size in MiB (default 256)")
    demo.add_argument("--threads", type=int, default=None, help="worker threads (default: all CPUs)")
    demo.set_defaults(handler=cmd_demo)


# ---- keys -----------------------------------------------------------------------------------


def load_key(args: argparse.Namespace) -> bytes:
    """The key from -k or $SHARDSEAL_KEY_FILE (a usage error, status 2, when neither is set)."""
    path = getattr(args, "key_file", None) or os.environ.get(KEY_FILE_ENV)
    if not path:
        options = "-r RECIPIENT, -p or -k KEYFILE" if args.command == "encrypt" else \
            "-i IDENTITY, -p or -k KEYFILE" if hasattr(args, "key_file") else "-i IDENTITY or -p"
        args.subparser.error(f"a key is required: {options} (or set {KEY_FILE_ENV})")
    if path.strip().startswith(keyfile.KEY_LINE_PREFIX):
        # Never echo it: this is a key, pasted where a path belongs.
        raise CliError("-k takes the path of a key file, not a key: "
                       "keys are never given on the command line")
    try:
        return keyfile.read_key_file(path)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
    # Raised here, not in the except block: the OSError (its filename is path) is not kept.
    raise CliError(f"cannot read key file {_shown_path(path)}: {reason}")


def encryption_keys(args: argparse.Namespace) -> dict:
    """``key=`` or ``recipients=`` for encrypt, from -k, -r and -p."""
    recipients = [_keyspec.parse_recipient(text) for text in args.recipient]
    if args.passphrase or args.passphrase_fd is not None:
        if recipients or args.key_file:
            raise KeySpecError("a passphrase must be the only recipient: drop -r and -k")
        from ..keys import passphrase
        secret = _keyspec.read_passphrase(args.passphrase_fd, confirm=True)
        recipients.append(passphrase.Passphrase(secret, work_factor=args.work_factor))
    if not recipients:
        return {"key": load_key(args)}
    if args.key_file:
        raise KeySpecError("give either -k or -r, not both")
    return {"recipients": recipients}


def decryption_keys(args: argparse.Namespace) -> dict:
    """``key=`` and/or ``identities=`` for decrypt, rotate and verify, from -k, -i and -p."""
    identities = [_keyspec.load_identity(spec) for spec in args.identity]
    if args.passphrase or args.passphrase_fd is not None:
        from ..keys import passphrase
        secret = _keyspec.read_passphrase(args.passphrase_fd, confirm=False)
        identities.append(passphrase.Passphrase(secret))
    keys: dict = {}
    if getattr(args, "key_file", None) or not identities:
        keys["key"] = load_key(args)
    if identities:
        keys["identities"] = identities
    return keys


def identity_list(keys: dict) -> list:
    """decryption_keys' result as one list of identities (the key file's key first)."""
    direct = [DirectKey(keys["key"])] if "key" in keys else []
    return direct + keys.get("identities", [])


# ---- commands -------------------------------------------------------------------------------


def cmd_keygen(args: argparse.Namespace) -> int:
    if args.x25519:
        return keygen_x25519(args)
    key = shardseal.generate_key()
    key_id = _keys.key_id(key).hex()
    if args.output in (None, STDIO):
        if sys.stdout.isatty():
            _warn("the key is shown on the terminal: anyone who sees it can decrypt your data "
                  "(use -o KEYFILE to write a protected key file)")
        elif not args.quiet:
            _warn("the key is written to standard output: store it with mode 0600 "
                  "(-o KEYFILE does that)")
        sys.stdout.write(keyfile.format_key_file(key))
        sys.stdout.flush()
        return EXIT_OK
    try:
        keyfile.write_key_file(args.output, key, force=args.force)
    except FileExistsError:
        raise CliError(f"{args.output} already exists (use --force to replace it)") from None
    if not args.quiet:
        _note(f"wrote key file {args.output} (key id {key_id})")
    return EXIT_OK


def keygen_x25519(args: argparse.Namespace) -> int:
    """Writes a new X25519 identity file and prints its recipient string on standard output."""
    from ..keys import x25519

    identity = x25519.X25519Identity.generate()
    recipient = str(identity.recipient)
    if args.output in (None, STDIO):
        if not args.quiet:
            _warn("the identity (a secret) is written to standard output: store it with mode "
                  "0600 (-o FILE does that); its recipient is " + recipient)
        sys.stdout.write(x25519.format_identity_file(identity))
        sys.stdout.flush()
        return EXIT_OK
    try:
        x25519.write_identity_file(args.output, identity, overwrite=args.force)
    except FileExistsError:
        raise CliError(f"{args.output} already exists (use --force to replace it)") from None
    print(recipient)
    if not args.quiet:
        _note(f"wrote identity file {args.output}; encrypt to it with -r {recipient}")
    return EXIT_OK


def cmd_keyring(args: argparse.Namespace) -> int:
    from ..keys import keyring

    if args.action != "create" and args.action != "list" and not args.name:
        args.subparser.error(f"keyring {args.action} needs PATH and NAME")
    if args.action == "create":
        try:
            keyring.Keyring.create(args.path, overwrite=args.force)
        except FileExistsError:
            raise CliError(f"{args.path} already exists (use --force to replace it)") from None
        _note(f"created keyring {args.path}")
        return EXIT_OK
    ring = keyring.Keyring.load(args.path)
    if args.action == "add":
        info = ring.add(args.name)
        _note(f"added key {info.name} (id {info.id}, active) to {args.path}")
    elif args.action in ("retire", "destroy"):
        if args.action == "destroy" and not args.yes:
            _confirm_destroy(args, ring)
        state = "decrypt-only" if args.action == "retire" else "destroyed"
        info = ring.set_state(args.name, state)
        _note(f"key {info.name} (id {info.id}) is now {info.state}")
    else:
        for info in ring.keys:
            print(f"{info.id}  {info.state:<12}  {_stamp(info.created)}  {info.name}")
    return EXIT_OK


def _confirm_destroy(args: argparse.Namespace, ring) -> None:
    """Asks on the terminal before key bytes are erased; without a terminal, --yes is needed."""
    if not (sys.stdin.isatty() and sys.stderr.isatty()):
        args.subparser.error("keyring destroy erases the key for good: confirm with --yes "
                             "(no terminal to ask on)")
    info = next((k for k in ring.keys if args.name in (k.name, k.id)), None)
    described = f"key {info.name} (id {info.id})" if info is not None else f"key {args.name}"
    print(f"Destroy {described} in {args.path}? Files encrypted only to it can never be "
          "decrypted again. Type 'yes' to confirm: ", end="", file=sys.stderr, flush=True)
    answer = sys.stdin.readline().strip().lower()
    if answer != "yes":
        raise CliError("not confirmed: nothing was destroyed")


def _stamp(created) -> str:
    return created if isinstance(created, str) else created.strftime("%Y-%m-%dT%H:%M:%SZ")


def cmd_rotate(args: argparse.Namespace) -> int:
    from ..ops import rotation

    recipients = [_keyspec.parse_recipient(text) for text in args.recipient]
    if args.new_passphrase or args.new_passphrase_fd is not None:
        if recipients or args.add or args.remove:
            raise KeySpecError("a new passphrase must be the only recipient: drop -r, --add and --remove")
        from ..keys import passphrase
        secret = _keyspec.read_passphrase(args.new_passphrase_fd, confirm=True, prompt="new passphrase")
        recipients = [passphrase.Passphrase(secret)]
    options = dict(
        identities=identity_list(decryption_keys(args)),
        add=[_keyspec.parse_recipient(text) for text in args.add],
        remove=list(args.remove),
        recipients=recipients or None,
        reencrypt=args.reencrypt, recursive=not args.no_recursive, threads=args.threads,
        dry_run=args.dry_run)
    report = rotation.rotate(args.inputs, **options)
    if not args.quiet:
        _note(report.summary())
    return EXIT_OK


def cmd_verify(args: argparse.Namespace) -> int:
    from ..ops import manifest

    report = manifest.verify(args.folder, identities=identity_list(decryption_keys(args)), deep=args.deep,
                             manifest_name=args.manifest)
    if args.json:
        print(json.dumps(dataclasses.asdict(report), indent=2, sort_keys=True, default=str))
    else:
        for name, kind, detail in report.problems:
            print(f"{kind}: {name}: {detail}")
        _note(report.summary())
    return EXIT_OK if report.ok else EXIT_AUTHENTICATION


@dataclass(frozen=True)
class Direction:
    """What encrypt or decrypt does to one input; the transfer helpers do the rest."""

    name: str                                      # "encrypt" / "decrypt"
    verb: str                                      # "encrypted" / "decrypted"
    file: Callable[[str, str, object], int]        # (source, target, progress) -> plaintext bytes
    stream: Callable[[BinaryIO, str], int]         # (source, target path or "-") -> plaintext bytes
    output_name: Callable[[str], str]              # default output for an input path
    selects: Callable[[str], bool]                 # which file names a folder run takes


def cmd_encrypt(args: argparse.Namespace) -> int:
    keys = encryption_keys(args)
    options = dict(metadata=args.metadata, threads=args.threads, suite=args.suite, **keys)

    def encrypt_stream(source: BinaryIO, target: str) -> int:
        if target == STDIO and sys.stdout.isatty() and not args.force:
            raise CliError("refusing to write ciphertext to a terminal: redirect standard output "
                           "or name a file with -o (--force writes it anyway)")
        destination = sys.stdout.buffer if target == STDIO else target
        with shardseal.open(destination, "wb", **options) as writer:
            return _copy(source.readinto, writer.write)

    direction = Direction(
        name="encrypt",
        verb="encrypted",
        file=lambda source, target, progress: shardseal.encrypt_file(
            source, target, progress=progress, **options),
        stream=encrypt_stream,
        output_name=lambda path: path + SUFFIX,
        selects=lambda name: not name.endswith((SUFFIX, TEMP_SUFFIX)),
    )
    return transfer(direction, args)


def cmd_decrypt(args: argparse.Namespace) -> int:
    keys = decryption_keys(args)

    def decrypt_stream(source: BinaryIO, target: str) -> int:
        _refuse_empty(source)
        with shardseal.open(source, "rb", threads=args.threads, **keys) as reader:
            if target == STDIO:
                n = _copy(reader.readinto, sys.stdout.buffer.write)
                sys.stdout.buffer.flush()
                return n
            atomic = AtomicFile(target)
            try:
                n = _copy(reader.readinto, atomic.file.write)
                atomic.commit()
            except BaseException:
                atomic.abort()
                raise
            return n

    def output_name(path: str) -> str:
        stripped = path[: -len(SUFFIX)] if path.endswith(SUFFIX) else ""
        if not os.path.basename(stripped):
            raise CliError(f"{path} does not end in {SUFFIX} after a name: "
                           "name the output with -o")
        return stripped

    direction = Direction(
        name="decrypt",
        verb="decrypted",
        file=lambda source, target, progress: _refuse_empty_file(source) or shardseal.decrypt_file(
            source, target, threads=args.threads, progress=progress, **keys),
        stream=decrypt_stream,
        output_name=output_name,
        selects=lambda name: name.endswith(SUFFIX),
    )
    return transfer(direction, args)


EMPTY_INPUT = "the input is empty: not a shardseal container"


def _refuse_empty(source: BinaryIO) -> None:
    """An empty input is no container at all (exit status 5), not a cut-short one (3)."""
    peek = getattr(source, "peek", None)
    if peek is not None and not peek(1):
        raise FormatError(EMPTY_INPUT)


def _refuse_empty_file(path: str) -> None:
    if os.stat(path).st_size == 0 and stat.S_ISREG(os.stat(path).st_mode):
        raise FormatError(EMPTY_INPUT)


def cmd_inspect(args: argparse.Namespace) -> int:
    try:
        with _open_input(args.input) as source:
            info, size = inspect_stream(source)
    except Exception as exc:
        raise FileFailed(args.input, None, exc) from exc
    report = {"file": args.input, "container_size": size, **dataclasses.asdict(info)}
    if args.json:
        print(json.dumps(report, indent=2, sort_keys=True))
    else:
        print(_inspect_text(report))
    return EXIT_OK


def cmd_clean(args: argparse.Namespace) -> int:
    from ..io import cleanup

    removed = kept = 0
    for folder in args.folders:
        if not os.path.isdir(folder):
            raise CliError(f"{_shown_path(folder)} is not a folder")
        report = cleanup.clean_temp_files(folder, min_age=args.older_than * 60,
                                          recursive=not args.no_recursive, dry_run=args.dry_run)
        for path in report.removed:
            if not args.quiet:
                print(f"{'would remove' if args.dry_run else 'removed'} {path}")
        for path, why in report.kept:
            if not args.quiet:
                _note(f"kept {path}: {why}")
        removed += len(report.removed)
        kept += len(report.kept)
    if not args.quiet:
        verb = "would remove" if args.dry_run else "removed"
        _note(f"{verb} {removed} leftover temporary file{'' if removed == 1 else 's'}, "
              f"kept {kept}")
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    return run_demo(args.size_mib, args.threads)


# ---- transfers: inputs to outputs -----------------------------------------------------------


@dataclass
class Totals:
    files: int = 0
    nbytes: int = 0

    def add(self, other: "Totals") -> None:
        self.files += other.files
        self.nbytes += other.nbytes


def transfer(direction: Direction, args: argparse.Namespace) -> int:
    """Runs encrypt or decrypt over every INPUT, then prints the summary line."""
    inputs = args.inputs
    if STDIO in inputs and len(inputs) > 1:
        raise CliError("- (standard input) must be the only INPUT")
    if args.output is not None and len(inputs) > 1:
        raise CliError("-o needs a single INPUT (with several, each gets its default name)")
    progress = not args.quiet and sys.stderr.isatty()
    start = time.perf_counter()
    totals = Totals()
    for source in inputs:
        if source != STDIO and os.path.isdir(source):
            totals.add(transfer_folder(direction, source, args.output, args.force, progress))
        else:
            totals.add(transfer_one(direction, source, args.output, args.force, progress))
    if not args.quiet:
        seconds = time.perf_counter() - start
        _note(f"{direction.verb} {totals.files} file{'' if totals.files == 1 else 's'}, "
              f"{totals.nbytes} bytes ({_human_size(totals.nbytes)}) in {seconds:.2f} s")
    return EXIT_OK


def transfer_one(direction: Direction, source: str, output: Optional[str], force: bool,
                 progress: bool) -> Totals:
    """One file or standard input, to one file or standard output."""
    if source == STDIO:
        target = STDIO if output is None else output
        if target != STDIO and os.path.isdir(target):
            raise CliError("standard input has no name: -o must name a file, not a folder")
    else:
        os.stat(source)  # a missing input is reported before anything about the output
        if output is None:
            target = direction.output_name(source)
        elif output != STDIO and os.path.isdir(output):
            target = os.path.join(output, direction.output_name(os.path.basename(source)))
        else:
            target = output
    if target != STDIO:
        _check_output(target, force)
    try:
        if source == STDIO:
            nbytes = direction.stream(sys.stdin.buffer, target)
        elif target == STDIO:
            with open(source, "rb") as file:
                nbytes = direction.stream(file, target)
        else:
            nbytes = direction.file(source, target, progress)
    except Exception as exc:
        raise FileFailed(source, None if target == STDIO else target, exc) from exc
    return Totals(1, nbytes)


def transfer_folder(direction: Direction, folder: str, output: Optional[str], force: bool,
                    progress: bool) -> Totals:
    """Every selected file under folder, into the same relative paths under output."""
    if output is None:
        raise CliError(f"{folder} is a folder: name the output folder with -o")
    if output == STDIO:
        raise CliError(f"{folder} is a folder and cannot be written to standard output")
    if os.path.exists(output) and not os.path.isdir(output):
        raise CliError(f"{output} exists and is not a folder")
    plan, links = _plan_folder(direction, folder, output)
    for link in links:
        _warn(f"skipped {link}: a symbolic link (links inside a folder are never followed)")
    for _, target, _ in plan:
        _refuse_links_below(output, target)
        _check_output(target, force, many=len(plan))
    os.makedirs(output, exist_ok=True)
    totals = Totals()
    description = f"{direction.name} {folder}"
    with _folder_progress(progress, sum(size for _, _, size in plan), description) as bar:
        for index, (source, target, _) in enumerate(plan):
            try:
                _refuse_links_below(output, target)  # again: one may have appeared since
                os.makedirs(os.path.dirname(target), exist_ok=True)
                totals.nbytes += direction.file(source, target, bar.update if bar is not None else False)
            except Exception as exc:
                raise FileFailed(source, target, exc, done=index, total=len(plan)) from exc
            totals.files += 1
            if bar is not None:
                bar.set_postfix_str(f"{index + 1}/{len(plan)} files", refresh=False)
    return totals


def _plan_folder(direction: Direction, folder: str,
                 output: str) -> tuple[list[tuple[str, str, int]], list[str]]:
    """(source, target, size) for each selected regular file under folder, sorted, and the
    symbolic links found there, which are never followed (as ``rotate`` does: a link could
    lead out of the folder). The output folder is skipped when it lies inside the input."""
    output_real = os.path.realpath(output)
    plan, links = [], []
    for root, dirs, files in os.walk(folder, onerror=_raise):  # never descends into links
        links += sorted(os.path.join(root, d) for d in dirs if os.path.islink(os.path.join(root, d)))
        dirs[:] = sorted(d for d in dirs if not os.path.islink(os.path.join(root, d))
                         and os.path.realpath(os.path.join(root, d)) != output_real)
        for name in sorted(files):
            source = os.path.join(root, name)
            info = os.lstat(source)
            if stat.S_ISLNK(info.st_mode):
                links.append(source)
                continue
            if not direction.selects(name) or not stat.S_ISREG(info.st_mode):
                continue  # sockets, FIFOs, devices
            relative = os.path.relpath(source, folder)
            plan.append((source, os.path.join(output, direction.output_name(relative)), info.st_size))
    return plan, links


def _refuse_links_below(root: str, target: str) -> None:
    """Refuses a target whose folders below root include a symbolic link (or a non-folder):
    writing through a link planted in the output folder could put files anywhere."""
    relative = os.path.relpath(os.path.dirname(target), root)
    if relative == os.curdir:
        return
    path = root
    for part in relative.split(os.sep):
        path = os.path.join(path, part)
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            return  # created later by makedirs, as a real folder
        if stat.S_ISLNK(info.st_mode):
            raise CliError(f"refusing to write {target}: {path} is a symbolic link "
                           "(outputs are never written through links)")
        if not stat.S_ISDIR(info.st_mode):
            raise CliError(f"{path} exists and is not a folder")


def _raise(exc: OSError) -> None:
    raise exc


def _check_output(target: str, force: bool, many: int = 1) -> None:
    if not os.path.lexists(target):
        return
    if os.path.isdir(target):
        raise CliError(f"{target} is a folder, not a file it could replace")
    if not force:
        written = "; nothing was written" if many > 1 else ""
        raise CliError(f"{target} already exists{written} (use --force to overwrite)")


def _folder_progress(enabled: bool, total: int, description: str):
    """A bar counting bytes (and files, in its postfix) on stderr, or None when disabled."""
    if not enabled:
        return contextlib.nullcontext(None)
    from tqdm import tqdm

    return tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, file=sys.stderr,
                dynamic_ncols=True, desc=description)


def _copy(read_into: Callable[[memoryview], int], write: Callable[[memoryview], object]) -> int:
    """Moves everything from read_into to write in BLOCK_SIZE blocks; returns the byte count."""
    block = memoryview(bytearray(BLOCK_SIZE))
    total = 0
    while True:
        n = read_into(block)
        if not n:
            return total
        write(block[:n])
        total += n


def _human_size(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


# ---- inspect --------------------------------------------------------------------------------


def _open_input(path: str):
    """A binary file for a path, or standard input (left open) for "-"."""
    if path == STDIO:
        return contextlib.nullcontext(sys.stdin.buffer)
    return open(path, "rb")


def inspect_stream(source: BinaryIO) -> tuple[shardseal.ContainerInfo, int]:
    """Reads a container's header from a binary file or pipe, without a key and without
    reading the payload of a regular file (a pipe is read through to count its size).

    Returns:
        (the header's information, the container's size in bytes).
    """
    start = source.tell() if source.seekable() else 0
    header = _container.read_header(lambda n: read_exact(source, n))
    info = os.fstat(source.fileno())
    if stat.S_ISREG(info.st_mode):
        size = info.st_size - start
    else:
        size = header.size
        while True:
            data = source.read(BLOCK_SIZE)
            if not data:
                break
            size += len(data)
    return container_info(header, size - header.size), size


_C1_CONTROLS = re.compile("[\x7f-\x9f]")
def _json_text(value) -> str:
    """JSON for a terminal: control characters escaped (header text is untrusted)."""
    text = json.dumps(value, ensure_ascii=False, sort_keys=True)
    return _C1_CONTROLS.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def _inspect_text(report: dict) -> str:
    lines = [
        f"file:        {report['file']}",
        f"format:      shardseal container, version {report['version']}",
        f"suite:       {report['suite']}",
        f"key stanzas: {len(report['stanzas'])}",
    ]
    for stanza in report["stanzas"]:
        lines.append(f"  {stanza['type']:<10} key id {stanza['key_id'] or '-'}")
    lines.append(f"metadata:    {_json_text(report['metadata'])}")
    if report["content_type"] is not None:
        lines.append(f"content:     {_json_text(report['content_type'])}")
    if report["array"] is not None:
        lines.append(f"array:       {_json_text(report['array'])}")
    if report["tensor"] is not None:
        lines.append(f"tensor:      {_json_text(report['tensor'])}")
    plain, size = report["plaintext_size"], report["container_size"]
    lines.append(f"plaintext:   {plain} bytes ({_human_size(plain)})")
    lines.append(f"container:   {size} bytes (header {report['header_size']} bytes)")
    return "\n".join(lines)


# ---- demo -----------------------------------------------------------------------------------


def _throughput(nbytes: int, seconds: float) -> str:
    return f"{nbytes / seconds / 1e9:.2f} GB/s"


def run_demo(size_mib: int, threads: Optional[int]) -> int:
    """Encrypts a synthetic dataset shard in memory, inspects it, decrypts and verifies it."""
    import numpy as np

    print(f"shardseal {shardseal.__version__}, backend: {_backend_line()}")
    key = shardseal.generate_key()
    rows = size_mib * 2**20 // (256 * 4)
    shard = np.random.default_rng(0).standard_normal((rows, 256), dtype=np.float32)
    print(f"shard: float32 array {shard.shape}, {shard.nbytes / 2**20:.0f} MiB")

    # One untimed round first: the first touch of fresh memory costs page faults that a
    # running pipeline has already paid.
    shardseal.decrypt_array(shardseal.encrypt_array(shard, key, threads=threads), key, threads=threads)
    start = time.perf_counter()
    blob = shardseal.encrypt_array(shard, key, metadata={"dataset": "demo", "split": "train"},
                                   threads=threads)
    encrypt_s = time.perf_counter() - start
    info = shardseal.inspect(blob)
    print(f"encrypted: {len(blob)} bytes in {encrypt_s * 1e3:.1f} ms ({_throughput(shard.nbytes, encrypt_s)})")
    print(f"header: {info.suite}, key id {info.stanzas[0].key_id}, metadata {info.metadata}, "
          f"array {info.array}")

    start = time.perf_counter()
    restored = shardseal.decrypt_array(blob, key, threads=threads)
    decrypt_s = time.perf_counter() - start
    print(f"decrypted in {decrypt_s * 1e3:.1f} ms ({_throughput(shard.nbytes, decrypt_s)})")
    if not np.array_equal(restored, shard):
        print("error: the decrypted shard differs from the original", file=sys.stderr)
        return 1

    tampered = bytearray(blob)
    tampered[-1000] ^= 0x01
    try:
        shardseal.decrypt_array(bytes(tampered), key)
    except shardseal.AuthenticationError as exc:
        print(f"one flipped bit is caught: AuthenticationError: {exc}")
    else:
        print("error: a tampered shard decrypted", file=sys.stderr)
        return 1
    print("ok: round trip verified")
    return 0
