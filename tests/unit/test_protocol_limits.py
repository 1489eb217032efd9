"""The wire's limits, as pure decoding rules: msgpack limits, message and payload sizes, the bounds of every
integer field (nested ones included), checked nested fields, and the error reply that cannot fail."""

from __future__ import annotations

import math
import re
import tracemalloc
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ec import DIGEST_SIZE, FragmentHeader, header_to_dict
from hcstore.errors import HCStoreError, InvalidRequest, MessageTooLarge, ProtocolError, StoreFull
from hcstore.wire import protocol
from hcstore.wire.protocol import CONTROLLER_OPERATIONS, OPERATIONS, Field

GEN = "0000000000000000001-0000-00000000"
FRAG = {"bucket": "bkt", "key": "a/b", "gen": GEN, "idx": 0}


def fragment_fields(*, size: int = 4096, chunk_size: int = 4096, k: int = 1, kind: str = "data") -> dict[str, Any]:
    stripes = -(-size // (k * chunk_size))
    header = FragmentHeader(
        bucket="bkt",
        key="a/b",
        generation=GEN,
        kind=kind,
        codec="replica" if kind == "tombstone" else "zfec",
        k=k,
        m=1,
        chunk_size=chunk_size,
        size=size,
        index=0,
        stripes=stripes,
        digests=bytes(DIGEST_SIZE * stripes),
        placement=tuple(f"n{i}" for i in range(k + 1)),
        created_ns=1,
        meta={"content-type": "text/plain"},
    )
    return header_to_dict(header)


DATA_HEADER = {name: value for name, value in fragment_fields().items() if name != "digests"}
TOMBSTONE_HEADER = fragment_fields(size=0, chunk_size=64, kind="tombstone")
REPORT = {
    "fragments": 3,
    "data_fragments": 2,
    "used": 10,
    "free": 20,
    "pid": 77,
    "metrics": "http://127.0.0.1:9100/metrics",
    "repair": {
        "objects": 1,
        "bytes_awaiting_repair": 0,
        "bytes_missing": 0,
        "bytes_repaired": 5,
        "repaired": 1,
        "failed": 0,
        "started": 1.5,
        "running": False,
        "levels": {"full": 1},
        "level_bytes": {"full": 4096},
        "scrub": {"fragments": 3, "corrupt": 0, "started": 0.0},
    },
}
KEY = "E%V!E>oj<k<lbjLDPi{9k7:e&7peo}^YfpXpD[$p"  # a CurveZMQ public key, Z85
NODE = {
    "id": "n1",
    "endpoint": "tcp://127.0.0.1:7001",
    "weight": 1.0,
    "labels": {"host": "h1"},
    "state": "alive",
    "key": KEY,
}

# A valid request of every operation: fields, and payload frames.
VALID: dict[str, tuple[dict[str, Any], list[bytes]]] = {
    "ping": ({}, []),
    "node_stats": ({}, []),
    "open": ({**FRAG, "chunk_size": 4096, "expected_bytes": 4096}, []),
    "store": ({**FRAG, "chunk_size": 4096, "header": DATA_HEADER}, [b"x" * 4096]),
    "write": ({"upload": "u1", "stripe": 0}, [b"x" * 4096]),
    "prepare": ({"upload": "u1", "header": DATA_HEADER}, []),
    "commit": (dict(FRAG), []),
    "abort": ({"upload": "u1"}, []),
    "retire": ({"bucket": "bkt", "key": "a/b", "gen": GEN}, []),
    "tombstone": ({"header": TOMBSTONE_HEADER}, []),
    "read": ({**FRAG, "first": 0, "count": 1, "path": "local"}, []),
    "drop": (dict(FRAG), []),
    "quarantine": (dict(FRAG), []),
    "maintain": ({"job": "scrub"}, []),
    "locate": ({"bucket": "bkt", "key": "a/b"}, []),
    "locate_many": ({"objects": [{"bucket": "bkt", "key": "a/b"}, {"bucket": "bkt", "key": "c"}]}, []),
    "list": ({"bucket": "bkt", "prefix": "a/", "start_after": "a/a", "limit": 10}, []),
    "buckets": ({}, []),
    "heartbeat": (
        {
            "node": "n1",
            "endpoint": "tcp://127.0.0.1:7001",
            "labels": {"host": "h1"},
            "weight": 1.0,
            "map": {"epoch": 3, "nodes": [NODE], "keys": [{"key": KEY, "role": "node", "name": "n1"}]},
            "stats": REPORT,
        },
        [],
    ),
    "get_map": ({}, []),
    "node_admin": ({"node": "n1", "action": "drain", "force": False}, []),
    "status": ({}, []),
    "keys": ({"action": "add", "key": KEY, "role": "client", "name": "alice"}, []),
    "cluster_secret": ({}, []),
}


def table(op: str) -> dict[str, dict[str, Field]]:
    return CONTROLLER_OPERATIONS if op in CONTROLLER_OPERATIONS else OPERATIONS


def decode(op: str, fields: dict[str, Any], payloads: list[Any] | None = None, **header: Any) -> protocol.Request:
    raw = {"v": 1, "op": op, "id": 7, "epoch": 0, **header, **fields}
    frames = [protocol.pack(raw), *(VALID[op][1] if payloads is None else payloads)]
    return protocol.decode_request(frames, table(op))


def with_value(fields: dict[str, Any], path: tuple[str | int, ...], value: Any) -> dict[str, Any]:
    """A deep copy of ``fields`` with the value at ``path`` replaced (or added)."""
    copy: Any = msgpack.unpackb(msgpack.packb(fields, use_bin_type=True), raw=False)
    target = copy
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    return copy


def value_at(fields: dict[str, Any], path: tuple[str | int, ...]) -> Any:
    target: Any = fields
    for step in path:
        target = target[step]
    return target


def number_paths(op: str) -> list[tuple[tuple[str | int, ...], Field]]:
    """Every integer or float field of ``op`` that the valid request reaches, nested ones included."""
    found: list[tuple[tuple[str | int, ...], Field]] = []
    base = VALID[op][0]

    def walk(path: tuple[str | int, ...], spec: Field) -> None:
        kinds = spec.kind if isinstance(spec.kind, tuple) else (spec.kind,)
        if spec.bounds is not None and (int in kinds or float in kinds):
            found.append((path, spec))
        if spec.fields is not None:
            for name, sub in spec.fields.items():
                walk((*path, name), sub)
        if spec.items is not None and spec.items.kind is not object:
            try:
                present = value_at(base, path)
            except (KeyError, IndexError, TypeError):
                return
            if isinstance(present, list) and present:
                walk((*path, 0), spec.items)
            elif isinstance(present, dict):
                for key in present:
                    if spec.fields is None or key not in spec.fields:
                        walk((*path, key), spec.items)

    for name, spec in table(op)[op].items():
        walk((name,), spec)
    return found


def dotted(path: tuple[str | int, ...]) -> str:
    """A field's path as error messages name it: ``map.nodes[0].weight``."""
    text = ""
    for step in path:
        text += f"[{step}]" if isinstance(step, int) else f".{step}" if text else step
    return text


ALL_OPS = [*OPERATIONS, *CONTROLLER_OPERATIONS]
NUMBER_CASES = [(op, path, spec) for op in ALL_OPS for path, spec in number_paths(op)]


# ------------------------------------------------------------------ every operation, in range


def test_every_operation_has_a_valid_request_here():
    assert set(VALID) == set(ALL_OPS)


@pytest.mark.parametrize("op", ALL_OPS)
def test_valid_requests_decode(op):
    fields, payloads = VALID[op]
    request = decode(op, fields)
    assert request.op == op and request.fields == fields and request.payloads == payloads


def test_the_integer_fields_are_all_found():
    paths = {(op, dotted(path)) for op, path, _spec in NUMBER_CASES}
    for expected in [
        ("open", "expected_bytes"),
        ("store", "header.k"),
        ("store", "header.created_ns"),
        ("prepare", "header.stripes"),
        ("tombstone", "header.size"),
        ("read", "count"),
        ("list", "limit"),
        ("heartbeat", "weight"),
        ("heartbeat", "map.epoch"),
        ("heartbeat", "map.nodes[0].weight"),
        ("heartbeat", "stats.data_fragments"),
        ("heartbeat", "stats.repair.bytes_repaired"),
        ("heartbeat", "stats.repair.levels.full"),
        ("heartbeat", "stats.repair.scrub.corrupt"),
    ]:
        assert expected in paths


# ------------------------------------------------------------------ bounds of every number


def _case_id(case: tuple[str, tuple[str | int, ...], Field]) -> str:
    return f"{case[0]}:{dotted(case[1])}"


@pytest.mark.parametrize("case", NUMBER_CASES, ids=_case_id)
def test_every_number_is_bounded(case):
    op, path, spec = case
    assert spec.bounds is not None
    low, high = spec.bounds
    fields = VALID[op][0]
    for inside in (low, high):
        value = int(inside) if float(inside).is_integer() else inside
        decode(op, with_value(fields, path, value))
    above = [v for v in (int(high) + 1, (1 << 63) - 1, 1 << 63, (1 << 64) - 1) if high < v < (1 << 64)]
    below = [v for v in (int(low) - 1, -1, -(1 << 63)) if v < low]
    name = re.escape(repr(dotted(path)))
    for value in above:
        with pytest.raises(MessageTooLarge, match=name):
            decode(op, with_value(fields, path, value))
    for value in below:
        with pytest.raises(InvalidRequest, match=name) as info:
            decode(op, with_value(fields, path, value))
        assert not isinstance(info.value, MessageTooLarge)
    for wrong in (True, "1", None, [1]):
        with pytest.raises(InvalidRequest, match=name):
            decode(op, with_value(fields, path, wrong))


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, -1.0, 2e6, 1e300])
def test_heartbeat_weight_must_be_finite_and_bounded(bad):
    with pytest.raises((InvalidRequest, MessageTooLarge), match="'weight'"):
        decode("heartbeat", with_value(VALID["heartbeat"][0], ("weight",), bad))


@pytest.mark.parametrize("epoch", [-1, protocol.MAX_EPOCH + 1, (1 << 64) - 1, True, "3", 1.0])
def test_header_epoch_is_bounded(epoch):
    with pytest.raises(ProtocolError, match="epoch"):
        decode("ping", {}, epoch=epoch)
    assert decode("ping", {}, epoch=protocol.MAX_EPOCH).epoch == protocol.MAX_EPOCH


@pytest.mark.parametrize("request_id", [-1, 1 << 63, (1 << 64) - 1, True, 1.0, None])
def test_request_id_is_bounded(request_id):
    with pytest.raises(ProtocolError, match="request id"):
        decode("ping", {}, id=request_id)


# ------------------------------------------------------------------ nested fields


@pytest.mark.parametrize(
    "op, path, value, error, needle",
    [
        ("heartbeat", ("labels",), {f"l{i}": "v" for i in range(protocol.MAX_LABELS + 1)}, MessageTooLarge, "labels"),
        ("heartbeat", ("labels", "zone"), "z" * (protocol.MAX_LABEL_BYTES + 1), MessageTooLarge, "labels.zone"),
        ("heartbeat", ("labels", "zone"), 5, InvalidRequest, "labels.zone"),
        ("heartbeat", ("labels", "zone"), {"a": "b"}, InvalidRequest, "labels.zone"),
        ("heartbeat", ("map", "nodes"), [NODE] * (protocol.MAX_HEADER_MAP_NODES + 1), MessageTooLarge, "max_array_len"),
        ("heartbeat", ("map", "nodes", 0, "id"), 7, InvalidRequest, "map.nodes[0].id"),
        ("heartbeat", ("map", "nodes", 0, "color"), "red", InvalidRequest, "unknown field 'color'"),
        ("heartbeat", ("map", "nodes", 0, "weight"), math.nan, InvalidRequest, "map.nodes[0].weight"),
        ("heartbeat", ("map", "nodes", 0), "n1", InvalidRequest, "map.nodes[0]"),
        ("heartbeat", ("map", "nodes"), {"n1": NODE}, InvalidRequest, "map.nodes"),
        ("heartbeat", ("map", "epoch"), "3", InvalidRequest, "map.epoch"),
        ("heartbeat", ("map",), [], InvalidRequest, "'map'"),
        ("heartbeat", ("stats", "data_fragments"), "many", InvalidRequest, "stats.data_fragments"),
        ("heartbeat", ("stats", "repair"), [1, 2], InvalidRequest, "stats.repair"),
        ("heartbeat", ("stats", "repair", "levels", "²"), 1, InvalidRequest, "stats.repair.levels"),
        ("heartbeat", ("stats", "repair", "levels", "full"), 1.5, InvalidRequest, "stats.repair.levels.full"),
        ("heartbeat", ("stats", "repair", "scrub"), "clean", InvalidRequest, "stats.repair.scrub"),
        ("heartbeat", ("stats", "extra"), math.inf, InvalidRequest, "stats.extra"),
        ("heartbeat", ("stats", "extra"), 1 << 63, MessageTooLarge, "stats.extra"),
        ("heartbeat", ("stats", "extra"), "x" * 5000, MessageTooLarge, "stats.extra"),
        ("heartbeat", ("stats", "extra"), [[[[[1]]]]], InvalidRequest, "nests deeper"),
        ("heartbeat", ("stats", "extra"), list(range(protocol.MAX_REPORT_VALUES + 1)), MessageTooLarge, "free-form"),
        ("heartbeat", ("node",), "n" * 5000, MessageTooLarge, "'node'"),
        ("store", ("header", "placement"), ["n"] * 300, MessageTooLarge, "header.placement"),
        ("store", ("header", "placement", 0), 1, InvalidRequest, "header.placement[0]"),
        ("store", ("header", "meta", "k"), 1, InvalidRequest, "header.meta.k"),
        ("store", ("header", "codec"), "c" * 100, MessageTooLarge, "header.codec"),
        ("prepare", ("header", "digests"), "not bytes", InvalidRequest, "header.digests"),
        ("prepare", ("header", "color"), "red", InvalidRequest, "unknown field 'color'"),
        ("tombstone", ("header", "size"), 1.0, InvalidRequest, "header.size"),
        ("tombstone", ("header",), [], InvalidRequest, "'header'"),
        ("read", ("path",), "p" * 5000, MessageTooLarge, "'path'"),
    ],
)
def test_nested_fields_are_checked_and_named(op, path, value, error, needle):
    with pytest.raises(error) as info:
        decode(op, with_value(VALID[op][0], path, value))
    assert needle in str(info.value)


@pytest.mark.parametrize("op", ["store", "prepare", "tombstone"])
def test_a_fragment_header_lacking_a_field_is_refused_by_name(op):
    fields = {**VALID[op][0], "header": {k: v for k, v in VALID[op][0]["header"].items() if k != "placement"}}
    with pytest.raises(InvalidRequest, match="'header.placement'"):
        decode(op, fields)


def test_map_keys_must_be_text():
    raw = protocol.pack({"v": 1, "op": "heartbeat", "id": 1, **VALID["heartbeat"][0], "labels": {b"zone": "a"}})
    with pytest.raises(InvalidRequest, match="key of type bytes"):
        protocol.decode_request([raw], CONTROLLER_OPERATIONS)


def test_unknown_top_level_fields_are_ignored_unread():
    deep: Any = []
    for _ in range(500):
        deep = [deep]
    assert decode("ping", {"future": deep}).fields == {}


# ------------------------------------------------------------------ sizes and payloads


class FakeFrame:
    """A frame that only says how long it is (the checks read lengths, never the bytes)."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __len__(self) -> int:
        return self.size


def test_whole_message_size_is_bounded():
    fields, _ = VALID["write"]
    decode("write", fields, [FakeFrame(protocol.MAX_CHUNK_BYTES)])
    with pytest.raises(MessageTooLarge, match="payload frame"):
        decode("write", fields, [FakeFrame(protocol.MAX_CHUNK_BYTES + 1)])
    store = VALID["store"][0]
    with pytest.raises(MessageTooLarge, match="message of"):
        decode("store", store, [FakeFrame(protocol.MAX_CHUNK_BYTES)] * 2)
    with pytest.raises(MessageTooLarge, match="message of"):
        decode("ping", {}, [FakeFrame(60 << 20)] * 12)


@pytest.mark.parametrize(
    "op, count, ok",
    [
        ("ping", 1, False),
        ("read", 1, False),
        ("heartbeat", 1, False),
        ("write", 0, False),
        ("write", 1, True),
        ("write", 2, False),
        ("store", 0, True),
        ("store", protocol.MAX_STORE_CHUNKS, True),
        ("store", protocol.MAX_STORE_CHUNKS + 1, False),
    ],
)
def test_payload_frames_per_operation(op, count, ok):
    payloads = [b"x" * 64] * count
    if ok:
        assert decode(op, VALID[op][0], payloads).payloads == payloads
    else:
        with pytest.raises(ProtocolError, match="payload frames"):
            decode(op, VALID[op][0], payloads)


def test_header_of_a_64_gib_object_fits():
    fields = fragment_fields(size=64 << 30, chunk_size=1 << 20, k=4)  # 16384 stripes: 512 KiB of digests
    assert len(fields["digests"]) == DIGEST_SIZE * 16384
    request = decode("prepare", {"upload": "u1", "header": fields})
    assert request.fields["header"]["digests"] == fields["digests"]
    assert len(protocol.pack({"header": fields})) < protocol.MAX_HEADER_BYTES


def test_largest_legitimate_heartbeat_fits():
    nodes = [
        {**NODE, "id": f"node-{i:05d}", "endpoint": f"tcp://10.0.{i // 256}.{i % 256}:7700"}
        for i in range(protocol.MAX_HEADER_MAP_NODES)
    ]
    fields = with_value(VALID["heartbeat"][0], ("map", "nodes"), nodes)
    assert len(decode("heartbeat", fields).fields["map"]["nodes"]) == protocol.MAX_HEADER_MAP_NODES


def test_meta_with_many_entries_fits():
    meta = {f"{i:x}": "" for i in range(12000)}  # within MAX_META_BYTES
    decode("store", with_value(VALID["store"][0], ("header", "meta"), meta))


# ------------------------------------------------------------------ msgpack limits


def _refusal_peak_memory(raw: bytes, error: type[HCStoreError]) -> int:
    """The most memory decoding ``raw`` held before it was refused. A refusal that comes only after the whole
    header was built shows as tens of megabytes (1M empty lists are 56 MB); a refusal at the limit, as about
    the header's own size. Memory, not time: the machines these tests run on are shared and noisy."""
    tracemalloc.start()
    try:
        with pytest.raises(error):
            protocol.decode_request([raw])
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_header_frame_size_is_bounded():
    _refusal_peak_memory(b"\x00" * (protocol.MAX_HEADER_BYTES + 1), MessageTooLarge)


def test_long_array_is_refused_at_once():
    raw = msgpack.packb({"v": 1, "op": "ping", "id": 1, "pad": [[]] * ((1 << 20) - 100)})
    assert len(raw) <= protocol.MAX_HEADER_BYTES
    assert _refusal_peak_memory(raw, MessageTooLarge) < 4 * protocol.MAX_HEADER_BYTES


def test_many_small_arrays_are_refused_quickly():
    raw = msgpack.packb({"v": 1, "op": "ping", "id": 1, "pad": [[[]] * 4096] * 250})  # 1M empty arrays in 1 MiB
    assert len(raw) <= protocol.MAX_HEADER_BYTES
    assert _refusal_peak_memory(raw, MessageTooLarge) < 4 * protocol.MAX_HEADER_BYTES


def test_large_map_is_refused():
    raw = msgpack.packb(
        {"v": 1, "op": "ping", "id": 1, "pad": {str(i): 0 for i in range(protocol.MAX_MAP_ENTRIES + 1)}}
    )
    _refusal_peak_memory(raw, MessageTooLarge)


def test_extension_types_are_refused():
    raw = msgpack.packb({"v": 1, "op": "ping", "id": 1, "t": msgpack.Timestamp(1, 0)})
    _refusal_peak_memory(raw, MessageTooLarge)
    raw = msgpack.packb({"v": 1, "op": "ping", "id": 1, "t": msgpack.ExtType(5, b"ab")})
    _refusal_peak_memory(raw, MessageTooLarge)


def test_deep_nesting_is_refused():
    deep = b"\x81\xa1x" * 2000 + b"\xc0"  # {"x": {"x": ...}} 2000 deep
    raw = b"\x84" + msgpack.packb("v") + b"\x01" + msgpack.packb("op") + msgpack.packb("ping")
    raw += msgpack.packb("id") + b"\x01" + msgpack.packb("pad") + deep
    _refusal_peak_memory(raw, ProtocolError)


def test_the_error_path_reuses_the_decoded_header():
    header = protocol.decode_header([msgpack.packb({"v": 1, "op": "fly", "id": 42})])
    assert protocol.request_id_of(header) == 42
    assert protocol.request_id_of({"id": 1 << 63}) == 0
    assert protocol.request_id_of({"id": True}) == 0
    assert protocol.request_id_of({}) == 0
    with pytest.raises(ProtocolError):
        protocol.check_request(header, [b""])


def test_a_header_over_a_limit_still_gives_its_request_id():
    raw = msgpack.packb({"v": 1, "op": "heartbeat", "id": 43, "map": {"nodes": [{}] * 100_000}})
    decoded: dict[str, Any] = {}
    with pytest.raises(MessageTooLarge, match="max_array_len"):
        protocol.decode_header([raw], decoded)
    assert protocol.request_id_of(decoded) == 43
    with pytest.raises(ProtocolError, match="bytes after its map"):
        protocol.decode_header([msgpack.packb({"v": 1}) + b"\x00"])
    with pytest.raises(ProtocolError, match="map"):
        protocol.decode_header([msgpack.packb([1, "ping", 7])])


# ------------------------------------------------------------------ the error reply cannot fail


class Weird(HCStoreError):
    code = "E_WEIRD"

    def __str__(self) -> str:
        raise RuntimeError("no text for you")


class OddCode(HCStoreError):
    code = object()  # type: ignore[assignment]


@pytest.mark.parametrize(
    "request_id, epoch, error",
    [
        ((1 << 64), 1, StoreFull("full")),
        (5, (1 << 64) + 3, StoreFull("full")),
        (-(1 << 70), -(1 << 70), InvalidRequest("bad")),
        (5, 1, Weird()),
        (5, 1, OddCode("odd")),
        (5, 1, InvalidRequest("lone surrogate \udc80 in the detail")),
        (5, 1, RuntimeError("not an hcstore error")),
        ("id", None, StoreFull("x" * 100_000)),
    ],
)
def test_error_reply_never_fails(request_id, epoch, error):
    frames = protocol.error_frames(request_id, epoch, error)
    reply = protocol.decode_reply(frames)
    assert reply.ok is False
    assert isinstance(reply.header["id"], int) and 0 <= reply.header["id"] < (1 << 63)
    assert isinstance(reply.header["code"], str) and reply.header["code"].startswith("E_")
    assert isinstance(reply.header["detail"], str) and len(reply.header["detail"]) <= protocol.MAX_DETAIL_CHARS


def test_error_reply_keeps_what_it_can():
    reply = protocol.decode_reply(protocol.error_frames(9, 1 << 64, StoreFull("disk full")))
    assert (reply.header["id"], reply.header["code"]) == (9, "E_STORE_FULL")
    reply = protocol.decode_reply(protocol.error_frames(9, 3, InvalidRequest("caf\udce9")))
    assert reply.header["code"] == "E_BAD_FIELD" and reply.header["epoch"] == 3


def test_oversized_reply_is_refused():
    with pytest.raises(MessageTooLarge):
        protocol.decode_reply([protocol.pack({"v": 1, "id": 1, "ok": True}), FakeFrame(protocol.MAX_REPLY_BYTES)])


# ------------------------------------------------------------------ anything at all


plain = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(1 << 63), (1 << 64) - 1)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
    | st.binary(max_size=20),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5),
    max_leaves=30,
)


@st.composite
def headers(draw: st.DrawFn) -> dict[str, Any]:
    op = draw(st.sampled_from(ALL_OPS))
    fields = dict(VALID[op][0])
    for name in draw(st.lists(st.sampled_from(sorted(fields) or ["x"]), max_size=3)):
        fields[name] = draw(plain)
    header = {"v": 1, "op": op, "id": draw(st.integers(0, 1 << 40)), "epoch": draw(st.integers(0, 9)), **fields}
    for name in draw(st.lists(st.sampled_from(["v", "op", "id", "epoch"]), max_size=2)):
        header[name] = draw(plain)
    return header


@settings(max_examples=300, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(header=headers(), payloads=st.lists(st.binary(max_size=64), max_size=3))
def test_any_header_decodes_or_raises_a_coded_error(header, payloads):
    frames = [protocol.pack(header), *payloads]
    op = header.get("op")
    for operations in (OPERATIONS, CONTROLLER_OPERATIONS):
        try:
            request = protocol.decode_request(frames, operations)
        except HCStoreError as exc:
            assert exc.code.startswith("E_") and str(exc)
            reply = protocol.decode_reply(protocol.error_frames(protocol.peek_request_id(frames), 0, exc))
            assert reply.header["code"] == exc.code
        else:
            assert request.op == op
            protocol.pack(request.fields)  # whatever passed the checks can be sent on


@settings(max_examples=300, deadline=None, derandomize=True)
@given(raw=st.binary(max_size=300))
def test_any_bytes_decode_or_raise_a_coded_error(raw):
    for operations in (OPERATIONS, CONTROLLER_OPERATIONS):
        try:
            protocol.decode_request([raw], operations)
        except HCStoreError as exc:
            assert exc.code.startswith("E_")
