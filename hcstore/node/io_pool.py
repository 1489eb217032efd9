"""A bounded pool of I/O threads that run jobs in ordered lanes (see :mod:`hcstore.node.lanes`).

The agent's serving thread submits disk work here and goes back to its socket
at once; a full pool refuses instead of queueing without limit. The agent sizes it
from its config (``io_workers``, ``io_queue``, ``io_queue_bytes``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Hashable
from dataclasses import dataclass

from hcstore.node.lanes import Lanes
from hcstore.node.priority import run_as_background

log = logging.getLogger(__name__)


def _nothing() -> None:
    """Cancelling a job that needs no clean-up."""


@dataclass(frozen=True)
class Job:
    """One piece of work: ``run`` on a pool thread, or ``cancel`` if the pool closes before it starts."""

    run: Callable[[], object]
    cancel: Callable[[], None] = _nothing
    cost: int = 0  # payload bytes the job holds until it finishes


class IoPool:
    """Threads running :class:`Job` s: one at a time and in order within a lane, lanes in parallel.

    Args:
        workers: how many threads.
        max_jobs: jobs admitted and not finished, at most (see :class:`~hcstore.node.lanes.Lanes`).
        max_bytes: payload bytes those jobs may hold, at most.
        name: prefix of the threads' names.
        nice: how far below the process's CPU priority the threads run (0: the same; see
            :mod:`hcstore.node.priority`).
    """

    def __init__(self, workers: int, max_jobs: int, max_bytes: int, *, name: str = "io", nice: int = 0) -> None:
        if workers < 1:
            raise ValueError(f"an I/O pool needs at least one thread, got {workers}")
        self._lanes: Lanes[Job] = Lanes(max_jobs, max_bytes)
        self._changed = threading.Condition()
        self._closing = False
        self._nice = nice
        self._threads = [threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True) for i in range(workers)]
        for thread in self._threads:
            thread.start()

    def submit(self, lane: Hashable | None, job: Job) -> bool:
        """Queue ``job`` at the end of ``lane`` (``None``: no order); False when the pool is full or closing."""
        with self._changed:
            if self._closing or not self._lanes.admit(lane, job, job.cost):
                return False
            self._changed.notify()
            return True

    def load(self) -> dict[str, int]:
        """Jobs admitted and not finished, how many of them run now, and the payload bytes they hold."""
        with self._changed:
            return {"jobs": self._lanes.jobs, "running": self._lanes.running, "bytes": self._lanes.bytes}

    def _work(self) -> None:
        run_as_background(self._nice)
        lane: Hashable | None = None
        finished = False
        while True:
            with self._changed:
                if finished:
                    self._lanes.finish(lane)
                taken = self._lanes.take()  # straight on to the next job: no hand-off while busy
                while taken is None:
                    if self._closing:
                        return
                    self._changed.wait()
                    taken = self._lanes.take()
                if self._lanes.runnable:
                    self._changed.notify()  # more work than this thread: wake one more
            lane, job = taken
            try:
                job.run()
            except Exception:  # jobs report their own errors; this keeps the thread alive if one cannot
                log.exception("I/O job failed")
            finished = True

    def close(self) -> None:
        """Refuse new jobs, cancel those not started, and wait for the running ones to finish."""
        with self._changed:
            self._closing = True
            cancelled = self._lanes.cancel_queued()
            self._changed.notify_all()
        for job in cancelled:
            try:
                job.cancel()
            except Exception:
                log.exception("cancelling an I/O job failed")
        for thread in self._threads:
            thread.join()
