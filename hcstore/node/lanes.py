"""Ordered lanes over a bounded set of jobs: the scheduling half of the agent's I/O pool, without threads.

A job belongs to a *lane*, any hashable key (an upload id, an object), or to no
lane (``None``) when its order does not matter. Jobs of one lane run one at a
time, in the order they were admitted; jobs of different lanes may run at the
same time. At most ``max_jobs`` jobs, carrying at most ``max_bytes`` payload
bytes, are admitted and unfinished at once: beyond that :meth:`Lanes.admit`
refuses, so the caller answers "busy" instead of queueing without limit (one job
larger than ``max_bytes`` is admitted when nothing else is).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable
from typing import Generic, TypeVar

J = TypeVar("J")


class _Unordered:
    """The private lane of one job that needs no order (never equal to another lane)."""

    __slots__ = ()


class Lanes(Generic[J]):
    """Admission, order and bounds of jobs in lanes; the caller runs them (see :class:`IoPool`)."""

    def __init__(self, max_jobs: int, max_bytes: int) -> None:
        if max_jobs < 1 or max_bytes < 1:
            raise ValueError(f"lanes need max_jobs >= 1 and max_bytes >= 1, got {max_jobs} and {max_bytes}")
        self.max_jobs = max_jobs
        self.max_bytes = max_bytes
        self.jobs = 0  # admitted and not finished (queued or running)
        self.bytes = 0  # their payload bytes
        self._queued: dict[Hashable, deque[tuple[J, int]]] = {}  # lane -> jobs not started, oldest first
        self._running: dict[Hashable, int] = {}  # lane -> cost of its running job
        self._runnable: deque[Hashable] = deque()  # lanes with a queued job and none running

    def admit(self, lane: Hashable | None, job: J, cost: int = 0) -> bool:
        """Queue ``job`` at the end of ``lane``; False (nothing queued) when the bounds are reached."""
        if self.jobs >= self.max_jobs or (self.bytes and self.bytes + cost > self.max_bytes):
            return False
        key: Hashable = _Unordered() if lane is None else lane
        queue = self._queued.get(key)
        if queue is None:
            queue = self._queued[key] = deque()
            if key not in self._running:
                self._runnable.append(key)
        queue.append((job, cost))
        self.jobs += 1
        self.bytes += cost
        return True

    def take(self) -> tuple[Hashable, J] | None:
        """The next job that may start, and its lane key to pass to :meth:`finish`; None when none may."""
        if not self._runnable:
            return None
        key = self._runnable.popleft()
        queue = self._queued[key]
        job, cost = queue.popleft()
        if not queue:
            del self._queued[key]
        self._running[key] = cost
        return key, job

    def finish(self, key: Hashable) -> None:
        """The running job of lane ``key`` is done: free its room and let the lane's next job start."""
        cost = self._running.pop(key)
        self.jobs -= 1
        self.bytes -= cost
        if key in self._queued:
            self._runnable.append(key)

    def cancel_queued(self) -> list[J]:
        """Remove every job not yet started (lane order kept within each lane) and return them."""
        cancelled = [job for queue in self._queued.values() for job, _ in queue]
        for queue in self._queued.values():
            for _, cost in queue:
                self.jobs -= 1
                self.bytes -= cost
        self._queued.clear()
        self._runnable.clear()
        return cancelled

    @property
    def runnable(self) -> int:
        """How many lanes have a job that may start now."""
        return len(self._runnable)

    @property
    def running(self) -> int:
        """How many jobs have been taken and not finished."""
        return len(self._running)
