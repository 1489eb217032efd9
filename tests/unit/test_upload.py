"""The pieces of the upload path that need no cluster: fragment headers, the stripe window, the quorum."""

from __future__ import annotations

import os

import pytest

from ec import DIGEST_SIZE, FragmentHeader, chunk_digest, header_from_dict, header_to_dict
from hcstore.client.headers import TOMBSTONE_CHUNK_SIZE, VersionLayout, fragment_header, tombstone_layout
from hcstore.client.upload import StripeWindow, write_quorum
from hcstore.config import AgentConfig
from hcstore.errors import InvalidRequest
from hcstore.node.store import LocalStore

CHUNK = 4096
GEN = "0000000000000000001-0000-0000abcd"
PLACEMENT = ("n1", "n2", "n3")


def layout(**changes) -> VersionLayout:
    fields = {
        "bucket": "bkt",
        "key": "k/1",
        "generation": GEN,
        "codec": "zfec",
        "k": 2,
        "m": 1,
        "chunk_size": CHUNK,
        "size": 3 * CHUNK,
        "stripes": 2,
        "meta": {"type": "text"},
    }
    return VersionLayout(**{**fields, **changes})


# ---------------------------------------------------------------------- headers


def test_data_header_has_every_field_but_the_digests():
    fields = fragment_header(layout(), 1, PLACEMENT)
    header = header_from_dict({**fields, "digests": bytes(DIGEST_SIZE * 2)})
    assert "digests" not in fields
    assert list(fields) == [name for name in header_to_dict(header) if name != "digests"]
    assert (header.bucket, header.key, header.generation, header.kind, header.codec) == (
        "bkt",
        "k/1",
        GEN,
        "data",
        "zfec",
    )
    assert (header.k, header.m, header.chunk_size, header.size, header.index, header.stripes) == (
        2,
        1,
        CHUNK,
        3 * CHUNK,
        1,
        2,
    )
    assert header.placement == PLACEMENT and dict(header.meta) == {"type": "text"} and header.created_ns > 0


def test_replicated_header():
    fields = fragment_header(layout(codec="replica", k=1, m=2, size=10, stripes=1, meta={}), 2, PLACEMENT)
    assert (fields["codec"], fields["k"], fields["m"], fields["index"], fields["meta"]) == ("replica", 1, 2, 2, {})


def test_tombstone_header_is_complete_with_empty_digests():
    fields = fragment_header(tombstone_layout("bkt", "k/1", GEN, 3), 0, PLACEMENT)
    header = header_from_dict(fields)
    assert fields["digests"] == b""
    assert (header.kind, header.codec, header.k, header.m, header.size, header.stripes) == (
        "tombstone",
        "replica",
        1,
        2,
        0,
        0,
    )
    assert header.chunk_size == TOMBSTONE_CHUNK_SIZE and header.placement == PLACEMENT
    assert dict(header.meta) == {}


@pytest.mark.parametrize(
    "changes, index, placement, field",
    [
        ({"stripes": 3}, 0, PLACEMENT, "stripes"),
        ({}, 3, PLACEMENT, "index"),
        ({}, 0, ("n1", "n2"), "placement"),
        ({"meta": {"a": 1}}, 0, PLACEMENT, "meta"),
    ],
)
def test_an_invalid_header_names_its_field(changes, index, placement, field):
    with pytest.raises(InvalidRequest, match=f"field '{field}'"):  # the writer's mistake, named by its object
        fragment_header(layout(**changes), index, placement)


def test_headers_are_what_an_agent_store_accepts(tmp_path):
    """A data header sealed by a real store gets the digests the store computed; a tombstone is taken whole."""
    store = LocalStore(AgentConfig(node_id="n1", mountpaths=(str(tmp_path / "mp"),), durability="none"))
    try:
        chunks = [os.urandom(CHUNK) for _ in range(2)]
        upload = store.open_upload("bkt", "k/1", GEN, 1, CHUNK, 2 * CHUNK)
        for stripe, chunk in enumerate(chunks):
            store.write_chunk(upload, stripe, chunk)
        store.prepare(upload, fragment_header(layout(), 1, PLACEMENT))
        store.commit("bkt", "k/1", GEN, 1)
        _path, header = store.header("bkt", "k/1", GEN, 1)
        assert header.digests == b"".join(chunk_digest(c) for c in chunks)
        newer = "0000000000000000002-0000-0000abcd"
        store.tombstone(fragment_header(tombstone_layout("bkt", "k/1", newer, 3), 0, PLACEMENT))
        assert [(e["gen"], e["kind"]) for e in store.locate("bkt", "k/1")] == [(newer, "tombstone")]
    finally:
        store.close()


def test_fragment_header_matches_a_hand_built_header():
    fields = fragment_header(layout(), 0, PLACEMENT)
    expected = header_to_dict(
        FragmentHeader(
            bucket="bkt",
            key="k/1",
            generation=GEN,
            kind="data",
            codec="zfec",
            k=2,
            m=1,
            chunk_size=CHUNK,
            size=3 * CHUNK,
            index=0,
            stripes=2,
            digests=bytes(64),
            placement=PLACEMENT,
            created_ns=fields["created_ns"],
            meta={"type": "text"},
        )
    )
    del expected["digests"]
    assert fields == expected


# ---------------------------------------------------------------------- window


def test_window_releases_the_oldest_stripes_once_all_their_replies_came():
    window = StripeWindow()
    for stripe, requests in enumerate([(1, 2), (3, 4), (5, 6)]):
        window.open(stripe, hold=f"buffer-{stripe}")
        for index, request_id in enumerate(requests):
            window.track(request_id, stripe, index)
    assert len(window) == 3 and sorted(window.requests) == [1, 2, 3, 4, 5, 6]
    assert window.settle(3) == 0 and window.settle(4) == 1  # stripe 1 is done, but stripe 0 is older
    assert window.release() == [] and len(window) == 3
    assert window.settle(2) == 1 and window.settle(1) == 0
    assert window.release() == ["buffer-0", "buffer-1"]
    assert len(window) == 1 and sorted(window.requests) == [5, 6]


def test_a_stripe_nobody_was_sent_is_released_at_once():
    window = StripeWindow()
    window.open(0, hold="b")
    assert window.release() == ["b"] and len(window) == 0


def test_window_clear_returns_the_outstanding_requests():
    window = StripeWindow()
    window.open(0)
    window.track(7, 0, 0)
    window.track(8, 0, 1)
    window.settle(7)
    assert window.clear() == [8]
    assert len(window) == 0 and window.requests == []


def test_window_refuses_stripes_out_of_order_and_unknown_ones():
    window = StripeWindow()
    window.open(1)
    with pytest.raises(ValueError, match="stripe 1 opened after stripe 1"):
        window.open(1)
    with pytest.raises(KeyError, match="stripe 0 is not open"):
        window.track(1, 0, 0)


# ---------------------------------------------------------------------- quorum


# Replicated objects (k=1) need every copy, and W > m whatever k: max(k, m) + 1, or k when m = 0.
@pytest.mark.parametrize("k, m, quorum", [(4, 2, 5), (1, 2, 3), (8, 3, 9), (2, 3, 4), (3, 0, 3), (1, 0, 1)])
def test_write_quorum(k, m, quorum):
    assert write_quorum(k, m) == quorum
