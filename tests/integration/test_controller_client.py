"""``ControllerClient`` against a real controller serving on a real socket: one method per operation."""

from __future__ import annotations

import socket
import threading

import pytest

from hcstore.config import ControllerConfig
from hcstore.control.client import ControllerClient
from hcstore.control.controller import Controller
from hcstore.errors import (
    ControllerUnavailable,
    InvalidRequest,
    ObjectNotFound,
    Timeout,
)


@pytest.fixture
def controller():
    """A controller serving in a thread of this process, and a client of it."""
    served = Controller(ControllerConfig(ec="2+1", insecure=True))
    thread = threading.Thread(target=served.serve, daemon=True)
    thread.start()
    with ControllerClient(served.endpoint, timeout=5.0) as client:
        yield client
    served.stop()
    thread.join(timeout=10)


def _closed_endpoint() -> str:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{s.getsockname()[1]}"


def test_heartbeats_register_nodes_and_the_map_says_so(controller):
    assert controller.get_map().cluster_map.nodes == ()
    assert controller.get_map().ec == "2+1"
    endpoint = _closed_endpoint()
    controller.heartbeat("x1", endpoint, labels={"host": "x1"})  # registered; in the map from the next tick
    newer = controller.wait_for_map(lambda m: "x1" in m, timeout=10)
    assert [n.id for n in newer.nodes] == ["x1"]
    assert controller.heartbeat("x1", endpoint, labels={"host": "x1"}, epoch=newer.epoch) is None  # nothing newer
    status = controller.status()
    assert [n.id for n in status.cluster_map.nodes] == ["x1"] and status.ages["x1"] >= 0


def test_node_administration(controller):
    controller.heartbeat("x1", _closed_endpoint(), stats={"data_fragments": 0})
    with pytest.raises(InvalidRequest, match="would leave 0 nodes in service .* EC 2\\+1: its fragments would have"):
        controller.drain("x1")
    for other in ("x2", "x3", "x4"):
        controller.heartbeat(other, _closed_endpoint())
    assert controller.drain("x1").node("x1").state == "draining"
    assert controller.resume("x1").node("x1").state == "alive"
    with pytest.raises(InvalidRequest, match="could lose data"):  # the node cannot say it holds nothing
        controller.remove("x1")
    assert controller.remove("x1", force=True).node("x1").state == "decommissioned"
    with pytest.raises(ObjectNotFound, match="no node 'x9'"):
        controller.drain("x9")
    with pytest.raises(InvalidRequest, match="unknown node action"):
        controller.node_admin("x1", "explode")


def test_waiting_for_a_map(controller):
    threading.Timer(0.2, lambda: controller.heartbeat("x2", _closed_endpoint())).start()
    assert "x2" in controller.wait_for_map(lambda m: "x2" in m, timeout=10)
    with pytest.raises(Timeout, match="did not reach the expected state within 0.3s"):
        controller.wait_for_map(lambda m: "x3" in m, timeout=0.3)


def test_no_controller_is_a_clear_error():
    endpoint = _closed_endpoint()
    with (
        ControllerClient(endpoint, timeout=1.0) as client,
        pytest.raises(ControllerUnavailable, match=f"no hcstore controller answers at {endpoint}"),
    ):
        client.get_map()
    with pytest.raises(InvalidRequest, match="tcp://HOST:PORT"):
        ControllerClient("/not/an/endpoint")
