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

Asynchronous saves
    :meth:`CheckpointManager.save_async` returns once the state is copied into host
    buffers that are reused by the next save; a background thread writes and completes the
    checkpoint as :meth:`CheckpointManager.save` does. One save is in flight at a time: the
    next save (of any kind), ``wait`` or ``close`` waits for it and raises its
    :class:`BackgroundSaveFailed`. A failed save has no manifest, so it is never complete.

Modules
    The rules (names, completeness, retention, which saves are copied) are pure
    functions in :mod:`~hcstore.checkpoints.rules`; the other modules do the I/O,
    one job each:

    - :mod:`~hcstore.checkpoints.rules` -- names, the manifest, completeness, retention, durable cadence.
    - :mod:`~hcstore.checkpoints.errors` -- the error family.
    - :mod:`~hcstore.checkpoints.streams` -- the counting, hashing write stream and block copies.
    - :mod:`~hcstore.checkpoints.root` -- the directories under a root, and a complete :class:`Checkpoint`.
    - :mod:`~hcstore.checkpoints.writing` -- :class:`PendingCheckpoint`: files first, manifest last.
    - :mod:`~hcstore.checkpoints.durable` -- the background thread that makes durable copies.
    - :mod:`~hcstore.checkpoints.snapshot` -- copies of a state dict into reusable host buffers (imports torch).
    - :mod:`~hcstore.checkpoints.background` -- the thread that persists one asynchronous save at a time.
    - :mod:`~hcstore.checkpoints.manager` -- :class:`CheckpointManager`, which ties them together.
    - :mod:`~hcstore.checkpoints.dcp` -- ``torch.distributed.checkpoint`` readers and writers.
"""

from hcstore.checkpoints.dcp import dcp_reader, dcp_writer
from hcstore.checkpoints.errors import (
    BackgroundSaveFailed,
    CheckpointCorrupt,
    CheckpointNotFound,
    DurableCopyFailed,
)
from hcstore.checkpoints.manager import CheckpointManager, FileSource
from hcstore.checkpoints.root import Checkpoint, Location
from hcstore.checkpoints.rules import (
    CHECKPOINT_PREFIX,
    MANIFEST_FORMAT,
    MANIFEST_NAME,
    STEP_DIGITS,
    FileEntry,
    Manifest,
    RetentionPlan,
    check_file_name,
    check_keep,
    check_positive,
    checkpoint_dirname,
    is_durable_save,
    manifest_problems,
    parse_checkpoint_dirname,
    plan_retention,
)
from hcstore.checkpoints.writing import PendingCheckpoint

__all__ = [
    "CHECKPOINT_PREFIX",
    "MANIFEST_FORMAT",
    "MANIFEST_NAME",
    "STEP_DIGITS",
    "BackgroundSaveFailed",
    "Checkpoint",
    "CheckpointCorrupt",
    "CheckpointManager",
    "CheckpointNotFound",
    "DurableCopyFailed",
    "FileEntry",
    "FileSource",
    "Location",
    "Manifest",
    "PendingCheckpoint",
    "RetentionPlan",
    "check_file_name",
    "check_keep",
    "check_positive",
    "checkpoint_dirname",
    "dcp_reader",
    "dcp_writer",
    "is_durable_save",
    "manifest_problems",
    "parse_checkpoint_dirname",
    "plan_retention",
]
