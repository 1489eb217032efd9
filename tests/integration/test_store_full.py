"""A full store refuses writes with StoreFull before writing, keeps every earlier object, and keeps serving."""

from __future__ import annotations

import pytest

from hcstore import NotEnoughNodes, ObjectNotFound, StoreFull
from integration_support import CHUNK, seeded_bytes

BUCKET = "full"
CAPACITY = 4 << 20  # per mountpath, one mountpath per agent; high watermark 90%


@pytest.fixture
def small_cluster(make_cluster):
    cluster = make_cluster(capacity_bytes=CAPACITY, mountpaths_per_agent=1)
    with cluster.client(chunk_size=CHUNK, request_timeout=5.0) as client:
        earlier = {
            f"early/{i}": seeded_bytes(f"early-{i}", size)
            for i, size in enumerate([1000, 300_000, 1 << 20, 1 << 20, 12345])
        }
        for key, data in earlier.items():
            client.put(BUCKET, key, data)
        yield cluster, client, earlier


def _assert_intact(client, earlier):
    for key, data in earlier.items():
        assert client.get(BUCKET, key) == data, key


def test_put_that_cannot_fit_raises_store_full(small_cluster):
    cluster, client, earlier = small_cluster
    with pytest.raises(StoreFull) as caught:
        client.put(BUCKET, "too-big", seeded_bytes("big", 16 << 20))
    assert isinstance(caught.value, OSError)
    assert "watermark" in str(caught.value)
    with pytest.raises(ObjectNotFound):
        client.get(BUCKET, "too-big")
    _assert_intact(client, earlier)
    # The refused put released what it reserved: the cluster keeps serving writes that fit.
    data = seeded_bytes("fits", 200_000)
    client.put(BUCKET, "after", data)
    assert client.get(BUCKET, "after") == data
    for node, stats in client.node_stats().items():
        assert isinstance(stats, dict), f"{node}: {stats}"
        assert stats["uploads"] == 0
        for mp in stats["mountpaths"]:
            stored = mp.get("stored", mp.get("used"))  # the key was renamed while this suite was written
            assert stored is not None and stored <= int(CAPACITY * 0.9), mp


def test_streamed_put_that_outgrows_the_store_raises_store_full(small_cluster):
    """A put of unknown size passes the check at open and fills the disks while it streams."""
    cluster, client, earlier = small_cluster
    data = seeded_bytes("stream", 16 << 20)
    pieces = (data[i : i + CHUNK] for i in range(0, len(data), CHUNK))
    with pytest.raises(StoreFull) as caught:
        client.put(BUCKET, "stream", pieces)
    assert "watermark" in str(caught.value)
    with pytest.raises(ObjectNotFound):
        client.get(BUCKET, "stream")
    _assert_intact(client, earlier)
    data = seeded_bytes("fits", 200_000)
    client.put(BUCKET, "after", data)
    assert client.get(BUCKET, "after") == data


def test_streamed_put_that_outgrows_the_store_changes_nothing(small_cluster):
    """Whatever error class a streamed overflow raises, it leaves the old version and frees its space."""
    cluster, client, earlier = small_cluster
    data = seeded_bytes("stream", 16 << 20)
    pieces = (data[i : i + CHUNK] for i in range(0, len(data), CHUNK))
    with pytest.raises((StoreFull, NotEnoughNodes)):
        client.put(BUCKET, "early/1", pieces)
    _assert_intact(client, earlier)
    stats = client.node_stats()
    assert all(isinstance(s, dict) and s["uploads"] == 0 for s in stats.values()), stats
    data = seeded_bytes("fits", 200_000)
    client.put(BUCKET, "after", data)
    assert client.get(BUCKET, "after") == data


def test_deletes_free_space_for_new_writes(small_cluster):
    cluster, client, earlier = small_cluster
    big = seeded_bytes("big2", 13 << 20)  # 3.25 MiB per node: fits only once the others are gone
    with pytest.raises(StoreFull):
        client.put(BUCKET, "big2", big)
    for key in [k for k in earlier if k != "early/0"]:
        client.delete(BUCKET, key)
    client.put(BUCKET, "big2", big)
    assert client.get(BUCKET, "big2") == big
    assert client.get(BUCKET, "early/0") == earlier["early/0"]
