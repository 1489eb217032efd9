"""Agents that crash (SIGKILL) or hang (SIGSTOP): reads survive up to m failures, never return wrong data,
and puts need their write quorum.
"""

from __future__ import annotations

import os
import random
import signal

import pytest

from hcstore import NotEnoughFragments, NotEnoughNodes, ObjectNotFound
from hcstore.errors import NotProven
from integration_support import CHUNK, seeded_bytes, wait_until

BUCKET = "faults"
STRIPE = 4 * CHUNK


def _mixed_objects(seed: int, count: int = 20) -> dict[str, bytes]:
    rng = random.Random(seed)
    sizes = [0, 1, 1000, CHUNK - 1, CHUNK, CHUNK + 1, STRIPE, 3 * STRIPE + 5]
    sizes += [rng.randrange(1, 12 * STRIPE) for _ in range(count - len(sizes))]
    return {f"obj/{i:02d}": seeded_bytes(f"{seed}-{i}", size) for i, size in enumerate(sizes)}


def _put_all(client, objects: dict[str, bytes]) -> None:
    for key, data in objects.items():
        client.put(BUCKET, key, data)


@pytest.fixture
def loaded(make_cluster):
    cluster = make_cluster()
    objects = _mixed_objects(7)
    with cluster.client(chunk_size=CHUNK, request_timeout=5.0) as client:
        _put_all(client, objects)
    return cluster, objects


def test_reads_survive_m_killed_agents(loaded):
    cluster, objects = loaded
    victims = random.Random(11).sample([a.node_id for a in cluster.agents()], 2)
    for node in victims:
        cluster.kill(node)
    assert sum(pid is not None for pid in cluster.running().values()) == 4
    with cluster.client(chunk_size=CHUNK, request_timeout=5.0) as client:
        for key, data in objects.items():
            assert client.get(BUCKET, key) == data, key
            info = client.stat(BUCKET, key)
            assert info.size == len(data)
        coded = [k for k, d in objects.items() if len(d) >= 64 << 10]
        assert all(client.stat(BUCKET, k).degraded for k in coded)


def test_m_plus_one_killed_agents_never_give_wrong_data(loaded):
    cluster, objects = loaded
    victims = set(random.Random(12).sample([a.node_id for a in cluster.agents()], 3))
    for node in victims:
        cluster.kill(node)
    with cluster.client(chunk_size=CHUNK, request_timeout=5.0) as client:
        for key, data in objects.items():
            coded = len(data) >= 64 << 10  # replicate_below: smaller objects have 3 copies
            if coded:
                with pytest.raises((NotEnoughFragments, NotProven)):
                    client.get(BUCKET, key)
                continue
            try:
                got = client.get(BUCKET, key)
            except NotEnoughFragments:
                continue
            except NotProven as exc:  # 3 silent agents could hold a newer version: never "absent"
                assert set(exc.unreached) == victims, key
                continue
            assert got == data, key


def test_crash_without_map_update_is_read_around(loaded):
    """A SIGKILLed agent whose ready file is left behind still looks alive in the map."""
    cluster, objects = loaded
    for node in ("n2", "n5"):
        pid = cluster.agent(node).pid()
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda node=node: cluster.running()[node] is None, what=f"{node} to die")
    assert all(n.endpoint for n in cluster.cluster_map().nodes)  # the map still says alive
    with cluster.client(chunk_size=CHUNK, request_timeout=2.0, connect_timeout=0.3) as client:
        for key, data in objects.items():
            assert client.get(BUCKET, key) == data, key


def test_paused_agent_is_read_around_then_resumes(loaded):
    cluster, objects = loaded
    with cluster.client(chunk_size=CHUNK, request_timeout=1.0) as client:
        # Pause the agent holding data fragment 0 of a coded object: it is first in every read plan.
        big_key = max(objects, key=lambda k: len(objects[k]))
        victim = client.resolve(BUCKET, big_key).locations[0]
        cluster.pause(victim)
        try:
            for key in list(objects)[:8] + [big_key]:
                assert client.get(BUCKET, key) == objects[key], key
        finally:
            cluster.resume(victim)

        def answers():
            try:
                return client.transport.request(client.endpoint(victim), "ping", {}, timeout=1.0).header["node"]
            except Exception:
                return None

        assert wait_until(answers, timeout=15, what=f"{victim} to answer again") == victim
        for key, data in objects.items():
            assert client.get(BUCKET, key) == data, key


def test_put_with_k_plus_one_agents_is_degraded(make_cluster):
    cluster = make_cluster()
    cluster.kill("n4")
    with cluster.client(chunk_size=CHUNK, request_timeout=5.0) as client:
        data = seeded_bytes("degraded", 5 * STRIPE + 3)
        result = client.put(BUCKET, "deg/obj", data)
        assert result.degraded
        assert sum(bool(n) for n in result.fragments) == 5 and "n4" not in result.fragments
        assert client.get(BUCKET, "deg/obj") == data
        assert client.stat(BUCKET, "deg/obj").degraded
        # The agent comes back: the object is still whole, and a new put is fully protected again.
        cluster.start("n4")
        client.refresh()
        assert client.get(BUCKET, "deg/obj") == data
        full = client.put(BUCKET, "deg/after", data)
        assert not full.degraded and "n4" in full.fragments


def test_put_below_quorum_changes_nothing(make_cluster):
    cluster = make_cluster()
    with cluster.client(chunk_size=CHUNK, request_timeout=5.0) as client:
        old = seeded_bytes("old", 3 * STRIPE + 1)
        old_result = client.put(BUCKET, "quorum/existing", old)
        cluster.kill("n1")
        cluster.kill("n6")
        client.refresh()
        new = seeded_bytes("new", 4 * STRIPE)
        with pytest.raises(NotEnoughNodes):
            client.put(BUCKET, "quorum/existing", new)
        with pytest.raises(NotEnoughNodes):
            client.put(BUCKET, "quorum/fresh", new)
        assert client.get(BUCKET, "quorum/existing") == old
        assert client.stat(BUCKET, "quorum/existing").generation == old_result.generation
        with pytest.raises(ObjectNotFound):
            client.get(BUCKET, "quorum/fresh")
        # Nothing surfaces when the agents come back either.
        cluster.start()
        client.refresh()
        assert client.get(BUCKET, "quorum/existing") == old
        with pytest.raises(ObjectNotFound):
            client.get(BUCKET, "quorum/fresh")
        assert [i.key for i in client.list(BUCKET, "quorum/")] == ["quorum/existing"]


def test_agent_killed_mid_put_gives_degraded_put(make_cluster):
    cluster = make_cluster()
    data = seeded_bytes("midput", 24 * STRIPE + 11)
    with cluster.client(chunk_size=CHUNK, request_timeout=2.0, window=2) as client:
        with client.writer(BUCKET, "mid/obj", size=len(data)) as w:
            w.write(data[: 8 * STRIPE])
            victim = w._targets[5].node  # the node of parity fragment 5
            cluster.kill(victim)
            for start in range(8 * STRIPE, len(data), STRIPE):
                w.write(data[start : start + STRIPE])
        assert w.result.degraded and w.result.fragments[5] == ""
        assert client.get(BUCKET, "mid/obj") == data
