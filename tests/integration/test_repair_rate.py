"""Repair traffic is held to each agent's ``repair_rate``: rebuilding a lost node's fragments takes at
least the bytes each agent rebuilt divided by the rate.

Only that lower bound is checked, so a slow machine cannot make the test fail. The limiter itself is
tested on a fake clock in ``tests/unit/test_rate_limit.py``.
"""

from __future__ import annotations

import time

from hcstore.control.membership import Intervals
from integration_support import CHUNK, controller_request, fully_protected, seeded_bytes, wait_until

BUCKET = "rate"
RATE = 256 << 10  # bytes per second, per agent
# Down within a second, but never out by itself: repair starts only when the test removes the node.
NO_OUT = Intervals(heartbeat=0.2, suspect_after=0.6, down_after=1.0, out_after=120.0)


def repaired_by_agent(cluster) -> dict[str, int]:
    """Bytes each agent has rebuilt or moved in its finished scans, as its last heartbeat reported."""
    stats = controller_request(cluster, "status")["stats"]
    return {node: int((s.get("repair") or {}).get("bytes_repaired", 0)) for node, s in stats.items()}


def test_rebuilding_a_lost_node_takes_at_least_bytes_over_rate(make_cluster):
    cluster = make_cluster(agents=4, ec="2+1", intervals=NO_OUT, scan_interval=1.0, repair_rate=RATE)
    objects = {f"obj/{i}": seeded_bytes(f"rate{i}", 1 << 20) for i in range(6)}
    with cluster.client(chunk_size=CHUNK, request_timeout=5.0) as client:
        for key, data in objects.items():
            assert not client.put(BUCKET, key, data).degraded
        versions = [client.resolve(BUCKET, key) for key in objects]
        victim = max(
            sorted(client.cluster_map.nodes, key=lambda n: n.id),
            key=lambda n: sum(v.found_at.count(n.id) for v in versions),
        ).id
        lost = sum(v.found_at.count(victim) * v.stripes * v.chunk_size for v in versions)
        assert lost >= 4 * RATE / 3  # at least one agent has a second's worth or more to rebuild

        cluster.kill(victim)
        assert sum(repaired_by_agent(cluster).values()) == 0  # down but not out: nothing is rebuilt
        started = time.monotonic()
        controller_request(cluster, "node_admin", node=victim, action="remove", force=True)
        wait_until(
            lambda: fully_protected(client, BUCKET, objects, excluding={victim}),
            timeout=120,
            interval=0.5,
            what="every object rebuilt without the removed node",
        )
        wait_until(
            lambda: sum(repaired_by_agent(cluster).values()) >= lost,
            timeout=30,
            interval=0.2,
            what="the agents to report the rebuilt bytes",
        )
        repaired = repaired_by_agent(cluster)
        elapsed = time.monotonic() - started
        # Each agent's bytes went through its own limiter: the first chunk at once, the rest at RATE.
        busiest = max(repaired.values())
        assert busiest >= RATE
        assert elapsed >= (busiest - CHUNK) / RATE, (elapsed, repaired)
        for key, data in objects.items():
            assert client.get(BUCKET, key) == data
