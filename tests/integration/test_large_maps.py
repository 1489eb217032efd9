"""A cluster map larger than a message header (more nodes than MAX_HEADER_MAP_NODES) travels as a compressed
bulk frame: real agents take it from their heartbeat replies and persist it, and a controller restarted without
state learns it back from an agent's heartbeat.

The extra nodes are simulated: heartbeats from a test socket, with endpoints no agent serves. Their suspect
time is out of the test's reach, so the map holds still while it travels.
"""

from __future__ import annotations

import json
import signal
from typing import Any

import msgpack
import zmq

from hcstore.control.membership import Intervals
from hcstore.wire import protocol
from integration_support import wait_until
from placement import ClusterMap

SIMULATED = protocol.MAX_HEADER_MAP_NODES + 300
IN_FLIGHT = 32
STILL = Intervals(heartbeat=0.5, suspect_after=60.0, down_after=120.0, out_after=600.0)


def register_simulated_nodes(endpoint: str, count: int) -> None:
    """One heartbeat for each of ``count`` nodes that exist nowhere else, from one socket, a few in flight at a
    time (the controller drops replies past its per-peer queue)."""
    context = zmq.Context()
    sock = context.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    try:
        for first in range(0, count, IN_FLIGHT):
            batch = range(first, min(count, first + IN_FLIGHT))
            for i in batch:
                fields: dict[str, Any] = {
                    "node": f"sim-{i:05d}",
                    "endpoint": f"tcp://127.0.0.1:{20000 + i}",
                    "labels": {"host": f"sim-{i:05d}"},
                    "weight": 1.0,
                    "framed": True,  # each first heartbeat brings the whole map: compressed, as agents take it
                }
                sock.send_multipart(protocol.request_frames("heartbeat", i + 1, 0, fields))
            for _ in batch:
                assert sock.poll(30_000), "the controller stopped answering the simulated nodes"
                header = msgpack.unpackb(sock.recv_multipart()[0])  # the map in its bulk frame is not decoded
                assert header["ok"], header
    finally:
        sock.close()
        context.term()


def persisted_map(cluster: Any, node_id: str) -> ClusterMap | None:
    path = cluster.agent_directory(node_id) / "cluster-map.json"
    return ClusterMap.from_dict(json.loads(path.read_text())) if path.exists() else None


def test_a_map_larger_than_a_header_reaches_agents_and_a_restarted_controller(make_cluster):
    cluster = make_cluster(agents=3, ec="1+1", insecure=True, intervals=STILL, scan_interval=600.0)
    register_simulated_nodes(cluster.controller_endpoint(), SIMULATED)
    total = 3 + SIMULATED
    grown = cluster.wait_for_map(lambda m: len(m.nodes) == total, timeout=30)
    assert len(protocol.Packed.of(grown.to_dict()).data) > 400_000  # headers hold at most MAX_HEADER_MAP_NODES

    def every_agent_holds(epoch: int) -> bool:
        maps = [persisted_map(cluster, agent.node_id) for agent in cluster.agents()]
        return all(m is not None and m.epoch >= epoch and len(m.nodes) == total for m in maps)

    wait_until(lambda: every_agent_holds(grown.epoch), timeout=30, what="every agent to persist the large map")

    cluster.stop_controller(sig=signal.SIGKILL)
    cluster.start_controller()  # no state: it learns the nodes from the maps the agents send back
    learned = cluster.wait_for_map(lambda m: len(m.nodes) == total and m.epoch > grown.epoch, timeout=30)
    assert {node.id for node in learned.nodes} == {node.id for node in grown.nodes}
