"""pytest-benchmark suite: ``pytest benchmarks/ --benchmark-only``.

The project's default test run (``pytest`` with testpaths = tests) does not collect this folder.
Optional peers that are not installed (or hidden with SHARDSEAL_BENCH_HIDE) are skipped.

Without pytest-benchmark installed, a stand-in ``benchmark`` fixture runs each test's target once
(like ``--benchmark-disable``), so that the suite is still a verified smoke test of every peer:
tests/test_benchmark_entry_points.py runs it that way in the default test run.
"""

from __future__ import annotations

import importlib.util

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


if importlib.util.find_spec("pytest_benchmark") is None:

    class _RunOnce:
        """The subset of pytest-benchmark's fixture the suite uses; runs the target once, untimed."""

        def __init__(self) -> None:
            self.group = None
            self.extra_info: dict = {}
            self.stats = None

        def pedantic(self, target, setup=None, rounds=1, warmup_rounds=0):  # noqa: ARG002 - same signature
            if setup is not None:
                setup()
            return target()

    @pytest.fixture
    def benchmark():
        """Stand-in for pytest-benchmark's fixture (not installed): one verified run per test."""
        return _RunOnce()
