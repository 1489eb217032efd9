"""The metrics' parts, each with a fresh registry: request counting, the agent's collector on a real store,
the HTTP endpoint, codec observation, read paths, JSON log lines and the status document."""

from __future__ import annotations

import json
import logging
import pickle
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

import pytest
import zmq
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from hcstore.client.reader import read_path
from hcstore.coding import ObservedCodec, codec_for, observing_codecs
from hcstore.config import AgentConfig
from hcstore.control.client import ControllerStatus
from hcstore.metrics.agent import AgentMetrics
from hcstore.metrics.endpoint import MetricsEndpoint
from hcstore.metrics.health import Health
from hcstore.metrics.logs import JsonFormatter
from hcstore.metrics.requests import RequestMetrics
from hcstore.node.io_pool import IoPool
from hcstore.node.store import LocalStore
from hcstore.tools.status import document, problems
from hcstore.wire.server import Replies
from placement import ClusterMap, Node


def samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a registry, scraped as Prometheus would and parsed back."""
    text = generate_latest(registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_requests_are_counted_by_operation_and_outcome():
    registry = CollectorRegistry()
    requests = RequestMetrics(registry, ["read", "write", "ping"])
    requests.observe("read", "ok", 0.002)
    requests.observe("read", "ok", 0.004)
    requests.observe("write", "E_STORE_FULL", 0.5)
    requests.observe("nonsense", "E_UNKNOWN_OP", 0.0001)
    value = registry.get_sample_value
    assert value("hcstore_requests_total", {"op": "read", "outcome": "ok"}) == 2
    assert value("hcstore_requests_total", {"op": "write", "outcome": "E_STORE_FULL"}) == 1
    assert value("hcstore_requests_total", {"op": "invalid", "outcome": "E_UNKNOWN_OP"}) == 1
    assert value("hcstore_requests_total", {"op": "write", "outcome": "ok"}) == 0
    assert value("hcstore_requests_total", {"op": "ping", "outcome": "ok"}) is None  # series come with requests
    assert value("hcstore_request_duration_seconds_count", {"op": "read"}) == 2
    assert value("hcstore_request_duration_seconds_bucket", {"op": "read", "le": "0.0025"}) == 1
    assert value("hcstore_request_duration_seconds_bucket", {"op": "read", "le": "0.005"}) == 2
    assert value("hcstore_request_duration_seconds_bucket", {"op": "write", "le": "+Inf"}) == 1
    assert value("hcstore_request_duration_seconds_sum", {"op": "read"}) == pytest.approx(0.006)


@dataclass
class _Agent:
    """The parts of an agent its metrics read: a real store and I/O pool."""

    config: AgentConfig
    store: LocalStore
    io: IoPool
    replies: Replies
    maintainer: Any = None
    controller_epoch: int | None = None
    epoch: int = 0


@pytest.fixture
def agent(tmp_path):
    config = AgentConfig(
        node_id="n7", mountpaths=(str(tmp_path / "mp0"), str(tmp_path / "mp1")), capacity_bytes=1 << 20
    )
    context = zmq.Context()
    view = _Agent(config, LocalStore(config), IoPool(1, 8, 1 << 20), Replies(context.socket(zmq.ROUTER)))
    yield view
    view.io.close()
    view.store.close()
    context.destroy(linger=0)


def test_agent_metrics_count_the_data_path_and_read_the_store_when_scraped(agent):
    metrics = AgentMetrics(agent)
    metrics.request("read", "ok", 0.001, 0, 4096, "degraded")
    metrics.request("read", "ok", 0.001, 0, 4096, None)
    metrics.request("read", "ok", 0.001, 0, 100, "sideways")
    metrics.request("write", "ok", 0.001, 65536, 0, None)
    metrics.corrupt_chunks("scrub", 3)
    metrics.repaired("repair", 1, 1000)
    metrics.encoded("zfec", 0.001, 4096)
    agent.epoch, agent.controller_epoch = 5, 6
    agent.replies.waiting, agent.replies.dropped = 2, 3
    agent.store.disabled[agent.store.mountpaths[1].id] = "OSError: gone"
    seen = samples(metrics.registry)
    assert seen[("hcstore_reads_total", (("path", "degraded"),))] == 1
    assert seen[("hcstore_reads_total", (("path", "untagged"),))] == 1
    assert seen[("hcstore_reads_total", (("path", "other"),))] == 1
    assert seen[("hcstore_read_bytes_total", (("path", "degraded"),))] == 4096
    assert seen[("hcstore_received_bytes_total", (("op", "write"),))] == 65536
    assert seen[("hcstore_corrupt_chunks_total", (("found_by", "scrub"),))] == 3
    assert seen[("hcstore_repair_bytes_total", (("kind", "repair"),))] == 1000
    assert seen[("hcstore_repair_last_activity_timestamp_seconds", ())] > 0
    assert seen[("hcstore_ec_encoded_bytes_total", (("codec", "zfec"),))] == 4096
    assert seen[("hcstore_map_epoch", (("node", "n7"),))] == 5
    assert seen[("hcstore_controller_epoch_seen", (("node", "n7"),))] == 6
    assert seen[("hcstore_replies_waiting", ())] == 2
    assert seen[("hcstore_replies_dropped_total", ())] == 3
    states = {
        (dict(labels)["mountpath_id"], dict(labels)["state"]): value
        for (name, labels), value in seen.items()
        if name == "hcstore_mountpath_state"
    }
    first, second = (mp.id for mp in agent.store.mountpaths)
    assert states[(first, "enabled")] == 1 and states[(first, "disabled")] == 0
    assert states[(second, "disabled")] == 1 and states[(second, "enabled")] == 0
    capacity = [
        v
        for (name, labels), v in seen.items()
        if name == "hcstore_mountpath_capacity_bytes" and dict(labels)["mountpath_id"] == first
    ]
    assert capacity == [1 << 20]


def test_the_endpoint_serves_metrics_and_health_checks():
    registry = CollectorRegistry()
    RequestMetrics(registry, ["ping"]).observe("ping", "ok", 0.001)
    verdicts = {"ready": Health(False, ("on cluster map epoch 3, older than the controller's 4",), {"epoch": 3})}
    endpoint = MetricsEndpoint(registry, "127.0.0.1", 0, alive=lambda: Health(True), ready=lambda: verdicts["ready"])
    try:
        assert endpoint.url.startswith("http://127.0.0.1:") and endpoint.url.endswith("/metrics")
        text = urllib.request.urlopen(endpoint.url, timeout=5).read().decode()
        names = {f.name for f in text_string_to_metric_families(text)}
        assert "hcstore_requests" in names
        assert json.loads(urllib.request.urlopen(f"{endpoint.base_url}/healthz", timeout=5).read())["ok"] is True
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{endpoint.base_url}/readyz", timeout=5)
        assert refused.value.code == 503
        body = json.loads(refused.value.read())
        assert body["ok"] is False and "epoch 3" in body["reasons"][0] and body["epoch"] == 3
        verdicts["ready"] = Health(True)
        assert urllib.request.urlopen(f"{endpoint.base_url}/readyz", timeout=5).status == 200
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(f"{endpoint.base_url}/nothing", timeout=5)
        assert missing.value.code == 404
    finally:
        endpoint.close()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(endpoint.url, timeout=2)


def test_a_taken_port_is_refused_with_the_address_in_the_message():
    registry = CollectorRegistry()
    first = MetricsEndpoint(registry, "127.0.0.1", 0, alive=lambda: Health(True), ready=lambda: Health(True))
    try:
        port = int(first.base_url.rsplit(":", 1)[1])
        with pytest.raises(OSError, match=f"cannot serve metrics on 127.0.0.1:{port}"):
            MetricsEndpoint(registry, "127.0.0.1", port, alive=lambda: Health(True), ready=lambda: Health(True))
    finally:
        first.close()


class _Tally:
    def __init__(self) -> None:
        self.seen: list[tuple[str, str, int]] = []

    def encoded(self, codec: str, seconds: float, nbytes: int) -> None:
        self.seen.append(("encoded", codec, nbytes))

    def decoded(self, codec: str, seconds: float, nbytes: int) -> None:
        self.seen.append(("decoded", codec, nbytes))


def test_codecs_report_their_work_only_while_observed():
    tally = _Tally()
    data = [bytes([i]) * 64 for i in range(4)]
    assert not isinstance(codec_for("zfec", 4, 2), ObservedCodec)
    with observing_codecs(tally):
        codec = codec_for("zfec", 4, 2)
        parity = codec.encode(data)
        assert codec.decode({0: data[0], 1: data[1], 2: data[2], 3: data[3]}) == data  # no arithmetic: not told
        assert [bytes(c) for c in codec.decode({0: data[0], 2: data[2], 4: parity[0], 5: parity[1]})] == data
    assert tally.seen == [("encoded", "zfec", 256), ("decoded", "zfec", 256)]
    assert not isinstance(pickle.loads(pickle.dumps(codec)), ObservedCodec)
    with observing_codecs(None):
        assert not isinstance(codec_for("zfec", 4, 2), ObservedCodec)


@pytest.mark.parametrize(
    "index, node, local, hedged, path",
    [
        (0, "n1", "n1", False, "local"),
        (5, "n1", "n1", False, "local"),
        (1, "n2", "n1", False, "remote"),
        (4, "n2", None, False, "degraded"),
        (0, "n2", None, True, "hedged"),
        (2, "n3", None, False, "remote"),
    ],
)
def test_read_path(index, node, local, hedged, path):
    assert read_path(index, node, 4, local, hedged=hedged) == path


def test_json_log_lines_carry_the_request_id_and_the_traceback_on_one_line():
    formatter = JsonFormatter()
    try:
        raise OSError("disk on fire")
    except OSError:
        record = logging.LogRecord(
            "hcstore.node.agent",
            logging.ERROR,
            __file__,
            1,
            "request %d (%s): internal error",
            (42, "write"),
            sys.exc_info(),
        )
    record.request_id, record.op = 42, "write"
    line = formatter.format(record)
    assert "\n" not in line
    data = json.loads(line)
    assert data["message"] == "request 42 (write): internal error" and data["level"] == "ERROR"
    assert (data["request_id"], data["op"], data["logger"]) == (42, "write", "hcstore.node.agent")
    assert "disk on fire" in data["exception"] and data["time"].endswith("+00:00")


def _stats(node: str, epoch: int, *mountpaths: dict[str, Any]) -> dict[str, Any]:
    return {
        "node": node,
        "epoch": epoch,
        "metrics": f"http://127.0.0.1:9/{node}",
        "fragments": 3,
        "used": 10,
        "free": 100,
        "mountpaths": list(mountpaths),
    }


def _mountpath(path: str, state: str = "enabled", used: int = 10, limit: int = 100) -> dict[str, Any]:
    return {
        "id": path.strip("/") * 8,
        "path": path,
        "state": state,
        "used": used,
        "limit": limit,
        "free": max(0, limit - used),
        "capacity": 2 * limit,
        "stored": used,
        "fragments": 1,
        "io_errors": 0,
        "disabled": "OSError: EIO" if state == "disabled" else "",
    }


def test_the_status_document_says_what_to_act_on():
    cluster_map = ClusterMap(
        9, (Node("n1", "tcp://127.0.0.1:1"), Node("n2", "tcp://127.0.0.1:2"), Node("n3", "", state="down"))
    )
    stats = {
        "n1": _stats("n1", 9, _mountpath("/a"), _mountpath("/b", "disabled")),
        "n2": _stats("n2", 8, _mountpath("/c", used=95), _mountpath("/d", "full", used=100)),
        "n3": ConnectionError("node n3 is down"),
    }
    protection = {
        "objects": {"full": 5, "1": 2, "unreadable": 1},
        "bytes": {"full": 50, "1": 20, "unreadable": 7},
        "below_full": 3,
        "reports": 2,
        "bytes_awaiting_repair": 64,
        "bytes_missing": 128,
        "bytes_repaired": 0,
        "repaired": 0,
        "failed": 1,
        "scrub_corrupt": 0,
        "repair_rate": 0.0,
        "eta_seconds": None,
    }
    status = ControllerStatus(
        cluster_map,
        {"n1": 0.1, "n2": 0.2, "n3": 30.0},
        {"n1": {"repair": {"running": True}}},
        protection,
        "http://127.0.0.1:9/metrics",
    )
    doc = document("/cluster", "4+2", cluster_map, stats, status, {"n1": 123}, "tcp://127.0.0.1:7")
    json.dumps(doc)  # plain JSON values throughout
    n1, n2, n3 = doc["nodes"]
    assert (n1["state"], n1["pid"], n1["epoch"], n1["scanning"], n1["heartbeat_age"]) == ("alive", 123, 9, True, 0.1)
    assert [mp["state"] for mp in n1["mountpaths"]] == ["enabled", "disabled"]
    assert n1["mountpaths"][1]["error"] == "OSError: EIO"
    assert (n3["state"], n3["mountpaths"], n3["error"]) == ("down", [], "node n3 is down")
    assert doc["controller"] == {"endpoint": "tcp://127.0.0.1:7", "metrics_url": "http://127.0.0.1:9/metrics"}
    assert doc["protection"]["objects"]["1"] == 2 and doc["repair"]["eta_seconds"] is None
    assert doc["repair"]["scanning"] == ["n1"]
    found = "\n".join(doc["problems"])
    for needle in (
        "node n3 is down",
        "node n2 serves by map epoch 8",
        "/b of node n1 is disabled (OSError: EIO)",
        "replace the disk",
        "/d of node n2 is full",
        "/c of node n2 is 95%",
        "1 objects are unreadable",
        "repair is stalled",
    ):
        assert needle in found, found
    assert problems({**doc, "nodes": [], "protection": None, "repair": None}) == []
