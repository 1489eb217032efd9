"""Protection levels, the protection summary, the repair rate and ETA, and readiness: pure functions."""

from __future__ import annotations

import math

import pytest

from hcstore.metrics.health import agent_readiness, liveness
from hcstore.metrics.protection import (
    FULL,
    UNREADABLE,
    ProtectionSummary,
    RepairRate,
    level_order,
    missing_fragments,
    protection_level,
    repair_eta,
    summarize,
)


@pytest.mark.parametrize(
    "available, k, m, level",
    [
        (6, 4, 2, FULL),
        (7, 4, 2, FULL),  # a surplus copy (a node came back after repair) is still full
        (5, 4, 2, "1"),
        (4, 4, 2, "0"),
        (3, 4, 2, UNREADABLE),
        (0, 4, 2, UNREADABLE),
        (3, 1, 2, FULL),
        (2, 1, 2, "1"),
        (1, 1, 2, "0"),  # replicas: k = 1
        (10, 8, 3, "2"),
        (4, 4, 0, FULL),
    ],
)
def test_protection_level_is_available_minus_k_between_full_and_unreadable(available, k, m, level):
    assert protection_level(available, k, m) == level


def test_missing_fragments():
    assert [missing_fragments(a, 4, 2) for a in (7, 6, 5, 4, 0)] == [0, 0, 1, 2, 6]


def test_levels_sort_from_most_protected_to_unreadable():
    assert sorted([UNREADABLE, "0", FULL, "2", "1"], key=level_order) == [FULL, "2", "1", "0", UNREADABLE]


def test_repair_eta():
    assert repair_eta(0, 0.0) == 0.0
    assert repair_eta(1000, 100.0) == 10.0
    assert math.isinf(repair_eta(1000, 0.0))


def _report(levels, level_bytes, **figures):
    return {"repair": {"levels": levels, "level_bytes": level_bytes, **figures}}


def test_summary_adds_up_serving_nodes_and_leaves_out_stale_reports():
    stats = {
        "n1": _report(
            {FULL: 3, "1": 1},
            {FULL: 300, "1": 50},
            bytes_missing=64,
            bytes_awaiting_repair=64,
            bytes_repaired=10,
            repaired=1,
            failed=0,
            scrub={"corrupt": 2},
        ),
        "n2": _report({FULL: 2, UNREADABLE: 1}, {FULL: 20, UNREADABLE: 7}, bytes_missing=300, bytes_repaired=5),
        "n3": _report({FULL: 9}, {FULL: 900}),  # down: its objects are counted by another node now
        "n4": {"fragments": 0},  # an agent without a controller-driven worker reports no repair
    }
    summary = summarize(stats, {"n1", "n2", "n4"})
    assert summary.objects == {FULL: 5, "1": 1, UNREADABLE: 1}
    assert summary.bytes == {FULL: 320, "1": 50, UNREADABLE: 7}
    assert (summary.bytes_missing, summary.bytes_awaiting_repair, summary.bytes_repaired) == (364, 64, 15)
    assert (summary.repaired, summary.scrub_corrupt, summary.reports, summary.below_full) == (1, 2, 3, 2)
    assert summarize(stats).objects[FULL] == 14


def test_summary_as_json_names_every_level_and_has_no_infinity():
    summary = ProtectionSummary(objects={"1": 2}, bytes={"1": 10}, bytes_missing=100).at_rate(0.0)
    data = summary.to_dict()
    assert list(data["objects"]) == [FULL, "1", UNREADABLE]
    assert data["objects"] == {FULL: 0, "1": 2, UNREADABLE: 0}
    assert data["eta_seconds"] is None and math.isinf(summary.eta_seconds)
    assert ProtectionSummary(bytes_missing=100).at_rate(20.0).to_dict()["eta_seconds"] == 5.0


def test_repair_rate_over_the_window():
    rate = RepairRate(window=60)
    assert rate.rate(0) == 0.0
    for t in range(0, 121, 10):  # n1 writes 100 B/s, n2 50 B/s
        rate.observe("n1", t, 100 * t)
        rate.observe("n2", t, 50 * t)
    assert rate.rate(120) == pytest.approx(150.0)
    for t in range(130, 201, 10):  # n1 stops writing at 130; n2 stops reporting after 120
        rate.observe("n1", t, 100 * min(t, 130))
        if t == 150:
            assert rate.rate(150) == pytest.approx((13000 - 9000) / 60 + (6000 - 3000) / 60)
    assert rate.rate(200) == 0.0  # n1 wrote nothing in the window; n2 is silent for longer


def test_repair_rate_counts_a_restarted_agent_from_zero_and_forgets_silent_nodes():
    rate = RepairRate(window=100)
    rate.observe("n1", 0, 5000)
    rate.observe("n1", 10, 6000)  # +1000
    rate.observe("n1", 20, 500)  # restarted: +500 since
    assert rate.rate(20) == pytest.approx(1500 / 20)
    assert rate.rate(200) == 0.0  # nothing heard for longer than the window
    rate.forget("n1")
    assert rate.rate(20) == 0.0
    with pytest.raises(ValueError):
        RepairRate(window=0)


def test_readiness():
    ready = agent_readiness(
        serving=True, epoch=7, controller_epoch=7, has_controller=True, usable_mountpaths=1, mountpaths=2
    )
    assert ready.ok and ready.to_dict()["epoch"] == 7
    behind = agent_readiness(
        serving=True, epoch=6, controller_epoch=7, has_controller=True, usable_mountpaths=2, mountpaths=2
    )
    assert not behind.ok and "epoch 6" in behind.reasons[0] and "7" in behind.reasons[0]
    unknown = agent_readiness(
        serving=True, epoch=0, controller_epoch=None, has_controller=True, usable_mountpaths=2, mountpaths=2
    )
    assert not unknown.ok and "no reply from the controller" in unknown.reasons[0]
    lone = agent_readiness(
        serving=True, epoch=0, controller_epoch=None, has_controller=False, usable_mountpaths=1, mountpaths=1
    )
    assert lone.ok
    no_disk = agent_readiness(
        serving=False, epoch=8, controller_epoch=7, has_controller=True, usable_mountpaths=0, mountpaths=2
    )
    assert not no_disk.ok and len(no_disk.reasons) == 2 and "no usable mountpath" in no_disk.reasons[1]
    assert liveness(True).ok and not liveness(False).ok
