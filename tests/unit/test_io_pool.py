"""The I/O pool on real threads: lane order, refusal when full, a clean close."""

from __future__ import annotations

import threading

import pytest

from hcstore.node.io_pool import IoPool, Job

WAIT = 10.0


@pytest.fixture
def make_pool():
    pools: list[IoPool] = []

    def factory(workers: int, max_jobs: int, max_bytes: int = 1 << 30) -> IoPool:
        pool = IoPool(workers, max_jobs, max_bytes, name="test-io")
        pools.append(pool)
        return pool

    yield factory
    for pool in pools:
        pool.close()


def blocked_job(release: threading.Event, started: threading.Event | None = None, **extra) -> Job:
    """A job that runs until ``release`` is set."""

    def run() -> None:
        if started is not None:
            started.set()
        assert release.wait(WAIT)

    return Job(run, **extra)


def test_jobs_of_one_lane_run_in_order_on_many_threads(make_pool):
    pool = make_pool(workers=4, max_jobs=1000)
    seen: dict[str, list[int]] = {lane: [] for lane in "abcd"}
    done = threading.Semaphore(0)

    def record(lane: str, n: int) -> Job:
        def run() -> None:
            seen[lane].append(n)
            done.release()

        return Job(run)

    for n in range(100):
        for lane in seen:
            assert pool.submit(lane, record(lane, n))
    for _ in range(400):
        assert done.acquire(timeout=WAIT)
    assert all(order == list(range(100)) for order in seen.values())


def test_a_full_pool_refuses_until_room_frees(make_pool):
    pool = make_pool(workers=1, max_jobs=2)
    release, started = threading.Event(), threading.Event()
    assert pool.submit("a", blocked_job(release, started))
    assert started.wait(WAIT)
    finished = threading.Event()
    assert pool.submit("b", Job(finished.set))
    assert not pool.submit("c", Job(lambda: None))
    assert pool.load() == {"jobs": 2, "running": 1, "bytes": 0}
    release.set()
    assert finished.wait(WAIT)
    assert pool.submit("c", Job(lambda: None))


def test_other_lanes_proceed_while_one_job_blocks(make_pool):
    pool = make_pool(workers=2, max_jobs=10)
    release, started = threading.Event(), threading.Event()
    pool.submit("slow", blocked_job(release, started))
    assert started.wait(WAIT)
    other = threading.Event()
    pool.submit("fast", Job(other.set))
    assert other.wait(WAIT)
    release.set()


def test_close_cancels_queued_jobs_and_waits_for_running_ones(make_pool):
    pool = make_pool(workers=1, max_jobs=10)
    release, started = threading.Event(), threading.Event()
    outcome: list[str] = []
    pool.submit("a", blocked_job(release, started, cancel=lambda: outcome.append("running job cancelled")))
    assert started.wait(WAIT)
    pool.submit("a", Job(lambda: outcome.append("ran"), cancel=lambda: outcome.append("cancelled")))
    threading.Timer(0.05, release.set).start()
    pool.close()
    assert outcome == ["cancelled"]
    assert not pool.submit("a", Job(lambda: None))


def test_a_failing_job_does_not_stop_its_thread(make_pool):
    pool = make_pool(workers=1, max_jobs=10)

    def fail() -> None:
        raise RuntimeError("boom")

    pool.submit("a", Job(fail))
    after = threading.Event()
    pool.submit("a", Job(after.set))
    assert after.wait(WAIT)


def test_a_pool_needs_a_thread():
    with pytest.raises(ValueError, match="at least one thread"):
        IoPool(0, 1, 1)
