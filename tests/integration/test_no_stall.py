"""An agent's serving loop never waits for its disk: reads are answered while a large fragment is written and
fsynced, and a full I/O queue answers "busy" at once while the agent keeps serving.

Assertions are on the order of replies on one connection, never on wall-clock times: the agent receives the
requests in the order they were sent, so a reply that overtakes an earlier request's reply was answered while
that request's disk work was still running.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import msgpack
import pytest
import zmq

from hcstore.client import headers
from hcstore.client.headers import VersionLayout
from hcstore.config import ENV_PREFIX, AgentConfig
from hcstore.generation import HybridClock
from hcstore.wire.protocol import PROTOCOL_VERSION

BUCKET = "nostall"
BIG_CHUNK = 4 << 20
BIG_STRIPES = 16  # 64 MiB written, then fsynced by prepare
RECV_TIMEOUT_MS = 60_000
START_TIMEOUT = 30.0
_ids = itertools.count(1)


class Peer:
    """A raw DEALER socket to one agent: send many requests, then collect replies in arrival order."""

    def __init__(self, endpoint: str, *, receive_queue: int = 1000) -> None:
        self.context = zmq.Context()
        self.socket = self.context.socket(zmq.DEALER)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.setsockopt(zmq.RCVHWM, receive_queue)
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
    """The header fields ``prepare`` takes for a one-fragment object (the agent adds the digests)."""
    layout = VersionLayout(BUCKET, key, gen, "zfec", 1, 1, chunk_size, chunk_size * stripes, stripes)
    return headers.fragment_header(layout, 0, ("n1", "n2"))


def upload_chunks(peer: Peer, key: str, chunk_size: int, stripes: int) -> tuple[str, str]:
    """Open an upload and write its chunks (each acknowledged); returns (generation, upload id)."""
    gen = HybridClock().now()
    upload = peer.call(
        "open", bucket=BUCKET, key=key, gen=gen, idx=0, chunk_size=chunk_size, expected_bytes=chunk_size * stripes
    )["upload"]
    for stripe in range(stripes):
        peer.call("write", bytes([stripe]) * chunk_size, upload=upload, stripe=stripe)
    return gen, upload


def store_small_fragment(peer: Peer, key: str) -> str:
    """A committed fragment of two 64 KiB chunks; returns its generation."""
    gen, upload = upload_chunks(peer, key, 64 << 10, 2)
    peer.call("prepare", upload=upload, header=prepare_header(key, gen, 64 << 10, 2))
    peer.call("commit", bucket=BUCKET, key=key, gen=gen, idx=0)
    return gen


class LoneAgent:
    """One agent process (no controller) run from its config file, fsyncing each fragment before prepare."""

    def __init__(self, directory: Path, **settings) -> None:
        self.directory = directory
        self.config = AgentConfig(
            node_id="n1",
            mountpaths=(str(directory / "mp0"),),
            durability="commit",
            insecure=True,
            ready_file=str(directory / "agent.json"),
            log_file=str(directory / "agent.log"),
            **settings,
        )
        self.config.write(directory / "agent.toml")
        environment = {name: value for name, value in os.environ.items() if not name.startswith(ENV_PREFIX)}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "hcstore.node.agent", "--config", str(directory / "agent.toml")], env=environment
        )
        ready = Path(self.config.ready_file)
        deadline = time.monotonic() + START_TIMEOUT
        while not ready.exists():
            assert self.process.poll() is None, f"the agent exited with {self.process.returncode}"
            assert time.monotonic() < deadline, "the agent did not start in time"
            time.sleep(0.02)
        self.endpoint = json.loads(ready.read_text())["endpoint"]

    def stop(self) -> int:
        """SIGTERM, then the exit status (SIGKILL after the time-out)."""
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(START_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()


@contextmanager
def running_agent(directory: Path, **settings) -> Iterator[tuple[LoneAgent, Peer]]:
    """A lone agent and a peer connected to it, both closed on exit."""
    agent = LoneAgent(directory, **settings)
    peer = Peer(agent.endpoint)
    try:
        yield agent, peer
    finally:
        peer.close()
        agent.stop()


@pytest.fixture
def peer(tmp_path):
    with running_agent(tmp_path) as (_, raw):
        yield raw


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
    assert [r["id"] for r in replies] == sent  # one lane: answered in the order sent
    peer.call("commit", bucket=BUCKET, key="pipelined", gen=gen, idx=0)
    for stripe in (0, 17, 63):
        peer.send("read", bucket=BUCKET, key="pipelined", gen=gen, idx=0, first=stripe, count=1)
        frames = peer.socket.recv_multipart()
        assert msgpack.unpackb(frames[0], raw=False)["ok"] and frames[1] == bytes([stripe]) * (64 << 10)


def test_a_peer_that_reads_its_replies_late_still_gets_every_one(tmp_path):
    # The replies to 300 reads of 64 KiB (19 MiB) fill the peer's small receive queue, both ends' socket buffers
    # and the 64 replies the agent's socket queues per peer; the rest wait in the agent until the peer reads.
    with running_agent(tmp_path) as (agent, _):
        slow = Peer(agent.endpoint, receive_queue=4)
        try:
            small = store_small_fragment(slow, "small")
            sent = [
                slow.send("read", bucket=BUCKET, key="small", gen=small, idx=0, first=n % 2, count=1)
                for n in range(300)
            ]
            time.sleep(2.0)  # read nothing for a while
            replies = slow.replies(len(sent))
        finally:
            slow.close()
    assert sorted(r["id"] for r in replies) == sorted(sent)  # none lost, none twice
    assert all(r["ok"] or r.get("code") == "E_BUSY" for r in replies), [r for r in replies if not r["ok"]][:3]


@pytest.fixture
def small_pool_peer(tmp_path):
    """A peer of an agent with one I/O thread and room for three requests."""
    with running_agent(tmp_path, io_workers=1, io_queue=3) as (_, raw):
        yield raw


def test_a_full_io_queue_answers_busy_and_the_agent_keeps_serving(small_pool_peer):
    peer = small_pool_peer
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


def test_sigterm_answers_every_admitted_request_and_exits_cleanly(tmp_path):
    with running_agent(tmp_path, io_workers=1) as (agent, peer):
        gen, upload = upload_chunks(peer, "big", BIG_CHUNK, BIG_STRIPES)
        sent = [peer.send("prepare", upload=upload, header=prepare_header("big", gen, BIG_CHUNK, BIG_STRIPES))]
        sent += [peer.send("commit", bucket=BUCKET, key="big", gen=gen, idx=0) for _ in range(5)]
        ping = peer.send("ping")
        assert peer.replies(1)[0]["id"] == ping  # answered after the agent took every request before it
        assert agent.stop() == 0
        replies = {r["id"]: r for r in peer.replies(len(sent))}
    assert set(replies) == set(sent)
    # Disk work that had started finished; work not started was refused as retryable.
    assert all(r["ok"] or r["code"] == "E_UNAVAILABLE" for r in replies.values()), replies
    assert not list((tmp_path / "mp0" / "tmp").glob("*.part"))
