"""Values to objects and back: bytes untouched, numpy arrays raw with dtype and shape, the rest pickled."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from ray_integration.values import byte_view, decode, empty_for, encode


def round_trip(value):
    buffer, meta = encode(value)
    raw = bytes(buffer)
    array = empty_for(meta, len(raw))
    byte_view(array)[:] = np.frombuffer(raw, dtype=np.uint8)
    return decode(meta, array)


@given(
    hnp.arrays(
        dtype=st.sampled_from([np.float32, np.float64, np.int8, np.uint16, np.complex64, np.bool_]),
        shape=hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=6),
    )
)
def test_arrays_round_trip_with_dtype_and_shape(array):
    back = round_trip(array)
    assert back.dtype == array.dtype and back.shape == array.shape
    assert np.array_equal(back, array, equal_nan=array.dtype.kind in "fc")


def test_non_contiguous_arrays_are_stored_contiguous():
    array = np.arange(100, dtype=np.int32).reshape(10, 10)[:, ::3]
    assert np.array_equal(round_trip(array), array)


def test_bytes_are_stored_as_they_are():
    buffer, meta = encode(b"abc")
    assert bytes(buffer) == b"abc" and meta == {}
    assert round_trip(bytearray(b"xyz")) == b"xyz"


def test_other_values_are_pickled():
    assert round_trip({"a": [1, 2.5, None]}) == {"a": [1, 2.5, None]}
    assert round_trip(np.array([object()], dtype=object)).dtype == object


def test_metadata_that_disagrees_with_the_size_is_an_error():
    _, meta = encode(np.zeros(4, dtype=np.float64))
    with pytest.raises(ValueError, match="holds 31"):
        empty_for(meta, 31)
