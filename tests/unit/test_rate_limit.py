"""The repair rate limiter, on a fake clock: bytes are spent at the configured rate, idle time is not
saved up for a burst, 0 means unlimited, and threads sharing one limiter get distinct time slots."""

from __future__ import annotations

import threading

import pytest

from hcstore.node import rate_limit
from hcstore.node.rate_limit import RateLimiter


class FakeTime:
    """Stands in for the ``time`` module: ``sleep`` advances ``monotonic`` (unless frozen) and is recorded."""

    def __init__(self, *, frozen: bool = False) -> None:
        self.now = 1000.0
        self.frozen = frozen
        self.sleeps: list[float] = []
        self._lock = threading.Lock()

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.sleeps.append(seconds)
            if not self.frozen:
                self.now += seconds


@pytest.fixture
def clock(monkeypatch) -> FakeTime:
    fake = FakeTime()
    monkeypatch.setattr(rate_limit, "time", fake)
    return fake


def test_bytes_are_spent_at_the_rate(clock):
    limiter = RateLimiter(1000.0)
    start = clock.now
    for _ in range(10):
        limiter.take(500)
    # The first take goes at once; each later one waits for the bytes before it: 9 * 500 bytes at 1000 B/s.
    assert clock.now - start == pytest.approx(4.5)
    assert clock.sleeps == pytest.approx([0.5] * 9)


def test_a_large_take_delays_the_next_one(clock):
    limiter = RateLimiter(1 << 20)
    limiter.take(4 << 20)
    assert clock.sleeps == []
    limiter.take(1)
    assert clock.sleeps == pytest.approx([4.0])


def test_idle_time_is_not_saved_up_for_a_burst(clock):
    limiter = RateLimiter(1000.0)
    limiter.take(1000)
    clock.now += 60.0  # a minute without repair work
    limiter.take(1000)
    limiter.take(1000)
    assert clock.sleeps == pytest.approx([1.0])


def test_rate_zero_is_unlimited(clock):
    limiter = RateLimiter(0)
    for _ in range(100):
        limiter.take(1 << 30)
    assert clock.sleeps == [] and clock.now == 1000.0


def test_threads_sharing_a_limiter_get_distinct_slots(monkeypatch):
    fake = FakeTime(frozen=True)  # nobody's sleep moves the clock: each wait shows the slot it was given
    monkeypatch.setattr(rate_limit, "time", fake)
    limiter = RateLimiter(100.0)
    threads = [threading.Thread(target=limiter.take, args=(100,)) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # One thread goes at once, the others wait 1, 2, ... 7 seconds: no two share a slot.
    assert sorted(fake.sleeps) == pytest.approx([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0])
