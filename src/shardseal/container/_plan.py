"""The header and input key of a new container: a direct key's stanza, or a fresh file key
wrapped for each recipient."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Mapping, Optional

from . import header as _container
from ..keys import direct as _direct
from ..keys.envelope import FILE_KEY_SIZE, WrapContext, wrap_for
from ..keys.direct import RawKeyLike
from ..keys.registry import Recipients, check_recipients


@dataclass(frozen=True)
class Plan:
    """Everything needed to write a container: the fixed part, the whole header, the input key."""

    fixed: bytes
    header: bytes
    input_key: bytes


def plan(key: Optional[RawKeyLike], recipients: Optional[Recipients], suite: int,
         header_metadata: Mapping[str, Any]) -> Plan:
    """The header and input key of a new container, for a direct key or for recipients.

    Raises:
        TypeError: both or neither of key and recipients, or bad values (see check_*).
        ValueError: bad key length, empty recipients, metadata or key block too large.
    """
    fixed = _container.encode_fixed(suite, header_metadata)
    if (key is None) == (recipients is None):
        raise TypeError("give exactly one of key= and recipients=")
    if recipients is None:  # then key is not None (checked above)
        key = _direct.check_key(key)
        stanzas = [_direct.direct_stanza(key)]
        file_key = key
    else:
        file_key = os.urandom(FILE_KEY_SIZE)
        stanzas = wrap_for(check_recipients(recipients), file_key, WrapContext(suite, fixed))
    header = fixed + _container.encode_key_block(stanzas)
    return Plan(fixed, header, _direct.input_key(file_key, suite))
