"""Which agent requests the serving thread answers itself, and in which I/O lane the others run.

*Inline* requests touch no file data: they read the index, the header cache or
counters. A ``read`` (one ``pread``, from the page cache or the disk) runs on the
read pool, which nothing else uses: reads of many clients run on several cores, and
never wait behind a disk write or an fsync; a read for another agent's repair (its
``path`` is ``repair``) runs on a second read pool, at background priority, so that
client reads never queue behind repair. Everything that
hashes, writes, fsyncs, renames or deletes runs on the I/O pool, in a lane that
keeps the order that matters:

* ``write``, ``prepare`` and ``abort`` of one upload share the upload's lane, so
  chunks are written in the order they arrived and ``prepare`` runs after them;
* changes to an object's visible fragments (``store``, ``commit``, ``drop``,
  ``quarantine``, ``retire``, ``tombstone``) share the object's lane, in arrival order;
* ``open`` needs no order: it creates a new file.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable

from hcstore.wire.protocol import OPERATIONS, REPAIR_READ, Request

LaneOf = Callable[[Request], Hashable]


def upload_lane(request: Request) -> Hashable:
    """The lane of the upload a request continues."""
    return ("upload", request.fields["upload"])


def object_lane(request: Request) -> Hashable:
    """The lane of the object a request names."""
    return ("object", request.fields["bucket"], request.fields["key"])


def tombstone_lane(request: Request) -> Hashable:
    """The lane of the object whose tombstone header a request carries (not validated yet: any values)."""
    header = request.fields["header"]
    return ("object", str(header.get("bucket")), str(header.get("key")))


def unordered(request: Request) -> Hashable:
    """No lane: the job may run beside any other."""
    return None


INLINE = frozenset({"ping", "node_stats", "maintain", "locate", "locate_many", "list", "buckets"})
READS = frozenset({"read"})  # run on the read pool, each in no lane
BACKGROUND_READS = frozenset({REPAIR_READ})  # read paths run on the background read pool instead
LANES: dict[str, LaneOf] = {
    "read": unordered,
    "open": unordered,
    "write": upload_lane,
    "prepare": upload_lane,
    "abort": upload_lane,
    "store": object_lane,
    "commit": object_lane,
    "drop": object_lane,
    "quarantine": object_lane,
    "retire": object_lane,
    "tombstone": tombstone_lane,
}

_unrouted = set(OPERATIONS) - INLINE - set(LANES)
if _unrouted or INLINE & set(LANES):
    raise RuntimeError(f"every operation needs exactly one route; check {sorted(_unrouted or INLINE & set(LANES))}")
