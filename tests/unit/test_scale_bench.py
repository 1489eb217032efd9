"""The pure parts of benchmarks/bench_scale.py: percentiles, balance, reply summaries, the synthetic index."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
import pytest

from hcstore.errors import InvalidRequest
from hcstore.node.repair_plan import plan_object
from hcstore.wire import protocol

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_scale.py"
_spec = importlib.util.spec_from_file_location("bench_scale", SCRIPT)
assert _spec is not None and _spec.loader is not None
bench = importlib.util.module_from_spec(_spec)
sys.modules["bench_scale"] = bench
_spec.loader.exec_module(bench)


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert bench.percentile(values, 0.50) == 50.0
    assert bench.percentile(values, 0.99) == 99.0
    assert bench.percentile(values, 1.0) == 100.0
    assert bench.percentile([3.0], 0.99) == 3.0
    assert math.isnan(bench.percentile([], 0.5))


def test_balance_of_even_and_skewed_counts() -> None:
    even = bench.balance(np.full(10, 600))
    assert (even.mean, even.max_over_mean, even.min_over_mean, even.sd_over_binomial) == (600.0, 1.0, 1.0, 0.0)
    skewed = bench.balance(np.array([900, 300, 600, 600]))
    assert skewed.max_over_mean == pytest.approx(1.5) and skewed.min_over_mean == pytest.approx(0.5)


def test_balance_of_a_random_placement_matches_chance() -> None:
    counts = np.random.default_rng(7).multinomial(6_000_000, [1 / 10_000] * 10_000)
    spread = bench.balance(counts)
    assert spread.sd_over_binomial == pytest.approx(1.0, abs=0.05)
    # the projection of the largest deviation is the right size for what chance gives
    assert spread.max_over_mean - 1 == pytest.approx(bench.expected_extreme(600, 10_000), rel=0.25)


def test_reply_summary_skips_the_map_and_reads_the_rest() -> None:
    header = protocol.reply_frames(7, 42, {"map": {"epoch": 42, "nodes": [{"id": "n1"}] * 100}})[0]
    assert bench.ReplySummary.of(header) == bench.ReplySummary(7, "", 42, "map")
    header = protocol.reply_frames(6, 42, {"delta": {"base": 41, "epoch": 42, "nodes": []}, "digest": b"d"})[0]
    assert bench.ReplySummary.of(header) == bench.ReplySummary(6, "", 42, "delta")
    assert bench.ReplySummary.of(protocol.reply_frames(8, 42, {})[0]) == bench.ReplySummary(8, "", 42, "")
    fields, frames = protocol.with_bulk({"map": {"epoch": 42, "nodes": []}}, framed=True)
    assert bench.ReplySummary.of(protocol.reply_frames(5, 42, fields, frames)[0]) == bench.ReplySummary(
        5, "", 42, "map"
    )
    refused = protocol.error_frames(9, 42, InvalidRequest("too many nodes"))[0]
    assert bench.ReplySummary.of(refused) == bench.ReplySummary(9, InvalidRequest.code, 42, "")


def test_synthetic_index_loses_one_fragment_per_object_to_an_out_node() -> None:
    index = bench.synthetic_index(bench.fleet_map(200), 20, seed=3)
    assert len({id(cluster_map) for _, cluster_map in index}) == 1  # one map for the whole scan
    for version, cluster_map in index:
        lost = [i for i, node in enumerate(version.found_at) if not node]
        assert len(lost) == 1 and cluster_map.node(version.locations[lost[0]]).state == "out"
        plan = plan_object(version, cluster_map)
        assert lost[0] in plan.rebuild and cluster_map.node(plan.rebuild[lost[0]]).state == "alive"
