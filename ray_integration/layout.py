"""Pure rules of a Ray deployment: names, per-node mountpaths, and what reconciliation must do.

Nothing here talks to Ray; :mod:`ray_integration.deploy` feeds these functions
Ray's node table and acts on their answers.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

NAMESPACE = "hcstore"
CONTROLLER_NAME = "hcstore-controller"
AGENT_PREFIX = "hcstore-agent-"
_SHORT_ID = 16  # hex digits of a Ray node id kept in the hcstore node id

DEFAULT_MOUNTPATHS: tuple[str, ...] = (os.path.join(tempfile.gettempdir(), "hcstore-ray", "{node_id}"),)
DEFAULT_CONTROLLER_DIR = os.path.join(tempfile.gettempdir(), "hcstore-ray", "controller")
SECRET_PATH = ("keys", "cluster.secret")  # under the controller's directory, as in a local cluster's
LABEL_KEYS = {"zone": "zone", "ray.io/availability-zone": "zone", "rack": "rack", "host": "host"}


def node_id_for(ray_node_id: str) -> str:
    """The hcstore node id of the agent on a Ray node (stable: the same Ray node, the same id)."""
    if len(ray_node_id) < _SHORT_ID or any(c not in "0123456789abcdef" for c in ray_node_id):
        raise ValueError(f"not a Ray node id (hex): {ray_node_id!r}")
    return f"ray-{ray_node_id[:_SHORT_ID]}"


def agent_name(ray_node_id: str) -> str:
    """The detached actor name of the agent on a Ray node."""
    return AGENT_PREFIX + ray_node_id


def mountpaths_for(
    spec: Mapping[str, Sequence[str]] | Sequence[str] | None, *, ray_node_id: str, ip: str = "", hostname: str = ""
) -> tuple[str, ...]:
    """The mountpaths of one node's agent.

    ``spec`` is a list of path templates for every node, or a mapping from a Ray node id,
    IP address or hostname (or ``"default"``) to such a list. Templates may use
    ``{node_id}`` (the hcstore node id), ``{ray_node_id}``, ``{ip}`` and ``{hostname}``:
    several Ray nodes on one machine need ``{node_id}`` so that each gets its own directories.

    Raises:
        ValueError: no entry applies to this node, or an entry is empty or uses an unknown field.
    """
    if spec is None:
        templates: Sequence[str] = DEFAULT_MOUNTPATHS
    elif isinstance(spec, Mapping):
        for key in (ray_node_id, ip, hostname, "default"):
            if key and key in spec:
                templates = spec[key]
                break
        else:
            raise ValueError(
                f"mountpaths: no entry for node {ray_node_id} ({ip or '?'}, {hostname or '?'}) and no 'default'"
            )
    else:
        templates = spec
    if isinstance(templates, str) or not templates:
        raise ValueError(f"mountpaths: expected a non-empty list of directories, got {templates!r}")
    fields = {"node_id": node_id_for(ray_node_id), "ray_node_id": ray_node_id, "ip": ip, "hostname": hostname}
    try:
        return tuple(str(t).format(**fields) for t in templates)
    except (KeyError, IndexError) as exc:
        raise ValueError(f"mountpaths: unknown template field {exc} (use {', '.join(sorted(fields))})") from None


def controller_keys_directory(controller_dir: str | None) -> str:
    """Where the controller actor keeps its key pairs and the allow-list (beside the cluster secret)."""
    return os.path.join(controller_dir or DEFAULT_CONTROLLER_DIR, SECRET_PATH[0])


def agent_keys_directory(node_id: str) -> str:
    """Where an agent actor keeps its key pair, on its own node (the secret never leaves it)."""
    return os.path.join(tempfile.gettempdir(), "hcstore-ray", "keys", node_id)


def controller_secret_file(controller_dir: str | None) -> str:
    """The cluster secret's file under the controller's state directory (default: one under the temp dir)."""
    return os.path.join(controller_dir or DEFAULT_CONTROLLER_DIR, *SECRET_PATH)


def labels_for(ray_labels: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    """hcstore failure-domain labels (zone, rack, host) taken from a Ray node's labels."""
    found = {ours: _one(ray_labels[theirs]) for theirs, ours in LABEL_KEYS.items() if ray_labels.get(theirs)}
    return tuple(sorted(found.items()))


def _one(value: Any) -> str:
    return str(value[0]) if isinstance(value, (list, tuple)) else str(value)


@dataclass(frozen=True)
class RayNode:
    """One row of Ray's node table, as reconciliation needs it."""

    node_id: str
    alive: bool
    ip: str = ""
    hostname: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Reconciliation:
    """What the controller must do to have exactly one agent per alive Ray node."""

    start: tuple[RayNode, ...] = ()  # alive nodes with no agent (or a dead one): start one
    gone: tuple[str, ...] = ()  # Ray node ids that died with an agent: drop it, mark it down


def reconcile(nodes: Sequence[RayNode], agents: Collection[str]) -> Reconciliation:
    """Compare Ray's nodes with the Ray node ids we hold an agent for.

    A node may appear in Ray's table both dead (an old incarnation) and alive; alive wins.
    """
    alive = {n.node_id: n for n in nodes if n.alive}
    start = tuple(n for node_id, n in sorted(alive.items()) if node_id not in agents)
    gone = tuple(sorted(node_id for node_id in agents if node_id not in alive))
    return Reconciliation(start, gone)
