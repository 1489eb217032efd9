"""The agent and controller as Ray actors.

``AgentActor`` runs an :class:`hcstore.node.agent.Agent` on a thread of its actor process,
bound to its node's IP, with the same Prometheus endpoint (``/metrics``, ``/healthz``,
``/readyz``) as an agent process, and serves object-ref reads: a value returned by
:meth:`AgentActor.read` lands in the object store of the agent's node, which is the
caller's node. ``ControllerActor`` runs the :class:`hcstore.control.controller.Controller` (with the cluster
secret it creates, once, in its state directory on the head node) and a
reconciliation loop that keeps exactly one agent on every alive Ray node (as Ray Serve's
proxy manager keeps one proxy per node) and marks the nodes Ray declares dead.

The classes are plain; :mod:`ray_integration.deploy` turns them into actors.
"""

from __future__ import annotations

import functools
import logging
import socket
import threading
import time
from typing import Any

import ray

from hcstore.config import AgentConfig, ControllerConfig
from hcstore.control.controller import Controller
from hcstore.node.agent import Agent
from hcstore.secret import create_secret_file
from hcstore.security import keys
from hcstore.security.allow_list import read_allow_list, with_key, write_allow_list
from hcstore.security.curve import Credentials
from ray_integration.layout import (
    NAMESPACE,
    RayNode,
    agent_keys_directory,
    agent_name,
    controller_keys_directory,
    controller_secret_file,
    labels_for,
    mountpaths_for,
    node_id_for,
    reconcile,
)
from ray_integration.objects import client_for, read_value

log = logging.getLogger(__name__)
AGENT_CONCURRENCY = 16


class AgentActor:
    """One hcstore agent on the Ray node this actor is pinned to."""

    def __init__(self, controller: str, spec: dict[str, Any], controller_key: str = "") -> None:
        ray_node_id = ray.get_runtime_context().get_node_id()
        ip = ray.util.get_node_ip_address()
        self.node_id = node_id_for(ray_node_id)
        node_labels = ray.get_runtime_context().get_node_labels()
        security: dict[str, Any] = {"insecure": True}
        if controller_key:  # a key pair made on this node; the controller allows it when info() answers
            key_dir = agent_keys_directory(self.node_id)
            self.public_key = keys.create(key_dir, self.node_id).public
            security = {"key": str(keys.secret_file(key_dir, self.node_id)), "controller_key": controller_key}
        config = AgentConfig.from_env(
            node_id=self.node_id,
            host=ip,
            controller=controller,
            mountpaths=mountpaths_for(
                spec.get("mountpaths"), ray_node_id=ray_node_id, ip=ip, hostname=socket.gethostname()
            ),
            labels=labels_for(node_labels) or None,
            **security,
            **spec.get("agent", {}),
        )
        self.agent = Agent(config)
        self.public_key = self.agent.credentials.public
        self.controller = controller
        self._thread = threading.Thread(target=self.agent.serve, name=f"hcstore-agent-{self.node_id}", daemon=True)
        self._thread.start()
        self.reads = 0

    def info(self) -> dict[str, Any]:
        """Who this agent is: node ids, endpoint, metrics URL, mountpaths, whether it serves."""
        return {
            "node_id": self.node_id,
            "ray_node_id": ray.get_runtime_context().get_node_id(),
            "endpoint": self.agent.endpoint,
            "metrics": self.agent.metrics_url,
            "mountpaths": list(self.agent.config.mountpaths),
            "serving": self._thread.is_alive(),
            "reads": self.reads,
            "key": self.public_key,
        }

    def read(self, bucket: str, key: str, *, allow_pickle: bool = False) -> Any:
        """The object's value, assembled on this node from the nearest fragments.

        A pickle is unpickled here only when the caller allows it and its MAC verifies
        (see :func:`ray_integration.objects.read_value`).
        """
        self.reads += 1
        credentials = (self.agent.credentials, self.agent.controller_key)  # a node key may read
        client = client_for(self.controller, (("local_node", self.node_id),), credentials=credentials)
        return read_value(client, bucket, key, allow_pickle=allow_pickle)

    def stop(self) -> None:
        """Stop the agent and wait for its thread."""
        self.agent.stop()
        self._thread.join(timeout=10)


class ControllerActor:
    """The cluster's controller and its reconciliation loop (a detached, named actor)."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        secret_file = controller_secret_file(spec.get("controller_dir"))
        create_secret_file(secret_file)  # the first time; kept across restarts, so signed values still verify
        self.key_dir = controller_keys_directory(spec.get("controller_dir"))
        security = {"insecure": True} if spec.get("insecure") else self._make_keys()
        self.controller = Controller(
            ControllerConfig.from_env(
                host=ray.util.get_node_ip_address(),
                ec=spec.get("ec") or None,
                secret_file=secret_file,
                **security,
                **spec.get("intervals", {}),
            )
        )
        self.agents: dict[str, Any] = {}  # Ray node id -> agent actor handle
        self.ready: dict[str, bool] = {}  # Ray node id -> agent answered info()
        self._pending: dict[Any, str] = {}  # info() ref -> Ray node id
        self.events: list[str] = []
        self._stopping = False
        self._lock = threading.Lock()  # the loop and reconcile_now() never overlap
        threading.Thread(target=self.controller.serve, name="hcstore-controller", daemon=True).start()
        self._loop = threading.Thread(target=self._reconcile_forever, name="hcstore-reconcile", daemon=True)
        self._loop.start()

    def _make_keys(self) -> dict[str, Any]:
        """The controller's key pair, and a client and an admin pair for Ray jobs and ``hcstore ray``
        (made once, kept across restarts), allowed in the allow-list beside the agents' keys."""
        keys.create(self.key_dir, "controller")
        allow = f"{self.key_dir}/allow.json"
        grants = read_allow_list(allow)
        for role in ("client", "admin"):
            grants = with_key(grants, keys.create(self.key_dir, role).public, role, f"ray-{role}")
        write_allow_list(allow, grants)
        return {"key": str(keys.secret_file(self.key_dir, "controller")), "keys_file": allow}

    def endpoint(self) -> str:
        """The controller's endpoint, for clients."""
        return self.controller.endpoint

    def key_directory(self) -> str:
        """Where this controller keeps its key pairs and allow-list (on the head node)."""
        return self.key_dir

    def credentials(self, role: str = "client") -> tuple[Credentials, str]:
        """A key pair of ``role`` (client or admin) and the controller's public key, for Ray jobs and
        ``hcstore ray``: whoever may run tasks on this Ray cluster may use its hcstore."""
        if self.spec.get("insecure"):
            return Credentials(), ""
        if role not in ("client", "admin"):
            raise ValueError(f"no {role!r} credentials: ask for client or admin")
        pair = keys.secret_pair(keys.secret_file(self.key_dir, role))
        return Credentials(pair), keys.load(keys.public_file(self.key_dir, "controller")).public

    def spec_of(self) -> dict[str, Any]:
        """The deployment's settings, to compare with a second deploy."""
        return self.spec

    def status(self) -> dict[str, Any]:
        """Agents by Ray node id (ready or starting), the cluster map, and the latest events."""
        return {
            "endpoint": self.controller.endpoint,
            "metrics": self.controller.metrics_url,
            "agents": dict(self.ready),
            "map": self.controller.cluster_map.to_dict(),
            "events": self.events[-50:],
        }

    def reconcile_now(self) -> dict[str, Any]:
        """Reconcile agents with Ray's nodes now; returns :meth:`status`."""
        self._reconcile_once()
        return self.status()

    def shutdown(self) -> None:
        """Stop reconciling, stop and kill every agent, stop the controller."""
        self._stopping = True
        self._loop.join(timeout=10)
        stops = [handle.stop.remote() for handle in self.agents.values()]
        ray.wait(stops, num_returns=len(stops), timeout=15)
        for handle in self.agents.values():
            ray.kill(handle, no_restart=True)
        self.controller.stop()

    # ------------------------------------------------------------------ reconciliation

    def _reconcile_forever(self) -> None:
        interval = float(self.spec.get("reconcile_interval", 1.0))
        while not self._stopping:
            try:
                self._reconcile_once()
            except Exception:  # a failed round is retried; the loop never dies
                log.exception("reconciliation round failed")
            time.sleep(interval)

    def _reconcile_once(self) -> None:
        with self._lock:
            self._reconcile_locked()

    def _reconcile_locked(self) -> None:
        self._collect_ready()
        nodes = [
            RayNode(
                n["NodeID"],
                bool(n["Alive"]),
                n.get("NodeManagerAddress", ""),
                n.get("NodeManagerHostname", ""),
                n.get("Labels") or {},
            )
            for n in ray.nodes()
        ]
        plan = reconcile(nodes, self.agents.keys())
        for node_id in plan.gone:
            self._forget(node_id)
        for node in plan.start:
            self._start_agent(node)

    def _start_agent(self, node: RayNode) -> None:
        name = agent_name(node.node_id)
        try:
            handle = ray.get_actor(name, namespace=NAMESPACE)  # it survived a controller restart
            self._note(f"attached to agent {name}")
        except ValueError:
            handle = (
                agent_actor_class()
                .options(
                    name=name,
                    namespace=NAMESPACE,
                    lifetime="detached",
                    num_cpus=0,
                    label_selector={"ray.io/node-id": node.node_id},  # hard pin: never two on one node
                    max_restarts=-1,
                    max_concurrency=AGENT_CONCURRENCY,
                )
                .remote(self.controller.endpoint, self.spec, self.controller.credentials.public)
            )
            self._note(f"starting agent on node {node.node_id[:12]} ({node.ip})")
        self.agents[node.node_id] = handle
        self.ready[node.node_id] = False
        self._pending[handle.info.remote()] = node.node_id

    def _collect_ready(self) -> None:
        if not self._pending:
            return
        done, _ = ray.wait(list(self._pending), num_returns=len(self._pending), timeout=0)
        for ref in done:
            node_id = self._pending.pop(ref)
            try:
                info = ray.get(ref)
                if info.get("key") and self.controller.credentials.secure:
                    self.controller.allow_node(info["node_id"], info["key"])
                self.ready[node_id] = True
                self._note(f"agent {info['node_id']} serves on {info['endpoint']}")
            except Exception as exc:  # noqa: BLE001 - died while starting (any error): retried if the node is alive
                self._note(f"agent on node {node_id[:12]} failed to start: {exc}")
                self.agents.pop(node_id, None)
                self.ready.pop(node_id, None)

    def _forget(self, ray_node_id: str) -> None:
        handle = self.agents.pop(ray_node_id, None)
        self.ready.pop(ray_node_id, None)
        if handle is not None:
            ray.kill(handle, no_restart=True)
        self.controller.mark_dead(node_id_for(ray_node_id))
        self._note(f"node {ray_node_id[:12]} died: its agent is marked down")

    def _note(self, event: str) -> None:
        log.info(event)
        self.events.append(f"{time.strftime('%H:%M:%S')} {event}")


@functools.cache
def agent_actor_class() -> Any:
    """The Ray actor class of an agent (made once per process)."""
    return ray.remote(AgentActor)


@functools.cache
def controller_actor_class() -> Any:
    """The Ray actor class of the controller (made once per process)."""
    return ray.remote(ControllerActor)
