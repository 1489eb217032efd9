"""``ControllerClient`` against a real controller serving on a real socket: one method per operation."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

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


@contextmanager
def served(config: ControllerConfig) -> Iterator[ControllerClient]:
    """A controller serving in a thread of this process, and a client of it."""
    controller = Controller(config)
    thread = threading.Thread(target=controller.serve, daemon=True)
    thread.start()
    try:
        with ControllerClient(controller.endpoint, timeout=5.0) as client:
            yield client
    finally:
        controller.stop()
        thread.join(timeout=10)


@pytest.fixture
def controller():
    with served(ControllerConfig(ec="2+1", insecure=True)) as client:
        yield client


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


def test_a_fresh_map_holds_what_heartbeats_changed_since_the_last_tick():
    # Ticks 30 s apart: the first one, at start, is the only one this test sees.
    intervals = {"heartbeat": 60.0, "suspect_after": 120.0, "down_after": 180.0, "out_after": 600.0}
    with served(ControllerConfig(insecure=True, **intervals)) as client:
        first = client.get_map()
        client.heartbeat("x1", _closed_endpoint())
        held = client.get_map()
        assert "x1" not in held.cluster_map and held.cluster_map.epoch == first.cluster_map.epoch  # not yet
        fresh = client.get_map(fresh=True).cluster_map
        assert "x1" in fresh and fresh.epoch > held.cluster_map.epoch
        assert client.get_map().cluster_map == fresh  # published, for everyone
        client.heartbeat("x2", _closed_endpoint())
        assert "x2" in client.get_map(held=fresh, fresh=True).cluster_map  # as the changes since a held map


def test_no_controller_is_a_clear_error():
    endpoint = _closed_endpoint()
    with (
        ControllerClient(endpoint, timeout=1.0) as client,
        pytest.raises(ControllerUnavailable, match=f"no hcstore controller answers at {endpoint}"),
    ):
        client.get_map()
    with pytest.raises(InvalidRequest, match="tcp://HOST:PORT"):
        ControllerClient("/not/an/endpoint")
