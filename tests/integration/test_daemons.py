"""Daemons started from hand-written TOML files, as an operator starts them on a node.

``hcstore controller --config``, ``hcstore agent --config`` and ``python -m hcstore.node.agent
--config`` run as real processes; a client reaches them through the controller's endpoint;
SIGTERM and SIGINT stop them with exit status 0; a bad file is one line naming the setting.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from hcstore import Client
from integration_support import seeded_bytes, wait_until

HCSTORE = Path(sys.executable).with_name("hcstore")
INTERVALS = "heartbeat = 0.2\nsuspect_after = 0.6\ndown_after = 1.5\nout_after = 60.0\n"


def cli(*args: str) -> list[str]:
    return [*([str(HCSTORE)] if HCSTORE.exists() else [sys.executable, "-m", "hcstore.tools.cli"]), *args]


def clean_env() -> dict[str, str]:
    """This environment without HCSTORE_* variables: the files alone configure the daemons."""
    return {k: v for k, v in os.environ.items() if not k.startswith("HCSTORE_")}


class Daemons:
    """Processes started by one test, each logging to its own file; all killed at the end."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, command: list[str]) -> subprocess.Popen[bytes]:
        with open(self.root / f"{name}.stderr", "wb") as err:
            proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=err, stderr=err, env=clean_env())
        self.procs[name] = proc
        return proc

    def ready(self, name: str, ready_file: Path) -> dict:
        proc = self.procs[name]
        wait_until(lambda: ready_file.exists() or proc.poll() is not None, timeout=60, what=f"{name} to serve")
        assert proc.poll() is None, (name, proc.returncode, self.stderr(name))
        return json.loads(ready_file.read_text())

    def stderr(self, name: str) -> str:
        return (self.root / f"{name}.stderr").read_text()

    def kill_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=30)


@pytest.fixture
def daemons(tmp_path):
    running = Daemons(tmp_path)
    try:
        yield running
    finally:
        running.kill_all()


def make_keys(keys: Path, allow: Path, grants: dict[str, tuple[str, str]]) -> None:
    """Key pairs made and allowed as an operator would: ``hcstore keys create``, then ``keys add --file``."""
    for name, (role, bound) in grants.items():
        subprocess.run(cli("keys", "create", name, "--dir", str(keys)), check=True, env=clean_env(), timeout=60)
        add = cli("keys", "add", str(keys / f"{name}.key"), "--role", role, "--name", bound, "--file", str(allow))
        subprocess.run(add, check=True, env=clean_env(), timeout=60, capture_output=True)
    assert (keys / "n1.key_secret").stat().st_mode & 0o777 == 0o600


def test_controller_and_agents_from_config_files(tmp_path, daemons, monkeypatch):
    monkeypatch.delenv("HCSTORE_EC", raising=False)
    keys, allow = tmp_path / "keys", tmp_path / "allow.json"
    make_keys(keys, allow, {"n1": ("node", "n1"), "n2": ("node", "n2"), "n3": ("node", "n3"), "alice": ("client", "")})
    subprocess.run(cli("keys", "create", "controller", "--dir", str(keys)), check=True, env=clean_env(), timeout=60)
    (tmp_path / "controller.toml").write_text(
        f'ec = "2+1"\n{INTERVALS}ready_file = "{tmp_path / "controller.json"}"\n'
        f'key = "{keys / "controller.key_secret"}"\nkeys_file = "{allow}"\n'
    )
    daemons.start("controller", cli("controller", "--config", str(tmp_path / "controller.toml")))
    endpoint = daemons.ready("controller", tmp_path / "controller.json")["endpoint"]

    starters = {
        "n1": cli("agent", "--config"),
        "n2": cli("agent", "--config"),
        "n3": [sys.executable, "-m", "hcstore.node.agent", "--config"],
    }
    for node, command in starters.items():
        directory = tmp_path / node
        directory.mkdir()
        log_file = f'log_file = "{directory / "agent.log"}"\n' if node == "n3" else ""
        (directory / "agent.toml").write_text(
            f'node_id = "{node}"\nmountpaths = ["{directory / "mp0"}"]\ncontroller = "{endpoint}"\n'
            f'durability = "none"\nheartbeat = 0.2\nready_file = "{directory / "agent.json"}"\n{log_file}'
            f'key = "{keys / f"{node}.key_secret"}"\ncontroller_key = "{keys / "controller.key"}"\n'
            f'[labels]\nhost = "{node}"\n'
        )
        daemons.start(node, [*command, str(directory / "agent.toml")])
    for node in starters:
        daemons.ready(node, tmp_path / node / "agent.json")

    alice = {"key": str(keys / "alice.key_secret"), "controller_key": str(keys / "controller.key")}
    with Client(endpoint, request_timeout=5.0, **alice) as client:
        wait_until(
            lambda: sum(n.state == "alive" for n in client.refresh().nodes) == 3,
            timeout=30,
            what="three alive agents in the controller's map",
        )
        assert client.config.ec == "2+1"  # the controller's EC
        data = seeded_bytes("daemons", 300_001)
        result = client.put("daemons", "obj", data)
        assert (result.k, result.m, result.degraded) == (2, 1, False)
        assert client.get("daemons", "obj") == data

    assert "serving on" in (tmp_path / "n3" / "agent.log").read_text()  # the configured log file
    assert "serving on" in daemons.stderr("n1")  # else standard error
    for name, sig in (
        ("n1", signal.SIGTERM),
        ("n2", signal.SIGTERM),
        ("n3", signal.SIGINT),
        ("controller", signal.SIGTERM),
    ):
        daemons.procs[name].send_signal(sig)
        assert daemons.procs[name].wait(timeout=30) == 0, (name, daemons.stderr(name))
        assert "Traceback" not in daemons.stderr(name)


@pytest.mark.parametrize(
    "command, text, needles",
    [
        (["agent"], 'node_id = "n1"\nport = "7000"\n', ["port"]),
        (["agent"], 'mountpaths = "/nvme0"\n', ["mountpaths"]),
        (["agent"], 'node_id = "n1"\ndurabilty = "none"\n', ["durabilty", "durability"]),
        (["agent"], 'node_id = "n1"\ninsecure = true\n', ["mountpath"]),
        (["agent"], 'node_id = "n1"\nmountpaths = ["/tmp/x"]\n', ["key", "insecure"]),
        (["agent"], 'node_id = "n1"\nkey = "/nonexistent.key_secret"\n', ["/nonexistent.key_secret"]),
        (["controller"], "port = 0\n", ["key", "insecure"]),
        (["controller"], "suspect_after = 0.1\n", ["suspect_after"]),
        (["-m", "hcstore.control.controller"], 'ec = "4-2"\n', ["ec"]),
        (["-m", "hcstore.node.agent"], "high_watermark = 2.0\n", ["high_watermark"]),
    ],
)
def test_a_bad_config_is_one_line_naming_the_setting_and_the_file(tmp_path, command, text, needles):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    full = [sys.executable, *command] if command[0] == "-m" else cli(*command)
    proc = subprocess.run([*full, "--config", str(path)], check=False, capture_output=True, env=clean_env(), timeout=60)
    message = proc.stderr.decode().strip()
    assert proc.returncode != 0, message
    assert len(message.splitlines()) == 1 and "Traceback" not in message, message
    for needle in (str(path), *needles):
        assert needle in message, message


def test_agents_whose_repair_waits_on_dead_peers_stop_at_once_on_sigterm(make_cluster):
    """A stop is not held up by repair requests to agents that will never answer (as in a rolling restart)."""
    from hcstore.cluster.local import _alive
    from hcstore.control.membership import Intervals
    from integration_support import controller_request
    from placement import ClusterMap

    quick_out = Intervals(heartbeat=0.2, suspect_after=0.6, down_after=1.0, out_after=2.0)
    cluster = make_cluster(agents=6, ec="4+2", intervals=quick_out, scan_interval=0.5)
    with cluster.client() as client:
        for i in range(20):
            client.put("stops", f"k{i}", seeded_bytes(i, 300_000))
    cluster.kill("n1")
    cluster.kill("n2")

    def both_out() -> bool:
        nodes = ClusterMap.from_dict(controller_request(cluster, "get_map")["map"])
        return nodes.node("n1").state == nodes.node("n2").state == "out"

    wait_until(both_out, timeout=20, what="n1 and n2 out, so that repair scans ask for them")
    for agent in cluster.agents()[2:]:  # each stop leaves the next agent's requests to it unanswered
        pid = agent.pid()
        assert pid is not None
        os.kill(pid, signal.SIGTERM)
        wait_until(lambda p=pid: not _alive(p), timeout=5, what=f"agent {agent.node_id} to exit on SIGTERM")
