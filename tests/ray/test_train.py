"""Ray Train checkpoints to hcstore on a multi-node cluster; a node dies mid-run and training resumes."""

from __future__ import annotations

import os
import tempfile
import threading
import time

import ray
import torch
from ray.train import Checkpoint, CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

import ray_integration
from hcstore.checkpoints import CheckpointManager
from integration_support import wait_until
from ray_integration import HCStoreCheckpointCallback
from ray_integration.layout import node_id_for

EPOCHS = 8


def train_loop(config):
    """A tiny model; one checkpoint per epoch; rank 0 tells the test where it runs and how far it got."""
    store = config["store"]
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
        if rank == 0:
            progress = {"epoch": epoch, "node": ray.get_runtime_context().get_node_id()}
            store.put("train/progress", progress, allow_pickle=True)
        time.sleep(0.5)


def test_training_survives_a_node_loss_and_resumes_from_hcstore(ray_cluster, store, tmp_path):
    before = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
    trainer_nodes = [ray_cluster.add_node(num_cpus=2, resources={"trainer": 2}) for _ in range(2)]
    new = wait_until(
        lambda: {n["NodeID"] for n in ray.nodes() if n["Alive"]} - before, timeout=60, what="the trainer nodes"
    )
    wait_until(
        lambda: (
            len(new) == 2
            and all(ray_integration.status()["agents"].get(n) for n in new)
            and {node_id_for(n) for n in new}
            <= {m["id"] for m in ray_integration.status()["map"]["nodes"] if m["state"] == "alive"}
        ),
        timeout=90,
        interval=0.5,
        what="agents on the trainer nodes",
    )
    killed: list[str] = []

    def kill_a_trainer_node():
        progress = wait_until(lambda: _progress(store), timeout=240, interval=0.2, what="training progress")
        victim = next(n for n in trainer_nodes if n.node_id == progress["node"])
        ray_cluster.remove_node(victim, allow_graceful=False)
        killed.append(victim.node_id)

    killer = threading.Thread(target=kill_a_trainer_node, daemon=True)
    killer.start()
    trainer = TorchTrainer(
        train_loop,
        train_loop_config={"store": store},
        scaling_config=ScalingConfig(num_workers=2, resources_per_worker={"CPU": 1, "trainer": 1}),
        run_config=RunConfig(
            name="resume-after-node-loss",
            storage_path="train-runs/tests",
            storage_filesystem=ray_integration.storage_filesystem(store),
            failure_config=FailureConfig(max_failures=3),
            callbacks=[
                HCStoreCheckpointCallback(keep_last=2, durable_url=f"file://{tmp_path}/durable", durable_every=3)
            ],
        ),
    )
    result = trainer.fit()
    killer.join(timeout=5)

    assert killed, "no node was killed during training"
    assert result.error is None
    assert result.metrics["epoch"] == EPOCHS - 1
    assert result.metrics["start"] >= 2  # the restarted group resumed from a checkpoint, not epoch 0
    fs = store.filesystem()
    run_dir = "train-runs/tests/resume-after-node-loss"
    on_cluster = CheckpointManager((fs, run_dir), keep_last=None)
    assert [c.step for c in on_cluster.list()] == [EPOCHS - 2, EPOCHS - 1]  # keep_last, manifests written
    leftovers = [p for p in fs.ls(run_dir, detail=False) if p.rsplit("/", 1)[-1].startswith("checkpoint_0")]
    assert len(leftovers) == 2  # a save cut short by the kill was cleaned up too
    with result.checkpoint.as_directory() as folder:
        assert torch.load(os.path.join(folder, "state.pt"))["epoch"] == EPOCHS - 1
    latest = ray_integration.latest_checkpoint(ray_integration.storage_filesystem(store), run_dir)
    assert latest.path.endswith(ray_integration.checkpoint_dir_name(EPOCHS - 1))
    durable = CheckpointManager(f"file://{tmp_path}/durable", keep_last=None).list()
    assert durable, "no durable copy completed"
    for copy in durable:
        with copy.open("state.pt") as f:
            assert torch.load(f)["epoch"] == copy.step


def _progress(store):
    try:
        progress = store.get("train/progress", allow_pickle=True)
    except FileNotFoundError:
        return None
    return progress if progress["epoch"] >= 2 else None


def test_ray_retention_with_num_to_keep_and_the_callback_cleaning_up(store):
    run_dir = "train-runs/tests/num-to-keep"
    trainer = TorchTrainer(
        train_loop,
        train_loop_config={"store": store.with_bucket("train-runs")},
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
