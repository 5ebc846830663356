"""Whole-dataset operations on a Dask cluster: encrypt, decrypt, verify and rotate, one task
per shard (or per batch of small files), and lazy readers over encrypted shards.

The driver (the process that calls these functions) only lists files and, at the end, writes
the dataset manifest: it reads no shard bytes. Each worker reads its source files through
fsspec, encrypts them, writes each shard under a temporary name, computes its size and SHA-256
while writing, renames it into place and returns ``(name, size, sha256)``.

Workers never receive raw key bytes. They get *key references* (``shardseal.keyref.KeyFile``,
``EnvKey``, ``shardseal.manifest.DatasetKey``), which each worker resolves itself (a
``DatasetKey`` makes the worker unwrap the dataset key from the manifest with its identity), or
recipient and identity *strings* (``ssealx1...``, ``keyring:PATH``, ``aws-kms:KEY``, identity
file paths), parsed on the worker. A raw key is refused unless ``allow_raw_key=True``: it would
be pickled into every task and cross the network (in the clear unless the cluster uses TLS).

Runs are idempotent and resumable: a shard already under its final name is checked (decrypted
and authenticated in full, and compared with its source, with a key; header, recipients and
exact length with public recipients only) and skipped when it is good, rewritten when it is not. A shard is only ever
renamed into its final name once complete, so a killed worker or driver leaves at most a
temporary file (removed by the next run, or by ``shardseal clean``).

See docs/DISTRIBUTED.md for how this scales to N machines, what bounds it, and TLS.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Mapping, Optional, Sequence, Union

from fsspec import AbstractFileSystem

from ..core.layout import Suite
from ..io.cleanup import clean_temp_files
from ..keys import specs as _specs
from ..keys.registry import Recipients
from . import manifest as _manifest
from ._dask_checks import open_dataset, rotate, verify
from ._dask_common import (
    DEFAULT_BATCH_BYTES,
    DEFAULT_BATCH_FILES as DEFAULT_BATCH_FILES,
    SUFFIX as SUFFIX,
    KeyArg as KeyArg,
    checked_picklable,
    find_client,
    url_to_fs,
    identity_strings,
    is_local,
    is_temp,
    key_reference,
    list_files,
    recipient_strings,
    run,
    split,
)
from ._dask_readers import read_array, read_bag
from ._dask_transfer import DecryptJob, EncryptJob, decrypt_batch, encrypt_batch
from .manifest import DatasetKey, ShardInfo

if TYPE_CHECKING:
    import distributed

PathArg = Union[str, "os.PathLike[str]"]

__all__ = [
    "DEFAULT_BATCH_BYTES",
    "TransferReport",
    "decrypt_dataset",
    "encrypt_dataset",
    "read_array",
    "read_bag",
    "rotate",
    "verify",
]

@dataclass(frozen=True)
class TransferReport:
    """What ``encrypt_dataset`` or ``decrypt_dataset`` did.

    Attributes:
        files: files written in this run.
        skipped: files already complete and checked, so left alone (a resumed run).
        nbytes: plaintext bytes of every file, written or skipped.
        shards: ``ShardInfo(name, size, sha256)`` of every encrypted shard (encrypt only),
            sorted by name: what the manifest records.
        manifest: the manifest written (a ``DatasetKey`` run), or None.
        seconds: wall-clock time of the run.
    """

    files: int
    skipped: int
    nbytes: int
    shards: tuple[ShardInfo, ...] = ()
    manifest: Optional[str] = None
    seconds: float = 0.0

    def summary(self, verb: str = "encrypted") -> str:
        """One line for a log or a terminal."""
        total = self.files + self.skipped
        line = (f"{verb} {total} file{'' if total == 1 else 's'}, {self.nbytes} bytes "
                f"({self.files} written, {self.skipped} already done) in {self.seconds:.2f} s")
        return line + (f"; manifest {self.manifest}" if self.manifest else "")


def encrypt_dataset(src_url: PathArg, dst_url: PathArg, *,
                    key: Optional[KeyArg] = None, recipients: Optional[Recipients] = None,
                    client: Optional[distributed.Client] = None,
                    storage_options: Optional[Mapping[str, Any]] = None,
                    dst_storage_options: Optional[Mapping[str, Any]] = None,
                    metadata: Optional[Mapping[str, Any]] = None, suite: Suite = 256,
                    threads: Optional[int] = 1, batch_bytes: int = DEFAULT_BATCH_BYTES,
                    batch_files: int = DEFAULT_BATCH_FILES, progress: bool = False,
                    allow_raw_key: bool = False, digests: bool = True,
                    checkpoint: Optional[Callable[[str], object]] = None) -> TransferReport:
    """Encrypts every file under src_url into ``<name>.sseal`` under dst_url on a Dask cluster.

    Three ways to give the key:

    * ``key=DatasetKey(dst, identity)``: a *dataset* (``shardseal.manifest``): shards under the
      dataset key, which each worker unwraps from the manifest with the identity; the driver
      then records every shard's size and SHA-256 in the manifest (written once, reading no
      shard bytes). With ``recipients=`` and no manifest yet, the driver creates it for them.
      Local (or shared, mounted) folders only, as for ``Dataset``.
    * ``key=KeyFile(path)`` / ``EnvKey(name)``: direct-key shards, any fsspec URL, no manifest
      (the report lists every shard's size and SHA-256).
    * ``recipients=[...]`` alone: each shard is its own envelope container for the recipients,
      as ``shardseal encrypt -r`` of a folder; workers receive only the recipient strings.

    Files ending in ``.sseal`` and temporary files are skipped, as the command line does.
    A shard already complete at its destination is checked and skipped (see the module docs).

    Args:
        src_url: the plaintext folder: a path or fsspec URL (``s3://bucket/raw``).
        dst_url: the output folder: a path or fsspec URL.
        key: a key reference (see above). Raw key bytes are refused unless allow_raw_key.
        recipients: recipient strings (``ssealx1...``, ``keyring:PATH``, ``aws-kms:KEY``) or
            recipient objects that have such a string form.
        client: the ``distributed.Client``; None uses the current one.
        storage_options: fsspec options of src_url (and of dst_url unless dst_storage_options).
        dst_storage_options: fsspec options of dst_url.
        metadata: JSON header metadata of every shard (authenticated, not secret).
        suite: 256 (default) or 128.
        threads: threads each task uses for the cipher (1: run one task per worker thread).
        batch_bytes: small files are grouped into tasks of about this many bytes.
        batch_files: and of at most this many files.
        progress: show Dask's progress bar (the dashboard shows the tasks either way).
        allow_raw_key: send a raw key to the workers (pickled into every task).
        digests: compute each shard's SHA-256 while writing it (the default; a DatasetKey
            run needs them for the manifest). False saves that CPU time (about as much as
            the cipher's) when no manifest is written: ``report.shards`` is then empty.
        checkpoint: called on the worker with a shard's name once part of it is written
            under its temporary name (crash tests).

    Returns:
        A TransferReport.

    Raises:
        TypeError: a raw key without allow_raw_key; recipients without a string form;
            neither key nor recipients.
        ValueError: no files under src_url; digests=False with a DatasetKey.
        OSError, ShardsealError: what a task raised, with its class.
        distributed.KilledWorker: Dask gave up on a task whose workers kept dying: run the
            same call again to resume.
    """
    start = time.perf_counter()
    key_ref = key_reference(key, allow_raw_key)
    recipient_texts = recipient_strings(recipients)
    if key_ref is None and recipient_texts is None:
        raise TypeError("encrypt_dataset needs key= (a key reference) or recipients=")
    src_fs, src_root = url_to_fs(src_url, storage_options)
    dst_fs, dst_root = url_to_fs(dst_url, dst_storage_options if dst_storage_options is not None else storage_options)
    dataset_ref = key_ref if isinstance(key_ref, DatasetKey) else None
    dataset = dataset_ref is not None
    if dataset and not digests:
        raise ValueError("a dataset's manifest records every shard's SHA-256: digests=False "
                         "works only without a DatasetKey")
    if dataset_ref is not None:
        _prepare_manifest(dataset_ref, recipient_texts)
    _clean_leftovers(dst_fs, dst_root)
    files = {n: s for n, s in list_files(src_fs, src_root).items()
             if not n.endswith(SUFFIX) and not is_temp(n)}
    if not files:
        raise ValueError(f"no files to encrypt under {os.fspath(src_url)}")
    items = [(f"{src_root}/{n}", f"{dst_root}/{n}{SUFFIX}", n + SUFFIX, s) for n, s in sorted(files.items())]
    job = EncryptJob(src_fs, dst_fs, key_ref, None if dataset else recipient_texts, metadata, suite,
                      threads, checkpoint, digests)
    checked_picklable(job)
    client = find_client(client)
    batches = split(client, items, lambda item: item[3], batch_bytes, batch_files)
    results = [r for batch in run(client, encrypt_batch, batches, job, progress=progress) for r in batch]
    shards = tuple(ShardInfo(name, size, sha) for name, size, sha, _, _ in results) if digests else ()
    manifest_path = _record_in_manifest(dataset_ref, shards) if dataset_ref is not None else None
    return TransferReport(files=sum(1 for r in results if not r[4]), skipped=sum(1 for r in results if r[4]),
                          nbytes=sum(r[3] for r in results), shards=shards, manifest=manifest_path,
                          seconds=time.perf_counter() - start)


def _clean_leftovers(fs: AbstractFileSystem, root: str) -> None:
    """Removes temporary files that killed writers left (locked ones, being written, stay)."""
    if is_local(fs) and os.path.isdir(root):
        clean_temp_files(root, min_age=0)


def _prepare_manifest(ref: DatasetKey, recipients: Optional[tuple[str, ...]]) -> None:
    if os.path.exists(os.path.join(ref.folder, ref.manifest_name)):
        return
    if recipients is None:
        raise FileNotFoundError(f"{ref.folder} has no {ref.manifest_name}: give recipients= to create "
                                "the dataset, or a key reference without a manifest")
    parsed = [_specs.parse_recipient(t) for t in recipients]
    _manifest.Dataset.create(ref.folder, recipients=parsed, manifest_name=ref.manifest_name).close()


def _record_in_manifest(ref: DatasetKey, shards: Sequence[ShardInfo]) -> str:
    with open_dataset(ref) as dataset:
        for info in shards:
            dataset.record(info)
        path = str(dataset.manifest_path)
    return path


def decrypt_dataset(src_url: PathArg, dst_url: PathArg, *,
                    key: Optional[KeyArg] = None, identities: Sequence[str] = (),
                    client: Optional[distributed.Client] = None,
                    storage_options: Optional[Mapping[str, Any]] = None,
                    dst_storage_options: Optional[Mapping[str, Any]] = None,
                    threads: Optional[int] = 1, batch_bytes: int = DEFAULT_BATCH_BYTES,
                    batch_files: int = DEFAULT_BATCH_FILES, progress: bool = False,
                    allow_raw_key: bool = False) -> TransferReport:
    """Decrypts every ``*.sseal`` file under src_url (the manifest excepted) into dst_url,
    without the suffix, on a Dask cluster.

    Each output file is written under a temporary name and renamed into place only once all
    of it has authenticated. A re-run decrypts every file again (a plaintext file cannot be
    checked against its shard without decrypting it).

    Args:
        src_url: the encrypted folder (path or fsspec URL).
        dst_url: the output folder.
        key: a key reference (``KeyFile``, ``EnvKey``, ``DatasetKey``); raw keys are refused
            unless allow_raw_key.
        identities: identity strings (identity file paths, ``pkcs11:...``, ``aws-kms``) that
            each worker loads itself, for envelope shards.
        client: the ``distributed.Client``; None uses the current one.
        storage_options: fsspec options of src_url (and of dst_url unless dst_storage_options).
        dst_storage_options: fsspec options of dst_url.
        threads: threads each task uses for the cipher.
        batch_bytes: small files are grouped into tasks of about this many bytes.
        batch_files: and of at most this many files.
        progress: show Dask's progress bar.
        allow_raw_key: send a raw key to the workers (pickled into every task).

    Returns:
        A TransferReport (``nbytes``: plaintext bytes written).

    Raises:
        TypeError: a raw key without allow_raw_key; neither key nor identities.
        ValueError: no ``*.sseal`` files under src_url.
        ShardsealError: a shard failed (``AuthenticationError``, ``KeyNotFoundError``, ...),
            raised again on the driver with its class.
        OSError: a file could not be read or written.
    """
    start = time.perf_counter()
    key_ref = key_reference(key, allow_raw_key)
    identity_texts = identity_strings(identities)
    if key_ref is None and not identity_texts:
        raise TypeError("decrypt_dataset needs key= (a key reference) or identities=")
    src_fs, src_root = url_to_fs(src_url, storage_options)
    dst_fs, dst_root = url_to_fs(dst_url, dst_storage_options if dst_storage_options is not None else storage_options)
    _clean_leftovers(dst_fs, dst_root)
    files = {n: s for n, s in list_files(src_fs, src_root).items()
             if n.endswith(SUFFIX) and n != _manifest.MANIFEST_NAME and not is_temp(n)}
    if not files:
        raise ValueError(f"no *.sseal files under {os.fspath(src_url)}")
    items = [(f"{src_root}/{n}", f"{dst_root}/{n[:-len(SUFFIX)]}", n, s) for n, s in sorted(files.items())]
    job = DecryptJob(src_fs, dst_fs, key_ref, identity_texts, threads)
    checked_picklable(job)
    client = find_client(client)
    batches = split(client, items, lambda item: item[3], batch_bytes, batch_files)
    results = [r for batch in run(client, decrypt_batch, batches, job, progress=progress) for r in batch]
    return TransferReport(files=len(results), skipped=0, nbytes=sum(n for _, n in results),
                          seconds=time.perf_counter() - start)


