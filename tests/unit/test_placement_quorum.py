"""placement.quorum: home sets, write quorums, read candidates, and what silent nodes leave unproven."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from placement import (
    NODE_STATES,
    ClusterMap,
    Node,
    home_map,
    home_set,
    listing_proof,
    place,
    prove,
    rank,
    read_candidates,
    schemes_of,
    smallest_quorum,
    write_quorum,
)
from placement.quorum import ranking

WEIGHTS = st.sampled_from([0.5, 1.0, 1.0, 2.0, 3.0])


@st.composite
def cluster_maps(
    draw: st.DrawFn, min_nodes: int = 1, max_nodes: int = 24, states: tuple[str, ...] = NODE_STATES
) -> ClusterMap:
    count = draw(st.integers(min_nodes, max_nodes))
    nodes = [
        Node(f"n{i}", f"tcp://127.0.0.1:{7000 + i}", draw(WEIGHTS), state=draw(st.sampled_from(states)))
        for i in range(count)
    ]
    return ClusterMap(draw(st.integers(0, 100)), tuple(nodes))


CODES = st.tuples(st.integers(1, 8), st.integers(0, 4))
KEYS = st.text(min_size=1, max_size=20).map(lambda s: f"b/{s}")


# ---------------------------------------------------------------------- the numbers


@pytest.mark.parametrize(
    "k, m, quorum", [(4, 2, 5), (1, 2, 3), (8, 3, 9), (2, 3, 4), (1, 1, 2), (3, 0, 3), (1, 0, 1), (10, 4, 11)]
)
def test_write_quorum(k: int, m: int, quorum: int) -> None:
    assert write_quorum(k, m) == quorum


@given(CODES)
def test_write_quorum_outnumbers_m_and_decodes(code: tuple[int, int]) -> None:
    k, m = code
    w = write_quorum(k, m)
    assert w > m and w >= k and w <= k + m
    assert write_quorum(1, m) == m + 1  # a replicated object: every copy


def test_four_plus_two_numbers() -> None:
    cmap = ClusterMap(1, tuple(Node(f"n{i}") for i in range(20)))
    assert schemes_of(4, 2) == ((4, 2), (1, 2))
    assert smallest_quorum(schemes_of(4, 2)) == 3
    assert len(home_set("b/k", cmap, 4, 2)) == 8
    assert len(home_set("b/k", cmap, 1, 2)) == 5
    assert len(read_candidates("b/k", cmap, [(4, 2)])) == 10
    assert len(read_candidates("b/k", cmap, [(1, 2)])) == 7
    assert len(read_candidates("b/k", cmap, schemes_of(4, 2))) == 10


def test_bad_arguments() -> None:
    cmap = ClusterMap(1, (Node("a"),))
    for k, m in ((0, 1), (1, -1), (True, 1)):
        with pytest.raises(ValueError):
            write_quorum(k, m)
        with pytest.raises(ValueError):
            home_set("b/k", cmap, k, m)
    with pytest.raises(ValueError, match="at least one scheme"):
        smallest_quorum([])
    with pytest.raises(ValueError, match="at least one scheme"):
        read_candidates("b/k", cmap, [])


# ---------------------------------------------------------------------- home sets and candidates


@given(cluster_maps(), KEYS, CODES)
def test_home_set_and_candidates_are_prefixes_of_the_ranking(cmap: ClusterMap, key: str, code: tuple[int, int]) -> None:
    k, m = code
    ranked = [n.id for n in rank(key, [n for n in cmap.nodes if n.state not in ("out", "decommissioned")])]
    assert [n.id for n in ranking(key, cmap)] == ranked
    assert home_set(key, cmap, k, m) == tuple(ranked[: k + 2 * m])
    assert read_candidates(key, cmap, [(k, m)]) == tuple(ranked[: k + 3 * m])
    assert set(home_set(key, cmap, k, m)) <= set(read_candidates(key, cmap, schemes_of(k, m)))


@settings(max_examples=200)
@given(cluster_maps(), KEYS, CODES)
def test_placement_on_the_home_map_stays_in_the_home_set(cmap: ClusterMap, key: str, code: tuple[int, int]) -> None:
    k, m = code
    home = home_map(key, cmap, k, m)
    assert home.epoch == cmap.epoch
    assert {n.id for n in home.nodes} == set(home_set(key, cmap, k, m))
    placed = place(key, home, k, m)
    assert set(placed.nodes) | set(placed.spares) <= set(home_set(key, cmap, k, m))
    writable_in_home = [n.id for n in home.writable()]
    assert set(placed.nodes) | set(placed.spares) == set(writable_in_home)


# ---------------------------------------------------------------------- the proof


@st.composite
def reads(
    draw: st.DrawFn,
) -> tuple[ClusterMap, str, tuple[tuple[int, int], ...], tuple[int, int], frozenset[str], frozenset[str]]:
    """A map, a key, the reader's schemes, the writer's scheme, a write set of >= W home-set nodes, and U."""
    cmap = draw(cluster_maps())
    key = draw(KEYS)
    configured = schemes_of(*draw(CODES))
    found = draw(st.one_of(st.none(), CODES))  # the version the reader found, if any
    schemes = configured if found is None else tuple(dict.fromkeys((*configured, *schemes_of(*found))))
    writer = draw(st.sampled_from(schemes))
    home = home_set(key, cmap, *writer)
    quorum = write_quorum(*writer)
    size = draw(st.integers(min(quorum, len(home)), len(home))) if home else 0
    written = frozenset(draw(st.permutations(home))[:size]) if home else frozenset()
    candidates = read_candidates(key, cmap, schemes)
    return cmap, key, schemes, writer, written, draw(silences(candidates, written, smallest_quorum(schemes)))


def silences(candidates: tuple[str, ...], written: frozenset[str], quorum: int) -> st.SearchStrategy[frozenset[str]]:
    """Any set of silent candidates, leaning to the adversarial: the written nodes, plus a few others."""
    if not candidates:
        return st.just(frozenset())
    anyone = st.sets(st.sampled_from(candidates))
    few = st.sets(st.sampled_from(candidates), max_size=max(quorum - 1, 0))
    aimed = few.map(lambda extra: frozenset(written.intersection(candidates)) | extra)
    return st.one_of(anyone.map(frozenset), aimed)


@settings(max_examples=500)
@given(reads())
def test_a_proof_means_every_committed_write_set_was_heard(case) -> None:  # type: ignore[no-untyped-def]
    cmap, key, schemes, writer, written, silent = case
    candidates = read_candidates(key, cmap, schemes)
    answered = set(candidates) - silent
    proof = prove(candidates, answered, schemes)
    assert proof.unreached == tuple(n for n in candidates if n in silent)
    assert proof.quorum == smallest_quorum(schemes)
    if proof.proven and len(written) >= write_quorum(*writer):
        assert written & answered, (written, silent)


@settings(max_examples=300)
@given(reads(), st.integers(0, 4), st.data())
def test_the_proof_survives_up_to_m_nodes_joining_above(
    case,
    joined: int,  # type: ignore[no-untyped-def]
    data: st.DataObject,
) -> None:
    cmap, key, schemes, writer, written, _ = case
    joined = min(joined, writer[1])
    # Heavy newcomers rank above (almost) every node of the map: the worst case for the margin.
    newcomers = tuple(Node(f"new{i}", f"tcp://127.0.0.1:{9000 + i}", weight=1e6) for i in range(joined))
    later = ClusterMap(cmap.epoch + 1, (*cmap.nodes, *newcomers))
    candidates = read_candidates(key, later, schemes)
    silent = data.draw(silences(candidates, written, smallest_quorum(schemes)))
    answered = set(candidates) - silent
    if prove(candidates, answered, schemes).proven and len(written) >= write_quorum(*writer):
        assert written & answered


@settings(max_examples=300)
@given(st.integers(1, 4), st.data())
def test_the_margin_covers_m_joins_above_a_replicated_write(m: int, data: st.DataObject) -> None:
    """The tightest case: a replicated write (``W = W_min = m + 1``), its reader knowing no bigger
    scheme, ``m`` nodes joining above it, and the reader's silent nodes aimed at the write set."""
    ranked_states = tuple(state for state in NODE_STATES if state not in ("out", "decommissioned"))
    cmap = data.draw(cluster_maps(min_nodes=1 + 3 * m, max_nodes=1 + 3 * m + 6, states=ranked_states))
    key = data.draw(KEYS)
    home = home_set(key, cmap, 1, m)
    written = frozenset(data.draw(st.permutations(home))[: data.draw(st.integers(m + 1, len(home)))])
    newcomers = tuple(Node(f"new{i}", f"tcp://127.0.0.1:{9000 + i}", weight=1e6) for i in range(m))
    later = ClusterMap(cmap.epoch + 1, (*cmap.nodes, *newcomers))
    candidates = read_candidates(key, later, [(1, m)])
    silent = data.draw(silences(candidates, written, m + 1))
    answered = set(candidates) - silent
    if prove(candidates, answered, [(1, m)]).proven:
        assert written & answered


@given(cluster_maps(), KEYS, CODES, st.data())
def test_at_most_m_silent_nodes_always_prove(
    cmap: ClusterMap, key: str, code: tuple[int, int], data: st.DataObject
) -> None:
    k, m = code
    schemes = schemes_of(k, m)
    candidates = read_candidates(key, cmap, schemes)
    silent = data.draw(st.sets(st.sampled_from(candidates), max_size=m)) if candidates else set()
    assert prove(candidates, set(candidates) - silent, schemes).proven
    everyone = [n.id for n in cmap.nodes]
    down = data.draw(st.sets(st.sampled_from(everyone), max_size=m))
    assert listing_proof(cmap, set(everyone) - down, schemes).proven


def test_m_plus_one_silent_candidates_are_not_proof() -> None:
    cmap = ClusterMap(1, tuple(Node(f"n{i}") for i in range(6)))
    candidates = read_candidates("b/k", cmap, schemes_of(4, 2))
    assert len(candidates) == 6  # the whole small cluster
    proof = prove(candidates, set(candidates[3:]), schemes_of(4, 2))
    assert not proof.proven and proof.unreached == candidates[:3] and proof.quorum == 3
    assert prove(candidates, set(candidates[2:]), schemes_of(4, 2)).proven


@settings(max_examples=300)
@given(reads(), st.data())
def test_a_complete_listing_hears_every_committed_write_set(case, data: st.DataObject) -> None:  # type: ignore[no-untyped-def]
    cmap, _key, schemes, writer, written, _ = case
    counted = [n.id for n in cmap.nodes if n.state not in ("out", "decommissioned")]
    silent = data.draw(st.sets(st.sampled_from([n.id for n in cmap.nodes])))
    answered = {n.id for n in cmap.nodes} - silent
    proof = listing_proof(cmap, answered, schemes)
    assert proof.candidates == tuple(counted)
    if proof.proven and len(written) >= write_quorum(*writer):
        assert written & answered
