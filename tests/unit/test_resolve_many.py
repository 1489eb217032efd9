"""resolve_many against an agent that predates ``locate_many``: it falls back to one ``locate`` per key."""

from __future__ import annotations

import pytest

from hcstore.client.client import Client
from hcstore.client.versions import resolve_many
from hcstore.errors import InvalidRequest, ObjectNotFound, UnknownOperation
from hcstore.wire import protocol
from integration_support import StubRouter
from placement import ClusterMap, Node


class OlderAgent:
    """Answers as an agent without ``locate_many`` does, holding nothing; records the operations asked."""

    def __init__(self) -> None:
        self.ops: list[str] = []
        self._router = StubRouter(self._answer)
        self.endpoint = self._router.endpoint

    def _answer(self, body: list[bytes]) -> list:
        header = protocol.decode_header(body)
        self.ops.append(header["op"])
        if header["op"] == "locate":
            return protocol.reply_frames(header["id"], 1, {"entries": []})
        return protocol.error_frames(header["id"], 1, UnknownOperation(f"unknown operation {header['op']}"))

    def close(self) -> None:
        self._router.close()


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
