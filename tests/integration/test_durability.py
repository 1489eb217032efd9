"""Durability settings on a live cluster: test clusters run the product's default policy, and ``always``
(an fsync of every chunk as well) stores, serves and keeps objects across a restart of the whole cluster.

What a power cut does to each policy is proved in ``test_power_loss.py``; this is the everyday path.
"""

from __future__ import annotations

from hcstore.config import AgentConfig
from integration_support import CHUNK, seeded_bytes

BUCKET = "durable"
STRIPE = 4 * CHUNK
SIZES = {"replicated": 1000, "one-stripe": 100_000, "streamed": 5 * STRIPE + 3}


def durabilities(cluster) -> set[str]:
    """The durability policy in each agent's config file."""
    return {cluster.agent_config(agent.node_id).durability for agent in cluster.agents()}


def test_test_clusters_run_the_default_durability(make_cluster):
    cluster = make_cluster(agents=3, ec="2+1")
    assert AgentConfig.durability == "commit"
    assert durabilities(cluster) == {"commit"}


def test_durability_always_round_trip_and_restart(make_cluster):
    cluster = make_cluster(durability="always")
    assert durabilities(cluster) == {"always"}
    objects = {f"obj/{name}": seeded_bytes(name, size) for name, size in SIZES.items()}
    with cluster.client(chunk_size=CHUNK, request_timeout=5.0) as client:
        results = {key: client.put(BUCKET, key, data) for key, data in objects.items()}
        assert not any(result.degraded for result in results.values())
        for key, data in objects.items():
            assert client.get(BUCKET, key) == data, key

    cluster.stop()
    assert not any(cluster.running().values())
    cluster.start()
    assert durabilities(cluster) == {"always"}

    with cluster.client(chunk_size=CHUNK, request_timeout=5.0) as client:
        for key, data in objects.items():
            assert client.get(BUCKET, key) == data, key
            info = client.stat(BUCKET, key)
            assert info.generation == results[key].generation and not info.degraded, key
        newer = seeded_bytes("newer", 3 * STRIPE + 1)
        result = client.put(BUCKET, "obj/streamed", newer)
        assert not result.degraded and result.generation > results["obj/streamed"].generation
        assert client.get(BUCKET, "obj/streamed") == newer
