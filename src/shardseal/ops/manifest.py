"""Datasets of many shards under one dataset key, listed in an encrypted manifest.

A dataset is a folder of shards and one small *manifest* (``manifest.sseal``):

* the manifest is a shardseal container encrypted for recipients (envelope encryption, header
  content type ``shardseal.dataset-manifest``). Its plaintext holds the 32-byte *dataset key*
  and lists every shard with its size and the SHA-256 of its encrypted file;
* every shard is an ordinary direct-key container under the dataset key (each with its own
  random salt), readable with ``shardseal.open(path, "rb", key=ds.key)`` and the datasets of
  ``shardseal.data``.

Rotating a key-encryption key therefore rewrites one manifest, never the shards:
``shardseal.rotate`` on the manifest rewrites only its key block. Adding or removing shards
re-encrypts the manifest's plaintext under the same file key and with the same key block, so
it needs only an identity that opens the manifest, not every recipient.

``verify`` checks the folder against the manifest: a listed shard that is absent is
``missing``; one whose size or SHA-256 differs is ``modified`` (replaced, swapped with another
shard, rolled back to an older version, altered); a ``*.sseal`` file the manifest does not list
is ``unlisted``; with ``deep=True`` every shard is also decrypted and authenticated in full
(``corrupt`` when that fails).

Limits: the manifest itself is authenticated but carries no counter, so a rollback of the
manifest *together with* its shards to an older consistent state is not detectable from the
folder alone; compare ``Dataset.updated`` (or the manifest file's digest) with a trusted record
when that matters. Writers must not update one manifest concurrently: ``save`` refuses (with
``ManifestChangedError``) to overwrite a manifest that changed on disk since it was read, which
catches, among others, a rotation that happened while the dataset was open.

    >>> with Dataset.create("data/train", recipients=[kek.recipient()]) as ds:
    ...     with ds.open_shard("shard-000.sseal", "wb") as f:
    ...         f.write(samples)
    >>> shardseal.manifest.verify("data/train", identities=[kek]).ok
    True
"""

from __future__ import annotations

import os
from typing import Optional

from ..keys import registry as _registry
from ..keys.keyref import KeyRef
from ..errors import (
    ManifestChangedError as ManifestChangedError,
    ShardMismatchError as ShardMismatchError,
)
from ._dataset import Dataset
from ._manifest_format import (
    CONTENT_TYPE,
    FORMAT,
    MANIFEST_NAME,
    MANIFEST_SUITE as MANIFEST_SUITE,
    SHARD_SUFFIX as SHARD_SUFFIX,
    PathLike as PathLike,
    ShardInfo,
)
# The manifest's JSON parser under its old name here (tests/test_data_limits.py reaches it).
from ._manifest_format import parse_canonical_object as _parse_canonical_object  # noqa: F401
from ._manifest_verify import (
    CORRUPT as CORRUPT,
    MISSING as MISSING,
    MODIFIED as MODIFIED,
    UNLISTED as UNLISTED,
    UNREADABLE as UNREADABLE,
    Problem,
    VerifyReport,
)

__all__ = [
    "CONTENT_TYPE",
    "FORMAT",
    "MANIFEST_NAME",
    "Dataset",
    "DatasetKey",
    "ManifestChangedError",
    "Problem",
    "ShardInfo",
    "ShardMismatchError",
    "VerifyReport",
    "verify",
]


def verify(folder: PathLike, *, identities: _registry.Identities, deep: bool = False,
           manifest_name: str = MANIFEST_NAME, threads: Optional[int] = None) -> VerifyReport:
    """Opens a dataset and checks its folder against its manifest (see ``Dataset.verify``).

    Raises:
        As ``Dataset.open``: the manifest itself cannot be opened or is not valid.
    """
    dataset = Dataset.open(folder, identities=identities, manifest_name=manifest_name, threads=threads)
    try:
        return dataset.verify(deep=deep)
    finally:
        dataset.close()


class DatasetKey(KeyRef):
    """The dataset key in a dataset folder's manifest, unwrapped when resolved.

    Each process opens the manifest with the identity itself, so nothing secret is pickled:
    the reference pickles as its folder, identity string and manifest name. Relative paths are
    made absolute when the reference is created.

    Args:
        folder: the dataset folder (holding ``manifest.sseal``).
        identity: what opens the manifest, an identity string (``keys.registry``) that holds no
            secret: the path of a key file, keyring file or X25519 identity file,
            ``keyring:PATH``, ``pkcs11:token=...;object=...`` (module and PIN from the
            environment) or ``aws-kms[:KEY]``.
        manifest_name: the manifest's file name in the folder.

    Raises:
        TypeError: folder or identity is not a str or path.
        ValueError: identity is a secret (an X25519 identity string), not where one is.
    """

    __slots__ = ("folder", "identity", "manifest_name")

    def __init__(self, folder: PathLike, identity: PathLike, manifest_name: str = "manifest.sseal") -> None:
        if not isinstance(folder, (str, os.PathLike)) or not isinstance(identity, (str, os.PathLike)):
            raise TypeError("DatasetKey takes a folder path and an identity path or URI")
        self.folder = os.path.abspath(os.fspath(folder))
        # Paths made absolute; a secret (an X25519 identity string) refused: this pickles.
        self.identity = _registry.IdentityRef(identity).to_string()
        self.manifest_name = manifest_name

    def resolve(self) -> bytes:
        """Opens the manifest with the identity and returns the dataset key.

        Raises:
            OSError: the manifest or identity file cannot be read.
            ValueError: the identity string names nothing usable.
            ShardsealError: the identity does not open the manifest, or it was tampered with.
        """
        identity = _registry.parse_identity(self.identity)
        with Dataset.open(self.folder, identities=[identity],
                                   manifest_name=self.manifest_name) as dataset:
            return dataset.key

    def __repr__(self) -> str:
        return f"DatasetKey({self.folder!r}, {self.identity!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, DatasetKey) and (self.folder, self.identity, self.manifest_name) == (
            other.folder, other.identity, other.manifest_name)

    def __hash__(self) -> int:
        return hash((DatasetKey, self.folder, self.identity, self.manifest_name))

    def __reduce__(self) -> tuple[type[DatasetKey], tuple[str, str, str]]:
        return (DatasetKey, (self.folder, self.identity, self.manifest_name))
