"""Generations: a hybrid logical clock that orders the versions of an object.

A put creates a new generation; the newest committed generation of a key is
the object, so concurrent writers resolve last-writer-wins and a reader reads
all of its bytes from exactly one generation. A delete writes a tombstone
generation, so a node that returns after a long absence cannot resurrect data.

A generation is the string ``WWWWWWWWWWWWWWWWWWW-CCCC-XXXXXXXX``:
19 decimal digits of wall-clock nanoseconds, 4 decimal digits of logical
counter, 8 hex digits of writer id. Fixed widths make string order equal to
clock order, so indexes sort generations as plain text and the string is safe
as part of a file name. The clock never goes backwards within a process: when
the wall clock stalls or steps back, the counter advances instead, and
:meth:`HybridClock.observe` pulls the clock past generations seen elsewhere.
"""

from __future__ import annotations

import os
import re
import threading
import time
from dataclasses import dataclass

GENERATION_RE = re.compile(r"^(\d{19})-(\d{4})-([0-9a-f]{8})$")
_MAX_COUNTER = 9999


@dataclass(frozen=True, order=True)
class Generation:
    """One point of the hybrid logical clock; ordered by (wall_ns, counter, writer)."""

    wall_ns: int
    counter: int
    writer: str

    def __str__(self) -> str:
        return f"{self.wall_ns:019d}-{self.counter:04d}-{self.writer}"

    @classmethod
    def parse(cls, text: str) -> Generation:
        """Parse a generation string.

        Raises:
            ValueError: ``text`` is not a generation string.
        """
        match = GENERATION_RE.match(text) if isinstance(text, str) else None
        if match is None:
            raise ValueError(f"not a generation: {text!r} (expected NNNNNNNNNNNNNNNNNNN-NNNN-xxxxxxxx)")
        return cls(int(match.group(1)), int(match.group(2)), match.group(3))


def is_generation(text: object) -> bool:
    """True when ``text`` is a well-formed generation string."""
    return isinstance(text, str) and GENERATION_RE.match(text) is not None


class HybridClock:
    """A thread-safe hybrid logical clock for one writer."""

    def __init__(self, writer: str | None = None) -> None:
        self.writer = writer or os.urandom(4).hex()
        if not re.fullmatch(r"[0-9a-f]{8}", self.writer):
            raise ValueError(f"writer id must be 8 lowercase hex digits, got {self.writer!r}")
        self._last = Generation(0, 0, self.writer)
        self._lock = threading.Lock()

    def now(self) -> str:
        """A new generation, greater than every one this clock issued or observed."""
        with self._lock:
            wall = time.time_ns()
            last = self._last
            if wall > last.wall_ns:
                nxt = Generation(wall, 0, self.writer)
            elif last.counter < _MAX_COUNTER:
                nxt = Generation(last.wall_ns, last.counter + 1, self.writer)
            else:
                nxt = Generation(last.wall_ns + 1, 0, self.writer)
            self._last = nxt
            return str(nxt)

    def observe(self, generation: str) -> None:
        """Move the clock past a generation seen from another writer."""
        seen = Generation.parse(generation)
        with self._lock:
            if (seen.wall_ns, seen.counter) > (self._last.wall_ns, self._last.counter):
                self._last = Generation(seen.wall_ns, seen.counter, self.writer)
