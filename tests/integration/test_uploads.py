"""Puts and repairs store fragments through one upload path: spares stand in for a down placement node,
repair rebuilds a lost fragment on the version's own generation, and every trailer names the real holders.

Seven agents for EC 4+2, so every object has a spare node. Failure detection is slowed down so that a
killed agent still looks alive in the map: the put must find out by itself and move on to the spare.
"""

from __future__ import annotations

import pytest

from ec import parse_fragment
from hcstore.client.versions import resolve
from hcstore.control.membership import Intervals
from hcstore.errors import NotEnoughNodes
from hcstore.node.rate_limit import RateLimiter
from hcstore.node.repair import repair_object
from hcstore.node.repair_plan import ObjectPlan, plan_object
from integration_support import CHUNK, fragment_files_of, seeded_bytes
from placement import place

BUCKET = "uploads"
STRIPE = 4 * CHUNK
UNHURRIED = Intervals(heartbeat=0.5, suspect_after=60.0, down_after=90.0, out_after=600.0)


@pytest.fixture
def seven(make_cluster):
    cluster = make_cluster(agents=7, intervals=UNHURRIED, scan_interval=600.0)
    with cluster.client(chunk_size=CHUNK, request_timeout=5.0) as client:
        yield cluster, client


def trailers(cluster, key: str, generation: str) -> dict[int, tuple[str, tuple[str, ...]]]:
    """Fragment index -> (node whose disk holds it, the placement its trailer names)."""
    found = {}
    for index, (node, path) in fragment_files_of(cluster, BUCKET, key, generation).items():
        header, _data = parse_fragment(path.read_bytes())
        assert header.index == index and header.generation == generation
        found[index] = (node, header.placement)
    return found


def key_placed_on(client, node: str, k: int, m: int, prefix: str) -> str:
    """A key whose placement includes ``node``."""
    return next(
        key
        for key in (f"{prefix}/{i}" for i in range(100))
        if node in place(f"{BUCKET}/{key}", client.cluster_map, k, m).nodes
    )


@pytest.mark.parametrize(
    "size, k, m",
    [
        (5 * STRIPE + 3, 4, 2),  # streamed stripe by stripe: open, write, prepare, commit
        (100_000, 4, 2),  # one stripe: one store message per fragment
        (1000, 1, 2),  # replicated: one store message per copy
    ],
    ids=["streamed", "one-stripe", "replicated"],
)
def test_a_put_whose_placement_node_is_down_lands_on_a_spare(seven, size, k, m):
    cluster, client = seven
    victim = "n3"
    key = key_placed_on(client, victim, k, m, f"spare-{size}")
    planned = place(f"{BUCKET}/{key}", client.cluster_map, k, m)
    cluster.kill(victim)
    assert client.cluster_map.node(victim).state == "alive"  # nobody told the client
    data = seeded_bytes(key, size)
    result = client.put(BUCKET, key, data)
    index = planned.nodes.index(victim)
    assert not result.degraded and victim not in result.fragments
    assert result.fragments[index] == planned.spares[0]
    assert result.fragments == tuple(n if n != victim else planned.spares[0] for n in planned.nodes)
    assert client.get(BUCKET, key) == data
    found = trailers(cluster, key, result.generation)
    assert sorted(found) == list(range(k + m))
    for i, (node, placement) in found.items():
        assert node == result.fragments[i] and placement == result.fragments, i


def test_repair_rebuilds_a_lost_fragment_and_drops_nothing_it_could_not_replace(seven):
    cluster, client = seven
    data = seeded_bytes("repair", 6 * STRIPE + 17)
    result = client.put(BUCKET, "repair/obj", data)
    version = resolve(client, BUCKET, "repair/obj", exhaustive=True)
    spare = next(n.id for n in client.cluster_map.nodes if n.id not in version.found_at)

    # A move to a node that is down fails with every failure named, and the old copy stays.
    cluster.kill(spare)
    with pytest.raises(NotEnoughNodes, match=f"repair of {BUCKET}/repair/obj: .*fragment 1 on {spare}"):
        repair_object(client, version, ObjectPlan(rebuild={1: spare}, drop={1: version.found_at[1]}), RateLimiter(0))
    assert resolve(client, BUCKET, "repair/obj", exhaustive=True).found_at == version.found_at

    # A lost fragment is rebuilt, in the same generation, on the node the plan names.
    holder = version.found_at[2]
    client.transport.request(
        client.endpoint(holder), "drop", {"bucket": BUCKET, "key": "repair/obj", "gen": version.generation, "idx": 2}
    )
    damaged = resolve(client, BUCKET, "repair/obj", exhaustive=True)
    assert damaged.found_at[2] == "" and damaged.degraded
    plan = plan_object(damaged, client.cluster_map)
    assert list(plan.rebuild) == [2]
    written = repair_object(client, damaged, plan, RateLimiter(0))
    assert written == damaged.stripes * damaged.chunk_size
    repaired = resolve(client, BUCKET, "repair/obj", exhaustive=True)
    assert repaired.generation == result.generation and not repaired.degraded
    assert repaired.found_at[2] == plan.rebuild[2]
    assert trailers(cluster, "repair/obj", result.generation)[2] == (plan.rebuild[2], repaired.found_at)
    assert client.get(BUCKET, "repair/obj") == data
