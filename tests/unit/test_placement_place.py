"""place(): eligibility, failure-domain spread, fill-in, determinism."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from placement import ClusterMap, Node, place, rank
from placement.domains import failure_domains


def grid(zones: int, racks: int, per_rack: int = 1) -> ClusterMap:
    nodes = [
        Node(f"z{z}r{r}n{n}", labels={"zone": f"z{z}", "rack": f"r{r}", "host": f"z{z}r{r}n{n}"})
        for z in range(zones)
        for r in range(racks)
        for n in range(per_rack)
    ]
    return ClusterMap(1, tuple(nodes))


def max_per_domain(cmap: ClusterMap, node_ids: tuple[str, ...]) -> int:
    counts = Counter(d for i in node_ids for d in failure_domains(cmap.node(i)))
    return max(counts.values(), default=0)


def test_three_zones_four_racks_cap_m() -> None:
    cmap = grid(3, 4)
    for i in range(500):
        p = place(f"b/{i}", cmap, 4, 2)
        assert p.complete and len(set(p.nodes)) == 6
        assert max_per_domain(cmap, p.nodes) <= 2
        assert len(p.spares) == 12 - 6 and not set(p.spares) & set(p.nodes)


def test_two_zones_fill_in_still_distinct() -> None:
    cmap = grid(2, 4)
    for i in range(300):
        p = place(f"b/{i}", cmap, 4, 2)
        assert p.complete and len(set(p.nodes)) == 6
        zones = Counter(cmap.node(n).labels["zone"] for n in p.nodes)
        assert sorted(zones.values()) == [3, 3]  # relaxed one step, evenly
        racks = Counter((cmap.node(n).labels["zone"], cmap.node(n).labels["rack"]) for n in p.nodes)
        assert max(racks.values()) == 1  # inner levels stay spread


def test_single_zone_spreads_over_racks() -> None:
    cmap = grid(1, 3, per_rack=4)
    for i in range(200):
        p = place(f"b/{i}", cmap, 4, 2)
        racks = Counter(cmap.node(n).labels["rack"] for n in p.nodes)
        assert sorted(racks.values()) == [2, 2, 2]


def test_m_zero_one_per_domain_where_possible() -> None:
    cmap = grid(3, 2)
    for i in range(100):
        p = place(f"b/{i}", cmap, 3, 0)
        assert len({cmap.node(n).labels["zone"] for n in p.nodes}) == 3


def test_fragment_order_follows_ranking() -> None:
    cmap = ClusterMap(1, tuple(Node(f"n{i}") for i in range(20)))  # no labels: no constraint
    for i in range(100):
        p = place(f"b/{i}", cmap, 4, 2)
        ranking = [n.id for n in rank(f"b/{i}", cmap.nodes)]
        assert p.nodes == tuple(ranking[:6]) and p.spares == tuple(ranking[6:])


def test_only_writable_and_not_excluded() -> None:
    cmap = grid(3, 4)
    down = {"z0r0n0", "z1r1n0", "z2r2n0"}
    for node_id in down:
        cmap = cmap.with_state(node_id, "down")
    cmap = cmap.with_state("z0r1n0", "draining")
    for i in range(200):
        p = place(f"b/{i}", cmap, 4, 2, exclude={"z1r0n0"})
        used = set(p.nodes) | set(p.spares)
        assert not used & (down | {"z0r1n0", "z1r0n0"})
        assert len(used) == 12 - 5


def test_too_few_nodes_is_incomplete() -> None:
    cmap = grid(1, 4)
    p = place("b/x", cmap, 4, 2)
    assert not p.complete and len(p.nodes) == 4 and p.spares == ()
    empty = place("b/x", ClusterMap(0, ()), 4, 2)
    assert empty.nodes == () and not empty.complete


@pytest.mark.parametrize(("k", "m"), [(0, 2), (-1, 1), (4, -1), (True, 1), (4, 1.5)])
def test_bad_code_rejected(k: int, m: int) -> None:
    with pytest.raises(ValueError):
        place("b/x", grid(3, 4), k, m)


node_specs = st.lists(
    st.tuples(st.integers(0, 3), st.integers(0, 3), st.sampled_from([0.5, 1.0, 2.0]), st.booleans()),
    min_size=1,
    max_size=24,
)


def build(specs: list[tuple[int, int, float, bool]]) -> ClusterMap:
    nodes = []
    for i, (zone, rack, weight, labelled) in enumerate(specs):
        labels = {"zone": f"z{zone}", "rack": f"r{rack}"} if labelled else {}
        nodes.append(Node(f"n{i}", weight=weight, labels=labels))
    return ClusterMap(1, tuple(nodes))


@settings(derandomize=True, deadline=None, max_examples=150)
@given(specs=node_specs, k=st.integers(1, 6), m=st.integers(0, 3), key=st.text(max_size=10), data=st.data())
def test_place_properties(specs: list, k: int, m: int, key: str, data: st.DataObject) -> None:
    cmap = build(specs)
    p = place(key, cmap, k, m)
    assert len(p.nodes) == min(k + m, len(cmap.nodes)) == len(set(p.nodes))
    assert set(p.nodes) | set(p.spares) == {n.id for n in cmap.nodes}
    shuffled = ClusterMap(1, tuple(data.draw(st.permutations(cmap.nodes))))
    assert place(key, shuffled, k, m) == p
    if p.complete and len(cmap.nodes) > k + m:
        assert p.spares == tuple(n.id for n in rank(key, cmap.nodes) if n.id not in p.nodes)
