"""Background copies of checkpoints to a durable root, on one thread, newest first.

Training never waits: at most ``max_waiting`` copies wait to start, and when more are
submitted the oldest waiting one is dropped. A failed copy is recorded in ``errors``
and its partial directory removed; the manifest is written last, so a copy cut short
is never taken for a complete checkpoint.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable

from hcstore.checkpoints.root import Checkpoint, _CheckpointRoot, _copy_verified
from hcstore.checkpoints.writing import PendingCheckpoint, _write_manifest
from hcstore.errors import InvalidRequest

log = logging.getLogger(__name__)


class _DurableCopier:
    """One background thread that copies checkpoints to a durable root, newest first when it falls behind."""

    def __init__(
        self, target: _CheckpointRoot, *, max_waiting: int, checksum: bool, on_done: Callable[[int], None]
    ) -> None:
        self.target = target
        self._max_waiting = max_waiting
        self._checksum = checksum
        self._on_done = on_done
        self._waiting: collections.deque[Checkpoint] = collections.deque()
        self._active: Checkpoint | None = None  # being copied (busy)
        self._running = False  # copying, or applying retention after a copy
        self._closing = False
        self._cond = threading.Condition()
        self.errors: list[tuple[int, BaseException]] = []
        self.dropped: list[int] = []
        self._thread = threading.Thread(target=self._run, name="hcstore-durable-copy", daemon=True)
        self._thread.start()

    def busy(self) -> set[int]:
        """Steps queued or being copied."""
        with self._cond:
            return {c.step for c in self._waiting} | ({self._active.step} if self._active else set())

    def submit(self, checkpoint: Checkpoint) -> None:
        with self._cond:
            if self._closing:
                raise InvalidRequest(f"checkpoint {checkpoint.step}: the checkpoint manager is closed; make a new one")
            if len(self._waiting) >= self._max_waiting:
                dropped = self._waiting.popleft()
                self.dropped.append(dropped.step)
                log.warning(
                    "durable copy of checkpoint %d dropped: %d copies were waiting, keeping the newest",
                    dropped.step,
                    self._max_waiting,
                )
            self._waiting.append(checkpoint)
            self._cond.notify_all()

    def wait(self, timeout: float | None = None) -> None:
        """Block until no copy is queued or running.

        Raises:
            TimeoutError: copies are still in flight after ``timeout`` seconds.
        """
        with self._cond:
            if not self._cond.wait_for(lambda: not self._waiting and not self._running, timeout):
                raise TimeoutError(f"durable copies still in flight after {timeout}s: {sorted(self.busy())}")

    def close(self, timeout: float | None = None) -> None:
        self.wait(timeout)
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._waiting or self._closing)
                if not self._waiting:
                    return
                source = self._active = self._waiting.pop()  # newest first
                self._running = True
            self._copy_or_record(source)
            with self._cond:
                self._active = None  # no longer busy: retention may delete it
            try:
                self._on_done(source.step)
            except Exception:
                log.exception("retention after the durable copy of checkpoint %d failed", source.step)
            with self._cond:
                self._running = False
                self._cond.notify_all()

    def _copy_or_record(self, source: Checkpoint) -> None:
        try:
            self._copy(source)
        except Exception as exc:  # noqa: BLE001 - recorded, and raised by wait()/close()
            log.error("durable copy of checkpoint %d to %s failed: %s", source.step, self.target.url, exc)
            self.errors.append((source.step, exc))
            self._discard(source.step)

    def _copy(self, source: Checkpoint) -> None:
        """Copy one checkpoint, verifying every file against the source manifest; manifest last."""
        started = time.perf_counter()
        self.target.delete(source.step)
        pending = PendingCheckpoint(self.target.fs, self.target.dir(source.step), source.step, checksum=self._checksum)
        for entry in source.files:
            _copy_verified(source, entry, pending.open(entry.name))
        _write_manifest(pending, self.target.sizes(source.step))
        seconds = time.perf_counter() - started
        log.info(
            "checkpoint %d copied to %s (%d bytes, %.1fs)",
            source.step,
            pending.url,
            source.manifest.total_bytes,
            seconds,
        )

    def _discard(self, step: int) -> None:
        try:
            self.target.delete(step)
        except Exception as exc:  # noqa: BLE001 - it stays incomplete; retention removes it later
            log.warning("could not remove the partial durable copy of checkpoint %d: %s", step, exc)
