"""Argument checks shared by the public functions: buffers, thread counts."""

from __future__ import annotations

import numpy as np

from . import _backend

MAX_THREADS = 1024


def readable(obj, name: str) -> memoryview:
    """A flat byte view of any buffer; a non-contiguous one is copied into C order.

    Raises:
        TypeError: obj does not support the buffer protocol (str included).
    """
    if isinstance(obj, str):
        raise TypeError(f"{name} must be a bytes-like object, not str (encode it first)")
    try:
        view = memoryview(obj)
    except TypeError:
        raise TypeError(f"{name} must be a bytes-like object, not {type(obj).__name__}") from None
    if not view.c_contiguous:
        view = memoryview(view.tobytes())
    return view.cast("B") if view.ndim != 1 or view.format != "B" else view


def writable(obj, name: str) -> memoryview:
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
    if source.nbytes and out.nbytes and np.may_share_memory(
        np.frombuffer(source, np.uint8), np.frombuffer(out, np.uint8)
    ):
        raise ValueError("out must not overlap the input buffer")


def require_room(out: memoryview, needed: int) -> None:
    """Raises ValueError when out is smaller than needed bytes."""
    if out.nbytes < needed:
        raise ValueError(f"output buffer too small: need {needed} bytes, got {out.nbytes}")


def thread_count(threads) -> int:
    """Resolves the public ``threads`` argument: None means every available CPU.

    Raises:
        TypeError: threads is not None or an int.
        ValueError: threads is out of range.
    """
    if threads is None:
        return _backend.impl.default_threads()
    if isinstance(threads, bool) or not isinstance(threads, int):
        raise TypeError(f"threads must be None or an int, not {type(threads).__name__}")
    if not 1 <= threads <= MAX_THREADS:
        raise ValueError(f"threads must be between 1 and {MAX_THREADS}, got {threads}")
    return threads
