"""Small bounded caches that take the Python work off repeated small calls.

Two caches, both per process and bounded:

- Parsed headers, keyed by the header's exact bytes. Parsing is a pure function of those bytes
  and reads exactly ``header.size`` of them, so a buffer that starts with the bytes of a header
  parsed before has that same header: a hit gives exactly the acceptance of a full parse
  (every check ran when the entry was made; failures are never cached). The cached Header is
  shared: only paths that never hand it (or its metadata) to a caller use this cache.
- Direct keys: a caller's 32-byte key maps to its ``DirectKey`` (key id derived once), to the
  plan of a direct-key container for a (suite, fixed part): its encoded header and input key,
  and to the input key it unwraps from a cached header. This holds a copy of
  the key for as long as it is cached: at most ``KEY_CACHE_SIZE`` keys, least recently added
  dropped first, none after ``clear()`` (``shardseal.clear_key_cache()``), and none at all
  with ``SHARDSEAL_KEY_CACHE=0``. Python bytes cannot be wiped; a dropped entry is freed like
  the per-call copies the API makes anyway. The cache is module state: it is never pickled.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any, Mapping, Optional, TypeVar, Union

from . import _plan, header as _container
from ..keys import envelope as _envelope, direct as _direct
from ..keys.direct import RawKeyLike
from .. import audit, metrics

HEADER_CACHE_SIZE = 64
# Only small headers are cached (a direct key or a few stanzas and modest metadata).
MAX_CACHED_HEADER_SIZE = 4096
# Distinct header sizes tried per lookup: a buffer's header size is unknown before parsing.
_MAX_SIZES = 4


def _key_cache_size() -> int:
    text = os.environ.get("SHARDSEAL_KEY_CACHE", "").strip()
    try:
        return max(0, int(text)) if text else 16
    except ValueError:
        return 16


KEY_CACHE_SIZE = _key_cache_size()

_lock = threading.Lock()
_headers: dict[bytes, _container.Header] = {}
_header_sizes: list[int] = []  # most recent first
_direct_keys: dict[bytes, _envelope.DirectKey] = {}
_direct_plans: dict[tuple[int, bytes, bytes], _plan.Plan] = {}  # (suite, fixed, key)
# (id(header), id(identity)) -> (header, identity, input key, metrics counter of its unwraps):
# the objects are kept so that their ids cannot be reused while the entry exists.
_unwrapped: dict[tuple[int, int], tuple[_container.Header, _envelope.DirectKey, bytes, Any]] = {}
_EMPTY_FIXED = {suite: _container.encode_fixed(suite, {}) for suite in _container.SUITE_NAMES}


def clear() -> None:
    """Drops every cached key and header."""
    with _lock:
        _headers.clear()
        _header_sizes.clear()
        _direct_keys.clear()
        _direct_plans.clear()
        _unwrapped.clear()


_K = TypeVar("_K")
_V = TypeVar("_V")


def _evict(cache: dict[_K, _V], limit: int) -> None:
    with _lock:
        while len(cache) > limit:
            cache.pop(next(iter(cache)), None)


def parse_header(view: memoryview) -> _container.Header:
    """``_container.parse_header`` through the header cache. Treat the result as read-only.

    Raises:
        As ``_container.parse_header``.
    """
    for size in tuple(_header_sizes):
        header = _headers.get(bytes(view[:size]))
        if header is not None:
            return header
    header = _container.parse_header(view)
    if header.size <= MAX_CACHED_HEADER_SIZE:
        _headers[bytes(view[: header.size])] = header
        _evict(_headers, HEADER_CACHE_SIZE)
        if header.size not in _header_sizes:
            with _lock:
                _header_sizes.insert(0, header.size)
                del _header_sizes[_MAX_SIZES:]
    return header


def fixed_part(suite: int, header_metadata: Mapping[str, Any]) -> bytes:
    """``_container.encode_fixed``, without the JSON encoding when there is no metadata.

    Raises:
        As ``_container.encode_fixed``.
    """
    if not header_metadata and type(header_metadata) is dict and suite in _EMPTY_FIXED:
        return _EMPTY_FIXED[suite]
    return _container.encode_fixed(suite, header_metadata)


def _key_bytes(key: object) -> Optional[bytes]:
    """The key as bytes when it is a valid direct key that may be cached, else None."""
    if type(key) is bytes and len(key) == _direct.KEY_SIZE and KEY_CACHE_SIZE:
        return key
    return None


def direct_key(key: Union[RawKeyLike, _envelope.DirectKey]) -> _envelope.DirectKey:
    """The DirectKey of a caller's key (cached for bytes keys).

    Raises:
        TypeError, ValueError: as ``_direct.check_key``.
    """
    if isinstance(key, _envelope.DirectKey):
        return key
    cacheable = _key_bytes(key)
    if cacheable is None:
        return _envelope.DirectKey(key)
    identity = _direct_keys.get(cacheable)
    if identity is None:
        identity = _envelope.DirectKey(cacheable)
        _direct_keys[cacheable] = identity
        _evict(_direct_keys, KEY_CACHE_SIZE)
    return identity


def direct_plan(key: RawKeyLike, suite: int, fixed: bytes) -> _plan.Plan:
    """The plan (fixed part, whole header, input key) of a direct-key container; cached for
    keys given as bytes.

    Raises:
        TypeError, ValueError: as ``_direct.check_key``.
    """
    cacheable = _key_bytes(key)
    if cacheable is None:
        return _make_direct_plan(_direct.check_key(key), suite, fixed)
    entry = (suite, fixed, cacheable)
    plan = _direct_plans.get(entry)
    if plan is None:
        plan = _make_direct_plan(cacheable, suite, fixed)
        if len(plan.header) <= MAX_CACHED_HEADER_SIZE:
            _direct_plans[entry] = plan
            _evict(_direct_plans, KEY_CACHE_SIZE)
    return plan


def _make_direct_plan(key: bytes, suite: int, fixed: bytes) -> _plan.Plan:
    header = fixed + _container.encode_key_block([_direct.direct_stanza(key)])
    return _plan.Plan(fixed, header, _direct.input_key(key, suite))

def input_key(header: _container.Header, identity: _envelope.DirectKey) -> bytes:
    """``_envelope.unwrap_input_key(header, identity)``, remembered for a cached header and key.

    Unwrapping with a direct key is a pure function of the two. The full path runs whenever
    the audit log records key use, so that every call still logs its ``unwrap`` event; a
    remembered key still counts as an unwrap in ``shardseal.metrics``.

    Raises:
        As ``_envelope.unwrap_input_key``.
    """
    if not KEY_CACHE_SIZE or audit.logger.isEnabledFor(logging.INFO):
        return _envelope.unwrap_input_key(header, identity)
    entry = (id(header), id(identity))
    found = _unwrapped.get(entry)
    if found is not None and found[0] is header and found[1] is identity:
        if metrics.active:
            found[3](1)
        return found[2]
    result = _envelope.unwrap_input_key(header, identity)  # raises: nothing is remembered
    count_unwrap = metrics.counter("shardseal.key.unwraps", (("shardseal.key.type", "direct"),
                                                             ("shardseal.key.id", identity.key_ids[0])))
    _unwrapped[entry] = (header, identity, result, count_unwrap)
    _evict(_unwrapped, KEY_CACHE_SIZE)
    return result
