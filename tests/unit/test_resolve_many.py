"""resolve_many against an agent that predates ``locate_many``: it falls back to one ``locate`` per key."""

from __future__ import annotations

import threading

import pytest
import zmq

from hcstore.client.client import Client
from hcstore.client.versions import resolve_many
from hcstore.errors import InvalidRequest, ObjectNotFound, UnknownOperation
from hcstore.wire import protocol
from placement import ClusterMap, Node


class OlderAgent:
    """A ROUTER socket that answers as an agent without ``locate_many`` does: it holds nothing."""

    def __init__(self) -> None:
        self.socket = zmq.Context.instance().socket(zmq.ROUTER)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.endpoint = f"tcp://127.0.0.1:{self.socket.bind_to_random_port('tcp://127.0.0.1')}"
        self.ops: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            if not self.socket.poll(20):
                continue
            routing, *body = self.socket.recv_multipart()
            header = protocol.decode_header(body)
            self.ops.append(header["op"])
            if header["op"] == "locate":
                frames = protocol.reply_frames(header["id"], 1, {"entries": []})
            else:
                frames = protocol.error_frames(header["id"], 1, UnknownOperation(f"unknown operation {header['op']}"))
            self.socket.send_multipart([routing, *frames])

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.socket.close(linger=0)


@pytest.fixture
def older_agent():
    agent = OlderAgent()
    yield agent
    agent.close()


def test_an_agent_without_locate_many_is_asked_one_key_at_a_time(older_agent):
    cluster_map = ClusterMap(1, [Node("n0", older_agent.endpoint)])
    with Client(cluster_map, ec="1+0", insecure=True, request_timeout=5.0) as client:
        outcomes = resolve_many(client, [("bkt", "a"), ("bkt", "b"), ("Bad Bucket", "c")])
    assert isinstance(outcomes["bkt", "a"], ObjectNotFound)  # proven absent by the node's own answer
    assert isinstance(outcomes["bkt", "b"], ObjectNotFound)
    assert isinstance(outcomes["Bad Bucket", "c"], InvalidRequest)  # a bad name is its own error, not the batch's
    assert older_agent.ops == ["locate_many", "locate", "locate"]
