"""Checkpoint save and restore through hcstore, beside torch.save/torch.load to one local file.

    python benchmarks/bench_checkpoint.py [--size-mb 1024] [--repeats 2] [--data-dir DIR] [--json-out F]

A state dict of ``--size-mb`` MiB (four large float32 tensors holding 90% of
the bytes, and 256 small ones) is saved and restored in one run by:

    save     local      torch.save into one local file, then flush and fsync (the baseline)
             stream     torch.save streamed into fsspec ``hcstore://`` opened "wb"
             dcp        torch.distributed.checkpoint, FsspecWriter(sync_files=False)
             manager    CheckpointManager.save (torch.save streamed, blake3 computed, manifest written)
    restore  local      torch.load(path) of the local file (the baseline)
             stream     torch.load of ``hcstore://`` opened "rb" (cache_type="blockcache"; big tensors
                        are read straight into their storage through readinto)
             get_into   Client.get_into a fresh buffer, then torch.load over that buffer
             dcp        FsspecReader into preallocated tensors

The cluster is local (6 agents, EC 4+2 by default) with durability "commit":
every fragment is fsynced before the object is committed, as the local
baseline is fsynced before its save counts as done. Every timed operation
starts after ``os.sync()``; methods alternate over ``--repeats`` rounds and the
best round of each is kept. Reads on both sides come from the page cache
(the bytes were just written). Every restore is checked tensor by tensor
against the original, outside the timing. The goal (issue 5): the best
hcstore save and the best hcstore restore each take at most 1.5x the local file's time.
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

GOAL = 1.5  # hcstore time / local file time, for save and for restore
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
    if loaded.keys() != state.keys() or not all(torch.equal(loaded[k], v) for k, v in state.items()):
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

    def methods(self) -> list[Method]:
        """Every save method, then every restore method, in the order the rounds run them."""
        return [
            Method("save", "local", "torch.save -> local file + fsync", self.save_local),
            Method("save", "stream", 'torch.save -> hcstore:// open("wb")', self.save_stream),
            Method("save", "dcp", "DCP FsspecWriter(sync_files=False)", self.save_dcp),
            Method("save", "manager", "CheckpointManager.save (+blake3, manifest)", self.save_manager),
            Method("restore", "local", "torch.load(local file)", self.load_local),
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
            method.seconds.append(seconds)
            if method.op == "restore":
                check_equal(restored, bench.state, f"restore via {method.name}")
                del restored
            print(f"  round {round_ + 1}: {method.op:7s} {method.name:8s} {seconds:6.2f} s", flush=True)


def report(methods: list[Method], size: int) -> dict[str, Any]:
    """Print every method's best time, MB/s and ratio to the local file; returns the figures."""
    figures: dict[str, Any] = {"methods": [], "goal": {}}
    print(f"\n{'op':8s}{'method':10s}{'what':46s}{'best':>9s}{'MB/s':>8s}   vs local file")
    for op in ("save", "restore"):
        local = next(m for m in methods if m.op == op and m.name == "local")
        for m in (m for m in methods if m.op == op):
            ratio = m.best / local.best
            beside = "" if m is local else f"{ratio:5.2f}x local time"
            print(f"{op:8s}{m.name:10s}{m.description:46s}{m.best:8.2f}s{size / m.best / 1e6:8.0f}   {beside}")
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
        best = min((m for m in methods if m.op == op and m.name != "local"), key=lambda m: m.best)
        ratio = best.best / local.best
        met = ratio <= GOAL
        figures["goal"][op] = {"method": best.name, "ratio": ratio, "goal": GOAL, "met": met}
        print(
            f"{op:8s}best hcstore: {best.name} {best.best:.2f} s vs local file {local.best:.2f} s = "
            f"{ratio:.2f}x (goal <= {GOAL}x): {'met' if met else 'NOT met'}"
        )
    return figures


def run(
    *, size_mb: int, repeats: int, agents: int, ec: str, data_dir: str | None, json_out: str | None
) -> dict[str, Any]:
    """Start a local cluster, run every method ``repeats`` times, print and return the figures."""
    state = make_state_dict(size_mb << 20)
    size = nbytes(state)
    print(
        f"state dict: {len(state)} float32 tensors, {size / 2**20:,.0f} MiB; cluster: {agents} agents, EC {ec}, "
        f"durability commit; {os.cpu_count()} cores, {platform.machine()}; torch {torch.__version__}"
    )
    with tempfile.TemporaryDirectory(prefix="hcstore-bench-ckpt-", dir=data_dir) as tmp:
        cluster = LocalCluster.create(Path(tmp) / "cluster", agents=agents, ec=ec, durability="commit")
        try:
            cluster.start()
            bench = CheckpointBench(state, cluster, Path(tmp))
            methods = bench.methods()
            run_rounds(bench, methods, repeats)
            figures = report(methods, size)
        finally:
            cluster.destroy()
    figures["settings"] = {
        "size_bytes": size,
        "repeats": repeats,
        "agents": agents,
        "ec": ec,
        "durability": "commit",
        "cores": os.cpu_count(),
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
    args = parser.parse_args(argv)
    if args.size_mb < 1 or args.repeats < 1:
        parser.error("--size-mb and --repeats must be >= 1")
    warnings.filterwarnings("ignore", message="torch.distributed is disabled")
    run(
        size_mb=args.size_mb,
        repeats=args.repeats,
        agents=args.agents,
        ec=args.ec,
        data_dir=args.data_dir,
        json_out=args.json_out,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
