"""The local store on real files: crash-atomic writes, watermark, index rebuild, retire."""

from __future__ import annotations

import os

import pytest

from ec import FragmentHeader, chunk_digest, header_to_dict
from hcstore.config import AgentConfig
from hcstore.errors import InvalidRequest, ObjectNotFound, StoreFull, UploadNotFound
from hcstore.node.store import LocalStore

CHUNK = 4096


def gen(n: int) -> str:
    return f"{n:019d}-0000-0000abcd"


def header(key: str, generation: str, idx: int, stripes: int, size: int) -> dict:
    fields = header_to_dict(
        FragmentHeader(
            bucket="bkt",
            key=key,
            generation=generation,
            kind="data",
            codec="zfec",
            k=2,
            m=1,
            chunk_size=CHUNK,
            size=size,
            index=idx,
            stripes=stripes,
            digests=bytes(32 * stripes),
            placement=("n1", "n2", "n3"),
            created_ns=1,
        )
    )
    del fields["digests"]
    return fields


def write_fragment(
    store: LocalStore, key: str, generation: str, idx: int = 0, stripes: int = 2, commit: bool = True
) -> list[bytes]:
    chunks = [os.urandom(CHUNK) for _ in range(stripes)]
    upload = store.open_upload("bkt", key, generation, idx, CHUNK, stripes * CHUNK)
    for s, chunk in enumerate(chunks):
        store.write_chunk(upload, s, chunk)
    store.prepare(upload, header(key, generation, idx, stripes, stripes * CHUNK * 2))
    if commit:
        store.commit("bkt", key, generation, idx)
    return chunks


@pytest.fixture
def make_store(tmp_path):
    stores = []

    def factory(**options) -> LocalStore:
        mountpaths = tuple(str(tmp_path / f"mp{i}") for i in range(options.pop("mountpaths", 2)))
        store = LocalStore(AgentConfig(node_id="n1", mountpaths=mountpaths, durability="commit", **options))
        stores.append(store)
        return store

    yield factory
    for store in stores:
        store.close()


def test_write_read_and_digests(make_store):
    store = make_store()
    chunks = write_fragment(store, "a", gen(1))
    digests, data = store.read_chunks("bkt", "a", gen(1), 0, 0, 2, 1 << 30)
    assert data == chunks
    assert digests == [chunk_digest(c) for c in chunks]
    [entry] = store.locate("bkt", "a")
    assert (entry["gen"], entry["state"], entry["info"]["k"]) == (gen(1), "committed", 2)


def test_prepared_fragment_is_not_listed_until_committed(make_store):
    store = make_store()
    write_fragment(store, "a", gen(1), commit=False)
    assert store.list("bkt", "", "", 100) == []
    store.commit("bkt", "a", gen(1), 0)
    assert [row[0] for row in store.list("bkt", "", "", 100)] == ["a"]


def test_out_of_order_and_wrong_size_chunks_are_refused(make_store):
    store = make_store()
    upload = store.open_upload("bkt", "a", gen(1), 0, CHUNK, None)
    with pytest.raises(InvalidRequest, match="expected 0"):
        store.write_chunk(upload, 1, bytes(CHUNK))
    with pytest.raises(InvalidRequest, match="expected 4096"):
        store.write_chunk(upload, 0, bytes(10))
    store.abort(upload)
    with pytest.raises(UploadNotFound):
        store.write_chunk(upload, 0, bytes(CHUNK))
    assert not [p for mp in store.mountpaths for p in mp.tmp_dir.glob("*.part")]


def test_prepare_rejects_a_header_for_another_object(make_store):
    store = make_store()
    upload = store.open_upload("bkt", "a", gen(1), 0, CHUNK, None)
    store.write_chunk(upload, 0, bytes(CHUNK))
    with pytest.raises(InvalidRequest, match="does not match"):
        store.prepare(upload, header("b", gen(1), 0, 1, CHUNK))


def test_watermark_refuses_before_writing(make_store):
    store = make_store(mountpaths=1, capacity_bytes=64 * 1024, high_watermark=0.5)
    write_fragment(store, "a", gen(1), stripes=4)
    before = sorted(p.name for p in store.mountpaths[0].path.rglob("*"))
    with pytest.raises(StoreFull, match="high watermark"):
        store.open_upload("bkt", "big", gen(2), 0, CHUNK, 64 * 1024)
    assert sorted(p.name for p in store.mountpaths[0].path.rglob("*")) == before
    _, data = store.read_chunks("bkt", "a", gen(1), 0, 0, 4, 1 << 30)
    assert len(data) == 4


def test_streaming_upload_stops_at_the_watermark(make_store):
    store = make_store(mountpaths=1, capacity_bytes=64 * 1024, high_watermark=0.5)
    upload = store.open_upload("bkt", "stream", gen(1), 0, CHUNK, None)
    with pytest.raises(StoreFull):
        for stripe in range(100):
            store.write_chunk(upload, stripe, bytes(CHUNK))
    assert upload not in store.uploads
    assert store.mountpaths[0].reserved == 0


def test_retire_removes_only_older_generations(make_store):
    store = make_store()
    write_fragment(store, "a", gen(1))
    write_fragment(store, "a", gen(2))
    write_fragment(store, "b", gen(1))
    assert store.retire("bkt", "a", gen(2)) == 1
    assert {e["gen"] for e in store.locate("bkt", "a")} == {gen(2)}
    assert len(store.locate("bkt", "b")) == 1
    with pytest.raises(ObjectNotFound):
        store.read_chunks("bkt", "a", gen(1), 0, 0, 1, 1 << 30)


def test_index_is_rebuilt_from_fragment_files(make_store, tmp_path):
    store = make_store()
    write_fragment(store, "a", gen(1))
    write_fragment(store, "b/c", gen(2), commit=False)
    paths = store.config.mountpaths
    store.close()
    for path in paths:
        for name in ("index.sqlite", "index.sqlite-wal", "index.sqlite-shm"):
            (tmp_path / os.path.basename(path) / name).unlink(missing_ok=True)
    reopened = make_store()
    assert {(e["gen"], e["state"]) for e in reopened.locate("bkt", "a")} == {(gen(1), "committed")}
    assert {(e["gen"], e["state"]) for e in reopened.locate("bkt", "b/c")} == {(gen(2), "prepared")}


def test_unfinished_uploads_are_discarded_on_restart(make_store):
    store = make_store()
    upload = store.open_upload("bkt", "a", gen(1), 0, CHUNK, None)
    store.write_chunk(upload, 0, bytes(CHUNK))
    mp = store.uploads[upload].mountpath
    os.close(store.uploads[upload].fd)  # as if the process died here
    store.uploads.clear()
    store.close()
    assert list(mp.tmp_dir.glob("*.part"))
    make_store()
    assert not list(mp.tmp_dir.glob("*.part"))


def test_mountpath_identity_survives_a_rename(make_store, tmp_path):
    store = make_store(mountpaths=1)
    old_id = store.mountpaths[0].id
    store.close()
    os.rename(tmp_path / "mp0", tmp_path / "elsewhere")
    moved = LocalStore(AgentConfig(node_id="n1", mountpaths=(str(tmp_path / "elsewhere"),)))
    assert moved.mountpaths[0].id == old_id
    moved.close()
