"""The embedded local cluster: N agent processes on this machine.

``hcstore up`` creates a cluster directory and starts one agent process per
node in its own session (so it outlives the CLI), each with P mountpath
directories; ``hcstore down`` stops them. Tests use the same class and its
fault verbs (``kill``, ``pause``, ``resume``, ``restart``), in the spirit of
tahoe-lafs's no-network grid, but with real processes, sockets and files.

Every daemon is started as ``python -m MODULE --config FILE`` from its TOML config in the
cluster directory (``controller.toml``, ``agents/<node>/agent.toml``): the files hold the
settings that differ from the defaults, and are the daemons' whole configuration (the
caller's ``HCSTORE_*`` variables are not passed on to them). The directory's files are
described in :mod:`hcstore.cluster.directory`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hcstore.cluster.directory import (
    ADMIN_KEY,
    CLUSTER_FORMAT,
    CONTROLLER_KEY,
    allow_list_file,
    controller_endpoint,
    controller_key_file,
    keys_directory,
    read_cluster_map,
)
from hcstore.cluster.source import ClusterSource
from hcstore.coding import parse_ec_spec
from hcstore.config import ENV_PREFIX, AgentConfig, ClientConfig, ControllerConfig
from hcstore.control.membership import ADMIN_STATES, Intervals
from hcstore.errors import (
    ClusterExists,
    ClusterNotFound,
    InvalidRequest,
    NodeNotFound,
    StartFailed,
    Timeout,
)
from hcstore.files import write_json_atomic
from hcstore.secret import SECRET_FILE, create_secret_file
from hcstore.security import keys
from hcstore.security.allow_list import write_allow_list
from placement import ClusterMap, Grant

DEFAULT_AGENTS = 6
DEFAULT_MOUNTPATHS = 2  # directories per agent
CONTROLLER_CONFIG = "controller.toml"
AGENT_CONFIG = "agent.toml"


@dataclass
class AgentProcess:
    """One agent of a local cluster."""

    node_id: str
    directory: Path
    mountpaths: list[Path]
    port: int = 0
    labels: dict[str, str] = field(default_factory=dict)

    @property
    def ready_file(self) -> Path:
        """The file the agent writes when it serves (endpoint and pid)."""
        return self.directory / "agent.json"

    @property
    def config_file(self) -> Path:
        """The agent's TOML config file."""
        return self.directory / AGENT_CONFIG

    @property
    def log_file(self) -> Path:
        """The agent's log."""
        return self.directory / "agent.log"

    def pid(self) -> int | None:
        """The pid in the agent's ready file (None when it is not serving)."""
        return _ready_pid(self.ready_file)


class LocalCluster:
    """A cluster of agent processes on this machine, rooted at one directory."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path).resolve()

    # ------------------------------------------------------------------ lifecycle

    @classmethod
    def create(
        cls,
        path: str | os.PathLike[str],
        *,
        agents: int = DEFAULT_AGENTS,
        ec: str = ClientConfig.ec,
        mountpaths_per_agent: int = DEFAULT_MOUNTPATHS,
        durability: str | None = None,
        capacity_bytes: int | None = None,
        high_watermark: float | None = None,
        labels: list[dict[str, str]] | None = None,
        intervals: Intervals | None = None,
        scan_interval: float | None = None,
        repair_rate: float | None = None,
        scrub_interval: float | None = None,
        insecure: bool = False,
    ) -> LocalCluster:
        """Write a new cluster directory: its node list, ``controller.toml``, each ``agent.toml``, the
        cluster secret, and the keys (``keys/``: a pair for the controller, each node and the owner,
        and the allow-list).

        Starts nothing (see :meth:`start`). Settings left None keep the defaults of
        :class:`~hcstore.config.AgentConfig` and :class:`~hcstore.config.ControllerConfig`;
        ``labels`` has one dict per agent (default ``{"host": node_id}``). ``insecure`` makes a
        cluster without keys: plain ZeroMQ, no authentication.

        Raises:
            InvalidRequest: a setting is invalid (nothing is written then).
            ClusterExists: the directory already holds a cluster.
        """
        if agents < 1 or mountpaths_per_agent < 1:
            raise InvalidRequest(
                f"need at least one agent and one mountpath each, got {agents} and {mountpaths_per_agent}"
            )
        if labels is not None and len(labels) != agents:
            raise InvalidRequest(f"labels: need one dict per agent ({agents}), got {len(labels)}")
        parse_ec_spec(ec, what="ec")
        cluster = cls(path)
        if (cluster.path / "cluster.json").exists():
            raise ClusterExists(
                f"{cluster.path} already holds a cluster; run `hcstore down` or choose another --data-dir"
            )
        key_dir = keys_directory(cluster.path)
        secured: dict[str, Any] = (
            {"insecure": True}
            if insecure
            else {
                "key": str(keys.secret_file(key_dir, CONTROLLER_KEY)),
                "keys_file": str(allow_list_file(cluster.path)),
            }
        )
        controller = ControllerConfig(
            ec=ec,
            ready_file=str(cluster.controller_ready_file),
            log_file=str(cluster.path / "controller.log"),
            **secured,
            secret_file=str(cluster.secret_file),
            **(dataclasses.asdict(intervals) if intervals else {}),
        )
        template = AgentConfig(
            **({"insecure": True} if insecure else {"controller_key": str(controller_key_file(cluster.path))}),
            **_given(
                durability=durability,
                capacity_bytes=capacity_bytes,
                high_watermark=high_watermark,
                scan_interval=scan_interval,
                repair_rate=repair_rate,
                scrub_interval=scrub_interval,
                heartbeat=controller.heartbeat,
            ),
        )
        nodes = [
            cluster._node_config(template, f"n{i + 1}", mountpaths_per_agent, labels[i] if labels else None)
            for i in range(agents)
        ]
        cluster.path.mkdir(parents=True, exist_ok=True)
        if not insecure:
            cluster._make_keys([c.node_id for c in nodes])
        create_secret_file(cluster.secret_file)
        controller.write(cluster.path / CONTROLLER_CONFIG)
        for config in nodes:
            cluster._write_agent_config(config)
        write_json_atomic(
            cluster.path / "cluster.json",
            {
                "format": CLUSTER_FORMAT,
                "epoch": 1,
                "ec": ec,
                "nodes": [_roster_entry(c) for c in nodes],
                **({"insecure": True} if insecure else {}),
            },
            indent=2,
        )
        return cluster

    def _make_keys(self, node_ids: list[str]) -> None:
        """Key pairs for the controller, the owner (admin) and each node, and the allow-list naming them."""
        key_dir = keys_directory(self.path)
        keys.create(key_dir, CONTROLLER_KEY)
        grants = [Grant(keys.create(key_dir, ADMIN_KEY).public, "admin", "owner")]
        grants += [Grant(keys.create(key_dir, node_id).public, "node", node_id) for node_id in node_ids]
        write_allow_list(allow_list_file(self.path), grants)

    def _node_config(
        self, template: AgentConfig, node_id: str, mountpaths: int, labels: dict[str, str] | None
    ) -> AgentConfig:
        """One node's agent config: ``template``'s settings, this node's id, directories and labels."""
        directory = self.path / "agents" / node_id
        return template.replace(
            node_id=node_id,
            labels={"host": node_id} if labels is None else labels,
            mountpaths=tuple(str(directory / f"mp{j}") for j in range(mountpaths)),
            state_dir=str(directory),
            ready_file=str(directory / "agent.json"),
            log_file=str(directory / "agent.log"),
            port=0,
            controller="",
            key="" if template.insecure else str(keys.secret_file(keys_directory(self.path), node_id)),
        )

    def agent_config(self, node_id: str) -> AgentConfig:
        """The config of a node's agent, as its file says (the environment is not read)."""
        return AgentConfig.load(self.path / "agents" / node_id / AGENT_CONFIG, environ={})

    def controller_config(self) -> ControllerConfig:
        """The controller's config, as its file says (the environment is not read)."""
        if not (self.path / CONTROLLER_CONFIG).exists():
            raise ClusterNotFound(
                f"{self.path} has no {CONTROLLER_CONFIG} (it was created by an older hcstore): "
                "remove it with `hcstore down --purge` and create it again with `hcstore up`"
            )
        return ControllerConfig.load(self.path / CONTROLLER_CONFIG, environ={})

    def _write_agent_config(self, config: AgentConfig) -> None:
        directory = self.path / "agents" / config.node_id
        directory.mkdir(parents=True, exist_ok=True)
        config.write(directory / AGENT_CONFIG, include=("node_id",))

    def _update_agent_config(self, node_id: str, **changes: Any) -> None:
        config = self.agent_config(node_id)
        if config.replace(**changes) != config:
            self._write_agent_config(config.replace(**changes))

    @property
    def spec(self) -> dict[str, Any]:
        """The cluster directory's ``cluster.json``: its EC and node list."""
        return json.loads((self.path / "cluster.json").read_text())

    @property
    def ec(self) -> str:
        """The cluster's erasure coding, ``K+M``."""
        return self.spec["ec"]

    def agents(self) -> list[AgentProcess]:
        """The cluster's agents, as their config files describe them."""
        return [self._agent_process(node["id"]) for node in self.spec["nodes"]]

    def agent(self, node_id: str) -> AgentProcess:
        """One agent of the cluster, as its config file describes it."""
        self.agent_directory(node_id)
        return self._agent_process(node_id)

    def agent_directory(self, node_id: str) -> Path:
        """The directory of a node's agent (its config, ready file and log).

        Raises:
            NodeNotFound: the cluster has no such node.
        """
        nodes = [node["id"] for node in self.spec["nodes"]]
        if node_id not in nodes:
            raise NodeNotFound(f"no node {node_id!r} in the cluster at {self.path}: it has {', '.join(nodes)}")
        return self.path / "agents" / node_id

    def _agent_process(self, node_id: str) -> AgentProcess:
        config = self.agent_config(node_id)
        return AgentProcess(
            node_id,
            self.path / "agents" / node_id,
            [Path(p) for p in config.mountpaths],
            config.port,
            dict(config.labels),
        )

    # ------------------------------------------------------------------ controller

    @property
    def controller_ready_file(self) -> Path:
        """The file the controller writes when it serves (endpoint and pid)."""
        return self.path / "controller.json"

    @property
    def secret_file(self) -> Path:
        """The file holding the cluster secret (``0600``, in a ``0700`` directory; see :mod:`hcstore.secret`)."""
        return keys_directory(self.path) / SECRET_FILE

    def controller_endpoint(self) -> str:
        """The running controller's endpoint ("" when it is not running)."""
        return controller_endpoint(self.path)

    def controller_pid(self) -> int | None:
        """The controller's pid from its ready file (None when it is not serving)."""
        return _ready_pid(self.controller_ready_file)

    def start_controller(self, *, timeout: float = 30.0) -> None:
        """Start the controller from ``controller.toml`` (if not running) and wait until it serves."""
        if _alive(self.controller_pid()):
            return
        config = self.controller_config()
        self.controller_ready_file.unlink(missing_ok=True)
        self._spawn_and_wait(
            "controller",
            _daemon_command("hcstore.control.controller", self.path / CONTROLLER_CONFIG),
            self.controller_ready_file,
            self.path / "controller.log",
            timeout,
        )
        port = int(controller_endpoint(self.path).rsplit(":", 1)[1])
        if config.port != port:  # pinned, so that agents and clients find it again after a restart
            config.replace(port=port).write(self.path / CONTROLLER_CONFIG)

    def stop_controller(self, *, sig: int = signal.SIGTERM) -> None:
        """Stop the controller with ``sig`` and wait until it exits."""
        _stop_pid(self.controller_pid(), sig)
        self.controller_ready_file.unlink(missing_ok=True)

    def _spawn_and_wait(self, name: str, cmd: list[str], ready: Path, log_file: Path, timeout: float) -> None:
        _wait_ready(name, _spawn(cmd, log_file), ready, log_file, time.monotonic() + timeout)

    def add_agent(self, *, labels: dict[str, str] | None = None) -> str:
        """Add a node, with the settings of the cluster's first agent, and start its agent; returns its id."""
        spec = self.spec
        taken = {n["id"] for n in spec["nodes"]}
        number = len(taken) + 1
        while f"n{number}" in taken:
            number += 1
        node_id = f"n{number}"
        template = self.agent_config(spec["nodes"][0]["id"])
        config = self._node_config(template, node_id, len(template.mountpaths), labels or None)
        if not template.insecure:
            pair = keys.create(keys_directory(self.path), node_id)
            self.start_controller()
            with ClusterSource.local(self.path).controller(timeout=5.0) as controller:
                controller.add_key(pair.public, "node", node_id)
        self._write_agent_config(config)
        spec["nodes"].append(_roster_entry(config))
        write_json_atomic(self.path / "cluster.json", spec, indent=2)
        self.start(node_id)
        return node_id

    # ------------------------------------------------------------------ agents

    def start(self, node_id: str | None = None, *, timeout: float = 30.0) -> None:
        """Start the controller and the agents (all, or one) and wait until each serves."""
        self.start_controller(timeout=timeout)
        controller = self.controller_endpoint()
        targets = [self.agent(node_id)] if node_id else self.agents()
        procs = []
        for agent in targets:
            if _alive(agent.pid()):
                continue
            agent.directory.mkdir(parents=True, exist_ok=True)
            agent.ready_file.unlink(missing_ok=True)
            self._update_agent_config(agent.node_id, controller=controller)
            procs.append((agent, _spawn(_daemon_command("hcstore.node.agent", agent.config_file), agent.log_file)))
        deadline = time.monotonic() + timeout
        for agent, proc in procs:
            _wait_ready(f"agent {agent.node_id}", proc, agent.ready_file, agent.log_file, deadline)
            self._remember_port(agent.node_id, json.loads(agent.ready_file.read_text())["endpoint"])
        serving = ("alive", *ADMIN_STATES)  # an admin state survives a restart
        self.wait_for_map(
            lambda m: all(a.node_id in m and m.node(a.node_id).state in serving for a in targets),
            timeout=max(1.0, deadline - time.monotonic()),
        )

    def wait_for_map(self, condition: Callable[[ClusterMap], bool], *, timeout: float = 30.0) -> ClusterMap:
        """Poll the controller's map until ``condition(map)`` holds; returns that map.

        Raises:
            ControllerUnavailable: the controller is not running.
            Timeout: the condition did not hold within ``timeout`` seconds.
        """
        with ClusterSource.local(self.path).controller(timeout=2.0) as controller:
            return controller.wait_for_map(condition, timeout=timeout)

    def _remember_port(self, node_id: str, endpoint: str) -> None:
        """Pin the node's port in its config so a restarted agent comes back at the same endpoint."""
        self._update_agent_config(node_id, port=int(endpoint.rsplit(":", 1)[1]))

    def stop(self, node_id: str | None = None, *, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
        """Stop agents (all, or one; all also stops the controller) with ``sig`` and wait for them to exit.

        Every process is signalled before any is waited for, so they wind down together; the controller is
        signalled first.
        """
        # Only the ready files are read: stopping must work when an agent's disk, config included, is gone.
        nodes = [node_id] if node_id else [n["id"] for n in self.spec["nodes"]]
        ready_files = [self.agent_directory(node) / "agent.json" for node in nodes]
        if node_id is None:
            ready_files.insert(0, self.controller_ready_file)
        pids = [_ready_pid(ready) for ready in ready_files]
        for pid in pids:
            _send(pid, sig)
        for ready, pid in zip(ready_files, pids, strict=True):
            _wait_gone(pid, timeout)
            ready.unlink(missing_ok=True)

    def kill(self, node_id: str) -> None:
        """SIGKILL one agent: no clean shutdown, as when a node crashes."""
        self.stop(node_id, sig=signal.SIGKILL)

    def pause(self, node_id: str) -> None:
        """SIGSTOP one agent: it keeps its connections but answers nothing (a hung node)."""
        pid = self.agent(node_id).pid()
        if pid:
            _signal(pid, signal.SIGSTOP)

    def resume(self, node_id: str) -> None:
        """SIGCONT a paused agent."""
        pid = self.agent(node_id).pid()
        if pid:
            _signal(pid, signal.SIGCONT)

    def restart(self, node_id: str) -> None:
        """Stop one agent cleanly and start it again."""
        self.stop(node_id)
        self.start(node_id)

    def destroy(self) -> None:
        """Stop every agent and remove the cluster directory."""
        import shutil

        self.stop()
        shutil.rmtree(self.path, ignore_errors=True)

    # ------------------------------------------------------------------ views

    def cluster_map(self) -> ClusterMap:
        """The map derived from the directory's files (agents without a ready file are down)."""
        return read_cluster_map(self.path)

    def running(self) -> dict[str, int | None]:
        """Each agent's pid, or None where it is not running."""
        return {a.node_id: (a.pid() if _alive(a.pid()) else None) for a in self.agents()}

    def client(self, **settings: Any) -> Any:
        """A :class:`~hcstore.client.client.Client` of this cluster (``settings``: ClientConfig fields)."""
        from hcstore.client.client import Client

        settings.setdefault("ec", self.ec)
        return Client(self.path, **settings)

    def fragment_files(self, node_id: str | None = None) -> list[Path]:
        """Committed fragment files on disk (for fault injection in tests)."""
        agents = [self.agent(node_id)] if node_id else self.agents()
        return sorted(p for a in agents for mp in a.mountpaths for p in mp.glob("frags/*/*.frag"))


def _ready_pid(ready_file: Path) -> int | None:
    """The pid a daemon wrote to its ready file; None when the file is missing or unreadable."""
    try:
        return int(json.loads(ready_file.read_text())["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child of ours still answers kill(0): reap it
        done, _ = os.waitpid(pid, os.WNOHANG)
        return done == 0
    except ChildProcessError:
        return _not_zombie(pid)


def _not_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _given(**settings: Any) -> dict[str, Any]:
    """The settings that are not None."""
    return {name: value for name, value in settings.items() if value is not None}


def _roster_entry(config: AgentConfig) -> dict[str, Any]:
    """A node as cluster.json lists it (what the cluster map needs when no controller runs)."""
    return {"id": config.node_id, "weight": config.weight, "labels": dict(config.labels)}


def _daemon_command(module: str, config_file: Path) -> list[str]:
    return [sys.executable, "-m", module, "--config", str(config_file)]


def _spawn(cmd: list[str], log_file: Path) -> subprocess.Popen[bytes]:
    """Start a daemon in its own session (it outlives the CLI), output to ``log_file``, no HCSTORE_* variables."""
    env = {name: value for name, value in os.environ.items() if not name.startswith(ENV_PREFIX)}
    with open(log_file, "ab") as log:
        return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True, env=env)


def _wait_ready(name: str, proc: subprocess.Popen[bytes], ready: Path, log_file: Path, deadline: float) -> None:
    while not ready.exists():
        if proc.poll() is not None:
            raise StartFailed(f"{name} exited with {proc.returncode} while starting; see {log_file}")
        if time.monotonic() > deadline:
            raise Timeout(f"{name} did not start in time; see {log_file}")
        time.sleep(0.02)


def _stop_pid(pid: int | None, sig: int, timeout: float = 10.0) -> None:
    _send(pid, sig)
    _wait_gone(pid, timeout)


def _send(pid: int | None, sig: int) -> None:
    """Signal a live process; one that is stopped (SIGSTOP) is continued first, so that it can act on ``sig``."""
    if pid is None or not _alive(pid):
        return
    if sig != signal.SIGKILL:
        _signal(pid, signal.SIGCONT)
    _signal(pid, sig)


def _wait_gone(pid: int | None, timeout: float) -> None:
    """Wait until the process has exited; SIGKILL it once ``timeout`` seconds have passed."""
    deadline = time.monotonic() + timeout
    while pid is not None and _alive(pid):
        if time.monotonic() > deadline:
            _signal(pid, signal.SIGKILL)
        time.sleep(0.02)


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass
