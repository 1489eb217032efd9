"""RankIndex.top is the prefix of rank(): the same nodes in the same order, for any ids, weights and count."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from placement import ClusterMap, Node, RankIndex, home_set, rank, read_candidates
from placement.hrw import PREFIX_MARGIN
from placement.quorum import ranking


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.text(min_size=1, max_size=12), min_size=1, max_size=120, unique=True),
    st.lists(st.sampled_from([0.5, 1.0, 1.0, 1.0, 2.0, 3.7]), min_size=120, max_size=120),
    st.text(max_size=20),
    st.integers(min_value=0, max_value=130),
)
def test_top_is_the_prefix_of_the_ranking(ids, weights, key, count):
    nodes = [Node(node_id, weight=weight) for node_id, weight in zip(ids, weights, strict=False)]
    assert RankIndex(nodes).top(key, count) == rank(key, nodes)[:count]


def test_top_of_a_large_fleet_matches_for_many_keys():
    rng = random.Random(7)
    nodes = [Node(f"node-{i:05d}", weight=rng.choice([1.0, 1.0, 2.0, 0.25])) for i in range(5000)]
    index = RankIndex(nodes)
    for key in (f"bucket/object-{i}" for i in range(60)):
        count = rng.randint(1, 40)
        assert count + PREFIX_MARGIN < len(nodes)  # the vectorised path
        assert index.top(key, count) == rank(key, nodes)[:count]


def test_the_quorum_sets_use_the_index_and_skip_nodes_out():
    states = ["alive", "suspect", "down", "out", "decommissioned", "draining", "maintenance"]
    cluster_map = ClusterMap(3, tuple(Node(f"n{i:04d}", state=states[i % len(states)]) for i in range(700)))
    for key in (f"b/k{i}" for i in range(30)):
        ranked = ranking(key, cluster_map)
        assert all(node.state not in ("out", "decommissioned") for node in ranked)
        assert home_set(key, cluster_map, 4, 2) == tuple(node.id for node in ranked[:8])
        assert read_candidates(key, cluster_map, [(4, 2)]) == tuple(node.id for node in ranked[:10])


def test_a_pickled_map_leaves_its_index_behind_and_builds_it_again():
    import pickle

    cluster_map = ClusterMap(1, tuple(Node(f"n{i:03d}") for i in range(300)))
    before = home_set("b/k", cluster_map, 4, 2)
    copy = pickle.loads(pickle.dumps(cluster_map))
    assert copy == cluster_map and copy._memo == {}
    assert home_set("b/k", copy, 4, 2) == before
