"""Tensor helpers shared by the torch and safetensors tests (import after importorskip)."""

from __future__ import annotations

import io

import torch


def random_tensor(dtype, shape, seed=0):
    """A tensor of dtype with random bytes (0/1 for bool), for any dtype, numpy-less ones too."""
    gen = torch.Generator().manual_seed(seed)
    count = 1
    for n in shape:
        count *= n
    if dtype == torch.bool:
        return torch.randint(0, 2, shape, generator=gen).bool()
    raw = torch.randint(0, 256, (count * dtype.itemsize,), dtype=torch.uint8, generator=gen)
    return raw.view(dtype).reshape(shape)


def same_bytes(a, b) -> bool:
    return (a.dtype == b.dtype and a.shape == b.shape
            and torch.equal(a.contiguous().reshape(-1).view(torch.uint8),
                            b.contiguous().reshape(-1).view(torch.uint8)))


class ReadOnlyPipe(io.RawIOBase):
    """A non-seekable binary source over bytes, like a pipe."""

    def __init__(self, data):
        self._source = io.BytesIO(data)

    def readable(self):
        return True

    def readinto(self, b):
        return self._source.readinto(b)
