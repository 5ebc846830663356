"""Checking a dataset folder against its manifest: the findings (``Problem``), the report,
and the checks of one shard file (size, SHA-256, full decryption) and of unlisted files."""

from __future__ import annotations

import builtins
import hashlib
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, NamedTuple, Optional

from ..io import files as _files
from ..io.stream import DecryptingReader
from ..errors import ShardsealError
from ._manifest_format import SHARD_SUFFIX, ShardInfo

# Problem kinds that verify reports.
MISSING = "missing"
MODIFIED = "modified"
UNLISTED = "unlisted"
CORRUPT = "corrupt"
UNREADABLE = "unreadable"


class Problem(NamedTuple):
    """One finding of ``verify``: the shard's name, a kind (``missing``, ``modified``,
    ``unlisted``, ``corrupt``, ``unreadable``) and a human-readable detail."""

    name: str
    kind: str
    detail: str


@dataclass(frozen=True)
class VerifyReport:
    """The result of checking a dataset folder against its manifest.

    Attributes:
        problems: every finding, listed shards first (in name order), then unlisted files.
        shards_checked: how many listed shards were checked.
        bytes_checked: how many bytes of shard files were hashed.
        deep: whether every shard was also decrypted and authenticated in full.
    """

    problems: tuple[Problem, ...]
    shards_checked: int
    bytes_checked: int
    deep: bool = False

    @property
    def ok(self) -> bool:
        """True when the folder matches the manifest exactly."""
        return not self.problems

    def summary(self) -> str:
        """A few lines for a person: OK, or each problem on its own line."""
        checked = f"{self.shards_checked} shards, {self.bytes_checked:,} bytes checked"
        if self.deep:
            checked += " and decrypted"
        if self.ok:
            return f"OK: {checked}"
        counts: dict[str, int] = {}
        for problem in self.problems:
            counts[problem.kind] = counts.get(problem.kind, 0) + 1
        kinds = ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items()))
        lines = [f"FAILED: {len(self.problems)} problems ({kinds}); {checked}"]
        lines += [f"  {p.kind:<10} {p.name}: {p.detail}" for p in self.problems]
        return "\n".join(lines)


# Public names of shardseal.ops.manifest: pickles (results of shardseal.dask's verify tasks)
# and reprs name them there, as before the module was split.
Problem.__module__ = VerifyReport.__module__ = "shardseal.ops.manifest"


def digest(file: io.BufferedIOBase, size_hint: int) -> tuple[int, str]:
    """(bytes read, SHA-256 hex) of a binary file from its current position to its end.

    size_hint (the expected size) keeps the buffer small for small files: verifying many
    small shards must not allocate a full block for each.

    Raises:
        OSError: the file cannot be read.
    """
    sha = hashlib.sha256()
    buffer = bytearray(min(_files.FILE_BLOCK_SIZE, size_hint + 1))
    view = memoryview(buffer)
    total = 0
    while True:
        n = file.readinto(buffer)
        if not n:
            return total, sha.hexdigest()
        sha.update(view[:n])
        total += n


def check_shard(path: Path, info: ShardInfo, key: Optional[bytes],
                threads: Optional[int]) -> tuple[Optional[Problem], int]:
    """(the problem found or None, bytes hashed) for one listed shard at path; with a key,
    a shard that matches is also decrypted in full."""
    def problem(kind: str, detail: str) -> Problem:
        return Problem(info.name, kind, detail)

    try:
        raw = builtins.open(path, "rb")
    except (FileNotFoundError, NotADirectoryError):
        return problem(MISSING, "the file does not exist"), 0
    except IsADirectoryError:
        return problem(MISSING, "a folder has the shard's name"), 0
    except OSError as exc:
        return problem(UNREADABLE, f"cannot be read: {exc.strerror or exc}"), 0
    with raw:
        size = os.fstat(raw.fileno()).st_size
        if size != info.size:
            return problem(MODIFIED, f"{size} bytes, the manifest records {info.size}"), 0
        try:
            hashed, sha256 = digest(raw, size)
        except OSError as exc:
            return problem(UNREADABLE, f"cannot be read: {exc.strerror or exc}"), 0
        if sha256 != info.sha256:
            return problem(MODIFIED, "its SHA-256 differs from the manifest's (replaced, swapped "
                                     "with another shard, rolled back or altered)"), hashed
        if key is not None:
            raw.seek(0)
            failure = decrypt_fully(raw, key, threads)
            if failure is not None:
                return problem(CORRUPT, failure), hashed
    return None, hashed


def decrypt_fully(raw: io.BufferedIOBase, key: bytes, threads: Optional[int]) -> Optional[str]:
    """Decrypts a whole shard from a seekable binary file (local, or an fsspec file: the Dask
    verify uses this too), discarding the plaintext; returns why it failed, or None."""
    buffer = bytearray(0)
    try:
        with DecryptingReader(raw, key, threads=threads) as reader:
            assert reader.size is not None  # a regular file is seekable: its size is known
            buffer = bytearray(min(_files.FILE_BLOCK_SIZE, reader.size + 1))
            while reader.readinto(buffer):
                pass
    except ShardsealError as exc:
        return f"does not decrypt under the dataset key: {type(exc).__name__}: {exc}"
    finally:
        buffer[:] = bytes(len(buffer))  # plaintext
    return None


def unlisted(folder: Path, manifest_name: str, listed: set[str]) -> Iterator[Problem]:
    """An ``unlisted`` problem for each ``*.sseal`` file under folder (recursively) that is
    neither the manifest nor listed, in name order."""
    for root, folders, files in os.walk(folder):
        folders.sort()
        for file_name in sorted(files):
            if not file_name.endswith(SHARD_SUFFIX):
                continue
            name = Path(root, file_name).relative_to(folder).as_posix()
            if name != manifest_name and name not in listed:
                yield Problem(name, UNLISTED, "an encrypted file the manifest does not list")
