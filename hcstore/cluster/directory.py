"""The cluster directory: the files through which a local cluster is found and its map is read.

Layout of a cluster directory::

    cluster.json                 the cluster's EC and its nodes: id, weight, labels (written by `up`)
    controller.toml              the controller's config (hcstore.config.ControllerConfig)
    controller.json              written by the controller when it serves: endpoint and pid
    keys/cluster.secret          the cluster secret, read by the controller (0600; hcstore.secret)
    agents/<node>/agent.toml     the agent's config (hcstore.config.AgentConfig): mountpaths, port, ...
    agents/<node>/agent.json     written by the agent when it serves: endpoint and pid
    agents/<node>/agent.log      the agent's log
    agents/<node>/mp<i>/         mountpath directories

The cluster map is derived from these files when no controller runs: a node whose
``agent.json`` is missing is *down*. How a cluster directory (or a controller endpoint)
is found is :mod:`hcstore.cluster.source`'s job.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from placement import ClusterMap, Node

CLUSTER_FORMAT = 1


def read_cluster_map(path: str | os.PathLike[str]) -> ClusterMap:
    """The cluster map of a local cluster directory (agents without a ready file are down)."""
    spec = json.loads((Path(path) / "cluster.json").read_text())
    nodes = []
    for node in spec["nodes"]:
        ready = Path(path) / "agents" / node["id"] / "agent.json"
        try:
            endpoint = json.loads(ready.read_text())["endpoint"]
            state = "alive"
        except (OSError, ValueError, KeyError):
            endpoint, state = "", "down"
        nodes.append(Node(node["id"], endpoint, node.get("weight", 1.0), node.get("labels", {}), state))
    return ClusterMap(spec.get("epoch", 1), tuple(nodes))


def read_cluster_ec(path: str | os.PathLike[str]) -> str:
    """The erasure-coding scheme a local cluster was created with."""
    return json.loads((Path(path) / "cluster.json").read_text()).get("ec", "4+2")


def controller_endpoint(path: str | os.PathLike[str]) -> str:
    """The endpoint of the local cluster's controller ("" when it is not running)."""
    try:
        return json.loads((Path(path) / "controller.json").read_text())["endpoint"]
    except (OSError, ValueError, KeyError):
        return ""


def map_stamp(path: str | os.PathLike[str]) -> tuple[float, ...]:
    """Modification times of the files a cluster map is read from (changes when an agent restarts)."""
    root = Path(path)
    files = [root / "cluster.json", *sorted((root / "agents").glob("*/agent.json"))]
    return tuple(f.stat().st_mtime_ns for f in files if f.exists()) + (len(files),)
