"""Reading a large numpy array on Ray: hcstore's ``get_ref`` beside Ray's own object store and spilling.

    python benchmarks/bench_ray.py [--size-mb 256] [--repeats 5] [--nodes 6] [--ec 4+2]
                                   [--durability none] [--cold] [--json-out F]

A multi-node Ray cluster is started on this machine (``ray.cluster_utils.Cluster``,
every node on 127.0.0.1), hcstore is deployed on it, and a float32 array of
``--size-mb`` MiB is stored once. The driver runs on the head node and reads
the array, in the same run, by:

    get_ref      ``ray.get(store.get_ref(key))`` end to end: the head node's agent reads the
                 fragments, decodes them and returns the array into the head's object store;
                 the driver gets a zero-copy view of it
    in-store     ``ray.get`` of the array already in the head node's object store (``ray.put``
                 before the timing): a zero-copy view, no bytes move
    pulled       ``ray.get`` of the array held in another node's object store (a task made it
                 there): Ray pulls it over loopback into the head's store
    restore      ``ray.get`` of the array after Ray spilled it to local disk and evicted it
                 from memory: Ray restores it from its spill file
    store.get    ``store.get(key)``: read straight into the driver's memory, no object store

Methods alternate round by round, so the machine's noise falls on all of them
alike; only ratios taken in one run mean anything on a shared machine. Every
method's value is checked equal to the array once, in an untimed warm-up round.

How a spilled object is made to be restored: the head node's object store is
small (2.7x the array). Each round puts the array, then a second object of
``store - size/2`` bytes that cannot fit beside it: Ray spills the array to
its spill directory, evicts it from memory, and the second object is then
dropped. Before the timed ``ray.get`` the round checks that Ray reports the
array spilled (``did_spill``) and that it is no longer in the head's object
store memory, so the get must restore it from disk. Both hcstore's
fragments and Ray's spill files are fresh, so without ``--cold`` both are read
from the page cache; ``--cold`` drops those files from the page cache
(fsync, then ``posix_fadvise(DONTNEED)``) before every timed get_ref,
store.get and restore.
"""

from __future__ import annotations

import os

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # every Ray node on 127.0.0.1: nothing leaves loopback
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import argparse
import json
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import ray
from ray._private.internal_api import memory_summary
from ray.cluster_utils import Cluster

import ray_integration

KEY = "bench/array"
MIB = 2**20
HEAD_STORE_FACTOR = 2.7  # the head's object store, in array sizes: one array fits, two and a half do not


def make_array(nbytes: int, seed: int = 0) -> np.ndarray:
    """``nbytes`` of float32 noise (incompressible, and the same for the same seed)."""
    return np.random.default_rng(seed).standard_normal(nbytes // 4, dtype=np.float32)


@ray.remote(num_cpus=0)
def make_array_task(nbytes: int, seed: int) -> np.ndarray:
    """:func:`make_array` as a Ray task, so that the array is created in the object store of the node it runs on."""
    return make_array(nbytes, seed)


@dataclass
class Method:
    """One way of reading the array, with the seconds of each timed round."""

    name: str
    description: str
    read: Callable[[bool], float]  # read(check) -> seconds of the timed read
    seconds: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        """The median round's time, in seconds."""
        return statistics.median(self.seconds)

    @property
    def best(self) -> float:
        """The fastest round's time, in seconds."""
        return min(self.seconds)


def drop_from_page_cache(*roots: Path) -> None:
    """Write back and drop every file under ``roots`` from the page cache (no root needed)."""
    for root in roots:
        for path in root.rglob("*"):
            try:
                fd = os.open(path, os.O_RDONLY)
            except (IsADirectoryError, FileNotFoundError, PermissionError):
                continue
            try:
                os.fsync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def in_local_object_store(ref: ray.ObjectRef) -> bool:
    """Whether the object is in this node's object store memory (a spilled and evicted one is not)."""
    return ray._private.worker.global_worker.core_worker.object_exists(ref)


def spill_counters(address: str) -> str:
    """Ray's own summary of spilled and restored bytes (it needs grpcio, which Ray's minimal install lacks)."""
    try:
        return memory_summary(address=address, stats_only=True).strip()
    except ImportError as exc:
        return f"not available ({exc}; Ray's summary needs grpcio)"


class RayReadBench:
    """The five ways of reading one array, each a function that times only the read."""

    def __init__(
        self,
        store: ray_integration.HCStore,
        array: np.ndarray,
        *,
        head_store: int,
        other_node: str,
        seed: int,
        cold_roots: tuple[Path, ...],
    ) -> None:
        self.store, self.array, self.head_store = store, array, head_store
        self.other_node, self.seed, self.cold_roots = other_node, seed, cold_roots

    def methods(self) -> list[Method]:
        """The five reads, in the order each round runs them."""
        return [
            Method("get_ref", "ray.get(store.get_ref(key)), end to end", self.read_get_ref),
            Method("in-store", "ray.get, array already in this node's store", self.read_in_store),
            Method("pulled", "ray.get, array in another node's store", self.read_pulled),
            Method("restore", "ray.get, array spilled to disk by Ray", self.read_restore),
            Method("store.get", "store.get(key) into the driver, no object store", self.read_store_get),
        ]

    def read_get_ref(self, check: bool) -> float:
        """Seconds of ``ray.get(store.get_ref(key))``: the local agent assembles the array into the object store."""
        self._cool()
        t0 = time.perf_counter()
        value = ray.get(self.store.get_ref(KEY))
        seconds = time.perf_counter() - t0
        self._check(check, value, "get_ref")
        return seconds

    def read_in_store(self, check: bool) -> float:
        """Seconds of ``ray.get`` of an array already in this node's object store."""
        ref = ray.put(self.array)
        t0 = time.perf_counter()
        value = ray.get(ref)
        seconds = time.perf_counter() - t0
        self._check(check, value, "in-store ray.get")
        return seconds

    def read_pulled(self, check: bool) -> float:
        """Seconds of ``ray.get`` of an array created in another node's object store, which Ray pulls over.

        Raises:
            RuntimeError: the array is not held by the other node alone, so the read would not measure a pull.
        """
        ref = make_array_task.options(label_selector={"ray.io/node-id": self.other_node}).remote(
            self.array.nbytes, self.seed
        )
        ray.wait([ref], fetch_local=False)
        if ray.experimental.get_object_locations([ref])[ref]["node_ids"] != [self.other_node]:
            raise RuntimeError("the pulled array is not held on the other node only")
        t0 = time.perf_counter()
        value = ray.get(ref)
        seconds = time.perf_counter() - t0
        self._check(check, value, "pulled ray.get")
        return seconds

    def read_restore(self, check: bool) -> float:
        """Seconds of ``ray.get`` of an array that Ray spilled to disk and evicted, so that it is restored.

        Raises:
            RuntimeError: Ray did not spill the array, or kept it in memory, so the read would not measure a restore.
        """
        ref = ray.put(self.array)
        evictor = ray.put(np.zeros(self.head_store - self.array.nbytes // 2, dtype=np.uint8))
        del evictor  # it made Ray spill the array and evict it from memory
        if not ray.experimental.get_object_locations([ref])[ref].get("did_spill"):
            raise RuntimeError("Ray did not spill the array: the head's object store is too large for this test")
        if in_local_object_store(ref):
            raise RuntimeError("Ray spilled the array but kept it in memory: ray.get would not restore it")
        self._cool()
        t0 = time.perf_counter()
        value = ray.get(ref)
        seconds = time.perf_counter() - t0
        self._check(check, value, "restored ray.get")
        return seconds

    def read_store_get(self, check: bool) -> float:
        """Seconds of ``store.get(key)``: the driver reads the fragments itself, without the object store."""
        self._cool()
        t0 = time.perf_counter()
        value = self.store.get(KEY)
        seconds = time.perf_counter() - t0
        self._check(check, value, "store.get")
        return seconds

    def _cool(self) -> None:
        if self.cold_roots:
            drop_from_page_cache(*self.cold_roots)

    def _check(self, check: bool, value: np.ndarray, what: str) -> None:
        if check and not (value.dtype == self.array.dtype and np.array_equal(value, self.array)):
            raise AssertionError(f"{what} returned an array that differs from the one stored")


def run_rounds(methods: list[Method], repeats: int) -> None:
    """Read once by every method, checking the values, then time ``repeats`` rounds of them, alternating."""
    for method in methods:  # warm-up: connections, actor handles; checks every value
        method.read(True)
    for round_ in range(repeats):
        line = []
        for method in methods:
            method.seconds.append(method.read(False))
            line.append(f"{method.name} {method.seconds[-1]:.3f} s")
        print(f"  round {round_ + 1}: " + ", ".join(line), flush=True)


def report(methods: list[Method], nbytes: int) -> dict[str, Any]:
    """Print every method's median and best time and rate, and get_ref's ratio to the others; returns the figures."""
    by_name = {m.name: m for m in methods}
    print(f"\n{'method':11s}{'what':50s}{'median s':>10s}{'best s':>10s}{'median MB/s':>13s}{'best MB/s':>12s}")
    for m in methods:
        print(
            f"{m.name:11s}{m.description:50s}{m.median:10.4f}{m.best:10.4f}"
            f"{nbytes / m.median / 1e6:13,.0f}{nbytes / m.best / 1e6:12,.0f}"
        )
    ratios = {}
    print("\nthroughput ratios (above 1: get_ref is faster)")
    for other in ("in-store", "restore", "pulled", "store.get"):
        median = by_name[other].median / by_name["get_ref"].median
        best = by_name[other].best / by_name["get_ref"].best
        ratios[f"get_ref/{other}"] = {"median": median, "best": best}
        print(f"  get_ref / {other:10s} median {median:8.3f}x   best {best:8.3f}x")
    return {
        "methods": {
            m.name: {
                "description": m.description,
                "seconds": m.seconds,
                "median_s": m.median,
                "best_s": m.best,
                "median_mbps": nbytes / m.median / 1e6,
                "best_mbps": nbytes / m.best / 1e6,
            }
            for m in methods
        },
        "ratios": ratios,
    }


def run(
    *, size_mb: int, repeats: int, nodes: int, ec: str, durability: str, cold: bool, json_out: str | None
) -> dict[str, Any]:
    """Start the cluster, deploy hcstore, time every method ``repeats`` times, print and return the figures."""
    nbytes = size_mb * MIB
    head_store = int(HEAD_STORE_FACTOR * nbytes)
    workdir = Path(tempfile.mkdtemp(prefix="hcstore-bench-ray-"))
    mountpaths, spill_dir = workdir / "mountpaths", workdir / "spill"
    spill_dir.mkdir(parents=True)
    common = {"include_dashboard": False, "object_spilling_directory": str(spill_dir)}
    cluster = None
    try:
        cluster = Cluster(
            initialize_head=True, head_node_args={"num_cpus": 2, "object_store_memory": head_store, **common}
        )
        for _ in range(nodes - 1):
            cluster.add_node(num_cpus=1, object_store_memory=int(1.5 * nbytes) + 64 * MIB, **common)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, logging_level="WARNING", log_to_driver=False)
        head = cluster.head_node.node_id
        if ray.get_runtime_context().get_node_id() != head:
            raise RuntimeError("the driver is not on the head node")
        other_node = next(n["NodeID"] for n in ray.nodes() if n["Alive"] and n["NodeID"] != head)
        print(
            f"Ray {ray.__version__}: {nodes} nodes on 127.0.0.1; head object store {head_store / MIB:,.0f} MiB, "
            f"spilling to {spill_dir}",
            flush=True,
        )
        store = ray_integration.deploy(
            mountpaths=[f"{mountpaths}/{{node_id}}/mp0"],
            ec=ec,
            agent={"durability": durability},
            timeout=180,
            progress=print,
        )
        array = make_array(nbytes)
        t0 = time.perf_counter()
        store.put(KEY, array)
        print(
            f"stored a float32 array of {size_mb} MiB in {time.perf_counter() - t0:.2f} s (EC {ec}, "
            f"durability {durability}); page cache: {'dropped before each read' if cold else 'as it is'}\n"
            f"{repeats} rounds, methods alternating:",
            flush=True,
        )
        bench = RayReadBench(
            store,
            array,
            head_store=head_store,
            other_node=other_node,
            seed=0,
            cold_roots=(mountpaths, spill_dir) if cold else (),
        )
        methods = bench.methods()
        run_rounds(methods, repeats)
        figures = report(methods, nbytes)
        print("\nRay's own spill counters: " + spill_counters(cluster.address))
        figures.update(
            {
                "size_bytes": nbytes,
                "repeats": repeats,
                "nodes": nodes,
                "ec": ec,
                "durability": durability,
                "cold": cold,
                "ray": ray.__version__,
                "head_object_store_bytes": head_store,
            }
        )
        if json_out:
            Path(json_out).write_text(json.dumps(figures, indent=2))
        return figures
    finally:
        if ray.is_initialized():
            try:
                ray_integration.shutdown()
            except Exception as exc:  # noqa: BLE001 - reported; Ray and the cluster are still taken down below
                print(f"hcstore shutdown failed: {exc}")
        ray.shutdown()
        if cluster is not None:
            cluster.shutdown()
        shutil.rmtree(workdir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run the benchmark; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mb", type=int, default=256, help="the array's size in MiB")
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds of every method")
    parser.add_argument("--nodes", type=int, default=6, help="Ray nodes, each with one hcstore agent")
    parser.add_argument("--ec", default="4+2")
    parser.add_argument("--durability", default="none", choices=["none", "commit", "always"])
    parser.add_argument(
        "--cold", action="store_true", help="drop fragments and spill files from the page cache before each timed read"
    )
    parser.add_argument("--json-out", default=None, help="also write the figures as JSON to this file")
    args = parser.parse_args(argv)
    run(
        size_mb=args.size_mb,
        repeats=args.repeats,
        nodes=args.nodes,
        ec=args.ec,
        durability=args.durability,
        cold=args.cold,
        json_out=args.json_out,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
