"""``Client.get_into`` reads an object into the caller's buffer: numpy arrays of any dtype and shape,
bytearrays, from an offset; the bytes past the object are left alone, and a buffer too small (or
read-only) is refused with a ValueError before anything is written to it. An object of many stripes
is read by several threads at once, each a contiguous part."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from hcstore.errors import InvalidRequest
from integration_support import CHUNK, seeded_bytes

BUCKET = "into"
STRIPE = 4 * CHUNK
CODED = "coded"  # several stripes, the last one partial
SMALL = "small"  # under replicate_below: stored as copies
LARGE = "large"  # enough stripes for read_streams parts of at least 2 x read_batch stripes each
SIZES = {CODED: 5 * STRIPE + 12, SMALL: 1000, LARGE: 40 * STRIPE + 12}


@pytest.fixture(scope="module")
def stored(shared_client) -> dict[str, bytes]:
    objects = {key: seeded_bytes(f"into-{key}", size) for key, size in SIZES.items()}
    for key, data in objects.items():
        shared_client.put(BUCKET, key, data)
    return objects


@pytest.mark.parametrize("key", [CODED, SMALL])
def test_into_a_numpy_array(shared_client, stored, key):
    data = stored[key]
    flat = np.empty(len(data) // 4, dtype=np.float32)
    assert shared_client.get_into(BUCKET, key, flat) == len(data)
    assert flat.tobytes() == data
    matrix = np.empty((2, len(data) // 2), dtype=np.uint8)  # C-contiguous, two dimensions
    assert shared_client.get_into(BUCKET, key, matrix) == len(data)
    assert matrix.tobytes() == data


@pytest.mark.parametrize("key", [CODED, SMALL])
def test_into_a_larger_bytearray_leaves_the_rest_alone(shared_client, stored, key):
    data = stored[key]
    buffer = bytearray(b"\xee" * (len(data) + 100))
    assert shared_client.get_into(BUCKET, key, buffer) == len(data)
    assert buffer[: len(data)] == data
    assert buffer[len(data) :] == b"\xee" * 100


@pytest.mark.parametrize("offset", [1, CHUNK - 1, STRIPE + 7, 5 * STRIPE, SIZES[CODED] - 1, SIZES[CODED]])
def test_from_an_offset(shared_client, stored, offset):
    data = stored[CODED]
    buffer = bytearray(len(data) - offset)
    assert shared_client.get_into(BUCKET, CODED, buffer, offset=offset) == len(data) - offset
    assert buffer == data[offset:]


def test_a_buffer_too_small_is_refused_untouched(shared_client, stored):
    data = stored[CODED]
    buffer = bytearray(b"\xee" * (len(data) - 1))
    with pytest.raises(ValueError, match=f"buffer of {len(data) - 1} bytes is smaller than the {len(data)} bytes"):
        shared_client.get_into(BUCKET, CODED, buffer)
    assert buffer == b"\xee" * (len(data) - 1)
    array = np.zeros(len(data) // 8, dtype=np.float32)  # half the bytes needed
    with pytest.raises(ValueError, match="smaller than"):
        shared_client.get_into(BUCKET, CODED, array)
    assert not array.any()
    short = bytearray(10)
    with pytest.raises(ValueError, match="buffer of 10 bytes"):  # what is left after the offset still counts
        shared_client.get_into(BUCKET, CODED, short, offset=len(data) - 11)


def test_an_offset_past_the_end_is_refused(shared_client, stored):
    with pytest.raises(InvalidRequest, match="past the end"):
        shared_client.get_into(BUCKET, CODED, bytearray(16), offset=SIZES[CODED] + 1)


def _read_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("hcstore-read")]


@pytest.mark.parametrize("offset", [0, STRIPE + 7, 33 * STRIPE - 1])
def test_a_large_object_is_read_by_several_streams(shared_cluster, stored, offset):
    data = stored[LARGE]
    with shared_cluster.client(chunk_size=CHUNK, read_streams=3) as client:
        buffer = bytearray(len(data) - offset)
        assert client.get_into(BUCKET, LARGE, buffer, offset=offset) == len(data) - offset
        assert buffer == data[offset:]
        assert len(_read_threads()) == (3 if offset < 30 * STRIPE else 0)  # the last 8 stripes: one part
    assert _read_threads() == []  # closing the client stops its read threads


def test_a_read_only_buffer_is_refused(shared_client, stored):
    with pytest.raises(ValueError, match="read-only"):
        shared_client.get_into(BUCKET, CODED, bytes(SIZES[CODED]))
