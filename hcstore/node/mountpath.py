"""A mountpath: one directory standing for one SSD.

A mountpath is known by the id written in its id file, never by its path or
device name, so a disk that comes back mounted elsewhere is still recognised.
Layout inside a mountpath::

    .hcstore-mountpath      id file: {"id": "<32 hex>", "format": 1} (a copy in frags/)
    index.sqlite            the fragment index (rebuildable from the fragment files)
    tmp/<upload>.part       fragments being written (discarded on restart)
    frags/<hh>/<h>.<generation>.<index>.<state>   fragment files; h = hash of bucket/key,
                            state = prep (prepared), frag (committed) or tomb (tombstone)

Capacity comes from psutil, or from ``capacity_bytes`` when the directory
stands for a smaller disk than the file system it lives on (tests, quotas).
A write that would cross ``high_watermark`` of the capacity is refused before
a byte is written; bytes promised to open uploads count as used.
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

import psutil

from hcstore.errors import InvalidRequest
from hcstore.files import fsync_directory, write_bytes_atomic
from hcstore.node.index import FragmentIndex

log = logging.getLogger(__name__)
ID_FILE = ".hcstore-mountpath"
MOUNTPATH_FORMAT = 1


@dataclass(frozen=True)
class Usage:
    """Capacity and use of a mountpath, in bytes."""

    capacity: int
    used: int
    limit: int  # used may not grow past this (capacity * high watermark)

    @property
    def free(self) -> int:
        """Bytes that may still be written before the limit (0 when it is reached or crossed)."""
        return max(0, self.limit - self.used)


def _read_id(id_file: Path) -> str | None:
    """The id in one id file; None when it is missing, empty or torn (a crash can leave any of these)."""
    try:
        data = json.loads(id_file.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("id"), str):
        return None
    if data.get("format") != MOUNTPATH_FORMAT:
        raise InvalidRequest(
            f"{id_file}: mountpath id file of format {data.get('format')!r}; this version "
            f"reads format {MOUNTPATH_FORMAT}: upgrade hcstore before using this disk"
        )
    return str(data["id"])


def read_or_create_id(path: Path) -> str:
    """The id of the mountpath at ``path``, creating the id file on first use.

    The id is kept twice (``.hcstore-mountpath`` and ``frags/.hcstore-mountpath``), each written
    crash-safely, and a lost or torn copy is restored from the other. A mountpath whose copies
    are both lost but which holds fragments is kept as it is (its fragments are indexed again
    from their trailers) under a new id, and the event is logged: it is never taken for a new,
    empty disk.

    Raises:
        InvalidRequest: the id file is of a format this version does not read.
    """
    copies = (path / ID_FILE, path / "frags" / ID_FILE)
    found = [_read_id(copy) for copy in copies]
    mountpath_id = next((found_id for found_id in found if found_id), None)
    if mountpath_id is None:
        mountpath_id = uuid.uuid4().hex
        held = sum(1 for _ in (path / "frags").glob("*/*.*")) if (path / "frags").is_dir() else 0
        if held:
            log.warning(
                "mountpath %s lost its id file but holds %d fragment files: keeping them under the new id %s",
                path,
                held,
                mountpath_id,
            )
    elif None in found:
        log.warning("mountpath %s: restoring a lost or torn copy of its id file", path)
    content = json.dumps({"id": mountpath_id, "format": MOUNTPATH_FORMAT}).encode()
    for copy, found_id in zip(copies, found, strict=True):
        if found_id != mountpath_id:
            copy.parent.mkdir(exist_ok=True)
            write_bytes_atomic(copy, content)
    if None in found:
        fsync_directory(path)  # the entry of frags/, made above for the second copy
    return mountpath_id


class Mountpath:
    """One mountpath directory: its id, index, capacity accounting and file names."""

    def __init__(self, path: str | os.PathLike[str], *, capacity_bytes: int = 0, high_watermark: float = 0.9) -> None:
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self.id = read_or_create_id(self.path)
        self.tmp_dir = self.path / "tmp"
        self.frag_dir = self.path / "frags"
        self.tmp_dir.mkdir(exist_ok=True)
        self.frag_dir.mkdir(exist_ok=True)
        self.capacity_bytes = capacity_bytes
        self.device = os.stat(self.path).st_dev  # mountpaths on one file system share its free space
        self.high_watermark = high_watermark
        self.reserved = 0
        self.io_errors = 0  # I/O errors since the agent started (the first one disables the mountpath)
        self.index = FragmentIndex(self.path / "index.sqlite")

    def usage(self) -> Usage:
        """Capacity, bytes used (stored plus reserved) and the write limit."""
        if self.capacity_bytes:
            capacity = self.capacity_bytes
            used = self.index.total_bytes() + self.reserved
        else:
            disk = psutil.disk_usage(str(self.path))
            capacity, used = disk.total, disk.used + self.reserved
        return Usage(capacity, used, int(capacity * self.high_watermark))

    def can_fit(self, nbytes: int) -> bool:
        """True when ``nbytes`` more stay under the high watermark."""
        usage = self.usage()
        return usage.used + nbytes <= usage.limit

    def fragment_path(self, name: str) -> Path:
        """The path of a fragment file, from its name relative to ``frags/`` (``<hh>/<h>.<gen>.<i>.<state>``)."""
        return self.frag_dir / name

    def close(self) -> None:
        """Close the mountpath's fragment index."""
        self.index.close()
