"""Lanes: order within a lane, lanes side by side, and the bounds on admitted work."""

from __future__ import annotations

import pytest

from hcstore.node.lanes import Lanes


def run_all(lanes: Lanes[str]) -> list[str]:
    """Run admitted jobs one at a time, as one worker would; the order they ran in."""
    ran = []
    while (taken := lanes.take()) is not None:
        lane, job = taken
        ran.append(job)
        lanes.finish(lane)
    return ran


def test_one_lane_runs_in_admission_order_one_at_a_time():
    lanes: Lanes[str] = Lanes(max_jobs=10, max_bytes=1 << 20)
    for job in ("w0", "w1", "prepare"):
        assert lanes.admit("upload-a", job)
    lane, first = lanes.take()
    assert first == "w0"
    assert lanes.take() is None  # w1 waits until w0 finishes
    lanes.finish(lane)
    assert run_all(lanes) == ["w1", "prepare"]
    assert lanes.jobs == 0 and lanes.bytes == 0


def test_different_lanes_and_unordered_jobs_run_side_by_side():
    lanes: Lanes[str] = Lanes(max_jobs=10, max_bytes=1 << 20)
    lanes.admit("a", "a0")
    lanes.admit("a", "a1")
    lanes.admit("b", "b0")
    lanes.admit(None, "r0")
    lanes.admit(None, "r1")
    started = [lanes.take() for _ in range(4)]
    assert [job for _, job in started] == ["a0", "b0", "r0", "r1"]
    assert lanes.take() is None and lanes.running == 4
    lanes.finish(started[0][0])
    assert lanes.take()[1] == "a1"


def test_a_lane_admitted_again_while_its_last_job_runs_waits_for_it():
    lanes: Lanes[str] = Lanes(max_jobs=10, max_bytes=1 << 20)
    lanes.admit("a", "a0")
    lane, _ = lanes.take()
    lanes.admit("a", "a1")  # the lane's queue was empty, its job still running
    assert lanes.take() is None
    lanes.finish(lane)
    assert run_all(lanes) == ["a1"]


def test_job_bound_refuses_and_frees_room_when_a_job_finishes():
    lanes: Lanes[str] = Lanes(max_jobs=2, max_bytes=1 << 20)
    assert lanes.admit("a", "a0") and lanes.admit("b", "b0")
    assert not lanes.admit("c", "c0")
    lane, _ = lanes.take()
    assert not lanes.admit("c", "c0")  # a running job still holds its room
    lanes.finish(lane)
    assert lanes.admit("c", "c0")


def test_byte_bound_counts_queued_and_running_payloads():
    lanes: Lanes[str] = Lanes(max_jobs=100, max_bytes=100)
    assert lanes.admit("a", "a0", cost=60)
    assert not lanes.admit("b", "b0", cost=41)
    assert lanes.admit("b", "b0", cost=40) and lanes.bytes == 100
    lane, _ = lanes.take()
    lanes.finish(lane)
    assert lanes.bytes == 40


def test_one_job_larger_than_the_byte_bound_is_admitted_alone():
    lanes: Lanes[str] = Lanes(max_jobs=100, max_bytes=100)
    assert lanes.admit("a", "huge", cost=1000)
    assert not lanes.admit("b", "small", cost=1)
    assert run_all(lanes) == ["huge"]
    assert lanes.admit("b", "small", cost=1)


def test_cancel_queued_keeps_running_jobs_and_lane_order():
    lanes: Lanes[str] = Lanes(max_jobs=10, max_bytes=1 << 20)
    for job in ("a0", "a1", "a2"):
        lanes.admit("a", job, cost=1)
    lanes.admit("b", "b0", cost=1)
    lane, running = lanes.take()
    cancelled = lanes.cancel_queued()
    assert running == "a0" and cancelled.index("a1") < cancelled.index("a2") and sorted(cancelled) == ["a1", "a2", "b0"]
    assert lanes.take() is None and lanes.jobs == 1 and lanes.bytes == 1
    lanes.finish(lane)
    assert lanes.jobs == 0 and lanes.bytes == 0


def test_bounds_must_be_positive():
    with pytest.raises(ValueError, match="max_jobs"):
        Lanes(max_jobs=0, max_bytes=1)
