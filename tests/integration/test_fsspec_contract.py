"""fsspec's own contract suite (``fsspec.tests.abstract``) run against ``hcstore://`` on a real local cluster.

The suite supplies the tests; this module supplies the fixtures. hcstore, like
S3, has no empty directories (a directory is a key prefix), so
``supports_empty_directories`` is False and the suite puts a dummy file where
it needs a directory to exist. ``fs_path`` is a fresh prefix per test, in the
protocol-less form fsspec's listings return (``bucket/prefix``), because the
suite compares listings with paths it builds from it.

The suite makes thousands of small operations, each a round trip to every agent
(listings) or to every holder (puts, deletes), so it runs on three agents with
EC 2+1: half the requests of 4+2 on six, and the same filesystem semantics.
EC-specific behaviour (stripes, degraded reads) is tested in test_filesystem.py.
"""

from __future__ import annotations

import posixpath
import uuid

import pytest
from fsspec.tests.abstract import (
    AbstractCopyTests,
    AbstractFixtures,
    AbstractGetTests,
    AbstractOpenTests,
    AbstractPipeTests,
    AbstractPutTests,
)

from hcstore.filesystem import HCStoreFileSystem
from integration_support import CHUNK, started_cluster

BUCKET = "fsspec-contract"


@pytest.fixture(scope="module")
def contract_cluster(tmp_path_factory):
    with started_cluster(tmp_path_factory.mktemp("contract") / "c", agents=3, ec="2+1") as cluster:
        yield cluster


@pytest.fixture(scope="module")
def contract_fs(contract_cluster):
    fs = HCStoreFileSystem(str(contract_cluster.path), chunk_size=CHUNK, request_timeout=5.0, skip_instance_cache=True)
    yield fs
    fs.close()


class HCStoreFixtures(AbstractFixtures):
    """The fixtures fsspec's abstract tests need, on the module's three-agent cluster."""

    @pytest.fixture
    def fs(self, contract_fs):
        return contract_fs

    @pytest.fixture
    def fs_path(self):
        return f"{BUCKET}/{uuid.uuid4().hex[:12]}"

    @pytest.fixture
    def fs_join(self):
        return posixpath.join  # object paths use "/" on every platform

    @pytest.fixture
    def supports_empty_directories(self):
        return False


class TestHCStoreCopy(HCStoreFixtures, AbstractCopyTests):
    pass


class TestHCStoreGet(HCStoreFixtures, AbstractGetTests):
    pass


class TestHCStorePut(HCStoreFixtures, AbstractPutTests):
    pass


class TestHCStoreOpen(HCStoreFixtures, AbstractOpenTests):
    pass


class TestHCStorePipe(HCStoreFixtures, AbstractPipeTests):
    pass
