"""An agent's serving loop never waits for its disk: reads are answered while a large fragment is written and
fsynced, and a full I/O queue answers "busy" at once while the agent keeps serving.

Assertions are on the order of replies on one connection, never on wall-clock times: the agent receives the
requests in the order they were sent, so a reply that overtakes an earlier request's reply was answered while
that request's disk work was still running.
"""

from __future__ import annotations

import itertools

import msgpack
import pytest
import zmq

from ec import FragmentHeader, header_to_dict
from hcstore.generation import HybridClock
from hcstore.wire.protocol import PROTOCOL_VERSION

BUCKET = "nostall"
BIG_CHUNK = 4 << 20
BIG_STRIPES = 16                  # 64 MiB written, then fsynced by prepare
RECV_TIMEOUT_MS = 60_000
_ids = itertools.count(1)


class Peer:
    """A raw DEALER socket to one agent: send many requests, then collect replies in arrival order."""

    def __init__(self, endpoint: str) -> None:
        self.context = zmq.Context()
        self.socket = self.context.socket(zmq.DEALER)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.setsockopt(zmq.RCVTIMEO, RECV_TIMEOUT_MS)
        self.socket.connect(endpoint)

    def send(self, op: str, *payloads: bytes, **fields) -> int:
        request_id = next(_ids)
        header = {"v": PROTOCOL_VERSION, "op": op, "id": request_id, "epoch": 0, **fields}
        self.socket.send_multipart([msgpack.packb(header, use_bin_type=True), *payloads])
        return request_id

    def replies(self, count: int) -> list[dict]:
        """The next ``count`` reply headers, in the order they arrived."""
        headers = []
        for _ in range(count):
            try:
                frames = self.socket.recv_multipart()
            except zmq.Again:
                raise AssertionError(f"no reply within {RECV_TIMEOUT_MS} ms") from None
            headers.append(msgpack.unpackb(frames[0], raw=False))
        return headers

    def call(self, op: str, *payloads: bytes, **fields) -> dict:
        """One request and its reply, sent again while the agent answers busy."""
        while True:
            request_id = self.send(op, *payloads, **fields)
            [reply] = self.replies(1)
            assert reply["id"] == request_id
            if reply.get("code") != "E_BUSY":
                assert reply["ok"], reply
                return reply

    def close(self) -> None:
        self.socket.close(linger=0)
        self.context.term()


def prepare_header(key: str, gen: str, chunk_size: int, stripes: int) -> dict:
    fields = header_to_dict(FragmentHeader(
        bucket=BUCKET, key=key, generation=gen, kind="data", codec="zfec", k=1, m=1, chunk_size=chunk_size,
        size=chunk_size * stripes, index=0, stripes=stripes, digests=bytes(32 * stripes), placement=("n1", "n2"),
        created_ns=1))
    del fields["digests"]
    return fields


def upload_chunks(peer: Peer, key: str, chunk_size: int, stripes: int) -> tuple[str, str]:
    """Open an upload and write its chunks (each acknowledged); returns (generation, upload id)."""
    gen = HybridClock().now()
    upload = peer.call("open", bucket=BUCKET, key=key, gen=gen, idx=0, chunk_size=chunk_size,
                       expected_bytes=chunk_size * stripes)["upload"]
    for stripe in range(stripes):
        peer.call("write", bytes([stripe]) * chunk_size, upload=upload, stripe=stripe)
    return gen, upload


def store_small_fragment(peer: Peer, key: str) -> str:
    """A committed fragment of two 64 KiB chunks; returns its generation."""
    gen, upload = upload_chunks(peer, key, 64 << 10, 2)
    peer.call("prepare", upload=upload, header=prepare_header(key, gen, 64 << 10, 2))
    peer.call("commit", bucket=BUCKET, key=key, gen=gen, idx=0)
    return gen


@pytest.fixture
def agent_endpoint(make_cluster):
    """The endpoint of a lone agent that fsyncs each fragment before it is prepared."""
    cluster = make_cluster(agents=1, ec="1+1", durability="commit", mountpaths_per_agent=1)
    return cluster.cluster_map().node("n1").endpoint


@pytest.fixture
def peer(agent_endpoint):
    raw = Peer(agent_endpoint)
    yield raw
    raw.close()


def test_a_read_sent_after_a_large_prepare_is_answered_before_it(peer):
    small = store_small_fragment(peer, "small")
    gen, upload = upload_chunks(peer, "big", BIG_CHUNK, BIG_STRIPES)
    prepare = peer.send("prepare", upload=upload, header=prepare_header("big", gen, BIG_CHUNK, BIG_STRIPES))
    read = peer.send("read", bucket=BUCKET, key="small", gen=small, idx=0, first=0, count=1)
    ping = peer.send("ping")
    replies = peer.replies(3)
    assert [r["id"] for r in replies][-1] == prepare, "the read and the ping waited for the prepare's fsync"
    assert all(r["ok"] for r in replies), replies
    assert {r["id"] for r in replies} == {prepare, read, ping}


def test_writes_of_one_upload_sent_back_to_back_land_in_order(peer):
    gen = HybridClock().now()
    upload = peer.call("open", bucket=BUCKET, key="pipelined", gen=gen, idx=0, chunk_size=64 << 10)["upload"]
    sent = [peer.send("write", bytes([s]) * (64 << 10), upload=upload, stripe=s) for s in range(64)]
    sent.append(peer.send("prepare", upload=upload, header=prepare_header("pipelined", gen, 64 << 10, 64)))
    replies = peer.replies(len(sent))
    assert all(r["ok"] for r in replies), [r for r in replies if not r["ok"]][:3]
    assert [r["id"] for r in replies] == sent          # one lane: answered in the order sent
    peer.call("commit", bucket=BUCKET, key="pipelined", gen=gen, idx=0)
    for stripe in (0, 17, 63):
        peer.send("read", bucket=BUCKET, key="pipelined", gen=gen, idx=0, first=stripe, count=1)
        frames = peer.socket.recv_multipart()
        assert msgpack.unpackb(frames[0], raw=False)["ok"] and frames[1] == bytes([stripe]) * (64 << 10)


@pytest.fixture
def small_pool(monkeypatch):
    """Agents started from here get one I/O thread and room for three requests."""
    monkeypatch.setenv("HCSTORE_IO_WORKERS", "1")
    monkeypatch.setenv("HCSTORE_IO_QUEUE", "3")


def test_a_full_io_queue_answers_busy_and_the_agent_keeps_serving(small_pool, peer):
    small = store_small_fragment(peer, "small")
    gen, upload = upload_chunks(peer, "big", BIG_CHUNK, BIG_STRIPES)
    prepare = peer.send("prepare", upload=upload, header=prepare_header("big", gen, BIG_CHUNK, BIG_STRIPES))
    commits = [peer.send("commit", bucket=BUCKET, key="big", gen=gen, idx=0) for _ in range(10)]
    read = peer.send("read", bucket=BUCKET, key="small", gen=small, idx=0, first=0, count=1)
    replies = {r["id"]: r for r in peer.replies(12)}
    assert replies[prepare]["ok"] and replies[read]["ok"]
    busy = [replies[c] for c in commits if replies[c].get("code") == "E_BUSY"]
    assert len(busy) >= 7, "one I/O thread and room for three: the prepare and two commits at most"
    assert all("busy" in r["detail"] for r in busy)
    assert all(replies[c]["ok"] or replies[c].get("code") == "E_BUSY" for c in commits), replies
    # The queue drained: disk work is accepted again, and the refused commit goes through when sent again.
    peer.call("commit", bucket=BUCKET, key="big", gen=gen, idx=0)
    assert peer.call("locate", bucket=BUCKET, key="big")["entries"][0]["state"] == "committed"
    stats = peer.call("node_stats")
    assert stats["busy"] >= len(busy)
