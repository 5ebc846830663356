"""The argparse definition of every command."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, NoReturn, Protocol

import shardseal

from .. import _redact
from ._commands import (
    AUDIT_LOG_ENV,
    KEY_FILE_ENV,
    cmd_audit,
    cmd_clean,
    cmd_decrypt,
    cmd_demo,
    cmd_encrypt,
    cmd_inspect,
    cmd_keygen,
    cmd_keyring,
    cmd_parquet_rotate,
    cmd_rotate,
    cmd_verify,
)
from ._messages import EXIT_USAGE, backend_line, scrubbed, terminal_safe

EPILOG = """\
exit status:
  0    success
  1    error: a missing or unreadable file, an output that exists (see --force),
       a bad key file, a passphrase that cannot be read (not UTF-8), a forced
       SHARDSEAL_BACKEND or SHARDSEAL_KERNEL that cannot run here
  2    bad command-line usage, or an unknown SHARDSEAL_BACKEND/SHARDSEAL_KERNEL value
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


class _Commands(Protocol):
    """The subcommands of a parser (what ``add_subparsers`` returns), as built here."""

    def add_parser(self, name: str, *, help: str, description: str = ..., epilog: str = ...,
                   formatter_class: type[argparse.HelpFormatter] = ...) -> argparse.ArgumentParser: ...


class _Parser(argparse.ArgumentParser):
    """argparse, with usage errors scrubbed of arguments that might be keys."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {terminal_safe(scrubbed(message))}\n")


# ---- argument parsing -----------------------------------------------------------------------


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {_redact.shown_argument(text)}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _json_object(text: str) -> dict[str, Any]:
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
                        version=f"shardseal {shardseal.__version__} ({backend_line()})")
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
    _add_parquet_rotate(commands)
    _add_verify(commands)
    _add_clean(commands)
    _add_audit(commands)
    _add_demo(commands)
    return parser


def _subcommand(commands: _Commands, name: str, help: str, description: str) -> argparse.ArgumentParser:
    return commands.add_parser(name, help=help, description=description, epilog=EPILOG,
                               formatter_class=argparse.RawDescriptionHelpFormatter)


def _add_keygen(commands: _Commands) -> None:
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
    _add_scheduler_option(sub)
    sub.set_defaults(subparser=sub)


def _add_scheduler_option(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("--scheduler", metavar="ADDRESS",
                     help="run on the Dask cluster at ADDRESS (tcp://host:8786 or tls://...; "
                          "needs shardseal[dask]): workers get key file paths, recipient and "
                          "identity strings, never keys; a re-run resumes")


def _add_encrypt(commands: _Commands) -> None:
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


def _add_decrypt(commands: _Commands) -> None:
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
                          "key file, keyring file or X25519 identity file; keyring:PATH; "
                          "pkcs11:...; aws-kms[:KEY] (the library's identity strings)")
    _add_passphrase_options(sub, "decrypt with a passphrase (asked without echo)")


def _add_inspect(commands: _Commands) -> None:
    sub = _subcommand(
        commands, "inspect", "show a container's header (no key needed)",
        "Prints what a container's header says: format version, suite, the key ids it is "
        "encrypted to, metadata, array description and plaintext size. No key is needed, so "
        "nothing is authenticated: decrypt verifies all of it.")
    sub.add_argument("input", metavar="INPUT", help="a container file, or - for standard input")
    sub.add_argument("--json", action="store_true", help="print one JSON object")
    sub.set_defaults(handler=cmd_inspect)


def _add_keyring(commands: _Commands) -> None:
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


def _add_rotate(commands: _Commands) -> None:
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
    _add_scheduler_option(sub)
    sub.set_defaults(handler=cmd_rotate, subparser=sub)


def _add_parquet_rotate(commands: _Commands) -> None:
    sub = _subcommand(
        commands, "parquet-rotate", "re-wrap the master keys of PME-encrypted Parquet files",
        "For Parquet files written by shardseal.parquet with external key material "
        "(_KEY_MATERIAL_FOR_<file>.json beside each file): unwraps every key with -i and wraps it "
        "again for each master key's current recipients (--master-key NAME=RECIPIENT, or the "
        "master key identifier itself when it is a recipient string such as keyring:PATH). The "
        "Parquet files do not change. Needs the parquet extra (pyarrow).")
    sub.add_argument("inputs", nargs="+", metavar="INPUT", help="Parquet files or folders")
    sub.add_argument("-i", "--identity", action="append", metavar="IDENTITY", default=[],
                     help="unwrap with IDENTITY (repeatable): a keyring or X25519 identity file; "
                          "pkcs11:...; aws-kms")
    sub.add_argument("--master-key", action="append", metavar="NAME=RECIPIENT", default=[],
                     help="wrap master key NAME for RECIPIENT (repeatable; repeat a NAME for "
                          "several recipients)")
    sub.add_argument("--single-wrapping", action="store_true",
                     help="wrap the data keys themselves, not new key-encryption keys")
    sub.add_argument("-q", "--quiet", action="store_true", help="no summary line")
    sub.set_defaults(handler=cmd_parquet_rotate, subparser=sub)


def _add_verify(commands: _Commands) -> None:
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
    _add_scheduler_option(sub)
    sub.set_defaults(handler=cmd_verify, subparser=sub)


def _add_clean(commands: _Commands) -> None:
    sub = _subcommand(
        commands, "clean", "remove temporary files that killed runs left behind",
        "Removes the .*.sseal-tmp files that a killed writer (SIGKILL, power loss) left in "
        "FOLDER and its sub-folders; a decrypt's holds plaintext. A file is removed only when "
        "it is older than --older-than minutes and no live writer holds its lock, so a running "
        "encrypt or decrypt is never disturbed. Only regular files owned by you with mode 0600 "
        "(as shardseal creates them) are removed. Symbolic links are neither followed nor removed.")
    sub.add_argument("folders", nargs="+", metavar="FOLDER", help="the folders to clean")
    sub.add_argument("--older-than", type=_minutes, default=10.0, metavar="MINUTES",
                     help="only remove files last modified at least this long ago (default 10)")
    sub.add_argument("--dry-run", action="store_true", help="list what would be removed")
    sub.add_argument("--no-recursive", action="store_true", help="do not descend into sub-folders")
    sub.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")
    sub.set_defaults(handler=cmd_clean, subparser=sub)


def _add_audit(commands: _Commands) -> None:
    sub = _subcommand(
        commands, "audit", "summarize a JSON audit log: key use, failures, anomalies",
        "audit summary LOG reads a JSON-lines audit log (written with --audit-log or "
        "shardseal.audit.enable(path)) and prints who used which key, the failures by reason "
        "and file, rotations, the alerts the log holds, and anomalies: keys or folders with "
        "--threshold failures within --window seconds. LOG - reads standard input.")
    sub.add_argument("action", choices=("summary",), help="summary: summarize LOG")
    sub.add_argument("log", metavar="LOG", help="the audit log (JSON lines), or - for standard input")
    sub.add_argument("--threshold", type=_positive_int, default=5,
                     help="failures of one key or folder that make an anomaly (default 5)")
    sub.add_argument("--window", type=_positive_float, default=60.0,
                     help="the anomaly window in seconds (default 60)")
    sub.add_argument("--json", action="store_true", help="print one JSON object")
    sub.set_defaults(handler=cmd_audit)


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, not {text!r}")
    return value


def _minutes(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {_redact.shown_argument(text)}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError("must be a number of minutes, 0 or more")
    return value


def _add_demo(commands: _Commands) -> None:
    demo = commands.add_parser("demo", help="encrypt, inspect and decrypt a synthetic shard in memory")
    demo.add_argument("--size-mib", type=int, default=256, help="shard size in MiB (default 256)")
    demo.add_argument("--threads", type=int, default=None, help="worker threads (default: all CPUs)")
    demo.set_defaults(handler=cmd_demo)
