"""Map changes move about (k+m)/N of placements, and plan_moves moves only what must move."""

from __future__ import annotations

import pytest

from placement import ClusterMap, Node, place, plan_moves

N, OBJECTS, K, M = 50, 20_000, 4, 2


def labelled_map(n: int) -> ClusterMap:
    return ClusterMap(
        1,
        tuple(Node(f"n{i:03d}", labels={"zone": f"z{i % 3}", "rack": f"r{i % 10}"}) for i in range(n)),
    )


@pytest.fixture(scope="module")
def before() -> tuple[ClusterMap, list[tuple[str, ...]]]:
    cmap = labelled_map(N)
    return cmap, [place(f"b/{i}", cmap, K, M).nodes for i in range(OBJECTS)]


def check_moves(old_sets: list[tuple[str, ...]], new_map: ClusterMap, changed_node: str, joined: bool) -> int:
    changed_objects = 0
    for i, old in enumerate(old_sets):
        targets = plan_moves(old, f"b/{i}", new_map, K, M)
        new_set = set(place(f"b/{i}", new_map, K, M).nodes) if i % 20 == 0 else set(targets)
        assert set(targets) == new_set and len(new_set) == K + M
        moved = [f for f in range(K + M) if targets[f] != old[f]]
        if moved:
            changed_objects += 1
            # Domain caps can cascade, but the joining/leaving node is always involved,
            # and everything that did not move stayed on its own node.
            if joined:
                assert changed_node in targets
            else:
                assert changed_node in old
        for f in range(K + M):
            if old[f] in new_set:
                assert targets[f] == old[f]
    return changed_objects


def test_adding_a_node_moves_about_one_nth(before) -> None:  # type: ignore[no-untyped-def]
    cmap, old_sets = before
    new_map = cmap.with_node(Node("n999", labels={"zone": "z1", "rack": "r7"}))
    changed = check_moves(old_sets, new_map, "n999", joined=True)
    expected = OBJECTS * (K + M) / (N + 1)
    assert expected * 0.85 < changed < expected * 1.15


def test_removing_a_node_moves_about_one_nth(before) -> None:  # type: ignore[no-untyped-def]
    cmap, old_sets = before
    new_map = cmap.without_node("n017")
    changed = check_moves(old_sets, new_map, "n017", joined=False)
    expected = OBJECTS * (K + M) / N
    assert expected * 0.85 < changed < expected * 1.15


def test_state_change_moves_only_that_nodes_fragments(before) -> None:  # type: ignore[no-untyped-def]
    cmap, old_sets = before
    new_map = cmap.with_state("n023", "out")
    for i, old in enumerate(old_sets[:2000]):
        targets = plan_moves(old, f"b/{i}", new_map, K, M)
        assert "n023" not in targets
        if "n023" not in old:
            # Unaffected objects: at most a domain-cap cascade, never a shuffle.
            assert sum(t != o for t, o in zip(targets, old, strict=True)) <= 1


def test_missing_fragments_go_to_newcomers() -> None:
    cmap = labelled_map(12)
    p = place("b/x", cmap, K, M)
    old = ("", *p.nodes[1:4], "gone", "")
    targets = plan_moves(old, "b/x", cmap, K, M)
    assert targets[1:4] == p.nodes[1:4]
    assert {targets[0], targets[4], targets[5]} == {p.nodes[0], p.nodes[4], p.nodes[5]}
    assert targets == (p.nodes[0], *p.nodes[1:4], p.nodes[4], p.nodes[5])


def test_kept_fragments_keep_their_index_even_when_rank_changes() -> None:
    cmap = labelled_map(12)
    p = place("b/y", cmap, K, M)
    swapped = (p.nodes[5], *p.nodes[1:5], p.nodes[0])
    assert plan_moves(swapped, "b/y", cmap, K, M) == swapped


def test_duplicate_holder_and_too_few_nodes() -> None:
    small = labelled_map(4)
    p = place("b/z", small, K, M)
    old = (p.nodes[0], p.nodes[0], "", "", "", "")
    targets = plan_moves(old, "b/z", small, K, M)
    assert targets[0] == p.nodes[0] and targets.count("") == 2
    assert sorted(t for t in targets if t) == sorted(p.nodes)
    with pytest.raises(ValueError, match="fragment holders"):
        plan_moves(("a",), "b/z", small, K, M)
