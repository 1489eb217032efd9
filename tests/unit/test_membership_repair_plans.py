"""Pure churn logic: the membership table's state machine and epochs, and repair plans."""

from __future__ import annotations

import pytest

from hcstore.client.versions import ObjectVersion
from hcstore.control.membership import Intervals, MembershipTable, liveness
from hcstore.node.rate_limit import RateLimiter
from hcstore.node.repair_plan import checkers, plan_object, protection_summary, repairer
from placement import ClusterMap, Node, place

IV = Intervals(heartbeat=1, suspect_after=3, down_after=8, out_after=60)


def table_with(nodes: int, now: float = 0.0) -> MembershipTable:
    table = MembershipTable(IV)
    for i in range(nodes):
        table.heartbeat(f"n{i + 1}", f"tcp://127.0.0.1:{7000 + i}", {"host": f"h{i + 1}"}, 1.0, now)
    return table


def test_liveness_follows_heartbeat_age():
    assert [liveness(age, IV) for age in (0, 3, 3.1, 8.1, 60.1)] == ["alive", "alive", "suspect", "down", "out"]
    with pytest.raises(ValueError, match="intervals"):
        Intervals(heartbeat=5, suspect_after=3, down_after=8, out_after=60)


def test_states_move_with_time_and_a_returning_node_is_alive_again():
    table = table_with(3)
    epoch = table.epoch
    table.heartbeat("n1", "tcp://127.0.0.1:7000", {"host": "h1"}, 1.0, 10)
    table.heartbeat("n2", "tcp://127.0.0.1:7001", {"host": "h2"}, 1.0, 10)
    table.tick(10)
    assert table.epoch > epoch  # n3 went down: a new map
    assert table.cluster_map().node("n3").state == "down"
    assert not table.tick(10)  # nothing changed: the epoch stays
    table.tick(61)
    assert table.cluster_map().node("n3").state == "out"
    table.heartbeat("n3", "tcp://127.0.0.1:7002", {"host": "h3"}, 1.0, 62)
    assert table.cluster_map().node("n3").state == "alive"


def test_admin_states_drain_resume_remove():
    table = table_with(2)
    table.set_admin("n1", "draining", 0)
    assert table.cluster_map().node("n1").state == "draining"
    assert [n.id for n in table.cluster_map().writable()] == ["n2"]
    table.set_admin("n1", "", 0)
    assert table.cluster_map().node("n1").state == "alive"
    table.set_admin("n2", "decommissioned", 0)
    table.heartbeat("n2", "tcp://127.0.0.1:7001", {"host": "h2"}, 1.0, 1)
    assert table.cluster_map().node("n2").state == "decommissioned"  # never comes back on its own
    with pytest.raises(KeyError, match="n9"):
        table.set_admin("n9", "draining", 0)


def test_maintenance_holds_a_silent_node_past_out_after_until_exit_or_its_deadline():
    table = table_with(3)
    table.set_admin("n2", "maintenance", 0, seconds=300)
    assert table.maintenance_left(0) == {"n2": 300}
    assert table.cluster_map().node("n2").state == "maintenance"
    assert [n.id for n in table.cluster_map().writable()] == ["n1", "n3"]
    for now in (10.0, 100.0, 299.0):  # n2 stopped at 0: past down_after and out_after, it stays in maintenance
        table.heartbeat("n1", "tcp://127.0.0.1:7000", {"host": "h1"}, 1.0, now)
        table.heartbeat("n3", "tcp://127.0.0.1:7002", {"host": "h3"}, 1.0, now)
        table.tick(now)
        assert table.cluster_map().node("n2").state == "maintenance"
    table.heartbeat("n2", "tcp://127.0.0.1:7001", {"host": "h2"}, 1.0, 299.5)  # back, still in maintenance
    assert table.cluster_map().node("n2").state == "maintenance"
    table.set_admin("n2", "", 299.6)  # exit: in service at once
    assert table.cluster_map().node("n2").state == "alive" and table.maintenance_left(299.6) == {}
    table.set_admin("n3", "maintenance", 300, seconds=100)
    table.tick(399)
    assert table.cluster_map().node("n3").state == "maintenance"
    epoch = table.epoch
    assert table.tick(401)  # overdue and silent since 300, past out_after: out at once, repair may begin
    assert table.cluster_map().node("n3").state == "out" and table.epoch > epoch
    assert table.admin_of("n3") == ""


def test_a_restarted_controller_keeps_a_node_in_maintenance_from_an_adopted_map():
    from hcstore.control.membership import DEFAULT_MAINTENANCE

    table = table_with(3)
    table.set_admin("n1", "maintenance", 0, seconds=30)
    table.set_admin("n2", "draining", 0)
    fresh = MembershipTable(IV)
    fresh.adopt(table.cluster_map(), 1000.0)
    assert fresh.cluster_map().node("n1").state == "maintenance"
    assert fresh.cluster_map().node("n2").state == "draining"
    assert fresh.maintenance_left(1000.0) == {"n1": DEFAULT_MAINTENANCE}


def test_a_node_an_outside_authority_declares_dead_is_down_at_once_and_out_on_its_own_clock():
    table = table_with(3)
    table.tick(2.0)
    epoch = table.epoch
    table.mark_dead("n2", 2.0)  # Ray says the node is gone, 2 s after its heartbeat
    assert table.cluster_map().node("n2").state == "down" and table.epoch > epoch
    assert table.cluster_map().node("n1").state == "alive"
    table.tick(59.5)
    assert table.cluster_map().node("n2").state == "down"  # out_after counts from its last heartbeat (0 s)
    table.tick(60.5)
    assert table.cluster_map().node("n2").state == "out"
    table.heartbeat("n2", "tcp://127.0.0.1:7001", {"host": "h2"}, 1.0, 61.0)
    assert table.cluster_map().node("n2").state == "alive"  # back: no longer dead
    table.mark_dead("nobody", 61.0)  # unknown nodes are ignored
    assert "nobody" not in table.cluster_map()


def test_a_restarted_controller_continues_above_the_agents_epoch():
    old = table_with(3)
    for _ in range(5):
        old.tick(100)
        old.heartbeat("n1", "tcp://127.0.0.1:7000", {"host": "h1"}, 1.0, 100)
    persisted = old.cluster_map()
    fresh = MembershipTable(IV)
    fresh.observe_epoch(persisted.epoch)
    fresh.adopt(persisted, now=200)
    assert fresh.epoch > persisted.epoch
    assert {n.id for n in fresh.cluster_map().nodes} == {"n1", "n2", "n3"}
    assert fresh.cluster_map().node("n2").state == "alive"  # a full out-interval of grace


def alive_map(count: int, **states: str) -> ClusterMap:
    return ClusterMap(
        1, tuple(Node(f"n{i}", f"tcp://x:{i}", state=states.get(f"n{i}", "alive")) for i in range(1, count + 1))
    )


def version_on(cluster_map: ClusterMap, found: tuple[str, ...] | None = None, copies=()) -> ObjectVersion:
    locations = place("bkt/k", cluster_map, 4, 2).nodes
    return ObjectVersion(
        "bkt",
        "k",
        "0000000000000000001-0000-00000000",
        "data",
        1000,
        "zfec",
        4,
        2,
        256,
        1,
        tuple(locations),
        6,
        6,
        {},
        found if found is not None else tuple(locations),
        frozenset(n.id for n in cluster_map.nodes if n.state == "alive"),
        tuple(copies),
    )


def test_a_whole_object_needs_nothing():
    cluster_map = alive_map(8)
    plan = plan_object(version_on(cluster_map), cluster_map)
    assert not plan.rebuild and not plan.drop and plan.status(4, 6) == "protected"


def test_fragments_of_an_out_node_are_rebuilt_and_of_a_down_node_awaited():
    base = alive_map(8)
    version = version_on(base)
    victim = version.locations[2]
    out_map = alive_map(8, **{victim: "out"})
    out = plan_object(version_on(base, tuple("" if n == victim else n for n in version.locations)), out_map)
    assert list(out.rebuild) == [2] and out.rebuild[2] != victim and out.status(4, 6) == "degraded"
    down_map = alive_map(8, **{victim: "down"})
    waiting = version_on(base, tuple("" if n == victim else n for n in version.locations))
    waiting = ObjectVersion(**{**waiting.__dict__, "answered": waiting.answered - {victim}})
    down = plan_object(waiting, down_map)
    assert not down.rebuild and down.waiting == (2,)


def test_a_draining_holder_is_moved_then_dropped():
    base = alive_map(8)
    version = version_on(base)
    draining = version.locations[0]
    plan = plan_object(version, alive_map(8, **{draining: "draining"}))
    assert list(plan.rebuild) == [0] and plan.drop == {0: draining} and plan.status(4, 6) == "misplaced"


def test_a_node_in_maintenance_keeps_its_fragments_and_gets_the_ones_it_missed_after_exit():
    base = alive_map(8)
    version = version_on(base)
    away = version.locations[2]
    silent = ObjectVersion(**{**version_on(base).__dict__, "answered": version.answered - {away}})
    silent = ObjectVersion(**{**silent.__dict__, "found_at": tuple("" if n == away else n for n in version.found_at)})
    during = alive_map(8, **{away: "maintenance"})
    plan = plan_object(silent, during)
    assert not plan.rebuild and plan.waiting == (2,)  # nothing rebuilt for its absence
    missed = version_on(base, tuple("" if n == away else n for n in version.locations))  # a put written without it
    assert not plan_object(missed, during).rebuild  # its fragment waits for it ...
    after = plan_object(missed, base)
    assert after.rebuild == {2: away}  # ... and is rebuilt on it once it is back in service


def test_surplus_copies_after_a_return_are_dropped():
    base = alive_map(8)
    spare = next(n.id for n in base.nodes if n.id not in place("bkt/k", base, 4, 2).nodes)
    plan = plan_object(version_on(base, copies=[(3, spare)]), base)
    assert plan.extra == ((3, spare),) and not plan.rebuild


def test_a_fragment_rebuilt_away_from_a_removed_node_that_still_answers_is_not_rebuilt_again():
    base = alive_map(8)
    version = version_on(base)
    removed = version.locations[1]
    after = alive_map(8, **{removed: "decommissioned"})
    first = plan_object(version, after)
    assert list(first.rebuild) == [1]
    rebuilt = first.rebuild[1]
    # The removed node still answers first for fragment 1; the rebuilt copy is seen as a second copy.
    again = plan_object(version_on(base, version.locations, copies=[(1, rebuilt)]), after)
    assert not again.rebuild and again.status(4, 6) == "protected"


def test_one_repairer_among_the_checkers():
    base = alive_map(8)
    version = version_on(base)
    assert len(checkers(version.locations, base, 2)) == 3
    assert repairer(version, base) in version.found_at
    assert repairer(version_on(base, ("",) * 6), base) == ""


def test_protection_summary_adds_up_and_rate_limiter_is_unlimited_at_zero():
    stats = {
        "n1": {"repair": {"objects": 2, "protected": 1, "degraded": 1, "bytes_repaired": 10}},
        "n2": {"repair": {"objects": 1, "protected": 1, "scrub": {"corrupt": 2}}},
        "n3": {},
    }
    summary = protection_summary(stats)
    assert (
        summary["objects"],
        summary["protected"],
        summary["degraded"],
        summary["bytes_repaired"],
        summary["scrub_corrupt"],
    ) == (3, 2, 1, 10, 2)
    RateLimiter(0).take(1 << 40)  # returns at once
