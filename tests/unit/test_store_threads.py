"""The local store used from many threads: uploads in parallel, reads that never wait for a write."""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from test_store import CHUNK, gen, write_fragment

from hcstore.config import AgentConfig
from hcstore.node.store import LocalStore

WAIT = 30.0


@pytest.fixture
def store(tmp_path):
    """A store on two mountpaths that fsyncs each fragment, as an agent's is."""
    local = LocalStore(
        AgentConfig(node_id="n1", mountpaths=(str(tmp_path / "mp0"), str(tmp_path / "mp1")), durability="commit")
    )
    yield local
    local.close()


def in_thread(work):
    """Run ``work`` on another thread and return its result (fails if it does not finish in time)."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(work).result(timeout=WAIT)


def test_uploads_from_many_threads_all_land_whole(store):

    def put(n: int) -> list[bytes]:
        return write_fragment(store, f"k{n}", gen(1), stripes=8)

    with ThreadPoolExecutor(8) as pool:
        written = dict(enumerate(pool.map(put, range(16))))
    for n, chunks in written.items():
        assert store.read_chunks("bkt", f"k{n}", gen(1), 0, 0, 8, 1 << 30)[1] == chunks
    assert store.stats()["fragments"] == 16 and not store.uploads
    assert all(mp.reserved == 0 for mp in store.mountpaths)


def test_reads_and_other_uploads_proceed_while_one_upload_is_being_sealed(store):
    chunks = write_fragment(store, "old", gen(1))
    slow = store.open_upload("bkt", "slow", gen(1), 0, CHUNK, None)
    with store.uploads[slow].lock:  # held while an upload's chunks are written and while it is fsynced
        assert in_thread(lambda: store.read_chunks("bkt", "old", gen(1), 0, 0, 2, 1 << 30))[1] == chunks
        assert in_thread(lambda: write_fragment(store, "other", gen(1)))
        assert in_thread(lambda: store.list("bkt", "", "", 10))
        assert in_thread(store.stats)["uploads"] == 1
        assert in_thread(store.expire_uploads) == 0 and slow in store.uploads
    store.write_chunk(slow, 0, bytes(CHUNK))


def test_a_busy_upload_is_not_expired(store):
    upload = store.open_upload("bkt", "a", gen(1), 0, CHUNK, None)
    later = store.uploads[upload].touched + 10 * store.config.upload_ttl
    with store.uploads[upload].lock:
        assert in_thread(lambda: store.expire_uploads(now=later)) == 0
    assert store.expire_uploads(now=later) == 1
    assert not store.uploads and all(mp.reserved == 0 for mp in store.mountpaths)


def test_a_read_finds_a_fragment_that_a_commit_renamed_before_the_index_learned_it(store):
    chunks = write_fragment(store, "a", gen(1), commit=False)
    [mp] = [mp for mp in store.mountpaths if mp.index.get("bkt", "a", gen(1), 0)]
    prepared = mp.fragment_path(mp.index.get("bkt", "a", gen(1), 0).name)
    os.replace(prepared, prepared.with_suffix(".frag"))  # the commit's rename, index not updated yet
    assert store.read_chunks("bkt", "a", gen(1), 0, 0, 2, 1 << 30)[1] == chunks
    os.replace(prepared.with_suffix(".frag"), prepared)
    store.commit("bkt", "a", gen(1), 0)
    assert store.read_chunks("bkt", "a", gen(1), 0, 0, 2, 1 << 30)[1] == chunks


def test_the_header_cache_notices_a_replaced_file(store):
    write_fragment(store, "a", gen(1), stripes=2)
    store.read_chunks("bkt", "a", gen(1), 0, 0, 1, 1 << 30)  # caches the header
    store.drop("bkt", "a", gen(1), 0)
    chunks = write_fragment(store, "a", gen(1), stripes=3)  # same name, new file
    assert store.read_chunks("bkt", "a", gen(1), 0, 0, 3, 1 << 30)[1] == chunks


def test_concurrent_commits_of_one_fragment_are_idempotent(store):
    write_fragment(store, "a", gen(1), commit=False)
    start = threading.Barrier(8)

    def commit() -> None:
        start.wait(WAIT)
        store.commit("bkt", "a", gen(1), 0)

    with ThreadPoolExecutor(8) as pool:
        for future in [pool.submit(commit) for _ in range(8)]:
            future.result(timeout=WAIT)
    assert [e["state"] for e in store.locate("bkt", "a")] == ["committed"]
    assert not store.disabled
