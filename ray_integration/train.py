"""Ray Train checkpoints on hcstore: the storage filesystem, and a callback for manifests, retention and durable copies.

Example::

    store = ray_integration.deploy(...)
    trainer = TorchTrainer(loop, scaling_config=..., run_config=RunConfig(
        name="llm-7b", storage_path="checkpoints/runs",            # bucket "checkpoints"
        storage_filesystem=ray_integration.storage_filesystem(store),
        checkpoint_config=CheckpointConfig(num_to_keep=3),
        failure_config=FailureConfig(max_failures=3),
        callbacks=[HCStoreCheckpointCallback(keep_last=3, durable_url="s3://bucket/llm-7b", durable_every=10)]))

    # in the training loop: name the directory after the step, so the callback can order them
    ray.train.report(metrics, checkpoint=Checkpoint.from_directory(folder),
                     checkpoint_dir_name=ray_integration.checkpoint_dir_name(step))

Every worker writes its checkpoint files straight into hcstore (erasure-coded,
committed on ``k+m`` nodes before ``ray.train.report`` returns); a worker group
restarted after a node failure resumes from ``ray.train.get_checkpoint()``, read
back from the surviving nodes.
"""

from __future__ import annotations

import logging
from typing import Any

import fsspec
import pyarrow.fs
from fsspec.implementations.arrow import ArrowFSWrapper
from ray.train import Checkpoint
from ray.train.v2.api.callback import UserCallback

from hcstore.checkpoints import (
    CheckpointManager,
    check_keep,
    check_positive,
    checkpoint_dirname,
    parse_checkpoint_dirname,
)
from hcstore.filesystem import HCStoreFileSystem
from ray_integration.handle import HCStore

log = logging.getLogger(__name__)


def storage_filesystem(store: HCStore | str | None = None, **settings: Any) -> pyarrow.fs.PyFileSystem:
    """The ``pyarrow`` filesystem to pass as ``RunConfig(storage_filesystem=...)``.

    Args:
        store: an :class:`HCStore` handle, a controller endpoint or local cluster directory,
            or None for the cluster ``HCSTORE_CLUSTER`` names.
        settings: client settings, e.g. ``ec="8+2"`` for checkpoints.

    ``RunConfig.storage_path`` is then ``"<bucket>/<path>"``, with no scheme.
    """
    filesystem = store.filesystem(**settings) if isinstance(store, HCStore) else HCStoreFileSystem(store, **settings)
    return pyarrow.fs.PyFileSystem(pyarrow.fs.FSSpecHandler(filesystem))


def checkpoint_dir_name(step: int) -> str:
    """The ``checkpoint_dir_name`` to give ``ray.train.report`` for ``step`` (``checkpoint_000000100``)."""
    return checkpoint_dirname(step)


def latest_checkpoint(storage_filesystem: pyarrow.fs.FileSystem, run_path: str) -> Checkpoint | None:
    """The newest *complete* checkpoint (manifest written) of a run, as a Ray Train ``Checkpoint``.

    Use it to start a new run from another run's state; a restarted run resumes on its own
    through ``ray.train.get_checkpoint()``.
    """
    found = CheckpointManager((_fsspec(storage_filesystem), run_path), keep_last=None).latest()
    return Checkpoint(found.path, filesystem=storage_filesystem) if found else None


class HCStoreCheckpointCallback(UserCallback):
    """Manifests, retention and background durable copies for the checkpoints a Ray Train run reports.

    After every reported checkpoint (named with :func:`checkpoint_dir_name`), on the Ray Train
    controller: its manifest is written last, which makes it *complete* (a save cut short by a
    node failure never is); the ``keep_last`` newest complete checkpoints of the run are kept
    and older ones deleted, together with leftovers of cut-short saves; every
    ``durable_every``-th is copied to ``durable_url`` (any fsspec URL) by a background thread.
    Training never waits for a copy. A copy still running when the run ends is cut short and
    stays incomplete (never mistaken for a checkpoint); copy it later with
    ``CheckpointManager((fs, run_path), keep_last=None, durable_url=...).adopt(step, durable=True)``.

    Retention is the callback's or Ray's, not both: with ``keep_last`` set, leave
    ``CheckpointConfig.num_to_keep`` unset (Ray 2.60 fails a run when a checkpoint it
    retires is already gone); when ``num_to_keep`` is set, the callback leaves retention
    to Ray (and says so in the log) and still cleans up cut-short saves.

    Args:
        keep_last: complete checkpoints kept on the cluster (None: keep all, or as Ray's
            ``num_to_keep`` says).
        durable_url: where every ``durable_every``-th checkpoint is copied (None: nowhere).
        durable_every: copy every K-th reported checkpoint.
        durable_storage_options: options of ``durable_url``'s filesystem.
        background: complete each checkpoint on a background thread
            (:meth:`~hcstore.checkpoints.CheckpointManager.adopt_async`), so Ray's report hook
            returns at once. One runs at a time; a failure is raised by the next report's hook.
            A checkpoint whose manifest is not yet written when the run ends stays incomplete
            (never mistaken for one): complete it later with ``adopt(step)``.
    """

    def __init__(
        self,
        *,
        keep_last: int | None = 3,
        durable_url: str | None = None,
        durable_every: int = 1,
        durable_storage_options: dict[str, Any] | None = None,
        background: bool = False,
    ) -> None:
        self.keep_last, self.durable_every, self.background = keep_last, durable_every, background
        self.durable_url, self.durable_storage_options = durable_url, durable_storage_options or {}
        check_keep("keep_last", keep_last)
        check_positive("durable_every", durable_every)
        self._managers: dict[str, CheckpointManager] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_managers": {}}  # managers (threads) are made where it runs

    def after_report(self, run_context: Any, metrics: list[dict[str, Any]], checkpoint: Checkpoint | None) -> None:
        """Ray Train's hook after ``ray.train.report``: complete the reported checkpoint, prune, copy it durably.

        A report without a checkpoint, or with one not named by :func:`checkpoint_dir_name`, is left alone.
        """
        if checkpoint is None:
            return
        run_path, name = checkpoint.path.rstrip("/").rsplit("/", 1)
        step = parse_checkpoint_dirname(name)
        if step is None:
            log.warning(
                "checkpoint %s is not named by step: pass checkpoint_dir_name="
                "ray_integration.checkpoint_dir_name(step) to ray.train.report; left alone",
                name,
            )
            return
        ray_keeps = run_context.run_config.checkpoint_config.num_to_keep
        manager = self._manager(checkpoint.filesystem, run_path, ray_keeps)
        if self.background:
            manager.adopt_async(step)
        else:
            manager.adopt(step)

    def _manager(self, filesystem: pyarrow.fs.FileSystem, run_path: str, ray_keeps: int | None) -> CheckpointManager:
        manager = self._managers.get(run_path)
        if manager is None:
            keep_last = self.keep_last
            if keep_last is not None and ray_keeps is not None:
                log.warning(
                    "CheckpointConfig(num_to_keep=%d) is set: Ray retires checkpoints, the callback's "
                    "keep_last=%d is not applied",
                    ray_keeps,
                    keep_last,
                )
                keep_last = None
            durable = None
            if self.durable_url:
                durable = fsspec.core.url_to_fs(self.durable_url, **self.durable_storage_options)
            manager = self._managers[run_path] = CheckpointManager(
                (_fsspec(filesystem), run_path),
                keep_last=keep_last,
                durable_url=durable,
                durable_every=self.durable_every,
                checksum=False,
            )
        return manager


def _fsspec(filesystem: pyarrow.fs.FileSystem) -> fsspec.AbstractFileSystem:
    """The fsspec filesystem behind a pyarrow one (ours, unwrapped), or a wrapper around it."""
    handler = getattr(filesystem, "handler", None)
    return handler.fs if isinstance(handler, pyarrow.fs.FSSpecHandler) else ArrowFSWrapper(filesystem)
