"""A bounded pool of I/O threads that run jobs in ordered lanes (see :mod:`hcstore.node.lanes`).

The agent's serving thread submits disk work here and goes back to its socket
at once; a full pool refuses instead of queueing without limit. Sizes come from
``HCSTORE_IO_WORKERS``, ``HCSTORE_IO_QUEUE`` (jobs) and ``HCSTORE_IO_QUEUE_BYTES``
(payload bytes held by queued and running jobs), or the defaults below.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Hashable
from dataclasses import dataclass

from hcstore.errors import InvalidRequest
from hcstore.node.lanes import Lanes

log = logging.getLogger(__name__)


def _nothing() -> None:
    """Cancelling a job that needs no clean-up."""


@dataclass(frozen=True)
class Job:
    """One piece of work: ``run`` on a pool thread, or ``cancel`` if the pool closes before it starts."""

    run: Callable[[], object]
    cancel: Callable[[], None] = _nothing
    cost: int = 0            # payload bytes the job holds until it finishes


@dataclass(frozen=True)
class PoolLimits:
    """How many I/O threads, and how much admitted work, a pool allows."""

    workers: int = 4
    max_jobs: int = 4096
    max_bytes: int = 1 << 30     # chunks received and not yet written: the agent's memory bound for writes

    def __post_init__(self) -> None:
        for name in ("workers", "max_jobs", "max_bytes"):
            if getattr(self, name) < 1:
                raise InvalidRequest(f"I/O pool setting {name}={getattr(self, name)} must be >= 1")

    @classmethod
    def from_env(cls) -> PoolLimits:
        """The defaults, overridden by ``HCSTORE_IO_WORKERS``, ``HCSTORE_IO_QUEUE``, ``HCSTORE_IO_QUEUE_BYTES``."""
        values = {}
        for name, variable in (("workers", "HCSTORE_IO_WORKERS"), ("max_jobs", "HCSTORE_IO_QUEUE"),
                               ("max_bytes", "HCSTORE_IO_QUEUE_BYTES")):
            raw = os.environ.get(variable)
            if raw is not None:
                try:
                    values[name] = int(raw, 0)
                except ValueError:
                    raise InvalidRequest(f"setting {variable}={raw!r} is not a whole number") from None
        return cls(**values)


class IoPool:
    """Threads running :class:`Job` s: one at a time and in order within a lane, lanes in parallel."""

    def __init__(self, limits: PoolLimits, *, name: str = "io") -> None:
        self.limits = limits
        self._lanes: Lanes[Job] = Lanes(limits.max_jobs, limits.max_bytes)
        self._changed = threading.Condition()
        self._closing = False
        self._threads = [threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True)
                         for i in range(limits.workers)]
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
        lane: Hashable | None = None
        finished = False
        while True:
            with self._changed:
                if finished:
                    self._lanes.finish(lane)
                taken = self._lanes.take()           # straight on to the next job: no hand-off while busy
                while taken is None:
                    if self._closing:
                        return
                    self._changed.wait()
                    taken = self._lanes.take()
                if self._lanes.runnable:
                    self._changed.notify()           # more work than this thread: wake one more
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
