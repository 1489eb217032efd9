"""A client learns of a newer cluster map from the epoch its agents' replies carry, without ``refresh()``;
agents learn it from their heartbeats, as the changes since the map they hold.

The client's periodic re-check is pushed out of reach, so the only way the new map can arrive is the
epoch in a reply. When a node drains or joins, the controller's epoch rises, the agents learn it from
their heartbeats, the client's next request brings it back, and its next put is placed by the new map.
"""

from __future__ import annotations

import json

import pytest

from hcstore.control.membership import Intervals
from integration_support import (
    CHUNK,
    agent_urls,
    controller_request,
    key_placed_on,
    seeded_bytes,
    value,
    wait_until,
)
from placement import ClusterMap, place

BUCKET = "epochs"
QUICK = Intervals(heartbeat=0.2, suspect_after=30.0, down_after=60.0, out_after=600.0)


@pytest.fixture
def no_periodic_recheck(monkeypatch):
    monkeypatch.setattr("hcstore.client.client._MAP_RECHECK", 3600.0)


def controller_map(cluster) -> ClusterMap:
    return ClusterMap.from_dict(controller_request(cluster, "get_map")["map"])


def learns_epoch(client, epoch: int) -> bool:
    """Make one request to an agent, then report whether the client's map has reached ``epoch``."""
    client.exists(BUCKET, "probe")
    return client.cluster_map.epoch >= epoch


@pytest.mark.usefixtures("no_periodic_recheck")
def test_a_drain_reaches_the_client_through_an_agent_reply(make_cluster):
    cluster = make_cluster(agents=7, intervals=QUICK, scan_interval=600.0)
    with cluster.client(chunk_size=CHUNK, request_timeout=5.0) as client:
        client.put(BUCKET, "probe", b"p" * 1000)
        old = client.cluster_map
        victim = "n4"
        key = key_placed_on(old, BUCKET, victim, 4, 2, "drained")
        controller_request(cluster, "node_admin", node=victim, action="drain")
        new = controller_map(cluster)
        assert new.epoch > old.epoch and new.node(victim).state == "draining"
        assert client.cluster_map.epoch == old.epoch  # nobody told the client

        wait_until(
            lambda: learns_epoch(client, new.epoch),
            timeout=20,
            interval=0.1,
            what="the client to take the epoch from an agent's reply",
        )
        assert client.cluster_map.node(victim).state == "draining"
        data = seeded_bytes(key, 100_000)
        result = client.put(BUCKET, key, data)
        assert victim not in result.fragments
        assert result.fragments == place(f"{BUCKET}/{key}", new, 4, 2).nodes
        assert client.get(BUCKET, key) == data


@pytest.mark.usefixtures("no_periodic_recheck")
def test_a_join_reaches_the_client_through_an_agent_reply(make_cluster):
    cluster = make_cluster(agents=6, intervals=QUICK, scan_interval=600.0)
    with cluster.client(chunk_size=CHUNK, request_timeout=5.0) as client:
        client.put(BUCKET, "probe", b"p" * 1000)
        old = client.cluster_map
        newcomer = cluster.add_agent()
        new = controller_map(cluster)
        assert new.epoch > old.epoch and newcomer in new and newcomer not in old
        assert newcomer not in client.cluster_map

        wait_until(
            lambda: learns_epoch(client, new.epoch),
            timeout=20,
            interval=0.1,
            what="the client to take the epoch from an agent's reply",
        )
        assert newcomer in client.cluster_map
        key = key_placed_on(client.cluster_map, BUCKET, newcomer, 4, 2, "joined")
        data = seeded_bytes(key, 100_000)
        result = client.put(BUCKET, key, data)
        assert newcomer in result.fragments
        assert result.fragments == place(f"{BUCKET}/{key}", client.cluster_map, 4, 2).nodes
        assert client.get(BUCKET, key) == data


def test_agents_take_changes_as_deltas_and_a_map_that_differs_whole(make_cluster):
    cluster = make_cluster(agents=4, ec="2+1", intervals=QUICK, scan_interval=600.0)
    start = controller_map(cluster)
    wait_until(lambda: served_epochs(cluster) == {start.epoch}, timeout=20, what="every agent on the first map")
    controller_request(cluster, "node_admin", node="n2", action="drain")
    drained = controller_map(cluster)
    wait_until(lambda: served_epochs(cluster) == {drained.epoch}, timeout=20, what="every agent on the drain")
    controller_request(cluster, "node_admin", node="n2", action="resume")
    resumed = controller_map(cluster)
    wait_until(lambda: served_epochs(cluster) == {resumed.epoch}, timeout=20, what="every agent on the resume")
    for node, url in agent_urls(cluster).items():
        assert value(url, "hcstore_maps_received_total", form="delta") >= 2, node  # the drain, the resume
        assert value(url, "hcstore_maps_received_total", form="delta_mismatch") == 0, node

    # An agent restarts with a map of an epoch the controller published, but not the controller's map of it
    # (as after a controller that lost its state reused an epoch): the changes since it would give a wrong
    # map, the digest says so, and the agent takes the whole map instead.
    agent = cluster.agent("n3")
    cluster.stop("n3")
    forged = drained.to_dict()
    forged["nodes"] = [{**n, "endpoint": "tcp://127.0.0.1:1"} if n["id"] == "n1" else n for n in forged["nodes"]]
    (agent.directory / "cluster-map.json").write_text(json.dumps(forged))
    cluster.start("n3")
    url = agent_urls(cluster)["n3"]
    wait_until(
        lambda: value(url, "hcstore_maps_received_total", form="whole") >= 1,
        timeout=20,
        what="n3 to ask for the whole map",
    )
    assert value(url, "hcstore_maps_received_total", form="delta_mismatch") == 1
    assert controller_map(cluster).epoch == resumed.epoch  # the restart changed nothing in the map
    wait_until(
        lambda: ClusterMap.from_dict(json.loads((agent.directory / "cluster-map.json").read_text())) == resumed,
        timeout=20,
        what="n3 to hold and persist the controller's map",
    )


def served_epochs(cluster) -> set[float]:
    """The map epoch each running agent serves by, from its metrics."""
    return {value(url, "hcstore_map_epoch") for url in agent_urls(cluster).values()}
