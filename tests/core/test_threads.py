"""The native thread pool under concurrency and fork (DataLoader workers fork)."""

from __future__ import annotations

import multiprocessing
import os
import threading

import pytest

import shardseal

DATA = os.urandom(6 * 2**20 + 17)
KEY = bytes(range(32))


def _round_trip_in_child(queue) -> None:
    blob = shardseal.encrypt(DATA, KEY, threads=2)
    ok = shardseal.decrypt(blob, KEY, threads=2) == DATA
    # Counted before queue.put, which starts a feeder thread of its own.
    queue.put((ok, len(os.listdir("/proc/self/task"))))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_pool_works_in_a_forked_child_after_use_in_the_parent(backend):
    assert shardseal.decrypt(shardseal.encrypt(DATA, KEY, threads=2), KEY) == DATA  # pool started
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    children = [context.Process(target=_round_trip_in_child, args=(queue,)) for _ in range(2)]
    for child in children:
        child.start()
    results = [queue.get(timeout=60) for _ in children]
    for child in children:
        child.join(timeout=60)
        assert child.exitcode == 0
    assert [ok for ok, _ in results] == [True, True]
    if shardseal.backend == "native" and os.path.isdir("/proc/self/task"):
        # The child started pool workers of its own rather than queueing work for the
        # parent's threads, which do not exist after fork().
        assert all(n_threads >= 2 for _, n_threads in results)


def test_many_python_threads_share_the_pool(backend):
    blobs = [shardseal.encrypt(DATA[: 2**20 * (i + 1)], KEY) for i in range(4)]
    errors = []

    def worker(i: int) -> None:
        try:
            for _ in range(3):
                assert shardseal.decrypt(blobs[i], KEY, threads=2) == DATA[: 2**20 * (i + 1)]
        except Exception as exc:  # collected: an assert in a thread would be lost
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_a_failure_on_one_thread_does_not_disturb_the_others(backend):
    blob = bytearray(shardseal.encrypt(DATA, KEY))
    blob[-100] ^= 1
    good = shardseal.encrypt(DATA, KEY)
    for _ in range(3):
        with pytest.raises(shardseal.AuthenticationError):
            shardseal.decrypt(bytes(blob), KEY, threads=4)
        assert shardseal.decrypt(good, KEY, threads=4) == DATA
