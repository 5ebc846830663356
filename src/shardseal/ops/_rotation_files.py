"""Which files a rotation works on: the paths given, the folders searched, and the names of
rotation's own files (journals and temporary files) beside them.
"""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Union

from .._atomic import TEMP_STEM_BYTES
from .._atomic import TEMP_SUFFIX as ATOMIC_TEMP_SUFFIX

PathArg = Union[str, "os.PathLike[str]"]
# What rotate() and recover() take: one path or a list of them.
PathsArg = Union[PathArg, Iterable[PathArg]]

JOURNAL_SUFFIX = ".sseal-rotate"
TEMP_SUFFIX = ".sseal-rotate-tmp"


def path_list(paths: PathsArg) -> list[Path]:
    """paths as a non-empty list of Paths.

    Raises:
        TypeError: not a path or a list of paths (bytes included).
        ValueError: an empty list.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    elif isinstance(paths, bytes):
        raise TypeError("paths must be str or os.PathLike, not bytes")
    try:
        items = [Path(os.fsdecode(p)) for p in paths]
    except TypeError:
        raise TypeError(f"paths must be a path or a list of paths, not {type(paths).__name__}") from None
    if not items:
        raise ValueError("no paths given")
    return items


@dataclass
class Found:
    """What a search found: candidate files, skipped entries, journals, temporary files."""

    files: list[Path] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    journals: list[Path] = field(default_factory=list)
    temps: list[Path] = field(default_factory=list)


def discover(paths: list[Path], recursive: bool) -> Found:
    """The candidate files, skipped entries, journals and temporary files under paths.

    Raises:
        FileNotFoundError: a path does not exist.
    """
    found = Found()
    for path in paths:
        st = os.stat(path)  # a folder the caller names is followed even through a link
        if stat.S_ISDIR(st.st_mode):
            _walk(path, recursive, found)
        else:
            _classify_named_file(path, found)
    found.files = sorted(set(found.files))
    found.journals = sorted(set(found.journals))
    found.temps = sorted(set(found.temps))
    return found


def _walk(folder: Path, recursive: bool, found: Found) -> None:
    pending = [folder]
    while pending:
        current = pending.pop()
        with os.scandir(current) as entries:
            for entry in entries:
                path = current / entry.name
                if entry.is_symlink():
                    found.skipped.append((str(path), "symbolic link (not followed)"))
                elif entry.is_dir(follow_symlinks=False):
                    if recursive:
                        pending.append(path)
                elif entry.is_file(follow_symlinks=False):
                    _classify(path, found)
                else:
                    found.skipped.append((str(path), "not a regular file"))


def _classify_named_file(path: Path, found: Found) -> None:
    if path.is_symlink():
        found.skipped.append((str(path), "symbolic link (not followed)"))
    elif not path.is_file():
        found.skipped.append((str(path), "not a regular file"))
    else:
        _classify(path, found)
        if path in found.files:
            journal = journal_path(path)
            if journal.exists():
                found.journals.append(journal)
            found.temps.extend(path.parent.glob(f".{_glob_escape(_stem(path))}.*{TEMP_SUFFIX}"))


def _classify(path: Path, found: Found) -> None:
    name = path.name
    if name.startswith(".") and name.endswith(JOURNAL_SUFFIX):
        found.journals.append(path)
    elif name.startswith(".") and name.endswith(TEMP_SUFFIX):
        found.temps.append(path)
    elif name.startswith(".") and name.endswith(ATOMIC_TEMP_SUFFIX):
        found.skipped.append((str(path), "temporary file of an unfinished write"))
    else:
        found.files.append(path)


def _glob_escape(text: str) -> str:
    return "".join(f"[{c}]" if c in "*?[" else c for c in text)


def _stem(path: Path) -> str:
    # Shortened so that journal and temporary names stay within the 255-byte name limit.
    return os.fsencode(path.name)[:TEMP_STEM_BYTES].decode(errors="ignore")


def journal_path(path: PathArg) -> Path:
    """The journal that an in-place rotation of path writes beside it.

    Raises:
        TypeError: path is not a path.
    """
    path = Path(path)
    name = path.name
    if len(os.fsencode(name)) > TEMP_STEM_BYTES:
        # A long name is cut; a digest of the whole name keeps journals of names that share
        # their first TEMP_STEM_BYTES bytes apart.
        name = f"{_stem(path)}.{hashlib.sha256(os.fsencode(path.name)).hexdigest()[:16]}"
    return path.parent / f".{name}{JOURNAL_SUFFIX}"


# A public name of shardseal.ops.rotation: pickles and reprs name it there, as before the
# module was split.
journal_path.__module__ = "shardseal.ops.rotation"
