"""A planned outage (``hcstore node maintenance enter|exit``) on a three-agent EC 2+1 cluster.

The node's agent is stopped with SIGTERM for longer than ``out_after``: it is never marked out,
nothing is rebuilt for its absence, puts that would place a fragment on it still succeed, and
every object reads back exact. After it restarts and leaves maintenance, ``hcstore wait ready``
and ``hcstore wait protected`` exit 0 and what it missed is on it. A maintenance whose own
duration passes ends by itself, and normal failure handling resumes.
"""

from __future__ import annotations

import time

import pytest

from hcstore.control.membership import Intervals
from integration_support import CHUNK, clean_env, controller_request, run_cli, seeded_bytes, wait_until
from placement import ClusterMap

BUCKET = "planned"
# Out after 3 s: without maintenance the stopped node would be out, and its fragments rebuilt, at once.
QUICK_OUT = Intervals(heartbeat=0.2, suspect_after=0.6, down_after=1.0, out_after=3.0)


@pytest.fixture
def three(make_cluster, tmp_path):
    cluster = make_cluster(agents=3, ec="2+1", intervals=QUICK_OUT, scan_interval=1.0)

    def hcstore(*args: str, timeout: float = 180):
        proc = run_cli("--cluster", str(cluster.path), *args, env=clean_env(tmp_path), timeout=timeout)
        return proc.returncode, proc.stdout.decode(), proc.stderr.decode()

    return cluster, hcstore


def state_of(cluster, node: str) -> str:
    return ClusterMap.from_dict(controller_request(cluster, "get_map")["map"]).node(node).state


def repaired_bytes(cluster) -> int:
    stats = controller_request(cluster, "status")["stats"]
    return sum(int((report.get("repair") or {}).get("bytes_repaired", 0)) for report in stats.values())


def test_a_node_in_maintenance_is_stopped_past_out_after_and_brought_up_to_date(three):
    cluster, hcstore = three
    before = {f"before/{i}": seeded_bytes(f"b{i}", 150_000 + 4099 * i) for i in range(6)}
    during = {f"during/{i}": seeded_bytes(f"d{i}", 150_000 + 6151 * i) for i in range(6)}
    with cluster.client(chunk_size=CHUNK, request_timeout=5.0) as client:
        for key, data in before.items():
            assert not client.put(BUCKET, key, data).degraded
        victim = "n2"
        rc, out, err = hcstore("node", "maintenance", "enter", victim, "--max-duration", "600")
        assert rc == 0 and "maintenance" in out, err
        assert state_of(cluster, victim) == "maintenance"
        cluster.stop(victim)  # SIGTERM: the daemon stops cleanly
        repaired = repaired_bytes(cluster)

        time.sleep(QUICK_OUT.out_after + 2.0)  # past out_after, by wall time
        assert state_of(cluster, victim) == "maintenance"  # not out
        for key, data in during.items():  # a 2+1 put needs all 3 nodes without maintenance
            result = client.put(BUCKET, key, data)
            assert victim not in result.fragments and sum(bool(f) for f in result.fragments) == 2
        for key, data in {**before, **during}.items():
            assert client.get(BUCKET, key) == data, key
        time.sleep(2.0)  # scans every second: any rebuild for the absence would show by now
        assert repaired_bytes(cluster) == repaired
        assert state_of(cluster, victim) == "maintenance"

        rc, out, err = hcstore("wait", "ready", "--node", victim, "--timeout", "2")
        assert rc == 1 and f"node {victim}" in err and "did not answer" in err, (out, err)
        cluster.start(victim)
        rc, out, err = hcstore("wait", "ready", "--node", victim, "--timeout", "60")
        assert rc == 0, err
        rc, out, err = hcstore("node", "maintenance", "exit", victim)
        assert rc == 0, err
        assert state_of(cluster, victim) == "alive"
        rc, out, err = hcstore("wait", "protected", "--timeout", "120")
        assert rc == 0 and "fully protected" in out, err
        for key, data in during.items():  # what it missed is on it now
            assert victim in client.resolve(BUCKET, key).found_at, key
            assert client.get(BUCKET, key) == data
        rc, out, err = hcstore("node", "maintenance", "exit", victim)  # a retried exit is no error
        assert rc == 0, err


def test_a_maintenance_past_its_duration_ends_and_the_node_goes_out(three):
    cluster, hcstore = three
    rc, _, err = hcstore("node", "maintenance", "enter", "n3", "--max-duration", "2")
    assert rc == 0, err
    cluster.stop("n3")
    wait_until(lambda: state_of(cluster, "n3") == "out", timeout=30, what="n3 out after its maintenance ended")
    log = (cluster.path / "controller.log").read_text()
    assert "maintenance overdue" in log
    rc, _, err = hcstore("node", "maintenance", "enter", "n1", "--max-duration", str(10 * 86400))
    assert rc == 1 and "maintenance_limit" in err
    rc, _, err = hcstore("node", "drain", "n1")  # n3 is out: n2 alone could not hold 2+1's three fragments
    assert rc == 1 and "would leave 1 node in service (n2)" in err and "nowhere to go" in err, err
    assert state_of(cluster, "n1") == "alive"


def test_a_restarted_controller_keeps_every_node_and_the_maintenance_in_its_first_map(three):
    """A controller restarted while one node is in maintenance and stopped never publishes a map without it."""
    cluster, hcstore = three
    rc, _, err = hcstore("node", "maintenance", "enter", "n2", "--max-duration", "600")
    assert rc == 0, err
    cluster.stop("n2")
    epoch = ClusterMap.from_dict(controller_request(cluster, "get_map")["map"]).epoch
    cluster.stop_controller()
    cluster.start_controller()
    maps = []
    deadline = time.monotonic() + 10.0
    while time.monotonic() < deadline:  # every map served in the first seconds, as clients fetch them
        maps.append(ClusterMap.from_dict(controller_request(cluster, "get_map")["map"]))
        time.sleep(0.05)
    published = [m for m in maps if m.nodes]
    assert published, "the restarted controller published no map"
    for seen in published:
        assert {n.id for n in seen.nodes} == {"n1", "n2", "n3"}, seen
        assert seen.node("n2").state == "maintenance" and seen.epoch > epoch
