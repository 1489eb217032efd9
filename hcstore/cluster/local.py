"""The embedded local cluster: N agent processes on this machine.

``hcstore up`` creates a cluster directory and starts one agent process per
node in its own session (so it outlives the CLI), each with P mountpath
directories; ``hcstore down`` stops them. Tests use the same class and its
fault verbs (``kill``, ``pause``, ``resume``, ``restart``), in the spirit of
tahoe-lafs's no-network grid, but with real processes, sockets and files.

The directory's files are described in :mod:`hcstore.cluster.directory`.
"""

from __future__ import annotations

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

from hcstore.cluster.directory import CLUSTER_FORMAT, controller_endpoint, read_cluster_map
from hcstore.cluster.source import ClusterSource
from hcstore.coding import parse_ec_spec
from hcstore.errors import ClusterExists, InvalidRequest, NodeNotFound, StartFailed, Timeout
from hcstore.control.membership import Intervals
from hcstore.files import write_json_atomic
from placement import ClusterMap


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
        return self.directory / "agent.json"

    def pid(self) -> int | None:
        try:
            return int(json.loads(self.ready_file.read_text())["pid"])
        except (OSError, ValueError, KeyError):
            return None


class LocalCluster:
    """A cluster of agent processes on this machine, rooted at one directory."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path).resolve()

    # ------------------------------------------------------------------ lifecycle

    @classmethod
    def create(cls, path: str | os.PathLike[str], *, agents: int = 6, ec: str = "4+2", mountpaths_per_agent: int = 2,
               durability: str = "commit", capacity_bytes: int = 0, high_watermark: float = 0.9,
               labels: list[dict[str, str]] | None = None, intervals: Intervals | None = None,
               scan_interval: float = 30.0, repair_rate: float = 256e6,
               scrub_interval: float = 86400.0) -> "LocalCluster":
        """Write a new cluster directory (does not start agents)."""
        parse_ec_spec(ec, what="ec")
        if agents < 1 or mountpaths_per_agent < 1:
            raise InvalidRequest(f"need at least one agent and one mountpath each, "
                                 f"got {agents} and {mountpaths_per_agent}")
        cluster = cls(path)
        if (cluster.path / "cluster.json").exists():
            raise ClusterExists(f"{cluster.path} already holds a cluster; "
                                "run `hcstore down` or choose another --data-dir")
        cluster.path.mkdir(parents=True, exist_ok=True)
        nodes = []
        for i in range(agents):
            node_id = f"n{i + 1}"
            directory = cluster.path / "agents" / node_id
            mps = [str(directory / f"mp{j}") for j in range(mountpaths_per_agent)]
            nodes.append({"id": node_id, "mountpaths": mps, "weight": 1.0,
                          "labels": (labels[i] if labels else {"host": node_id})})
        spec = {"format": CLUSTER_FORMAT, "epoch": 1, "ec": ec, "durability": durability,
                "capacity_bytes": capacity_bytes, "high_watermark": high_watermark, "nodes": nodes,
                "mountpaths_per_agent": mountpaths_per_agent, "scan_interval": scan_interval,
                "repair_rate": repair_rate, "scrub_interval": scrub_interval,
                "controller": {"port": 0, "intervals": (intervals or Intervals()).__dict__}}
        write_json_atomic(cluster.path / "cluster.json", spec, indent=2)
        return cluster

    @property
    def spec(self) -> dict[str, Any]:
        return json.loads((self.path / "cluster.json").read_text())

    @property
    def ec(self) -> str:
        return self.spec["ec"]

    def agents(self) -> list[AgentProcess]:
        return [AgentProcess(n["id"], self.path / "agents" / n["id"], [Path(p) for p in n["mountpaths"]],
                             n.get("port", 0), n.get("labels", {})) for n in self.spec["nodes"]]

    def agent(self, node_id: str) -> AgentProcess:
        for agent in self.agents():
            if agent.node_id == node_id:
                return agent
        raise NodeNotFound(f"no node {node_id!r} in the cluster at {self.path}: it has "
                           f"{', '.join(a.node_id for a in self.agents())}")

    # ------------------------------------------------------------------ controller

    @property
    def controller_ready_file(self) -> Path:
        return self.path / "controller.json"

    def controller_endpoint(self) -> str:
        return controller_endpoint(self.path)

    def controller_pid(self) -> int | None:
        try:
            return int(json.loads(self.controller_ready_file.read_text())["pid"])
        except (OSError, ValueError, KeyError):
            return None

    def start_controller(self, *, timeout: float = 30.0) -> None:
        """Start the controller (if not running) and wait until it serves."""
        if _alive(self.controller_pid()):
            return
        spec = self.spec
        intervals = spec["controller"]["intervals"]
        self.controller_ready_file.unlink(missing_ok=True)
        cmd = [sys.executable, "-m", "hcstore.control.controller", "--ready-file", str(self.controller_ready_file),
               "--log-file", str(self.path / "controller.log"), "--port", str(spec["controller"]["port"]),
               "--heartbeat", str(intervals["heartbeat"]), "--suspect-after", str(intervals["suspect_after"]),
               "--down-after", str(intervals["down_after"]), "--out-after", str(intervals["out_after"]),
               "--ec", self.ec]
        self._spawn_and_wait("controller", cmd, self.controller_ready_file, self.path / "controller.log", timeout)
        port = int(controller_endpoint(self.path).rsplit(":", 1)[1])
        if spec["controller"]["port"] != port:
            spec["controller"]["port"] = port
            write_json_atomic(self.path / "cluster.json", spec, indent=2)

    def stop_controller(self, *, sig: int = signal.SIGTERM) -> None:
        _stop_pid(self.controller_pid(), sig)
        self.controller_ready_file.unlink(missing_ok=True)

    def _spawn_and_wait(self, name: str, cmd: list[str], ready: Path, log_file: Path, timeout: float) -> None:
        _wait_ready(name, _spawn(cmd, log_file), ready, log_file, time.monotonic() + timeout)

    def add_agent(self, *, labels: dict[str, str] | None = None) -> str:
        """Add a node to the cluster and start its agent; returns its id."""
        spec = self.spec
        taken = {n["id"] for n in spec["nodes"]}
        number = len(taken) + 1
        while f"n{number}" in taken:
            number += 1
        node_id = f"n{number}"
        directory = self.path / "agents" / node_id
        spec["nodes"].append({"id": node_id, "weight": 1.0, "labels": labels or {"host": node_id},
                              "mountpaths": [str(directory / f"mp{j}") for j in range(spec["mountpaths_per_agent"])]})
        write_json_atomic(self.path / "cluster.json", spec, indent=2)
        self.start(node_id)
        return node_id

    # ------------------------------------------------------------------ agents

    def start(self, node_id: str | None = None, *, timeout: float = 30.0) -> None:
        """Start the controller and the agents (all, or one) and wait until each serves."""
        spec = self.spec
        self.start_controller(timeout=timeout)
        controller = self.controller_endpoint()
        targets = [self.agent(node_id)] if node_id else self.agents()
        procs = []
        for agent in targets:
            if _alive(agent.pid()):
                continue
            agent.directory.mkdir(parents=True, exist_ok=True)
            agent.ready_file.unlink(missing_ok=True)
            cmd = [sys.executable, "-m", "hcstore.node.agent", "--node-id", agent.node_id,
                   "--ready-file", str(agent.ready_file), "--log-file", str(agent.directory / "agent.log"),
                   "--durability", spec["durability"], "--high-watermark", str(spec["high_watermark"]),
                   "--capacity-bytes", str(spec["capacity_bytes"]), "--port", str(agent.port),
                   "--controller", controller, "--state-dir", str(agent.directory),
                   "--heartbeat", str(spec["controller"]["intervals"]["heartbeat"]),
                   "--scan-interval", str(spec.get("scan_interval", 30.0)),
                   "--repair-rate", str(spec.get("repair_rate", 256e6)),
                   "--scrub-interval", str(spec.get("scrub_interval", 86400.0))]
            for name, value in agent.labels.items():
                cmd += ["--label", f"{name}={value}"]
            for mp in agent.mountpaths:
                cmd += ["--mountpath", str(mp)]
            procs.append((agent, _spawn(cmd, agent.directory / "agent.log")))
        deadline = time.monotonic() + timeout
        for agent, proc in procs:
            _wait_ready(f"agent {agent.node_id}", proc, agent.ready_file, agent.directory / "agent.log", deadline)
            self._remember_port(agent.node_id, json.loads(agent.ready_file.read_text())["endpoint"])
        serving = ("alive", "maintenance", "decommissioned")      # an admin state survives a restart
        self.wait_for_map(lambda m: all(a.node_id in m and m.node(a.node_id).state in serving for a in targets),
                          timeout=max(1.0, deadline - time.monotonic()))

    def wait_for_map(self, condition: Callable[[ClusterMap], bool], *, timeout: float = 30.0) -> ClusterMap:
        """Poll the controller's map until ``condition(map)`` holds; returns that map.

        Raises:
            ControllerUnavailable: the controller is not running.
            Timeout: the condition did not hold within ``timeout`` seconds.
        """
        with ClusterSource.local(self.path).controller(timeout=2.0) as controller:
            return controller.wait_for_map(condition, timeout=timeout)

    def _remember_port(self, node_id: str, endpoint: str) -> None:
        """Pin the node's port so a restarted agent comes back at the same endpoint."""
        spec = self.spec
        port = int(endpoint.rsplit(":", 1)[1])
        for node in spec["nodes"]:
            if node["id"] == node_id and node.get("port") != port:
                node["port"] = port
                write_json_atomic(self.path / "cluster.json", spec, indent=2)

    def stop(self, node_id: str | None = None, *, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
        """Stop agents (all, or one; all also stops the controller) with ``sig`` and wait for them to exit."""
        if node_id is None:
            self.stop_controller(sig=sig)
        targets = [self.agent(node_id)] if node_id else self.agents()
        for agent in targets:
            pid = agent.pid()
            if pid is not None and _alive(pid):
                if sig != signal.SIGKILL:
                    _signal(pid, signal.SIGCONT)
                _signal(pid, sig)
        for agent in targets:
            _stop_pid(agent.pid(), signal.SIGKILL if sig == signal.SIGKILL else sig, timeout)
            agent.ready_file.unlink(missing_ok=True)

    def kill(self, node_id: str) -> None:
        """SIGKILL one agent: no clean shutdown, as when a node crashes."""
        self.stop(node_id, sig=signal.SIGKILL)

    def pause(self, node_id: str) -> None:
        """SIGSTOP one agent: it keeps its connections but answers nothing (a hung node)."""
        pid = self.agent(node_id).pid()
        if pid:
            _signal(pid, signal.SIGSTOP)

    def resume(self, node_id: str) -> None:
        pid = self.agent(node_id).pid()
        if pid:
            _signal(pid, signal.SIGCONT)

    def restart(self, node_id: str) -> None:
        self.stop(node_id)
        self.start(node_id)

    def destroy(self) -> None:
        """Stop every agent and remove the cluster directory."""
        import shutil

        self.stop()
        shutil.rmtree(self.path, ignore_errors=True)

    # ------------------------------------------------------------------ views

    def cluster_map(self) -> ClusterMap:
        return read_cluster_map(self.path)

    def running(self) -> dict[str, int | None]:
        return {a.node_id: (a.pid() if _alive(a.pid()) else None) for a in self.agents()}

    def client(self, **settings: Any) -> "Any":
        from hcstore.client.client import Client

        settings.setdefault("ec", self.ec)
        return Client(self.path, **settings)

    def fragment_files(self, node_id: str | None = None) -> list[Path]:
        """Committed fragment files on disk (for fault injection in tests)."""
        agents = [self.agent(node_id)] if node_id else self.agents()
        return sorted(p for a in agents for mp in a.mountpaths for p in mp.glob("frags/*/*.frag"))


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:   # a zombie child of ours still answers kill(0): reap it
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


def _spawn(cmd: list[str], log_file: Path) -> subprocess.Popen[bytes]:
    """Start a process in its own session (it outlives the CLI), logging to ``log_file``."""
    with open(log_file, "ab") as log:
        return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)


def _wait_ready(name: str, proc: subprocess.Popen[bytes], ready: Path, log_file: Path, deadline: float) -> None:
    while not ready.exists():
        if proc.poll() is not None:
            raise StartFailed(f"{name} exited with {proc.returncode} while starting; see {log_file}")
        if time.monotonic() > deadline:
            raise Timeout(f"{name} did not start in time; see {log_file}")
        time.sleep(0.02)


def _stop_pid(pid: int | None, sig: int, timeout: float = 10.0) -> None:
    if pid is None or not _alive(pid):
        return
    if sig != signal.SIGKILL:
        _signal(pid, signal.SIGCONT)
    _signal(pid, sig)
    deadline = time.monotonic() + timeout
    while _alive(pid):
        if time.monotonic() > deadline:
            _signal(pid, signal.SIGKILL)
        time.sleep(0.02)


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass
