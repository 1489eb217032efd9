"""Fuzzing the wire: hostile and random messages to a live agent and a live controller of a real local cluster.

First the attacks that once stopped a daemon or bloated it (an epoch of 2**64-1 in a heartbeat,
many 60 MiB frames in one message, a header of a million empty arrays, a map of 100k nodes), then
requests that hypothesis builds for every operation from its declared fields (right and wrong
types, boundary integers, huge strings, nested structures, random payload frames), then seeded
random bytes. Every message is answered, within a time-out, by a well-formed reply. Afterwards both
daemons still serve, the objects stored before read back exactly, and the agent's memory is back
near where it started. Reproducible: hypothesis is derandomized, the garbage seeded.
"""

from __future__ import annotations

import random
from typing import Any

import msgpack
import psutil
import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hcstore.cluster.local import LocalCluster
from hcstore.cluster.source import ClusterSource
from hcstore.config import ControllerConfig
from hcstore.control.controller import Controller
from hcstore.generation import HybridClock
from hcstore.wire.protocol import CONTROLLER_OPERATIONS, MAX_STORE_CHUNKS, OPERATIONS, PROTOCOL_VERSION, Field
from integration_support import CHUNK, allow_key, connect_raw, seeded_bytes, wait_until

NODE = "n1"
BUCKET = "kept"  # the objects that must survive; no fuzzed request names this bucket
FRAGMENT = {"bucket": "fuzz", "key": "k", "gen": HybridClock().now(), "idx": 0}
REPLY_TIMEOUT_MS = 10_000
RSS_SLACK = 100 << 20
FUZZ = settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)
_ids = iter(range(10_000, 1 << 40))
pytestmark = pytest.mark.timeout(180)


def pack(header: Any) -> bytes:
    return msgpack.packb(header, use_bin_type=True)


class Peer:
    """A raw DEALER socket; every message waits for its reply, within a time-out."""

    def __init__(self, cluster: LocalCluster, node: str | None, credentials: Any = None) -> None:
        self.context = zmq.Context()
        self.socket = self.context.socket(zmq.DEALER)
        self.socket.setsockopt(zmq.LINGER, 0)
        connect_raw(self.socket, cluster, node, credentials)  # an authenticated peer: the attacks that matter now
        self.sent = 0

    def call(self, frames: list[Any]) -> dict[str, Any]:
        """Send a message and return its reply's header, checked to be a well-formed reply."""
        self.socket.send_multipart(frames, copy=False)
        self.sent += 1
        if not self.socket.poll(REPLY_TIMEOUT_MS):
            raise AssertionError(f"no reply within {REPLY_TIMEOUT_MS} ms to {bytes(frames[0])[:80]!r}")
        reply = self.socket.recv_multipart()
        header = msgpack.unpackb(reply[0], raw=False)
        assert isinstance(header, dict) and header["v"] == PROTOCOL_VERSION, header
        assert isinstance(header["id"], int) and isinstance(header["ok"], bool), header
        if not header["ok"]:
            assert header["code"].startswith("E_") and isinstance(header["detail"], str), header
            assert header["code"] != "E_INTERNAL", header  # bad input is the sender's fault, never a bug
        return header

    def request(self, op: str, *payloads: Any, **fields: Any) -> dict[str, Any]:
        request_id = next(_ids)
        header = self.call([pack({"v": PROTOCOL_VERSION, "op": op, "id": request_id, "epoch": 0, **fields}), *payloads])
        assert header["id"] == request_id, header
        return header

    def close(self) -> None:
        self.socket.close(linger=0)
        self.context.term()


# ------------------------------------------------------------------ strategies


BOUNDARY_INTS = [0, 1, -1, 255, 256, 2**31, 2**32, 2**53, 2**62, 2**63 - 1, 2**63, 2**64 - 1, -(2**63)]
HUGE_TEXT = ["x" * 5000, "é" * 40_000, "y" * 300_000]
ints = st.one_of(st.sampled_from(BOUNDARY_INTS), st.integers(-(2**63), 2**64 - 1), st.integers(-9, 300))
numbers = ints | st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from([1e300, -0.0, 5e-324])
texts = st.one_of(*[st.text(max_size=24)] * 5, st.sampled_from(HUGE_TEXT))
anything = st.recursive(
    st.none() | st.booleans() | ints | numbers | texts | st.binary(max_size=64),
    lambda children: st.lists(children, max_size=6) | st.dictionaries(st.text(max_size=8), children, max_size=6),
    max_leaves=40,
)
GOOD_TEXT: dict[str, list[str]] = {
    "bucket": ["fuzz", "fuzz-other"],
    "gen": [HybridClock().now()],
    "generation": [HybridClock().now()],
    "job": ["scrub", "repair", "defrag"],
    "action": ["drain", "resume", "remove", "explode"],
    "path": ["local", "remote", "degraded", "hedged", "sideways"],
    "kind": ["data", "tombstone", "ghost"],
    "codec": ["zfec", "replica", "isal", "???"],
    # Nodes a fuzzed heartbeat registers are called fuzz-*, so they are easy to tell apart and to remove.
    "node": ["fuzz-a", "fuzz-b"],
    "id": ["fuzz-c", "fuzz-d"],
    "endpoint": ["tcp://127.0.0.1:1", "not an endpoint", ""],
    "state": ["alive", "down", "draining", "maintenance", "decommissioned", "zombie"],
}


# Values no fuzzed request may name: the kept objects' bucket, the real nodes (a heartbeat could move them).
PROTECTED = {"bucket": {BUCKET}, "node": {"n1", "n2", "n3"}, "id": {"n1", "n2", "n3"}}


def right_value(name: str, spec: Field, depth: int = 0) -> st.SearchStrategy[Any]:
    """Values of the declared type (in range or at its edges, valid or not)."""
    kinds = spec.kind if isinstance(spec.kind, tuple) else (spec.kind,)
    options: list[st.SearchStrategy[Any]] = []
    for kind in kinds:
        if kind is object:
            options.append(anything)
        elif kind is bool:
            options.append(st.booleans())
        elif kind is int:
            low, high = spec.bounds or (-(2**63), 2**64 - 1)
            edges = [int(v) for v in (low - 1, low, high, high + 1) if -(2**63) <= v < 2**64]
            options.append(st.one_of(*[st.integers(int(low), int(high))] * 3, st.sampled_from(edges), ints))
        elif kind is float:
            options.append(numbers)
        elif kind is str:
            good = GOOD_TEXT.get(name, [])
            text = (st.sampled_from(good) | texts) if good else texts
            options.append(text.filter(lambda t, name=name: t not in PROTECTED.get(name, ())))
        elif kind is bytes:
            options.append(st.binary(max_size=256))
        elif kind is list:
            item = right_value(name, spec.items, depth + 1) if spec.items and depth < 3 else anything
            options.append(st.lists(item, max_size=6))
        elif kind is dict:
            options.append(right_map(spec, depth))
        elif kind is type(None):
            options.append(st.none())
    return st.one_of(options)


def right_map(spec: Field, depth: int) -> st.SearchStrategy[Any]:
    if depth >= 3:
        return st.dictionaries(st.text(max_size=8), anything, max_size=4)
    if spec.fields is not None:
        required = {name: value(name, sub, depth + 1) for name, sub in spec.fields.items() if sub.required}
        optional = {name: value(name, sub, depth + 1) for name, sub in spec.fields.items() if not sub.required}
        known = st.fixed_dictionaries(required, optional=optional)
        if spec.items is None:
            return known
        extra = st.dictionaries(st.text(max_size=8), right_value("", spec.items, depth + 1), max_size=3)
        return st.builds(lambda a, b: {**b, **a}, known, extra)
    item = right_value("", spec.items, depth + 1) if spec.items else anything
    return st.dictionaries(st.text(max_size=12), item, max_size=5)


def value(name: str, spec: Field, depth: int = 0) -> st.SearchStrategy[Any]:
    """Mostly a value of the declared type, sometimes anything at all."""
    right = right_value(name, spec, depth)
    protected = PROTECTED.get(name, set())
    return st.one_of(*[right] * 6, anything).filter(lambda v: not (isinstance(v, str) and v in protected))


PAYLOAD_SIZES = [0, 1, 64, 4096, CHUNK, 1 << 20]
PAYLOADS = {size: seeded_bytes(size, size) for size in PAYLOAD_SIZES}
ONE_IN_TEN = st.sampled_from(range(10)).map(lambda n: n == 9)


def requests(operations: dict[str, dict[str, Field]]) -> st.SearchStrategy[list[Any]]:
    """Requests of ``operations``: their frames. Strategies are built once, drawn from many times."""
    fields = {
        op: {name: (spec, value(name, spec)) for name, spec in spec_of.items()} for op, spec_of in operations.items()
    }
    payload = st.sampled_from(PAYLOAD_SIZES).map(PAYLOADS.__getitem__)
    epochs = st.one_of(*[st.integers(0, 9)] * 4, ints)
    envelope = st.sampled_from(["v", "op", "id", "epoch", "extra"])

    @st.composite
    def request(draw: st.DrawFn) -> list[Any]:
        op = draw(st.sampled_from(sorted(operations)))
        header: dict[str, Any] = {"v": PROTOCOL_VERSION, "op": op, "id": next(_ids), "epoch": draw(epochs)}
        for name, (spec, strategy) in fields[op].items():
            if (spec.required and not draw(ONE_IN_TEN)) or (not spec.required and draw(st.booleans())):
                header[name] = draw(strategy)
        if draw(ONE_IN_TEN):  # a broken envelope, or a field no operation has
            header[draw(envelope)] = draw(anything)
        if op in ("write", "store") and not draw(ONE_IN_TEN):
            frames = [draw(payload)]  # the payload of a chunk (of any size, the right one or not)
        else:
            frames = draw(st.lists(payload, max_size=3)) if draw(ONE_IN_TEN) else []
        return [pack(header), *frames]

    return request()


# ------------------------------------------------------------------ the test


def garbage(rng: random.Random, good: bytes) -> list[bytes]:
    """Raw garbage: random frames, or a valid header with a few bytes changed."""
    if rng.random() < 0.5:
        return [rng.randbytes(rng.randrange(0, 300)) for _ in range(rng.randrange(1, 4))]
    data = bytearray(good)
    for _ in range(rng.randrange(1, 4)):
        data[rng.randrange(len(data))] = rng.randrange(256)
    return [bytes(data)]


def nested_arrays(count: int) -> bytes:
    """A ping whose ``pad`` field is ``count`` empty arrays in one array (about ``count`` bytes)."""
    return pack({"v": 1, "op": "ping", "id": next(_ids), "pad": [[]] * count})


def rss(pid: int) -> int:
    return psutil.Process(pid).memory_info().rss


def test_fuzzed_wire_leaves_agent_and_controller_serving(make_cluster):
    cluster = make_cluster(agents=3, ec="2+1")
    real_nodes = {agent.node_id for agent in cluster.agents()}
    kept = {
        "small": seeded_bytes("small", 1000),  # one stripe: stored with `store` messages
        "large": seeded_bytes("large", 9 * 2 * CHUNK + 5),  # ten stripes: open, write, prepare
    }
    with cluster.client(chunk_size=CHUNK, request_timeout=5.0) as client:
        for key, data in kept.items():
            client.put(BUCKET, key, data)
    pid = cluster.agent(NODE).pid()
    assert pid is not None
    agent = Peer(cluster, NODE)
    controller = Peer(cluster, None, allow_key(cluster, "node", "fuzz-a"))  # a node key, bound to fuzz-a
    try:
        agent.request("ping", b"w" * (60 << 20))  # a large message (refused: a ping has no payload) first
        baseline = rss(pid)

        # The attacks that once worked, each answered with a coded error.
        reply = controller.request("heartbeat", node="fuzz-a", endpoint="", labels={}, weight=1.0, epoch=2**64 - 1)
        assert reply["code"] == "E_MALFORMED", reply
        hostile_heartbeats = {
            "epoch of 2**64-1 in the map": ({"map": {"epoch": 2**64 - 1, "nodes": []}}, "E_TOO_LARGE"),
            "epoch beyond what can be reached": ({"map": {"epoch": 2**62 + 7, "nodes": []}}, "E_BAD_FIELD"),
            "weight NaN": ({"weight": float("nan")}, "E_BAD_FIELD"),
            "weight infinite": ({"weight": float("inf")}, "E_BAD_FIELD"),
            "weight negative": ({"weight": -1.0}, "E_BAD_FIELD"),
            "weight huge": ({"weight": 1e300}, "E_TOO_LARGE"),
            "giant labels": ({"labels": {f"l{i}": "v" * 200 for i in range(2000)}}, "E_TOO_LARGE"),
            "map of 100k nodes": (
                {"map": {"epoch": 1, "nodes": [{"id": f"{i:x}"} for i in range(100_000)]}},  # 1 MB
                "E_TOO_LARGE",
            ),
            "stats of the wrong shape": ({"stats": {"repair": {"bytes_repaired": "lots"}}}, "E_BAD_FIELD"),
        }
        for name, (fields, code) in hostile_heartbeats.items():
            base = {"node": "fuzz-a", "endpoint": "tcp://127.0.0.1:1", "labels": {}, "weight": 1.0}
            reply = controller.request("heartbeat", **{**base, **fields})
            assert reply["ok"] is False and reply["code"] == code, (name, reply)
        assert controller.request("get_map")["ok"]

        big = b"\0" * (60 << 20)
        reply = agent.request("write", *[big] * 4, upload="x", stripe=0)  # the attack had 12 such frames
        assert reply["code"] == "E_TOO_LARGE", reply
        del big
        reply = agent.request("store", *[b"c" * 64] * (MAX_STORE_CHUNKS + 1), **FRAGMENT, chunk_size=64, header={})
        assert reply["code"] == "E_MALFORMED", reply
        # How early the decoder stops is measured in tests/unit/test_protocol_limits.py; here, that the agent
        # answers these with the right code and the request's own id.
        reply = agent.call([nested_arrays((1 << 20) - 64)])
        assert reply["code"] == "E_TOO_LARGE", reply
        reply = agent.call([pack({"v": 1, "op": "ping", "id": 5, "pad": [[[]] * 4096] * 250})])
        assert reply["code"] == "E_TOO_LARGE" and reply["id"] == 5, reply

        # Requests hypothesis builds for every operation, to the agent and to the controller.
        @FUZZ
        @given(frames=requests(OPERATIONS))
        def fuzz_agent(frames: list[Any]) -> None:
            agent.call(frames)

        @settings(FUZZ, max_examples=120)
        @given(frames=requests(CONTROLLER_OPERATIONS))
        def fuzz_controller(frames: list[Any]) -> None:
            controller.call(frames)

        fuzz_agent()
        fuzz_controller()

        # Raw garbage, seeded.
        rng = random.Random(20_240_601)
        good = pack({"v": 1, "op": "locate", "id": 77, "epoch": 0, "bucket": "fuzz", "key": "k"})
        for _ in range(150):
            agent.call(garbage(rng, good))
            controller.call(garbage(rng, pack({"v": 1, "op": "get_map", "id": 78, "epoch": 0})))

        # Both daemons still serve.
        assert agent.request("ping")["node"] == NODE
        assert agent.request("node_stats")["errors"] > 0
        assert controller.request("get_map")["ok"]
        assert cluster.running()[NODE] == pid
    finally:
        agent.close()
        controller.close()

    # Nodes the fuzzing registered leave the map; the kept objects read back exactly.
    with ClusterSource.local(cluster.path).controller(timeout=5.0) as admin:
        for node in admin.get_map().cluster_map.nodes:
            if node.id not in real_nodes and node.state != "decommissioned":
                admin.remove(node.id, force=True)
        real = admin.wait_for_map(lambda m: all(m.node(n).state == "alive" for n in real_nodes), timeout=20)
        assert {n.id for n in real.nodes if n.state != "decommissioned"} == real_nodes
    with cluster.client(chunk_size=CHUNK, request_timeout=5.0) as client:
        for key, data in kept.items():
            assert client.get(BUCKET, key) == data

    # The agent's memory is back near where it started.
    wait_until(lambda: rss(pid) < baseline + RSS_SLACK, timeout=10, what=f"agent RSS back near {baseline >> 20} MiB")


def test_a_reply_that_cannot_be_encoded_becomes_an_error_reply():
    served = Controller(ControllerConfig(metrics_port=-1, insecure=True))
    try:
        request = pack({"v": 1, "op": "get_map", "id": 9, "epoch": 0})
        served._handlers["get_map"] = lambda request: {"huge": 2**64}  # a bug: a field msgpack cannot encode
        [_, frame] = served.handle([b"peer", request])
        reply = msgpack.unpackb(frame, raw=False)
        assert (reply["ok"], reply["id"], reply["code"]) == (False, 9, "E_INTERNAL")
        served.table.epoch = 2**64  # and an epoch that cannot be encoded either
        [_, frame] = served.handle([b"peer", request])
        reply = msgpack.unpackb(frame, raw=False)
        assert (reply["ok"], reply["id"], reply["code"], reply["epoch"]) == (False, 9, "E_INTERNAL", 0)
    finally:
        served.socket.close(linger=0)
