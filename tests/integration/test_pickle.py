"""Clients, configs and cluster maps cross process boundaries through pickle, without live sockets."""

from __future__ import annotations

import multiprocessing
import pickle

from hcstore import Client, ClientConfig
from integration_support import CHUNK, seeded_bytes
from placement import ClusterMap

BUCKET = "pickled"


def child_put_get(blob: bytes, key: str, data: bytes) -> tuple[int, str, bytes]:
    """Run in a spawned process: unpickle a client, read, then write."""
    client = pickle.loads(blob)
    got = client.get(BUCKET, "from-parent")
    result = client.put(BUCKET, key, data)
    client.close()
    return result.size, result.generation, got


def test_client_config_round_trips():
    config = ClientConfig(ec="2+1", chunk_size=CHUNK, request_timeout=1.5, local_node="n3", codec="zfec")
    clone = pickle.loads(pickle.dumps(config))
    assert clone == config and clone is not config


def test_cluster_map_round_trips(shared_cluster):
    cluster_map = shared_cluster.cluster_map()
    clone = pickle.loads(pickle.dumps(cluster_map))
    assert isinstance(clone, ClusterMap)
    assert clone == cluster_map
    assert [(n.id, n.endpoint, n.state) for n in clone.nodes] == [
        (n.id, n.endpoint, n.state) for n in cluster_map.nodes
    ]


def test_used_client_round_trips_in_process(shared_client):
    data = seeded_bytes("in-process", 5 * 4 * CHUNK + 3)
    shared_client.put(BUCKET, "in-process", data)  # the client now holds live sockets
    clone = pickle.loads(pickle.dumps(shared_client))
    try:
        assert clone.config == shared_client.config
        assert clone.get(BUCKET, "in-process") == data
    finally:
        clone.close()


def test_client_built_from_a_cluster_map_round_trips(shared_cluster):
    key = str(shared_cluster.path / "keys" / "admin.key_secret")  # a fixed map names no cluster to find keys in
    with Client(shared_cluster.cluster_map(), chunk_size=CHUNK, key=key) as client:
        data = seeded_bytes("from-map", 3 * 4 * CHUNK)
        client.put(BUCKET, "from-map", data)
        clone = pickle.loads(pickle.dumps(client))
    try:
        assert clone.cluster_map == shared_cluster.cluster_map()
        assert clone.get(BUCKET, "from-map") == data
    finally:
        clone.close()


def test_unpickled_client_works_in_a_spawned_process(shared_client):
    parent_data = seeded_bytes("from-parent", 4 * 4 * CHUNK + 1)
    shared_client.put(BUCKET, "from-parent", parent_data)
    blob = pickle.dumps(shared_client)
    child_data = [seeded_bytes(f"child-{i}", 3 * 4 * CHUNK + i) for i in range(2)]
    context = multiprocessing.get_context("spawn")
    with context.Pool(2) as pool:
        results = pool.starmap(
            child_put_get, [(blob, f"from-child-{i}", d) for i, d in enumerate(child_data)], chunksize=1
        )
    for i, (size, generation, got) in enumerate(results):
        assert got == parent_data
        assert size == len(child_data[i])
        assert shared_client.get(BUCKET, f"from-child-{i}") == child_data[i]
        assert shared_client.stat(BUCKET, f"from-child-{i}").generation == generation
