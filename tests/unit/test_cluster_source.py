"""How a cluster is found (``ClusterSource``), the retry policy's rule, and the error codes."""

from __future__ import annotations

import json
import pickle

import pytest

from hcstore.client.retry import RetryPolicy
from hcstore.cluster import source as source_module
from hcstore.cluster.source import ClusterSource, point_at, unpoint
from hcstore.errors import (
    AgentUnavailable,
    ClusterNotFound,
    ControllerUnavailable,
    HCStoreError,
    InvalidRequest,
    LocalFileError,
    NotEnoughFragments,
    NotEnoughNodes,
    ObjectChanged,
    ObjectNotFound,
    Retryable,
    Timeout,
    error_codes,
    error_for_code,
)


@pytest.fixture
def nowhere(monkeypatch, tmp_path):
    """No cluster named anywhere: no HCSTORE_CLUSTER, and the pointer in an empty home."""
    monkeypatch.delenv("HCSTORE_CLUSTER", raising=False)
    monkeypatch.setattr(source_module, "POINTER", tmp_path / "home" / ".hcstore" / "current")
    return tmp_path


def _cluster_dir(path, *, ec="2+1", controller=""):
    path.mkdir(parents=True)
    (path / "cluster.json").write_text(json.dumps({"epoch": 3, "ec": ec, "nodes": [{"id": "n1"}, {"id": "n2"}]}))
    (path / "agents" / "n1").mkdir(parents=True)
    (path / "agents" / "n1" / "agent.json").write_text(json.dumps({"endpoint": "tcp://127.0.0.1:7001", "pid": 1}))
    if controller:
        (path / "controller.json").write_text(json.dumps({"endpoint": controller, "pid": 1}))
    return path


def test_nothing_named_says_what_was_tried(nowhere):
    with pytest.raises(ClusterNotFound, match="no --cluster argument, HCSTORE_CLUSTER is not set") as caught:
        ClusterSource.find()
    assert str(source_module.POINTER) in str(caught.value) and "hcstore up" in str(caught.value)


def test_an_argument_beats_the_environment_which_beats_the_pointer(nowhere, monkeypatch):
    first, second, third = (_cluster_dir(nowhere / name) for name in ("a", "b", "c"))
    point_at(third)
    pointed = ClusterSource.find()
    assert pointed.location == str(third.resolve()) and "pointer" in pointed.origin
    monkeypatch.setenv("HCSTORE_CLUSTER", str(second))
    assert (ClusterSource.find().location, ClusterSource.find().origin) == (str(second.resolve()), "HCSTORE_CLUSTER")
    assert ClusterSource.find(first).location == str(first.resolve())
    unpoint(third)
    assert not source_module.POINTER.exists()


def test_a_directory_without_a_cluster_is_named_in_the_error(nowhere, monkeypatch):
    monkeypatch.setenv("HCSTORE_CLUSTER", str(nowhere / "empty"))
    with pytest.raises(ClusterNotFound, match=r"empty \(named by HCSTORE_CLUSTER\) does not exist"):
        ClusterSource.find()
    (nowhere / "empty").mkdir()
    with pytest.raises(ClusterNotFound, match="holds no hcstore cluster"):
        ClusterSource.find()


@pytest.mark.parametrize(
    "bad",
    [
        "tcp://127.0.0.1",
        "tcp://:7480",
        "tcp://host:0",
        "tcp://host:70000",
        "tcp://host:port",
        "http://host:80",
        "tcp://a b:1",
    ],
)
def test_malformed_endpoints_are_invalid_requests(nowhere, bad):
    with pytest.raises(InvalidRequest, match="tcp://HOST:PORT"):
        ClusterSource.find(bad)


def test_a_local_cluster_answers_from_its_files(nowhere):
    path = _cluster_dir(nowhere / "c")
    source = ClusterSource.find(path)
    assert source.is_local and source.directory == path.resolve()
    assert source.default_ec() == "2+1"
    assert source.controller_endpoint() == ""
    with pytest.raises(ControllerUnavailable, match="not running: start the cluster with `hcstore up"):
        source.require_controller()
    cluster_map = source.cluster_map()  # no controller: the directory's files
    assert cluster_map.epoch == 3
    assert [(n.id, n.state) for n in cluster_map.nodes] == [("n1", "alive"), ("n2", "down")]
    assert pickle.loads(pickle.dumps(source)) == source


def test_an_endpoint_is_a_controller_and_not_a_directory(nowhere, monkeypatch):
    monkeypatch.setenv("HCSTORE_CLUSTER", "tcp://127.0.0.1:7480")
    source = ClusterSource.find()
    assert not source.is_local and source.directory is None
    assert source.controller_endpoint() == source.require_controller() == "tcp://127.0.0.1:7480"
    assert source.map_stamp() == ()
    with pytest.raises(InvalidRequest, match="`hcstore down` works on a local cluster directory"):
        source.require_local("`hcstore down`")
    assert pickle.loads(pickle.dumps(source)) == source


def test_the_retry_rule():
    policy = RetryPolicy(attempts=3, backoff=0.05, max_backoff=0.08)
    assert [policy.delay(n) for n in (1, 2, 3)] == [0.05, 0.08, 0.08]
    for retryable in (AgentUnavailable("x"), ObjectChanged("x"), Timeout("x"), ControllerUnavailable("x")):
        assert policy.should_retry(retryable, map_was_stale=False)
    assert not policy.should_retry(ObjectChanged("x"), map_was_stale=True, final=(ObjectChanged,))
    for placement in (NotEnoughNodes("x"), NotEnoughFragments("x")):  # only with a newer map about
        assert policy.should_retry(placement, map_was_stale=True)
        assert not policy.should_retry(placement, map_was_stale=False)
    for final in (ObjectNotFound("x"), InvalidRequest("x"), HCStoreError("x")):
        assert not policy.should_retry(final, map_was_stale=True)
    with pytest.raises(InvalidRequest):
        RetryPolicy(attempts=0)


def test_error_codes_are_registered_once_with_built_in_bases():
    codes = error_codes()
    assert len(set(codes.values())) == len(codes)
    for code, cls in codes.items():
        assert type(error_for_code(code, "detail")) is cls and cls.code == code
    assert issubclass(Timeout, Retryable) and issubclass(Timeout, TimeoutError)
    assert issubclass(ControllerUnavailable, AgentUnavailable)
    assert issubclass(ClusterNotFound, FileNotFoundError) and issubclass(LocalFileError, OSError)
    assert {
        "E_TIMEOUT",
        "E_NO_CONTROLLER",
        "E_NO_NODE",
        "E_CLUSTER_EXISTS",
        "E_START_FAILED",
        "E_CODEC",
        "E_LOCAL_FILE",
        "E_NOT_INSTALLED",
    } <= set(codes)
