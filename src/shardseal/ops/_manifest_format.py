"""The dataset manifest's plaintext: its constants, the shard record, and the encoding,
strict parsing and validation of the canonical JSON document (docs/FORMAT.md)."""

from __future__ import annotations

import base64
import binascii
import datetime
import json
import os
import re
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Union

from ..container import header as _container
from ..keys import direct as _direct
from ..errors import FormatError

PathLike = Union[str, "os.PathLike[str]"]

MANIFEST_NAME = "manifest.sseal"
CONTENT_TYPE = "shardseal.dataset-manifest"
FORMAT = "shardseal-dataset-1"
SHARD_SUFFIX = ".sseal"
# The manifest is always written with Cobblestone-256; a reader accepts either suite.
MANIFEST_SUITE = 256

MANIFEST_FIELDS = frozenset({"format", "dataset_key", "dataset_key_id", "shards", "created", "updated"})
SHARD_FIELDS = frozenset({"name", "size", "sha256"})
SHA256_HEX = re.compile(r"[0-9a-f]{64}")
KEY_ID_HEX = re.compile(r"[0-9a-f]{32}")
# The one time form the writer emits and a reader accepts (UTC, whole seconds, "+00:00": what
# datetime.isoformat gives), checked by pattern so that what a reader accepts does not depend
# on the Python version's fromisoformat. ASCII digits only (Python's \d takes any script's).
ISO_TIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\+00:00")
MAX_SHARD_SIZE = 2**63 - 1  # a file size every platform's signed 64-bit offset can hold


@dataclass(frozen=True)
class ShardInfo:
    """A shard as the manifest records it.

    Attributes:
        name: its path relative to the dataset folder, POSIX style ("train/000.sseal").
        size: the encrypted file's size in bytes.
        sha256: the SHA-256 of the whole encrypted file, lowercase hex.
    """

    name: str
    size: int
    sha256: str


# A public name of shardseal.ops.manifest: pickles (tasks and results of shardseal.dask) and
# reprs name it there, as before the module was split.
ShardInfo.__module__ = "shardseal.ops.manifest"


# --------------------------------------------------------------------------------------
# Names, sizes, digests and times


def name_problem(name: str) -> Optional[str]:
    """Why name is not a valid shard name, or None."""
    if not name:
        return "it is empty"
    if "\\" in name or any(ord(c) < 0x20 or c == "\x7f" for c in name):
        # Control characters (newline, escape) would let a name rewrite a report's lines.
        return "it holds a backslash or a control character"
    if name.startswith("/"):
        return "it is absolute"
    if any(part in ("", ".", "..") for part in name.split("/")):
        return "it has an empty, '.' or '..' component"
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return "it is not valid Unicode text"
    return None


def check_shard_name(name: object, manifest_name: str) -> str:
    """Validates a shard name given by the caller.

    Raises:
        TypeError: name is not a str.
        ValueError: not a relative, normalised POSIX path, or the manifest's own name.
    """
    if not isinstance(name, str):
        raise TypeError(f"a shard name must be a str (a relative POSIX path), not {type(name).__name__}")
    why = name_problem(name)
    if why is None and name == manifest_name:
        why = "it is the manifest's own name"
    if why is not None:
        raise ValueError(f"invalid shard name {name!r}: {why} (give a relative POSIX path such as 'train/000.sseal')")
    return name


def check_manifest_name(name: object) -> str:
    """name, when it is a plain file name.

    Raises:
        TypeError: name is not a str.
        ValueError: name is not a plain file name.
    """
    if not isinstance(name, str):
        raise TypeError(f"manifest_name must be a str, not {type(name).__name__}")
    if name_problem(name) is not None or "/" in name:
        raise ValueError(f"manifest_name must be a plain file name, got {name!r}")
    return name


def valid_size(size: object) -> bool:
    """Whether size is a shard size the manifest can record (an int from 0 to 2^63 - 1)."""
    return not isinstance(size, bool) and isinstance(size, int) and 0 <= size <= MAX_SHARD_SIZE


def valid_sha256(sha256: object) -> bool:
    """Whether sha256 is 64 lowercase hex digits."""
    return isinstance(sha256, str) and bool(SHA256_HEX.fullmatch(sha256))


def now() -> str:
    """The current UTC time in the manifest's form (whole seconds, "+00:00")."""
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


# --------------------------------------------------------------------------------------
# The manifest's plaintext


@dataclass
class Document:
    """The manifest plaintext, parsed."""

    key: bytes
    shards: dict[str, ShardInfo]  # name -> ShardInfo
    created: str
    updated: str


def encode_document(key: bytes, shards: Mapping[str, ShardInfo], created: str, updated: str) -> bytes:
    """The manifest's plaintext: canonical JSON, shards sorted by name."""
    return _container.canonical_json({
        "format": FORMAT,
        "dataset_key": base64.b64encode(key).decode("ascii"),
        "dataset_key_id": _direct.key_id(key).hex(),
        "shards": [{"name": s.name, "size": s.size, "sha256": s.sha256}
                   for s in sorted(shards.values(), key=lambda s: s.name)],
        "created": created,
        "updated": updated,
    })


def parse_document(plaintext: bytes, manifest_name: str) -> Document:
    """Parses and validates the manifest's plaintext.

    Raises:
        FormatError: anything malformed (see the module docs for the schema).
    """
    document = parse_canonical_object(plaintext)
    _require_fields(document, MANIFEST_FIELDS, "the manifest")
    if document["format"] != FORMAT:
        raise FormatError(f"unsupported dataset manifest format {document['format']!r} (this library reads {FORMAT!r})")
    key = _parse_key(document["dataset_key"])
    key_id = document["dataset_key_id"]
    if not isinstance(key_id, str) or not KEY_ID_HEX.fullmatch(key_id):
        raise FormatError("the manifest's dataset_key_id must be 32 lowercase hex digits")
    if key_id != _direct.key_id(key).hex():
        raise FormatError("the manifest's dataset_key_id does not match its dataset_key")
    return Document(key, _parse_shards(document["shards"], manifest_name),
                    _parse_time(document["created"], "created"), _parse_time(document["updated"], "updated"))


def parse_canonical_object(plaintext: bytes) -> dict[str, Any]:
    """The JSON object plaintext holds, which must be in canonical form.

    Raises:
        FormatError: not canonical JSON, or not an object.
    """
    try:
        document = json.loads(plaintext.decode("utf-8"))
        canonical = _container.canonical_json(document) if isinstance(document, dict) else None
    except (UnicodeError, ValueError, TypeError, RecursionError):
        raise FormatError("the dataset manifest is not valid canonical JSON") from None
    if canonical is None:
        raise FormatError("the dataset manifest must be a JSON object")
    if canonical != plaintext:
        raise FormatError("the dataset manifest is not canonical JSON")
    # canonical_json succeeded on it above, so it is a dict (of str keys, as JSON's are).
    result: dict[str, Any] = document
    return result


def _require_fields(obj: dict[str, Any], fields: frozenset[str], what: str) -> None:
    if set(obj) != fields:
        missing = sorted(fields - set(obj))
        extra = sorted(set(obj) - fields)
        raise FormatError(f"{what} must have exactly the fields {sorted(fields)} (missing {missing}, unknown {extra})")


def _parse_key(text: object) -> bytes:
    try:
        key = base64.b64decode(text, validate=True) if isinstance(text, str) else None
    except (binascii.Error, ValueError):
        key = None
    if key is None or len(key) != _direct.KEY_SIZE or base64.b64encode(key).decode("ascii") != text:
        raise FormatError(f"the manifest's dataset_key must be {_direct.KEY_SIZE} bytes in canonical base64")
    return key


def _parse_shards(entries: object, manifest_name: str) -> dict[str, ShardInfo]:
    if not isinstance(entries, list):
        raise FormatError("the manifest's shards must be a JSON list")
    shards: dict[str, ShardInfo] = {}
    previous: Optional[str] = None
    for entry in entries:
        if not isinstance(entry, dict):
            raise FormatError("each shard entry in the manifest must be a JSON object")
        _require_fields(entry, SHARD_FIELDS, "a shard entry")
        name, size, sha256 = entry["name"], entry["size"], entry["sha256"]
        if not isinstance(name, str) or name_problem(name) is not None or name == manifest_name:
            raise FormatError(f"the manifest lists an invalid shard name {name!r} "
                              "(names are relative, normalised POSIX paths without '..')")
        if name in shards:
            raise FormatError(f"the manifest lists shard {name!r} twice")
        if previous is not None and name < previous:
            # One plaintext per shard list: writers sort by code point (= UTF-8 byte order).
            raise FormatError(f"the manifest's shards are not sorted by name ({name!r} after {previous!r})")
        previous = name
        if not valid_size(size):
            raise FormatError(f"the manifest's size of shard {name!r} is not an integer from 0 to 2^63 - 1")
        if not valid_sha256(sha256):
            raise FormatError(f"the manifest's sha256 of shard {name!r} is not 64 lowercase hex digits")
        shards[name] = ShardInfo(name, size, sha256)
    return shards


def _parse_time(value: object, field: str) -> str:
    if isinstance(value, str) and ISO_TIME.fullmatch(value):
        try:
            if datetime.datetime.fromisoformat(value).tzinfo is not None:
                return value
        except ValueError:
            pass
    raise FormatError(f"the manifest's {field} time must be a UTC time like 2024-05-01T12:00:00+00:00")
