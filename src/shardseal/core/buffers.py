"""Argument checks shared by the public functions: buffers, thread counts."""

from __future__ import annotations

import sys
from typing import Any, Optional, Union

import numpy as np

from . import backend as _backend

if sys.version_info >= (3, 12):
    from collections.abc import Buffer as Buffer
else:
    from typing_extensions import Buffer as Buffer

# Any object with the buffer protocol (bytes, bytearray, memoryview, numpy arrays, mmap), as
# the public functions accept for data, containers and output buffers; str is not one. numpy's
# stubs declare ndarray a Buffer only for Python 3.12+, hence the explicit ndarray.
BytesLike = Union[Buffer, "np.ndarray[Any, Any]"]

MAX_THREADS = 1024
# The engine splits work into ranges of at least ~1 MiB: smaller inputs run on one thread.
INLINE_BYTES = 1 << 20


def readable(obj: Any, name: str) -> memoryview:
    """A flat byte view of any buffer; a non-contiguous one is copied into C order.

    Raises:
        TypeError: obj does not support the buffer protocol (str included).
    """
    if type(obj) is bytes:
        return memoryview(obj)  # the common case: already flat, contiguous bytes
    if isinstance(obj, str):
        raise TypeError(f"{name} must be a bytes-like object, not str (encode it first)")
    try:
        view = memoryview(obj)
    except TypeError:
        raise TypeError(f"{name} must be a bytes-like object, not {type(obj).__name__}") from None
    if not view.c_contiguous:
        view = memoryview(view.tobytes())
    return view.cast("B") if view.ndim != 1 or view.format != "B" else view


def readable_bytes(obj: Any, name: str) -> Union[bytes, memoryview]:
    """As readable, but a bytes object comes back as it is: the native module reads bytes
    faster than a memoryview of them. len() of the result is its size in bytes.

    Raises:
        TypeError: as readable.
    """
    return obj if type(obj) is bytes else readable(obj, name)


def writable(obj: Any, name: str) -> memoryview:
    """A flat byte view of a writable C-contiguous buffer.

    Raises:
        TypeError: obj is not a buffer, is read-only or is not C-contiguous.
    """
    try:
        view = memoryview(obj)
    except TypeError:
        raise TypeError(f"{name} must be a writable buffer, not {type(obj).__name__}") from None
    if view.readonly:
        raise TypeError(f"{name} must be a writable buffer, but this {type(obj).__name__} is read-only")
    if not view.c_contiguous:
        raise TypeError(f"{name} must be a C-contiguous buffer")
    return view.cast("B") if view.ndim != 1 or view.format != "B" else view


def check_no_overlap(source: memoryview, out: memoryview) -> None:
    """Refuses an output buffer that shares memory with the input.

    Raises:
        ValueError: the two buffers overlap.
    """
    if type(source.obj) is bytes:
        return  # immutable memory: no writable buffer can share it
    if source.nbytes and out.nbytes and np.may_share_memory(
        np.frombuffer(source, np.uint8), np.frombuffer(out, np.uint8)
    ):
        raise ValueError("out must not overlap the input buffer")


def require_room(out: memoryview, needed: int) -> None:
    """Raises ValueError when out is smaller than needed bytes."""
    if out.nbytes < needed:
        raise ValueError(f"output buffer too small: need {needed} bytes, got {out.nbytes}")


def thread_count(threads: Optional[int], nbytes: Optional[int] = None) -> int:
    """Resolves the public ``threads`` argument: None means every available CPU.

    Given the input size nbytes, None resolves to 1 below INLINE_BYTES: the engine runs such
    inputs inline on the calling thread whatever the count, so asking the OS is wasted time.

    Raises:
        TypeError: threads is not None or an int.
        ValueError: threads is out of range.
    """
    if threads is None:
        if nbytes is not None and nbytes < INLINE_BYTES:
            return 1
        count: int = _backend.impl.default_threads()
        return count
    if isinstance(threads, bool) or not isinstance(threads, int):
        raise TypeError(f"threads must be None or an int, not {type(threads).__name__}")
    if not 1 <= threads <= MAX_THREADS:
        raise ValueError(f"threads must be between 1 and {MAX_THREADS}, got {threads}")
    return threads
