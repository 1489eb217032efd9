"""plan_read(): local first, data before parity, latency, unavailable last."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from placement import ReadPlan, plan_read

LOCS = ["n0", "n1", "n2", "n3", "n4", "n5"]  # 4+2: 0..3 data, 4..5 parity


def test_data_before_parity() -> None:
    plan = plan_read(LOCS, 4)
    assert plan == ReadPlan((0, 1, 2, 3), (4, 5)) and plan.decode_free


def test_local_first_even_parity() -> None:
    plan = plan_read(LOCS, 4, local_node="n5")
    assert plan.primary == (5, 0, 1, 2) and plan.spares == (3, 4)
    assert not plan.decode_free


def test_latency_orders_within_class() -> None:
    latency = {"n0": 9.0, "n1": 1.0, "n2": 5.0, "n3": 2.0, "n4": 0.1, "n5": 3.0}
    plan = plan_read(LOCS, 4, latency=latency)
    assert plan.primary == (1, 3, 2, 0) and plan.spares == (4, 5)
    # Unknown latency sorts after known ones.
    plan = plan_read(LOCS, 4, latency={"n3": 1.0, "n2": 2.0})
    assert plan.primary == (3, 2, 0, 1) and plan.spares == (4, 5)


def test_unavailable_last_and_never_primary() -> None:
    plan = plan_read(LOCS, 4, unavailable={"n1"}, local_node="n1")
    assert plan.primary == (0, 2, 3, 4) and plan.spares == (5, 1)
    plan = plan_read(LOCS, 4, unavailable={"n0", "n2", "n4"})
    assert plan.primary == (1, 3, 5) and plan.spares == (0, 2, 4)


def test_unknown_locations_never_planned() -> None:
    plan = plan_read(["n0", "", "n2", "n3", "", "n5"], 4)
    assert plan.primary == (0, 2, 3, 5) and plan.spares == ()


def test_several_fragments_on_local_node() -> None:
    plan = plan_read(["a", "b", "a", "c", "a", "d"], 4, local_node="a")
    assert plan.primary == (0, 2, 4, 1) and plan.spares == (3, 5)


def test_bad_k() -> None:
    with pytest.raises(ValueError, match="k"):
        plan_read(LOCS, 0)


@settings(derandomize=True, deadline=None, max_examples=200)
@given(
    locations=st.lists(st.sampled_from(["", "a", "b", "c", "d", "e"]), max_size=12),
    k=st.integers(1, 8),
    local=st.sampled_from([None, "a", "b", "z"]),
    down=st.sets(st.sampled_from(["a", "b", "c", "z"])),
    latency=st.dictionaries(st.sampled_from(["a", "b", "c", "d"]), st.floats(0, 10)),
)
def test_plan_properties(locations, k, local, down, latency) -> None:  # type: ignore[no-untyped-def]
    plan = plan_read(locations, k, local_node=local, unavailable=down, latency=latency)
    order = plan.primary + plan.spares
    known = [i for i, node in enumerate(locations) if node]
    assert sorted(order) == known and len(set(order)) == len(order)
    up = [i for i in known if locations[i] not in down]
    assert len(plan.primary) == min(k, len(up))
    assert all(locations[i] not in down for i in plan.primary)
    first_down = next((p for p, i in enumerate(order) if locations[i] in down), len(order))
    assert all(locations[i] in down for i in order[first_down:])
    if local is not None and local not in down:
        local_up = [i for i in up if locations[i] == local]
        assert list(order[: len(local_up)]) == local_up
