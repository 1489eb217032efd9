"""Deploy hcstore on a Ray cluster, attach to a running deployment, or take it down.

``deploy`` starts the controller as a detached, named actor on the head node; the
controller's reconciliation loop then starts one agent actor on every alive node
(hard-pinned with ``label_selector={"ray.io/node-id": ...}``) and keeps doing so as
nodes join and die. Deploying twice attaches to the running deployment.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import ray

from hcstore.config import AgentConfig, ControllerConfig
from hcstore.control.membership import Intervals
from hcstore.errors import ClusterNotFound, InvalidRequest
from ray_integration.actors import controller_actor_class
from ray_integration.handle import HCStore
from ray_integration.layout import CONTROLLER_NAME, NAMESPACE, node_id_for
from ray_integration.lookup import controller_actor

log = logging.getLogger(__name__)
HEAD_NODE_RESOURCE = "node:__internal_head__"
PER_NODE_SETTINGS = ("node_id", "host", "controller", "mountpaths", "labels")  # set by each agent actor


def deploy(
    *,
    mountpaths: Mapping[str, Sequence[str]] | Sequence[str] | None = None,
    ec: str = "4+2",
    bucket: str = "ray",
    agent: Mapping[str, Any] | None = None,
    intervals: Mapping[str, float] | None = None,
    reconcile_interval: float = 1.0,
    controller_dir: str | None = None,
    insecure: bool = False,
    timeout: float = 120.0,
    progress: Callable[[str], None] | None = None,
) -> HCStore:
    """Start hcstore on the connected Ray cluster (``ray.init`` first), or attach to it if running.

    Args:
        mountpaths: directories for every node's agent, or a mapping from Ray node id, IP or
            hostname (or ``"default"``) to directories; templates may use ``{node_id}``
            (see :func:`ray_integration.layout.mountpaths_for`). Default: a directory under
            the temp dir per node.
        ec: the cluster's default erasure coding, e.g. ``"4+2"``.
        bucket: the bucket of the returned handle.
        agent: further :class:`hcstore.config.AgentConfig` settings, e.g. ``{"durability": "none"}``.
        intervals: failure-detection timing (``heartbeat``, ``suspect_after``, ``down_after``,
            ``out_after`` seconds; see :class:`hcstore.control.membership.Intervals`).
        reconcile_interval: seconds between comparisons of Ray's node table with the agents.
        controller_dir: the controller's state directory on the head node, where it creates the
            cluster secret (``keys/cluster.secret``, ``0600``) the first time and finds it after a
            restart, and its key pairs and allow-list (``keys/``). Default: ``hcstore-ray/controller``
            under the head node's temp dir.
        insecure: no keys: plain ZeroMQ without authentication (a trusted network only). By default
            the controller makes its key pair and a client and an admin pair, every agent makes its
            own on its node, and Ray jobs get the client pair from the controller actor.
        timeout: seconds to wait until every alive node has a serving agent.
        progress: called with a line of text as the deployment comes up.

    Raises:
        InvalidRequest: a setting in ``agent`` or ``intervals`` is unknown, invalid, or chosen per node.
        ClusterNotFound: the agents did not all come up within ``timeout``.
    """
    check_settings(agent or {}, intervals or {})
    if not ray.is_initialized():
        raise ClusterNotFound("Ray is not initialized: call ray.init(...) before ray_integration.deploy()")
    spec = {
        "mountpaths": _plain(mountpaths),
        "ec": ec,
        "agent": dict(agent or {}),
        "intervals": dict(intervals or {}),
        "reconcile_interval": reconcile_interval,
        "controller_dir": controller_dir,
        **({"insecure": True} if insecure else {}),
    }
    controller = (
        controller_actor_class()
        .options(
            name=CONTROLLER_NAME,
            namespace=NAMESPACE,
            lifetime="detached",
            get_if_exists=True,
            num_cpus=0,
            resources={HEAD_NODE_RESOURCE: 0.001},
            max_concurrency=8,
        )
        .remote(spec)
    )
    running = ray.get(controller.spec_of.remote())
    if running != spec:
        log.warning(
            "attached to a running hcstore deployment whose settings differ from those asked for: %s",
            {k: running.get(k) for k in spec if running.get(k) != spec[k]},
        )
    endpoint = ray.get(controller.endpoint.remote())
    wait_until_ready(controller, timeout=timeout, progress=progress)
    return HCStore(endpoint, bucket)


def attach(*, bucket: str = "ray") -> HCStore:
    """A handle on the deployment already running on the connected Ray cluster.

    Raises:
        ClusterNotFound: hcstore is not deployed on this Ray cluster.
    """
    return HCStore(ray.get(controller_actor().endpoint.remote()), bucket)


def shutdown() -> None:
    """Stop every agent and the controller (the data stays in the mountpaths)."""
    running = controller_actor()
    try:
        ray.get(running.shutdown.remote(), timeout=60)
    finally:
        ray.kill(running, no_restart=True)


def wait_until_ready(controller: Any, *, timeout: float, progress: Callable[[str], None] | None = None) -> None:
    """Wait until every alive Ray node has an agent that serves and is alive in the cluster map."""
    deadline = time.monotonic() + timeout
    last = ""
    while True:
        state = ray.get(controller.reconcile_now.remote())
        alive = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
        in_map = {n["id"] for n in state["map"]["nodes"] if n["state"] == "alive"}
        ready = {node for node in alive if state["agents"].get(node) and node_id_for(node) in in_map}
        line = f"hcstore agents serving on {len(ready)} of {len(alive)} Ray nodes"
        if progress and line != last:
            progress(line)
            last = line
        if ready == alive:
            return
        if time.monotonic() > deadline:
            raise ClusterNotFound(f"{line} after {timeout:.0f} s; the controller's events: {state['events'][-5:]}")
        time.sleep(0.25)


def check_settings(agent: Mapping[str, Any], intervals: Mapping[str, float]) -> None:
    """Reject, before anything starts, settings the agents or the controller would reject.

    The actors build their configs from the same settings with :meth:`hcstore.config._Settings.from_env`
    (these settings beat ``HCSTORE_*`` variables, which beat the defaults).
    """
    per_node = sorted(set(agent) & set(PER_NODE_SETTINGS))
    if per_node:
        raise InvalidRequest(
            f"agent setting(s) {', '.join(per_node)} are chosen per node by the deployment: "
            "pass deploy(mountpaths=...); labels come from the Ray nodes' labels"
        )
    unknown = sorted(set(intervals) - {f.name for f in dataclasses.fields(Intervals)})
    if unknown:
        raise InvalidRequest(
            f"unknown interval(s) {', '.join(unknown)}: use heartbeat, suspect_after, down_after, out_after"
        )
    AgentConfig.load(None, environ={}, **agent)
    ControllerConfig.load(None, environ={}, **intervals)


def _plain(mountpaths: Mapping[str, Sequence[str]] | Sequence[str] | None) -> Any:
    if mountpaths is None:
        return None
    if isinstance(mountpaths, Mapping):
        return {str(k): [str(p) for p in v] for k, v in mountpaths.items()}
    return [str(p) for p in mountpaths]
