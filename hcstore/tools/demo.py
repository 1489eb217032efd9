"""``hcstore demo``: a checkpoint survives the loss of ``m`` agents.

Brings up a local cluster, writes a set of objects shaped like a training
checkpoint (model shards, optimizer shards, and small metadata files that are
replicated instead of coded), SIGKILLs ``m`` agents, reads every object back,
verifies it against the blake3 digest taken before the write, and prints what
happened and how fast.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import blake3
import numpy as np
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TransferSpeedColumn
from rich.table import Table

from ec import parse_ec
from hcstore.cluster.local import LocalCluster
from hcstore.tools.humanize import rate, size

BUCKET = "checkpoints"


@dataclass(frozen=True)
class CheckpointFile:
    """One file of the demo checkpoint: its object key and its size in bytes."""

    key: str
    size: int


def checkpoint_layout(total_bytes: int, *, step: int = 1000, shards: int = 4) -> list[CheckpointFile]:
    """Files of a sharded checkpoint adding up to about ``total_bytes``: 2/3 model, 1/3 optimizer, plus metadata."""
    model = total_bytes * 2 // 3 // shards
    optim = (total_bytes - model * shards) // shards
    prefix = f"run-demo/step-{step:07d}"
    files = [CheckpointFile(f"{prefix}/model-{i:05d}-of-{shards:05d}.safetensors", model) for i in range(shards)]
    files += [CheckpointFile(f"{prefix}/optim-{i:05d}-of-{shards:05d}.pt", optim) for i in range(shards)]
    files += [
        CheckpointFile(f"{prefix}/config.json", 2_345),
        CheckpointFile(f"{prefix}/trainer_state.json", 9_876),
        CheckpointFile(f"{prefix}/rng_state.pth", 14_960),
    ]
    return files


def make_bytes(nbytes: int, seed: int) -> bytes:
    """``nbytes`` pseudo-random bytes (incompressible, like trained weights), reproducible from ``seed``."""
    return np.random.default_rng(seed).integers(0, 256, nbytes, dtype=np.uint8).tobytes()


def run_demo(
    *, size_mb: int = 256, agents: int = 6, ec: str = "4+2", data_dir: str | None = None, console: Console | None = None
) -> bool:
    """Run the demo; returns True when every object read back byte-identical."""
    console = console or Console()
    k, m = parse_ec(ec)
    if agents < k + m:
        raise SystemExit(f"--agents {agents} is fewer than k+m={k + m} for --ec {ec}")
    with tempfile.TemporaryDirectory(prefix="hcstore-demo-") as tmp:
        root = Path(data_dir or tmp) / "cluster"
        cluster = LocalCluster.create(root, agents=agents, ec=ec, mountpaths_per_agent=2)
        rows: list[tuple[str, str, str, str]] = []
        try:
            started = time.perf_counter()
            cluster.start()
            console.print(
                f"[bold]local cluster[/]: {agents} agents, EC {ec}, 2 mountpaths each, in {root} "
                f"(started in {time.perf_counter() - started:.1f}s)"
            )
            client = cluster.client()
            files = checkpoint_layout(size_mb << 20)
            total = sum(f.size for f in files)
            digests: dict[str, bytes] = {}
            with _progress(console) as progress:
                task = progress.add_task("write checkpoint", total=total)
                put_s = 0.0
                for i, f in enumerate(files):
                    data = make_bytes(f.size, seed=i)
                    digests[f.key] = blake3.blake3(data).digest()
                    t0 = time.perf_counter()
                    result = client.put(BUCKET, f.key, data)
                    put_s += time.perf_counter() - t0
                    progress.advance(task, f.size)
                    del data
            rows.append(("write", f"{len(files)} objects", size(total), f"{put_s:.2f}s  {rate(total, put_s)}"))
            coded = sum(1 for f in files if f.size >= client.config.replicate_below)
            console.print(
                f"stored {len(files)} objects: {coded} erasure-coded {ec} "
                f"(overhead {(k + m) / k:.2f}x), {len(files) - coded} small ones replicated x{m + 1}; "
                f"last put: codec {result.codec}"
            )
            largest = client.stat(BUCKET, max(files, key=lambda f: f.size).key)
            victims = list(client.resolve(BUCKET, largest.key).locations[:m])  # data holders: reads must decode
            for node in victims:
                cluster.kill(node)
            rows.append(("kill -9", ", ".join(victims), f"{m} of {agents} agents", "no warning, no drain"))
            console.print(f"[red]SIGKILLed {m} agents: {', '.join(victims)}[/]")
            ok = 0
            with _progress(console) as progress:
                task = progress.add_task("read back + verify", total=total)
                t0 = time.perf_counter()
                for f in files:
                    data = client.get(BUCKET, f.key)
                    ok += blake3.blake3(data).digest() == digests[f.key]
                    progress.advance(task, f.size)
                    del data
                get_s = time.perf_counter() - t0
            rows.append(
                ("degraded read", f"{ok}/{len(files)} verified", size(total), f"{get_s:.2f}s  {rate(total, get_s)}")
            )
            table = Table(title="hcstore demo")
            for column in ("step", "what", "bytes", "time / rate"):
                table.add_column(column)
            for row in rows:
                table.add_row(*row)
            console.print(table)
            success = ok == len(files)
            if success:
                console.print(
                    f"[bold green]every byte of the checkpoint read back verified after losing "
                    f"{m} of {agents} agents[/]"
                )
            else:
                console.print(f"[bold red]{len(files) - ok} objects did not verify[/]")
            client.close()
            return success
        finally:
            cluster.destroy()


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("{task.description}"), BarColumn(), TransferSpeedColumn(), console=console, transient=False
    )
