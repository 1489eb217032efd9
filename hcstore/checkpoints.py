"""Checkpoints of a training loop, on any fsspec filesystem (``hcstore://`` first).

A :class:`CheckpointManager` owns one *root* directory and writes each
checkpoint into its own directory under it::

    <root>/checkpoint_000000100/model.pt              files of step 100, any names
    <root>/checkpoint_000000100/optim/shard-0.pt
    <root>/checkpoint_000000100/MANIFEST.json         written last

Crash guarantee
    A checkpoint is *complete* only when its ``MANIFEST.json`` exists, parses,
    names its own step, and every file it lists exists with the listed size.
    The manifest is written after every file has been closed (on hcstore a
    closed file is committed on ``k+m`` nodes), so a save that is killed at any
    point leaves an *incomplete* directory that :meth:`CheckpointManager.latest`
    never returns. A torn manifest (a file system without atomic writes) fails
    to parse and counts as missing.

Manifest (format 1, JSON, frozen: readers refuse other formats)::

    {"format": 1, "step": 100, "created": 1732300000.0,
     "files": [{"name": "model.pt", "size": 1234, "blake3": "<64 hex digits or null>"}, ...]}

    ``blake3`` is computed while the file is written (null when the file was
    written by someone else, e.g. torch.distributed.checkpoint, and adopted
    from the directory listing). :meth:`Checkpoint.download` and durable copies
    verify sizes and digests as they stream.

Retention
    After each successful save the manager keeps the ``keep_last`` newest
    complete checkpoints and deletes the older ones, together with incomplete
    leftovers older than the newest complete checkpoint (a crashed save). An
    incomplete directory newer than that is left alone (it may be a save in
    progress) until a newer checkpoint completes or the same step is saved
    again, which replaces it. A checkpoint whose durable copy is queued or
    running is never deleted; it goes once its copy is done. One manager
    writes a root at a time; readers may be anywhere.

Durable copies
    Every ``durable_every``-th save of a manager is copied to ``durable_url``
    (any fsspec URL) by one background thread, with the same layout and the
    manifest again written last. Training never waits for it: the queue holds
    at most ``durable_queue`` copies that have not started; when it is full the
    oldest waiting copy is dropped for the newest (logged). A failed copy is
    logged, kept in :attr:`CheckpointManager.durable_errors` and raised by the
    next :meth:`CheckpointManager.wait` or :meth:`CheckpointManager.close`.

The rules (names, completeness, retention, which saves are copied) are pure
functions below; the classes after them do the I/O.
"""

from __future__ import annotations

import collections
import io
import json
import logging
import os
import re
import shutil
import threading
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Union

import blake3
from fsspec import AbstractFileSystem
from fsspec.core import url_to_fs

from hcstore.errors import HCStoreError, InvalidRequest

__all__ = [
    "Checkpoint", "CheckpointCorrupt", "CheckpointManager", "CheckpointNotFound", "DurableCopyFailed", "FileEntry",
    "Manifest", "PendingCheckpoint", "RetentionPlan", "check_file_name", "check_keep", "check_positive", "checkpoint_dirname",
    "dcp_reader", "dcp_writer", "is_durable_save", "manifest_problems", "parse_checkpoint_dirname", "plan_retention",
]

log = logging.getLogger(__name__)

MANIFEST_NAME = "MANIFEST.json"
MANIFEST_FORMAT = 1
CHECKPOINT_PREFIX = "checkpoint_"
STEP_DIGITS = 9
_COPY_BLOCK = 8 << 20
_DIRNAME = re.compile(rf"{CHECKPOINT_PREFIX}(\d{{{STEP_DIGITS},}})")

Location = Union[str, tuple[AbstractFileSystem, str]]
FileSource = Union[bytes, bytearray, memoryview, str, os.PathLike, Callable[[BinaryIO], Any]]


# ---------------------------------------------------------------------- errors


class CheckpointNotFound(HCStoreError, FileNotFoundError):
    """No complete checkpoint matches what was asked for."""


class CheckpointCorrupt(HCStoreError, ValueError):
    """A checkpoint's manifest is unreadable, or a file does not match its manifest entry."""


class DurableCopyFailed(HCStoreError):
    """One or more background copies to the durable location failed (see ``failures``)."""

    def __init__(self, message: str, failures: list[tuple[int, BaseException]]) -> None:
        super().__init__(message)
        self.failures = failures


# ---------------------------------------------------------------------- pure rules


def checkpoint_dirname(step: int) -> str:
    """The directory name of a step: ``checkpoint_000000100``.

    Raises:
        InvalidRequest: ``step`` is not a non-negative integer.
    """
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise InvalidRequest(f"checkpoint step must be a non-negative integer, got {step!r}")
    return f"{CHECKPOINT_PREFIX}{step:0{STEP_DIGITS}d}"


def parse_checkpoint_dirname(name: str) -> int | None:
    """The step of a checkpoint directory name (or path), or None for any other name."""
    base = name.rstrip("/").rsplit("/", 1)[-1]
    match = _DIRNAME.fullmatch(base)
    if not match or checkpoint_dirname(int(match.group(1))) != base:     # only the names we make
        return None
    return int(match.group(1))


def check_file_name(name: str) -> str:
    """A file name inside a checkpoint: relative, ``/``-separated, no ``.``/``..`` parts.

    Raises:
        InvalidRequest: the name is empty, absolute, escapes the checkpoint, or is the manifest's.
    """
    if not isinstance(name, str) or not name:
        raise InvalidRequest(f"checkpoint file name must be a non-empty string, got {name!r}")
    parts = name.split("/")
    if "\\" in name or any(part in ("", ".", "..") for part in parts):
        raise InvalidRequest(f"checkpoint file name {name!r} must be relative, '/'-separated, "
                             "without empty, '.' or '..' parts")
    if name == MANIFEST_NAME:
        raise InvalidRequest(f"checkpoint file name {name!r} is reserved for the manifest")
    return name


def check_keep(setting: str, value: int | None) -> int | None:
    """``value`` if it is None (keep all) or an integer >= 1.

    Raises:
        InvalidRequest: naming ``setting``.
    """
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise InvalidRequest(f"{setting}={value!r}: must be an integer >= 1, or None to keep every checkpoint")
    return value


def check_positive(setting: str, value: int) -> int:
    """``value`` if it is an integer >= 1.

    Raises:
        InvalidRequest: naming ``setting``.
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidRequest(f"{setting}={value!r}: must be an integer >= 1")
    return value


@dataclass(frozen=True)
class FileEntry:
    """One file of a checkpoint as its manifest lists it."""

    name: str
    size: int
    blake3: str | None = None

    def mismatch(self, other: "FileEntry") -> str | None:
        """Why ``other`` (what was found) does not match this entry, or None when it does."""
        if other.size != self.size:
            return f"{self.name}: {other.size} bytes, the manifest says {self.size}"
        if self.blake3 and other.blake3 and other.blake3 != self.blake3:
            return f"{self.name}: blake3 {other.blake3[:16]}…, the manifest says {self.blake3[:16]}…"
        return None


@dataclass(frozen=True)
class Manifest:
    """The list of a checkpoint's files; its presence makes the checkpoint complete."""

    step: int
    files: tuple[FileEntry, ...]
    created: float = 0.0

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)

    def to_json(self) -> bytes:
        """The manifest file's bytes."""
        doc = {"format": MANIFEST_FORMAT, "step": self.step, "created": self.created,
               "files": [{"name": f.name, "size": f.size, "blake3": f.blake3} for f in self.files]}
        return json.dumps(doc, indent=1).encode()

    @classmethod
    def from_json(cls, data: bytes, *, where: str = "manifest") -> "Manifest":
        """Parse and validate a manifest file.

        Raises:
            CheckpointCorrupt: not JSON (e.g. torn), another format, or malformed entries.
        """
        try:
            doc = json.loads(data)
            if doc.get("format") != MANIFEST_FORMAT:
                raise CheckpointCorrupt(f"{where}: manifest format {doc.get('format')!r}, "
                                        f"this reader knows {MANIFEST_FORMAT}")
            files = tuple(FileEntry(check_file_name(f["name"]), int(f["size"]), f.get("blake3"))
                          for f in doc["files"])
            return cls(int(doc["step"]), files, float(doc.get("created", 0.0)))
        except CheckpointCorrupt:
            raise
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise CheckpointCorrupt(f"{where}: unreadable manifest ({exc})") from None


def manifest_problems(manifest: Manifest, found: Mapping[str, int]) -> list[str]:
    """What keeps a checkpoint from being complete: listed files missing or of another size.

    Args:
        manifest: the checkpoint's manifest.
        found: size of every file found in the checkpoint directory, by name.
    """
    problems = []
    for entry in manifest.files:
        if entry.name not in found:
            problems.append(f"{entry.name}: missing")
        elif found[entry.name] != entry.size:
            problems.append(entry.mismatch(FileEntry(entry.name, found[entry.name])))
    return problems


@dataclass(frozen=True)
class RetentionPlan:
    """What a retention pass keeps and deletes (steps, ascending)."""

    keep: tuple[int, ...]
    delete: tuple[int, ...]
    deferred: tuple[int, ...] = ()       # would be deleted, but busy (a durable copy in flight)


def plan_retention(complete: Iterable[int], incomplete: Iterable[int], *, keep_last: int | None,
                   busy: Collection[int] = ()) -> RetentionPlan:
    """Which checkpoints to delete so that the ``keep_last`` newest complete ones remain.

    Incomplete checkpoints older than the newest complete one are leftovers of
    crashed saves and are deleted; newer ones may be saves in progress and are
    kept. Busy steps are never deleted.

    Raises:
        InvalidRequest: ``keep_last`` is not None or an integer >= 1.
    """
    check_keep("keep_last", keep_last)
    done = sorted(set(complete), reverse=True)
    partial = set(incomplete) - set(done)
    newest = done[0] if done else None
    doomed = set(done[keep_last:]) if keep_last is not None else set()
    doomed |= {s for s in partial if newest is not None and s < newest}
    deferred = doomed & set(busy)
    doomed -= deferred
    keep = (set(done) | partial) - doomed - deferred
    return RetentionPlan(tuple(sorted(keep)), tuple(sorted(doomed)), tuple(sorted(deferred)))


def is_durable_save(ordinal: int, every: int | None) -> bool:
    """Whether the ``ordinal``-th save (1-based) of a manager is copied to durable storage."""
    return every is not None and ordinal % every == 0


# ---------------------------------------------------------------------- I/O


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


class _HashingWriter(io.RawIOBase):
    """A binary write stream that counts and (optionally) blake3-hashes what passes through it.

    On a clean close it closes the stream below, sets :attr:`entry` and calls
    ``on_close(entry)``; closed after an error (:meth:`abort`) it closes the stream
    and calls ``on_abort`` instead.
    """

    def __init__(self, raw: BinaryIO, name: str, *, checksum: bool,
                 on_close: Callable[[FileEntry], None] = lambda entry: None,
                 on_abort: Callable[[], None] = lambda: None) -> None:
        super().__init__()
        self._raw = raw
        self._name = name
        self._hash = blake3.blake3(max_threads=blake3.blake3.AUTO) if checksum else None
        self._size = 0
        self._on_close = on_close
        self._on_abort = on_abort
        self.entry: FileEntry | None = None       # what was written, once closed cleanly

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        if self._hash is not None:
            self._hash.update(view)
        self._raw.write(view)
        self._size += view.nbytes
        return view.nbytes

    def tell(self) -> int:
        return self._size

    def flush(self) -> None:
        if not self.closed:
            self._raw.flush()

    def close(self) -> None:
        if self.closed:
            return
        super().close()
        self._raw.close()
        self.entry = FileEntry(self._name, self._size, self._hash.hexdigest() if self._hash else None)
        self._on_close(self.entry)

    def abort(self, exc_type: Any = None, exc: BaseException | None = None, tb: Any = None) -> None:
        """Close after a failed write: the file is not recorded (and is removed by ``on_abort``).

        The stream below is exited with the exception, so one that can discard a write
        (an ``hcstore://`` file) does so instead of committing it.
        """
        if self.closed:
            return
        super().close()
        try:
            self._raw.__exit__(exc_type or RuntimeError, exc, tb)
        finally:
            self._on_abort()

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort(exc_type, exc, tb)


def _copy_stream(src: BinaryIO, dst: BinaryIO) -> None:
    shutil.copyfileobj(src, dst, _COPY_BLOCK)


def _copy_verified(source: "Checkpoint", entry: FileEntry, out: _HashingWriter) -> None:
    """Stream one file of ``source`` into ``out`` (closing it) and check what passed against ``entry``.

    Raises:
        CheckpointCorrupt: the bytes read do not match the manifest entry's size or digest.
    """
    with out, source.open(entry.name) as src:
        _copy_stream(src, out)
    problem = entry.mismatch(out.entry)
    if problem:
        raise CheckpointCorrupt(f"{source.url}/{problem}")


@dataclass(frozen=True)
class Checkpoint:
    """A complete checkpoint: its step, where it is, and its manifest."""

    step: int
    path: str                       # on ``fs``, without protocol
    url: str                        # the same, as a URL (e.g. hcstore://bucket/run/checkpoint_000000100)
    manifest: Manifest
    fs: AbstractFileSystem = field(repr=False, compare=False)

    @property
    def files(self) -> tuple[FileEntry, ...]:
        return self.manifest.files

    @property
    def storage_options(self) -> dict[str, Any]:
        """The options that rebuild this checkpoint's filesystem from its URL (e.g. ``cluster=``)."""
        return dict(self.fs.storage_options)

    def file_url(self, name: str) -> str:
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
                _copy_verified(self, entry, _HashingWriter(open(part, "wb"), entry.name,
                                                           checksum=entry.blake3 is not None))
                os.replace(part, local)
            finally:
                part.unlink(missing_ok=True)
        log.info("checkpoint %d: downloaded %d files (%d bytes) to %s",
                 self.step, len(self.files), self.manifest.total_bytes, target)
        return target

    def dcp_reader(self, **options: Any) -> Any:
        """A ``torch.distributed.checkpoint`` storage reader on this checkpoint (see :func:`dcp_reader`)."""
        return dcp_reader(self.url, **{**self.storage_options, **options})


def _fsspec_dcp() -> tuple[type, type]:
    """torch.distributed.checkpoint's ``(FsspecReader, FsspecWriter)``, wherever this torch keeps them.

    torch 2.13 does not export them from ``torch.distributed.checkpoint``; they live in its
    ``_fsspec_filesystem`` module (where torch's own tests import them from).
    """
    try:
        from torch.distributed.checkpoint import FsspecReader, FsspecWriter  # type: ignore[attr-defined]
    except ImportError:
        from torch.distributed.checkpoint._fsspec_filesystem import FsspecReader, FsspecWriter
    return FsspecReader, FsspecWriter


def dcp_writer(url: str, *, sync_files: bool = False, **options: Any) -> Any:
    """A ``torch.distributed.checkpoint`` storage writer for a directory URL (e.g. ``hcstore://b/run/step-1``).

    ``sync_files`` defaults to False: an hcstore file is committed (fsynced on ``k+m`` nodes with
    durability "commit") when it is closed, and DCP's fsync of a file object without ``fileno()``
    falls back to a machine-wide ``os.sync()`` per file. Other ``options`` go to ``FsspecWriter``
    (``thread_count``, ``single_file_per_rank``, ...) and to the filesystem (``cluster=``).
    """
    return _fsspec_dcp()[1](url, sync_files=sync_files, **options)


def dcp_reader(url: str, **options: Any) -> Any:
    """A ``torch.distributed.checkpoint`` storage reader for a directory URL (options as for :func:`dcp_writer`)."""
    return _fsspec_dcp()[0](url, **options)


class _CheckpointRoot:
    """The checkpoint directories under one root on one filesystem."""

    def __init__(self, fs: AbstractFileSystem, path: str) -> None:
        self.fs = fs
        self.path = path

    @property
    def url(self) -> str:
        return self.fs.unstrip_protocol(self.path)

    def dir(self, step: int) -> str:
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
        return {path[len(base) + 1:]: int(info["size"]) for path, info in found.items()
                if info.get("type", "file") == "file" and path.startswith(base + "/")}

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
        problems = ([f"manifest names step {manifest.step}"] if manifest.step != step else []) + \
            manifest_problems(manifest, self.sizes(step))
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
        complete, incomplete = self.scan()
        plan = plan_retention([c.step for c in complete], incomplete, keep_last=keep_last, busy=busy)
        for step in plan.delete:
            log.info("retention: deleting %s", self.dir(step))
            self.delete(step)
        if plan.deferred:
            log.info("retention: keeping %s until their durable copies are done", list(plan.deferred))
        return plan


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
        self.checkpoint: Checkpoint | None = None     # set when the manifest has been written

    @property
    def storage_options(self) -> dict[str, Any]:
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
        return _HashingWriter(self.fs.open(path, "wb"), name, checksum=self._checksum,
                              on_close=self._record, on_abort=lambda: self._remove(path))

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
        adopted = {name: FileEntry(name, size) for name, size in found.items()
                   if name not in self._entries and name != MANIFEST_NAME}
        files = sorted({**self._entries, **adopted}.values(), key=lambda e: e.name)
        return Manifest(self.step, tuple(files), time.time())


class _DurableCopier:
    """One background thread that copies checkpoints to a durable root, newest first when it falls behind."""

    def __init__(self, target: _CheckpointRoot, *, max_waiting: int, checksum: bool,
                 on_done: Callable[[int], None]) -> None:
        self.target = target
        self._max_waiting = max_waiting
        self._checksum = checksum
        self._on_done = on_done
        self._waiting: collections.deque[Checkpoint] = collections.deque()
        self._active: Checkpoint | None = None      # being copied (busy)
        self._running = False                        # copying, or applying retention after a copy
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
                raise HCStoreError("the checkpoint manager is closed")
            if len(self._waiting) >= self._max_waiting:
                dropped = self._waiting.popleft()
                self.dropped.append(dropped.step)
                log.warning("durable copy of checkpoint %d dropped: %d copies were waiting, keeping the newest",
                            dropped.step, self._max_waiting)
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
                source = self._active = self._waiting.pop()        # newest first
                self._running = True
            self._copy_or_record(source)
            with self._cond:
                self._active = None                                  # no longer busy: retention may delete it
            try:
                self._on_done(source.step)
            except Exception:       # noqa: BLE001 - retention runs again after the next save
                log.exception("retention after the durable copy of checkpoint %d failed", source.step)
            with self._cond:
                self._running = False
                self._cond.notify_all()

    def _copy_or_record(self, source: Checkpoint) -> None:
        try:
            self._copy(source)
        except Exception as exc:     # noqa: BLE001 - recorded, and raised by wait()/close()
            log.error("durable copy of checkpoint %d to %s failed: %s", source.step, self.target.url, exc)
            self.errors.append((source.step, exc))
            self._discard(source.step)

    def _copy(self, source: Checkpoint) -> None:
        """Copy one checkpoint, verifying every file against the source manifest; manifest last."""
        started = time.perf_counter()
        self.target.delete(source.step)
        pending = PendingCheckpoint(self.target.fs, self.target.dir(source.step), source.step,
                                    checksum=self._checksum)
        for entry in source.files:
            _copy_verified(source, entry, pending.open(entry.name))
        _write_manifest(pending, self.target.sizes(source.step))
        seconds = time.perf_counter() - started
        log.info("checkpoint %d copied to %s (%d bytes, %.1fs)", source.step, pending.url,
                 source.manifest.total_bytes, seconds)

    def _discard(self, step: int) -> None:
        try:
            self.target.delete(step)
        except Exception as exc:    # noqa: BLE001 - it stays incomplete; retention removes it later
            log.warning("could not remove the partial durable copy of checkpoint %d: %s", step, exc)


def _write_manifest(pending: PendingCheckpoint, found: Mapping[str, int]) -> Manifest:
    manifest = pending._manifest(found)
    pending.fs.pipe_file(f"{pending.path}/{MANIFEST_NAME}", manifest.to_json())
    return manifest


class CheckpointManager:
    """Saves, lists, restores and retires the checkpoints of a training run under one root.

    Args:
        root: a URL (``hcstore://bucket/run-1``, ``file:///data/ckpt``, ``memory://x``) or an
            ``(fsspec filesystem, path)`` pair.
        keep_last: complete checkpoints kept under ``root`` (None: all).
        durable_url: where every ``durable_every``-th save is also copied, in the background
            (a URL or ``(fs, path)`` pair; None: no durable copies).
        durable_every: copy the ``durable_every``-th, ``2*durable_every``-th, ... save of this manager.
        durable_queue: copies that may wait to start; when more are submitted the oldest is dropped.
        durable_keep_last: complete checkpoints kept under ``durable_url`` (None: all).
        checksum: compute a blake3 digest of every file written through the manager.
        storage_options: options for ``root``'s filesystem when it is a URL (e.g. ``cluster=``).

    Raises:
        InvalidRequest: a bad setting, named in the message.

    Example::

        with CheckpointManager("hcstore://ckpt/run-1", keep_last=3, storage_options={"cluster": d}) as mgr:
            with mgr.saving(step) as ckpt:
                with ckpt.open("model.pt") as f:
                    torch.save(model.state_dict(), f)
            ...
            latest = mgr.latest()
            with latest.open("model.pt") as f:
                state = torch.load(f)
    """

    def __init__(self, root: Location, *, keep_last: int | None = 3, durable_url: Location | None = None,
                 durable_every: int = 1, durable_queue: int = 2, durable_keep_last: int | None = None,
                 checksum: bool = True, storage_options: Mapping[str, Any] | None = None) -> None:
        self.keep_last = check_keep("keep_last", keep_last)
        self.durable_keep_last = check_keep("durable_keep_last", durable_keep_last)
        check_positive("durable_every", durable_every)
        check_positive("durable_queue", durable_queue)
        self.durable_every = durable_every
        self.checksum = checksum
        self._root = _CheckpointRoot(*_resolve(root, storage_options))
        self._lock = threading.Lock()             # one retention pass at a time
        self._state = threading.Lock()            # guards _writing
        self._saves = 0
        self._reported = 0                        # durable errors already raised by wait()/close()
        self._writing: set[int] = set()
        self._durable: _DurableCopier | None = None
        if durable_url is not None:
            target = _CheckpointRoot(*_resolve(durable_url, None))
            self._durable = _DurableCopier(target, max_waiting=durable_queue, checksum=checksum,
                                           on_done=self._after_durable_copy)

    # ------------------------------------------------------------------ properties

    @property
    def url(self) -> str:
        """The root, as a URL."""
        return self._root.url

    @property
    def fs(self) -> AbstractFileSystem:
        return self._root.fs

    @property
    def durable_url(self) -> str | None:
        return self._durable.target.url if self._durable else None

    @property
    def durable_errors(self) -> list[tuple[int, BaseException]]:
        """Every failed durable copy so far: (step, exception)."""
        return list(self._durable.errors) if self._durable else []

    @property
    def durable_dropped(self) -> list[int]:
        """Steps whose durable copy was dropped because newer ones were waiting."""
        return list(self._durable.dropped) if self._durable else []

    # ------------------------------------------------------------------ saving

    @contextmanager
    def saving(self, step: int, *, durable: bool | None = None) -> Iterator[PendingCheckpoint]:
        """Write checkpoint ``step``; it becomes visible when the block exits without an exception.

        An existing directory for ``step`` (a crashed save, or a checkpoint saved again
        after a restart) is replaced. On an exception nothing is made visible and the
        partial directory is left for retention to remove. After the block,
        ``pending.checkpoint`` is the saved :class:`Checkpoint`.

        Args:
            step: the training step (an integer >= 0; orders checkpoints).
            durable: copy this checkpoint to ``durable_url`` (None: every ``durable_every``-th save).

        Raises:
            InvalidRequest: a bad step, ``durable=True`` without ``durable_url``, or ``step``'s
                durable copy is still in flight.
            CheckpointCorrupt: a written file is missing or of another size when the manifest is made.
        """
        if durable and not self._durable:
            raise InvalidRequest(f"saving({step}, durable=True): the manager has no durable_url")
        pending = PendingCheckpoint(self.fs, self._begin(step), step, checksum=self.checksum)
        started = time.perf_counter()
        try:
            yield pending
            manifest = _write_manifest(pending, self._root.sizes(step))
        finally:
            with self._state:
                self._writing.discard(step)
        log.info("checkpoint %d saved to %s: %d files, %d bytes in %.2fs", step, pending.url,
                 len(manifest.files), manifest.total_bytes, time.perf_counter() - started)
        pending.checkpoint = Checkpoint(step, pending.path, pending.url, manifest, self.fs)
        self._after_save(pending.checkpoint, durable)

    def save(self, step: int, files: Mapping[str, FileSource], *, durable: bool | None = None) -> Checkpoint:
        """Write checkpoint ``step`` from ``files`` and return it.

        Args:
            step: the training step.
            files: by file name: bytes, a local file path, or a callable that writes into a binary file
                object (e.g. ``lambda f: torch.save(state, f)``).
            durable: as for :meth:`saving`.
        """
        if not files:
            raise InvalidRequest(f"save({step}): no files given")
        with self.saving(step, durable=durable) as pending:
            for name, source in files.items():
                _write_source(pending, name, source)
        return pending.checkpoint

    def adopt(self, step: int, *, durable: bool | None = None) -> Checkpoint:
        """Make the files another writer already put in ``step``'s directory a complete checkpoint.

        For writers that own their upload (Ray Train's ``report``, torch DCP on every rank): once
        they are done, the manifest is written (listing what is there, with sizes), then
        retention and durable copies run as after :meth:`saving`.

        Raises:
            CheckpointNotFound: the directory holds no files.
        """
        found = self._root.sizes(step)
        if not found:
            raise CheckpointNotFound(f"adopt({step}): no files under {self._root.url}/{checkpoint_dirname(step)}")
        pending = PendingCheckpoint(self.fs, self._root.dir(step), step, checksum=False)
        manifest = _write_manifest(pending, found)
        checkpoint = Checkpoint(step, pending.path, pending.url, manifest, self.fs)
        log.info("checkpoint %d adopted at %s: %d files, %d bytes", step, pending.url, len(manifest.files),
                 manifest.total_bytes)
        self._after_save(checkpoint, durable)
        return checkpoint

    def _begin(self, step: int) -> str:
        """Claim ``step`` for writing and clear its directory; returns the directory."""
        dirpath = self._root.dir(step)
        if self._durable and step in self._durable.busy():
            raise InvalidRequest(f"checkpoint {step} is being copied to {self.durable_url}; call wait() before "
                                 "saving the same step again")
        with self._state:
            self._writing.add(step)
        if self.fs.exists(dirpath):
            log.warning("checkpoint %d: replacing the existing %s", step, dirpath)
            self._root.delete(step)
        return dirpath

    def _after_save(self, checkpoint: Checkpoint, durable: bool | None) -> None:
        self._saves += 1
        wanted = is_durable_save(self._saves, self.durable_every) if durable is None else durable
        if wanted and self._durable:
            self._durable.submit(checkpoint)
        self.prune()

    # ------------------------------------------------------------------ reading

    def latest(self) -> Checkpoint | None:
        """The newest complete checkpoint, or None."""
        return self._root.latest()

    def list(self) -> list[Checkpoint]:
        """Every complete checkpoint, oldest first."""
        return self._root.scan()[0]

    def restore(self, step: int | None = None) -> Checkpoint:
        """The checkpoint to resume from: ``step``'s, or the newest complete one.

        Raises:
            CheckpointNotFound: there is no such complete checkpoint.
        """
        found = self._root.latest() if step is None else self._root.load(step)
        if found is None:
            what = "no complete checkpoint" if step is None else f"no complete checkpoint for step {step}"
            raise CheckpointNotFound(f"{what} under {self.url}")
        return found

    def download(self, local_dir: str | os.PathLike[str], step: int | None = None) -> Path:
        """Copy a checkpoint (default: the newest complete) to a local directory, verified."""
        return self.restore(step).download(local_dir)

    # ------------------------------------------------------------------ retention and shutdown

    def prune(self) -> RetentionPlan:
        """Apply retention now (it also runs after every save and every durable copy)."""
        with self._state:
            busy = (self._durable.busy() if self._durable else set()) | self._writing
        with self._lock:
            return self._root.prune(self.keep_last, busy)

    def _after_durable_copy(self, step: int) -> None:
        self.prune()
        if self._durable and self.durable_keep_last is not None:
            self._durable.target.prune(self.durable_keep_last, ())

    def wait(self, timeout: float | None = None) -> None:
        """Block until every submitted durable copy is done.

        Raises:
            DurableCopyFailed: a copy failed since the last ``wait``/``close``.
            TimeoutError: copies are still in flight after ``timeout`` seconds.
        """
        if self._durable:
            self._durable.wait(timeout)
            self._raise_new_errors()

    def close(self, timeout: float | None = None) -> None:
        """Finish the durable copies and stop the background thread (raises as :meth:`wait`)."""
        if self._durable:
            self._durable.close(timeout)
            self._raise_new_errors()

    def _raise_new_errors(self) -> None:
        errors = self.durable_errors
        new, self._reported = errors[self._reported:], len(errors)
        if new:
            steps = ", ".join(str(step) for step, _ in new)
            raise DurableCopyFailed(f"durable copy to {self.durable_url} failed for checkpoint(s) {steps}: "
                                    f"{new[0][1]}", new) from new[0][1]

    def __enter__(self) -> "CheckpointManager":
        return self

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        if exc_type is None:
            self.close()
        else:
            try:
                self.close()
            except Exception:   # noqa: BLE001 - do not hide the exception that is already propagating
                log.exception("closing the checkpoint manager after an error")


def _write_source(pending: PendingCheckpoint, name: str, source: FileSource) -> None:
    """Write one entry of :meth:`CheckpointManager.save`'s ``files``."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        pending.write(name, source)
    elif isinstance(source, (str, os.PathLike)):
        pending.upload_file(name, source)
    elif callable(source):
        with pending.open(name) as f:
            source(f)
    else:
        raise InvalidRequest(f"save: file {name!r} must be bytes, a local path or a callable(file), "
                             f"got {type(source).__name__}")
