"""Stripe math: chunk sizes, stripe spans and ranges, splitting and joining."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ec import CHUNK_ALIGN, DEFAULT_CHUNK_SIZE, StripeLayout, chunk_size_for, join_data, split_stripe

FAST = settings(max_examples=200, deadline=None, derandomize=True)


@pytest.mark.parametrize(
    ("size", "k", "expected"),
    [
        (None, 4, DEFAULT_CHUNK_SIZE),
        (0, 4, CHUNK_ALIGN),
        (1, 4, CHUNK_ALIGN),
        (256, 4, 64),
        (257, 4, 128),
        (10 * DEFAULT_CHUNK_SIZE, 4, 873_856),  # 3 nearly full stripes, not 3 of 1 MiB
        (8 * DEFAULT_CHUNK_SIZE, 4, DEFAULT_CHUNK_SIZE),
        (4 * DEFAULT_CHUNK_SIZE - 1, 4, DEFAULT_CHUNK_SIZE),
    ],
)
def test_chunk_size_for(size: int | None, k: int, expected: int) -> None:
    assert chunk_size_for(size, k) == expected


@FAST
@given(size=st.integers(0, 1 << 34), k=st.integers(1, 128), align_units=st.integers(1, 1 << 14))
def test_chunk_size_for_properties(size: int, k: int, align_units: int) -> None:
    max_chunk = align_units * CHUNK_ALIGN
    chunk = chunk_size_for(size, k, max_chunk)
    assert chunk % CHUNK_ALIGN == 0
    assert CHUNK_ALIGN <= chunk <= max_chunk
    # As few stripes as max_chunk allows...
    fewest = max(1, -(-size // (k * max_chunk)))
    stripes = max(1, -(-size // (k * chunk)))
    assert stripes == fewest
    # ...and the smallest aligned chunk for that many: padding under one alignment unit per chunk.
    assert chunk == CHUNK_ALIGN or k * stripes * (chunk - CHUNK_ALIGN) < size


@pytest.mark.parametrize(
    ("args", "name"), [((-1, 4), "size"), ((10, 0), "k"), ((10, 4, 100), "max_chunk"), ((10, 4, 0), "max_chunk")]
)
def test_chunk_size_for_rejects(args: tuple, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        chunk_size_for(*args)


def test_layout_basics() -> None:
    layout = StripeLayout(size=1000, k=4, chunk_size=64)
    assert (layout.stripe_bytes, layout.stripes, layout.fragment_bytes) == (256, 4, 256)
    assert layout.stripe_span(0) == (0, 256)
    assert layout.stripe_span(3) == (768, 232)
    assert StripeLayout(0, 4, 64).stripes == 0
    assert StripeLayout(256, 4, 64).stripes == 1


@pytest.mark.parametrize("stripe", [-1, 4, True])
def test_stripe_span_rejects(stripe: int) -> None:
    with pytest.raises(ValueError, match="stripe must be in"):
        StripeLayout(1000, 4, 64).stripe_span(stripe)


@pytest.mark.parametrize(
    ("kwargs", "name"), [({"size": -1}, "size"), ({"k": 0}, "k"), ({"chunk_size": 0}, "chunk_size")]
)
def test_layout_rejects(kwargs: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        StripeLayout(**{"size": 10, "k": 2, "chunk_size": 64, **kwargs})


@FAST
@given(size=st.integers(0, 5000), k=st.integers(1, 6), chunk_size=st.integers(1, 300))
def test_spans_tile_the_object(size: int, k: int, chunk_size: int) -> None:
    layout = StripeLayout(size, k, chunk_size)
    position = 0
    for stripe in range(layout.stripes):
        offset, length = layout.stripe_span(stripe)
        assert offset == position and 0 < length <= layout.stripe_bytes
        position += length
    assert position == size
    assert layout.fragment_bytes == layout.stripes * chunk_size


@FAST
@given(data=st.data(), size=st.integers(0, 5000), k=st.integers(1, 6), chunk_size=st.integers(1, 300))
def test_stripes_for_range_matches_brute_force(data: st.DataObject, size: int, k: int, chunk_size: int) -> None:
    layout = StripeLayout(size, k, chunk_size)
    offset = data.draw(st.integers(0, size))
    length = data.draw(st.integers(0, size - offset))
    expected = [
        s
        for s in range(layout.stripes)
        if length and (span := layout.stripe_span(s))[0] < offset + length and offset < span[0] + span[1]
    ]
    assert list(layout.stripes_for_range(offset, length)) == expected


@pytest.mark.parametrize(
    ("offset", "length", "match"), [(-1, 1, "offset"), (0, -1, "length"), (990, 11, "past the object end")]
)
def test_stripes_for_range_rejects(offset: int, length: int, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        StripeLayout(1000, 4, 64).stripes_for_range(offset, length)


def test_split_full_stripe_is_zero_copy() -> None:
    data = bytearray(range(256))
    chunks = split_stripe(data, 4, 64)
    assert [bytes(c) for c in chunks] == [bytes(data[i * 64 : (i + 1) * 64]) for i in range(4)]
    data[0] = 99
    assert chunks[0][0] == 99  # a view of data, not a copy


def test_split_short_stripe_pads_with_zeros_into_reused_buffer() -> None:
    out = bytearray(b"\xff" * 256)  # dirty from a previous stripe
    chunks = split_stripe(b"abc", 4, 64, out=out)
    assert bytes(chunks[0][:3]) == b"abc"
    assert bytes(chunks[0][3:]) == bytes(61)
    assert all(bytes(c) == bytes(64) for c in chunks[1:])
    assert chunks[2].obj is out


def test_split_short_stripe_without_buffer() -> None:
    chunks = split_stripe(memoryview(b"x" * 100), 2, 64)
    assert bytes(chunks[0]) == b"x" * 64 and bytes(chunks[1]) == b"x" * 36 + bytes(28)


@pytest.mark.parametrize(
    ("data", "out", "match"), [(b"x" * 257, None, "more than k"), (b"x", bytearray(100), "out buffer is 100")]
)
def test_split_rejects(data: bytes, out: bytearray | None, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        split_stripe(data, 4, 64, out=out)


@FAST
@given(raw=st.binary(max_size=600), k=st.integers(1, 5), chunk_size=st.integers(1, 130))
def test_split_then_join_round_trips(raw: bytes, k: int, chunk_size: int) -> None:
    raw = raw[: k * chunk_size]
    chunks = split_stripe(raw, k, chunk_size)
    assert len(chunks) == k and all(c.nbytes == chunk_size for c in chunks)
    assert join_data(chunks, len(raw)) == raw


def test_join_rejects_length_beyond_chunks() -> None:
    with pytest.raises(ValueError, match="fewer than length 5"):
        join_data([b"ab", b"cd"], 5)
