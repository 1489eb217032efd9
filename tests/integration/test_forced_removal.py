"""A node removed with ``node remove --force``, whether its agent died or still runs: its fragments are
rebuilt on the nodes left, and repair then settles; no scan rebuilds them again.
"""

from __future__ import annotations

import pytest

from hcstore.client.versions import resolve
from hcstore.control.membership import Intervals
from integration_support import CHUNK, controller_request, seeded_bytes, wait_until

BUCKET = "forced"
# Failures are noticed within a second, but no node goes out by itself: only the removal moves data.
NO_OUT = Intervals(heartbeat=0.2, suspect_after=0.6, down_after=1.0, out_after=120.0)


def held_without(client, keys, node: str) -> bool:
    """Every fragment of every object has a copy on a node other than ``node`` (every node asked)."""
    for key in keys:
        version = resolve(client, BUCKET, key, exhaustive=True)
        holders: dict[int, set[str]] = {index: set() for index in range(version.k + version.m)}
        for index, holder in [*enumerate(version.found_at), *version.copies]:
            if holder:
                holders[index].add(holder)
        if any(not found - {node} for found in holders.values()):
            return False
    return True


def repair_counters(cluster) -> dict[str, tuple[int, int]]:
    """Each agent's finished scans and bytes rebuilt, as its last heartbeat reported them."""
    stats = controller_request(cluster, "status")["stats"]
    return {
        node: ((s.get("repair") or {}).get("scans", 0), (s.get("repair") or {}).get("bytes_repaired", 0))
        for node, s in stats.items()
    }


def scans_pass(cluster, nodes, count: int) -> dict[str, tuple[int, int]]:
    """Wait until each of ``nodes`` has finished ``count`` more scans; returns the counters then."""
    start = repair_counters(cluster)

    def done() -> dict[str, tuple[int, int]] | None:
        now = repair_counters(cluster)
        return now if all(now[n][0] >= start[n][0] + count for n in nodes) else None

    return wait_until(done, timeout=60, interval=0.3, what=f"{count} more scans on every serving agent")


@pytest.mark.parametrize("agent", ["dead", "running"])
def test_a_forced_removal_is_repaired_once_and_repair_settles(make_cluster, agent):
    cluster = make_cluster(agents=5, ec="2+1", intervals=NO_OUT, scan_interval=1.0)
    objects = {f"obj/{i:02d}": seeded_bytes(f"forced{i}", 100_000 + 7919 * i) for i in range(10)}
    with cluster.client(chunk_size=CHUNK, request_timeout=5.0) as client:
        for key, data in objects.items():
            assert not client.put(BUCKET, key, data).degraded
        victim = "n5"
        assert any(victim in client.resolve(BUCKET, key).found_at for key in objects)
        if agent == "dead":
            cluster.kill(victim)
        controller_request(cluster, "node_admin", node=victim, action="remove", force=True)
        client.refresh()
        wait_until(
            lambda: held_without(client, objects, victim),
            timeout=60,
            interval=0.5,
            what="every fragment rebuilt beside the removed node",
        )
        serving = [node.node_id for node in cluster.agents() if node.node_id != victim]
        settled = scans_pass(cluster, serving, 1)  # reports of scans that were under way are in
        after = scans_pass(cluster, serving, 2)
        assert {n: after[n][1] for n in serving} == {n: settled[n][1] for n in serving}, (settled, after)
        for key, data in objects.items():
            assert client.get(BUCKET, key) == data, key
