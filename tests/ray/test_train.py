"""Ray Train checkpoints to hcstore: Ray's num_to_keep, the checkpoint callback's retention, and its background mode.

Training that survives a node killed mid-run and resumes from hcstore is the Ray Train example
(examples/ray_train_checkpoints.py), run by tests/integration/test_examples.py.
"""

from __future__ import annotations

import os
import tempfile
from types import SimpleNamespace

import ray
import torch
from ray.train import Checkpoint, CheckpointConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

import ray_integration
from hcstore.checkpoints import CheckpointManager
from ray_integration import HCStoreCheckpointCallback

EPOCHS = 8


def train_loop(config):
    """A tiny model; one checkpoint per epoch, saved by rank 0."""
    model = torch.nn.Linear(8, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    start = 0
    checkpoint = ray.train.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as folder:
            state = torch.load(os.path.join(folder, "state.pt"))
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start = state["epoch"] + 1
    rank = ray.train.get_context().get_world_rank()
    data = torch.randn(64, 8, generator=torch.Generator().manual_seed(0))
    for epoch in range(start, EPOCHS):
        loss = (model(data) ** 2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        with tempfile.TemporaryDirectory() as folder:
            if rank == 0:
                torch.save(
                    {"epoch": epoch, "model": model.state_dict(), "optimizer": optimizer.state_dict()},
                    os.path.join(folder, "state.pt"),
                )
            ray.train.report(
                {"epoch": epoch, "start": start, "loss": float(loss)},
                checkpoint=Checkpoint.from_directory(folder) if rank == 0 else None,
                checkpoint_dir_name=ray_integration.checkpoint_dir_name(epoch),
            )


def test_ray_retention_with_num_to_keep_and_the_callback_cleaning_up(store):
    run_dir = "train-runs/tests/num-to-keep"
    trainer = TorchTrainer(
        train_loop,
        scaling_config=ScalingConfig(num_workers=1),
        run_config=RunConfig(
            name="num-to-keep",
            storage_path="train-runs/tests",
            storage_filesystem=ray_integration.storage_filesystem(store),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
            callbacks=[HCStoreCheckpointCallback(keep_last=5)],
        ),
    )  # Ray's num_to_keep wins
    result = trainer.fit()
    assert result.error is None and result.metrics["epoch"] == EPOCHS - 1
    fs = store.filesystem()
    assert [c.step for c in CheckpointManager((fs, run_dir), keep_last=None).list()] == [EPOCHS - 2, EPOCHS - 1]
    assert sorted(p.rsplit("/", 1)[-1] for p in fs.ls(run_dir, detail=False) if "/checkpoint_0" in p) == [
        ray_integration.checkpoint_dir_name(EPOCHS - 2),
        ray_integration.checkpoint_dir_name(EPOCHS - 1),
    ]


def test_the_callback_in_background_completes_each_reported_checkpoint(store):
    run_dir = "train-runs/tests/background"
    fs = store.filesystem()
    storage = ray_integration.storage_filesystem(store)
    context = SimpleNamespace(run_config=SimpleNamespace(checkpoint_config=CheckpointConfig()))
    callback = HCStoreCheckpointCallback(keep_last=2, background=True)
    for step in (1, 2, 3):  # as Ray calls it on its controller after each report
        fs.pipe_file(f"{run_dir}/{ray_integration.checkpoint_dir_name(step)}/state.pt", b"s" * 1000)
        path = f"{run_dir}/{ray_integration.checkpoint_dir_name(step)}"
        callback.after_report(context, [{}], Checkpoint(path, filesystem=storage))
    callback._managers[run_dir].close()
    assert [c.step for c in CheckpointManager((fs, run_dir), keep_last=None).list()] == [2, 3]
