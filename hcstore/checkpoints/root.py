"""Checkpoints as they are stored: a root of checkpoint directories, and one complete checkpoint.

:class:`_CheckpointRoot` lists, loads (checking completeness against the manifest),
deletes and prunes the checkpoint directories under one root; :class:`Checkpoint` is a
complete one, read and downloaded with every file verified against its manifest entry.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from fsspec import AbstractFileSystem
from fsspec.core import url_to_fs

from hcstore.checkpoints.dcp import dcp_reader
from hcstore.checkpoints.errors import CheckpointCorrupt
from hcstore.checkpoints.rules import (
    MANIFEST_NAME,
    FileEntry,
    Manifest,
    RetentionPlan,
    check_file_name,
    checkpoint_dirname,
    manifest_problems,
    parse_checkpoint_dirname,
    plan_retention,
)
from hcstore.checkpoints.streams import _copy_stream, _HashingWriter
from hcstore.errors import InvalidRequest

__all__ = ["Checkpoint", "Location"]

log = logging.getLogger(__name__)

Location = str | tuple[AbstractFileSystem, str]


def _resolve(location: Location, storage_options: Mapping[str, Any] | None) -> tuple[AbstractFileSystem, str]:
    """A filesystem and a protocol-less path from a URL or an ``(fs, path)`` pair."""
    if isinstance(location, tuple):
        fs, path = location
        if storage_options:
            raise InvalidRequest("storage_options apply to a URL, not to an (fs, path) pair")
        path = fs._strip_protocol(path)
    elif isinstance(location, (str, os.PathLike)):
        fs, path = url_to_fs(os.fspath(location), **(storage_options or {}))
    else:
        raise InvalidRequest(f"checkpoint location must be a URL or an (fs, path) pair, got {location!r}")
    path = path.rstrip("/")
    if not path:
        raise InvalidRequest(f"checkpoint location {location!r} names no directory")
    return fs, path


def _copy_verified(source: Checkpoint, entry: FileEntry, out: _HashingWriter) -> None:
    """Stream one file of ``source`` into ``out`` (closing it) and check what passed against ``entry``.

    Raises:
        CheckpointCorrupt: the bytes read do not match the manifest entry's size or digest.
    """
    with out, source.open(entry.name) as src:
        _copy_stream(src, out)
    if out.entry is None:  # a clean close sets it, and the block above closed ``out`` cleanly
        raise RuntimeError(f"{source.url}/{entry.name}: the copy's stream closed without recording what it wrote")
    problem = entry.mismatch(out.entry)
    if problem:
        raise CheckpointCorrupt(f"{source.url}/{problem}")


@dataclass(frozen=True)
class Checkpoint:
    """A complete checkpoint: its step, where it is, and its manifest."""

    step: int
    path: str  # on ``fs``, without protocol
    url: str  # the same, as a URL (e.g. hcstore://bucket/run/checkpoint_000000100)
    manifest: Manifest
    fs: AbstractFileSystem = field(repr=False, compare=False)

    @property
    def files(self) -> tuple[FileEntry, ...]:
        """The files its manifest lists: name, size and, when one was computed, blake3 digest."""
        return self.manifest.files

    @property
    def storage_options(self) -> dict[str, Any]:
        """The options that rebuild this checkpoint's filesystem from its URL (e.g. ``cluster=``)."""
        return dict(self.fs.storage_options)

    def file_url(self, name: str) -> str:
        """The URL of the checkpoint's file ``name`` (a path relative to the checkpoint directory).

        Raises:
            InvalidRequest: ``name`` is not a valid checkpoint file name.
        """
        return f"{self.url}/{check_file_name(name)}"

    def open(self, name: str, mode: str = "rb", **options: Any) -> BinaryIO:
        """Open one of the checkpoint's files for reading (``options`` go to ``fs.open``, e.g. ``cache_type``)."""
        if mode != "rb":
            raise InvalidRequest(f"a saved checkpoint is read-only: open({name!r}, {mode!r})")
        return self.fs.open(f"{self.path}/{check_file_name(name)}", "rb", **options)

    def download(self, local_dir: str | os.PathLike[str]) -> Path:
        """Copy every file to ``local_dir``, checking sizes and blake3 digests; returns the directory.

        Raises:
            CheckpointCorrupt: a file does not match its manifest entry (the partial copy is removed).
        """
        target = Path(local_dir)
        for entry in self.files:
            local = target / entry.name
            local.parent.mkdir(parents=True, exist_ok=True)
            part = local.with_name(f".{local.name}.part")
            try:
                _copy_verified(
                    self, entry, _HashingWriter(open(part, "wb"), entry.name, checksum=entry.blake3 is not None)
                )
                os.replace(part, local)
            finally:
                part.unlink(missing_ok=True)
        log.info(
            "checkpoint %d: downloaded %d files (%d bytes) to %s",
            self.step,
            len(self.files),
            self.manifest.total_bytes,
            target,
        )
        return target

    def dcp_reader(self, **options: Any) -> Any:
        """A ``torch.distributed.checkpoint`` storage reader on this checkpoint (see :func:`dcp_reader`)."""
        return dcp_reader(self.url, **{**self.storage_options, **options})


class _CheckpointRoot:
    """The checkpoint directories under one root on one filesystem."""

    def __init__(self, fs: AbstractFileSystem, path: str) -> None:
        self.fs = fs
        self.path = path

    @property
    def url(self) -> str:
        """The root, as a URL."""
        return self.fs.unstrip_protocol(self.path)

    def dir(self, step: int) -> str:
        """The path of ``step``'s checkpoint directory, without protocol."""
        return f"{self.path}/{checkpoint_dirname(step)}"

    def steps(self) -> list[int]:
        """Steps that have a directory (complete or not), ascending."""
        self.fs.invalidate_cache(self.path)
        try:
            names = self.fs.ls(self.path, detail=False)
        except FileNotFoundError:
            return []
        return sorted({s for s in map(parse_checkpoint_dirname, names) if s is not None})

    def sizes(self, step: int) -> dict[str, int]:
        """Size of every file in a checkpoint directory, by name relative to it."""
        base = self.dir(step)
        self.fs.invalidate_cache(base)
        try:
            found = self.fs.find(base, detail=True)
        except FileNotFoundError:
            return {}
        return {
            path[len(base) + 1 :]: int(info["size"])
            for path, info in found.items()
            if info.get("type", "file") == "file" and path.startswith(base + "/")
        }

    def load(self, step: int) -> Checkpoint | None:
        """The checkpoint of ``step`` if it is complete, else None (why not is logged)."""
        base = self.dir(step)
        try:
            data = self.fs.cat_file(f"{base}/{MANIFEST_NAME}")
            manifest = Manifest.from_json(data, where=f"{base}/{MANIFEST_NAME}")
        except FileNotFoundError:
            log.debug("checkpoint %d: no manifest", step)
            return None
        except CheckpointCorrupt as exc:
            log.warning("checkpoint %d is incomplete: %s", step, exc)
            return None
        problems = ([f"manifest names step {manifest.step}"] if manifest.step != step else []) + manifest_problems(
            manifest, self.sizes(step)
        )
        if problems:
            log.warning("checkpoint %d is incomplete: %s", step, "; ".join(problems))
            return None
        return Checkpoint(step, base, self.fs.unstrip_protocol(base), manifest, self.fs)

    def scan(self) -> tuple[list[Checkpoint], list[int]]:
        """Complete checkpoints and incomplete steps, both ascending."""
        complete, incomplete = [], []
        for step in self.steps():
            found = self.load(step)
            if found:
                complete.append(found)
            else:
                incomplete.append(step)
        return complete, incomplete

    def latest(self) -> Checkpoint | None:
        """The newest complete checkpoint, or None."""
        for step in reversed(self.steps()):
            found = self.load(step)
            if found:
                return found
        return None

    def delete(self, step: int) -> None:
        """Remove a checkpoint directory, its manifest first (a crash halfway leaves it incomplete)."""
        base = self.dir(step)
        for path, recursive in ((f"{base}/{MANIFEST_NAME}", False), (base, True)):
            try:
                self.fs.rm(path, recursive=recursive)
            except FileNotFoundError:
                pass
        self.fs.invalidate_cache(self.path)

    def prune(self, keep_last: int | None, busy: Collection[int]) -> RetentionPlan:
        """Delete what :func:`plan_retention` says should go, sparing the ``busy`` steps; returns the plan."""
        complete, incomplete = self.scan()
        plan = plan_retention([c.step for c in complete], incomplete, keep_last=keep_last, busy=busy)
        for step in plan.delete:
            log.info("retention: deleting %s", self.dir(step))
            self.delete(step)
        if plan.deferred:
            log.info("retention: keeping %s until their durable copies are done", list(plan.deferred))
        return plan
