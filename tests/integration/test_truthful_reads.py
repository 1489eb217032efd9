"""Reads that tell the truth: with more than m agents gone, a read never says "not found" or hands back an
older generation unless the agents that answered prove it; it raises the retryable NotProven naming the
agents it could not ask. Listings are complete or say so. With at most m agents gone every answer stands.
"""

from __future__ import annotations

import random

import pytest

from hcstore import ObjectNotFound, Retryable
from hcstore.checkpoints import CheckpointManager
from hcstore.client.upload import store_tombstone
from hcstore.errors import AgentUnavailable, NotProven
from hcstore.filesystem import HCStoreFileSystem
from integration_support import CHUNK, clean_env, cli_ok, one_line_error, run_cli, seeded_bytes
from placement import home_set

BUCKET = "truth"
STRIPE = 4 * CHUNK
SMALL = 64 << 10  # replicate_below: smaller objects are replicated (3 copies for 4+2)


def _mixed_objects() -> dict[str, bytes]:
    rng = random.Random(5)
    sizes = [0, 1, 1000, 30_000, SMALL - 1, SMALL, STRIPE + 7, 3 * STRIPE, 5 * STRIPE + 11]
    sizes += [rng.randrange(1, 4 * STRIPE) for _ in range(9)]
    return {f"mix/{i:02d}": seeded_bytes(f"truth-{i}", size) for i, size in enumerate(sizes)}


@pytest.fixture
def loaded(make_cluster):
    cluster = make_cluster(agents=6, ec="4+2")
    objects = _mixed_objects()
    with cluster.client(chunk_size=CHUNK, request_timeout=5.0) as client:
        for key, data in objects.items():
            client.put(BUCKET, key, data)
    return cluster, objects


def _fs(cluster) -> HCStoreFileSystem:
    return HCStoreFileSystem(str(cluster.path), chunk_size=CHUNK, request_timeout=5.0, skip_instance_cache=True)


def test_more_than_m_agents_down_is_never_reported_as_absent(loaded, tmp_path):
    cluster, objects = loaded
    victims = {"n1", "n3", "n5"}  # m + 1 = 3 of the 6 agents
    for node in sorted(victims):
        cluster.kill(node)
    with cluster.client(chunk_size=CHUNK, request_timeout=5.0) as client:
        # The agents left (3 of the 6 read candidates) cannot rule out a newer version on the 3 silent ones,
        # for any key: small objects whose copies all sat on the victims included. Never "not found".
        for key in objects:
            for read in (client.get, client.stat):
                with pytest.raises(NotProven) as unproven:
                    read(BUCKET, key)
                assert set(unproven.value.unreached) == victims, (key, unproven.value)
                assert all(node in str(unproven.value) for node in victims), str(unproven.value)
                assert isinstance(unproven.value, Retryable) and not isinstance(unproven.value, FileNotFoundError)
        with pytest.raises(NotProven) as missing:
            client.get(BUCKET, "mix/never-written")
        assert set(missing.value.unreached) == victims
        assert "cannot tell whether it exists" in str(missing.value)
        with pytest.raises(NotProven):
            client.exists(BUCKET, "mix/never-written")
        with pytest.raises(NotProven):
            client.exists(BUCKET, "mix/00")

        # Listings: an error naming the silent agents, or, when asked for, a partial listing that says so.
        with pytest.raises(NotProven) as listing:
            client.list(BUCKET)
        assert set(listing.value.unreached) == victims and "partial listing" in str(listing.value)
        partial = client.list(BUCKET, partial=True)
        assert not partial.complete and set(partial.unreached) == victims
        assert {info.key for info in partial} <= set(objects)
        assert {info.key for info in partial} >= {k for k, d in objects.items() if len(d) >= SMALL}  # 6 fragments
        with pytest.raises(NotProven):
            client.buckets()
        assert BUCKET in client.buckets(partial=True)

    fs = _fs(cluster)
    for call in (
        lambda: fs.ls(f"{BUCKET}/mix"),
        lambda: fs.find(BUCKET),
        lambda: fs.exists(f"{BUCKET}/mix/00"),
        lambda: fs.info(f"{BUCKET}/mix/nothing"),
        lambda: fs.exists(f"{BUCKET}/nothing/"),
    ):
        with pytest.raises(NotProven):
            call()
    seen = fs.ls(f"{BUCKET}/mix", detail=False, partial=True)
    assert not seen.complete and set(seen.unreached) == victims and seen
    assert fs.isdir(f"{BUCKET}/mix")  # something seen under it proves it
    found = fs.find(BUCKET, detail=True, partial=True)
    assert not found.complete and set(found) <= {f"{BUCKET}/{k}" for k in objects}
    fs.close()

    env = clean_env(tmp_path)
    failing = run_cli("--cluster", str(cluster.path), "ls", f"hcstore://{BUCKET}/mix/", env=env)
    line = one_line_error(failing, "E_NOT_PROVEN", *sorted(victims))
    assert not failing.stdout
    assert line.startswith("error (E_NOT_PROVEN)")
    partial_ls = cli_ok(run_cli("--cluster", str(cluster.path), "ls", "--partial", f"hcstore://{BUCKET}/mix/", env=env))
    listed = partial_ls.stdout.decode().splitlines()
    assert listed and all(f"hcstore://{BUCKET}/mix/" in row for row in listed)
    note = partial_ls.stderr.decode().strip().splitlines()
    assert len(note) == 1 and note[0].startswith("partial listing:") and all(v in note[0] for v in victims)
    stat = run_cli("--cluster", str(cluster.path), "stat", f"hcstore://{BUCKET}/mix/missing", env=env)
    one_line_error(stat, "E_NOT_PROVEN")


def test_m_agents_down_every_answer_stands(loaded, tmp_path):
    cluster, objects = loaded
    for node in ("n2", "n6"):
        cluster.kill(node)
    with cluster.client(chunk_size=CHUNK, request_timeout=5.0) as client:
        for key, data in objects.items():
            assert client.get(BUCKET, key) == data, key
            assert client.stat(BUCKET, key).size == len(data)
            assert client.exists(BUCKET, key)
        with pytest.raises(ObjectNotFound):
            client.get(BUCKET, "mix/never-written")
        assert not client.exists(BUCKET, "mix/never-written")
        listing = client.list(BUCKET)
        assert listing.complete and set(listing.unreached) == {"n2", "n6"}
        assert [info.key for info in listing] == sorted(objects)
        client.delete(BUCKET, "mix/00")  # the tombstone reaches m + 1 nodes of its home set
        with pytest.raises(ObjectNotFound):
            client.get(BUCKET, "mix/00")
    fs = _fs(cluster)
    assert not fs.exists(f"{BUCKET}/mix/never-written")
    assert sorted(fs.ls(f"{BUCKET}/mix", detail=False)) == [f"{BUCKET}/{k}" for k in sorted(objects)[1:]]
    fs.close()
    env = clean_env(tmp_path)
    complete = cli_ok(run_cli("--cluster", str(cluster.path), "ls", f"hcstore://{BUCKET}/mix/", env=env))
    assert len(complete.stdout.decode().splitlines()) == len(objects) - 1
    assert b"partial" not in complete.stderr


def test_an_older_generation_is_not_passed_off_as_the_newest(make_cluster):
    """The new generation of a small object lands on other agents than the old one; those agents go away
    and the old holders come back. The old generation is all that answers; the read must not return it."""
    cluster = make_cluster(agents=6, ec="4+2")
    old, new = b"old contents" * 100, b"new contents" * 100
    with cluster.client(request_timeout=5.0) as client:
        client.put(BUCKET, "stale/obj", old)
        first = client.resolve(BUCKET, "stale/obj")
        old_holders = [node for node in first.found_at if node]
        assert first.k == 1 and len(old_holders) == 3  # replicated: 3 copies
        away = old_holders[:2]  # two old holders go away ...
        for node in away:
            cluster.kill(node)
        client.refresh()
        second = client.put(BUCKET, "stale/obj", new)  # ... so the new copies go to spares
        new_holders = [node for node in second.fragments if node]
        assert len(new_holders) == 3 and not set(new_holders) & set(away)
        for node in new_holders:  # the new generation's holders go away,
            cluster.kill(node)
        for node in away:  # and the old holders come back
            cluster.start(node)
        client.refresh()
        for node in away:  # they still hold the old, committed copy
            reply = client.transport.request(client.endpoint(node), "locate", {"bucket": BUCKET, "key": "stale/obj"})
            assert [(e["gen"], e["state"]) for e in reply.header["entries"]] == [(first.generation, "committed")]
        with pytest.raises(NotProven) as stale:
            client.get(BUCKET, "stale/obj")
        assert set(stale.value.unreached) == set(new_holders)
        assert f"found generation {first.generation}, but a newer one may exist" in str(stale.value)
        with pytest.raises(NotProven):
            client.stat(BUCKET, "stale/obj")
        cluster.start(new_holders[0])  # one holder of the new generation is back
        client.refresh()
        assert client.get(BUCKET, "stale/obj") == new
        assert client.stat(BUCKET, "stale/obj").generation == second.generation


def test_a_delete_short_of_its_quorum_is_retryable_and_completed_later(make_cluster):
    cluster = make_cluster(agents=6, ec="4+2")
    with cluster.client(request_timeout=5.0) as client:
        client.put(BUCKET, "del/obj", b"doomed")
        home = home_set(f"{BUCKET}/del/obj", client.cluster_map, 1, 2)  # a tombstone's home set: 5 nodes
        away = home[:3]
        for node in away:
            cluster.kill(node)
        client.refresh()
        gen = client.clock.now()
        with pytest.raises(AgentUnavailable, match="only 2 of the 3 nodes") as short:
            store_tombstone(client, BUCKET, "del/obj", gen, 2)
        assert isinstance(short.value, Retryable) and "retry the delete" in str(short.value)
        for node in away:
            cluster.start(node)
        client.refresh()
        client.delete(BUCKET, "del/obj")  # finds the short tombstone and completes it
        holders = [
            node
            for node in home
            if any(
                e["gen"] == gen
                for e in client.transport.request(
                    client.endpoint(node), "locate", {"bucket": BUCKET, "key": "del/obj"}
                ).header["entries"]
            )
        ]
        assert len(holders) >= 3
        with pytest.raises(ObjectNotFound):
            client.get(BUCKET, "del/obj")
        with pytest.raises(ObjectNotFound):
            client.delete(BUCKET, "del/obj")  # deleted, and that delete is complete


def test_latest_checkpoint_is_not_guessed_with_m_plus_one_agents_down(make_cluster):
    cluster = make_cluster(agents=6, ec="4+2")
    root = f"hcstore://ckpt/run-{random.Random().getrandbits(32):08x}"
    options = {"cluster": str(cluster.path), "chunk_size": CHUNK, "request_timeout": 5.0}
    with CheckpointManager(root, storage_options=options) as mgr:
        mgr.save(1, {"model.bin": seeded_bytes("ckpt", 3 * STRIPE)})
        mgr.save(2, {"model.bin": seeded_bytes("ckpt2", 3 * STRIPE)})
    for node in ("n2", "n4", "n6"):
        cluster.kill(node)
    with CheckpointManager(root, storage_options=options) as mgr:
        with pytest.raises(NotProven):
            mgr.latest()
