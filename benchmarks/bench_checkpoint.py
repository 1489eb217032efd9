"""Checkpoint save and restore through hcstore, beside torch.save/torch.load to one local file.

    python benchmarks/bench_checkpoint.py [--size-mb 1024] [--repeats 2] [--device cpu|cuda]
                                          [--data-dir DIR] [--json-out F]

A state dict of ``--size-mb`` MiB (four large float32 tensors holding 90% of
the bytes, and 256 small ones), on ``--device`` (``cuda``: the GPU, as a training
job's model is; restores load back onto it), is saved and restored in one run by:

    save     local        torch.save into one local file, then flush and fsync (the baseline)
             copy         copy_ of every tensor into buffers allocated beforehand (the limit of async_block)
             async_block  CheckpointManager.save_async until it returns: what the training loop waits for
             async_full   save_async and the background save, until the checkpoint is complete
                          (committed on k+m agents, manifest written)
             stream       torch.save streamed into fsspec ``hcstore://`` opened "wb"
             dcp          torch.distributed.checkpoint, FsspecWriter(sync_files=False)
             manager      CheckpointManager.save (torch.save streamed, blake3 computed, manifest written)
    restore  local        torch.load(path) of the local file (the baseline)
             manager      torch.load(checkpoint.open("model.pt")) of the async_full round's checkpoint
             stream       torch.load of ``hcstore://`` opened "rb" (cache_type="blockcache"; big tensors
                          are read straight into their storage through readinto)
             get_into     Client.get_into a fresh buffer, then torch.load over that buffer
             dcp          FsspecReader into preallocated tensors

The cluster is local (6 agents, EC 4+2 by default) with durability "commit":
every fragment is fsynced before the object is committed, as the local
baseline is fsynced before its save counts as done. Every timed operation
starts after ``os.sync()``, and after the previous background save is done;
the first save_async (which allocates the host buffers) runs before the rounds.
Methods alternate over ``--repeats`` rounds and the best (minimum) round of each
is kept. Reads on both sides come from the page cache (the bytes were just
written). Every restore is checked tensor by tensor against the original,
outside the timing. The goals, each printed beside its limit from the same run:

    async save blocking   async_block <= 1.2 x copy
    save, full protection async_full  <= (k+m)/k x 1.1 x local save   (the disk being the bound)
    restore               manager     <= (k+m)/k x 1.1 x local restore
"""

from __future__ import annotations

import argparse
import functools
import io
import json
import os
import platform
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fsspec
import numpy as np
import torch
import torch.distributed.checkpoint as dcp

from hcstore.checkpoints import CheckpointManager, dcp_reader, dcp_writer
from hcstore.cluster.local import LocalCluster

BLOCKING = 1.2  # async_block / copy
DISK_MARGIN = 1.1  # hcstore writes (k+m)/k times the bytes; the goal allows 10% beyond that
BUCKET = "bench"


def make_state_dict(total_bytes: int, *, seed: int = 0, small_tensors: int = 256) -> dict[str, torch.Tensor]:
    """About ``total_bytes`` of float32: four large tensors (90%) and ``small_tensors`` small ones."""
    generator = torch.Generator().manual_seed(seed)
    large = total_bytes * 9 // 10 // 4 // 4
    small = max(1, (total_bytes - 4 * large * 4) // 4 // small_tensors)
    state = {f"layers.{i}.weight": torch.randn(large, generator=generator) for i in range(4)}
    state.update({f"norms.{i}.bias": torch.randn(small, generator=generator) for i in range(small_tensors)})
    return state


def nbytes(state: dict[str, torch.Tensor]) -> int:
    """The bytes held by the tensors of ``state``."""
    return sum(t.numel() * t.element_size() for t in state.values())


def check_equal(loaded: dict[str, torch.Tensor], state: dict[str, torch.Tensor], what: str) -> None:
    """Raise unless ``loaded`` holds exactly ``state``'s tensors."""
    if loaded.keys() != state.keys() or not all(torch.equal(loaded[k].cpu(), v.cpu()) for k, v in state.items()):
        raise AssertionError(f"{what}: the restored state dict differs from the saved one")


class _BufferReader(io.RawIOBase):
    """A seekable reader over a buffer; torch.load copies each record out of it once (readinto)."""

    def __init__(self, buffer: Any) -> None:
        super().__init__()
        self._view = memoryview(buffer).cast("B")
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: len(self._view)}[whence]
        self._pos = base + offset
        return self._pos

    def readinto(self, out: Any) -> int:
        count = max(0, min(len(out), len(self._view) - self._pos))
        memoryview(out).cast("B")[:count] = self._view[self._pos : self._pos + count]
        self._pos += count
        return count


@dataclass
class Method:
    """One way to save or restore, with its timings (seconds, one per round)."""

    op: str  # "save" or "restore"
    name: str
    description: str
    run: Callable[[int], Any] = field(repr=False)  # round number -> restored state (restore)
    settle: Callable[[], None] = field(default=lambda: None, repr=False)  # after the timing: let work finish
    seconds: list[float] = field(default_factory=list)

    @property
    def best(self) -> float:
        """The fastest round's time, in seconds."""
        return min(self.seconds)


class CheckpointBench:
    """The methods of one run, on one cluster and one local directory."""

    def __init__(self, state: dict[str, torch.Tensor], cluster: LocalCluster, local_dir: Path) -> None:
        self.state = state
        self.options = {"cluster": str(cluster.path)}
        self.fs = fsspec.filesystem("hcstore", **self.options)
        self.local = local_dir / "model.pt"
        self.manager = CheckpointManager(f"hcstore://{BUCKET}/manager", keep_last=1, storage_options=self.options)
        self.async_manager = CheckpointManager(f"hcstore://{BUCKET}/async", keep_last=2, storage_options=self.options)
        self.async_manager.save_async(0, state).result()  # allocates the reused host buffers
        pin = torch.cuda.is_available()  # as save_async's buffers
        self.buffers = {name: torch.empty_like(t, device="cpu", pin_memory=pin) for name, t in state.items()}
        self.save_copy(0)  # touches the buffers, as the first save_async touched its own

    def methods(self) -> list[Method]:
        """Every save method, then every restore method, in the order the rounds run them."""
        settle = functools.partial(self.async_manager.wait, None)
        return [
            Method("save", "local", "torch.save -> local file + fsync", self.save_local),
            Method("save", "copy", "copy_ into preallocated host buffers", self.save_copy),
            Method("save", "async_block", "save_async: until it returns", self.save_async_block, settle),
            Method("save", "async_full", "save_async: until complete (k+m, manifest)", self.save_async_full),
            Method("save", "stream", 'torch.save -> hcstore:// open("wb")', self.save_stream),
            Method("save", "dcp", "DCP FsspecWriter(sync_files=False)", self.save_dcp),
            Method("save", "manager", "CheckpointManager.save (+blake3, manifest)", self.save_manager),
            Method("restore", "local", "torch.load(local file)", self.load_local),
            Method("restore", "manager", 'torch.load(checkpoint.open("model.pt"))', self.load_manager),
            Method("restore", "stream", 'torch.load(hcstore:// open("rb"))', self.load_stream),
            Method("restore", "get_into", "Client.get_into(buffer) + torch.load", self.load_get_into),
            Method("restore", "dcp", "DCP FsspecReader", self.load_dcp),
        ]

    def _key(self, round_: int) -> str:
        return f"{BUCKET}/stream/round-{round_}/model.pt"

    def _dcp_url(self, round_: int) -> str:
        return f"hcstore://{BUCKET}/dcp/round-{round_}"

    # saves

    def save_local(self, round_: int) -> None:
        """torch.save into the local file, then flush and fsync it (the baseline)."""
        with open(self.local, "wb") as f:
            torch.save(self.state, f)
            f.flush()
            os.fsync(f.fileno())

    def save_copy(self, round_: int) -> None:
        """copy_ of every tensor into host buffers allocated beforehand: what save_async cannot beat."""
        with torch.no_grad():
            for name, tensor in self.state.items():
                self.buffers[name].copy_(tensor, non_blocking=tensor.is_cuda)
        if torch.cuda.is_available():
            torch.cuda.synchronize()

    def save_async_block(self, round_: int) -> None:
        """CheckpointManager.save_async until it returns (the background save is settled after the timing)."""
        self.async_manager.save_async(2 * round_ + 1, self.state)

    def save_async_full(self, round_: int) -> None:
        """CheckpointManager.save_async and its background save, until the checkpoint is complete."""
        self.async_manager.save_async(2 * round_ + 2, self.state).result()

    def save_stream(self, round_: int) -> None:
        """torch.save streamed into an ``hcstore://`` file opened "wb"."""
        with self.fs.open(self._key(round_), "wb") as f:
            torch.save(self.state, f)

    def save_dcp(self, round_: int) -> None:
        """torch.distributed.checkpoint save into ``hcstore://`` (FsspecWriter, sync_files=False)."""
        dcp.save(self.state, storage_writer=dcp_writer(self._dcp_url(round_), sync_files=False, **self.options))

    def save_manager(self, round_: int) -> None:
        """CheckpointManager.save of the state as checkpoint ``round_`` (blake3 and manifest included)."""
        self.manager.save(round_, {"model.pt": lambda f: torch.save(self.state, f)})

    # restores (each returns the state dict it restored)

    def load_local(self, round_: int) -> dict[str, torch.Tensor]:
        """torch.load of the local file (the baseline)."""
        return torch.load(self.local)

    def load_manager(self, round_: int) -> dict[str, torch.Tensor]:
        """torch.load of the checkpoint that save_async wrote in round ``round_`` (async_full)."""
        with self.async_manager.restore(2 * round_ + 2).open("model.pt") as f:
            return torch.load(f)

    def load_stream(self, round_: int) -> dict[str, torch.Tensor]:
        """torch.load streamed from the ``hcstore://`` file of round ``round_`` (block cache)."""
        with self.fs.open(self._key(round_), "rb", cache_type="blockcache") as f:
            return torch.load(f)

    def load_get_into(self, round_: int) -> dict[str, torch.Tensor]:
        """Client.get_into a fresh buffer the size of the object, then torch.load over that buffer."""
        bucket, key = self._key(round_).split("/", 1)
        client = self.fs.client
        buffer = np.empty(client.stat(bucket, key).size, dtype=np.uint8)
        client.get_into(bucket, key, buffer)
        return torch.load(_BufferReader(buffer))

    def load_dcp(self, round_: int) -> dict[str, torch.Tensor]:
        """torch.distributed.checkpoint load of round ``round_`` into tensors allocated beforehand."""
        target = {name: torch.empty_like(t) for name, t in self.state.items()}
        dcp.load(target, storage_reader=dcp_reader(self._dcp_url(round_), **self.options))
        return target


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """Seconds ``fn`` takes, starting from clean dirty-page state (``os.sync()`` first), and its result."""
    os.sync()
    started = time.perf_counter()
    result = fn()
    return time.perf_counter() - started, result


def run_rounds(bench: CheckpointBench, methods: list[Method], repeats: int) -> None:
    """Alternate every method ``repeats`` times; each round saves first, then restores what it saved."""
    for round_ in range(repeats):
        for method in methods:
            seconds, restored = timed(functools.partial(method.run, round_))
            method.settle()
            method.seconds.append(seconds)
            if method.op == "restore":
                check_equal(restored, bench.state, f"restore via {method.name}")
                del restored
            print(f"  round {round_ + 1}: {method.op:7s} {method.name:11s} {seconds:7.3f} s", flush=True)


@dataclass(frozen=True)
class Goal:
    """One goal: a method's best time against a limit, a factor times another method's best, in the same run."""

    name: str  # stable, snake_case: a key of the JSON figures
    what: str
    figure: Method
    baseline: Method
    factor: float

    @property
    def limit(self) -> float:
        """The most seconds the figure may take."""
        return self.factor * self.baseline.best

    @property
    def met(self) -> bool:
        """The figure is within its limit."""
        return self.figure.best <= self.limit

    def line(self) -> str:
        """The figure beside its limit, as printed."""
        return (
            f"{self.what}: {self.figure.op} {self.figure.name} {self.figure.best:.3f} s, limit "
            f"{self.factor:.2f} x {self.baseline.op} {self.baseline.name} {self.baseline.best:.3f} s "
            f"= {self.limit:.3f} s ({self.figure.best / self.baseline.best:.2f}x): {'met' if self.met else 'NOT met'}"
        )

    def figures(self) -> dict[str, Any]:
        """The goal's figures, for ``--json-out``."""
        return {
            "figure_method": f"{self.figure.op}_{self.figure.name}",
            "figure_s": self.figure.best,
            "baseline_method": f"{self.baseline.op}_{self.baseline.name}",
            "baseline_s": self.baseline.best,
            "factor": self.factor,
            "limit_s": self.limit,
            "ratio": self.figure.best / self.baseline.best,
            "met": self.met,
        }


def goals(methods: list[Method], ec: str) -> list[Goal]:
    """The three goals of an asynchronous checkpoint, for EC ``k+m``."""
    k, m = map(int, ec.split("+"))
    disk = (k + m) / k * DISK_MARGIN
    by = {(method.op, method.name): method for method in methods}
    return [
        Goal("async_save_blocking", "async save blocking", by["save", "async_block"], by["save", "copy"], BLOCKING),
        Goal("save_full_protection", "save to full protection", by["save", "async_full"], by["save", "local"], disk),
        Goal("restore", "restore", by["restore", "manager"], by["restore", "local"], disk),
    ]


def report(methods: list[Method], size: int, ec: str) -> dict[str, Any]:
    """Print every method's best time, MB/s and ratio to the local file, then the goals; returns the figures."""
    figures: dict[str, Any] = {"methods": [], "goals": {}}
    rounds = len(methods[0].seconds)
    print(f"\nbest (minimum) of {rounds} rounds per method")
    print(f"{'op':8s}{'method':13s}{'what':46s}{'best':>9s}{'MB/s':>8s}   vs local file")
    for op in ("save", "restore"):
        local = next(m for m in methods if m.op == op and m.name == "local")
        for m in (m for m in methods if m.op == op):
            ratio = m.best / local.best
            beside = "" if m is local else f"{ratio:5.2f}x local time"
            print(f"{op:8s}{m.name:13s}{m.description:46s}{m.best:8.3f}s{size / m.best / 1e6:8.0f}   {beside}")
            figures["methods"].append(
                {
                    "op": op,
                    "name": m.name,
                    "description": m.description,
                    "seconds": m.seconds,
                    "best_s": m.best,
                    "mb_per_s": size / m.best / 1e6,
                    "ratio_to_local": ratio,
                }
            )
    print()
    for goal in goals(methods, ec):
        print(goal.line())
        figures["goals"][goal.name] = goal.figures()
    return figures


def run(
    *,
    size_mb: int,
    repeats: int,
    agents: int,
    ec: str,
    data_dir: str | None,
    json_out: str | None,
    device: str = "cpu",
) -> dict[str, Any]:
    """Start a local cluster, run every method ``repeats`` times, print and return the figures."""
    state = {name: tensor.to(device) for name, tensor in make_state_dict(size_mb << 20).items()}
    size = nbytes(state)
    where = torch.cuda.get_device_name(device) if device.startswith("cuda") else "host memory"
    print(
        f"state dict: {len(state)} float32 tensors, {size / 2**20:,.0f} MiB on {device} ({where}); "
        f"cluster: {agents} agents, EC {ec}, "
        f"durability commit; {os.cpu_count()} cores, {platform.machine()}; torch {torch.__version__}"
    )
    with tempfile.TemporaryDirectory(prefix="hcstore-bench-ckpt-", dir=data_dir) as tmp:
        cluster = LocalCluster.create(Path(tmp) / "cluster", agents=agents, ec=ec, durability="commit")
        try:
            cluster.start()
            bench = CheckpointBench(state, cluster, Path(tmp))
            methods = bench.methods()
            run_rounds(bench, methods, repeats)
            bench.async_manager.close()
            figures = report(methods, size, ec)
        finally:
            cluster.destroy()
    figures["settings"] = {
        "size_bytes": size,
        "repeats": repeats,
        "statistic": "min",
        "agents": agents,
        "ec": ec,
        "durability": "commit",
        "cores": os.cpu_count(),
        "device": device,
        "torch": torch.__version__,
    }
    if json_out:
        Path(json_out).write_text(json.dumps(figures, indent=2))
    return figures


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run the benchmark; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mb", type=int, default=1024, help="state dict size in MiB (default 1024)")
    parser.add_argument("--repeats", type=int, default=2, help="rounds over every method; the best is kept")
    parser.add_argument("--agents", type=int, default=6)
    parser.add_argument("--ec", default="4+2")
    parser.add_argument("--data-dir", default=None, help="where the cluster and the local file go (default: tmp)")
    parser.add_argument("--json-out", default=None, help="also write the figures as JSON to this file")
    parser.add_argument("--device", default="cpu", help="where the state dict lives: cpu (default) or cuda")
    args = parser.parse_args(argv)
    if args.size_mb < 1 or args.repeats < 1:
        parser.error("--size-mb and --repeats must be >= 1")
    if args.device != "cpu" and not (args.device.startswith("cuda") and torch.cuda.is_available()):
        parser.error(f"--device {args.device}: this machine has no CUDA device (use cpu)")
    warnings.filterwarnings("ignore", message="torch.distributed is disabled")
    run(
        size_mb=args.size_mb,
        repeats=args.repeats,
        agents=args.agents,
        ec=args.ec,
        data_dir=args.data_dir,
        json_out=args.json_out,
        device=args.device,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
