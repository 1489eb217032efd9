"""Background priority: a thread lowers its own CPU priority, never its process's or other threads'."""

from __future__ import annotations

import os
import threading

from hcstore.node.io_pool import IoPool, Job
from hcstore.node.priority import LOWEST, run_as_background


def nice_of_this_thread() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


def in_thread(fn) -> list:
    seen: list = []
    thread = threading.Thread(target=lambda: seen.append(fn()))
    thread.start()
    thread.join()
    return seen


def test_a_background_thread_runs_lower_and_leaves_the_others_alone():
    base = os.getpriority(os.PRIO_PROCESS, os.getpid())

    def lowered() -> tuple[int, int]:
        run_as_background(5)
        first = nice_of_this_thread()
        run_as_background(5)  # again: not 10 below, the same
        return first, nice_of_this_thread()

    assert in_thread(lowered) == [(min(LOWEST, base + 5), min(LOWEST, base + 5))]
    assert nice_of_this_thread() == base
    assert os.getpriority(os.PRIO_PROCESS, os.getpid()) == base


def test_zero_changes_nothing():
    base = nice_of_this_thread()

    def unchanged() -> int:
        run_as_background(0)
        return nice_of_this_thread()

    assert in_thread(unchanged) == [base]


def test_an_io_pool_runs_its_jobs_at_its_priority():
    base = os.getpriority(os.PRIO_PROCESS, os.getpid())
    seen: list[int] = []
    done = threading.Event()
    for nice, name in ((7, "background"), (0, "foreground")):
        pool = IoPool(2, 10, 1 << 20, name=name, nice=nice)
        try:
            assert pool.submit(None, Job(lambda: (seen.append(nice_of_this_thread()), done.set())))
            assert done.wait(10)
            done.clear()
        finally:
            pool.close()
    assert seen == [min(LOWEST, base + 7), base]
