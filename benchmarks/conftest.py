"""pytest-benchmark suite: ``pytest benchmarks/ --benchmark-only``.

The project's default test run (``pytest`` with testpaths = tests) does not collect this folder.
Optional peers that are not installed (or hidden with SHARDSEAL_BENCH_HIDE) are skipped.
"""

from __future__ import annotations

import pytest

from ._common import NCORES
from .peers import Data


@pytest.fixture(scope="session")
def data_for():
    """data_for(size): one shared random input per size for the whole session."""
    cache: dict = {}

    def get(size: int) -> Data:
        if size not in cache:
            cache[size] = Data(size, NCORES)
        return cache[size]

    yield get
    cache.clear()
