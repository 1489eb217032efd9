"""The paced foreground reader of ``hcstore bench --repair``: open-loop latencies, failures counted."""

from __future__ import annotations

import time

from hcstore.errors import AgentUnavailable
from hcstore.tools.bench import _foreground_impact
from hcstore.tools.foreground import PacedReader


class SlowStore:
    """Answers ``get_into`` after ``delay`` seconds; fails the reads whose number is in ``failing``."""

    def __init__(self, delay: float, failing: frozenset[int] = frozenset()) -> None:
        self.delay = delay
        self.failing = failing
        self.reads = 0

    def get_into(self, bucket: str, key: str, buffer: bytearray) -> int:
        self.reads += 1
        time.sleep(self.delay)
        if self.reads in self.failing:
            raise AgentUnavailable("node n3 did not answer")
        return len(buffer)


def test_a_read_slower_than_the_pace_delays_the_ones_after_it_and_they_count_it():
    with PacedReader(SlowStore(0.1), "bench", "probe", 16, interval=0.02) as reader:
        time.sleep(0.45)
    latencies = reader.latencies_ms
    assert len(latencies) >= 3
    assert latencies[-1] > latencies[0] + 50  # each read waited for the ones before it: the backlog grows
    assert reader.p99() >= latencies[-1] * 0.9


def test_failed_reads_are_kept_apart_and_fail_the_figure():
    with PacedReader(SlowStore(0.005), "bench", "probe", 16, interval=0.01) as idle:
        time.sleep(0.1)
    with PacedReader(SlowStore(0.005, failing=frozenset({2})), "bench", "probe", 16, interval=0.01) as busy:
        time.sleep(0.1)
    assert not idle.errors and busy.errors == ["AgentUnavailable: node n3 did not answer"]
    figure = _foreground_impact(idle, busy, 64e6)
    assert figure.key == "repair_foreground_p99_ms" and "64 MB/s per agent" in figure.name
    assert "1 failed" in figure.name and figure.met is False


def test_p99_within_twice_the_idle_one_is_met():
    with PacedReader(SlowStore(0.005), "bench", "probe", 16, interval=0.01) as idle:
        time.sleep(0.1)
    figure = _foreground_impact(idle, idle, 0)
    assert figure.ratio == 1.0 and figure.met is True and "unlimited" in figure.name
