"""Durability model (benchmarks/durability_model.py): monotonicity, closed form vs exact chain and Monte Carlo, CLI."""

from __future__ import annotations

import importlib.util
import math
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "durability_model.py"
_spec = importlib.util.spec_from_file_location("durability_model", SCRIPT)
assert _spec is not None and _spec.loader is not None
dm = importlib.util.module_from_spec(_spec)
sys.modules["durability_model"] = dm
_spec.loader.exec_module(dm)

LAM = dm.afr_to_hourly_rate(0.02)


def fleet_p(
    k: int, m: int, lam: float = LAM, t: float = 2.0, objects: float = 1e7, placement: str = "random", nodes: int = 1000
) -> float:
    return dm.loss_probability_per_year(nodes, k, m, lam, t, objects, placement)


def test_more_parity_lowers_loss() -> None:
    for k in (4, 8, 10):
        ps = [fleet_p(k, m, placement="all") for m in (1, 2, 3, 4)]
        assert ps == sorted(ps, reverse=True) and len(set(ps)) == 4
        gs = [dm.group_loss_rate_per_hour(k, m, LAM, 2.0) for m in (1, 2, 3, 4)]
        assert gs == sorted(gs, reverse=True)
    assert fleet_p(10, 4) < fleet_p(8, 2) and fleet_p(10, 4) < fleet_p(4, 2)


@pytest.mark.parametrize(("k", "m"), [(4, 2), (8, 2), (10, 4)])
def test_longer_repair_and_more_failures_raise_loss(k: int, m: int) -> None:
    by_window = [fleet_p(k, m, t=t) for t in (0.5, 1, 2, 4, 20)]
    assert by_window == sorted(by_window) and len(set(by_window)) == len(by_window)
    by_rate = [fleet_p(k, m, lam=dm.afr_to_hourly_rate(a)) for a in (0.005, 0.02, 0.1)]
    assert by_rate == sorted(by_rate) and len(set(by_rate)) == 3
    by_nodes = [fleet_p(k, m, nodes=n, placement="all") for n in (100, 1000, 5000)]
    assert by_nodes == sorted(by_nodes)
    mttdl = [dm.group_mttdl_hours(k, m, LAM, t) for t in (0.5, 2, 20)]
    assert mttdl == sorted(mttdl, reverse=True)


def test_more_objects_raise_coverage_up_to_all_sets() -> None:
    cov = [dm.placement_coverage(1000, 10, 4, o) for o in (0, 1e3, 1e6, 1e9, 1e15)]
    assert cov[0] == 0 and cov == sorted(cov) and cov[-1] == pytest.approx(1.0)
    assert fleet_p(10, 4, objects=1e6) < fleet_p(10, 4, objects=1e9) <= fleet_p(10, 4, placement="all")
    # Fixed copysets cover far fewer (m+1)-sets than random placement of many objects.
    assert dm.placement_coverage(1000, 4, 2, 1e7, "partitioned") < dm.placement_coverage(1000, 4, 2, 1e7)


def test_closed_form_matches_exact_chain() -> None:
    for k, m in ((2, 1), (4, 2), (8, 2), (10, 4)):
        for repair in ("parallel", "serial"):
            approx = dm.group_mttdl_hours(k, m, 1e-4, 1.0, repair)
            exact = dm.group_mttdl_exact_hours(k, m, 1e-4, 1.0, repair)
            assert approx == pytest.approx(exact, rel=0.02)
    # Serial repair is the conservative bound, m! times shorter.
    assert dm.group_mttdl_hours(10, 4, 1e-4, 1.0, "serial") * 24 == pytest.approx(
        dm.group_mttdl_hours(10, 4, 1e-4, 1.0, "parallel")
    )


def test_fleet_formula_reduces_to_group_and_per_object_rate() -> None:
    for k, m in ((2, 1), (4, 2), (10, 4)):
        n = k + m
        assert dm.concurrent_failure_rate_per_hour(n, m, LAM, 2.0) == pytest.approx(
            dm.group_loss_rate_per_hour(k, m, LAM, 2.0)
        )
        # all-sets rate x share of (m+1)-sets one object covers = one object's loss rate
        per_object = dm.concurrent_failure_rate_per_hour(1000, m, LAM, 2.0) * (
            math.comb(n, m + 1) / math.comb(1000, m + 1)
        )
        assert per_object == pytest.approx(dm.group_loss_rate_per_hour(k, m, LAM, 2.0))


def test_closed_form_matches_monte_carlo_2_plus_1() -> None:
    lam, t = 0.01, 1.0  # exaggerated: a node fails every 100 h, repair takes 1 h
    simulated = dm.simulate_group_mttdl_hours(3, 1, lam, t, trials=3000, seed=7)
    closed = dm.group_mttdl_hours(2, 1, lam, t)  # 1 / (3 * 2 * lam^2 * t) = 1667 h
    assert closed == pytest.approx(1666.67, rel=1e-3)
    assert simulated == pytest.approx(closed, rel=0.10)


def test_inputs() -> None:
    assert dm.afr_to_hourly_rate(0.02) * 8760 == pytest.approx(-math.log(0.98))
    assert dm.repair_window_hours(2, 300, 10) == pytest.approx(10 / 60 + 2e12 / 300e6 / 3600)
    assert dm.repair_window_hours(2, 300, 10, parallelism=4) < dm.repair_window_hours(2, 300, 10)
    assert dm.annual_probability(0) == 0 and dm.nines(1e-11) == pytest.approx(11)
    with pytest.raises(ValueError):
        dm.placement_coverage(5, 4, 2, 10)
    with pytest.raises(ValueError):
        dm.afr_to_hourly_rate(1.0)


def test_cli_runs(capsys: pytest.CaptureFixture[str]) -> None:
    assert dm.main(["--repair-mbps", "300", "--node-tb", "2"]) == 0
    out = capsys.readouterr().out
    assert "repair window: 2.019 h" in out
    for scheme in ("4+2", "8+2", "10+4"):
        assert out.count(f"\n{scheme} ") == 9
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--repair-hours", "1"], capture_output=True, text=True, check=True, timeout=60
    )
    assert "10+4" in proc.stdout
    proc = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "--repair-hours" in proc.stderr
