"""A token bucket over bytes per second, for background I/O that must not starve training I/O."""

from __future__ import annotations

import threading
import time


class RateLimiter:
    """A token bucket over bytes per second (0: unlimited); thread-safe."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self._lock = threading.Lock()
        self._next = time.monotonic()

    def take(self, nbytes: int) -> None:
        """Wait until ``nbytes`` may be spent at the configured rate; returns at once when unlimited."""
        if self.rate <= 0:
            return
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next)
            self._next = start + nbytes / self.rate
        if start > now:
            time.sleep(start - now)
