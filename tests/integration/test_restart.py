"""Agents stopped and started again keep every object; a lost index is rebuilt from the fragment files."""

from __future__ import annotations

import random

import pytest

from hcstore import ObjectNotFound
from integration_support import CHUNK, fragment_files_of, seeded_bytes

BUCKET = "restart"


@pytest.fixture
def written(make_cluster):
    cluster = make_cluster()
    rng = random.Random(31)
    objects = {
        f"obj/{i:02d}": seeded_bytes(f"r{i}", rng.choice([10, 5000, 70_000, 600_000, 1_300_000])) for i in range(12)
    }
    with cluster.client(chunk_size=CHUNK) as client:
        for key, data in objects.items():
            client.put(BUCKET, key, data)
        client.put(BUCKET, "gone", b"deleted before the restart")
        client.delete(BUCKET, "gone")
    return cluster, objects


def _check_all(client, objects):
    for key, data in objects.items():
        assert client.get(BUCKET, key) == data, key
    assert [i.key for i in client.list(BUCKET, "obj/")] == sorted(objects)
    with pytest.raises(ObjectNotFound):
        client.get(BUCKET, "gone")


def test_full_stop_and_start_keeps_everything(written):
    cluster, objects = written
    with cluster.client(chunk_size=CHUNK, request_timeout=5.0) as old_client:
        _check_all(old_client, objects)
        endpoints = {n.id: n.endpoint for n in cluster.cluster_map().nodes}
        cluster.stop()
        assert all(pid is None for pid in cluster.running().values())
        cluster.start()
        assert {n.id: n.endpoint for n in cluster.cluster_map().nodes} == endpoints  # ports are pinned
        old_client.refresh()
        _check_all(old_client, objects)  # a client that lived through the restart reconnects
    with cluster.client(chunk_size=CHUNK) as client:
        _check_all(client, objects)


def _node_answers(client, node: str, op: str, fields: dict):
    return client.transport.request(client.endpoint(node), op, fields).header


def test_index_rebuilt_from_fragment_files(written):
    cluster, objects = written
    node = "n3"
    files_before = sorted(p.name for p in cluster.fragment_files(node))
    assert files_before
    cluster.stop(node)
    removed = [p for mp in cluster.agent(node).mountpaths for p in mp.glob("index.sqlite*")]
    assert removed
    for path in removed:
        path.unlink()
    cluster.start(node)
    with cluster.client(chunk_size=CHUNK, request_timeout=5.0) as client:
        # The node itself lists what its files hold (not just the merge over other agents).
        entries = _node_answers(client, node, "list", {"bucket": BUCKET, "prefix": "obj/"})["entries"]
        on_node = {
            key for key in objects if any(n == node for n, _ in fragment_files_of(cluster, BUCKET, key).values())
        }
        assert {e[0] for e in entries} == on_node
        stats = _node_answers(client, node, "node_stats", {})
        assert stats["fragments"] >= len(files_before)
        # Reads that need n3's fragments: two other agents are gone.
        cluster.kill("n1")
        cluster.kill("n5")
        client.refresh()
        for key, data in objects.items():
            if len(data) >= 64 << 10:  # coded: 4 of 6 needed, n3 among the 4 left
                assert client.get(BUCKET, key) == data, key
        with pytest.raises(ObjectNotFound):
            client.get(BUCKET, "gone")  # tombstones are rebuilt too: no resurrection


def test_damaged_index_is_rebuilt(written):
    cluster, objects = written
    node = "n4"
    cluster.stop(node)
    for mp in cluster.agent(node).mountpaths:
        for path in mp.glob("index.sqlite*"):
            path.unlink()
        (mp / "index.sqlite").write_bytes(random.Random(3).randbytes(8192))  # not a database at all
    cluster.start(node, timeout=15)
    with cluster.client(chunk_size=CHUNK, request_timeout=5.0) as client:
        entries = _node_answers(client, node, "list", {"bucket": BUCKET, "prefix": "obj/"})["entries"]
        on_node = {
            key for key in objects if any(n == node for n, _ in fragment_files_of(cluster, BUCKET, key).values())
        }
        assert {e[0] for e in entries} == on_node
        _check_all(client, objects)
