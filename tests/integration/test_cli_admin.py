"""The cluster-admin verbs of the ``hcstore`` command line, run as subprocesses against a live cluster:
``node drain --wait``, ``node resume``, ``node remove`` (refused while the node holds fragments, then
``--force``), ``scrub`` and ``repair``. Each exits 0 and says what it did, and the cluster ends up in
the state it printed.
"""

from __future__ import annotations

import re

import pytest

from ec import chunk_offset
from hcstore.control.membership import Intervals
from integration_support import (
    CHUNK,
    clean_env,
    controller_request,
    flip_bytes,
    fragment_files_of,
    fully_protected,
    key_placed_on,
    run_cli,
    seeded_bytes,
    wait_until,
)
from placement import ClusterMap

BUCKET = "admin"
K, M = 2, 1
AGENTS = 5
# Failures are noticed within a second, but no node goes out by itself: only the admin verbs move data.
NO_OUT = Intervals(heartbeat=0.2, suspect_after=0.6, down_after=1.0, out_after=120.0)


class Admin:
    """A five-agent EC 2+1 cluster holding a few objects, and the ``hcstore`` command line pointed at it."""

    def __init__(self, cluster, client, objects: dict[str, bytes], home) -> None:
        self.cluster, self.client, self.objects, self.home = cluster, client, objects, home

    def hcstore(self, *args: str):
        """Run ``hcstore --cluster DIR ARGS...``; returns the completed process."""
        return run_cli("--cluster", str(self.cluster.path), *args, env=clean_env(self.home), timeout=180)

    def ok(self, *args: str) -> tuple[str, str]:
        """Run a verb that must succeed; returns its stdout and stderr."""
        proc = self.hcstore(*args)
        out, err = proc.stdout.decode(), proc.stderr.decode()
        assert proc.returncode == 0, (args, proc.returncode, out, err)
        return out, err

    def state(self, node: str) -> str:
        """The node's state in the controller's map."""
        return ClusterMap.from_dict(controller_request(self.cluster, "get_map")["map"]).node(node).state

    def holder(self, *, besides: tuple[str, ...] = ()) -> str:
        """A node that holds a fragment of some object, other than ``besides``."""
        return next(
            node
            for key in self.objects
            for node in self.client.resolve(BUCKET, key).found_at
            if node and node not in besides
        )

    def all_readable(self) -> None:
        for key, data in self.objects.items():
            assert self.client.get(BUCKET, key) == data, key


@pytest.fixture
def admin(make_cluster, tmp_path):
    cluster = make_cluster(agents=AGENTS, ec=f"{K}+{M}", intervals=NO_OUT, scan_interval=1.0)
    objects = {f"obj/{i:02d}": seeded_bytes(f"admin{i}", 100_000 + 7919 * i) for i in range(10)}
    with cluster.client(chunk_size=CHUNK, request_timeout=5.0) as client:
        for key, data in objects.items():
            assert not client.put(BUCKET, key, data).degraded
        yield Admin(cluster, client, objects, tmp_path)


def test_drain_wait_resume_and_remove_a_drained_node(admin):
    first = admin.holder()
    out, _ = admin.ok("node", "drain", first, "--wait", "--timeout", "120")
    assert f"node {first} is draining" in out
    assert f"node {first} holds no fragments: safe to remove" in out
    assert admin.state(first) == "draining"
    assert admin.cluster.fragment_files(first) == []
    assert fully_protected(admin.client, BUCKET, admin.objects, excluding={first})
    admin.all_readable()
    refused = admin.hcstore("node", "maintenance", "enter", first)
    assert refused.returncode == 1 and b"is draining" in refused.stderr and b"resume it first" in refused.stderr

    out, _ = admin.ok("node", "resume", first)
    assert f"node {first} is back in service" in out
    assert admin.state(first) == "alive"
    key = key_placed_on(admin.client.refresh(), BUCKET, first, K, M, "resumed")
    assert first in admin.client.put(BUCKET, key, seeded_bytes(key, 100_000)).fragments

    second = admin.holder(besides=(first,))
    admin.ok("node", "drain", second, "--wait", "--timeout", "120")
    out, _ = admin.ok("node", "remove", second)  # empty: no --force needed
    assert f"node {second} removed from the cluster map" in out
    assert admin.state(second) == "decommissioned"
    admin.client.refresh()
    admin.all_readable()
    key = key_placed_on(
        ClusterMap.from_dict(controller_request(admin.cluster, "get_map")["map"]).with_state(second, "alive"),
        BUCKET,
        second,
        K,
        M,
        "removed",
    )
    assert second not in admin.client.put(BUCKET, key, seeded_bytes(key, 100_000)).fragments


def test_remove_is_refused_while_the_node_holds_fragments_and_forced_once_it_died(admin):
    victim = admin.holder()
    refused = admin.hcstore("node", "remove", victim)
    message = refused.stderr.decode().strip()
    assert refused.returncode == 1, (refused.stdout, message)
    assert len(message.splitlines()) == 1 and "Traceback" not in message
    assert "still holds" in message and "--force" in message
    assert admin.state(victim) == "alive"

    admin.cluster.kill(victim)  # it dies before it could be drained: only --force takes it out
    out, _ = admin.ok("node", "remove", victim, "--force")
    assert f"node {victim} removed from the cluster map" in out
    assert admin.state(victim) == "decommissioned"
    admin.client.refresh()
    admin.all_readable()  # degraded reads until repair

    out, err = admin.ok("repair", "--timeout", "120")
    assert f"repair: {AGENTS - 1}/{AGENTS - 1} agents finished a pass" in err
    assert re.search(r"repair pass done: \d+/\d+ objects fully protected", out), out
    wait_until(
        lambda: fully_protected(admin.client, BUCKET, admin.objects, excluding={victim}),
        timeout=60,
        interval=0.5,
        what="every object rebuilt without the removed node",
    )
    admin.all_readable()


def test_scrub_quarantines_a_corrupt_fragment_and_repair_rebuilds_it(admin):
    key = "obj/03"
    version = admin.client.resolve(BUCKET, key)
    _node, path = fragment_files_of(admin.cluster, BUCKET, key, version.generation)[1]
    first_chunk = slice(chunk_offset(0, version.chunk_size), chunk_offset(1, version.chunk_size))
    good = path.read_bytes()[first_chunk]
    flip_bytes(path, first_chunk.start + 100)
    corrupt = path.read_bytes()

    out, err = admin.ok("scrub", "--timeout", "120")
    assert f"scrub: {AGENTS}/{AGENTS} agents finished a pass" in err
    assert "scrub done: 1 corrupt fragments quarantined" in out
    mountpath = path.parent.parent.parent
    assert (mountpath / "quarantine" / path.name).read_bytes() == corrupt  # kept aside for inspection

    out, _ = admin.ok("repair", "--timeout", "120")
    assert "repair pass done:" in out
    wait_until(
        lambda: fully_protected(admin.client, BUCKET, [key]),
        timeout=60,
        interval=0.5,
        what="the quarantined fragment rebuilt",
    )
    rebuilt = fragment_files_of(admin.cluster, BUCKET, key, version.generation)
    assert sorted(rebuilt) == list(range(K + M))
    assert rebuilt[1][1].read_bytes()[first_chunk] == good
    assert admin.client.get(BUCKET, key) == admin.objects[key]
    assert admin.client.corruptions == []  # nothing corrupt was served to the reader
