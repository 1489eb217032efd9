"""The pure rules of hcstore.checkpoints: names, manifests, completeness, retention, durable cadence."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hcstore.checkpoints import (
    MANIFEST_FORMAT,
    CheckpointCorrupt,
    FileEntry,
    Manifest,
    check_file_name,
    check_keep,
    checkpoint_dirname,
    is_durable_save,
    manifest_problems,
    parse_checkpoint_dirname,
    plan_retention,
)
from hcstore.errors import InvalidRequest

# ---------------------------------------------------------------------- names


def test_dirname_is_zero_padded_and_sorts_like_steps():
    assert checkpoint_dirname(100) == "checkpoint_000000100"
    names = [checkpoint_dirname(s) for s in (5, 40, 300, 1_000_000_000)]
    assert sorted(names) == names


@pytest.mark.parametrize("step", [-1, 1.5, "3", True, None])
def test_bad_step_is_refused_by_name(step):
    with pytest.raises(InvalidRequest, match="step"):
        checkpoint_dirname(step)


@given(st.integers(min_value=0, max_value=10**12))
def test_dirname_round_trips(step):
    assert parse_checkpoint_dirname(checkpoint_dirname(step)) == step
    assert parse_checkpoint_dirname(f"bucket/run/{checkpoint_dirname(step)}/") == step


@pytest.mark.parametrize(
    "name",
    [
        "checkpoint_12",
        "checkpoint_000000012.tmp",
        "ckpt_000000012",
        "checkpoint_-00000012",
        "checkpoint_0000000012",
        "MANIFEST.json",
        "",
    ],
)
def test_other_names_are_not_checkpoints(name):
    assert parse_checkpoint_dirname(name) is None


@pytest.mark.parametrize("name", ["model.pt", "optim/shard-0.pt", ".metadata", "a/b/c"])
def test_good_file_names(name):
    assert check_file_name(name) == name


@pytest.mark.parametrize("name", ["", "/abs", "a//b", "../up", "a/./b", "a/", "win\\path", "MANIFEST.json", 3])
def test_bad_file_names(name):
    with pytest.raises(InvalidRequest):
        check_file_name(name)


@pytest.mark.parametrize("value", [0, -2, 1.0, "3", True])
def test_bad_keep_names_the_setting(value):
    with pytest.raises(InvalidRequest, match="keep_last="):
        check_keep("keep_last", value)


def test_keep_none_means_all():
    assert check_keep("keep_last", None) is None
    assert check_keep("keep_last", 1) == 1


# ---------------------------------------------------------------------- manifest


def _manifest(*files: tuple[str, int]) -> Manifest:
    return Manifest(7, tuple(FileEntry(name, size, "ab" * 32) for name, size in files), created=1.5)


def test_manifest_round_trips():
    manifest = _manifest(("model.pt", 10), ("optim/0.pt", 0))
    assert Manifest.from_json(manifest.to_json()) == manifest
    assert manifest.total_bytes == 10


def test_golden_manifest_stays_readable():
    golden = b'{"format": 1, "step": 3, "created": 2.0, "files": [{"name": "m.pt", "size": 4, "blake3": null}]}'
    assert Manifest.from_json(golden) == Manifest(3, (FileEntry("m.pt", 4, None),), 2.0)


def test_torn_manifest_is_corrupt():
    data = _manifest(("model.pt", 10)).to_json()
    for cut in range(len(data)):
        with pytest.raises(CheckpointCorrupt):
            Manifest.from_json(data[:cut])


@pytest.mark.parametrize(
    "doc",
    [
        {"format": MANIFEST_FORMAT + 1, "step": 1, "files": []},
        {"format": MANIFEST_FORMAT, "files": []},
        {"format": MANIFEST_FORMAT, "step": 1, "files": [{"name": "../x", "size": 1}]},
        {"format": MANIFEST_FORMAT, "step": 1, "files": [{"size": 1}]},
        [1, 2],
    ],
)
def test_malformed_manifests_are_corrupt(doc):
    with pytest.raises(CheckpointCorrupt, match="where-it-was"):
        Manifest.from_json(json.dumps(doc).encode(), where="where-it-was")


def test_problems_name_missing_and_resized_files():
    manifest = _manifest(("a", 1), ("b", 2), ("c", 3))
    assert manifest_problems(manifest, {"a": 1, "b": 2, "c": 3, "extra": 9}) == []
    problems = manifest_problems(manifest, {"a": 1, "c": 4})
    assert problems == ["b: missing", "c: 4 bytes, the manifest says 3"]


def test_entry_mismatch_checks_size_then_digest():
    entry = FileEntry("a", 3, "00" * 32)
    assert entry.mismatch(FileEntry("a", 3, "00" * 32)) is None
    assert entry.mismatch(FileEntry("a", 3, None)) is None  # nothing to compare
    assert "bytes" in entry.mismatch(FileEntry("a", 4, "00" * 32))
    assert "blake3" in entry.mismatch(FileEntry("a", 3, "11" * 32))


# ---------------------------------------------------------------------- retention


def test_keeps_the_newest_complete():
    plan = plan_retention([1, 2, 3, 4, 5], [], keep_last=2)
    assert plan.keep == (4, 5) and plan.delete == (1, 2, 3) and plan.deferred == ()


def test_incomplete_older_than_newest_complete_is_garbage_newer_is_kept():
    plan = plan_retention([2, 4], [1, 3, 5], keep_last=5)
    assert plan.delete == (1, 3)
    assert plan.keep == (2, 4, 5)


def test_without_a_complete_checkpoint_nothing_is_deleted():
    assert plan_retention([], [1, 2], keep_last=1).delete == ()


def test_busy_steps_are_deferred_not_deleted():
    plan = plan_retention([1, 2, 3, 4], [0], keep_last=1, busy={1, 0, 4})
    assert plan.delete == (2, 3)
    assert plan.deferred == (0, 1)
    assert 4 in plan.keep


def test_keep_all():
    assert plan_retention([1, 2, 3], [], keep_last=None).delete == ()


def test_bad_keep_last_is_refused():
    with pytest.raises(InvalidRequest, match="keep_last=0"):
        plan_retention([1], [], keep_last=0)


@given(st.sets(st.integers(0, 50)), st.sets(st.integers(0, 50)), st.integers(1, 6), st.sets(st.integers(0, 50)))
def test_retention_properties(complete, incomplete, keep_last, busy):
    plan = plan_retention(complete, incomplete, keep_last=keep_last, busy=busy)
    everything = complete | incomplete
    assert sorted(plan.keep + plan.delete + plan.deferred) == sorted(everything)  # a partition
    assert not set(plan.delete) & busy
    newest_complete = set(sorted(complete, reverse=True)[:keep_last])
    assert {s for s in plan.keep if s in complete} == newest_complete  # exactly the newest complete stay


# ---------------------------------------------------------------------- durable cadence


def test_every_kth_save_is_durable():
    assert [n for n in range(1, 10) if is_durable_save(n, 3)] == [3, 6, 9]
    assert all(is_durable_save(n, 1) for n in range(1, 5))
    assert not is_durable_save(4, None)
