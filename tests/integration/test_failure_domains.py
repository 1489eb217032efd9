"""Failure domains on a live cluster: with zone and rack labels on the agents, no zone or rack holds more
than ``m`` fragments of any object, so losing a whole zone leaves every object readable.

The labels are uneven on purpose (one zone has half the nodes), so that a placement blind to them would
put more than ``m`` fragments in that zone for most keys; the test checks that it would.
"""

from __future__ import annotations

from collections import Counter

from integration_support import CHUNK, seeded_bytes
from placement import rank

BUCKET = "domains"
K, M = 4, 2
LABELS = [
    {"zone": "a", "rack": "a1"},
    {"zone": "a", "rack": "a1"},
    {"zone": "a", "rack": "a2"},
    {"zone": "a", "rack": "a2"},
    {"zone": "b", "rack": "b1"},
    {"zone": "b", "rack": "b1"},
    {"zone": "c", "rack": "c1"},
    {"zone": "c", "rack": "c2"},
]


def domains_of(labels: dict[str, str]) -> list[tuple[str, ...]]:
    """The zone and the rack (named within its zone) of a node."""
    return [("zone", labels["zone"]), ("rack", labels["zone"], labels["rack"])]


def test_no_domain_holds_more_than_m_fragments_and_a_zone_can_be_lost(make_cluster):
    cluster = make_cluster(agents=len(LABELS), ec=f"{K}+{M}", labels=LABELS)
    labels = {agent.node_id: agent.labels for agent in cluster.agents()}
    objects = {f"obj/{i:02d}": seeded_bytes(f"domains{i}", 100_000 + 7919 * i) for i in range(16)}
    with cluster.client(chunk_size=CHUNK, request_timeout=5.0) as client:
        assert {n.id: dict(n.labels) for n in client.cluster_map.nodes} == labels
        blind = 0
        for key, data in objects.items():
            assert not client.put(BUCKET, key, data).degraded
            top = [n.id for n in rank(f"{BUCKET}/{key}", client.cluster_map.nodes)][: K + M]
            blind += max(Counter(labels[n]["zone"] for n in top).values()) > M
        assert blind > len(objects) // 2  # the ranking alone would overload zone a for most keys

        for key in objects:
            held = [node for node in client.resolve(BUCKET, key).found_at if node]
            assert len(held) == K + M and len(set(held)) == K + M, key
            per_domain = Counter(domain for node in held for domain in domains_of(labels[node]))
            assert max(per_domain.values()) <= M, (key, per_domain)

    for node, node_labels in labels.items():  # zone b goes dark
        if node_labels["zone"] == "b":
            cluster.kill(node)
    with cluster.client(chunk_size=CHUNK, request_timeout=5.0) as client:
        for key, data in objects.items():
            assert client.get(BUCKET, key) == data, key
