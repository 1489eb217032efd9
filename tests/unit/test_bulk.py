"""Bulk frames: a cluster map larger than a header travels compressed in a frame of its own, is decoded within
limits, and a controller of more than 4,096 nodes serves it to whoever takes it and refuses, clearly, whoever
does not."""

from __future__ import annotations

import zlib
from typing import Any

import msgpack
import pytest

from hcstore.config import ControllerConfig
from hcstore.control.controller import Controller
from hcstore.errors import MessageTooLarge, ProtocolError
from hcstore.wire import bulk, protocol
from placement import ClusterMap, Node


def fleet_map(nodes: int, epoch: int = 7) -> ClusterMap:
    return ClusterMap(
        epoch,
        tuple(
            Node(
                f"node-{i:05d}", f"tcp://10.{i // 65536}.{i // 256 % 256}.{i % 256}:7700", labels={"rack": f"r{i % 97}"}
            )
            for i in range(nodes)
        ),
    )


def heartbeat(node: str, **extra: Any) -> dict[str, Any]:
    return {"node": node, "endpoint": "tcp://127.0.0.1:7700", "labels": {}, "weight": 1.0, **extra}


def reply_of(frames: list[Any]) -> protocol.Reply:
    return protocol.decode_reply(frames)


def test_the_largest_map_travels_as_one_compressed_frame_both_ways():
    largest = fleet_map(protocol.MAX_MAP_NODES)
    packed, large = protocol.encode_map(largest.to_dict())
    assert large and len(packed.data) > protocol.MAX_HEADER_BYTES  # no header could carry it
    fields, frames = protocol.with_bulk({"map": packed, "ec": "4+2"}, framed=True)
    assert fields == {"ec": "4+2", "bulk": ["map"]} and len(frames) == 1
    assert len(frames[0]) < len(packed.data) / 3  # compressed
    reply = reply_of(protocol.reply_frames(5, 7, fields, frames))
    assert ClusterMap.from_dict(reply.header["map"]) == largest and reply.payloads == [] and "bulk" not in reply.header
    # an agent's heartbeat carrying the same map: decoded into the field, then checked like one in the header
    request = protocol.decode_request(
        protocol.request_frames(
            "heartbeat", 1, 7, *protocol.with_bulk(heartbeat("node-00001", map=packed), framed=True)
        ),
        protocol.CONTROLLER_OPERATIONS,
    )
    assert ClusterMap.from_dict(request.fields["map"]) == largest and request.payloads == []


def test_a_map_a_header_holds_stays_in_the_header_unless_the_receiver_takes_frames():
    small = fleet_map(100)
    packed, large = protocol.encode_map(small.to_dict())
    assert not large
    assert protocol.with_bulk({"map": packed}, framed=False) == ({"map": packed}, [])
    assert not protocol.encode_map(fleet_map(protocol.MAX_HEADER_MAP_NODES).to_dict())[1]
    assert protocol.encode_map(fleet_map(protocol.MAX_HEADER_MAP_NODES + 1).to_dict())[1]  # more than a header's array


def test_a_header_too_large_to_send_is_refused_with_what_to_do():
    packed = protocol.Packed.of(fleet_map(protocol.MAX_MAP_NODES).to_dict())
    with pytest.raises(MessageTooLarge, match="bulk frames.*framed"):
        protocol.reply_frames(1, 1, {"map": packed})


def frames_with(frame: bytes, names: Any = ("map",)) -> list[Any]:
    header = protocol.pack({"v": 1, "id": 3, "ok": True, "epoch": 1, "bulk": list(names)})
    return [header, frame]


@pytest.mark.parametrize(
    ("frame", "names", "error", "needle"),
    [
        (zlib.compress(bytes(64 << 20)), ("map",), MessageTooLarge, "inflates past"),  # 64 MiB of zeros: 64 KB sent
        (b"not zlib at all", ("map",), ProtocolError, "not zlib"),
        (zlib.compress(msgpack.packb({"nodes": []}))[:-4], ("map",), ProtocolError, "truncated"),
        (zlib.compress(msgpack.packb({"a": 1}) + b"\x01"), ("map",), ProtocolError, "not valid msgpack"),
        (zlib.compress(msgpack.packb([[]] * 16384 * 2)), ("map",), MessageTooLarge, "max_array_len"),
        (zlib.compress(msgpack.packb([[[]] * 16000] * 17)), ("map",), MessageTooLarge, "maps and arrays"),
        (zlib.compress(msgpack.packb({})), ("payload",), ProtocolError, "bulk must name"),
        (zlib.compress(msgpack.packb({})), ("map", "map"), ProtocolError, "bulk must name"),
        (zlib.compress(msgpack.packb({})), ("map", "stats"), ProtocolError, "bulk must name"),  # two names, one frame
        (zlib.compress(msgpack.packb({})), "map", ProtocolError, "bulk must name"),
    ],
)
def test_a_hostile_bulk_frame_is_refused_by_name(frame, names, error, needle):
    with pytest.raises(error, match=needle):
        reply_of(frames_with(frame, names))


def test_an_oversized_frame_is_refused_before_it_is_inflated():
    with pytest.raises(MessageTooLarge, match="frame of"):
        bulk.decompress(bytes(bulk.MAX_BULK_FRAME_BYTES + 1), "map", max_items=1, max_containers=1)


def test_a_field_in_the_header_and_in_a_frame_is_refused():
    header = protocol.pack({"v": 1, "id": 3, "ok": True, "epoch": 1, "map": {}, "bulk": ["map"]})
    with pytest.raises(ProtocolError, match="both in the header"):
        reply_of([header, zlib.compress(msgpack.packb({}))])


def test_an_agent_operation_takes_no_bulk_frames():
    fields, frames = protocol.with_bulk({"bucket": "b", "key": "k", "stats": {}}, framed=True)
    with pytest.raises(ProtocolError, match="payload frames"):
        protocol.decode_request(protocol.request_frames("locate", 1, 0, fields, frames))


def test_a_bulk_map_is_checked_like_a_map_in_the_header():
    bad = {"epoch": 1, "nodes": [{"id": 7}]}
    fields, frames = protocol.with_bulk(heartbeat("n1", map=bad), framed=True)
    with pytest.raises(Exception, match=r"map\.nodes\[0\]\.id"):
        protocol.decode_request(
            protocol.request_frames("heartbeat", 1, 0, fields, frames), protocol.CONTROLLER_OPERATIONS
        )


def test_a_controller_of_the_most_nodes_serves_its_map_in_a_frame_and_refuses_one_more():
    nodes = protocol.MAX_MAP_NODES
    controller = Controller(ControllerConfig(insecure=True, metrics_port=-1), clock=lambda: 0.0)

    def ask(op: str, fields: dict[str, Any], epoch: int = 0) -> protocol.Reply:
        return reply_of(controller.handle([b"peer", *protocol.request_frames(op, 1, epoch, fields)])[1:])

    try:
        for i in range(nodes):
            assert ask("heartbeat", heartbeat(f"node-{i:05d}", framed=True)).ok
        refused = ask("heartbeat", heartbeat("one-too-many", framed=True))
        assert not refused.ok and f"at most {protocol.MAX_MAP_NODES} nodes" in str(refused.error())
        controller.table.tick(0.0)
        served = ask("get_map", {"framed": True}).unwrap()
        assert len(ClusterMap.from_dict(served.header["map"])) == nodes
        behind = ask("heartbeat", heartbeat("node-00000", framed=True)).unwrap()  # a node without a map
        assert len(ClusterMap.from_dict(behind.header["map"]).nodes) == nodes
        old = ask("get_map", {})  # a client from before bulk frames: the map is over 1 MiB
        assert not old.ok and isinstance(old.error(), MessageTooLarge) and "upgrade" in str(old.error())
        status = ask("status", {"framed": True}).unwrap()
        assert len(status.header["ages"]) == nodes == len(status.header["map"]["nodes"])
    finally:
        controller.socket.close(linger=0)
        controller.context.term()
