"""hcstore on a real multi-node Ray cluster: deployment, object refs from every node, Ray Data, node loss."""

from __future__ import annotations

import os
import pickle
import re
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest
import ray
from prometheus_client.parser import text_string_to_metric_families

import ray_integration
from hcstore.control.client import ControllerClient
from hcstore.errors import ObjectNotFound, UnsupportedValue, UntrustedValue
from integration_support import wait_until
from ray_integration.layout import AGENT_PREFIX, NAMESPACE, node_id_for
from ray_integration.lookup import credentials as deployment_credentials


def alive_nodes() -> list[str]:
    return sorted(n["NodeID"] for n in ray.nodes() if n["Alive"])


def agent_actor_names() -> list[str]:
    return sorted(
        a["name"]
        for a in ray.util.list_named_actors(all_namespaces=True)
        if a["namespace"] == NAMESPACE and a["name"].startswith(AGENT_PREFIX)
    )


@ray.remote(num_cpus=0)
def read_on_node(store, key):
    """Runs pinned to a node: reads through get_ref and reports where the value was served."""
    ref = store.get_ref(key)
    value = ray.get(ref)
    deadline = time.monotonic() + 10  # the owner learns an object's locations asynchronously: wait for the first
    while not (locations := ray.experimental.get_object_locations([ref])[ref]["node_ids"]):
        if time.monotonic() > deadline:
            break
        time.sleep(0.05)
    here = ray.get_runtime_context().get_node_id()
    return here, locations, value


def on_node(node_id):
    return read_on_node.options(label_selector={"ray.io/node-id": node_id})


def test_one_agent_per_node_pinned_to_it(store):
    status = ray_integration.status()
    nodes = alive_nodes()
    assert sorted(status["agents"]) == nodes and all(status["agents"].values())
    assert agent_actor_names() == sorted(AGENT_PREFIX + n for n in nodes)
    infos = [ray.get(ray.get_actor(AGENT_PREFIX + n, namespace=NAMESPACE).info.remote()) for n in nodes]
    assert [i["ray_node_id"] for i in infos] == nodes  # each agent runs on its own node
    assert len({i["endpoint"] for i in infos}) == len(nodes)
    assert all(i["endpoint"].startswith("tcp://127.0.0.1:") for i in infos)
    mountpaths = [p for i in infos for p in i["mountpaths"]]
    assert len(set(mountpaths)) == 2 * len(nodes)  # nobody shares a directory
    in_map = {n["id"]: n["state"] for n in status["map"]["nodes"]}
    assert in_map == {node_id_for(n): "alive" for n in nodes}


def test_every_agent_actor_and_the_controller_serve_the_metrics_endpoint(store):
    status = ray_integration.status()
    assert status["metrics"].startswith("http://127.0.0.1:")
    assert 'role="controller"' in urllib.request.urlopen(status["metrics"], timeout=10).read().decode()
    for node in alive_nodes():
        info = ray.get(ray.get_actor(AGENT_PREFIX + node, namespace=NAMESPACE).info.remote())
        assert info["metrics"].startswith("http://127.0.0.1:")
        text = urllib.request.urlopen(info["metrics"], timeout=10).read().decode()
        build = [
            s
            for family in text_string_to_metric_families(text)
            for s in family.samples
            if s.name == "hcstore_build_info"
        ]
        assert [(s.labels["role"], s.labels["node"]) for s in build] == [("agent", node_id_for(node))]
        ready = urllib.request.urlopen(info["metrics"].removesuffix("/metrics") + "/readyz", timeout=10)
        assert ready.status == 200


def test_deploying_twice_attaches(store):
    again = ray_integration.deploy(ec="2+1", timeout=60)
    assert again.controller == store.controller
    assert len(agent_actor_names()) == len(alive_nodes())
    assert ray_integration.attach().controller == store.controller


def test_get_ref_from_every_node_is_served_there_as_a_zero_copy_array(store):
    array = np.random.default_rng(7).standard_normal((512, 300)).astype(np.float32)
    store.put("arrays/a", array)
    for node in alive_nodes():
        here, locations, value = ray.get(on_node(node).remote(store, "arrays/a"))
        assert here == node
        assert locations == [node]  # assembled by this node's agent, in this node's store
        assert isinstance(value, np.ndarray) and value.dtype == np.float32 and value.shape == (512, 300)
        assert np.array_equal(value, array)
        assert not value.flags.writeable  # a view into the object store, not a copy


def test_put_and_get_bytes_objects_and_refs(store):
    store.put("raw/b", b"\x00hello" * 50_000)
    with pytest.raises(UnsupportedValue, match="allow_pickle=True"):
        store.put("py/obj", {"step": 3})  # pickle only when asked for
    store.put("py/obj", {"step": 3, "loss": [0.5, 0.25]}, allow_pickle=True)  # pickled, signed
    ref = ray.put(np.arange(100_000, dtype=np.int64))
    store.put("from-ref", ref)  # an ObjectRef's value is stored, not the ref
    assert store.get("raw/b") == b"\x00hello" * 50_000
    assert store.get("py/obj", allow_pickle=True) == {"step": 3, "loss": [0.5, 0.25]}
    assert ray.get(store.get_ref("py/obj", allow_pickle=True)) == {"step": 3, "loss": [0.5, 0.25]}
    with pytest.raises(UntrustedValue, match="allow_pickle=True"):
        store.get("py/obj")
    with pytest.raises(UntrustedValue, match="allow_pickle=True"):
        ray.get(store.get_ref("py/obj"))
    assert np.array_equal(ray.get(store.get_ref("from-ref")), np.arange(100_000, dtype=np.int64))
    assert [i.key for i in store.list("raw/")] == ["raw/b"]


def test_handle_pickles_small_and_works_in_a_task(store):
    assert len(pickle.dumps(store)) < 200

    @ray.remote(num_cpus=0)
    def writer(s, i):
        s.put(f"tasks/{i}", np.full(1000, i, dtype=np.int16))
        return i

    ray.get([writer.remote(store, i) for i in range(6)])
    for i in range(6):
        assert np.array_equal(store.get(f"tasks/{i}"), np.full(1000, i, dtype=np.int16))


def test_missing_key_is_a_clear_error_from_ray_get(store):
    with pytest.raises(ObjectNotFound, match="no-such-key"):
        ray.get(store.get_ref("no-such-key"))
    with pytest.raises(ObjectNotFound):
        store.get("no-such-key")


def test_ray_data_round_trip(store):
    rows = [{"key": f"{i:03d}", "bytes": bytes([i]) * (1000 + i)} for i in range(40)]
    ray.data.from_items(rows).repartition(4).write_datasink(ray_integration.HCStoreDatasink(store, "data/"))
    assert len(store.list("data/")) == 40
    back = ray_integration.read_hcstore(store, "data/").take_all()
    assert sorted((r["key"], r["bytes"]) for r in back) == [(f"data/{r['key']}", r["bytes"]) for r in rows]
    sizes = ray_integration.read_hcstore(store, "data/", decoder=lambda key, data: {"n": len(data)})
    assert sorted(r["n"] for r in sizes.take_all()) == [1000 + i for i in range(40)]


def test_cli_attaches_reports_and_serves_object_verbs(ray_cluster, store, tmp_path):
    store.put("cli/x", b"through the CLI")
    hcstore = [sys.executable, "-m", "hcstore.tools.cli"]
    deploy = subprocess.run(
        [*hcstore, "ray", "deploy", "--address", ray_cluster.address, "--ec", "2+1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert deploy.returncode == 0, deploy.stderr
    assert store.controller in deploy.stdout
    status = subprocess.run(
        [*hcstore, "ray", "status", "--address", ray_cluster.address], capture_output=True, text=True, timeout=120
    )
    assert status.returncode == 0, status.stderr
    assert all(node_id_for(n) in status.stdout for n in alive_nodes())
    keys = dict(re.findall(r"(HCSTORE_(?:CONTROLLER_)?KEY)=(\S+)", deploy.stdout))  # as deploy says to
    assert set(keys) == {"HCSTORE_KEY", "HCSTORE_CONTROLLER_KEY"}, deploy.stdout
    got = subprocess.run(
        [*hcstore, "--cluster", store.controller, "get", "hcstore://ray/cli/x", "-"],
        capture_output=True,
        timeout=60,
        env={**os.environ, **keys},
    )
    assert got.returncode == 0 and got.stdout == b"through the CLI", got.stderr
    anonymous = subprocess.run([*hcstore, "--cluster", store.controller, "ls"], capture_output=True, timeout=60)
    assert anonymous.returncode == 1 and b"E_AUTH" in anonymous.stderr  # no key: refused, and told why


def test_a_joining_node_gets_an_agent(ray_cluster, store):
    before = set(alive_nodes())
    ray_cluster.add_node(num_cpus=1)
    new = wait_until(lambda: set(alive_nodes()) - before, timeout=60, interval=0.25, what="the new Ray node")
    (node,) = new
    wait_until(
        lambda: ray_integration.status()["agents"].get(node), timeout=90, interval=0.25, what="an agent on the new node"
    )
    wait_until(
        lambda: any(
            n["id"] == node_id_for(node) and n["state"] == "alive" for n in ray_integration.status()["map"]["nodes"]
        ),
        timeout=30,
        interval=0.25,
        what="the new node alive in the map",
    )
    assert len(agent_actor_names()) == len(alive_nodes())


def test_node_killed_without_warning_reads_keep_working(ray_cluster, store):
    before = set(alive_nodes())
    victim_handle = ray_cluster.add_node(num_cpus=1)
    (victim,) = wait_until(lambda: set(alive_nodes()) - before, timeout=60, interval=0.25, what="the victim node")
    wait_until(
        lambda: any(
            n["id"] == node_id_for(victim) and n["state"] == "alive" for n in ray_integration.status()["map"]["nodes"]
        ),
        timeout=90,
        interval=0.25,
        what="the victim's agent in the map",
    )
    arrays = {f"survive/{i}": np.random.default_rng(i).integers(0, 255, 200_000, dtype=np.uint8) for i in range(12)}
    for key, array in arrays.items():
        store.put(key, array)

    ray_cluster.remove_node(victim_handle, allow_graceful=False)  # raylet and workers SIGKILLed

    wait_until(
        lambda: any(
            n["id"] == node_id_for(victim) and n["state"] in ("down", "out")
            for n in ray_integration.status()["map"]["nodes"]
        ),
        timeout=30,
        interval=0.25,
        what="the victim marked down",
    )
    wait_until(
        lambda: victim not in ray_integration.status()["agents"],
        timeout=90,
        interval=0.5,
        what="Ray to report the node dead and the controller to drop its agent",
    )
    for node in alive_nodes():
        for key, array in arrays.items():
            _, _, value = ray.get(on_node(node).remote(store, key))
            assert np.array_equal(value, array), f"{key} read on {node}"
    # The machine is gone for good: the operator removes it, so that it stops counting as a node
    # that might hold newer data (the tests after this one share the cluster).
    admin, controller_key = deployment_credentials("admin")
    with ControllerClient(store.controller, timeout=10.0, credentials=admin, server_key=controller_key) as controller:
        controller.remove(node_id_for(victim), force=True)
