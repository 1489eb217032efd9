"""A large read is cut into contiguous parts, one per read stream, each long enough to be worth a thread."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from hcstore.client.reader import stream_parts


def test_parts_are_contiguous_and_nearly_equal():
    assert stream_parts(10, 50, 4, 8) == [(10, 20), (20, 30), (30, 40), (40, 50)]
    assert stream_parts(0, 30, 4, 8) == [(0, 10), (10, 20), (20, 30)]  # 3 parts of at least 8


def test_a_short_range_is_one_part():
    assert stream_parts(5, 20, 4, 8) == [(5, 20)]
    assert stream_parts(0, 1, 4, 8) == [(0, 1)]


@given(st.integers(0, 1000), st.integers(1, 1000), st.integers(1, 16), st.integers(1, 32))
def test_parts_cover_the_range_once(first, count, streams, min_stripes):
    parts = stream_parts(first, first + count, streams, min_stripes)
    assert parts[0][0] == first and parts[-1][1] == first + count
    assert all(a[1] == b[0] for a, b in zip(parts, parts[1:], strict=False))
    assert len(parts) <= streams
    assert len(parts) == 1 or min(hi - lo for lo, hi in parts) >= min_stripes
