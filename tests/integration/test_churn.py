"""Churn: failure detection, repair after *out*, none for a short outage, rebalance on join,
drain and remove, scrub and quarantine, disk loss, and a controller restart.

Real agent and controller processes, with failure intervals shrunk from minutes to seconds.
"""

from __future__ import annotations

import shutil
import socket

import pytest

from hcstore import Client
from hcstore.control.membership import Intervals
from hcstore.errors import AuthenticationError, ClusterNotFound, InvalidRequest
from hcstore.node.repair_plan import protection_summary
from integration_support import CHUNK, flip_bytes, fragment_files_of, fully_protected, seeded_bytes, total, wait_until

BUCKET = "churn"
FAST = Intervals(heartbeat=0.2, suspect_after=0.6, down_after=1.0, out_after=3.0)
NO_OUT = Intervals(heartbeat=0.2, suspect_after=0.6, down_after=1.0, out_after=120.0)


def start(make_cluster, intervals=FAST, agents=7, **options):
    cluster = make_cluster(agents=agents, intervals=intervals, scan_interval=1.0, **options)
    client = cluster.client(chunk_size=CHUNK, request_timeout=5.0)
    objects = {f"obj/{i:02d}": seeded_bytes(i, 200_000 + 7919 * i) for i in range(12)}
    for key, data in objects.items():
        assert not client.put(BUCKET, key, data).degraded
    return cluster, client, objects


def stats(client):
    """Every node's last report, as the controller has it."""
    return client.controller().status().stats


def node_state(client, node_id):
    return client.refresh().node(node_id).state


def test_node_down_for_less_than_the_out_interval_causes_no_repair(make_cluster):
    cluster, client, objects = start(make_cluster, intervals=NO_OUT)
    victim = client.put(BUCKET, "probe", b"p" * 300_000).fragments[0]
    objects["probe"] = b"p" * 300_000
    # Whatever a busy machine made a put place elsewhere is moved home first: only repair after the kill counts.
    wait_until(lambda: fully_protected(client, BUCKET, objects), timeout=60, what="full protection before the kill")
    repaired_before = protection_summary(stats(client))["bytes_repaired"]
    files_before = {a.node_id: len(cluster.fragment_files(a.node_id)) for a in cluster.agents()}
    cluster.kill(victim)
    wait_until(lambda: node_state(client, victim) == "down", timeout=10, what=f"{victim} down")
    scans = stats(client)
    wait_until(
        lambda: all(
            (stats(client)[n].get("repair") or {}).get("scans", 0) > (scans[n].get("repair") or {}).get("scans", 0) + 1
            for n in files_before
            if n != victim
        ),
        timeout=20,
        what="two scans on every agent",
    )
    summary = protection_summary(stats(client))
    assert summary["bytes_repaired"] == repaired_before
    assert summary["degraded"] > 0  # the down node's fragments are missed, not rebuilt
    assert {a.node_id: len(cluster.fragment_files(a.node_id)) for a in cluster.agents()} == files_before
    for key, data in objects.items():  # served around by degraded reads meanwhile
        assert client.get(BUCKET, key) == data
    cluster.start(victim)  # it comes back with its fragments, and they count again
    client.refresh()
    wait_until(lambda: fully_protected(client, BUCKET, objects), timeout=20, what="full protection after return")
    assert protection_summary(stats(client))["bytes_repaired"] == repaired_before


def test_node_that_stays_out_is_repaired(make_cluster):
    cluster, client, objects = start(make_cluster)
    victim = client.resolve(BUCKET, "obj/00").found_at[0]
    cluster.kill(victim)
    wait_until(lambda: node_state(client, victim) == "out", timeout=15, what=f"{victim} out")
    wait_until(
        lambda: fully_protected(client, BUCKET, objects, excluding={victim}),
        timeout=40,
        what="every object rebuilt on the surviving nodes",
    )
    for key, data in objects.items():
        assert client.get(BUCKET, key) == data
    wait_until(
        lambda: protection_summary(stats(client))["bytes_repaired"] > 0,
        timeout=10,
        what="the rebuilt bytes to reach the controller's summary",
    )
    # The node returns after all: its stale copies are dropped, nothing is lost or duplicated.
    cluster.start(victim)
    client.refresh()
    wait_until(lambda: fully_protected(client, BUCKET, objects), timeout=30, what="protection after the node returned")
    for key, data in objects.items():
        assert client.get(BUCKET, key) == data


def test_join_rebalances_and_reads_succeed_throughout(make_cluster):
    cluster, client, objects = start(make_cluster, agents=6)
    newcomer = cluster.add_agent()
    client.refresh()
    for key, data in objects.items():  # reads work while fragments move
        assert client.get(BUCKET, key) == data
    wait_until(lambda: len(cluster.fragment_files(newcomer)) > 0, timeout=20, what="fragments on the new node")
    wait_until(lambda: fully_protected(client, BUCKET, objects), timeout=20, what="protection after the join")
    moved = len(cluster.fragment_files(newcomer))
    held = sum(len(cluster.fragment_files(a.node_id)) for a in cluster.agents())
    assert 0 < moved < held / 3  # about 1/N of the fragments, not a reshuffle
    # moved fragments are copied from their holders as they are: nothing was decoded or encoded
    assert total(cluster, "hcstore_repair_bytes_total", kind="rebalance") > 0
    assert total(cluster, "hcstore_ec_encoded_bytes_total") == total(cluster, "hcstore_ec_decoded_bytes_total") == 0
    for key, data in objects.items():
        assert client.get(BUCKET, key) == data


def test_drain_hands_everything_over_and_remove_is_guarded(make_cluster):
    cluster, client, objects = start(make_cluster)
    victim = client.resolve(BUCKET, "obj/01").found_at[0]
    with pytest.raises(InvalidRequest, match="drain"):
        client.controller().remove(victim)
    client.controller().drain(victim)
    wait_until(lambda: not cluster.fragment_files(victim), timeout=30, what=f"{victim} drained")
    wait_until(lambda: fully_protected(client, BUCKET, objects, excluding={victim}), timeout=20, what="protection")
    wait_until(
        lambda: stats(client)[victim]["data_fragments"] == 0,
        timeout=5,
        what="the controller to see the drained node empty",
    )
    client.controller().remove(victim)
    assert node_state(client, victim) == "decommissioned"
    new = client.put(BUCKET, "after-drain", b"x" * 200_000)
    assert victim not in new.fragments
    for key, data in objects.items():
        assert client.get(BUCKET, key) == data


def test_a_moved_fragment_found_corrupt_is_rebuilt_instead_of_copied(make_cluster):
    cluster, client, objects = start(make_cluster)
    version = client.resolve(BUCKET, "obj/03")
    victim, path = fragment_files_of(cluster, BUCKET, "obj/03", version.generation)[1]
    flip_bytes(path, 16 + 100)  # a chunk of the copy the drain would move no longer matches its digest
    client.controller().drain(victim)
    wait_until(lambda: not cluster.fragment_files(victim), timeout=30, what=f"{victim} drained")
    wait_until(lambda: fully_protected(client, BUCKET, objects, excluding={victim}), timeout=20, what="protection")
    assert total(cluster, "hcstore_ec_encoded_bytes_total") > 0  # that fragment was rebuilt from the others
    for key, data in objects.items():
        assert client.get(BUCKET, key) == data


def test_scrub_quarantines_a_corrupt_fragment_and_repair_rebuilds_it(make_cluster):
    cluster, client, objects = start(make_cluster)
    version = client.resolve(BUCKET, "obj/03")
    files = fragment_files_of(cluster, BUCKET, "obj/03", version.generation)
    node, path = files[1]
    flip_bytes(path, 16 + 100)
    client.transport.request(client.endpoint(node), "maintain", {"job": "scrub"})
    wait_until(lambda: not path.exists(), timeout=20, what="the corrupt fragment to be quarantined")
    assert list(path.parent.parent.parent.glob("quarantine/*"))
    wait_until(lambda: fully_protected(client, BUCKET, {"obj/03": b""}), timeout=20, what="the fragment rebuilt")
    assert client.get(BUCKET, "obj/03") == objects["obj/03"]


def test_lost_disk_is_rebuilt(make_cluster):
    cluster, client, objects = start(make_cluster, mountpaths_per_agent=2)
    node = client.resolve(BUCKET, "obj/04").found_at[0]
    agent = cluster.agent(node)
    cluster.stop(node)
    shutil.rmtree(agent.mountpaths[0])  # the SSD is replaced by an empty one
    cluster.start(node)
    client.refresh()
    wait_until(lambda: fully_protected(client, BUCKET, objects), timeout=30, what="protection after the disk loss")
    for key, data in objects.items():
        assert client.get(BUCKET, key) == data


def test_controller_restart_keeps_data_and_epoch_rising(make_cluster):
    cluster, client, objects = start(make_cluster, intervals=NO_OUT)
    epoch = client.controller().get_map().cluster_map.epoch
    cluster.stop_controller(sig=9)
    # The data path goes on with the cached map.
    client.put(BUCKET, "during-outage", b"d" * 150_000)
    for key, data in objects.items():
        assert client.get(BUCKET, key) == data
    cluster.start_controller()
    restarted = cluster.wait_for_map(
        lambda m: len(m.nodes) == 7 and all(n.state == "alive" for n in m.nodes), timeout=20
    )
    assert restarted.epoch > epoch
    client.refresh()
    assert client.cluster_map.epoch >= restarted.epoch
    assert client.get(BUCKET, "during-outage") == b"d" * 150_000


def test_io_errors_disable_a_mountpath_and_its_fragments_are_rebuilt(make_cluster):
    cluster, client, objects = start(make_cluster, mountpaths_per_agent=2)
    version = client.resolve(BUCKET, "obj/05")
    node, path = fragment_files_of(cluster, BUCKET, "obj/05", version.generation)[0]
    mountpath = path.parent.parent.parent
    frags = mountpath / "frags"
    frags.rename(mountpath / "frags.failed")  # the disk fails: every open under it now errors (ENOTDIR)
    frags.write_bytes(b"")
    for key, data in objects.items():  # reads go around the failed disk
        assert client.get(BUCKET, key) == data
    stats = client.node_stats()[node]
    failed = [mp for mp in stats["mountpaths"] if mp["path"] == str(mountpath)]
    assert failed and failed[0]["disabled"], stats["mountpaths"]
    wait_until(
        lambda: fully_protected(client, BUCKET, objects), timeout=30, what="fragments of the failed disk rebuilt"
    )
    for key, data in objects.items():
        assert client.get(BUCKET, key) == data


def test_a_client_reaches_the_cluster_through_its_controller_and_takes_its_ec(make_cluster):
    cluster = make_cluster(agents=4, ec="2+1", intervals=NO_OUT)
    keys = {
        "key": str(cluster.path / "keys" / "admin.key_secret"),
        "controller_key": str(cluster.path / "keys" / "controller.key"),
    }
    with Client(cluster.controller_endpoint(), chunk_size=CHUNK, request_timeout=5.0, **keys) as client:
        assert client.config.ec == "2+1"  # told by the controller, not the 4+2 default
        assert sorted(n.id for n in client.cluster_map.nodes) == ["n1", "n2", "n3", "n4"]
        data = seeded_bytes("via-controller", 3 * CHUNK + 5)
        client.put(BUCKET, "via/controller", data)
        assert client.get(BUCKET, "via/controller") == data
        assert (client.stat(BUCKET, "via/controller").k, client.stat(BUCKET, "via/controller").m) == (2, 1)
    with Client(cluster.controller_endpoint(), ec="1+1", **keys) as explicit:
        assert explicit.config.ec == "1+1"  # an explicit setting wins over the controller's


def test_no_controller_at_the_endpoint_is_a_clear_error():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ClusterNotFound, match=f"no hcstore controller answers at tcp://127.0.0.1:{port}"):
        Client(f"tcp://127.0.0.1:{port}", connect_timeout=0.5, request_timeout=1.0, insecure=True)
    with pytest.raises(AuthenticationError, match="HCSTORE_KEY"):  # with no key, that is said first
        Client(f"tcp://127.0.0.1:{port}", connect_timeout=0.5, request_timeout=1.0)
