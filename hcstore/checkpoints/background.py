"""Persisting one checkpoint at a time on a background thread, with its error kept for the caller.

:meth:`~hcstore.checkpoints.manager.CheckpointManager.save_async` copies the state and hands
the rest of the save to :class:`_BackgroundSaver`. At most one save is in flight: the next
one first :meth:`~_BackgroundSaver.settle`\\ s the previous, which waits for it and raises
its error, so memory stays bounded (one snapshot) and a failure is never lost. The job is
the manager's ordinary save, so a failed or killed background save leaves an incomplete
directory (no manifest), never a checkpoint that looks complete.
"""

from __future__ import annotations

import concurrent.futures
import logging
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

from hcstore.checkpoints.errors import BackgroundSaveFailed
from hcstore.checkpoints.root import Checkpoint

log = logging.getLogger(__name__)


class _BackgroundSaver:
    """One thread that runs one checkpoint save at a time; the caller settles each before the next."""

    def __init__(self, where: str) -> None:
        self._where = where  # the root, for messages
        self._executor: ThreadPoolExecutor | None = None
        self._pending: tuple[int, Future[Checkpoint]] | None = None

    @property
    def in_flight(self) -> int | None:
        """The step being saved (or saved but not yet settled), or None."""
        return self._pending[0] if self._pending else None

    def submit(self, step: int, job: Callable[[], Checkpoint]) -> Future[Checkpoint]:
        """Run ``job`` (the save of ``step``) on the background thread; returns its future.

        Raises:
            RuntimeError: the previous save was not settled (a bug of the caller).
        """
        if self._pending is not None:
            raise RuntimeError(f"checkpoint {step}: the background save of {self._pending[0]} was not settled")
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hcstore-checkpoint-save")
        future = self._executor.submit(self._run, step, job)
        self._pending = (step, future)
        return future

    def settle(self, timeout: float | None = None) -> None:
        """Wait for the save in flight, if any; raise its error (once).

        Raises:
            BackgroundSaveFailed: the save failed (the original error is its ``__cause__``).
            TimeoutError: it is still running after ``timeout`` seconds (it stays in flight).
        """
        if self._pending is None:
            return
        step, future = self._pending
        done, _ = concurrent.futures.wait([future], timeout)
        if not done:
            raise TimeoutError(f"the background save of checkpoint {step} is still running after {timeout}s")
        self._pending = None
        future.result()

    def close(self, timeout: float | None = None) -> None:
        """Settle the save in flight and stop the thread (raises as :meth:`settle`)."""
        try:
            self.settle(timeout)
        finally:
            if self._executor is not None and self._pending is None:
                self._executor.shutdown(wait=True)
                self._executor = None

    def _run(self, step: int, job: Callable[[], Checkpoint]) -> Checkpoint:
        try:
            return job()
        except Exception as exc:
            log.error("background save of checkpoint %d to %s failed: %s", step, self._where, exc)
            raise BackgroundSaveFailed(
                f"background save of checkpoint {step} to {self._where} failed, nothing of it is visible: "
                f"{type(exc).__name__}: {exc}",
                step,
            ) from exc
