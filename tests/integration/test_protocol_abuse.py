"""Malformed, hostile and out-of-bounds messages to a live agent get error replies with stable codes,
and the agent keeps serving.
"""

from __future__ import annotations

import random

import msgpack
import pytest
import zmq

from hcstore.client.headers import VersionLayout, fragment_header
from hcstore.cluster.local import LocalCluster
from hcstore.generation import HybridClock
from hcstore.wire.protocol import MAX_HEADER_BYTES, PROTOCOL_VERSION
from integration_support import CHUNK, connect_raw, seeded_bytes

NODE = "n2"
BUCKET = "abuse"
RECV_TIMEOUT_MS = 5000
_ids = iter(range(1000, 1 << 30))


def pack(header) -> bytes:
    return msgpack.packb(header, use_bin_type=True)


def req(op: str, **fields) -> dict:
    return {"v": PROTOCOL_VERSION, "op": op, "id": next(_ids), "epoch": 0, **fields}


class RawPeer:
    """A raw DEALER socket to one agent; every receive has a time-out."""

    def __init__(self, cluster: LocalCluster, node: str) -> None:
        self.context = zmq.Context()
        self.socket = self.context.socket(zmq.DEALER)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.setsockopt(zmq.RCVTIMEO, RECV_TIMEOUT_MS)
        connect_raw(self.socket, cluster, node)  # an authenticated peer that sends anything

    def call(self, frames: list[bytes]) -> tuple[dict, list[bytes]]:
        self.socket.send_multipart(frames)
        try:
            reply = self.socket.recv_multipart()
        except zmq.Again:
            raise AssertionError(f"no reply within {RECV_TIMEOUT_MS} ms to {frames[:1]!r}") from None
        header = msgpack.unpackb(reply[0], raw=False)
        assert header["v"] == PROTOCOL_VERSION
        return header, reply[1:]

    def request(self, header: dict, *payloads: bytes) -> tuple[dict, list[bytes]]:
        return self.call([pack(header), *payloads])

    def close(self) -> None:
        self.socket.close(linger=0)
        self.context.term()


@pytest.fixture(scope="module")
def stored(shared_client):
    """A coded object; its generation and the fragment index that lives on NODE."""
    data = seeded_bytes("stored", 6 * 4 * CHUNK)
    result = shared_client.put(BUCKET, "stored", data)
    return data, result.generation, result.fragments.index(NODE)


@pytest.fixture
def peer(shared_cluster):
    raw = RawPeer(shared_cluster, NODE)
    yield raw
    raw.close()


def _gen() -> str:
    return HybridClock().now()


def _layout(key: str) -> VersionLayout:
    """A one-stripe ``1+1`` version of ``key`` in chunks of 4096 bytes."""
    return VersionLayout(BUCKET, key, _gen(), "zfec", 1, 1, 4096, 4096, 1)


def _open(peer: RawPeer, chunk_size: int = 4096, **extra) -> str:
    header, _ = peer.request(req("open", bucket=BUCKET, key="raw", gen=_gen(), idx=0, chunk_size=chunk_size, **extra))
    assert header["ok"], header
    return header["upload"]


def assert_error(header: dict, code: str) -> None:
    assert header["ok"] is False, header
    assert header["code"] == code, header
    assert isinstance(header.get("detail"), str) and header["detail"]


FRAME_CASES = {
    "empty frame": ([b""], "E_MALFORMED"),
    "not msgpack": ([b"\xc1\xc1\xc1"], "E_MALFORMED"),
    "plain text": ([b"GET / HTTP/1.1\r\n\r\n"], "E_MALFORMED"),
    "header is a list": ([pack([1, "ping", 7])], "E_MALFORMED"),
    "header is an int": ([pack(5)], "E_MALFORMED"),
    "int map keys": ([pack({1: 2})], "E_MALFORMED"),
    "truncated header": ([pack(req("locate", bucket=BUCKET, key="stored"))[:-4]], "E_MALFORMED"),
    "oversized header": ([pack({"v": 1, "op": "ping", "id": 1, "pad": "x" * (MAX_HEADER_BYTES + 1)})], "E_TOO_LARGE"),
    "no version": ([pack({"op": "ping", "id": 1})], "E_VERSION"),
    "wrong version": ([pack({**req("ping"), "v": 2})], "E_VERSION"),
    "version as text": ([pack({**req("ping"), "v": "1"})], "E_VERSION"),
    "unknown op": ([pack(req("format_disk"))], "E_UNKNOWN_OP"),
    "op not text": ([pack({**req("ping"), "op": 3})], "E_UNKNOWN_OP"),
    "no id": ([pack({"v": 1, "op": "ping"})], "E_MALFORMED"),
    "negative id": ([pack({**req("ping"), "id": -5})], "E_MALFORMED"),
    "id too large": ([pack({**req("ping"), "id": 2**64 - 1})], "E_MALFORMED"),
    "id is bool": ([pack({**req("ping"), "id": True})], "E_MALFORMED"),
    "negative epoch": ([pack({**req("ping"), "epoch": -1})], "E_MALFORMED"),
    "missing fields": ([pack(req("read", bucket=BUCKET, key="stored", idx=0, first=0, count=1))], "E_BAD_FIELD"),
    "missing bucket": ([pack(req("locate", key="k"))], "E_BAD_FIELD"),
    "bucket of wrong type": ([pack(req("locate", bucket=7, key="k"))], "E_BAD_FIELD"),
    "key as bytes": ([pack(req("locate", bucket=BUCKET, key=b"k"))], "E_BAD_FIELD"),
    "idx as text": ([pack(req("commit", bucket=BUCKET, key="k", gen="g", idx="0"))], "E_BAD_FIELD"),
    "idx as bool": ([pack(req("commit", bucket=BUCKET, key="k", gen="g", idx=False))], "E_BAD_FIELD"),
    "idx too large": ([pack(req("commit", bucket=BUCKET, key="k", gen="g", idx=256))], "E_TOO_LARGE"),
    "negative idx": ([pack(req("commit", bucket=BUCKET, key="k", gen="g", idx=-1))], "E_BAD_FIELD"),
    "bad bucket name": ([pack(req("locate", bucket="../etc", key="k"))], "E_BAD_FIELD"),
    "bad generation": ([pack(req("open", bucket=BUCKET, key="k", gen="../../x", idx=0, chunk_size=64))], "E_BAD_FIELD"),
    "retire bad generation": ([pack(req("retire", bucket=BUCKET, key="k", gen="zzz"))], "E_BAD_FIELD"),
    "list limit zero": ([pack(req("list", bucket=BUCKET, limit=0))], "E_BAD_FIELD"),
    "list limit huge": ([pack(req("list", bucket=BUCKET, limit=10**9))], "E_TOO_LARGE"),
    "open chunk 2**40": (
        [pack(req("open", bucket=BUCKET, key="k", gen=_gen(), idx=0, chunk_size=2**40))],
        "E_TOO_LARGE",
    ),
    "open chunk zero": ([pack(req("open", bucket=BUCKET, key="k", gen=_gen(), idx=0, chunk_size=0))], "E_BAD_FIELD"),
    "open negative size": (
        [pack(req("open", bucket=BUCKET, key="k", gen=_gen(), idx=0, chunk_size=64, expected_bytes=-1))],
        "E_BAD_FIELD",
    ),
    "open beyond any disk": (
        [pack(req("open", bucket=BUCKET, key="k", gen=_gen(), idx=0, chunk_size=64, expected_bytes=2**62))],
        "E_STORE_FULL",
    ),
    "write unknown upload": ([pack(req("write", upload="feedface", stripe=0)), b"x" * 64], "E_NO_UPLOAD"),
    "prepare unknown upload": (
        [pack(req("prepare", upload="feedface", header=fragment_header(_layout("k"), 0, ("n1", "n2"))))],
        "E_NO_UPLOAD",
    ),
    "prepare empty header": ([pack(req("prepare", upload="feedface", header={}))], "E_BAD_FIELD"),
    "prepare header not a map": ([pack(req("prepare", upload="feedface", header=[1]))], "E_BAD_FIELD"),
    "tombstone garbage header": ([pack(req("tombstone", header={"kind": "tombstone"}))], "E_BAD_FIELD"),
    "commit unknown fragment": ([pack(req("commit", bucket=BUCKET, key="nope", gen=_gen(), idx=0))], "E_NOT_FOUND"),
    "read unknown fragment": (
        [pack(req("read", bucket=BUCKET, key="nope", gen=_gen(), idx=0, first=0, count=1))],
        "E_NOT_FOUND",
    ),
    "read count 2**40": (
        [pack(req("read", bucket=BUCKET, key="nope", gen=_gen(), idx=0, first=0, count=2**40))],
        "E_TOO_LARGE",
    ),
    "read negative first": (
        [pack(req("read", bucket=BUCKET, key="nope", gen=_gen(), idx=0, first=-1, count=1))],
        "E_BAD_FIELD",
    ),
}


@pytest.mark.parametrize("case", list(FRAME_CASES))
def test_bad_message_gets_error_code(peer, case):
    frames, code = FRAME_CASES[case]
    header, payloads = peer.call(frames)
    assert_error(header, code)
    assert payloads == []
    pong, _ = peer.request(req("ping"))
    assert pong["ok"] and pong["node"] == NODE


def test_error_reply_echoes_a_readable_request_id(peer):
    header, _ = peer.request({"v": 1, "op": "no_such_op", "id": 424242})
    assert_error(header, "E_UNKNOWN_OP")
    assert header["id"] == 424242


def test_read_of_huge_count_on_a_real_fragment(peer, stored):
    _data, gen, idx = stored
    header, payloads = peer.request(req("read", bucket=BUCKET, key="stored", gen=gen, idx=idx, first=0, count=2**31))
    assert_error(header, "E_TOO_LARGE")
    assert payloads == []
    header, _ = peer.request(req("read", bucket=BUCKET, key="stored", gen=gen, idx=idx, first=5, count=3))
    assert_error(header, "E_BAD_FIELD")  # past the fragment's last stripe
    header, payloads = peer.request(req("read", bucket=BUCKET, key="stored", gen=gen, idx=idx, first=0, count=2))
    assert header["ok"] and len(payloads) == 2 and len(header["digests"]) == 2


def test_write_with_two_payload_frames(peer):
    upload = _open(peer)
    header, _ = peer.request(req("write", upload=upload, stripe=0), b"a" * 4096, b"b" * 4096)
    assert_error(header, "E_MALFORMED")
    header, _ = peer.request(req("write", upload=upload, stripe=0))
    assert_error(header, "E_MALFORMED")
    ok, _ = peer.request(req("write", upload=upload, stripe=0), b"a" * 4096)
    assert ok["ok"], ok


def test_write_with_wrong_size_or_order(peer):
    upload = _open(peer)
    header, _ = peer.request(req("write", upload=upload, stripe=0), b"short")
    assert_error(header, "E_BAD_FIELD")
    header, _ = peer.request(req("write", upload=upload, stripe=0), b"x" * 4097)
    assert_error(header, "E_BAD_FIELD")
    header, _ = peer.request(req("write", upload=upload, stripe=3), b"x" * 4096)
    assert_error(header, "E_BAD_FIELD")
    header, _ = peer.request(req("write", upload=upload, stripe=-1), b"x" * 4096)
    assert_error(header, "E_BAD_FIELD")
    ok, _ = peer.request(req("write", upload=upload, stripe=0), b"x" * 4096)
    assert ok["ok"], ok


def test_prepare_with_a_lying_header(peer):
    upload = _open(peer)
    peer.request(req("write", upload=upload, stripe=0), b"x" * 4096)
    header, _ = peer.request(req("prepare", upload=upload, header={"bucket": BUCKET, "key": "other"}))
    assert_error(header, "E_BAD_FIELD")


def test_write_after_abort(peer):
    upload = _open(peer)
    ok, _ = peer.request(req("abort", upload=upload))
    assert ok["ok"]
    header, _ = peer.request(req("write", upload=upload, stripe=0), b"x" * 4096)
    assert_error(header, "E_NO_UPLOAD")


def test_random_garbage_never_stops_the_agent(peer):
    rng = random.Random(77)
    for _ in range(150):
        frames = [rng.randbytes(rng.randrange(0, 200)) for _ in range(rng.randrange(1, 4))]
        header, _ = peer.call(frames)
        assert header["ok"] is False and header["code"].startswith("E_")
    # Mutations of a valid request: every one is answered, with a reply or a coded error.
    good = pack(req("locate", bucket=BUCKET, key="stored"))
    for _ in range(150):
        data = bytearray(good)
        for _ in range(rng.randrange(1, 4)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        header, _ = peer.call([bytes(data)])
        assert header["ok"] is True or header["code"].startswith("E_")


def test_agent_still_serves_after_abuse(peer, shared_client, shared_cluster, stored):
    for frames, _code in FRAME_CASES.values():
        peer.call(frames)
    pong, _ = peer.request(req("ping"))
    assert pong["ok"] and pong["node"] == NODE
    stats, _ = peer.request(req("node_stats"))
    assert stats["ok"] and stats["errors"] >= len(FRAME_CASES)
    assert shared_cluster.running()[NODE] is not None
    data, gen, _idx = stored
    assert shared_client.get(BUCKET, "stored") == data
    fresh = seeded_bytes("fresh", 5 * 4 * CHUNK + 1)
    result = shared_client.put(BUCKET, "fresh", fresh)
    assert NODE in result.fragments and not result.degraded
    assert shared_client.get(BUCKET, "fresh") == fresh


def test_peer_that_never_reads_its_replies(shared_cluster, shared_client, stored):
    context = zmq.Context()
    try:
        rude = context.socket(zmq.DEALER)
        rude.setsockopt(zmq.LINGER, 0)
        connect_raw(rude, shared_cluster, NODE)
        for _ in range(200):
            rude.send_multipart([pack(req("locate", bucket=BUCKET, key="stored"))])
        rude.close(linger=0)
    finally:
        context.term()
    assert shared_client.get(BUCKET, "stored") == stored[0]
