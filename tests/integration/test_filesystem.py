"""``hcstore://`` through fsspec: URLs, ranges, atomic writes, pickling, directories, errors, degraded reads.

fsspec's generic contract lives in test_fsspec_contract.py; this module tests
what is particular to hcstore.
"""

from __future__ import annotations

import gc
import multiprocessing
import pickle

import fsspec
import pytest
from fsspec.callbacks import Callback

from hcstore import ObjectChanged
from hcstore.filesystem import HCStoreFileSystem
from integration_support import CHUNK, key_env, seeded_bytes

BUCKET = "fs-tests"
STRIPE = 4 * CHUNK  # 4+2 with 64 KiB chunks
BIG = 5 * STRIPE + 1234  # spans six stripes, the last one partial


@pytest.fixture(scope="module")
def fs(shared_cluster):
    filesystem = HCStoreFileSystem(
        str(shared_cluster.path), chunk_size=CHUNK, request_timeout=5.0, skip_instance_cache=True
    )
    yield filesystem
    filesystem.close()


@pytest.fixture
def fresh_instances():
    """fsspec caches filesystems by their arguments; tests that build them from the environment start clean."""
    HCStoreFileSystem.clear_instance_cache()
    yield
    HCStoreFileSystem.clear_instance_cache()


def url(key: str) -> str:
    return f"hcstore://{BUCKET}/{key}"


def child_reads_and_writes(blob: bytes, source: str, target: str, data: bytes) -> tuple[bytes, str]:
    """Run in a spawned process: unpickle a filesystem, read one object and write another."""
    fs = pickle.loads(blob)
    got = fs.cat_file(source)
    fs.pipe_file(target, data)
    return got, fs.info(target)["generation"]


# ---------------------------------------------------------------------- URLs and options


@pytest.mark.parametrize("form", ["directory", "endpoint"])
def test_fsspec_open_by_url_finds_the_cluster_from_the_environment(shared_cluster, monkeypatch, fresh_instances, form):
    cluster = str(shared_cluster.path) if form == "directory" else shared_cluster.controller_endpoint()
    monkeypatch.setenv("HCSTORE_CLUSTER", cluster)
    if form == "endpoint":
        for name, value in key_env(shared_cluster).items():
            monkeypatch.setenv(name, value)
    data = seeded_bytes(form, STRIPE + 7)
    with fsspec.open(url(f"env/{form}.bin"), "wb") as f:
        f.write(data)
    with fsspec.open(url(f"env/{form}.bin"), "rb") as f:
        assert f.read() == data
    assert fsspec.filesystem("hcstore").cluster == cluster


def test_storage_options_reach_the_client(shared_cluster):
    fs = fsspec.filesystem(
        "hcstore", cluster=str(shared_cluster.path), ec="2+1", chunk_size=CHUNK, skip_instance_cache=True
    )
    fs.pipe_file(url("options/coded-2+1"), seeded_bytes("options", 2 * STRIPE))
    stat = fs.client.stat(BUCKET, "options/coded-2+1")
    assert (stat.k, stat.m) == (2, 1)
    assert fs.client.config.chunk_size == CHUNK
    fs.close()


def test_bad_options_and_names_are_value_errors_that_say_what_is_wrong(fs, shared_cluster):
    with pytest.raises(ValueError, match="unknown hcstore storage option.*chunksize"):
        HCStoreFileSystem(str(shared_cluster.path), chunksize=CHUNK)
    with pytest.raises(ValueError, match="chunk_size=100"):
        HCStoreFileSystem(str(shared_cluster.path), chunk_size=100)
    with pytest.raises(ValueError, match="invalid bucket name 'Bad_Bucket'.*3-63 lowercase"):
        fs.pipe_file("hcstore://Bad_Bucket/key", b"x")
    with pytest.raises(ValueError, match="invalid bucket name 'ab'"):
        fs.ls("hcstore://ab")
    with pytest.raises(ValueError, match="invalid bucket name"):
        fs.makedirs("hcstore://UPPER/dir", exist_ok=True)


def test_missing_objects_raise_file_not_found(fs):
    missing = url("missing/nothing-here")
    for call in (
        lambda: fs.open(missing, "rb"),
        lambda: fs.cat_file(missing),
        lambda: fs.info(missing),
        lambda: fs.rm_file(missing),
        lambda: fs.ls(missing),
        lambda: fs.get_file(missing, "/dev/null"),
    ):
        with pytest.raises(FileNotFoundError):
            call()
    assert not fs.exists(missing)
    assert fs.find(url("missing")) == []


# ---------------------------------------------------------------------- reads


def test_ranges_seek_and_reads_of_every_size(fs):
    data = seeded_bytes("ranges", BIG)
    fs.pipe_file(url("ranges/big"), data)
    assert fs.cat_file(url("ranges/big")) == data
    assert fs.cat_file(url("ranges/big"), start=STRIPE - 5, end=3 * STRIPE + 9) == data[STRIPE - 5 : 3 * STRIPE + 9]
    assert fs.cat_file(url("ranges/big"), start=-100) == data[-100:]
    assert fs.cat_file(url("ranges/big"), start=10, end=-10) == data[10:-10]
    assert fs.cat_file(url("ranges/big"), start=BIG + 5) == b""
    starts, ends = [0, CHUNK - 1, BIG - 3], [10, 2 * CHUNK + 1, BIG]
    assert fs.cat_ranges([url("ranges/big")] * 3, starts, ends) == [
        data[s:e] for s, e in zip(starts, ends, strict=True)
    ]

    with fs.open(url("ranges/big"), "rb", block_size=CHUNK) as f:
        assert f.size == BIG
        assert f.read(100) == data[:100]  # small: through the read-ahead cache
        f.seek(STRIPE + 3)
        assert f.read(2 * STRIPE) == data[STRIPE + 3 : 3 * STRIPE + 3]  # large: straight from the stripes
        f.seek(-50, 2)
        assert f.tell() == BIG - 50
        assert f.read() == data[-50:] and f.read(10) == b""
        f.seek(7)
        buffer = bytearray(3 * CHUNK)
        assert f.readinto(buffer) == len(buffer) and buffer == data[7 : 7 + 3 * CHUNK]
        f.seek(-10, 1)
        assert f.read(20) == data[7 + 3 * CHUNK - 10 : 7 + 3 * CHUNK + 10]


def test_an_open_file_reads_the_version_it_opened(fs):
    old, new = seeded_bytes("pinned-old", 3 * STRIPE), seeded_bytes("pinned-new", 3 * STRIPE)
    fs.pipe_file(url("pinned"), old)
    with fs.open(url("pinned"), "rb", block_size=CHUNK) as f:
        head = f.read(CHUNK)
        fs.pipe_file(url("pinned"), new)
        generation = f.details["generation"]
        try:
            assert head + f.read() == old
        except ObjectChanged:  # the old version was retired: refused, never mixed
            pass
    assert fs.cat_file(url("pinned")) == new
    assert fs.info(url("pinned"))["generation"] > generation


def test_a_pickled_read_file_goes_on_with_its_version(fs):
    old, new = seeded_bytes("reopen-old", 2 * STRIPE), seeded_bytes("reopen-new", 2 * STRIPE)
    fs.pipe_file(url("reopen"), old)
    with fs.open(url("reopen"), "rb") as f:
        f.seek(100)
        clone = pickle.loads(pickle.dumps(f))
        assert clone.tell() == 100 and clone.read() == old[100:]
        blob = pickle.dumps(f)
    fs.pipe_file(url("reopen"), new)
    with pytest.raises(ObjectChanged, match="open it again"):
        pickle.loads(blob)


# ---------------------------------------------------------------------- writes


def test_a_write_is_invisible_until_close(fs):
    data = seeded_bytes("invisible", 3 * STRIPE + 11)
    fs.pipe_file(url("invisible/old"), b"old version")
    for key, before in (("invisible/new", None), ("invisible/old", b"old version")):
        f = fs.open(url(key), "wb", block_size=CHUNK)
        f.write(data[: STRIPE + 1])
        f.write(memoryview(data)[STRIPE + 1 :])  # stripes are on the agents by now
        assert f.tell() == len(data)
        assert (fs.cat_file(url(key)) if fs.exists(url(key)) else None) == before
        f.close()
        assert fs.cat_file(url(key)) == data


def test_an_exception_inside_a_write_keeps_the_previous_version(fs):
    fs.pipe_file(url("aborted/existing"), b"previous")
    for key in ("aborted/existing", "aborted/new"):
        with pytest.raises(RuntimeError, match="training crashed"):
            with fs.open(url(key), "wb") as f:
                f.write(seeded_bytes("partial", 2 * STRIPE + 1))
                raise RuntimeError("training crashed")
        assert f.closed
    assert fs.cat_file(url("aborted/existing")) == b"previous"
    assert not fs.exists(url("aborted/new"))


def test_a_write_dropped_without_close_is_discarded(fs, caplog):
    f = fs.open(url("dropped"), "wb")
    f.write(seeded_bytes("dropped", STRIPE + 1))
    del f
    gc.collect()
    assert not fs.exists(url("dropped"))
    assert "never closed" in caplog.text


def test_a_transaction_commits_at_its_end_and_discards_on_error(shared_cluster, fresh_instances):
    options = {"cluster": str(shared_cluster.path), "chunk_size": CHUNK}
    fs = fsspec.filesystem("hcstore", **options)  # fsspec.open below gets this same instance
    with fs.transaction:
        with fsspec.open(url("txn/a"), "wb", **options) as f:
            f.write(b"a")
        fs.pipe_file(url("txn/b"), b"b")  # pipe is immediate, as in every fsspec fs
        with fs.open(url("txn/c"), "wb") as f:
            f.write(b"c")
        assert not fs.exists(url("txn/c"))
    assert fs.cat([url("txn/a"), url("txn/c")]) == {f"{BUCKET}/txn/a": b"a", f"{BUCKET}/txn/c": b"c"}
    with pytest.raises(RuntimeError):
        with fs.transaction:
            with fs.open(url("txn/a"), "wb") as f:
                f.write(b"replaced")
            raise RuntimeError("abandon")
    assert fs.cat_file(url("txn/a")) == b"a"
    fs.close()


def test_append_is_refused(fs):
    with pytest.raises(NotImplementedError, match="immutable"):
        fs.open(url("append"), "ab")


def test_checksum_ukey_and_modified_change_with_every_version(fs):
    fs.pipe_file(url("versions"), b"same bytes")
    first = fs.info(url("versions"))
    checksum, ukey, modified = fs.checksum(url("versions")), fs.ukey(url("versions")), fs.modified(url("versions"))
    fs.pipe_file(url("versions"), b"same bytes")
    second = fs.info(url("versions"))
    assert second["generation"] > first["generation"] and second["size"] == first["size"]
    assert fs.checksum(url("versions")) != checksum
    assert fs.ukey(url("versions")) == second["generation"] != ukey
    assert fs.modified(url("versions")) >= modified


def test_put_file_and_get_file_stream_with_progress(fs, tmp_path):
    class Recorder(Callback):
        def __init__(self):
            super().__init__()
            self.sizes: list[int] = []

        def call(self, *args, **kwargs):
            self.sizes.append(self.value)

    data = seeded_bytes("local", BIG)
    (tmp_path / "up.bin").write_bytes(data)
    uploaded = Recorder()
    fs.put_file(str(tmp_path / "up.bin"), url("files/up.bin"), callback=uploaded)
    assert uploaded.size == BIG and uploaded.value == BIG
    downloaded = Recorder()
    fs.get_file(url("files/up.bin"), str(tmp_path / "down" / "got.bin"), callback=downloaded)
    assert (tmp_path / "down" / "got.bin").read_bytes() == data
    assert downloaded.value == BIG and len(downloaded.sizes) > 1
    assert [p.name for p in (tmp_path / "down").iterdir()] == ["got.bin"]  # no partial file left


# ---------------------------------------------------------------------- directories


def test_ls_info_find_glob_and_du_see_prefixes_as_directories(fs):
    base = "tree"
    for key, size in {"a.txt": 3, "sub/b.bin": 5, "sub/deeper/c.bin": 7, "sub2/d": 11}.items():
        fs.pipe_file(url(f"{base}/{key}"), b"x" * size)
    root = f"{BUCKET}/{base}"
    listing = fs.ls(url(base))
    assert [(e["name"], e["type"]) for e in listing] == [
        (f"{root}/a.txt", "file"),
        (f"{root}/sub", "directory"),
        (f"{root}/sub2", "directory"),
    ]
    assert listing[0]["size"] == 3 and "generation" in listing[0]
    assert fs.ls(url(f"{base}/sub"), detail=False) == [f"{root}/sub/b.bin", f"{root}/sub/deeper"]
    assert fs.ls(url(f"{base}/a.txt"), detail=False) == [f"{root}/a.txt"]
    assert BUCKET in fs.ls("hcstore://", detail=False)

    assert fs.info(url(f"{base}/sub")) == {"name": f"{root}/sub", "size": 0, "type": "directory"}
    assert fs.info(url(f"{base}/sub/b.bin"))["type"] == "file"
    assert fs.isdir(url(f"{base}/sub")) and not fs.isfile(url(f"{base}/sub"))
    assert fs.isfile(url(f"{base}/a.txt")) and not fs.isdir(url(f"{base}/a.txt"))
    assert fs.isdir(f"hcstore://{BUCKET}") and fs.isdir("hcstore://")

    fs.makedirs(url(f"{base}/empty"), exist_ok=True)  # nothing is made: no empty directories
    assert not fs.exists(url(f"{base}/empty"))

    assert fs.find(url(base)) == [f"{root}/a.txt", f"{root}/sub/b.bin", f"{root}/sub/deeper/c.bin", f"{root}/sub2/d"]
    assert fs.find(url(base), maxdepth=1, withdirs=True) == [root, f"{root}/a.txt", f"{root}/sub", f"{root}/sub2"]
    assert fs.glob(url(f"{base}/sub*/*.bin")) == [f"{root}/sub/b.bin"]
    assert fs.glob(url(f"{base}/**/*.bin")) == [f"{root}/sub/b.bin", f"{root}/sub/deeper/c.bin"]
    assert fs.du(url(base)) == 26
    assert fs.du(url(base), total=False, maxdepth=2)[f"{root}/sub/b.bin"] == 5


def test_rm_recursive_and_its_errors(fs):
    for key in ("rm/keep", "rm/dir/a", "rm/dir/sub/b", "rm/dir/sub/deep/c"):
        fs.pipe_file(url(key), b"x")
    with pytest.raises(IsADirectoryError, match="recursive=True"):
        fs.rm(url("rm/dir"))
    fs.rm(url("rm/dir"), recursive=True)
    assert not fs.exists(url("rm/dir"))
    assert fs.find(url("rm")) == [f"{BUCKET}/rm/keep"]
    with pytest.raises(FileNotFoundError):
        fs.rm(url("rm/never-was"))


def test_mv_of_a_file_and_of_a_directory(fs):
    data = seeded_bytes("mv", 2 * STRIPE + 3)
    fs.pipe_file(url("mv/src.bin"), data)
    fs.mv(url("mv/src.bin"), url("mv/dst.bin"))
    assert not fs.exists(url("mv/src.bin")) and fs.cat_file(url("mv/dst.bin")) == data
    fs.pipe_file(url("mv/dir/one"), b"1")
    fs.pipe_file(url("mv/dir/sub/two"), b"2")
    fs.mv(url("mv/dir"), url("mv/moved"), recursive=True)
    assert fs.find(url("mv"), withdirs=False) == [
        f"{BUCKET}/mv/dst.bin",
        f"{BUCKET}/mv/moved/one",
        f"{BUCKET}/mv/moved/sub/two",
    ]


# ---------------------------------------------------------------------- processes and failures


def test_a_used_filesystem_pickles_into_a_spawned_process(fs):
    data = seeded_bytes("to-child", 2 * STRIPE + 5)
    fs.pipe_file(url("pickle/from-parent"), data)  # the filesystem now holds live sockets
    blob = pickle.dumps(fs)
    child_data = seeded_bytes("from-child", STRIPE + 9)
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        got, generation = pool.apply_async(
            child_reads_and_writes,
            (  # a child that dies: no hang
                blob,
                url("pickle/from-parent"),
                url("pickle/from-child"),
                child_data,
            ),
        ).get(timeout=60)
    assert got == data
    assert fs.cat_file(url("pickle/from-child")) == child_data
    assert fs.info(url("pickle/from-child"))["generation"] == generation
    clone = pickle.loads(blob)
    assert clone.cluster == fs.cluster and clone.settings == fs.settings


def test_reads_through_fsspec_survive_killed_agents(make_cluster):
    cluster = make_cluster()
    fs = HCStoreFileSystem(str(cluster.path), chunk_size=CHUNK, request_timeout=5.0, skip_instance_cache=True)
    objects = {
        f"degraded/{i}": seeded_bytes(f"degraded-{i}", size) for i, size in enumerate([10, CHUNK + 1, BIG, 3 * STRIPE])
    }
    for key, data in objects.items():
        fs.pipe_file(url(key), data)
    for node in ("n2", "n5"):  # m = 2 of the 6 agents
        cluster.kill(node)
    try:
        for key, data in objects.items():
            assert fs.cat_file(url(key)) == data
            with fs.open(url(key), "rb", block_size=CHUNK) as f:
                f.seek(len(data) // 2)
                assert f.read() == data[len(data) // 2 :]
        assert fs.find(url("degraded")) == sorted(f"{BUCKET}/{key}" for key in objects)
    finally:
        fs.close()
