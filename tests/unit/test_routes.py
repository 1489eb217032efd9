"""Routes: every operation runs inline or in a lane, and the lanes keep the order that matters."""

from __future__ import annotations

from hcstore.node import routes
from hcstore.wire.protocol import OPERATIONS, Request


def request(op: str, **fields) -> Request:
    return Request(op, 1, 0, fields, [])


def test_every_operation_has_exactly_one_route():
    assert routes.INLINE | set(routes.LANES) == set(OPERATIONS)
    assert not routes.INLINE & set(routes.LANES)


def test_an_upload_keeps_one_lane_and_uploads_get_their_own():
    lane = routes.LANES["write"](request("write", upload="u1", stripe=0))
    assert routes.LANES["prepare"](request("prepare", upload="u1", header={})) == lane
    assert routes.LANES["abort"](request("abort", upload="u1")) == lane
    assert routes.LANES["write"](request("write", upload="u2", stripe=0)) != lane


def test_changes_to_one_object_share_its_lane():
    frag = {"bucket": "b", "key": "k", "gen": "g", "idx": 0}
    lane = routes.LANES["commit"](request("commit", **frag))
    for op in ("drop", "quarantine", "store"):
        assert routes.LANES[op](request(op, **frag)) == lane
    assert routes.LANES["retire"](request("retire", bucket="b", key="k", gen="g")) == lane
    assert routes.LANES["tombstone"](request("tombstone", header={"bucket": "b", "key": "k"})) == lane
    assert routes.LANES["commit"](request("commit", **{**frag, "key": "other"})) != lane


def test_a_tombstone_lane_is_hashable_whatever_its_unchecked_header_holds():
    hash(routes.LANES["tombstone"](request("tombstone", header={"bucket": [1], "key": {"x": 1}})))
    hash(routes.LANES["tombstone"](request("tombstone", header={})))


def test_open_needs_no_order():
    assert routes.LANES["open"](request("open", bucket="b", key="k", gen="g", idx=0, chunk_size=1)) is None


def test_only_repair_reads_are_background_work():
    from hcstore.wire.protocol import READ_PATHS

    assert routes.BACKGROUND_READS == {"repair"} and routes.BACKGROUND_READS <= set(READ_PATHS)
