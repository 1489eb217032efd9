"""Metrics, health checks and status on real daemons, scraped over HTTP and parsed as Prometheus parses them.

Counters move with puts and gets; a killed data holder shows as degraded reads and as bytes one
failure from loss at the controller until repair brings them back; a failed disk shows as a
disabled mountpath; ``/readyz`` refuses an agent that has no usable mountpath or is behind the
controller's map epoch; daemons log JSON lines with request ids; ``status`` shows it all.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from hcstore.client.versions import resolve, resolve_many
from hcstore.config import AgentConfig
from hcstore.control.membership import Intervals
from hcstore.errors import DiskError, ObjectNotFound
from hcstore.filesystem import HCStoreFileSystem
from hcstore.wire import protocol
from hcstore.wire.transport import Transport
from integration_support import (
    CHUNK,
    StubRouter,
    agent_urls,
    clean_env,
    cli_ok,
    fragment_files_of,
    run_cli,
    seeded_bytes,
    total,
    value,
    wait_until,
)
from placement import ClusterMap, Node

BUCKET = "metrics"
MONITORING = Path(__file__).resolve().parents[2] / "monitoring"
# Failure detection in seconds; out_after leaves several scans to see the loss before repair starts.
QUICK = Intervals(heartbeat=0.2, suspect_after=0.6, down_after=1.0, out_after=6.0)


# ---------------------------------------------------------------------- scraping


def controller_url(cluster) -> str:
    return json.loads(cluster.controller_ready_file.read_text())["metrics"]


def http_status(url: str) -> tuple[int, dict]:
    """The status code and JSON body of a health check."""
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as refused:
        return refused.code, json.loads(refused.read())


def health_url(metrics_url: str, check: str) -> str:
    return metrics_url.removesuffix("/metrics") + check


# ---------------------------------------------------------------------- counters and status


def _data_path_counters(cluster):
    """The agents' read, traffic, latency and fragment counters, summed over the cluster."""
    return {
        "reads": total(cluster, "hcstore_requests_total", op="read", outcome="ok"),
        "remote": total(cluster, "hcstore_reads_total", path="remote"),
        "in": total(cluster, "hcstore_received_bytes_total"),
        "out": total(cluster, "hcstore_sent_bytes_total"),
        "latencies": total(cluster, "hcstore_request_duration_seconds_count", op="read"),
        "fragments": total(cluster, "hcstore_fragments"),
    }


def test_an_object_of_one_stripe_is_stored_in_one_message_per_fragment(shared_cluster, shared_client):
    def requests(op: str) -> float:
        return total(shared_cluster, "hcstore_requests_total", op=op, outcome="ok")

    for key, size, fragments in (("one/small", 4096, 3), ("one/stripe", 4 * CHUNK, 6)):  # replicated, then EC
        opens, stores = requests("open"), requests("store")
        blob = seeded_bytes(key, size)
        shared_client.put(BUCKET, key, blob)
        assert requests("open") == opens  # no upload was opened and streamed to
        assert requests("store") == stores + fragments
        assert shared_client.get(BUCKET, key) == blob


def test_a_read_asks_only_as_many_agents_as_prove_its_version(shared_cluster, shared_client):
    def locates() -> float:
        return total(shared_cluster, "hcstore_requests_total", op="locate", outcome="ok")

    # Six read candidates, and a version needs at least 3 of them: 4 answers prove it (and hold k fragments).
    fs = HCStoreFileSystem(str(shared_cluster.path), chunk_size=CHUNK, request_timeout=5.0, skip_instance_cache=True)
    for key, size in (("fewest/small", 4096), ("fewest/coded", 4 * CHUNK)):  # replicated, then EC
        blob = seeded_bytes(key, size)
        shared_client.put(BUCKET, key, blob)
        before = locates()
        assert shared_client.get(BUCKET, key) == blob
        assert locates() == before + 4
        with fs.open(f"{BUCKET}/{key}", "rb") as f:
            assert f.read() == blob
        assert fs.cat_file(f"{BUCKET}/{key}", start=-100) == blob[-100:]
        assert locates() == before + 3 * 4
        assert shared_client.stat(BUCKET, key).fragments == (3 if size == 4096 else 6)  # stat asks all six
        assert locates() == before + 3 * 4 + 6


def test_a_batch_of_keys_is_resolved_in_one_request_per_node(shared_cluster, shared_client):
    def requests(op: str) -> float:
        return total(shared_cluster, "hcstore_requests_total", op=op, outcome="ok")

    names = [(BUCKET, f"batch/{i}") for i in range(4)]
    for i, (bucket, key) in enumerate(names[:3]):
        shared_client.put(bucket, key, seeded_bytes(key, 4096 + i * 4 * CHUNK))  # replicated, then EC
    shared_client.put(*names[0], b"newer")  # two generations
    shared_client.delete(*names[1])  # a tombstone; names[3] was never stored
    locates, batches = requests("locate"), requests("locate_many")
    outcomes = resolve_many(shared_client, names)
    assert requests("locate") == locates  # no key was asked about on its own
    assert requests("locate_many") >= batches + len(shared_client.cluster_map.nodes)
    for name in names:  # the same answer as one exhaustive resolve per key
        try:
            expected = resolve(shared_client, *name, exhaustive=True)
        except ObjectNotFound as exc:
            expected = exc
        got = outcomes[name]
        if isinstance(expected, ObjectNotFound):
            assert (type(got), str(got)) == (ObjectNotFound, str(expected)), name
            assert getattr(got, "tombstone", None) == getattr(expected, "tombstone", None), name
        else:
            assert got == expected, name
    assert outcomes[names[0]].size == len(b"newer") and outcomes[names[2]].k == 4


def test_counters_move_after_puts_and_gets(shared_cluster, shared_client):
    before = _data_path_counters(shared_cluster)
    data = {f"counted/{i}": seeded_bytes(f"counted-{i}", 600_000 + i) for i in range(3)}
    for key, blob in data.items():
        shared_client.put(BUCKET, key, blob)
    for key, blob in data.items():
        assert shared_client.get(BUCKET, key) == blob
    size = sum(len(blob) for blob in data.values())
    after = _data_path_counters(shared_cluster)
    assert after["reads"] >= before["reads"] + 3 * 4  # every get asks k = 4 fragments at least once
    assert after["remote"] >= before["remote"] + 3 * 4  # no local node: data fragments are remote reads
    assert after["in"] - before["in"] >= size * 6 / 4  # k+m fragments of every stripe came in
    assert after["out"] - before["out"] >= size  # and at least the data went out again
    assert after["latencies"] > before["latencies"]
    assert after["fragments"] == before["fragments"] + 3 * 6

    got = shared_client.get(BUCKET, "counted/0")
    assert type(got) is bytearray  # the buffer the object was read into, not a copy of it

    controller = controller_url(shared_cluster)
    assert value(controller, "hcstore_requests_total", op="heartbeat", outcome="ok") > 0
    assert value(controller, "hcstore_nodes", state="alive") == 6
    assert value(controller, "hcstore_build_info", role="controller") == 1
    assert value(controller, "hcstore_controller_map_epoch") >= 1
    for url in (controller, *agent_urls(shared_cluster).values()):  # nobody is slow to read: nothing waits
        assert value(url, "hcstore_replies_waiting") == 0
        assert value(url, "hcstore_replies_dropped_total") >= 0
    for node, url in agent_urls(shared_cluster).items():
        assert value(url, "hcstore_build_info", role="agent", node=node) == 1
        assert value(url, "hcstore_mountpath_state", state="enabled") == 2
        assert http_status(health_url(url, "/healthz"))[0] == 200
        status, body = http_status(health_url(url, "/readyz"))
        assert status == 200 and body["epoch"] == body["controller_epoch"], body
    assert http_status(health_url(controller, "/readyz"))[0] == 200


def test_status_shows_metrics_urls_mountpaths_protection_and_refreshes(shared_cluster, tmp_path):
    env = clean_env(tmp_path, HCSTORE_CLUSTER=str(shared_cluster.path))
    doc = json.loads(cli_ok(run_cli("status", "--json", env=env)).stdout)
    urls = agent_urls(shared_cluster)
    assert {n["id"]: n["metrics_url"] for n in doc["nodes"]} == urls
    assert doc["controller"]["metrics_url"] == controller_url(shared_cluster)
    for node in doc["nodes"]:
        assert node["epoch"] == doc["epoch"] and len(node["mountpaths"]) == 2
        for mp in node["mountpaths"]:
            assert set(mp) >= {"id", "path", "state", "used", "free", "capacity", "io_errors"}
            assert mp["state"] == "enabled" and Path(mp["path"]).parent.name == node["id"]
    assert set(doc["protection"]) == {"objects", "bytes", "below_full", "reports"}
    assert set(doc["repair"]) >= {"bytes_missing", "bytes_awaiting", "rate_bytes_per_second", "eta_seconds"}
    assert doc["problems"] == []

    table = cli_ok(run_cli("status", env=env)).stdout.decode()
    assert "mountpaths" in table and "protection (latest scans" in table and urls["n1"] in table

    watched = cli_ok(run_cli("status", "--json", "--watch", "0.2", "--count", "2", env=env)).stdout.decode()
    lines = watched.splitlines()
    assert len(lines) == 2 and all(json.loads(line)["ec"] == "4+2" for line in lines)


def families(url: str) -> set[str]:
    """The metric families an endpoint declares (a labelled one before its first sample included)."""
    text = urllib.request.urlopen(url, timeout=10).read().decode()
    return {family.name for family in text_string_to_metric_families(text)}


def test_monitoring_names_only_metrics_the_daemons_serve(shared_cluster):
    served = families(controller_url(shared_cluster))
    served |= {name for url in agent_urls(shared_cluster).values() for name in families(url)}
    texts = [(MONITORING / name).read_text() for name in ("hcstore-rules.yml", "grafana-dashboard.json")]
    used = {
        re.sub(r"_(total|bucket|count|sum)$", "", name)
        for text in texts
        for name in re.findall(r"\bhcstore_[a-z0-9_]+", text)
    }
    assert used and used <= served, sorted(used - served)


# ---------------------------------------------------------------------- failures


def test_a_killed_data_holder_shows_as_degraded_reads_and_protection_loss_until_repaired(make_cluster):
    cluster = make_cluster(agents=7, intervals=QUICK, scan_interval=1.0)
    client = cluster.client(chunk_size=CHUNK, request_timeout=5.0)
    objects = {f"obj/{i}": seeded_bytes(f"loss-{i}", 200_000 + 7919 * i) for i in range(8)}
    for key, blob in objects.items():
        client.put(BUCKET, key, blob)
    controller = controller_url(cluster)
    wait_until(
        lambda: value(controller, "hcstore_objects", level="full") == len(objects),
        timeout=20,
        what="every object fully protected in the controller's summary",
    )
    assert value(controller, "hcstore_object_bytes", level="full") == sum(map(len, objects.values()))

    victim = client.resolve(BUCKET, "obj/0").found_at[0]  # holds a data fragment
    degraded = total(cluster, "hcstore_reads_total", excluding={victim}, path="degraded")
    cluster.kill(victim)
    for key, blob in objects.items():
        assert client.get(BUCKET, key) == blob
    assert total(cluster, "hcstore_reads_total", excluding={victim}, path="degraded") > degraded

    wait_until(
        lambda: value(controller, "hcstore_object_bytes", level="1") > 0,
        timeout=20,
        what="bytes one failure from loss at the controller",
    )
    assert value(controller, "hcstore_repair_missing_bytes") > 0
    wait_until(
        lambda: value(controller, "hcstore_node_state", node=victim, state="out") == 1, timeout=20, what=f"{victim} out"
    )
    wait_until(
        lambda: (
            value(controller, "hcstore_object_bytes", level="1") == 0
            and value(controller, "hcstore_objects", level="full") == len(objects)
        ),
        timeout=60,
        what="repair to bring every object back to full protection",
    )
    assert value(controller, "hcstore_repair_missing_bytes") == 0
    assert total(cluster, "hcstore_reads_total", excluding={victim}, path="repair") > 0  # repair named itself

    # Repair's threads, and the pool that serves repair's reads, run below the agent's priority.
    pid = next(pid for node, pid in cluster.running().items() if node != victim and pid)
    base = os.getpriority(os.PRIO_PROCESS, pid)
    lowered = [
        task for task in Path(f"/proc/{pid}/task").iterdir() if os.getpriority(os.PRIO_PROCESS, int(task.name)) > base
    ]
    assert len(lowered) >= AgentConfig().read_workers + 1  # the repair read pool and the maintainer at least
    assert value(controller, "hcstore_repair_eta_seconds") == 0
    assert value(controller, "hcstore_objects", level="unreadable") == 0
    assert total(cluster, "hcstore_repair_bytes_total", excluding={victim}, kind="repair") > 0
    assert total(cluster, "hcstore_repair_objects_total", excluding={victim}, kind="repair") > 0
    assert total(cluster, "hcstore_ec_encoded_bytes_total", excluding={victim}) > 0
    assert total(cluster, "hcstore_ec_encode_duration_seconds_count", excluding={victim}) > 0
    assert (
        max(
            value(url, "hcstore_repair_last_activity_timestamp_seconds")
            for url in agent_urls(cluster, excluding={victim}).values()
        )
        > 0
    )
    client.close()


def test_a_failed_disk_shows_as_a_disabled_mountpath(make_cluster, tmp_path):
    cluster = make_cluster(agents=3, ec="2+1", mountpaths_per_agent=2)
    client = cluster.client(chunk_size=CHUNK, request_timeout=5.0)
    objects = {f"disk/{i}": seeded_bytes(f"disk-{i}", 150_000) for i in range(6)}
    for key, blob in objects.items():
        client.put(BUCKET, key, blob)
    version = client.resolve(BUCKET, "disk/0")
    node, path = fragment_files_of(cluster, BUCKET, "disk/0", version.generation)[0]
    mountpath = path.parent.parent.parent
    (mountpath / "frags").rename(mountpath / "frags.failed")  # the disk fails: every open under it errors
    (mountpath / "frags").write_bytes(b"")
    for key, blob in objects.items():
        assert client.get(BUCKET, key) == blob
    url = agent_urls(cluster)[node]
    assert value(url, "hcstore_mountpath_state", mountpath=str(mountpath), state="disabled") == 1
    assert value(url, "hcstore_mountpath_state", mountpath=str(mountpath), state="enabled") == 0
    assert value(url, "hcstore_mountpath_io_errors_total", mountpath=str(mountpath)) >= 1
    assert http_status(health_url(url, "/readyz"))[0] == 200  # its other mountpath still serves

    doc = json.loads(
        cli_ok(run_cli("--cluster", str(cluster.path), "status", "--json", env=clean_env(tmp_path))).stdout
    )
    entry = next(mp for n in doc["nodes"] if n["id"] == node for mp in n["mountpaths"] if mp["path"] == str(mountpath))
    assert entry["state"] == "disabled" and entry["error"] and entry["io_errors"] >= 1
    assert any(f"{mountpath} of node {node} is disabled" in problem for problem in doc["problems"])
    client.close()


# ---------------------------------------------------------------------- one agent, readiness and logs


class LoneAgent:
    """One agent process from its config file, run with ``hcstore agent --config FILE --log-format json``."""

    def __init__(self, directory: Path, **settings) -> None:
        self.config = AgentConfig(
            node_id="n1",
            mountpaths=(str(directory / "mp0"),),
            durability="none",
            insecure=True,
            ready_file=str(directory / "agent.json"),
            log_file=str(directory / "agent.log"),
            **settings,
        )
        self.config.write(directory / "agent.toml")
        command = [
            sys.executable,
            "-m",
            "hcstore.tools.cli",
            "agent",
            "--config",
            str(directory / "agent.toml"),
            "--log-format",
            "json",
        ]
        self.process = subprocess.Popen(command, env=clean_env(directory))
        ready = Path(self.config.ready_file)
        wait_until(lambda: ready.exists() or self.process.poll() is not None, timeout=60, what="the agent to serve")
        assert self.process.poll() is None, f"the agent exited with {self.process.returncode}"
        started = json.loads(ready.read_text())
        self.endpoint, self.metrics = started["endpoint"], started["metrics"]

    def ready(self) -> tuple[int, dict]:
        return http_status(health_url(self.metrics, "/readyz"))

    def log_lines(self) -> list[dict]:
        return [json.loads(line) for line in Path(self.config.log_file).read_text().splitlines() if line]

    def stop(self) -> None:
        self.process.terminate()
        try:
            assert self.process.wait(30) == 0
        finally:
            if self.process.poll() is None:
                self.process.kill()


@pytest.fixture
def lone_agent(tmp_path):
    agents = []

    def start(**settings) -> LoneAgent:
        agents.append(LoneAgent(tmp_path, **settings))
        return agents[-1]

    yield start
    for agent in agents:
        agent.stop()


def test_readyz_fails_without_a_usable_mountpath_and_errors_carry_request_ids(lone_agent):
    agent = lone_agent()
    assert agent.ready()[0] == 200
    tmp = Path(agent.config.mountpaths[0]) / "tmp"
    tmp.rename(tmp.with_name("tmp.failed"))  # the disk fails under new uploads
    tmp.write_bytes(b"")
    transport = Transport(request_timeout=10.0)
    try:
        with pytest.raises(DiskError) as failed:
            transport.request(
                agent.endpoint,
                "open",
                {"bucket": BUCKET, "key": "k", "gen": "0" * 19 + "-0000-0000abcd", "idx": 0, "chunk_size": 4096},
            )
    finally:
        transport.close()
    request_id = int(re.search(r"\(request (\d+)\)$", str(failed.value)).group(1))
    status, body = agent.ready()
    assert status == 503 and "no usable mountpath" in body["reasons"][0] and body["usable_mountpaths"] == 0
    assert http_status(health_url(agent.metrics, "/healthz"))[0] == 200  # alive, not ready
    assert value(agent.metrics, "hcstore_mountpath_state", state="disabled") == 1
    assert value(agent.metrics, "hcstore_requests_total", op="open", outcome="E_IO") == 1
    logged = [line for line in agent.log_lines() if line.get("request_id") == request_id]
    assert logged and logged[0]["op"] == "open" and logged[0]["level"] == "WARNING", agent.log_lines()
    assert f"request {request_id} (open) failed: E_IO" in logged[0]["message"]


class StubController:
    """Answers an agent's heartbeats with the epoch (and map) a test chooses."""

    def __init__(self) -> None:
        self.epoch, self.cluster_map = 0, None
        self._router = StubRouter(self._answer)
        self.endpoint = self._router.endpoint

    def _answer(self, body: list[bytes]) -> list:
        request = protocol.decode_request(body, protocol.CONTROLLER_OPERATIONS)
        fields = {"map": self.cluster_map.to_dict()} if self.cluster_map else {}
        return protocol.reply_frames(request.id, self.epoch, fields)

    def close(self) -> None:
        self._router.close()


def test_readyz_fails_while_the_agent_is_on_an_older_epoch_than_the_controller(lone_agent):
    controller = StubController()
    try:
        agent = lone_agent(controller=controller.endpoint, heartbeat=0.1)
        wait_until(lambda: agent.ready()[0] == 200, timeout=20, what="the agent to hear from the controller")
        controller.epoch = 7  # a newer map the agent has not been sent
        wait_until(lambda: agent.ready()[0] == 503, timeout=20, what="the agent to be behind the controller")
        status, body = agent.ready()
        assert "older than the controller's 7" in body["reasons"][0] and body["controller_epoch"] == 7
        assert value(agent.metrics, "hcstore_controller_epoch_seen") == 7
        controller.cluster_map = ClusterMap(7, (Node("n1", agent.endpoint),))
        wait_until(lambda: agent.ready()[0] == 200, timeout=20, what="the agent to adopt the controller's map")
        assert value(agent.metrics, "hcstore_map_epoch") == 7
    finally:
        controller.close()


def test_an_agent_whose_metrics_port_is_taken_does_not_start(tmp_path):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        port = taken.getsockname()[1]
        config = AgentConfig(node_id="n1", mountpaths=(str(tmp_path / "mp0"),), metrics_port=port, insecure=True)
        config.write(tmp_path / "agent.toml")
        started = subprocess.run(
            [sys.executable, "-m", "hcstore.node.agent", "--config", str(tmp_path / "agent.toml")],
            capture_output=True,
            text=True,
            env=clean_env(tmp_path),
            timeout=60,
            check=False,
        )
    finally:
        taken.close()
    assert started.returncode == 1, started.stderr
    assert f"E_START_FAILED): {tmp_path / 'agent.toml'}: the agent cannot start" in started.stderr
    assert f"cannot serve metrics on 127.0.0.1:{port}" in started.stderr
