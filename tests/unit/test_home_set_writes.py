"""Puts and repairs keep every fragment inside the key's home set, and a put short of writable nodes says so."""

from __future__ import annotations

import pytest

from hcstore.client.upload import place_in_home_set
from hcstore.client.versions import ObjectVersion
from hcstore.errors import NotEnoughNodes
from hcstore.node.repair_plan import plan_object
from placement import ClusterMap, Node, home_set, place, write_quorum
from placement.quorum import ranking


def big_map(count: int = 16, states: dict[str, str] | None = None) -> ClusterMap:
    states = states or {}
    return ClusterMap(
        3,
        tuple(
            Node(f"n{i:02d}", f"tcp://127.0.0.1:{7000 + i}", state=states.get(f"n{i:02d}", "alive"))
            for i in range(count)
        ),
    )


@pytest.mark.parametrize("k, m", [(4, 2), (1, 2), (8, 3), (2, 0)])
def test_a_put_places_and_spares_inside_the_home_set(k: int, m: int) -> None:
    cmap = big_map()
    for i in range(200):
        key = f"b/obj-{i}"
        placement, _quorum = place_in_home_set(key, cmap, k, m, operation=f"put {key}")
        home = set(home_set(key, cmap, k, m))
        assert len(home) == k + 2 * m
        assert set(placement.nodes) | set(placement.spares) == home  # every node of it, none beyond
        assert len(placement.nodes) == k + m


def test_down_nodes_keep_their_place_in_the_home_set_and_out_nodes_leave_it() -> None:
    cmap = big_map()
    key = "b/obj"
    top = [node.id for node in ranking(key, cmap)]
    down = big_map(states={top[0]: "down", top[2]: "suspect"})
    placement, _quorum = place_in_home_set(key, down, 4, 2, operation=f"put {key}")
    assert set(home_set(key, down, 4, 2)) == set(top[:8])  # down and suspect nodes still count
    assert placement.nodes == tuple(n for n in top[:8] if n not in (top[0], top[2]))
    assert placement.spares == ()
    out = big_map(states={top[0]: "down", top[2]: "out"})  # repair rebuilds an out node's fragments elsewhere
    assert set(home_set(key, out, 4, 2)) == set(top[:9]) - {top[2]}


def test_a_put_fails_when_the_home_set_has_fewer_writable_nodes_than_the_quorum() -> None:
    cmap = big_map()
    key = "b/obj"
    top = [node.id for node in ranking(key, cmap)]
    # 4 of the 8 home-set nodes are gone: 4 writable, the quorum of 4+2 is 5, though 12 other nodes are alive.
    broken = big_map(states={top[1]: "down", top[3]: "suspect", top[4]: "draining", top[6]: "down"})
    with pytest.raises(
        NotEnoughNodes,
        match=r"only 4 of the 8 nodes of its home set are writable and the write "
        r"quorum of 4\+2 is 5",
    ) as failure:
        place_in_home_set(key, broken, 4, 2, operation=f"put {key}")
    assert all(top[i] in str(failure.value) for i in (1, 3, 4, 6))
    # A small object's home set is the first 5: top[0] and top[2] are writable, and it needs all 3 copies.
    assert write_quorum(1, 2) == 3
    with pytest.raises(NotEnoughNodes, match=r"only 2 of the 5 nodes .* quorum of 1\+2 is 3"):
        place_in_home_set(key, broken, 1, 2, operation=f"put {key}")


def _version(cmap: ClusterMap, key: str, found: tuple[str, ...]) -> ObjectVersion:
    return ObjectVersion(
        "b",
        key,
        "0000000000000000001-0000-00000000",
        "data",
        1000,
        "zfec",
        4,
        2,
        256,
        1,
        found,
        6,
        6,
        {},
        found,
        frozenset(n.id for n in cmap.nodes),
        (),
    )


def test_repair_targets_stay_inside_the_home_set() -> None:
    cmap = big_map()
    for i in range(100):
        key = f"obj-{i}"
        holders = place(f"b/{key}", cmap, 4, 2).nodes
        lost = holders[:2]
        out = big_map(states={node: "out" for node in lost})
        plan = plan_object(_version(out, key, tuple("" if n in lost else n for n in holders)), out)
        assert sorted(plan.rebuild) == [0, 1]
        assert set(plan.rebuild.values()) <= set(home_set(f"b/{key}", out, 4, 2))


def test_misplaced_fragments_from_outside_the_home_set_move_into_it() -> None:
    cmap = big_map()
    key = "obj"
    top = [node.id for node in ranking(f"b/{key}", cmap)]
    outside = top[-6:]  # written far down the ranking (an older, bigger map)
    plan = plan_object(_version(cmap, key, tuple(outside)), cmap)
    assert sorted(plan.rebuild) == list(range(6))
    assert set(plan.rebuild.values()) <= set(top[:8])
    assert plan.drop == dict(enumerate(outside))


@pytest.mark.parametrize(
    "k, m, away, quorum",
    [(2, 1, 1, 2), (4, 2, 1, 4), (4, 2, 2, 4), (8, 3, 1, 8), (8, 3, 3, 8), (1, 2, 1, 3)],
)
def test_nodes_in_maintenance_excuse_fragments_down_to_decodable_and_provable(
    k: int, m: int, away: int, quorum: int
) -> None:
    """A planned outage lowers the write quorum by one per node, never below max(k, m+1)."""
    cmap = big_map()
    key = "b/obj"
    top = [node.id for node in ranking(key, cmap)]
    planned = big_map(states={top[i]: "maintenance" for i in range(away)})
    placement, got = place_in_home_set(key, planned, k, m, operation=f"put {key}")
    assert got == quorum == max(write_quorum(k, m) - away, max(k, m + 1) if m else k)
    assert not {top[i] for i in range(away)} & set(placement.nodes + placement.spares)  # nothing goes to them
    down = big_map(states={top[i]: "down" for i in range(away)})  # an unplanned outage excuses nothing
    assert place_in_home_set(key, down, k, m, operation=f"put {key}")[1] == write_quorum(k, m)


def test_a_three_node_cluster_writes_2_plus_1_with_one_node_in_maintenance_and_not_with_one_down() -> None:
    key = "b/obj"
    three = big_map(3)
    top = [node.id for node in ranking(key, three)]
    placement, quorum = place_in_home_set(key, big_map(3, {top[1]: "maintenance"}), 2, 1, operation=f"put {key}")
    assert quorum == 2 and set(placement.nodes) == {top[0], top[2]}
    with pytest.raises(NotEnoughNodes, match="quorum of 2\\+1 is 3"):
        place_in_home_set(key, big_map(3, {top[1]: "down"}), 2, 1, operation=f"put {key}")
