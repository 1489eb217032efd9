"""``hcstore bench`` sets each figure against the smallest limit on its path, and its JSON names every
figure and limit under a stable key."""

from __future__ import annotations

import json

import pytest

from hcstore.tools.bench import Runs, bench_document, bounded, relative
from hcstore.tools.limits import Limit, path_limit

LIMITS = {
    "encode_all_cores": Limit("encode_all_cores", "encode", 4000.0, "MB/s"),
    "disk_write_fsync": Limit("disk_write_fsync", "disk", 900.0, "MB/s"),
    "zeromq_n_streams": Limit("zeromq_n_streams", "wire", 3000.0, "MB/s"),
}


def test_the_smallest_limit_per_byte_of_the_figure_bounds_it():
    # 4+2 writes 1.5 bytes to the disks per byte put: 900 / 1.5 = 600 MB/s is the bound, not the disk's 900
    assert path_limit(LIMITS, {"encode_all_cores": 1, "disk_write_fsync": 1.5, "zeromq_n_streams": 1.5}) == (
        "disk_write_fsync",
        pytest.approx(600.0),
    )
    assert path_limit(LIMITS, {"encode_all_cores": 1, "zeromq_n_streams": 1}) == ("zeromq_n_streams", 3000.0)


def test_a_figure_is_held_to_its_goal_times_its_limit():
    met = bounded("put", "put_mbps", 310.0, LIMITS, {"disk_write_fsync": 1.5}, goal=0.5)
    assert (met.limit, met.ratio, met.met) == ("disk_write_fsync", pytest.approx(310 / 600), True)
    missed = bounded("put", "put_mbps", 290.0, LIMITS, {"disk_write_fsync": 1.5}, goal=0.5)
    assert missed.met is False
    assert relative("degraded", "d", 69.0, "MB/s", "healthy", 100.0, goal=0.7).met is False


def test_the_json_document_names_every_figure_and_limit():
    figures = [
        bounded("put", "put_mbps", 310.0, LIMITS, {"disk_write_fsync": 1.5}, goal=0.5),
        relative("get", "get_warm_mbps", 80.0, "MB/s", "get_into warm", 100.0, goal=0.83),
    ]
    document = json.loads(json.dumps(bench_document(figures, LIMITS, Runs(3))))
    assert document["runs"] == {"count": 3, "statistic": "median"}
    assert set(document["limits"]) == set(LIMITS)
    assert document["figures"]["put_mbps"]["limit"] == "disk_write_fsync"
    assert document["figures"]["get_warm_mbps"]["met"] is False
    assert Runs(3).summary([5.0, 1.0, 3.0]) == 3.0


def test_two_figures_under_one_name_are_refused():
    twice = [relative("get", "get_mbps", 1.0, "MB/s", "a", 2.0), relative("get", "get_mbps", 3.0, "MB/s", "b", 4.0)]
    with pytest.raises(ValueError, match="get_mbps"):
        bench_document(twice, LIMITS, None)
