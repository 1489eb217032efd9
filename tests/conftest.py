"""Shared fixtures: a real local cluster of agent processes in a temporary directory.

Every cluster is torn down with SIGKILL-safe cleanup, even when a test fails,
and clients close their sockets with linger 0.

The test extras are required, not optional: a session without Ray, torch or the ISA-L codec
fails at once and says what to install, instead of skipping the tests that need them.
"""

from __future__ import annotations

import os

# Ray reads these when it is first imported, which may be while any test module is collected (some
# import ray_integration): every Ray process stays on loopback (Ray's single-machine setting makes it
# pick 127.0.0.1 as each node's address), and reports no usage. See tests/ray/conftest.py.
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import importlib.util
from contextlib import ExitStack
from pathlib import Path

import pytest
from hypothesis import settings

import ec
from hcstore.cluster.local import LocalCluster
from integration_support import started_cluster

# No per-example deadline: the unit tests run beside the fleet tests, and time is not what they check.
settings.register_profile("hcstore", deadline=None)
settings.load_profile("hcstore")

INSTALL_TEST_EXTRAS = "install the test extras: pip install -e '.[test,isal]'"


def missing_test_extras() -> list[str]:
    """What the suite needs and this environment lacks (Ray, torch, pyeclib with ISA-L)."""
    missing = [name for name in ("ray", "torch") if importlib.util.find_spec(name) is None]
    if "isal" not in ec.available_codecs():
        missing.append("pyeclib with a working ISA-L backend")
    return missing


def pytest_sessionstart(session: pytest.Session) -> None:
    """Fail the session before any test runs when a test extra is missing."""
    missing = missing_test_extras()
    if missing:
        raise pytest.UsageError(f"{', '.join(missing)} not installed; {INSTALL_TEST_EXTRAS}")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test under tests/ray ``ray`` (the Ray examples are marked where they are listed)."""
    ray_tests = Path(__file__).resolve().parent / "ray"
    for item in items:
        if item.path.resolve().is_relative_to(ray_tests):
            item.add_marker(pytest.mark.ray)


@pytest.fixture
def make_cluster(tmp_path_factory):
    """Factory: ``make_cluster(agents=6, ec="4+2", **options)`` -> a started LocalCluster."""
    with ExitStack() as clusters:

        def factory(agents: int = 6, ec: str = "4+2", **options) -> LocalCluster:
            path = tmp_path_factory.mktemp("cluster") / "c"
            return clusters.enter_context(started_cluster(path, agents=agents, ec=ec, **options))

        yield factory


@pytest.fixture
def cluster(make_cluster) -> LocalCluster:
    """A started cluster of 6 agents, EC 4+2, 2 mountpaths each."""
    return make_cluster()


@pytest.fixture
def client(cluster):
    with cluster.client(request_timeout=5.0) as c:
        yield c
