"""The wire protocol: framing, validation, error codes, and a golden header vector."""

from __future__ import annotations

import msgpack
import pytest

from hcstore.errors import (
    HCStoreError,
    InvalidRequest,
    MessageTooLarge,
    ObjectNotFound,
    ProtocolError,
    ProtocolVersionError,
    StoreFull,
    UnknownOperation,
    error_codes,
    error_for_code,
)
from hcstore.wire import protocol

# A request header as version 1 puts it on the wire; changing the encoding breaks old peers.
GOLDEN_READ_REQUEST = bytes.fromhex(
    "8aa17601a26f70a472656164a2696407a565706f636803a66275636b6574a3626b74a36b6579a3612f62a367656ed9"
    "21303030303030303030303030303030303030312d303030302d3030303030303030a369647802a5666972737400a5"
    "636f756e7404"
)


def read_fields(**overrides):
    fields = {
        "bucket": "bkt",
        "key": "a/b",
        "gen": "0000000000000000001-0000-00000000",
        "idx": 2,
        "first": 0,
        "count": 4,
    }
    fields.update(overrides)
    return fields


def test_golden_request_header():
    frames = protocol.request_frames("read", 7, 3, read_fields())
    assert frames[0] == GOLDEN_READ_REQUEST
    request = protocol.decode_request([GOLDEN_READ_REQUEST])
    assert (request.op, request.id, request.epoch, request.fields) == ("read", 7, 3, read_fields())


def test_round_trip_with_payloads():
    frames = protocol.request_frames("write", 1, 0, {"upload": "u1", "stripe": 0}, [b"x" * 10])
    request = protocol.decode_request(frames)
    assert request.payloads == [b"x" * 10]
    reply = protocol.decode_reply(protocol.reply_frames(1, 5, {"a": 1}, [b"yy"]))
    assert reply.ok and reply.header["a"] == 1 and reply.header["epoch"] == 5 and reply.payloads == [b"yy"]


@pytest.mark.parametrize(
    "frames, error",
    [
        ([], ProtocolError),
        ([b"\xc1\xc1"], ProtocolError),  # not msgpack
        ([msgpack.packb([1, 2])], ProtocolError),  # not a map
        ([msgpack.packb({"v": 2, "op": "ping", "id": 1})], ProtocolVersionError),
        ([msgpack.packb({"v": 1, "op": "fly", "id": 1})], UnknownOperation),
        ([msgpack.packb({"v": 1, "op": "ping", "id": -1})], ProtocolError),
        ([msgpack.packb({"v": 1, "op": "ping", "id": "x"})], ProtocolError),
        ([msgpack.packb({"v": 1, "op": "read", "id": 1})], InvalidRequest),  # missing fields
        ([protocol.pack({"v": 1, "op": "read", "id": 1, **read_fields(idx="2")})], InvalidRequest),
        ([protocol.pack({"v": 1, "op": "read", "id": 1, **read_fields(count=2**40)})], MessageTooLarge),
        ([protocol.pack({"v": 1, "op": "read", "id": 1, **read_fields(first=-1)})], InvalidRequest),
        ([protocol.pack({"v": 1, "op": "read", "id": 1, **read_fields(idx=True)})], InvalidRequest),
        ([b"\x00" * (protocol.MAX_HEADER_BYTES + 1)], MessageTooLarge),
    ],
)
def test_malformed_requests_raise_coded_errors(frames, error):
    with pytest.raises(error) as info:
        protocol.decode_request(frames)
    assert info.value.code.startswith("E_")


def test_error_reply_carries_code_not_class():
    frames = protocol.error_frames(9, 1, StoreFull("mountpath full"))
    reply = protocol.decode_reply(frames)
    assert not reply.ok and reply.header["code"] == "E_STORE_FULL"
    with pytest.raises(StoreFull, match="mountpath full"):
        reply.unwrap()


def test_every_error_code_is_unique_and_maps_back():
    codes = error_codes()
    assert len(codes) == len(set(codes.values()))
    for code, cls in codes.items():
        assert type(error_for_code(code, "d")) is cls
    assert isinstance(error_for_code("E_NOT_FOUND"), FileNotFoundError)
    assert isinstance(error_for_code("E_STORE_FULL"), OSError)
    assert type(error_for_code("E_FROM_THE_FUTURE")) is HCStoreError


def test_peek_request_id_survives_garbage():
    assert protocol.peek_request_id([b"garbage"]) == 0
    assert protocol.peek_request_id([msgpack.packb({"id": 42, "v": 9})]) == 42
    assert isinstance(ObjectNotFound("x"), FileNotFoundError)
