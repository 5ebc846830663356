"""Verify and rotate on a Dask cluster: the worker tasks that hash and decrypt shards or rotate
batches of files, and the driver functions ``verify`` and ``rotate`` (``shardseal.dask``)."""

from __future__ import annotations

import dataclasses
import os
from typing import TYPE_CHECKING, Any, Optional, Sequence, TypedDict, Union

import fsspec
from fsspec import AbstractFileSystem

from ..errors import ShardsealError
from ..keys import specs as _specs
from ..keys.envelope import Recipient
from ..keys.keyref import KeyRef
from . import manifest as _manifest
from . import rotation as _rotation
from ._dask_common import (
    DEFAULT_BATCH_BYTES,
    DEFAULT_BATCH_FILES,
    SUFFIX,
    KeyArg,
    find_client,
    hash_file,
    identity_strings,
    is_temp,
    key_reference,
    list_files,
    recipient_strings,
    resolve,
    run,
    split,
)
from .manifest import CORRUPT, MISSING, MODIFIED, UNLISTED, UNREADABLE, DatasetKey, Problem, ShardInfo, VerifyReport
from ._manifest_verify import decrypt_fully

if TYPE_CHECKING:
    import distributed

PathArg = Union[str, "os.PathLike[str]"]
# What a verify task gets per shard, and returns.
VerifyItem = tuple[str, ShardInfo]
VerifyResult = tuple[Optional[Problem], int]


class RotateOptions(TypedDict):
    """The arguments of ``rotation.rotate`` that every rotate task gets (recipients as strings)."""

    add: tuple[str, ...]
    remove: list[str]
    recipients: Optional[tuple[str, ...]]
    reencrypt: bool
    dry_run: bool
    threads: Optional[int]


def _verify_batch(fs: AbstractFileSystem, key_ref: KeyRef, deep: bool, threads: Optional[int],
                  items: Sequence[VerifyItem]) -> list[VerifyResult]:
    """Checks [(path, ShardInfo)]; returns [(Problem or None, bytes hashed)]."""
    key = resolve(key_ref) if deep else None
    return [_verify_one(fs, path, info, key, threads) for path, info in items]


def _verify_one(fs: AbstractFileSystem, path: str, info: ShardInfo, key: Optional[bytes],
                threads: Optional[int]) -> VerifyResult:
    def problem(kind: str, detail: str) -> Problem:
        return Problem(info.name, kind, detail)

    try:
        if not fs.isfile(path):
            return problem(MISSING, "the file does not exist"), 0
        size = fs.size(path)
        if size != info.size:
            return problem(MODIFIED, f"{size} bytes, the manifest records {info.size}"), 0
        hashed, sha256 = hash_file(fs, path)
    except OSError as exc:
        return problem(UNREADABLE, f"cannot be read: {exc.strerror or type(exc).__name__}"), 0
    if sha256 != info.sha256:
        return problem(MODIFIED, "its SHA-256 differs from the manifest's (replaced, swapped "
                                 "with another shard, rolled back or altered)"), hashed
    if key is not None:
        with fs.open(path, "rb") as raw:
            failure = decrypt_fully(raw, key, threads)
        if failure is not None:
            return problem(CORRUPT, failure), hashed
    return None, hashed


def _rotate_batch(identities: tuple[str, ...], key_ref: Optional[KeyRef], options: RotateOptions,
                  paths: list[str]) -> _rotation.RotationReport:
    def parsed(texts: Sequence[str]) -> list[Recipient]:
        return [_specs.parse_recipient(t) for t in texts]

    recipients = options["recipients"]
    return _rotation.rotate(paths, identities=[_specs.load_identity(t) for t in identities] or None,
                            key=key_ref, recursive=False, add=parsed(options["add"]),
                            remove=options["remove"],
                            recipients=None if recipients is None else parsed(recipients),
                            reencrypt=options["reencrypt"], dry_run=options["dry_run"],
                            threads=options["threads"])


def open_dataset(ref: DatasetKey) -> _manifest.Dataset:
    """Opens the dataset of ref on the driver, loading its identity string."""
    return _manifest.Dataset.open(ref.folder, identities=[_specs.load_identity(ref.identity)],
                                  manifest_name=ref.manifest_name)


def verify(folder: PathArg, *, identities: Sequence[str], deep: bool = True,
           client: Optional[distributed.Client] = None, manifest_name: str = _manifest.MANIFEST_NAME, threads: Optional[int] = 1,
           batch_bytes: int = DEFAULT_BATCH_BYTES, batch_files: int = DEFAULT_BATCH_FILES,
           progress: bool = False) -> VerifyReport:
    """Checks a dataset folder against its manifest on a Dask cluster, as
    ``shardseal.manifest.verify`` does on one machine (the same report).

    The driver opens the manifest and lists the folder; the workers hash every shard and, with
    deep=True, decrypt it in full under the dataset key, which each worker unwraps from the
    manifest itself with the identity (a ``DatasetKey``).

    Args:
        folder: the dataset folder (local or a shared mount).
        identities: identity strings (identity or key file paths, ``pkcs11:...``, ``aws-kms``);
            the first one that opens the manifest is sent to the workers.
        deep: also decrypt and authenticate every shard.
        client: the ``distributed.Client``; None uses the current one.
        manifest_name: the manifest's file name.
        threads: threads each task uses to decrypt.
        batch_bytes: shards are grouped into tasks of about this many bytes.
        batch_files: and of at most this many shards.
        progress: show Dask's progress bar.

    Returns:
        A ``shardseal.manifest.VerifyReport``.

    Raises:
        ShardsealError: the manifest cannot be opened (as ``shardseal.manifest.Dataset.open``).
        OSError: the manifest cannot be read.
        ValueError: no identities.
    """
    ref = _dataset_key(folder, identity_strings(identities), manifest_name)
    with open_dataset(ref) as dataset:
        shards = dataset.shards
        root = str(dataset.folder)
    fs = fsspec.filesystem("file")
    items = [(f"{root}/{info.name}", info) for info in shards]
    client = find_client(client)
    batches = split(client, items, lambda item: item[1].size, batch_bytes, batch_files)
    results = [r for batch in run(client, _verify_batch, batches, fs, ref, deep, threads,
                                   progress=progress) for r in batch]
    problems = [p for p, _ in results if p is not None]
    listed = {info.name for info in shards}
    unlisted = sorted(n for n in list_files(fs, root)
                      if n.endswith(SUFFIX) and n != manifest_name and n not in listed and not is_temp(n))
    problems += [Problem(n, UNLISTED, "an encrypted file the manifest does not list") for n in unlisted]
    return VerifyReport(tuple(problems), len(shards), sum(h for _, h in results), deep)


def _dataset_key(folder: PathArg, identities: tuple[str, ...], manifest_name: str) -> DatasetKey:
    """A DatasetKey with the first identity that opens the manifest.

    Raises:
        ValueError: no identity given.
        As ``Dataset.open`` for the last identity tried.
    """
    if not identities:
        raise ValueError("verify needs identities= (identity strings that open the manifest)")
    for index, identity in enumerate(identities):
        ref = DatasetKey(folder, identity, manifest_name)
        try:
            open_dataset(ref).close()
            return ref
        except ShardsealError:
            if index == len(identities) - 1:
                raise
    raise AssertionError("unreachable")


def rotate(url: Union[PathArg, Sequence[PathArg]], *, identities: Sequence[str] = (),
           key: Optional[KeyArg] = None, add: Sequence[str] = (), remove: Sequence[str] = (),
           recipients: Optional[Sequence[str]] = None, reencrypt: bool = False, dry_run: bool = False,
           recursive: bool = True, client: Optional[distributed.Client] = None, threads: Optional[int] = 1,
           batch_files: int = DEFAULT_BATCH_FILES, progress: bool = False,
           allow_raw_key: bool = False) -> _rotation.RotationReport:
    """Rotates every container under a folder on a Dask cluster: ``shardseal.rotation.rotate``
    on batches of files, one task per batch, with the same guarantees (each file crash-safe,
    every file's new key set checked before it is changed).

    A dataset's shards are direct-key files under the dataset key, so rotating who can open a
    dataset rewrites only its manifest (the other files are skipped as direct-key, as locally).
    Folders of envelope containers (``encrypt_dataset(recipients=...)``) are rewrapped file by
    file on the workers.

    Args:
        url: a local (or shared, mounted) folder or file, or a list of them.
        identities: identity strings that open the current key blocks (loaded by each worker).
        key: a key reference for direct-key files (with reencrypt).
        add: recipient strings (``ssealx1...``, ``keyring:PATH``) to add, parsed by each worker.
        remove: key ids whose stanzas are removed.
        recipients: instead of add/remove, the complete new set of recipient strings.
        reencrypt: decrypt and encrypt every file again under a fresh file key.
        dry_run: check everything, write nothing.
        recursive: search folders recursively.
        client: the ``distributed.Client``; None uses the current one.
        threads: threads each task uses for re-encryption.
        batch_files: files per task, at most.
        progress: show Dask's progress bar.
        allow_raw_key: send a raw key to the workers (pickled into every task).

    Returns:
        The combined ``RotationReport`` of every batch.

    Raises:
        ShardsealError: as ``shardseal.rotation.rotate`` (KeyNotFoundError, AuthenticationError,
            FormatError, ...), from the first batch that failed, with its class.
        ValueError: as ``shardseal.rotation.rotate`` (nothing to do, a file left without keys).
        FileNotFoundError: a path does not exist.
    """
    key_ref = key_reference(key, allow_raw_key)
    options = RotateOptions(add=recipient_strings(add) or () if add else (), remove=list(remove),
                            recipients=recipient_strings(recipients), reencrypt=reencrypt,
                            dry_run=dry_run, threads=threads)
    identity_texts = identity_strings(identities)
    urls = [url] if isinstance(url, (str, os.PathLike)) else list(url)
    paths: list[str] = []
    for root in (os.fspath(u) for u in urls):
        paths += _container_candidates(root, recursive)
    client = find_client(client)
    batches = split(client, paths, lambda path: 1, batch_files, batch_files)
    reports = run(client, _rotate_batch, batches, identity_texts, key_ref, options,
                   progress=progress)
    return _combine(reports, dry_run)


def _container_candidates(root: str, recursive: bool) -> list[str]:
    """The files rotate is given for root: itself, or the regular files under it (links and
    rotation's own files left out; ``rotation.rotate`` skips what is not a container)."""
    if not os.path.isdir(root):
        os.stat(root)  # FileNotFoundError for a missing path, before any task
        return [os.path.abspath(root)]
    _rotation.recover(root)  # unfinished rotations of a killed run, on the driver, first
    paths: list[str] = []
    for folder, subfolders, names in os.walk(root):
        subfolders.sort()
        if not recursive:
            subfolders.clear()
        paths += [os.path.abspath(os.path.join(folder, n)) for n in sorted(names)
                  if not is_temp(n) and not os.path.islink(os.path.join(folder, n))]
    return paths


def _combine(reports: list[_rotation.RotationReport], dry_run: bool) -> _rotation.RotationReport:
    # Any: the report's fields are of several types (counts, tuples of pairs, a flag).
    total: dict[str, Any] = {f.name: f.default for f in dataclasses.fields(_rotation.RotationReport)}
    for report in reports:
        for name in total:
            if name != "dry_run":
                total[name] = total[name] + getattr(report, name)
    total["dry_run"] = dry_run
    return _rotation.RotationReport(**total)


# Public names of shardseal.ops.dask: pickles and reprs name them there, as before the module
# was split.
verify.__module__ = rotate.__module__ = "shardseal.ops.dask"
