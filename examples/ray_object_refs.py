"""hcstore on Ray: numpy arrays as object refs on every node, a Ray Data round trip, a node lost without warning.

    python examples/ray_object_refs.py [--quick]

This starts six Ray nodes on this machine (``ray.cluster_utils.Cluster``, all on
127.0.0.1), deploys hcstore with EC 4+2 (one agent per node, its fragments in a
temp dir), and takes everything down at the end. It needs about 2 GiB of memory
and a minute or two. ``--quick`` is a smoke run: four nodes with EC 2+1, one small
array, and no wait for Ray to declare the lost node dead.

On a real cluster, skip the local cluster and deploy on the one you have::

    ray.init(address="auto")
    store = ray_integration.deploy(mountpaths={"default": ["/nvme0/hcstore"]}, ec="4+2")
    weights = ray.get(store.get_ref("weights"))       # in any task: a zero-copy view on its own node

The deployment outlives the driver (detached actors); ``ray_integration.attach()``
finds it again and ``ray_integration.shutdown()`` stops it, leaving the data on disk.
"""

from __future__ import annotations

import argparse
import logging
import time

import local_ray  # before ray: it keeps every Ray node on 127.0.0.1
import numpy as np
import ray

import ray_integration

NODES, EC = 6, "4+2"  # EC 4+2 puts each object's six fragments on six different nodes
QUICK_NODES, QUICK_EC = 4, "2+1"  # --quick: three fragments on three of four nodes


@ray.remote(num_cpus=0)
def read_here(store: ray_integration.HCStore, key: str, expected: np.ndarray) -> str:
    """Read ``key`` through an object ref assembled on this task's own node; return the node's id."""
    array = ray.get(store.get_ref(key))  # read-only, zero-copy view into this node's object store
    assert np.array_equal(array, expected), f"{key} differs"
    return ray.get_runtime_context().get_node_id()


def read_on_every_node(store: ray_integration.HCStore, arrays: dict[str, np.ndarray], nodes: list[str]) -> None:
    """Read every array back in a task pinned to each node in turn, checking each value and where it ran."""
    for node in nodes:
        t0 = time.monotonic()
        pinned = read_here.options(label_selector={"ray.io/node-id": node})
        assert ray.get([pinned.remote(store, key, array) for key, array in arrays.items()]) == [node] * len(arrays)
        print(f"  node {node[:8]}: read {len(arrays)} arrays via get_ref, all equal ({time.monotonic() - t0:.2f} s)")


def main() -> None:
    """Start a local Ray cluster, deploy hcstore, store arrays and read them back through object refs."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"smoke run: {QUICK_NODES} nodes, EC {QUICK_EC}, one small array, no wait for Ray to notice the lost node",
    )
    args = parser.parse_args()
    node_count, ec = (QUICK_NODES, QUICK_EC) if args.quick else (NODES, EC)
    shapes = [(64, 1024)] if args.quick else [(256, 1024 * (i + 1)) for i in range(3)]
    with local_ray.local_ray_cluster(
        head={"num_cpus": 2},
        prefix="hcstore-ray-example-",
        nodes=[{"num_cpus": 1, "object_store_memory": 100 * 2**20}] * (node_count - 1),
    ) as (cluster, workers, workdir):
        ray.data.DataContext.get_current().enable_progress_bars = False
        logging.getLogger("ray.data").setLevel(logging.WARNING)
        print(f"Ray cluster: {node_count} nodes on this machine; hcstore fragments under {workdir}")

        store = ray_integration.deploy(
            mountpaths=[f"{workdir}/{{node_id}}/mp0"],
            ec=ec,
            agent={"durability": "none"},
            progress=lambda line: print(" ", line),
        )

        rng = np.random.default_rng(0)
        arrays = {f"arrays/{i}": rng.standard_normal(shape, dtype=np.float32) for i, shape in enumerate(shapes)}
        for key, array in arrays.items():
            store.put(key, array)
            print(f"put {key}: float32 {array.shape}, {array.nbytes / 2**20:.2f} MiB")

        ray_nodes = sorted(n["NodeID"] for n in ray.nodes() if n["Alive"])
        print("reading back from a task pinned to each node (the first task on a node starts a Ray worker there):")
        read_on_every_node(store, arrays, ray_nodes)

        rows = [{"key": f"{i:03d}", "bytes": bytes([i]) * 10_000} for i in range(20)]
        ray.data.from_items(rows).write_datasink(ray_integration.HCStoreDatasink(store, "rows/"))
        back = ray_integration.read_hcstore(store, "rows/").take_all()
        assert sorted((r["key"], r["bytes"]) for r in back) == [("rows/" + r["key"], r["bytes"]) for r in rows]
        print(f"Ray Data: wrote {len(rows)} rows as objects under rows/, read them back with read_hcstore")

        victim = workers[-1]
        cluster.remove_node(victim, allow_graceful=False)  # its raylet and processes are SIGKILLed
        survivors = [node for node in ray_nodes if node != victim.node_id]
        print(
            f"killed node {victim.node_id[:8]} without warning: the fragments it held are gone "
            "(Ray logs the unexpected termination below)"
        )

        killed_at = time.monotonic()
        read_on_every_node(store, arrays, survivors)  # at once: missing fragments are rebuilt from parity
        if args.quick:
            print("read every array back on the surviving nodes: done (--quick)")
            return

        def victim_alive() -> bool:  # until Ray notices, it may still schedule tasks there
            return any(n["NodeID"] == victim.node_id and n["Alive"] for n in ray.nodes())

        while victim_alive() and time.monotonic() < killed_at + 120:
            time.sleep(0.5)
        print(f"Ray declared the node dead {time.monotonic() - killed_at:.0f} s after the kill")
        back = ray_integration.read_hcstore(store, "rows/").take_all()
        assert sorted(r["bytes"] for r in back) == sorted(r["bytes"] for r in rows)
        print(f"Ray Data: read the {len(rows)} rows back, all equal")


if __name__ == "__main__":
    main()
