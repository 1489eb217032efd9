"""ClusterMap and Node: validation, immutability, serialisation, epochs."""

from __future__ import annotations

import json
import pickle

import pytest

from placement import NODE_STATES, ClusterMap, Labels, Node


def _map() -> ClusterMap:
    return ClusterMap(3, (Node("b", labels={"zone": "z1"}), Node("a", weight=2), Node("c", state="down")))


def test_nodes_sorted_and_order_independent() -> None:
    m = _map()
    assert [n.id for n in m.nodes] == ["a", "b", "c"]
    assert m == ClusterMap(3, tuple(reversed(m.nodes)))
    assert hash(m) == hash(ClusterMap(3, tuple(reversed(m.nodes))))


def test_lookup_contains_and_writable() -> None:
    m = _map()
    assert m.node("b").labels == {"zone": "z1"}
    assert "a" in m and "zz" not in m
    assert [n.id for n in m.writable()] == ["a", "b"]
    with pytest.raises(KeyError, match="'zz'"):
        m.node("zz")


def test_changes_bump_epoch_and_leave_original() -> None:
    m = _map()
    added = m.with_node(Node("d"))
    replaced = m.with_node(Node("a", weight=5))
    removed = m.without_node("b")
    stated = m.with_state("a", "suspect")
    assert (added.epoch, replaced.epoch, removed.epoch, stated.epoch) == (4, 4, 4, 4)
    assert "d" in added and "d" not in m
    assert replaced.node("a").weight == 5.0 and len(replaced.nodes) == 3
    assert "b" not in removed
    assert stated.node("a").state == "suspect" and stated.node("a").weight == 2.0
    assert m.node("a").state == "alive"
    with pytest.raises(KeyError):
        m.without_node("zz")
    with pytest.raises(ValueError, match="state"):
        m.with_state("a", "sleeping")


def test_dict_round_trip_through_json() -> None:
    m = _map()
    assert ClusterMap.from_dict(json.loads(json.dumps(m.to_dict()))) == m
    for node in m.nodes:
        assert Node.from_dict(node.to_dict()) == node


def test_pickle_round_trip() -> None:
    m = _map()
    again = pickle.loads(pickle.dumps(m))
    assert again == m and again.node("b").labels == {"zone": "z1"}
    assert isinstance(again.node("b").labels, Labels)


def test_labels_immutable_and_hashable() -> None:
    raw = {"zone": "a"}
    node = Node("n", labels=raw)
    raw["zone"] = "b"
    assert node.labels["zone"] == "a"
    with pytest.raises(TypeError):
        node.labels["zone"] = "c"  # type: ignore[index]
    assert hash(node) == hash(Node("n", labels={"zone": "a"}))


@pytest.mark.parametrize(
    ("d", "field"),
    [
        ({"id": ""}, "node.id"),
        ({"id": 3}, "node.id"),
        ({}, "node.id"),
        ({"id": "n", "weight": 0}, "node.weight"),
        ({"id": "n", "weight": -1.0}, "node.weight"),
        ({"id": "n", "weight": float("nan")}, "node.weight"),
        ({"id": "n", "weight": float("inf")}, "node.weight"),
        ({"id": "n", "weight": "2"}, "node.weight"),
        ({"id": "n", "weight": True}, "node.weight"),
        ({"id": "n", "state": "asleep"}, "node.state"),
        ({"id": "n", "labels": {"zone": 1}}, "node.labels"),
        ({"id": "n", "labels": ["zone"]}, "node.labels"),
        ({"id": "n", "endpoint": None}, "node.endpoint"),
        ({"id": "n", "wieght": 2}, "wieght"),
    ],
)
def test_node_from_dict_names_bad_field(d: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        Node.from_dict(d)


@pytest.mark.parametrize(
    ("d", "field"),
    [
        ({"nodes": []}, "epoch"),
        ({"epoch": -1, "nodes": []}, "epoch"),
        ({"epoch": "1", "nodes": []}, "epoch"),
        ({"epoch": 1, "nodes": "ab"}, "nodes"),
        ({"epoch": 1, "nodes": [{"id": "a"}, {"id": "a"}]}, "duplicate node id 'a'"),
        ({"epoch": 1, "nodes": [{"id": "a", "state": "x"}]}, "node.state"),
    ],
)
def test_map_from_dict_names_bad_field(d: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        ClusterMap.from_dict(d)


def test_states_constants() -> None:
    assert NODE_STATES == ("alive", "suspect", "down", "out", "draining", "maintenance", "decommissioned")
    for state in NODE_STATES:
        assert Node("n", state=state).state == state
