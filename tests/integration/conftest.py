"""Module-scoped clusters for integration modules whose tests do not damage the cluster.

Tests that kill, pause or fill agents use the function-scoped ``make_cluster``
from ``tests/conftest.py`` instead, so that one test's damage never leaks into
another's.
"""

from __future__ import annotations

import pytest

from integration_support import CHUNK, started_cluster


@pytest.fixture(scope="module")
def shared_cluster(tmp_path_factory):
    """Six agents, EC 4+2, two mountpaths each, shared by the tests of one module."""
    with started_cluster(tmp_path_factory.mktemp("shared") / "c") as cluster:
        yield cluster


@pytest.fixture(scope="module")
def shared_client(shared_cluster):
    with shared_cluster.client(chunk_size=CHUNK, request_timeout=5.0) as client:
        yield client
