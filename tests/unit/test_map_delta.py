"""Map deltas: the membership table's changes since an epoch give exactly its current map, and a delta on
the wire is validated like a map."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hcstore.control import membership
from hcstore.control.membership import Intervals, MembershipTable
from hcstore.wire import protocol
from placement import ClusterMap, Grant, MapDelta, Node

IV = Intervals(heartbeat=1, suspect_after=3, down_after=8, out_after=60)
NODES = [f"n{i}" for i in range(6)]
GRANTS = [Grant(f"{c}" * 40, "node", f"n{i}") for i, c in enumerate("abc")]

# One step of a table's life: (operation, node index, a number for the time or the port).
steps = st.lists(
    st.tuples(
        st.sampled_from(
            ["heartbeat", "move", "tick", "drain", "resume", "dead", "forget", "grants", "observe", "adopt"]
        ),
        st.integers(0, len(NODES) - 1),
        st.integers(0, 100),
    ),
    max_size=40,
)


def run(table: MembershipTable, step: tuple[str, int, int], now: float) -> None:
    op, i, n = step
    node = NODES[i]
    if op in ("heartbeat", "move"):
        port = 7000 + i + (n if op == "move" else 0)
        table.heartbeat(node, f"tcp://127.0.0.1:{port}", {"host": node}, 1.0, now)
    elif op == "tick":
        table.tick(now)
    elif op in ("drain", "resume") and node in table.members:
        table.set_admin(node, "draining" if op == "drain" else "", now)
    elif op == "dead":
        table.mark_dead(node, now)
    elif op == "forget":
        table.forget(node)
    elif op == "grants":
        table.set_grants(tuple(GRANTS[: n % (len(GRANTS) + 1)]))
    elif op == "observe" and n > 90:
        table.observe_epoch(table.epoch + 2)  # a restarted controller hears of a higher epoch
    elif op == "adopt":  # an agent's persisted map: older or newer than ours, with a node we may not know
        epoch = table.epoch + (1 if n > 50 else -1)
        table.adopt(ClusterMap(max(epoch, 0), (Node(f"adopted{i}", f"tcp://127.0.0.1:{9000 + i}"),)), now)


@settings(max_examples=300, deadline=None)
@given(steps, st.booleans())
def test_the_changes_since_any_remembered_epoch_give_the_current_map(history, coalesce):
    table = MembershipTable(IV, coalesce=coalesce)
    published = {table.epoch: table.cluster_map()}
    for t, step in enumerate(history):
        run(table, step, now=float(t * 5))
        assert published.setdefault(table.epoch, table.cluster_map()) == table.cluster_map()  # one map per epoch
    table.tick(float(len(history) * 5))
    current = published[table.epoch] = table.cluster_map()
    assert current.nodes == tuple(sorted((m.node for m in table.members.values()), key=lambda node: node.id))
    for epoch, old in published.items():
        delta = table.delta_since(epoch)
        if epoch in (0, table.epoch) or epoch < table.deltas_from:  # 0: a node without a map gets it whole
            assert delta is None
            continue
        assert delta is not None and (delta.base, delta.epoch) == (epoch, table.epoch)
        assert delta.apply(old) == current
        assert MapDelta.from_dict(delta.to_dict()) == delta  # and so through the wire


def test_a_coalescing_table_publishes_what_heartbeats_change_once_per_tick():
    table = MembershipTable(IV, coalesce=True)
    for i in range(100):
        table.heartbeat(f"r{i:03d}", f"tcp://127.0.0.1:{7000 + i}", {}, 1.0, 0.0)
    assert table.epoch == 0 and len(table.cluster_map()) == 0  # registered, not yet published
    assert table.tick(0.5) and table.epoch == 1 and len(table.cluster_map()) == 100
    assert not table.tick(0.6)  # nothing held: no new epoch
    table.heartbeat("r001", "tcp://127.0.0.1:9999", {}, 1.0, 0.7)  # moved
    table.set_admin("r002", "draining", 0.8)  # an operator's change publishes at once, the held one with it
    assert table.epoch == 2 and table.cluster_map().node("r001").endpoint == "tcp://127.0.0.1:9999"
    assert {node.id for node in table.delta_since(1).nodes} == {"r001", "r002"}
    table.heartbeat("r100", "tcp://127.0.0.1:8100", {}, 1.0, 0.9)
    assert table.publish() and "r100" in table.cluster_map() and not table.publish()


def test_a_delta_names_only_what_changed():
    table = MembershipTable(IV)
    for i, node in enumerate(NODES):
        table.heartbeat(node, f"tcp://127.0.0.1:{7000 + i}", {}, 1.0, 0.0)
    epoch = table.epoch
    table.set_admin("n2", "draining", 1.0)
    table.forget("n4")
    delta = table.delta_since(epoch)
    assert [node.id for node in delta.nodes] == ["n2"] and delta.nodes[0].state == "draining"
    assert delta.removed == ("n4",) and delta.grants is None
    table.set_grants(tuple(GRANTS[:1]))
    assert table.delta_since(epoch).grants == tuple(GRANTS[:1])


def test_changes_older_than_those_remembered_need_the_whole_map(monkeypatch):
    monkeypatch.setattr(membership, "MAX_CHANGES", 8)
    table = MembershipTable(IV)
    for t in range(20):
        table.heartbeat(NODES[t % len(NODES)], f"tcp://127.0.0.1:{7000 + t}", {}, 1.0, float(t))
    assert len(table.changes) <= 8 and table.deltas_from > 0
    assert table.delta_since(table.deltas_from - 1) is None
    assert table.delta_since(table.deltas_from) is not None


def test_an_agent_restarting_with_an_older_map_costs_no_epoch():
    table = MembershipTable(IV)
    for i, node in enumerate(NODES):
        table.heartbeat(node, f"tcp://127.0.0.1:{7000 + i}", {}, 1.0, 0.0)
    older, epoch = table.cluster_map(), table.epoch
    table.set_admin("n1", "draining", 1.0)
    table.adopt(older, 2.0)  # an agent restarts and sends the map it persisted
    assert table.epoch == epoch + 1 and table.delta_since(epoch) is not None


def test_a_restarted_controller_sends_no_delta_from_before_its_jump():
    table = MembershipTable(IV)
    table.heartbeat("n0", "tcp://127.0.0.1:7000", {}, 1.0, 0.0)
    table.observe_epoch(40)  # an agent held epoch 40 of a controller before this one
    assert table.epoch == 41 and table.delta_since(1) is None and table.delta_since(40) is None
    table.heartbeat("n1", "tcp://127.0.0.1:7001", {}, 1.0, 0.0)
    assert table.delta_since(41).nodes == (table.cluster_map().node("n1"),)


def test_the_digest_tells_a_different_map_of_the_same_epoch():
    one = ClusterMap(3, (Node("a", "tcp://x:1"), Node("b", "tcp://x:2")))
    same = ClusterMap(3, (Node("b", "tcp://x:2"), Node("a", "tcp://x:1")))  # the order given does not matter
    other = ClusterMap(3, (Node("a", "tcp://x:1"), Node("b", "tcp://x:3")))

    def digest(cluster_map: ClusterMap) -> bytes:
        return protocol.map_digest(protocol.Packed.of(cluster_map.to_dict()).data)

    assert digest(one) == digest(same) and digest(one) != digest(other)


def test_a_map_encoded_once_is_spliced_into_a_header_as_if_encoded_with_it():
    cluster_map = ClusterMap(3, (Node("a", "tcp://x:1", labels={"rack": "r1"}), Node("b", "tcp://x:2")))
    fields = {"v": 1, "id": 9, "ok": True, "epoch": 3, "map": cluster_map.to_dict()}
    spliced = protocol.pack({**fields, "map": protocol.Packed.of(cluster_map.to_dict())})
    assert spliced == protocol.pack(fields)
    assert protocol.decode_reply([spliced]).header["map"] == cluster_map.to_dict()


def test_a_delta_applies_only_to_its_base():
    delta = MapDelta(base=3, epoch=4, nodes=(Node("a", "tcp://x:1"),))
    with pytest.raises(ValueError, match="from epoch 3 cannot apply to a map at epoch 2"):
        delta.apply(ClusterMap(2))


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"base": 1, "epoch": 1}, "not above its base"),
        ({"base": -1, "epoch": 1}, "base must be a non-negative integer"),
        ({"base": 1, "epoch": "2"}, "epoch must be a non-negative integer"),
        ({"base": 1, "epoch": 2, "nodes": "n1"}, "nodes must be a list"),
        ({"base": 1, "epoch": 2, "removed": [3]}, "removed must hold node ids"),
        ({"base": 1, "epoch": 2, "nodes": [{"id": ""}]}, "node"),
        ({"base": 1, "epoch": 2, "extra": 1}, "unknown field"),
        ([1, 2], "must be a mapping"),
    ],
)
def test_a_malformed_delta_is_refused_by_name(fields, message):
    with pytest.raises(ValueError, match=message):
        MapDelta.from_dict(fields)
