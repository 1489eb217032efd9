"""Ray Train checkpoints on hcstore: a node dies mid-run and training resumes from the newest checkpoint.

    python examples/ray_train_checkpoints.py [--epochs 8] [--keep-last 2] [--durable-every 3] [--quick]

This starts four Ray nodes on this machine (``ray.cluster_utils.Cluster``, all on
127.0.0.1): the head, a spare, and two "trainer" nodes for the two workers of a
data-parallel Ray Train job (a small torch model on CPU). hcstore runs EC 2+1, so
every checkpoint file survives the loss of any one node. Rank 0 saves a checkpoint
every epoch; after a few, the node it runs on is killed without warning. Ray Train
restarts the workers on the surviving trainer node, and ``ray.train.get_checkpoint()``
hands them the newest checkpoint Ray had registered, read back from the nodes left
(a report still in flight when the node died is dropped; the callback removes its
files). ``HCStoreCheckpointCallback`` keeps the newest ``--keep-last`` checkpoints
on hcstore and copies every ``--durable-every``-th to a local folder standing in
for S3. It takes a minute or two and takes everything down at the end; ``--quick``
trains only the fewest epochs that still kill a node mid-run.

On a real cluster, skip the local cluster and deploy on the one you have::

    ray.init(address="auto")
    store = ray_integration.deploy(mountpaths={"default": ["/nvme0/hcstore"]}, ec="4+2")
    RunConfig(name="my-run", storage_path="checkpoints/runs",        # bucket "checkpoints"
              storage_filesystem=ray_integration.storage_filesystem(store),
              callbacks=[HCStoreCheckpointCallback(keep_last=3, durable_url="s3://bucket/my-run")])
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
from typing import Any

import local_ray  # before ray: it keeps every Ray node on 127.0.0.1
import ray
import torch
from ray.train import Checkpoint, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer, prepare_model

import ray_integration
from hcstore.checkpoints import CheckpointManager

RUN, STORAGE_PATH = "resume-after-node-loss", "train-runs/examples"  # bucket "train-runs"
KILL_AFTER_EPOCH = 2


def train_loop(config: dict) -> None:
    """Fit a linear model, each rank on its own data; rank 0 saves a checkpoint every epoch."""
    torch.manual_seed(0)
    model = torch.nn.Linear(8, 1)
    start = 0
    checkpoint = ray.train.get_checkpoint()  # None on a fresh start; the newest after a restart
    if checkpoint:
        with checkpoint.as_directory() as folder:
            state = torch.load(os.path.join(folder, "state.pt"))
        model.load_state_dict(state["model"])
        start = state["epoch"] + 1
    model = prepare_model(model)  # DistributedDataParallel across the workers
    optimizer = torch.optim.SGD(model.parameters(), lr=0.2)
    if checkpoint:
        optimizer.load_state_dict(state["optimizer"])
    rank = ray.train.get_context().get_world_rank()
    x = torch.randn(256, 8, generator=torch.Generator().manual_seed(rank))
    y = x @ torch.arange(1.0, 9.0).unsqueeze(1)
    for epoch in range(start, config["epochs"]):
        loss = torch.nn.functional.mse_loss(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        with tempfile.TemporaryDirectory() as folder:
            if rank == 0:
                torch.save(
                    {"epoch": epoch, "model": model.module.state_dict(), "optimizer": optimizer.state_dict()},
                    os.path.join(folder, "state.pt"),
                )
            ray.train.report(
                {"epoch": epoch, "start": start, "loss": loss.item()},
                checkpoint=Checkpoint.from_directory(folder) if rank == 0 else None,
                checkpoint_dir_name=ray_integration.checkpoint_dir_name(epoch),
            )
        if rank == 0:
            progress = {"epoch": epoch, "node": ray.get_runtime_context().get_node_id()}
            config["store"].put("progress", progress, allow_pickle=True)  # a dict: pickled, signed
        time.sleep(1.0)  # slow enough to kill a node mid-run


def kill_rank0_node(
    store: ray_integration.HCStore, cluster: Any, trainers: list, killed: list[str], done: threading.Event
) -> None:
    """Once rank 0 has saved epoch ``KILL_AFTER_EPOCH``, SIGKILL the node it runs on."""
    while not done.wait(0.2):
        try:
            progress = store.get("progress", allow_pickle=True)
        except FileNotFoundError:
            continue
        if progress["epoch"] >= KILL_AFTER_EPOCH:
            victim = next(node for node in trainers if node.node_id == progress["node"])
            print(
                f"after epoch {progress['epoch']}: killing node {victim.node_id[:8]}, rank 0's, without warning "
                "(Ray logs the unexpected termination below)"
            )
            cluster.remove_node(victim, allow_graceful=False)  # its raylet and workers are SIGKILLed
            killed.append(victim.node_id)
            return


def main() -> None:
    """Train on a local Ray cluster with checkpoints on hcstore, kill rank 0's node mid-run, and check the resume."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--keep-last", type=int, default=2)
    parser.add_argument("--durable-every", type=int, default=3)
    parser.add_argument(
        "--quick", action="store_true", help=f"smoke run: {KILL_AFTER_EPOCH + 2} epochs (overrides --epochs)"
    )
    args = parser.parse_args()
    if args.quick:
        args.epochs = KILL_AFTER_EPOCH + 2
    if args.epochs < KILL_AFTER_EPOCH + 2:
        parser.error(f"--epochs must be at least {KILL_AFTER_EPOCH + 2} to kill a node mid-run")

    done = threading.Event()
    nodes = [{"num_cpus": 1}] + [{"num_cpus": 2, "resources": {"trainer": 2}}] * 2  # a spare: EC 2+1 needs 3
    with local_ray.local_ray_cluster(head={"num_cpus": 1}, nodes=nodes, prefix="hcstore-ray-train-") as (
        cluster,
        (_, *trainers),
        workdir,
    ):
        store = ray_integration.deploy(
            mountpaths=[f"{workdir}/{{node_id}}/mp0"],
            ec="2+1",
            agent={"durability": "commit"},
            timeout=180,
            progress=lambda line: print(" ", line),
        )
        print(f"Ray cluster: 4 nodes on this machine; hcstore fragments under {workdir}")

        killed: list[str] = []
        killer = threading.Thread(target=kill_rank0_node, args=(store, cluster, trainers, killed, done), daemon=True)
        killer.start()
        durable_url = f"file://{workdir}/durable"
        trainer = TorchTrainer(
            train_loop,
            train_loop_config={"store": store, "epochs": args.epochs},
            scaling_config=ScalingConfig(num_workers=2, resources_per_worker={"CPU": 1, "trainer": 1}),
            run_config=RunConfig(
                name=RUN,
                storage_path=STORAGE_PATH,
                storage_filesystem=ray_integration.storage_filesystem(store),
                failure_config=FailureConfig(max_failures=3),
                callbacks=[
                    ray_integration.HCStoreCheckpointCallback(
                        keep_last=args.keep_last, durable_url=durable_url, durable_every=args.durable_every
                    )
                ],
            ),
        )
        print(f"training {args.epochs} epochs on 2 workers, a checkpoint per epoch to hcstore://{STORAGE_PATH}/{RUN}")
        result = trainer.fit()
        done.set()
        assert result.error is None, result.error
        assert killed, "training ended before a node could be killed"
        start = result.metrics["start"]
        print(
            f"the restarted workers loaded the checkpoint of epoch {start - 1} from hcstore and went on from "
            f"epoch {start}; final epoch {result.metrics['epoch']}, loss {result.metrics['loss']:.4f}"
        )

        run_dir = f"{STORAGE_PATH}/{RUN}"
        on_hcstore = CheckpointManager((store.filesystem(), run_dir), keep_last=None).list()
        print("complete checkpoints on hcstore:", ", ".join(c.url for c in on_hcstore))
        durable = CheckpointManager(durable_url, keep_last=None).list()
        print("durable copies:", ", ".join(f"epoch {c.step}" for c in durable) or "none finished yet")
        with result.checkpoint.as_directory() as folder:
            state = torch.load(os.path.join(folder, "state.pt"))
        model = torch.nn.Linear(8, 1)
        model.load_state_dict(state["model"])
        assert state["epoch"] == args.epochs - 1
        weights = [round(w, 2) for w in model.weight.data.squeeze().tolist()]
        print(f"final model loaded from epoch {state['epoch']}: weights {weights} (the target: 1.0 to 8.0)")


if __name__ == "__main__":
    main()
