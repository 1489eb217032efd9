"""Bit rot on disk: corrupt chunks are detected by digest, reported, and read around; never returned."""

from __future__ import annotations

import os

import pytest

from ec import DATA_OFFSET, FOOTER_SIZE
from hcstore import NotEnoughFragments
from integration_support import CHUNK, flip_bytes, fragment_files_of, seeded_bytes

BUCKET = "rot"
STRIPE = 4 * CHUNK


@pytest.fixture
def fresh(shared_client, shared_cluster, request):
    """A coded object of 6 stripes plus a tail, and its committed fragment files."""
    key = f"obj/{request.node.name}"
    data = seeded_bytes(key, 6 * STRIPE + 1234)
    result = shared_client.put(BUCKET, key, data)
    assert result.codec != "replica"
    files = fragment_files_of(shared_cluster, BUCKET, key, result.generation)
    assert sorted(files) == list(range(6))
    version = shared_client.resolve(BUCKET, key)
    assert version.stripes >= 6
    _layout["chunk"] = version.chunk_size  # the writer picks the chunk size; never assume it
    _layout["stripes"] = version.stripes
    shared_client.corruptions.clear()
    return key, data, result, files


_layout: dict[str, int] = {}


def _chunk_offset(stripe: int, offset_in_chunk: int = 0) -> int:
    """File offset of byte ``offset_in_chunk`` (negative: from the chunk's end) of chunk ``stripe``."""
    chunk = _layout["chunk"]
    return DATA_OFFSET + stripe * chunk + (offset_in_chunk % chunk)


def test_flipped_data_bytes_are_detected_and_read_around(shared_client, fresh):
    key, data, result, files = fresh
    node, path = files[0]  # data fragment 0 is read first
    flip_bytes(path, _chunk_offset(0, 100), 3)
    flip_bytes(path, _chunk_offset(4, -1))
    assert shared_client.get(BUCKET, key) == data
    reports = shared_client.corruptions
    assert reports, "the corrupt chunk was not reported"
    assert {(r.fragment, r.node, r.generation) for r in reports} == {(0, node, result.generation)}
    assert {r.stripe for r in reports} <= {0, 4} and 0 in {r.stripe for r in reports}


def test_corruption_in_every_data_fragment_of_different_stripes(shared_client, fresh):
    key, data, _result, files = fresh
    for index in range(4):  # stripe i of data fragment i
        flip_bytes(files[index][1], _chunk_offset(index, 7), 16)
    assert shared_client.get(BUCKET, key) == data
    assert {r.fragment for r in shared_client.corruptions} == {0, 1, 2, 3}


def test_m_corrupt_fragments_of_one_stripe_still_read(shared_client, fresh):
    key, data, _result, files = fresh
    flip_bytes(files[1][1], _chunk_offset(2))
    flip_bytes(files[3][1], _chunk_offset(2))
    assert shared_client.get(BUCKET, key) == data
    stripe_bytes = 4 * _layout["chunk"]
    assert (
        shared_client.get(BUCKET, key, offset=2 * stripe_bytes + 5, length=stripe_bytes)
        == data[2 * stripe_bytes + 5 : 3 * stripe_bytes + 5]
    )
    assert {(r.fragment, r.stripe) for r in shared_client.corruptions} >= {(1, 2), (3, 2)}


def test_m_plus_one_corrupt_fragments_fail_instead_of_lying(shared_client, fresh):
    key, data, _result, files = fresh
    for index in (0, 2, 5):
        flip_bytes(files[index][1], _chunk_offset(3, 50))
    with pytest.raises(NotEnoughFragments):
        shared_client.get(BUCKET, key)
    # Stripes that are intact still read.
    stripe_bytes = 4 * _layout["chunk"]
    assert shared_client.get(BUCKET, key, offset=0, length=3 * stripe_bytes) == data[: 3 * stripe_bytes]


def test_corrupt_trailer_is_read_around(shared_client, fresh):
    key, data, _result, files = fresh
    _node, path = files[0]
    size = path.stat().st_size
    trailer_start = DATA_OFFSET + _layout["stripes"] * _layout["chunk"]
    flip_bytes(path, trailer_start + (size - FOOTER_SIZE - trailer_start) // 2, 4)
    assert shared_client.get(BUCKET, key) == data
    assert shared_client.stat(BUCKET, key).size == len(data)


def test_corrupt_footer_is_read_around(shared_client, fresh):
    key, data, _result, files = fresh
    path = files[2][1]
    flip_bytes(path, path.stat().st_size - 20, 8)
    assert shared_client.get(BUCKET, key) == data


def test_truncated_fragment_is_read_around(shared_client, fresh):
    key, data, _result, files = fresh
    os.truncate(files[0][1], _chunk_offset(2, 10))
    assert shared_client.get(BUCKET, key) == data


def test_corrupt_replica_is_read_around(shared_client, shared_cluster):
    data = seeded_bytes("replica", 5000)
    result = shared_client.put(BUCKET, "replica/obj", data)
    assert result.codec == "replica"
    files = fragment_files_of(shared_cluster, BUCKET, "replica/obj", result.generation)
    assert len(files) == 3
    shared_client.corruptions.clear()
    for index in (0, 1):
        flip_bytes(files[index][1], DATA_OFFSET + 10)
    assert shared_client.get(BUCKET, "replica/obj") == data
    assert {r.fragment for r in shared_client.corruptions} >= {0}
