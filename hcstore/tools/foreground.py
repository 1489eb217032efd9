"""Foreground read latency, sampled while background work (repair, rebalance) runs beside it.

A :class:`PacedReader` reads one object into a reused buffer at a fixed pace on a thread of its
own. Each latency counts from the read's scheduled start, not from when the previous read let it
begin, so a stall counts against every read it delays (open-loop, as a steady client sees it).
"""

from __future__ import annotations

import threading
import time
from types import TracebackType
from typing import Any

import numpy as np


class PacedReader:
    """Reads ``bucket/key`` (``size`` bytes) every ``interval`` seconds until the ``with`` block ends.

    ``latencies_ms`` holds one figure per read; ``errors`` the reads that failed, as text.
    """

    def __init__(self, client: Any, bucket: str, key: str, size: int, *, interval: float = 0.05) -> None:
        self.client = client
        self.bucket = bucket
        self.key = key
        self.interval = interval
        self.latencies_ms: list[float] = []
        self.errors: list[str] = []
        self._buffer = bytearray(size)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="paced-reader", daemon=True)

    def __enter__(self) -> PacedReader:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        due = time.perf_counter()
        while not self._stop.is_set():
            try:
                self.client.get_into(self.bucket, self.key, self._buffer)
            except Exception as exc:  # noqa: BLE001 - a failed read is a figure too, not the end of the probe
                self.errors.append(f"{type(exc).__name__}: {exc}")
            else:
                self.latencies_ms.append((time.perf_counter() - due) * 1000)
            due += self.interval
            self._stop.wait(max(0.0, due - time.perf_counter()))

    def p99(self) -> float:
        """The 99th percentile of the latencies, in ms (NaN before any read finished)."""
        return float(np.percentile(self.latencies_ms, 99)) if self.latencies_ms else float("nan")
