"""The :class:`CheckpointManager`: save, list, restore and retire the checkpoints of a training run.

It ties the pieces together: :class:`~hcstore.checkpoints.writing.PendingCheckpoint`
writes, :class:`~hcstore.checkpoints.root._CheckpointRoot` reads and prunes (by
:func:`~hcstore.checkpoints.rules.plan_retention`),
:class:`~hcstore.checkpoints.durable._DurableCopier` copies to durable storage,
:class:`~hcstore.checkpoints.snapshot.HostSnapshot` copies a state into reusable host buffers
and :class:`~hcstore.checkpoints.background._BackgroundSaver` persists it on a thread.

Every public way to save (``saving``, ``save``, ``save_async``, ``adopt``, ``adopt_async``)
first settles the background save in flight, so one save writes the root at a time and a
background failure is raised by the next call that saves, waits or closes.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, cast

from fsspec import AbstractFileSystem

from hcstore.checkpoints.background import _BackgroundSaver
from hcstore.checkpoints.durable import _DurableCopier
from hcstore.checkpoints.errors import CheckpointNotFound, DurableCopyFailed
from hcstore.checkpoints.root import Checkpoint, Location, _CheckpointRoot, _resolve
from hcstore.checkpoints.rules import (
    RetentionPlan,
    check_file_name,
    check_keep,
    check_positive,
    checkpoint_dirname,
    is_durable_save,
)
from hcstore.checkpoints.writing import PendingCheckpoint, _write_manifest
from hcstore.errors import InvalidRequest

if TYPE_CHECKING:
    from hcstore.checkpoints.snapshot import HostSnapshot

__all__ = ["CheckpointManager", "FileSource"]

log = logging.getLogger(__name__)

FileSource = bytes | bytearray | memoryview | str | os.PathLike | Callable[[BinaryIO], Any]


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

    def __init__(
        self,
        root: Location,
        *,
        keep_last: int | None = 3,
        durable_url: Location | None = None,
        durable_every: int = 1,
        durable_queue: int = 2,
        durable_keep_last: int | None = None,
        checksum: bool = True,
        storage_options: Mapping[str, Any] | None = None,
    ) -> None:
        self.keep_last = check_keep("keep_last", keep_last)
        self.durable_keep_last = check_keep("durable_keep_last", durable_keep_last)
        check_positive("durable_every", durable_every)
        check_positive("durable_queue", durable_queue)
        self.durable_every = durable_every
        self.checksum = checksum
        self._root = _CheckpointRoot(*_resolve(root, storage_options))
        self._lock = threading.Lock()  # one retention pass at a time
        self._state = threading.Lock()  # guards _writing
        self._saves = 0
        self._reported = 0  # durable errors already raised by wait()/close()
        self._writing: set[int] = set()
        self._durable: _DurableCopier | None = None
        self._background = _BackgroundSaver(self._root.url)
        self._snapshot: HostSnapshot | None = None  # made by the first save_async (it imports torch)
        if durable_url is not None:
            target = _CheckpointRoot(*_resolve(durable_url, None))
            self._durable = _DurableCopier(
                target, max_waiting=durable_queue, checksum=checksum, on_done=self._after_durable_copy
            )

    # ------------------------------------------------------------------ properties

    @property
    def url(self) -> str:
        """The root, as a URL."""
        return self._root.url

    @property
    def fs(self) -> AbstractFileSystem:
        """The fsspec filesystem the root is on."""
        return self._root.fs

    @property
    def durable_url(self) -> str | None:
        """The durable root, as a URL, or None when the manager makes no durable copies."""
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
            BackgroundSaveFailed: the previous :meth:`save_async` failed (raised before anything is written).
        """
        self._background.settle()
        with self._saving(step, durable=durable) as pending:
            yield pending

    @contextmanager
    def _saving(self, step: int, *, durable: bool | None) -> Iterator[PendingCheckpoint]:
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
        log.info(
            "checkpoint %d saved to %s: %d files, %d bytes in %.2fs",
            step,
            pending.url,
            len(manifest.files),
            manifest.total_bytes,
            time.perf_counter() - started,
        )
        pending.checkpoint = Checkpoint(step, pending.path, pending.url, manifest, self.fs)
        self._after_save(pending.checkpoint, durable)

    def save(self, step: int, files: Mapping[str, FileSource], *, durable: bool | None = None) -> Checkpoint:
        """Write checkpoint ``step`` from ``files`` and return it.

        Args:
            step: the training step.
            files: by file name: bytes, a local file path, or a callable that writes into a binary file
                object (e.g. ``lambda f: torch.save(state, f)``).
            durable: as for :meth:`saving`.

        Raises:
            BackgroundSaveFailed: the previous :meth:`save_async` failed (raised before anything is written).
        """
        if not files:
            raise InvalidRequest(f"save({step}): no files given")
        self._background.settle()
        return self._save(step, files, durable)

    def _save(self, step: int, files: Mapping[str, FileSource], durable: bool | None) -> Checkpoint:
        with self._saving(step, durable=durable) as pending:
            for name, source in files.items():
                _write_source(pending, name, source)
        if pending.checkpoint is None:  # _saving() sets it whenever its block exits cleanly
            raise RuntimeError(f"save({step}): the checkpoint was written but not recorded")
        return pending.checkpoint

    def save_async(
        self,
        step: int,
        state: Any,
        *,
        name: str = "model.pt",
        files: Mapping[str, bytes | bytearray | memoryview] | None = None,
        durable: bool | None = None,
    ) -> Future[Checkpoint]:
        """Save ``state`` as checkpoint ``step``, returning as soon as it is copied to host memory.

        The call waits for the previous background save (raising its error), copies every
        tensor of ``state`` into host buffers that are reused by the next save (pinned when
        CUDA is available; GPU tensors copied without blocking, then synchronized once), and
        returns. A background thread then writes ``torch.save(copy)`` as ``name`` and the
        ``files`` (copied now) into the checkpoint, and completes it as :meth:`save` does
        (manifest last, retention, durable copy). ``state`` may be changed as soon as this
        returns. At most one save is in flight, so host memory holds one copy of the state.

        Args:
            step: the training step.
            state: a state dict: tensors (any device) and other values, nested in dicts, lists and tuples.
            name: the file the state is written to, read back with ``torch.load(checkpoint.open(name))``.
            files: small extra files by name (e.g. trainer state as JSON), copied before returning.
            durable: as for :meth:`saving`.

        Returns:
            A future of the saved :class:`Checkpoint`. Its ``result()`` raises
            :class:`BackgroundSaveFailed` if the save failed; so does the next ``save_async``,
            ``saving``, ``save``, ``adopt``, ``wait`` or ``close``, once. A failed save leaves
            no complete checkpoint: :meth:`latest` still returns the one before.

        Raises:
            BackgroundSaveFailed: the previous background save failed (nothing of this one is done).
            InvalidRequest: a bad file name, or ``name`` also in ``files``.
        """
        self._background.settle()
        checkpoint_dirname(step)  # a bad step fails here, not on the background thread
        if durable and not self._durable:
            raise InvalidRequest(f"save_async({step}, durable=True): the manager has no durable_url")
        extra = {check_file_name(n): bytes(data) for n, data in (files or {}).items()}
        if check_file_name(name) in extra:
            raise InvalidRequest(f"save_async({step}): {name!r} is the state's file and also in files")
        from hcstore.checkpoints import snapshot  # imports torch

        if self._snapshot is None:
            self._snapshot = snapshot.HostSnapshot()
        copied = self._snapshot.copy(state)
        sources: dict[str, FileSource] = {name: functools.partial(snapshot.torch_save, copied), **extra}
        return self._background.submit(step, lambda: self._save(step, sources, durable))

    def adopt_async(self, step: int, *, durable: bool | None = None) -> Future[Checkpoint]:
        """:meth:`adopt` on the background thread, after the previous background save (errors as :meth:`save_async`)."""
        self._background.settle()
        return self._background.submit(step, lambda: self._adopt(step, durable))

    def adopt(self, step: int, *, durable: bool | None = None) -> Checkpoint:
        """Make the files another writer already put in ``step``'s directory a complete checkpoint.

        For writers that own their upload (Ray Train's ``report``, torch DCP on every rank): once
        they are done, the manifest is written (listing what is there, with sizes), then
        retention and durable copies run as after :meth:`saving`.

        Raises:
            CheckpointNotFound: the directory holds no files.
            BackgroundSaveFailed: the previous background save failed.
        """
        self._background.settle()
        return self._adopt(step, durable)

    def _adopt(self, step: int, durable: bool | None) -> Checkpoint:
        found = self._root.sizes(step)
        if not found:
            raise CheckpointNotFound(f"adopt({step}): no files under {self._root.url}/{checkpoint_dirname(step)}")
        pending = PendingCheckpoint(self.fs, self._root.dir(step), step, checksum=False)
        manifest = _write_manifest(pending, found)
        checkpoint = Checkpoint(step, pending.path, pending.url, manifest, self.fs)
        log.info(
            "checkpoint %d adopted at %s: %d files, %d bytes",
            step,
            pending.url,
            len(manifest.files),
            manifest.total_bytes,
        )
        self._after_save(checkpoint, durable)
        return checkpoint

    def _begin(self, step: int) -> str:
        """Claim ``step`` for writing and clear its directory; returns the directory."""
        dirpath = self._root.dir(step)
        if self._durable and step in self._durable.busy():
            raise InvalidRequest(
                f"checkpoint {step} is being copied to {self.durable_url}; call wait() before "
                "saving the same step again"
            )
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
        """The newest complete checkpoint, or None.

        Raises:
            NotProven: agents that did not answer could hold a newer checkpoint (or the only one):
                None would be a guess (retried first, as every read is).
        """
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
        """Block until the background save (:meth:`save_async`) and every submitted durable copy are done.

        Raises:
            BackgroundSaveFailed: the background save failed (durable copies are not waited for then).
            DurableCopyFailed: a copy failed since the last ``wait``/``close``.
            TimeoutError: the save or copies are still in flight after ``timeout`` seconds (each wait
                gets ``timeout``).
        """
        self._background.settle(timeout)
        if self._durable:
            self._durable.wait(timeout)
            self._raise_new_errors()

    def close(self, timeout: float | None = None) -> None:
        """Finish the background save and the durable copies, and stop their threads (raises as :meth:`wait`)."""
        try:
            self._background.close(timeout)
        finally:
            if self._durable:
                self._durable.close(timeout)
        self._raise_new_errors()

    def _raise_new_errors(self) -> None:
        errors = self.durable_errors
        new, self._reported = errors[self._reported :], len(errors)
        if new:
            steps = ", ".join(str(step) for step, _ in new)
            raise DurableCopyFailed(
                f"durable copy to {self.durable_url} failed for checkpoint(s) {steps}: {new[0][1]}", new
            ) from new[0][1]

    def __enter__(self) -> CheckpointManager:
        return self

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        if exc_type is None:
            self.close()
        else:
            try:
                self.close()
            except Exception:
                log.exception("closing the checkpoint manager after an error")


def _write_source(pending: PendingCheckpoint, name: str, source: FileSource) -> None:
    """Write one entry of :meth:`CheckpointManager.save`'s ``files``."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        pending.write(name, source)
    elif isinstance(source, (str, os.PathLike)):
        pending.upload_file(name, source)
    elif callable(source):
        with pending.open(name) as f:
            # A _HashingWriter is an io.RawIOBase, not a typing.BinaryIO, but it is the binary write
            # stream that writers such as torch.save expect: write(), tell(), flush(), close().
            source(cast(BinaryIO, f))
    else:
        raise InvalidRequest(
            f"save: file {name!r} must be bytes, a local path or a callable(file), got {type(source).__name__}"
        )
