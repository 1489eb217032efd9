"""A writer SIGKILLed at each step of the put protocol leaves exactly the old or exactly the new version.

``writer_proc.py`` drives a real put and stops itself at a chosen step; the
test kills it there. Before any commit the old version must stay the object;
after a commit on at least one node the new one is the object (readers roll
forward over its prepared fragments). After a repair pass the object is fully
protected, reads are unchanged, and the leftovers of the dead put (open uploads,
prepared fragments) never show through a later put or delete.
"""

from __future__ import annotations

import queue
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from hcstore import ObjectNotFound
from hcstore.cluster.local import LocalCluster
from hcstore.control.membership import Intervals
from hcstore.node.store import key_hash
from integration_support import CHUNK, seeded_bytes, started_cluster, wait_until

BUCKET = "crash"
K, M = 4, 2
STRIPE = K * CHUNK
NEW_SIZE = 6 * STRIPE + 4321  # seven stripes, the last one partial
WRITER = Path(__file__).with_name("writer_proc.py")

# (point, which version the key must read back as, fragment files of the new generation on disk by state)
CASES = [
    ("stripes:3", "old", {}),
    ("sent", "old", {}),
    ("prepare:2", "old", {"prep": 2}),
    ("prepare:5", "old", {"prep": 5}),  # the write quorum is prepared, nothing committed
    ("prepared", "old", {"prep": 6}),
    ("commit:1", "new", {"frag": 1, "prep": 5}),
    ("commit:4", "new", {"frag": 4, "prep": 2}),
    ("committed", "new", {"frag": 6}),
    ("returned", "new", {"frag": 6}),
]


class WriterProcess:
    """``writer_proc.py`` as a child process whose stdout lines arrive on a queue."""

    def __init__(self, cluster_dir: Path, key: str, seed: int, point: str, *, size: int = NEW_SIZE) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(WRITER), str(cluster_dir), BUCKET, key, str(size), str(seed), str(CHUNK), point],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.strip())
        self.lines.put(None)

    def wait_at(self, point: str, timeout: float = 30.0) -> tuple[str, list[str]]:
        """Wait for the writer to report that it stopped at ``point``; returns (generation, nodes reached)."""
        while True:
            try:
                line = self.lines.get(timeout=timeout)
            except queue.Empty:
                raise AssertionError(f"writer did not reach {point} within {timeout}s") from None
            if line is None:
                assert self.proc.stderr is not None
                raise AssertionError(f"writer exited ({self.proc.wait()}) before {point}: {self.proc.stderr.read()}")
            word, _, rest = line.partition(" ")
            if word == "AT":
                reached, generation, *nodes = rest.split()
                assert reached == point, line
                return generation, nodes

    def kill(self) -> None:
        """SIGKILL the writer (stopped or not) and reap it."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)
        assert self.proc.returncode == -signal.SIGKILL
        for stream in (self.proc.stdout, self.proc.stderr):
            assert stream is not None
            stream.close()


def generation_files(cluster: LocalCluster, key: str, generation: str) -> Counter:
    """Fragment files of one generation of a key on every agent, counted by state suffix (prep, frag)."""
    digest = key_hash(BUCKET, key)
    found: Counter = Counter()
    for agent in cluster.agents():
        for mountpath in agent.mountpaths:
            for path in (mountpath / "frags" / digest[:2]).glob(f"{digest}.{generation}.*"):
                found[path.name.rsplit(".", 1)[1]] += 1
    return found


def repair_pass(client) -> None:
    """Ask every agent for a repair scan and wait until each has finished a scan begun after asking."""
    asked = time.time()
    nodes = [node.id for node in client.cluster_map.nodes]
    for node in client.cluster_map.nodes:
        client.transport.request(node.endpoint, "maintain", {"job": "repair"})
    with client.controller() as controller:

        def done() -> bool:
            stats = controller.status().stats
            return all((stats.get(n, {}).get("repair") or {}).get("started", 0.0) >= asked for n in nodes)

        wait_until(done, timeout=30.0, interval=0.1, what="a repair scan on every agent")


def crash_at(cluster: LocalCluster, key: str, point: str, seed: int) -> tuple[str, list[str]]:
    """Run a writer of ``key`` up to ``point`` and SIGKILL it there; returns (its generation, nodes reached)."""
    writer = WriterProcess(cluster.path, key, seed, point)
    try:
        return writer.wait_at(point)
    finally:
        writer.kill()


@pytest.fixture(scope="module")
def crash_cluster(tmp_path_factory):
    """Six agents, EC 4+2, heartbeats every 0.2 s (repair progress shows quickly), shared by the cases."""
    intervals = Intervals(heartbeat=0.2, suspect_after=1.0, down_after=2.0, out_after=120.0)
    with started_cluster(tmp_path_factory.mktemp("crash") / "c", intervals=intervals) as cluster:
        with cluster.client(chunk_size=CHUNK, request_timeout=5.0) as client:
            yield cluster, client


@pytest.mark.parametrize(("point", "outcome", "files"), CASES, ids=[c[0] for c in CASES])
def test_writer_killed_at_each_protocol_step(crash_cluster, point, outcome, files):
    cluster, client = crash_cluster
    key = f"ckpt-{point.replace(':', '-')}"
    seed = sum(map(ord, point))
    old = seeded_bytes(f"old/{point}", 3 * STRIPE + 99)
    new = seeded_bytes(seed, NEW_SIZE)
    old_gen = client.put(BUCKET, key, old).generation

    new_gen, reached = crash_at(cluster, key, point, seed)

    assert new_gen > old_gen
    if point.startswith(("prepare:", "commit:")):
        assert len(reached) == int(point.split(":")[1])
    # The writer died exactly at the step: the new generation's files on disk say so.
    assert generation_files(cluster, key, new_gen) == Counter(files)
    expected, expected_gen = (old, old_gen) if outcome == "old" else (new, new_gen)
    assert client.get(BUCKET, key) == expected
    info = client.stat(BUCKET, key)
    assert (info.generation, info.size) == (expected_gen, len(expected))
    assert [(e.key, e.generation) for e in client.list(BUCKET, key)] == [(key, expected_gen)]

    # Repair leaves the key as it was and fully protected; the dead put's leftovers change nothing.
    repair_pass(client)
    assert client.get(BUCKET, key) == expected
    info = client.stat(BUCKET, key)
    assert (info.generation, info.fragments) == (expected_gen, K + M)
    if outcome == "old":
        assert generation_files(cluster, key, old_gen) == Counter({"frag": K + M})

    # A later put wins over the leftovers, and a delete is not undone by them.
    after = seeded_bytes(f"after/{point}", 2 * STRIPE + 7)
    assert client.put(BUCKET, key, after).generation > new_gen
    assert client.get(BUCKET, key) == after
    client.delete(BUCKET, key)
    with pytest.raises(ObjectNotFound):
        client.get(BUCKET, key)
    assert client.list(BUCKET, key) == []


def test_writer_killed_mid_put_of_new_key_leaves_nothing(crash_cluster):
    cluster, client = crash_cluster
    for point in ("stripes:2", "prepared"):
        key = f"fresh-{point.replace(':', '-')}"
        crash_at(cluster, key, point, seed=7)
        with pytest.raises(ObjectNotFound):
            client.get(BUCKET, key)
        assert client.list(BUCKET, key) == []


@pytest.fixture
def lone_commit(tmp_path):
    """A cluster where a writer died after committing only fragment 0: (cluster, client, key, new bytes, node)."""
    intervals = Intervals(heartbeat=0.2, suspect_after=1.0, down_after=2.0, out_after=120.0)
    with started_cluster(tmp_path / "c", intervals=intervals) as cluster:
        with cluster.client(chunk_size=CHUNK, request_timeout=5.0) as client:
            key = "lone-commit"
            client.put(BUCKET, key, seeded_bytes("old/lone", 3 * STRIPE + 99))
            _gen, [node] = crash_at(cluster, key, "commit:1", seed=11)
            new = seeded_bytes(11, NEW_SIZE)
            assert client.get(BUCKET, key) == new  # readers rolled forward: the new version is the object
            yield cluster, client, key, new, node


def test_rolled_forward_version_survives_its_committed_node_going_down(lone_commit):
    cluster, client, key, new, node = lone_commit
    cluster.kill(node)  # one node down: within what 4+2 tolerates
    client.refresh()
    assert client.get(BUCKET, key) == new


def test_rolled_forward_version_survives_its_committed_node_going_down_after_repair(lone_commit):
    cluster, client, key, new, node = lone_commit
    for _ in range(6):  # every fifth scan looks at every object
        repair_pass(client)
    assert client.get(BUCKET, key) == new
    cluster.kill(node)
    client.refresh()
    assert client.get(BUCKET, key) == new


@pytest.mark.parametrize(("point", "overwrite"), [("committed", False), ("prepared", True)])
def test_dead_put_leaves_no_files_behind_after_repair(crash_cluster, point, overwrite):
    """Killed after committing everywhere, the old version's files stay; killed after preparing, its own do."""
    cluster, client = crash_cluster
    key = f"leftovers-{point}"
    old_gen = client.put(BUCKET, key, seeded_bytes(f"old/{key}", 3 * STRIPE + 99)).generation
    dead_gen, _nodes = crash_at(cluster, key, point, seed=13)
    newest = client.put(BUCKET, key, seeded_bytes(f"new/{key}", 2 * STRIPE)).generation if overwrite else dead_gen
    for _ in range(6):  # every fifth scan looks at every object
        repair_pass(client)
    assert client.stat(BUCKET, key).generation == newest
    stale = [gen for gen in (old_gen, dead_gen) if gen != newest]
    assert {gen: generation_files(cluster, key, gen) for gen in stale} == {gen: Counter() for gen in stale}
