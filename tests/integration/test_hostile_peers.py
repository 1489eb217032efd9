"""A peer (authenticated or not) cannot crash, starve or fill an agent's store, and nor can damage done to its
files behind its back: each attack gets an error reply with a stable code, the agent keeps serving (same
pid, answers a ping), and every object stored before reads back exact.

The attacker is a raw DEALER socket connected from 127.0.0.2, so that the agent sees it as another peer
than the test's own client (127.0.0.1).
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import resource
import struct
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import blake3
import msgpack
import pytest
import zmq

from ec import DATA_OFFSET, FOOTER_MAGIC, FOOTER_SIZE, header_to_dict, parse_fragment
from hcstore.cluster.local import LocalCluster
from hcstore.errors import InvalidRequest
from hcstore.node.peers import MAX_UPLOADS_PER_PEER
from hcstore.security.curve import Credentials, secure_client
from hcstore.wire import protocol
from integration_support import allow_key, fragment_files_of, fully_protected, seeded_bytes, wait_until

BUCKET = "hostile"
NODE = "n1"
ATTACKER = "127.0.0.2"
FRAMING = DATA_OFFSET + FOOTER_SIZE
RECV_TIMEOUT_MS = 15_000
WINDOW = 32  # requests a raw peer keeps outstanding
ATTACKER_KEY: dict[str, Credentials] = {}  # by cluster directory


class RawPeer:
    """A raw DEALER socket to one agent, connected from another loopback address; replies are headers."""

    def __init__(self, endpoint: str, credentials: Credentials, server_key: str, source: str = ATTACKER) -> None:
        self.context = zmq.Context()
        self.socket = self.context.socket(zmq.DEALER)
        self.socket.setsockopt(zmq.LINGER, 0)
        secure_client(self.socket, credentials, server_key)  # an authenticated client, of role client
        self.socket.setsockopt(zmq.RCVTIMEO, RECV_TIMEOUT_MS)
        self.socket.connect(f"tcp://{source}:0;{endpoint.removeprefix('tcp://')}")
        self._ids = itertools.count(1)

    def send_frames(self, frames: Sequence[Any]) -> None:
        self.socket.send_multipart(list(frames))

    def receive(self) -> dict[str, Any]:
        try:
            frames = self.socket.recv_multipart()
        except zmq.Again:
            raise AssertionError(f"no reply within {RECV_TIMEOUT_MS} ms") from None
        return protocol.decode_reply(frames).header

    def calls(self, requests: Sequence[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
        """Send the requests with up to WINDOW outstanding (an agent drops replies to a peer that lets more
        pile up unread), and return the replies in the order of the requests."""
        sent: list[int] = []
        replies: dict[int, dict[str, Any]] = {}
        for op, fields in requests:
            if len(sent) - len(replies) >= WINDOW:
                header = self.receive()
                replies[header["id"]] = header
            request_id = next(self._ids)
            sent.append(request_id)
            self.send_frames(protocol.request_frames(op, request_id, 0, fields))
        while len(replies) < len(sent):
            header = self.receive()
            replies[header["id"]] = header
        return [replies[request_id] for request_id in sent]

    def call(self, op: str, **fields: Any) -> dict[str, Any]:
        return self.calls([(op, fields)])[0]

    def close(self) -> None:
        self.socket.close(linger=0)
        self.context.term()


@contextmanager
def raw_peer(client: Any, node: str) -> Iterator[RawPeer]:
    """A raw peer of ``node`` with the attacker's key (see the ``cluster`` fixture)."""
    peer = RawPeer(client.endpoint(node), ATTACKER_KEY[client.source.location], client.cluster_map.node(node).key)
    try:
        assert peer.call("ping")["ok"]
        yield peer
    finally:
        peer.close()


def assert_error(reply: dict[str, Any], code: str, *needles: str) -> None:
    assert reply["ok"] is False, reply
    assert reply["code"] == code, reply
    for needle in needles:
        assert needle in reply["detail"], reply


def open_fields(client: Any, key: str, **extra: Any) -> dict[str, Any]:
    return {"bucket": BUCKET, "key": key, "gen": client.clock.now(), "idx": 0, "chunk_size": 4096, **extra}


def put_objects(client: Any) -> dict[str, bytes]:
    """A coded object and a small replicated one, stored before the attack."""
    objects = {"before/coded": seeded_bytes("coded", 3 << 20), "before/small": seeded_bytes("small", 5000)}
    for key, data in objects.items():
        assert not client.put(BUCKET, key, data).degraded
    return objects


def assert_unharmed(cluster: LocalCluster, client: Any, pid: int, objects: dict[str, bytes]) -> None:
    """The agent runs with the same pid, answers a ping, keeps every mountpath, and every object reads back."""
    assert cluster.running()[NODE] == pid
    endpoint = client.endpoint(NODE)
    assert client.transport.request(endpoint, "ping", {}).header["pid"] == pid
    stats = client.transport.request(endpoint, "node_stats", {}).header
    assert [(m["state"], m["io_errors"]) for m in stats["mountpaths"]] == [("enabled", 0)] * len(stats["mountpaths"])
    for key, data in objects.items():
        assert client.get(BUCKET, key) == data


@pytest.fixture
def cluster(make_cluster) -> LocalCluster:
    """Three agents, and a client key for the attacker."""
    return with_attacker(make_cluster(agents=3, ec="2+1", mountpaths_per_agent=1))


def with_attacker(cluster: LocalCluster) -> LocalCluster:
    """``cluster``, with a client key allowed for the attacker: any authenticated client may attack."""
    ATTACKER_KEY[str(cluster.path)] = allow_key(cluster, "client", "attacker")
    return cluster


def attacker_key(client: Any) -> str:
    """The attacker's public key: who an agent's per-peer limits name."""
    return ATTACKER_KEY[client.source.location].public


def test_running_out_of_file_descriptors_is_overload_not_a_disk_fault(cluster):
    with cluster.client(request_timeout=10.0) as client:
        objects = put_objects(client)
        pid = cluster.agent(NODE).pid()
        endpoint = client.endpoint(NODE)
        with raw_peer(client, NODE) as attacker:
            soft, hard = resource.prlimit(pid, resource.RLIMIT_NOFILE)
            resource.prlimit(pid, resource.RLIMIT_NOFILE, (len(os.listdir(f"/proc/{pid}/fd")) + 40, hard))
            try:
                replies = attacker.calls([("open", open_fields(client, f"flood/{i}")) for i in range(200)])
                during = client.transport.request(endpoint, "node_stats", {}).header
            finally:
                resource.prlimit(pid, resource.RLIMIT_NOFILE, (soft, hard))
            opened = [reply["upload"] for reply in replies if reply["ok"]]
            refused = [reply for reply in replies if not reply["ok"]]
            assert opened and refused, replies[-1]
            for reply in refused:
                assert_error(reply, "E_BUSY", "Too many open files", "stays in service")
            assert during["uploads"] == len(opened)
            assert all(m["state"] == "enabled" for m in during["mountpaths"]), during["mountpaths"]
            assert all(reply["ok"] for reply in attacker.calls([("abort", {"upload": u}) for u in opened]))
        assert_unharmed(cluster, client, pid, objects)
        after = seeded_bytes("after", 1 << 20)
        assert not client.put(BUCKET, "after", after).degraded
        assert client.get(BUCKET, "after") == after


def test_open_uploads_are_capped_per_peer(cluster):
    with cluster.client(request_timeout=10.0) as client:
        objects = put_objects(client)
        pid = cluster.agent(NODE).pid()
        soft, hard = resource.prlimit(pid, resource.RLIMIT_NOFILE)
        if soft < MAX_UPLOADS_PER_PEER + 256:
            pytest.skip(f"the agent may open only {soft} files here (hard limit {hard})")
        with raw_peer(client, NODE) as attacker:
            requests = [("open", open_fields(client, f"many/{i}")) for i in range(MAX_UPLOADS_PER_PEER + 1)]
            replies = attacker.calls(requests)
            opened = [reply["upload"] for reply in replies if reply["ok"]]
            refused = [reply for reply in replies if not reply["ok"]]  # opens run side by side: any one of them
            assert len(opened) == MAX_UPLOADS_PER_PEER and len(refused) == 1
            assert_error(
                refused[0], "E_PEER_LIMIT", f"peer {attacker_key(client)} has {MAX_UPLOADS_PER_PEER} open uploads"
            )
            data = seeded_bytes("other peer", 1 << 20)  # another peer is not held back
            assert not client.put(BUCKET, "other-peer", data).degraded
            assert all(reply["ok"] for reply in attacker.calls([("abort", {"upload": u}) for u in opened]))
            assert attacker.call("open", **open_fields(client, "again"))["ok"]
        assert_unharmed(cluster, client, pid, {**objects, "other-peer": data})


def test_one_peer_cannot_reserve_the_node_s_free_space(make_cluster):
    cluster = with_attacker(make_cluster(agents=3, ec="2+1", mountpaths_per_agent=1, capacity_bytes=24 << 20))
    with cluster.client(request_timeout=10.0) as client:
        objects = put_objects(client)
        pid = cluster.agent(NODE).pid()
        endpoint = client.endpoint(NODE)

        def stats() -> dict[str, Any]:
            return client.transport.request(endpoint, "node_stats", {}).header

        free = stats()["free"]
        with raw_peer(client, NODE) as attacker:
            hog = attacker.call("open", **open_fields(client, "hog/0", expected_bytes=free - FRAMING))
            assert hog["ok"], hog  # it opens, holding only its share of the room
            assert free - stats()["free"] == free // 4
            assert_error(
                attacker.call("open", **open_fields(client, "hog/1", expected_bytes=free // 2)),
                "E_PEER_LIMIT",
                f"peer {attacker_key(client)} holds",
            )
            # everyone else still writes: an object whose fragment on this node takes half the room
            big = seeded_bytes("big", free)
            assert not client.put(BUCKET, "big", big).degraded
            assert client.get(BUCKET, "big") == big
            assert attacker.call("abort", upload=hog["upload"])["ok"]
        assert stats()["uploads"] == 0
        assert_unharmed(cluster, client, pid, objects)


def test_a_key_that_is_not_text_is_refused_and_the_agent_keeps_serving(cluster):
    bad = "a\udc80b"  # a lone surrogate: what Python makes of bytes that are not UTF-8
    with cluster.client(request_timeout=10.0) as client:
        objects = put_objects(client)
        pid = cluster.agent(NODE).pid()
        calls = {
            "put": lambda: client.put(BUCKET, bad, b"data"),
            "get": lambda: client.get(BUCKET, bad),
            "stat": lambda: client.stat(BUCKET, bad),
            "delete": lambda: client.delete(BUCKET, bad),
            "writer": lambda: client.writer(BUCKET, bad),
            "list": lambda: client.list(BUCKET, prefix=bad),
            "metadata": lambda: client.put(BUCKET, "k", b"data", meta={"note": bad}),
        }
        for name, call in calls.items():
            with pytest.raises(InvalidRequest, match="lone surrogate") as refused:
                call()
            assert refused.value.code == "E_BAD_FIELD", name
        with raw_peer(client, NODE) as attacker:
            for op, fields in [("locate", {"key": bad}), ("open", open_fields(client, bad))]:
                header = {"v": protocol.PROTOCOL_VERSION, "op": op, "id": 7, "epoch": 0, "bucket": BUCKET, **fields}
                attacker.send_frames([msgpack.packb(header, use_bin_type=True, unicode_errors="surrogatepass")])
                assert_error(attacker.receive(), "E_MALFORMED", "not valid msgpack")
        assert_unharmed(cluster, client, pid, objects)


def _forge_trailer(path: Path, **changes: Any) -> None:
    """Give a fragment file a trailer with other values, checksummed, whose footer still points where the old
    one began: a file whose trailer does not describe it."""
    header, data = parse_fragment(path.read_bytes())
    trailer = msgpack.packb(header_to_dict(dataclasses.replace(header, **changes)), use_bin_type=True)
    digest = blake3.blake3(trailer).digest()
    footer = struct.pack("<QI32s4s", DATA_OFFSET + len(data), len(trailer), digest, FOOTER_MAGIC)
    forged = path.with_name(path.name + ".forged")
    forged.write_bytes(path.read_bytes()[:DATA_OFFSET] + bytes(data) + trailer + footer)
    os.replace(forged, path)


def _quarantined(path: Path) -> bool:
    return not path.exists() and (path.parents[2] / "quarantine" / path.name).exists()


def _rebuilt(client: Any, keys: Sequence[str]) -> bool:
    for node in ("n1", "n2", "n3"):
        client.transport.request(client.endpoint(node), "maintain", {"job": "repair"})
    return fully_protected(client, BUCKET, keys)


def test_a_fragment_whose_trailer_lies_about_its_size_is_corrupt(cluster):
    with cluster.client(request_timeout=10.0) as client:
        objects = put_objects(client)
        key = "before/coded"
        version = client.resolve(BUCKET, key)
        node, path = fragment_files_of(cluster, BUCKET, key, version.generation)[0]
        pid = cluster.agent(node).pid()
        header, _ = parse_fragment(path.read_bytes())
        assert header.stripes >= 2
        stripes = header.stripes - 1  # one stripe fewer than the file holds, consistent in itself
        _forge_trailer(path, stripes=stripes, size=stripes * header.k * header.chunk_size, digests=header.digests[:-32])
        with raw_peer(client, node) as attacker:
            read = {"bucket": BUCKET, "key": key, "gen": version.generation, "idx": 0, "first": 0, "count": 1}
            assert_error(attacker.call("read", **read), "E_CORRUPT", "trailer_offset")
        wait_until(lambda: _quarantined(path), timeout=10, what="the lying fragment to be quarantined")
        assert cluster.running()[node] == pid
        assert_unharmed(cluster, client, cluster.agent(NODE).pid(), objects)
        wait_until(lambda: _rebuilt(client, [key]), timeout=60, interval=1.0, what="the fragment to be rebuilt")


def test_a_truncated_fragment_is_reported_corrupt(cluster):
    with cluster.client(request_timeout=10.0) as client:
        objects = put_objects(client)
        with cluster.client(request_timeout=10.0, chunk_size=16 << 10) as small_chunks:
            objects["small-chunks"] = seeded_bytes("small chunks", 1 << 20)
            assert not small_chunks.put(BUCKET, "small-chunks", objects["small-chunks"]).degraded
        for key in ("before/coded", "small-chunks"):
            version = client.resolve(BUCKET, key)
            node, path = fragment_files_of(cluster, BUCKET, key, version.generation)[0]
            pid = cluster.agent(node).pid()
            assert client.get(BUCKET, key) == objects[key]  # fragment 0 is read and its header cached
            os.truncate(path, DATA_OFFSET + version.chunk_size + 100)
            client.corruptions.clear()
            assert client.get(BUCKET, key) == objects[key]  # read around it
            assert {(r.fragment, r.node) for r in client.corruptions} == {(0, node)}, client.corruptions
            wait_until(lambda: _quarantined(path), timeout=10, what="the truncated fragment to be quarantined")  # noqa: B023
            assert cluster.running()[node] == pid
            assert client.transport.request(client.endpoint(node), "ping", {}).header["pid"] == pid
        assert_unharmed(cluster, client, cluster.agent(NODE).pid(), objects)
        wait_until(lambda: _rebuilt(client, list(objects)), timeout=60, interval=1.0, what="the fragments rebuilt")
        for key, data in objects.items():
            assert client.get(BUCKET, key) == data


def test_a_fragment_truncated_while_its_replies_are_being_sent_does_not_abort_the_agent(cluster):
    with cluster.client(request_timeout=10.0, chunk_size=8 << 20) as client:
        data = seeded_bytes("big chunks", 64 << 20)  # 4 stripes of 2 x 8 MiB chunks
        assert not client.put(BUCKET, "big", data).degraded
        version = client.resolve(BUCKET, "big")
        node, path = fragment_files_of(cluster, BUCKET, "big", version.generation)[0]
        pid = cluster.agent(node).pid()
        read = {"bucket": BUCKET, "key": "big", "gen": version.generation, "idx": 0, "first": 0, "count": 4}
        with raw_peer(client, node) as attacker:
            for request_id in range(1, 9):  # 8 replies of 32 MiB queued, then the file is cut under them
                attacker.send_frames(protocol.request_frames("read", request_id, 0, read))
            os.truncate(path, DATA_OFFSET + 100)
            codes = [attacker.receive().get("code", "ok") for _ in range(8)]
        assert set(codes) <= {"ok", "E_CORRUPT", "E_NOT_FOUND"}, codes  # not found: quarantined by then
        assert cluster.running()[node] == pid
        assert client.transport.request(client.endpoint(node), "ping", {}).header["pid"] == pid
        assert client.get(BUCKET, "big") == data
