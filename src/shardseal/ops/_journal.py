"""The rotation journal: the record a rotation in place writes before it overwrites a key block.

``rotation`` writes it beside the file (``<name>.sseal-rotate``) and removes it when done;
``rotation.recover`` replays or discards what a killed rotation left.
"""

from __future__ import annotations

import hashlib
import os
import struct
from dataclasses import dataclass
from typing import Optional

from ..container import header as _container

# A journal: magic, the file's name and size, the fixed part, the old and new key blocks, the
# message's salt and commitment, then a SHA-256 of all of it (a torn journal fails it).
MAGIC = b"\x89SSEAL-ROTATE\r\n\x1a\n\x01"
# magic, name length, file size, fixed part / old block / new block lengths, salt || commitment
HEAD = struct.Struct(f">{len(MAGIC)}sHQIII56s")
DIGEST_SIZE = 32
MAX_SIZE = HEAD.size + 255 + 2 * _container.MAX_HEADER_SIZE + DIGEST_SIZE


@dataclass(frozen=True)
class Journal:
    """A decoded journal: what a rotation in place is about to write, and what it replaces."""

    name: str
    size: int
    fixed: bytes
    old_block: bytes
    new_block: bytes
    message_head: bytes


def encode(name: str, size: int, fixed: bytes, old_block: bytes, new_block: bytes,
           message_head: bytes) -> bytes:
    """The journal of a key-block rewrite: written and fsynced before the file is touched."""
    encoded_name = os.fsencode(name)
    body = HEAD.pack(MAGIC, len(encoded_name), size, len(fixed), len(old_block),
                              len(new_block), message_head)
    body += encoded_name + fixed + old_block + new_block
    return body + hashlib.sha256(body).digest()


def decode(data: bytes) -> Optional[Journal]:
    """The journal, or None when it is torn (incomplete or failing its checksum).

    Raises:
        ValueError: the data is not a journal at all (another program's file).
    """
    if data[:len(MAGIC)] != MAGIC:
        if len(data) < len(MAGIC) and MAGIC.startswith(data):
            return None  # torn within its first bytes
        raise ValueError("not a shardseal rotation journal")
    if len(data) < HEAD.size + DIGEST_SIZE:
        return None
    body, digest = data[:-DIGEST_SIZE], data[-DIGEST_SIZE:]
    if hashlib.sha256(body).digest() != digest:
        return None
    _, name_len, size, fixed_len, old_len, new_len, message_head = HEAD.unpack_from(body)
    parts, position = [], HEAD.size
    for length in (name_len, fixed_len, old_len, new_len):
        parts.append(body[position:position + length])
        position += length
    if position != len(body):
        return None
    name, fixed, old_block, new_block = parts
    return Journal(os.fsdecode(name), size, fixed, old_block, new_block, message_head)
