"""A writer process that stops itself at a chosen step of the put protocol, for crash tests.

Usage: ``python writer_proc.py CLUSTER_DIR BUCKET KEY SIZE SEED CHUNK_SIZE POINT``

It puts ``random.Random(SEED).randbytes(SIZE)`` through the real
:class:`~hcstore.client.writer.ObjectWriter` and
:class:`~hcstore.client.upload.FragmentUploads`; only this file's subclasses add
hook points between the protocol's steps. ``POINT`` is one of:

* ``stripes:N``: N stripes sent and acknowledged by every target (mid-stream);
* ``sent``: every stripe acknowledged, no fragment prepared yet;
* ``prepare:N``: fragments 0..N-1 prepared, the others not;
* ``prepared``: every fragment prepared, none committed;
* ``commit:N``: fragments 0..N-1 committed, the others only prepared;
* ``committed``: every fragment committed, older generations not yet retired;
* ``returned``: the put returned;
* ``none``: no stop; the put runs to its end.

At the point it prints ``AT POINT GENERATION NODE...`` (the nodes that the step
reached, in fragment order) and SIGSTOPs itself, so that the parent can SIGKILL
it exactly there. Without a stop it prints ``DONE GENERATION``.
"""

from __future__ import annotations

import os
import random
import signal
import sys
from collections.abc import Sequence
from typing import Any

from hcstore import Client
from hcstore.client.headers import VersionLayout
from hcstore.client.upload import FragmentUpload, FragmentUploads
from hcstore.client.writer import ObjectWriter

POINTS = ("stripes", "sent", "prepare", "prepared", "commit", "committed", "returned", "none")


class Point:
    """A step of the put protocol to stop at: a name and, for ``stripes``, ``prepare``, ``commit``, a count."""

    def __init__(self, text: str) -> None:
        name, _, count = text.partition(":")
        if name not in POINTS or bool(count) != (name in ("stripes", "prepare", "commit")):
            raise SystemExit(
                f"bad point {text!r}: one of stripes:N sent prepare:N prepared commit:N committed returned none"
            )
        self.text = text
        self.name = name
        self.count = int(count) if count else 0
        self.generation = ""

    def reached(self, nodes: Sequence[str] = ()) -> None:
        """Say that the point is reached, then stop this process until the parent kills it."""
        print(f"AT {self.text} {self.generation} {' '.join(nodes)}".rstrip(), flush=True)
        os.kill(os.getpid(), signal.SIGSTOP)
        raise SystemExit(f"resumed at {self.text}: the parent should have killed this process")


class SteppedUploads(FragmentUploads):
    """The real uploads, with a stop between two steps of the protocol."""

    point: Point

    def send_stripe(self, chunks: Any, *, buffer: Any = None) -> None:
        """Send a stripe; at ``stripes:N``, wait until N stripes are acknowledged everywhere and stop."""
        super().send_stripe(chunks, buffer=buffer)
        if self.point.name == "stripes" and self.stripes == self.point.count:
            self.drain(0)
            self.point.reached([t.node for t in self.live()])

    def prepare(self, layout: VersionLayout) -> None:
        """Prepare every fragment, stopping before (``sent``) or after (``prepared``) if asked."""
        if self.point.name == "sent":
            self.point.reached([t.node for t in self.live()])
        super().prepare(layout)
        if self.point.name == "prepared":
            self.point.reached([t.node for t in self.live()])

    def commit(self) -> list[FragmentUpload]:
        """Commit every fragment, stopping after it at ``committed``."""
        committed = super().commit()
        if self.point.name == "committed":
            self.point.reached([t.node for t in committed])
        return committed

    def _phase(self, op: str, targets: list[FragmentUpload], *args: Any, **kwargs: Any) -> None:
        """Send ``op`` to the targets; at ``prepare:N`` or ``commit:N`` only to the first N, then stop."""
        if op == self.point.name and self.point.count:
            first = targets[: self.point.count]
            super()._phase(op, first, *args, **kwargs)
            failed = [t for t in first if t.failed is not None]
            if failed:
                raise SystemExit(f"{op} failed on {[(t.node, str(t.failed)) for t in failed]}")
            self.point.reached([t.node for t in first])
        super()._phase(op, targets, *args, **kwargs)


class SteppedWriter(ObjectWriter):
    """The real object writer, whose uploads stop at ``point``."""

    point: Point

    def _start(self, size: int | None) -> None:
        super()._start(size)
        assert self._uploads is not None
        self._uploads.__class__ = SteppedUploads  # the same object, with the hook points above
        self._uploads.point = self.point
        self.point.generation = self.generation


def main(argv: list[str]) -> int:
    """Put the seeded object, stopping at the point named on the command line."""
    cluster, bucket, key = argv[0], argv[1], argv[2]
    size, seed, chunk_size = int(argv[3]), int(argv[4]), int(argv[5])
    point = Point(argv[6])
    data = random.Random(seed).randbytes(size)
    with Client(cluster, chunk_size=chunk_size, request_timeout=5.0) as client:
        SteppedWriter.point = point
        writer = SteppedWriter(client, bucket, key, size=size)
        with writer:
            writer.write(data)
        result = writer.close()
        if point.name == "returned":
            point.reached(result.fragments)
        print(f"DONE {result.generation}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
