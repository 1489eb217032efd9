"""Durability across real power cuts: XFS on loop devices, shut down without a log flush.

Every agent's directory and every mountpath is its own XFS file system (see ``power_cut.py``).
A cut loses whatever XFS had not yet written, data and metadata alike, as a rack losing power
does; SIGKILL alone would leave the page cache to write everything out. An acknowledged put
must survive a cut under durability ``commit`` and ``always``; under ``none`` the same
procedure must find acknowledged puts lost, which shows that it can tell.
"""

from __future__ import annotations

import json
import threading
import time
from contextlib import ExitStack
from pathlib import Path

import pytest

from hcstore.client.writer import PutResult
from hcstore.control.membership import Intervals
from hcstore.errors import HCStoreError
from integration_support import CHUNK, fragment_files_of, fully_protected, seeded_bytes, wait_until
from power_cut import missing_requirements, powered_cluster

BUCKET = "power"
STRIPE = 4 * CHUNK
# Replicated (under 64 KiB) and coded objects, from one partial stripe to several stripes.
SIZES = (0, 1, 100, 4096, 50_000, 65_535, 65_536, 100_000, STRIPE, STRIPE + 1, 3 * STRIPE + 777, 1_200_000)
FAST = Intervals(heartbeat=0.2, suspect_after=0.6, down_after=1.0, out_after=60.0)
ID_FILE = ".hcstore-mountpath"


@pytest.fixture
def make_powered(tmp_path_factory):
    """Factory: ``make_powered(**LocalCluster.create options)`` -> a started cluster on XFS loop disks.

    Where the machine cannot cut power (not root, no loop devices, no mkfs.xfs) the test fails
    and says why: durability must not go untested silently.
    """
    with ExitStack() as clusters:

        def factory(**options):
            problem = missing_requirements()
            if problem:
                pytest.fail(problem, pytrace=False)
            path = tmp_path_factory.mktemp("power") / "c"
            return clusters.enter_context(powered_cluster(path, **options))

        yield factory


def objects_of(prefix: str, count: int) -> dict[str, bytes]:
    """``count`` objects cycling through :data:`SIZES`."""
    return {f"{prefix}/{i:02d}": seeded_bytes(f"{prefix}{i}", SIZES[i % len(SIZES)]) for i in range(count)}


def mountpath_ids(cluster) -> dict[str, list[str]]:
    """Node -> the ids in the id files of its mountpaths (both copies of each)."""
    ids = {}
    for agent in cluster.agents():
        ids[agent.node_id] = [
            json.loads((mp / name).read_text())["id"]
            for mp in agent.mountpaths
            for name in (ID_FILE, f"frags/{ID_FILE}")
        ]
    return ids


def outcomes(client, objects: dict[str, bytes]) -> dict[str, str]:
    """Key -> "exact", "wrong" or the error a read of it raised."""
    found = {}
    for key, data in objects.items():
        try:
            found[key] = "exact" if client.get(BUCKET, key) == data else "wrong"
        except HCStoreError as exc:
            found[key] = f"{type(exc).__name__}: {exc}"
    return found


def fragment_files(agent) -> int:
    """Fragment files on an agent's mountpaths (prepared, committed and tombstones)."""
    return sum(1 for mp in agent.mountpaths for p in mp.glob("frags/*/*.*") if p.suffix in (".prep", ".frag", ".tomb"))


def saved_map_lists(agent) -> bool:
    """Whether the cluster map an agent saved is readable, of epoch 1 or later, and lists the agent."""
    saved = json.loads((agent.directory / "cluster-map.json").read_text())
    return saved["epoch"] >= 1 and any(n["id"] == agent.node_id for n in saved["nodes"])


def check_restarted(cluster, ids_before, *, settled: bool = True) -> None:
    """Every agent serves again on its old mountpath ids, with a readable map and a whole index, and takes puts.

    Args:
        cluster: the cluster, just powered on.
        ids_before: :func:`mountpath_ids` before the cut.
        settled: nothing is left for repair to rebuild, so each index must count every fragment file.
    """
    assert all(cluster.running().values()), cluster.running()
    assert mountpath_ids(cluster) == ids_before
    with cluster.client(chunk_size=CHUNK, request_timeout=5.0) as client:
        stats = client.node_stats()
    for agent in cluster.agents():
        # Saved as the agent takes each new map, off its serving thread: the one the cut left may be older,
        # even the first an agent got (the allow-list, before its own registration was published).
        wait_until(
            lambda agent=agent: saved_map_lists(agent),
            timeout=20,
            what=f"{agent.node_id} to save a cluster map that lists it",
        )
        if settled:
            assert stats[agent.node_id]["fragments"] == fragment_files(agent), agent.node_id
        log = (agent.directory / "agent.log").read_text(errors="replace")
        assert "lost its id file" not in log and "unreadable cluster map" not in log, agent.node_id
    # A put places fragments on nodes the map says are alive: an agent whose first heartbeat since the power came
    # back has not reached the controller yet is still suspect or down there, and the put would go around it.
    nodes = [agent.node_id for agent in cluster.agents()]
    cluster.wait_for_map(lambda m: all(n in m and m.node(n).state == "alive" for n in nodes), timeout=30)
    with cluster.client(chunk_size=CHUNK, request_timeout=5.0) as client:
        probe = seeded_bytes("probe", 3 * STRIPE + 5)  # and they take new puts
        assert not client.put(BUCKET, "after-the-cut", probe).degraded
        assert client.get(BUCKET, "after-the-cut") == probe


@pytest.mark.parametrize("durability", ["commit", "always"])
def test_acknowledged_puts_survive_a_power_cut_on_every_agent(make_powered, durability):
    cluster = make_powered(agents=6, ec="4+2", durability=durability, mountpaths_per_agent=2)
    ids_before = mountpath_ids(cluster)
    objects = objects_of(durability, 30 if durability == "commit" else 12)
    with cluster.client(chunk_size=CHUNK, request_timeout=5.0) as client:
        results = {key: client.put(BUCKET, key, data) for key, data in objects.items()}
    assert not any(result.degraded for result in results.values())
    cluster.power_cut()
    cluster.power_on()
    check_restarted(cluster, ids_before)
    with cluster.client(chunk_size=CHUNK, request_timeout=5.0) as client:
        assert outcomes(client, objects) == {key: "exact" for key in objects}
    for key, result in results.items():  # every fragment is still there, and still committed (.frag)
        committed = fragment_files_of(cluster, BUCKET, key, result.generation)
        assert {idx: node for idx, (node, _) in committed.items()} == dict(enumerate(result.fragments)), key


def test_durability_none_loses_acknowledged_puts_in_a_power_cut(make_powered):
    cluster = make_powered(agents=6, ec="4+2", durability="none", mountpaths_per_agent=1)
    ids_before = mountpath_ids(cluster)
    objects = objects_of("none", 12)
    with cluster.client(chunk_size=CHUNK, request_timeout=5.0) as client:
        started = time.monotonic()
        for key, data in objects.items():
            client.put(BUCKET, key, data)
        cluster.power_cut()  # right away: well inside XFS's and the page cache's flush delays
        window = time.monotonic() - started
    cluster.power_on()
    check_restarted(cluster, ids_before, settled=False)  # the daemons start again, whatever the cut took
    with cluster.client(chunk_size=CHUNK, request_timeout=5.0) as client:
        found = outcomes(client, objects)
    lost = sorted(key for key, outcome in found.items() if outcome != "exact")
    assert lost, (
        f"no acknowledged put was lost under durability 'none' ({window:.1f}s from the first put to "
        f"the cut; flush delays: {flush_delays()}): the cut did not drop unwritten data"
    )


def flush_delays() -> dict[str, int]:
    """The kernel's flush delays (centiseconds) that bound how long unsynced writes stay unwritten."""
    names = ("fs/xfs/xfssyncd_centisecs", "vm/dirty_expire_centisecs", "vm/dirty_writeback_centisecs")
    return {name: int(Path("/proc/sys", name).read_text()) for name in names}


class PutStream(threading.Thread):
    """Puts new objects in a loop until stopped, remembering those acknowledged."""

    def __init__(self, client) -> None:
        super().__init__(daemon=True)
        self.client = client
        self.acknowledged: dict[str, bytes] = {}
        self.results: dict[str, PutResult] = {}
        self.failures = 0
        self.next = 0  # index of the put under way
        self.stopping = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            while not self.stopping.is_set():
                key = f"stream/{self.next:04d}"
                data = seeded_bytes(key, SIZES[self.next % len(SIZES)])
                try:
                    self.results[key] = self.client.put(BUCKET, key, data)
                    self.acknowledged[key] = data
                except HCStoreError:
                    self.failures += 1
                self.next += 1
        except BaseException as exc:  # surfaced by the test, never lost in the thread
            self.error = exc

    def wait_for(self, count: int, timeout: float) -> None:
        """Wait until ``count`` puts are acknowledged in all."""
        wait_until(
            lambda: len(self.acknowledged) >= count or not self.is_alive(),
            timeout=timeout,
            what=f"{count} acknowledged puts",
        )
        assert self.error is None, self.error
        assert len(self.acknowledged) >= count, f"the stream stopped after {len(self.acknowledged)} puts"


def test_power_cut_on_m_agents_during_puts(make_powered):
    cluster = make_powered(
        agents=7, ec="4+2", durability="commit", mountpaths_per_agent=1, intervals=FAST, scan_interval=1.0
    )
    ids_before = mountpath_ids(cluster)
    with cluster.client(chunk_size=CHUNK, request_timeout=2.0) as client:
        stream = PutStream(client)
        stream.start()
        try:
            stream.wait_for(8, timeout=30)
            victims = sorted(n for n in next(iter(stream.results.values())).fragments if n)[:2]
            cut_at = f"stream/{stream.next + 1:04d}"  # puts after this one start after the cut
            before = len(stream.acknowledged)
            cluster.power_cut(victims)
            stream.wait_for(before + 8, timeout=30)  # the stream goes on around the dead nodes
        finally:
            stream.stopping.set()
            stream.join(timeout=30)
        assert not stream.is_alive() and stream.error is None, stream.error
        acknowledged = dict(stream.acknowledged)
        after_cut = [result for key, result in stream.results.items() if key > cut_at]
        assert after_cut and not any(set(victims) & set(result.fragments) for result in after_cut), victims
        assert any(result.degraded for result in after_cut)  # repair has fragments to restore
        cluster.power_on(victims)
        assert all(cluster.running().values()) and mountpath_ids(cluster) == ids_before
        client.refresh()
        assert outcomes(client, acknowledged) == {key: "exact" for key in acknowledged}
        wait_until(
            lambda: fully_protected(client, BUCKET, acknowledged),
            timeout=40,
            interval=0.5,
            what="repair to restore every fragment",
        )
        assert outcomes(client, acknowledged) == {key: "exact" for key in acknowledged}
