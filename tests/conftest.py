"""Shared fixtures: a real local cluster of agent processes in a temporary directory.

Every cluster is torn down with SIGKILL-safe cleanup, even when a test fails,
and clients close their sockets with linger 0.
"""

from __future__ import annotations

from contextlib import ExitStack

import pytest
from integration_support import started_cluster

from hcstore.cluster.local import LocalCluster


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
