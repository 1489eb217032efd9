"""A multi-node Ray cluster on this one machine, for the examples. Import it before ray.

Every Ray node gets 127.0.0.1 as its address (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``,
Ray's setting for single-machine clusters), so the hcstore agents bind loopback too.
"""

from __future__ import annotations

import os

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # every Ray node on 127.0.0.1
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
# A node killed without warning is marked dead after 3 failed health checks 1 s apart (Ray's default: 5, 3 s
# apart, 15 s), so that the examples' Ray Train restarts its workers and hcstore's controller drops the lost
# node's agent sooner. Ray's GCS reads these when it starts.
os.environ.setdefault("RAY_health_check_period_ms", "1000")
os.environ.setdefault("RAY_health_check_failure_threshold", "3")

import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import ray
from ray.cluster_utils import Cluster

import ray_integration


@contextmanager
def local_ray_cluster(
    *, head: dict[str, Any], nodes: Sequence[dict[str, Any]], prefix: str
) -> Iterator[tuple[Cluster, list[Any], str]]:
    """``(cluster, node handles, work dir)``: Ray started and connected; everything torn down on exit.

    ``head`` and each of ``nodes`` are ``Cluster.add_node`` arguments (``num_cpus``, ``resources``, ...).
    hcstore, if deployed inside the block, is shut down first; the work dir is removed last.
    """
    workdir = tempfile.mkdtemp(prefix=prefix)
    cluster = Cluster(initialize_head=True, head_node_args={"include_dashboard": False, **head})
    try:
        handles = [cluster.add_node(**node) for node in nodes]
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, logging_level="WARNING", log_to_driver=False)
        yield cluster, handles, workdir
    finally:
        if ray.is_initialized():
            try:
                ray_integration.shutdown()
            except Exception as exc:  # noqa: BLE001 - not deployed, or already gone: teardown goes on regardless
                print(f"hcstore shutdown: {exc}")
            finally:
                ray.shutdown()
        cluster.shutdown()
        shutil.rmtree(workdir, ignore_errors=True)
        print("cluster stopped")
