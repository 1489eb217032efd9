"""Stored Python values against a real local cluster: a crafted pickle never runs; a signed one reads back.

Anyone who can put an object sets its metadata, so an object that says ``hcstore.type=pickle``
proves nothing. The Ray value paths (``HCStore.put``/``get``, ``write_value``/``read_value``)
are exercised here without starting Ray: the handle makes a plain client of the controller.
"""

from __future__ import annotations

import os
import pickle
import stat
import threading
from pathlib import Path

import pytest

from hcstore.config import ControllerConfig
from hcstore.control.client import ControllerClient
from hcstore.control.controller import Controller
from hcstore.errors import InvalidRequest, UnsupportedValue, UntrustedValue
from integration_support import key_env
from ray_integration.handle import HCStore
from ray_integration.objects import read_value, write_value
from ray_integration.values import MAC_KEY, TYPE_KEY

BUCKET = "values"


class MakesAFile:
    """A pickle that, once loaded, has created ``path``: the proof that it ran."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def test_the_local_cluster_secret_is_private_and_served_by_the_controller(shared_cluster, shared_client):
    path = shared_cluster.secret_file
    assert shared_cluster.controller_config().secret_file == str(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600 and stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700
    secret = shared_client.cluster_secret()
    assert secret == path.read_bytes() and len(secret) == 32
    assert shared_client.cluster_secret() is secret  # asked once, kept
    assert secret not in pickle.dumps(shared_client)  # a pickled client carries no secret


@pytest.fixture
def cluster_keys(shared_cluster, monkeypatch):
    """The shared cluster's admin key in HCSTORE_KEY: an HCStore handle reaches it by endpoint."""
    for name, value in key_env(shared_cluster).items():
        monkeypatch.setenv(name, value)


def test_a_crafted_pickle_put_through_the_plain_client_never_runs(shared_client, tmp_path, cluster_keys):
    marker = tmp_path / "ran"
    payload = pickle.dumps(MakesAFile(marker), protocol=5)
    assert not marker.exists()
    shared_client.put(BUCKET, "crafted", payload, meta={TYPE_KEY: "pickle"})
    shared_client.put(BUCKET, "forged", payload, meta={TYPE_KEY: "pickle", MAC_KEY: "ab" * 32})
    store = HCStore(shared_client.source.controller_endpoint(), BUCKET)

    with pytest.raises(UntrustedValue, match=r"hcstore://values/crafted .*allow_pickle=True"):
        store.get("crafted")
    with pytest.raises(UntrustedValue, match="no MAC"):
        store.get("crafted", allow_pickle=True)
    with pytest.raises(UntrustedValue, match="does not verify"):
        store.get("forged", allow_pickle=True)
    with pytest.raises(UntrustedValue, match="no MAC"):
        read_value(shared_client, BUCKET, "crafted", allow_pickle=True)
    assert not marker.exists()
    assert shared_client.get(BUCKET, "crafted") == payload  # the bytes stay readable as bytes


def test_a_value_signed_by_the_ray_put_path_reads_back_only_with_allow_pickle(shared_client, tmp_path, cluster_keys):
    store = HCStore(shared_client.source.controller_endpoint(), BUCKET)
    value = {"epoch": 3, "loss": [0.5, 0.25], "name": "run-1"}
    with pytest.raises(UnsupportedValue, match="allow_pickle=True"):
        store.put("signed", value)
    store.put("signed", value, allow_pickle=True)
    assert store.get("signed", allow_pickle=True) == value
    with pytest.raises(UntrustedValue, match="allow_pickle=True"):
        store.get("signed")

    # the signed bytes and metadata copied to another key do not verify there
    version = shared_client.resolve(BUCKET, "signed")
    shared_client.put(BUCKET, "replayed", shared_client.get(BUCKET, "signed"), meta=dict(version.meta))
    with pytest.raises(UntrustedValue, match="does not verify"):
        store.get("replayed", allow_pickle=True)

    # a signed pickle of the marker runs: the control that shows the refusals above were the MAC's
    marker = tmp_path / "ran"
    write_value(shared_client, BUCKET, "signed-marker", MakesAFile(marker), allow_pickle=True)
    read_value(shared_client, BUCKET, "signed-marker", allow_pickle=True).close()
    assert marker.exists()


def test_a_controller_without_a_secret_says_so():
    served = Controller(ControllerConfig(metrics_port=-1, insecure=True))
    thread = threading.Thread(target=served.serve, daemon=True)
    thread.start()
    try:
        with ControllerClient(served.endpoint, timeout=5.0) as client:
            with pytest.raises(InvalidRequest, match="no cluster secret"):
                client.cluster_secret()
    finally:
        served.stop()
        thread.join(timeout=10)
