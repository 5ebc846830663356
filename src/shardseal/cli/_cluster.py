"""encrypt, decrypt, verify and rotate with ``--scheduler ADDRESS``: the same work on a Dask
cluster (``shardseal.ops.dask``), given only key file paths, recipient strings and identity
strings, which every worker loads itself."""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING, Optional

from ..keys.keyref import KeyFile
from ._messages import CliError

if TYPE_CHECKING:  # dask.distributed is optional: imported where a command needs it
    import distributed

    from ..ops.dask import TransferReport
    from ..ops.manifest import VerifyReport
    from ..ops.rotation import RotationReport


def refuse_passphrase(args: argparse.Namespace, *options: str) -> None:
    """A passphrase stays on this machine: --scheduler refuses -p and its kin."""
    options = options or ("passphrase", "passphrase_fd")
    if any(getattr(args, option, None) not in (None, False) for option in options):
        raise CliError("a passphrase cannot be used with --scheduler: it would be sent to every "
                       "worker; use -r/-i with a key file, keyring, X25519 identity, PKCS#11 or KMS")


def _folder_in_and_out(args: argparse.Namespace) -> tuple[str, str]:
    if len(args.inputs) != 1 or not os.path.isdir(args.inputs[0]):
        raise CliError("--scheduler works on one INPUT folder")
    if args.output is None or args.output == "-":
        raise CliError(f"{args.inputs[0]} is a folder: name the output folder with -o")
    return args.inputs[0], args.output


def connect(address: str) -> distributed.Client:
    """A ``distributed.Client`` for the scheduler at address; ``tls://`` addresses take their
    certificates from Dask's configuration (``distributed.comm.tls.*``, or the
    ``DASK_DISTRIBUTED__COMM__TLS__*`` environment variables).

    Raises:
        CliError: dask.distributed is not installed.
    """
    try:
        import distributed
    except ImportError:
        raise CliError('--scheduler needs dask.distributed: pip install "shardseal[dask]"') from None
    # A stub gap: distributed leaves Client.__init__ unannotated.
    return distributed.Client(address)  # type: ignore[no-untyped-call]


def transfer(name: str, args: argparse.Namespace, key_file: Optional[str]) -> TransferReport:
    """Runs encrypt or decrypt of one folder on the cluster; returns its TransferReport."""
    from ..ops import dask as cluster

    refuse_passphrase(args, "passphrase", "passphrase_fd")
    source, output = _folder_in_and_out(args)
    key = KeyFile(key_file) if key_file else None
    with connect(args.scheduler) as client:
        if name == "encrypt":
            return cluster.encrypt_dataset(source, output, key=key, recipients=args.recipient or None,
                                           client=client, metadata=args.metadata, suite=args.suite,
                                           threads=args.threads or 1, digests=False)
        return cluster.decrypt_dataset(source, output, key=key, identities=args.identity, client=client,
                                       threads=args.threads or 1)


def verify(args: argparse.Namespace, key_file: Optional[str]) -> VerifyReport:
    """Runs verify on the cluster; returns its VerifyReport."""
    from ..ops import dask as cluster

    refuse_passphrase(args, "passphrase", "passphrase_fd")
    identities = ([key_file] if key_file else []) + list(args.identity)
    with connect(args.scheduler) as client:
        return cluster.verify(args.folder, identities=identities, deep=args.deep, client=client,
                              manifest_name=args.manifest)


def rotate(args: argparse.Namespace) -> RotationReport:
    """Runs rotate on the cluster; returns its RotationReport."""
    from ..ops import dask as cluster

    refuse_passphrase(args, "passphrase", "passphrase_fd", "new_passphrase", "new_passphrase_fd")
    if not args.identity:
        raise CliError("rotate --scheduler needs -i IDENTITY (a path or URI each worker loads)")
    options = dict(identities=args.identity, add=args.add, remove=args.remove,
                   recipients=args.recipient or None, reencrypt=args.reencrypt, dry_run=args.dry_run,
                   recursive=not args.no_recursive, threads=args.threads or 1)
    with connect(args.scheduler) as client:
        return cluster.rotate(args.inputs, client=client, **options)
