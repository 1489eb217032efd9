"""A real multi-node Ray cluster on this machine (``ray.cluster_utils.Cluster``) with hcstore deployed.

Every Ray process is kept on loopback: ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, set by the
top-level conftest before anything imports Ray, makes Ray pick 127.0.0.1 as each node's
address (its setting for single-machine clusters), so the agents bind 127.0.0.1 too and
nothing listens on another address.
One cluster serves the whole session (the examples' ``local_ray``, which also has Ray mark a node
killed without warning dead within seconds); tests that kill a node add a fresh one first.
Ray's worker processes get this folder on their path, so functions defined in the test
modules (a Ray Train loop, say) unpickle there.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent
os.environ["PYTHONPATH"] = os.pathsep.join(
    [str(_HERE), str(_HERE.parent / "integration"), *filter(None, [os.environ.get("PYTHONPATH")])]
)

sys.path.insert(0, str(_HERE.parents[1] / "examples"))

import local_ray  # noqa: E402 - before ray: Ray's settings for a cluster on this machine
import pytest  # noqa: E402

import ray_integration  # noqa: E402

NODES = 4  # the head and three workers; each its own Ray node with its own mountpaths
INTERVALS = {"heartbeat": 0.5, "suspect_after": 1.5, "down_after": 3.0, "out_after": 600.0}


@pytest.fixture(scope="session")
def ray_cluster():
    nodes = [{"num_cpus": 2}] * (NODES - 1)
    with local_ray.local_ray_cluster(head={"num_cpus": 2}, nodes=nodes, prefix="hcstore-ray-tests-") as (cluster, _, _):
        yield cluster


@pytest.fixture(scope="session")
def store(ray_cluster, tmp_path_factory):
    """hcstore deployed on every node of ``ray_cluster``: EC 2+1, two mountpaths per node."""
    root = tmp_path_factory.mktemp("ray-mountpaths")
    handle = ray_integration.deploy(
        mountpaths=[f"{root}/{{node_id}}/mp0", f"{root}/{{node_id}}/mp1"],
        ec="2+1",
        agent={"durability": "none"},
        intervals=INTERVALS,
        reconcile_interval=0.5,
        controller_dir=str(root / "controller"),  # its cluster secret: this session's, not the temp dir's
        timeout=180,
    )
    try:
        yield handle
    finally:
        ray_integration.shutdown()
