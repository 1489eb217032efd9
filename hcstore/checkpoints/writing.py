"""Writing one checkpoint: its files, then its manifest, last.

A :class:`PendingCheckpoint` records every file written through it (name, size,
blake3); :func:`_write_manifest` checks them against what the directory holds, adds
files another writer put there, and writes the manifest that makes the checkpoint
complete.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fsspec import AbstractFileSystem

from hcstore.checkpoints.dcp import dcp_writer
from hcstore.checkpoints.errors import CheckpointCorrupt
from hcstore.checkpoints.root import Checkpoint
from hcstore.checkpoints.rules import MANIFEST_NAME, FileEntry, Manifest, check_file_name, manifest_problems
from hcstore.checkpoints.streams import _copy_stream, _HashingWriter
from hcstore.errors import InvalidRequest

__all__ = ["PendingCheckpoint"]

log = logging.getLogger(__name__)


class PendingCheckpoint:
    """A checkpoint being written; it becomes visible when its manifest is written.

    Obtained from :meth:`CheckpointManager.saving`. Write files with :meth:`open`,
    :meth:`write`, :meth:`upload_file` or :meth:`upload_dir`; files that another
    writer puts into :attr:`url` (e.g. torch.distributed.checkpoint through
    :meth:`dcp_writer`) are found by listing and listed with their size.
    """

    def __init__(self, fs: AbstractFileSystem, path: str, step: int, *, checksum: bool) -> None:
        self.fs = fs
        self.path = path
        self.step = step
        self.url = fs.unstrip_protocol(path)
        self._checksum = checksum
        self._entries: dict[str, FileEntry] = {}
        self._made_dirs: set[str] = set()
        self.checkpoint: Checkpoint | None = None  # set when the manifest has been written

    @property
    def storage_options(self) -> dict[str, Any]:
        """The options that rebuild this checkpoint's filesystem from its URL (e.g. ``cluster=``)."""
        return dict(self.fs.storage_options)

    def open(self, name: str, mode: str = "wb") -> _HashingWriter:
        """A write stream for file ``name``; it is recorded in the manifest when closed cleanly.

        Raises:
            InvalidRequest: a bad name, a mode other than "wb", or a name written twice.
        """
        if mode != "wb":
            raise InvalidRequest(f"checkpoint files are written whole: open({name!r}, {mode!r}), use 'wb'")
        if check_file_name(name) in self._entries:
            raise InvalidRequest(f"checkpoint {self.step}: file {name!r} was already written")
        path = f"{self.path}/{name}"
        parent = path.rsplit("/", 1)[0]
        if parent not in self._made_dirs:
            self.fs.makedirs(parent, exist_ok=True)
            self._made_dirs.add(parent)
        return _HashingWriter(
            self.fs.open(path, "wb"),
            name,
            checksum=self._checksum,
            on_close=self._record,
            on_abort=lambda: self._remove(path),
        )

    def write(self, name: str, data: bytes | bytearray | memoryview) -> None:
        """Write a whole file from bytes."""
        with self.open(name) as f:
            f.write(data)

    def upload_file(self, name: str, local_path: str | os.PathLike[str]) -> None:
        """Copy a local file into the checkpoint as ``name``."""
        with open(local_path, "rb") as src, self.open(name) as dst:
            _copy_stream(src, dst)

    def upload_dir(self, local_dir: str | os.PathLike[str], prefix: str = "") -> None:
        """Copy every file under a local directory, keeping relative paths (under ``prefix``)."""
        root = Path(local_dir)
        if not root.is_dir():
            raise InvalidRequest(f"upload_dir: {root} is not a directory")
        for local in sorted(p for p in root.rglob("*") if p.is_file()):
            relative = local.relative_to(root).as_posix()
            self.upload_file(f"{prefix.rstrip('/')}/{relative}" if prefix else relative, local)

    def dcp_writer(self, **options: Any) -> Any:
        """A ``torch.distributed.checkpoint`` storage writer into this checkpoint (see :func:`dcp_writer`)."""
        return dcp_writer(self.url, **{**self.storage_options, **options})

    def _record(self, entry: FileEntry) -> None:
        self._entries[entry.name] = entry

    def _remove(self, path: str) -> None:
        try:
            self.fs.rm(path)
        except (FileNotFoundError, OSError) as exc:
            log.debug("could not remove %s after a failed write: %s", path, exc)

    def _manifest(self, found: Mapping[str, int]) -> Manifest:
        """The manifest of what was written: recorded files, checked against ``found``, plus adopted ones.

        Raises:
            CheckpointCorrupt: a file written through this object is missing or of another size.
        """
        problems = manifest_problems(Manifest(self.step, tuple(self._entries.values())), found)
        if problems:
            raise CheckpointCorrupt(f"checkpoint {self.step} at {self.url}: after writing, " + "; ".join(problems))
        adopted = {
            name: FileEntry(name, size)
            for name, size in found.items()
            if name not in self._entries and name != MANIFEST_NAME
        }
        files = sorted({**self._entries, **adopted}.values(), key=lambda e: e.name)
        return Manifest(self.step, tuple(files), time.time())


def _write_manifest(pending: PendingCheckpoint, found: Mapping[str, int]) -> Manifest:
    manifest = pending._manifest(found)
    pending.fs.pipe_file(f"{pending.path}/{MANIFEST_NAME}", manifest.to_json())
    return manifest
