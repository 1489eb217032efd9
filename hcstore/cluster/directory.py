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
    keys/                        CurveZMQ keys (0700): NAME.key (public) and NAME.key_secret (0600)
                                 for the controller, each node and the owner's admin key
    keys/allow.json              the allow-list the controller starts from (public keys and roles)

The cluster map is derived from these files when no controller runs: a node whose
``agent.json`` is missing is *down*. How a cluster directory (or a controller endpoint)
is found is :mod:`hcstore.cluster.source`'s job.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from hcstore.errors import LocalFileError
from hcstore.security import keys
from hcstore.security.allow_list import read_allow_list
from placement import ClusterMap, Node

CLUSTER_FORMAT = 1
KEYS = "keys"
ADMIN_KEY = "admin"
CONTROLLER_KEY = "controller"


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
        key = _public_key(Path(path), node["id"])
        nodes.append(Node(node["id"], endpoint, node.get("weight", 1.0), node.get("labels", {}), state, key))
    return ClusterMap(spec.get("epoch", 1), tuple(nodes), read_allow_list(allow_list_file(path)))


def _public_key(path: Path, node_id: str) -> str:
    """The public key in ``keys/NODE.key`` ("" when there is none: an insecure cluster)."""
    try:
        return keys.load(keys.public_file(keys_directory(path), node_id)).public
    except LocalFileError:
        return ""


def keys_directory(path: str | os.PathLike[str]) -> Path:
    """Where a local cluster keeps its keys."""
    return Path(path) / KEYS


def admin_key_file(path: str | os.PathLike[str]) -> Path:
    """The secret key file of the local cluster's owner (role admin)."""
    return keys.secret_file(keys_directory(path), ADMIN_KEY)


def controller_key_file(path: str | os.PathLike[str]) -> Path:
    """The controller's public key file."""
    return keys.public_file(keys_directory(path), CONTROLLER_KEY)


def allow_list_file(path: str | os.PathLike[str]) -> Path:
    """The allow-list the local cluster's controller starts from."""
    return keys_directory(path) / "allow.json"


def is_insecure(path: str | os.PathLike[str]) -> bool:
    """Whether the local cluster was made to run without authentication (``hcstore up --insecure``)."""
    try:
        return bool(json.loads((Path(path) / "cluster.json").read_text()).get("insecure", False))
    except (OSError, ValueError):
        return False


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
