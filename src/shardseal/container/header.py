"""The shardseal container header: byte layout, encoding and bounded parsing.

A container is ``fixed part || key block || Cobblestone message``. The fixed part (magic,
version, suite, metadata) is the Cobblestone context, so it is authenticated by the commitment;
the key block (the key stanzas) is not, so that re-wrapping keys never touches the payload.
docs/FORMAT.md is the specification; this module is its implementation.
"""

from __future__ import annotations

import json
import re
import struct
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping

from ..keys import stanzas as _stanzas
from ..keys.stanzas import Stanza
from ..errors import FormatError, TruncatedError

if TYPE_CHECKING:
    from ..core.buffers import Buffer

MAGIC = b"\x89SSEAL\r\n\x1a\n"
VERSION = 1
MAX_HEADER_SIZE = 1 << 20
MAX_STANZAS = _stanzas.MAX_STANZAS
# Nesting levels of the metadata JSON (the top-level object is level 1). Python's JSON parser
# and encoder recurse once per level, so deeper documents would fail, or not, depending on how
# deep the caller's stack already is; a fixed bound makes the answer the same everywhere.
MAX_METADATA_DEPTH = 64
# The largest magnitude of an integer in the metadata (FORMAT.md 2.3): a signed 64-bit value
# without its extra negative one, so every reader can hold it exactly.
MAX_JSON_INT = 2**63 - 1

# Suite identifiers in the header, mapped to Cobblestone suite sizes.
SUITE_IDS = {1: 256, 2: 128}
SUITE_NAMES = {256: "cobblestone-256", 128: "cobblestone-128"}
_SUITE_ID_OF = {bits: suite_id for suite_id, bits in SUITE_IDS.items()}

# Stanza types (keys.stanzas): a set high bit marks a critical type.
STANZA_CRITICAL = _stanzas.STANZA_CRITICAL
STANZA_DIRECT = _stanzas.DIRECT
DIRECT_KEY_ID_SIZE = _stanzas.KEY_ID_SIZE

# Reserved top-level metadata keys and the JSON type each must have.
_RESERVED_METADATA = {"user": dict, "content_type": str, "array": dict, "tensor": dict}

_PREFIX = struct.Struct(">10sBBI")  # magic, version, suite id, metadata length
_STANZA_COUNT = struct.Struct(">H")
_STANZA_HEAD = struct.Struct(">HI")  # type, body length


@dataclass(frozen=True)
class Header:
    """A parsed header. ``fixed`` is the fixed part's bytes: the Cobblestone context."""

    version: int
    suite: int
    metadata: dict[str, Any] = field(hash=False)
    stanzas: tuple[Stanza, ...]
    fixed: bytes
    size: int


def canonical_json(obj: Mapping[str, Any]) -> bytes:
    """The canonical JSON encoding of a metadata object (see docs/FORMAT.md).

    Raises:
        TypeError: obj is not a mapping or holds values JSON cannot represent.
        ValueError: obj holds NaN or an infinity.
    """
    if not isinstance(obj, Mapping):
        raise TypeError(f"metadata must be a mapping, not {type(obj).__name__}")
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def encode_fixed(suite: int, metadata: Mapping[str, Any]) -> bytes:
    """Encodes the fixed part: magic, version, suite and canonical JSON metadata.

    Raises:
        ValueError: an unknown suite, or metadata too large for a header.
    """
    if suite not in _SUITE_ID_OF:
        raise ValueError(f"suite must be 256 or 128, got {suite if isinstance(suite, int) else type(suite).__name__}")
    try:
        body = canonical_json(metadata)
    except RecursionError:
        raise ValueError(f"metadata nested more than {MAX_METADATA_DEPTH} levels deep") from None
    if json_depth(body) > MAX_METADATA_DEPTH:
        raise ValueError(f"metadata nested more than {MAX_METADATA_DEPTH} levels deep "
                         "(the top-level object counts as one)")
    if _PREFIX.size + len(body) > MAX_HEADER_SIZE // 2:
        raise ValueError(f"metadata too large: {len(body)} bytes of JSON (limit 512 KiB)")
    if re.search(rb"[0-9]{19}", body) and _has_large_int(body):  # the rare case: parse to be sure
        raise ValueError(f"metadata holds an integer beyond ±{MAX_JSON_INT}, which readers refuse")
    return _PREFIX.pack(MAGIC, VERSION, _SUITE_ID_OF[suite], len(body)) + body


def encode_key_block(stanzas: list[Stanza] | tuple[Stanza, ...]) -> bytes:
    """Encodes the key block: a stanza count, then each stanza's type, length and body.

    Raises:
        ValueError: no stanzas, too many, or a block too large for a header.
    """
    if not 1 <= len(stanzas) <= MAX_STANZAS:
        raise ValueError(f"a header holds 1 to {MAX_STANZAS} key stanzas, got {len(stanzas)}")
    parts = [_STANZA_COUNT.pack(len(stanzas))]
    for stanza in stanzas:
        parts.append(_STANZA_HEAD.pack(stanza.type, len(stanza.body)))
        parts.append(stanza.body)
    block = b"".join(parts)
    if len(block) > MAX_HEADER_SIZE // 2:
        raise ValueError(f"key block too large: {len(block)} bytes (limit 512 KiB)")
    return block


class _BoundedReader:
    """Reads exact byte counts from `read`, refusing to go past MAX_HEADER_SIZE in total."""

    def __init__(self, read: Callable[[int], Buffer]) -> None:
        self._read = read
        self.consumed = 0

    def take(self, n: int, what: str, allow_short: bool = False) -> bytes:
        if self.consumed + n > MAX_HEADER_SIZE:
            raise FormatError(f"header too large: {what} would pass the 1 MiB header limit")
        data = bytes(self._read(n))
        if len(data) != n and not allow_short:
            raise TruncatedError(f"input truncated inside the header ({what})")
        self.consumed += len(data)
        return data


def read_header(read: Callable[[int], Buffer]) -> Header:
    """Parses a header from a source of bytes, reading no more than the header itself.

    Args:
        read: returns up to n bytes per call (fewer only at the end of the input), like
            a binary file's ``read``.

    Raises:
        FormatError: not a shardseal container, an unsupported version, suite or critical
            stanza type, non-canonical metadata, or a field over its limit.
        TruncatedError: the input ends inside the header.
    """
    reader = _BoundedReader(read)
    prefix = reader.take(_PREFIX.size, "fixed part", allow_short=True)
    _check_magic(prefix[: len(MAGIC)])
    if len(prefix) < _PREFIX.size:
        raise TruncatedError("input truncated inside the header (fixed part)")
    magic, version, suite_id, metadata_len = _PREFIX.unpack(prefix)
    if version != VERSION:
        raise FormatError(f"unsupported shardseal format version {version} (this library reads {VERSION})")
    if suite_id not in SUITE_IDS:
        raise FormatError(f"unknown cipher suite id {suite_id}")
    metadata_bytes = reader.take(metadata_len, "metadata")
    metadata = _parse_metadata(metadata_bytes)
    fixed = prefix + metadata_bytes
    (count,) = _STANZA_COUNT.unpack(reader.take(_STANZA_COUNT.size, "stanza count"))
    if not 1 <= count <= MAX_STANZAS:
        raise FormatError(f"a header holds 1 to {MAX_STANZAS} key stanzas, found {count}")
    stanzas = []
    for _ in range(count):
        stanza_type, body_len = _STANZA_HEAD.unpack(reader.take(_STANZA_HEAD.size, "stanza"))
        stanzas.append(Stanza(stanza_type, reader.take(body_len, "stanza body")))
    for stanza in stanzas:
        if stanza.critical and stanza.type not in _stanzas.TYPES:
            raise FormatError(f"unknown critical key stanza type 0x{stanza.type:04x}")
    _stanzas.check_stanzas(stanzas)
    return Header(VERSION, SUITE_IDS[suite_id], metadata, tuple(stanzas), fixed, reader.consumed)


def parse_header(data: Buffer) -> Header:
    """Parses the header at the start of a buffer (see read_header)."""
    view = memoryview(data).cast("B")
    position = 0

    def read(n: int) -> memoryview:
        nonlocal position
        chunk = view[position : position + n]
        position += len(chunk)
        return chunk

    return read_header(read)


def _check_magic(magic: bytes) -> None:
    if magic == MAGIC:
        return
    if MAGIC.startswith(magic):
        raise TruncatedError("input truncated inside the magic bytes")
    # Line-ending or 7-bit mangling in transit leaves the letters but breaks the rest.
    if magic[1:6] == MAGIC[1:6]:
        raise FormatError("corrupted shardseal magic: the file was altered in transit (text mode or 7-bit transfer?)")
    raise FormatError("not a shardseal container (wrong magic bytes)")


_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def json_depth(data: bytes, limit: int = MAX_METADATA_DEPTH) -> int:
    """The deepest nesting of arrays and objects in JSON text, counted without recursion (the
    top level is 1; a bare scalar is 0), or the first depth past limit. Brackets inside strings
    do not count; for text that is not JSON the result is only an estimate (parsing it fails
    anyway)."""
    brackets = _JSON_STRING.sub(b"", bytes(data)).translate(None, _NOT_BRACKETS)
    depth = deepest = 0
    for char in brackets:
        if char in b"[{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > limit:
                    break
        else:
            depth -= 1
    return deepest


def _has_large_int(body: bytes) -> bool:
    try:
        json.loads(body.decode("utf-8"), parse_int=_bounded_int)
    except FormatError:
        return True
    return False


def _bounded_int(text: str) -> int:
    # Length first: int() of a long digit string is slow, and over 4,300 digits a bare ValueError.
    if len(text.lstrip("-")) > 19 or abs(int(text)) > MAX_JSON_INT:
        raise FormatError("integer out of range")
    return int(text)


def _parse_metadata(data: bytes) -> dict[str, Any]:
    if json_depth(data) > MAX_METADATA_DEPTH:
        raise FormatError(f"header metadata is nested more than {MAX_METADATA_DEPTH} levels deep")
    try:
        metadata = json.loads(data.decode("utf-8"), parse_int=_bounded_int)
    except FormatError:
        raise FormatError(f"header metadata holds an integer beyond ±{MAX_JSON_INT}") from None
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise FormatError("header metadata is not valid UTF-8 JSON") from None
    if not isinstance(metadata, dict):
        raise FormatError("header metadata must be a JSON object")
    try:
        canonical = canonical_json(metadata)
    except (TypeError, ValueError, RecursionError):
        raise FormatError("header metadata is not canonical JSON") from None
    if canonical != data:
        raise FormatError("header metadata is not canonical JSON")
    for name, kind in _RESERVED_METADATA.items():
        if name in metadata and not isinstance(metadata[name], kind):
            raise FormatError(f"header metadata {name!r} must be a JSON {'object' if kind is dict else 'string'}")
    return metadata
