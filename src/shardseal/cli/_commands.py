"""One function per command (``cmd_*``) and the helpers that move data: files, pipes, folders."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import errno
import io
import json
import os
import re
import stat
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, BinaryIO, Callable, Iterator, Optional, TypedDict, Union, cast

import shardseal
from .. import alerts

from ..container import header as _container
from ..keys import direct as _direct, specs as _specs, keyfile
from ..keys.envelope import DirectKey, Identity, Recipient
from ..container.blob import container_info, read_exact
from .._atomic import TEMP_SUFFIX, AtomicFile, open_folder
from ..io.files import Progress
from ..errors import FormatError, KeySpecError
from . import _cluster
from ._demo import run_demo
from ._prompt import read_passphrase
if TYPE_CHECKING:
    from ..keys.keyring import Keyring

from ._messages import (
    EXIT_AUTHENTICATION,
    EXIT_OK,
    STDIO,
    CliError,
    FileFailed,
    lines_safe,
    print_note,
    print_warning,
    shown_path,
    terminal_safe,
)

SUFFIX = ".sseal"
KEY_FILE_ENV = "SHARDSEAL_KEY_FILE"
AUDIT_LOG_ENV = "SHARDSEAL_AUDIT_LOG"
# Streams (pipes) move data in blocks of this size.
BLOCK_SIZE = 8 * 2**20


class EncryptionKeys(TypedDict, total=False):
    """The key arguments of an encrypting call (``key=`` or ``recipients=``), from -k, -r, -p."""

    key: bytes
    recipients: list[Recipient]


class DecryptionKeys(TypedDict, total=False):
    """The key arguments of a decrypting call (``key=`` and/or ``identities=``), from -k, -i, -p."""

    key: bytes
    identities: list[Identity]


# ---- keys -----------------------------------------------------------------------------------


def load_key(args: argparse.Namespace) -> bytes:
    """The key from -k or $SHARDSEAL_KEY_FILE (a usage error, status 2, when neither is set)."""
    path = getattr(args, "key_file", None) or os.environ.get(KEY_FILE_ENV)
    if not path:
        options = "-r RECIPIENT, -p or -k KEYFILE" if args.command == "encrypt" else \
            "-i IDENTITY, -p or -k KEYFILE" if hasattr(args, "key_file") else "-i IDENTITY or -p"
        parser: argparse.ArgumentParser = args.subparser
        parser.error(f"a key is required: {options} (or set {KEY_FILE_ENV})")
    if path.strip().startswith(keyfile.KEY_LINE_PREFIX):
        # Never echo it: this is a key, pasted where a path belongs.
        raise CliError("-k takes the path of a key file, not a key: "
                       "keys are never given on the command line")
    try:
        return keyfile.read_key_file(path)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
    # Raised here, not in the except block: the OSError (its filename is path) is not kept.
    raise CliError(f"cannot read key file {shown_path(path)}: {reason}")


def encryption_keys(args: argparse.Namespace) -> EncryptionKeys:
    """``key=`` or ``recipients=`` for encrypt, from -k, -r and -p."""
    recipients = [_specs.parse_recipient(text) for text in args.recipient]
    if args.passphrase or args.passphrase_fd is not None:
        if recipients or args.key_file:
            raise KeySpecError("a passphrase must be the only recipient: drop -r and -k")
        from ..keys import passphrase
        secret = read_passphrase(args.passphrase_fd, confirm=True)
        recipients.append(passphrase.Passphrase(secret, work_factor=args.work_factor))
    if not recipients:
        return {"key": load_key(args)}
    if args.key_file:
        raise KeySpecError("give either -k or -r, not both")
    return {"recipients": recipients}


def decryption_keys(args: argparse.Namespace) -> DecryptionKeys:
    """``key=`` and/or ``identities=`` for decrypt, rotate and verify, from -k, -i and -p."""
    identities = [_specs.load_identity(spec) for spec in args.identity]
    if args.passphrase or args.passphrase_fd is not None:
        from ..keys import passphrase
        secret = read_passphrase(args.passphrase_fd, confirm=False)
        identities.append(passphrase.Passphrase(secret))
    keys: DecryptionKeys = {}
    if getattr(args, "key_file", None) or not identities:
        keys["key"] = load_key(args)
    if identities:
        keys["identities"] = identities
    return keys


def identity_list(keys: DecryptionKeys) -> list[Identity]:
    """decryption_keys' result as one list of identities (the key file's key first)."""
    direct = [DirectKey(keys["key"])] if "key" in keys else []
    return direct + keys.get("identities", [])


# ---- commands -------------------------------------------------------------------------------


def cmd_keygen(args: argparse.Namespace) -> int:
    if args.x25519:
        return keygen_x25519(args)
    key = shardseal.generate_key()
    key_id = _direct.key_id(key).hex()
    if args.output in (None, STDIO):
        if sys.stdout.isatty():
            print_warning("the key is shown on the terminal: anyone who sees it can decrypt your data "
                  "(use -o KEYFILE to write a protected key file)")
        elif not args.quiet:
            print_warning("the key is written to standard output: store it with mode 0600 "
                  "(-o KEYFILE does that)")
        sys.stdout.write(keyfile.format_key_file(key))
        sys.stdout.flush()
        return EXIT_OK
    try:
        keyfile.write_key_file(args.output, key, force=args.force)
    except FileExistsError:
        raise CliError(f"{args.output} already exists (use --force to replace it)") from None
    if not args.quiet:
        print_note(f"wrote key file {args.output} (key id {key_id})")
    return EXIT_OK


def keygen_x25519(args: argparse.Namespace) -> int:
    """Writes a new X25519 identity file and prints its recipient string on standard output."""
    from ..keys import x25519

    identity = x25519.X25519Identity.generate()
    recipient = str(identity.recipient)
    if args.output in (None, STDIO):
        if not args.quiet:
            print_warning("the identity (a secret) is written to standard output: store it with mode "
                  "0600 (-o FILE does that); its recipient is " + recipient)
        sys.stdout.write(x25519.format_identity_file(identity))
        sys.stdout.flush()
        return EXIT_OK
    try:
        x25519.write_identity_file(args.output, identity, force=args.force)
    except FileExistsError:
        raise CliError(f"{args.output} already exists (use --force to replace it)") from None
    print(recipient)
    if not args.quiet:
        print_note(f"wrote identity file {args.output}; encrypt to it with -r {recipient}")
    return EXIT_OK


def cmd_keyring(args: argparse.Namespace) -> int:
    from ..keys import keyring

    if args.action != "create" and args.action != "list" and not args.name:
        args.subparser.error(f"keyring {args.action} needs PATH and NAME")
    if args.action == "create":
        try:
            keyring.Keyring.create(args.path, force=args.force)
        except FileExistsError:
            raise CliError(f"{args.path} already exists (use --force to replace it)") from None
        print_note(f"created keyring {args.path}")
        return EXIT_OK
    ring = keyring.Keyring.load(args.path)
    if args.action == "add":
        info = ring.add(args.name)
        print_note(f"added key {info.name} (id {info.id}, active) to {args.path}")
    elif args.action in ("retire", "destroy"):
        if args.action == "destroy" and not args.yes:
            _confirm_destroy(args, ring)
        state = "decrypt-only" if args.action == "retire" else "destroyed"
        info = ring.set_state(args.name, state)
        print_note(f"key {info.name} (id {info.id}) is now {info.state}")
    else:
        for info in ring.keys:
            print(terminal_safe(f"{info.id}  {info.state:<12}  {_stamp(info.created)}  {info.name}"))
    return EXIT_OK


def _confirm_destroy(args: argparse.Namespace, ring: Keyring) -> None:
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


def _stamp(created: Union[str, datetime]) -> str:
    return created if isinstance(created, str) else created.strftime("%Y-%m-%dT%H:%M:%SZ")


def cmd_rotate(args: argparse.Namespace) -> int:
    from ..ops import rotation

    if args.scheduler:
        report = _cluster.rotate(args)
        if not args.quiet:
            print_note(report.summary())
        return EXIT_OK

    recipients = [_specs.parse_recipient(text) for text in args.recipient]
    if args.new_passphrase or args.new_passphrase_fd is not None:
        if recipients or args.add or args.remove:
            raise KeySpecError("a new passphrase must be the only recipient: drop -r, --add and --remove")
        from ..keys import passphrase
        secret = read_passphrase(args.new_passphrase_fd, confirm=True, prompt="new passphrase")
        recipients = [passphrase.Passphrase(secret)]
    options = dict(
        identities=identity_list(decryption_keys(args)),
        add=[_specs.parse_recipient(text) for text in args.add],
        remove=list(args.remove),
        recipients=recipients or None,
        reencrypt=args.reencrypt, recursive=not args.no_recursive, threads=args.threads,
        dry_run=args.dry_run)
    report = rotation.rotate(args.inputs, **options)
    if not args.quiet:
        print_note(report.summary())
    return EXIT_OK


def cmd_parquet_rotate(args: argparse.Namespace) -> int:
    from ..ml import parquet

    if not args.identity:
        raise KeySpecError("parquet-rotate needs at least one -i IDENTITY to unwrap the current keys")
    master_keys: dict[str, list[Recipient]] = {}
    for item in args.master_key:
        name, separator, recipient = item.partition("=")
        if not separator or not name or not recipient:
            raise KeySpecError("--master-key takes NAME=RECIPIENT")
        master_keys.setdefault(name, []).append(_specs.parse_recipient(recipient))
    identities = [_specs.load_identity(spec) for spec in args.identity]
    rotated = []
    for source in args.inputs:
        rotated += parquet.rotate_master_keys(source, identities=identities, master_keys=master_keys,
                                              double_wrapping=not args.single_wrapping)
    if not args.quiet:
        print_note(f"rotated the key material of {len(rotated)} Parquet file(s)")
    return EXIT_OK


def cmd_verify(args: argparse.Namespace) -> int:
    from ..ops import manifest

    if args.scheduler:
        report = _cluster.verify(args, cluster_key_file(args) if args.key_file or not args.identity else None)
    else:
        report = manifest.verify(args.folder, identities=identity_list(decryption_keys(args)), deep=args.deep,
                                 manifest_name=args.manifest)
    if args.json:
        print(json.dumps(dataclasses.asdict(report), indent=2, sort_keys=True, default=str))
    else:
        for name, kind, detail in report.problems:
            print(terminal_safe(f"{kind}: {name}: {detail}"))
        print_note(report.summary())
    return EXIT_OK if report.ok else EXIT_AUTHENTICATION


def cluster_key_file(args: argparse.Namespace) -> str:
    """The key file's path for --scheduler runs (workers read the file themselves), checked
    here as load_key checks it."""
    _cluster.refuse_passphrase(args)
    load_key(args)
    return getattr(args, "key_file", None) or os.environ[KEY_FILE_ENV]


def cluster_transfer(name: str, args: argparse.Namespace, key_file: Optional[str]) -> int:
    """encrypt or decrypt of a folder on a Dask cluster, with the local run's summary line."""
    report = _cluster.transfer(name, args, key_file)
    if not args.quiet:
        total = report.files + report.skipped
        verb = "encrypted" if name == "encrypt" else "decrypted"
        print_note(f"{verb} {total} file{'' if total == 1 else 's'}, "
                   f"{report.nbytes} bytes ({_human_size(report.nbytes)}) in {report.seconds:.2f} s")
    return EXIT_OK


@dataclass(frozen=True)
class Direction:
    """What encrypt or decrypt does to one input; the transfer helpers do the rest."""

    name: str                                      # "encrypt" / "decrypt"
    verb: str                                      # "encrypted" / "decrypted"
    file: Callable[..., int]                       # (source, target, progress[, dir_fd]) -> plaintext bytes
    stream: Callable[[BinaryIO, str], int]         # (source, target path or "-") -> plaintext bytes
    output_name: Callable[[str], str]              # default output for an input path
    selects: Callable[[str], bool]                 # which file names a folder run takes


def cmd_encrypt(args: argparse.Namespace) -> int:
    if args.scheduler:
        return cluster_transfer("encrypt", args, None if args.recipient else cluster_key_file(args))
    keys = encryption_keys(args)
    options = dict(metadata=args.metadata, threads=args.threads, suite=args.suite, **keys)

    def encrypt_stream(source: BinaryIO, target: str) -> int:
        if target == STDIO and sys.stdout.isatty() and not args.force:
            raise CliError("refusing to write ciphertext to a terminal: redirect standard output "
                           "or name a file with -o (--force writes it anyway)")
        destination = sys.stdout.buffer if target == STDIO else target
        with shardseal.open(destination, "wb", **options) as writer:
            # Safe: standard input's buffer and open(path, "rb") are io.BufferedReader, which
            # has readinto (typing's BinaryIO leaves it out).
            return _copy(cast(io.BufferedReader, source).readinto, writer.write)

    direction = Direction(
        name="encrypt",
        verb="encrypted",
        file=lambda source, target, progress, dir_fd=None: shardseal.encrypt_file(
            source, target, progress=progress, dir_fd=dir_fd, **options),
        stream=encrypt_stream,
        output_name=lambda path: path + SUFFIX,
        selects=lambda name: not name.endswith((SUFFIX, TEMP_SUFFIX)),
    )
    return transfer(direction, args)


def cmd_decrypt(args: argparse.Namespace) -> int:
    if args.scheduler:
        return cluster_transfer("decrypt", args, cluster_key_file(args) if args.key_file or not args.identity else None)
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

    def decrypt_file(source: str, target: str, progress: Progress, dir_fd: Optional[int] = None) -> int:
        _refuse_empty_file(source)
        return shardseal.decrypt_file(source, target, threads=args.threads, progress=progress, dir_fd=dir_fd,
                                      **keys)

    direction = Direction(
        name="decrypt",
        verb="decrypted",
        file=decrypt_file,
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
            _refuse_empty(source)  # no container at all (5), as decrypt says, not a cut one (3)
            info, size = inspect_stream(source)
    except Exception as exc:
        raise FileFailed(args.input, None, exc) from exc
    report = {"file": args.input, "container_size": size, **dataclasses.asdict(info)}
    if args.json:
        print(json.dumps(report, indent=2, sort_keys=True))
    else:
        print(_inspect_text(report))
    return EXIT_OK


def cmd_audit(args: argparse.Namespace) -> int:
    """audit summary LOG: who used which key, failures and anomalies (alerts.summarize)."""
    try:
        if args.log == STDIO:
            summary = alerts.summarize(sys.stdin, args.threshold, args.window)
        else:
            with open(args.log, encoding="utf-8", errors="replace") as log:
                summary = alerts.summarize(log, args.threshold, args.window)
    except OSError as exc:
        raise FileFailed(args.log, None, exc) from exc
    if args.json:
        print(json.dumps(summary, indent=2, sort_keys=True))
    else:
        print(lines_safe(_audit_text(summary, args.threshold, args.window)))
    return EXIT_OK


def _audit_text(summary: dict[str, Any], threshold: int, window: float) -> str:
    def when(t: object) -> str:
        return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t)) if isinstance(t, (int, float)) else "?"

    lines = [f"{summary['events']} events from {when(summary['first'])} to {when(summary['last'])}"
             + (f" ({summary['skipped_lines']} other lines skipped)" if summary["skipped_lines"] else ""),
             "users: " + (", ".join(f"{user} ({n} events)" for user, n in sorted(summary["users"].items()))
                          or "none"),
             "", "key use:"]
    lines += [f"  {k['key_type']:10} {k['key_id']:40} wraps {k['wraps']:>5}  unwraps {k['unwraps']:>5}  "
              f"failed {k['failures']:>5}  by {', '.join(k['users'])}" for k in summary["keys"]] or ["  none"]
    lines += ["", "failures:"]
    lines += [f"  {reason:30} {n:>6}" for reason, n in sorted(summary["failure_errors"].items())] or ["  none"]
    if summary["wrong_key_attempts"]:
        lines += ["  containers opened with a key they do not name, by the key they need:"]
        lines += [f"    {key_id:40} {n:>6}" for key_id, n in sorted(summary["wrong_key_attempts"].items())]
    if summary["failed_files"]:
        lines += ["  files:"]
        lines += [f"    {n:>6}  {path}" for path, n in sorted(summary["failed_files"].items(), key=lambda i: -i[1])[:20]]
    if summary["rotations"]:
        lines += ["", "rotations: " + ", ".join(f"{result} {n}" for result, n in sorted(summary["rotations"].items()))]
    lines += ["", f"anomalies ({threshold} failures of one key or folder within {window:g} s):"]
    lines += [f"  {when(a['time'])}  {a['subject']}: {a['count']} failures ({', '.join(sorted(set(a['events'])))})"
              for a in summary["anomalies"]] or ["  none"]
    if summary["alerts"]:
        lines += ["alerts recorded in the log:"]
        lines += [f"  {when(a['time'])}  {a['subject']}: {a['count']} failures in {a['window']} s"
                  for a in summary["alerts"]]
    return "\n".join(lines)


def cmd_clean(args: argparse.Namespace) -> int:
    from ..io import cleanup

    removed = kept = 0
    for folder in args.folders:
        if not os.path.isdir(folder):
            raise CliError(f"{shown_path(folder)} is not a folder")
        report = cleanup.clean_temp_files(folder, min_age=args.older_than * 60,
                                          recursive=not args.no_recursive, dry_run=args.dry_run)
        for path in report.removed:
            if not args.quiet:
                print(terminal_safe(f"{'would remove' if args.dry_run else 'removed'} {path}"))
        for path, why in report.kept:
            if not args.quiet:
                print_note(f"kept {path}: {why}")
        removed += len(report.removed)
        kept += len(report.kept)
    if not args.quiet:
        verb = "would remove" if args.dry_run else "removed"
        print_note(f"{verb} {removed} leftover temporary file{'' if removed == 1 else 's'}, "
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
        print_note(f"{direction.verb} {totals.files} file{'' if totals.files == 1 else 's'}, "
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
        print_warning(f"skipped {link}: a symbolic link (links inside a folder are never followed)")
    for _, target, _ in plan:
        _refuse_links_below(output, target)
        _check_output(target, force, many=len(plan))
    os.makedirs(output, exist_ok=True)
    totals = Totals()
    description = f"{direction.name} {folder}"
    root_fd = open_folder(output)
    try:
        with _folder_progress(progress, sum(size for _, _, size in plan), description) as bar:
            for index, (source, target, _) in enumerate(plan):
                try:
                    # Each folder is opened from root_fd without following links and the
                    # file written relative to it: a link swapped in after the checks above
                    # makes this write fail instead of leading it out of the output folder.
                    with _output_folder(root_fd, output, target) as folder_fd:
                        totals.nbytes += direction.file(
                            source, os.path.basename(target),
                            bar.update if bar is not None else False, folder_fd)
                except Exception as exc:
                    raise FileFailed(source, target, exc, done=index, total=len(plan)) from exc
                totals.files += 1
                if bar is not None:
                    bar.set_postfix_str(f"{index + 1}/{len(plan)} files", refresh=False)
    finally:
        os.close(root_fd)
    return totals


@contextlib.contextmanager
def _output_folder(root_fd: int, root: str, target: str) -> Iterator[int]:
    """The folder of target, opened component by component from root_fd (created where
    missing) with O_NOFOLLOW: a symbolic link anywhere below root is refused, never followed."""
    relative = os.path.relpath(os.path.dirname(target), root)
    parts = [] if relative == os.curdir else relative.split(os.sep)
    fd = os.dup(root_fd)
    try:
        path = root
        for part in parts:
            path = os.path.join(path, part)
            with contextlib.suppress(FileExistsError):
                os.mkdir(part, 0o777, dir_fd=fd)
            child = _open_folder_at(fd, part, path, target)
            os.close(fd)
            fd = child
        yield fd
    finally:
        os.close(fd)


def _open_folder_at(dir_fd: int, name: str, path: str, target: str) -> int:
    try:
        return open_folder(name, dir_fd=dir_fd, follow_links=False)
    except OSError as exc:
        if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
            raise
    # Raised outside the except block: the OSError is of no use to the user.
    if stat.S_ISLNK(os.lstat(name, dir_fd=dir_fd).st_mode):
        raise CliError(f"refusing to write {target}: {path} is a symbolic link "
                       "(outputs are never written through links)")
    raise CliError(f"{path} exists and is not a folder")


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


def _folder_progress(enabled: bool, total: int, description: str) -> contextlib.AbstractContextManager[Any]:
    """A bar counting bytes (and files, in its postfix) on stderr, or None when disabled."""
    if not enabled:
        return contextlib.nullcontext(None)
    from tqdm import tqdm

    # tqdm ships no type information: its bar is Any to mypy.
    bar: contextlib.AbstractContextManager[Any] = tqdm(
        total=total, unit="B", unit_scale=True, unit_divisor=1024, file=sys.stderr, dynamic_ncols=True,
        desc=description)
    return bar


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


def _open_input(path: str) -> contextlib.AbstractContextManager[BinaryIO]:
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


_C1_CONTROLS = re.compile("[\x7f-\x9f\u2028\u2029]")
def _json_text(value: object) -> str:
    """JSON for a terminal: control characters escaped (header text is untrusted)."""
    text = json.dumps(value, ensure_ascii=False, sort_keys=True)
    return _C1_CONTROLS.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def _inspect_text(report: dict[str, Any]) -> str:
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
    return "\n".join(terminal_safe(line) for line in lines)  # header text is untrusted
