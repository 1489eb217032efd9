"""Pure rules of a Ray deployment: node ids, mountpath templates, labels, reconciliation plans."""

from __future__ import annotations

import pytest

from ray_integration.layout import RayNode, agent_name, labels_for, mountpaths_for, node_id_for, reconcile

A = "a" * 56
B = "b" * 56
C = "c" * 56


def test_node_id_is_short_stable_and_checked():
    assert node_id_for(A) == "ray-" + "a" * 16
    assert node_id_for(A) == node_id_for(A) != node_id_for(B)
    with pytest.raises(ValueError, match="not a Ray node id"):
        node_id_for("../etc")
    assert agent_name(A).endswith(A)


def test_mountpaths_from_a_list_are_templated_per_node():
    assert mountpaths_for(["/d/{node_id}/mp0", "/d/{node_id}/mp1"], ray_node_id=A) == (
        f"/d/ray-{'a' * 16}/mp0",
        f"/d/ray-{'a' * 16}/mp1",
    )


def test_mountpaths_mapping_prefers_node_id_then_ip_then_hostname_then_default():
    spec = {A: ["/by-id"], "10.0.0.2": ["/by-ip"], "gpu7": ["/by-host"], "default": ["/nvme0"]}
    assert mountpaths_for(spec, ray_node_id=A, ip="10.0.0.2", hostname="gpu7") == ("/by-id",)
    assert mountpaths_for(spec, ray_node_id=B, ip="10.0.0.2", hostname="gpu7") == ("/by-ip",)
    assert mountpaths_for(spec, ray_node_id=B, ip="10.0.0.3", hostname="gpu7") == ("/by-host",)
    assert mountpaths_for(spec, ray_node_id=B, ip="10.0.0.3", hostname="gpu8") == ("/nvme0",)


@pytest.mark.parametrize(
    "spec, message",
    [
        ({"10.0.0.9": ["/x"]}, "no entry for node"),
        ([], "non-empty list"),
        ("/just/a/string", "non-empty list"),
        (["/d/{rack}"], "unknown template field"),
    ],
)
def test_bad_mountpaths_say_what_is_wrong(spec, message):
    with pytest.raises(ValueError, match=message):
        mountpaths_for(spec, ray_node_id=A, ip="10.0.0.2")


def test_default_mountpaths_differ_per_node():
    assert mountpaths_for(None, ray_node_id=A) != mountpaths_for(None, ray_node_id=B)


def test_labels_take_failure_domains_only():
    assert labels_for({"ray.io/availability-zone": "us-1a", "rack": ["r7"], "ray.io/node-id": A}) == (
        ("rack", "r7"),
        ("zone", "us-1a"),
    )
    assert labels_for({}) == ()


def test_reconcile_starts_missing_agents_and_drops_dead_nodes():
    nodes = [RayNode(A, True), RayNode(B, True), RayNode(C, False)]
    plan = reconcile(nodes, {A: True, C: True})
    assert [n.node_id for n in plan.start] == [B]
    assert plan.gone == (C,)


def test_reconcile_a_node_alive_again_under_the_same_id_wins_over_its_dead_row():
    plan = reconcile([RayNode(A, False), RayNode(A, True)], {})
    assert [n.node_id for n in plan.start] == [A] and plan.gone == ()


def test_reconcile_nothing_to_do_when_every_alive_node_has_an_agent():
    plan = reconcile([RayNode(A, True), RayNode(B, True)], {A: True, B: True})
    assert plan.start == () and plan.gone == ()
