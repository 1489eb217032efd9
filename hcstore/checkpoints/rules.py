"""The pure rules of checkpoints: names, the manifest format, completeness, retention, durable cadence.

Functions of their arguments only, with no file system in sight, so each rule is tested
on its own (``tests/unit/test_checkpoint_plan.py``); the modules beside this one do the
I/O. The manifest format (:data:`MANIFEST_FORMAT`, described in :mod:`hcstore.checkpoints`)
and the directory names are frozen: a checkpoint written today must be found and read by
every later version.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass

from hcstore.checkpoints.errors import CheckpointCorrupt
from hcstore.errors import InvalidRequest

__all__ = [
    "CHECKPOINT_PREFIX",
    "MANIFEST_FORMAT",
    "MANIFEST_NAME",
    "STEP_DIGITS",
    "FileEntry",
    "Manifest",
    "RetentionPlan",
    "check_file_name",
    "check_keep",
    "check_positive",
    "checkpoint_dirname",
    "is_durable_save",
    "manifest_problems",
    "parse_checkpoint_dirname",
    "plan_retention",
]

MANIFEST_NAME = "MANIFEST.json"
MANIFEST_FORMAT = 1
CHECKPOINT_PREFIX = "checkpoint_"
STEP_DIGITS = 9
_DIRNAME = re.compile(rf"{CHECKPOINT_PREFIX}(\d{{{STEP_DIGITS},}})")


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
    if not match or checkpoint_dirname(int(match.group(1))) != base:  # only the names we make
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
        raise InvalidRequest(
            f"checkpoint file name {name!r} must be relative, '/'-separated, without empty, '.' or '..' parts"
        )
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

    def mismatch(self, other: FileEntry) -> str | None:
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
        """The sum of the files' sizes."""
        return sum(f.size for f in self.files)

    def to_json(self) -> bytes:
        """The manifest file's bytes."""
        doc = {
            "format": MANIFEST_FORMAT,
            "step": self.step,
            "created": self.created,
            "files": [{"name": f.name, "size": f.size, "blake3": f.blake3} for f in self.files],
        }
        return json.dumps(doc, indent=1).encode()

    @classmethod
    def from_json(cls, data: bytes, *, where: str = "manifest") -> Manifest:
        """Parse and validate a manifest file.

        Raises:
            CheckpointCorrupt: not JSON (e.g. torn), another format, or malformed entries.
        """
        try:
            doc = json.loads(data)
            if doc.get("format") != MANIFEST_FORMAT:
                raise CheckpointCorrupt(
                    f"{where}: manifest format {doc.get('format')!r}, this reader knows {MANIFEST_FORMAT}"
                )
            files = tuple(FileEntry(check_file_name(f["name"]), int(f["size"]), f.get("blake3")) for f in doc["files"])
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
            continue
        problem = entry.mismatch(FileEntry(entry.name, found[entry.name]))  # sizes only: no digest found
        if problem is not None:
            problems.append(problem)
    return problems


@dataclass(frozen=True)
class RetentionPlan:
    """What a retention pass keeps and deletes (steps, ascending)."""

    keep: tuple[int, ...]
    delete: tuple[int, ...]
    deferred: tuple[int, ...] = ()  # would be deleted, but busy (a durable copy in flight)


def plan_retention(
    complete: Iterable[int], incomplete: Iterable[int], *, keep_last: int | None, busy: Collection[int] = ()
) -> RetentionPlan:
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
