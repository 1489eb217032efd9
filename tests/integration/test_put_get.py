"""Put/get round trips on a healthy cluster: sizes, ranges, streams, files, listing, deletes, codecs."""

from __future__ import annotations

import ctypes
import io
import random

import pytest

from hcstore import InvalidRequest, ObjectNotFound
from hcstore.client import client as client_module
from integration_support import CHUNK, seeded_bytes

BUCKET = "roundtrip"
STRIPE = 4 * CHUNK  # EC 4+2 with 64 KiB chunks

SIZES = {
    "empty": 0,
    "one": 1,
    "chunk-1": CHUNK - 1,
    "chunk": CHUNK,
    "chunk+1": CHUNK + 1,
    "stripe": STRIPE,
    "stripes+tail": 7 * STRIPE + 12345,
    "several-mib": 3 * (1 << 20) + 777,
}


@pytest.mark.parametrize("name", list(SIZES))
def test_round_trip(shared_client, name):
    data = seeded_bytes(name, SIZES[name])
    result = shared_client.put(BUCKET, f"size/{name}", data)
    assert result.size == len(data)
    assert shared_client.get(BUCKET, f"size/{name}") == data
    info = shared_client.stat(BUCKET, f"size/{name}")
    assert (info.size, info.generation) == (len(data), result.generation)


def test_small_objects_are_replicated_and_big_ones_coded(shared_client):
    small = shared_client.put(BUCKET, "codec/small", b"x" * 1000)
    assert (small.codec, small.k, small.m) == ("replica", 1, 2)
    assert len([n for n in small.fragments if n]) == 3 and not small.degraded
    big = shared_client.put(BUCKET, "codec/big", seeded_bytes("big", 2 * STRIPE))
    assert big.codec != "replica" and (big.k, big.m) == (4, 2)
    assert len(set(big.fragments)) == 6 and not big.degraded
    info = shared_client.stat(BUCKET, "codec/big")
    assert (info.codec, info.k, info.m, info.fragments, info.degraded) == (big.codec, 4, 2, 6, False)


def test_small_object_of_unknown_size_is_replicated(shared_client):
    result = shared_client.put(BUCKET, "codec/small-stream", iter([b"ab", b"cd" * 100]))
    assert result.codec == "replica"
    assert shared_client.get(BUCKET, "codec/small-stream") == b"ab" + b"cd" * 100


def test_per_put_ec_and_codec_overrides(shared_client):
    data = seeded_bytes("ec21", 5 * STRIPE + 3)
    result = shared_client.put(BUCKET, "codec/ec21", data, ec="2+1")
    assert (result.k, result.m, len(result.fragments)) == (2, 1, 3)
    assert (shared_client.stat(BUCKET, "codec/ec21").k, shared_client.stat(BUCKET, "codec/ec21").m) == (2, 1)
    assert shared_client.get(BUCKET, "codec/ec21") == data

    data = seeded_bytes("zfec", 5 * STRIPE + 5)
    result = shared_client.put(BUCKET, "codec/zfec", data, codec="zfec")
    assert result.codec == "zfec"
    assert shared_client.stat(BUCKET, "codec/zfec").codec == "zfec"
    assert shared_client.get(BUCKET, "codec/zfec") == data


def test_meta_round_trips(shared_client):
    shared_client.put(BUCKET, "meta/obj", seeded_bytes("meta", 2 * STRIPE), meta={"step": "100", "who": "x"})
    assert shared_client.stat(BUCKET, "meta/obj").meta == {"step": "100", "who": "x"}


@pytest.fixture(scope="module")
def ranged(shared_client):
    data = seeded_bytes("ranged", 9 * STRIPE + 4321)
    shared_client.put(BUCKET, "range/obj", data)
    return data


@pytest.mark.parametrize(
    "offset,length",
    [
        (0, 1),
        (0, CHUNK),
        (CHUNK - 1, 2),
        (CHUNK, CHUNK),
        (STRIPE - 1, 1),
        (STRIPE - 1, 2),
        (STRIPE, STRIPE),
        (STRIPE - 10, 3 * STRIPE + 20),
        (2 * STRIPE + CHUNK + 7, CHUNK * 3),
        (9 * STRIPE, 4321),
        (9 * STRIPE + 4320, 1),
        (9 * STRIPE + 4321, 0),
        (100, 0),
        (5, None),
        (9 * STRIPE, None),
        (9 * STRIPE + 4000, 10_000),  # past the end is cut short
    ],
)
def test_range_get(shared_client, ranged, offset, length):
    expected = ranged[offset:] if length is None else ranged[offset : offset + length]
    assert shared_client.get(BUCKET, "range/obj", offset=offset, length=length) == expected


@pytest.mark.parametrize("offset,length", [(-1, 1), (0, -1), (9 * STRIPE + 4322, 1)])
def test_bad_range_is_invalid(shared_client, ranged, offset, length):
    with pytest.raises(InvalidRequest):
        shared_client.get(BUCKET, "range/obj", offset=offset, length=length)


def test_random_ranges(shared_client, ranged):
    rng = random.Random(1234)
    for _ in range(25):
        offset = rng.randrange(len(ranged))
        length = rng.randrange(3 * STRIPE)
        assert shared_client.get(BUCKET, "range/obj", offset=offset, length=length) == ranged[offset : offset + length]


def test_open_streams_and_seeks(shared_client, ranged):
    with shared_client.open(BUCKET, "range/obj") as stream:
        assert stream.seekable() and stream.readable()
        pieces = []
        while piece := stream.read(100_003):
            pieces.append(piece)
        assert b"".join(pieces) == ranged
        assert stream.tell() == len(ranged)
        rng = random.Random(99)
        for _ in range(15):
            position = rng.randrange(len(ranged))
            assert stream.seek(position) == position
            count = rng.randrange(1, 2 * STRIPE)
            assert stream.read(count) == ranged[position : position + count]
        stream.seek(-100, io.SEEK_END)
        assert stream.read() == ranged[-100:]
        stream.seek(STRIPE)
        stream.seek(CHUNK, io.SEEK_CUR)
        assert stream.read(10) == ranged[STRIPE + CHUNK : STRIPE + CHUNK + 10]
        stream.seek(0)
        assert stream.read(5) == ranged[:5]
        stream.seek(len(ranged) + 10)
        assert stream.read(10) == b""


def test_put_from_file_objects_and_iterators(shared_client, tmp_path):
    data = seeded_bytes("stream", 6 * STRIPE + 99)
    shared_client.put(BUCKET, "src/bytesio", io.BytesIO(data))
    assert shared_client.get(BUCKET, "src/bytesio") == data

    path = tmp_path / "blob"
    path.write_bytes(data)
    with open(path, "rb") as f:
        f.seek(1000)
        result = shared_client.put(BUCKET, "src/file-from-1000", f)
    assert result.size == len(data) - 1000
    assert shared_client.get(BUCKET, "src/file-from-1000") == data[1000:]

    rng = random.Random(5)
    cuts = sorted(rng.sample(range(1, len(data)), 40))
    pieces = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
    result = shared_client.put(BUCKET, "src/iter", iter(pieces))
    assert result.size == len(data) and result.codec != "replica"
    assert shared_client.get(BUCKET, "src/iter") == data


def test_writer_stream(shared_client):
    data = seeded_bytes("writer", 4 * STRIPE + 17)
    with shared_client.writer(BUCKET, "src/writer") as w:
        for start in range(0, len(data), 50_000):
            w.write(data[start : start + 50_000])
    assert w.result is not None and w.result.size == len(data)
    assert shared_client.get(BUCKET, "src/writer") == data


def test_writer_copies_a_view_over_memory_the_caller_reuses(shared_client):
    # torch.save hands each tensor to write() as a read-only view over bare memory (no owning object);
    # for a GPU tensor that memory is a host copy freed as soon as write() returns.
    data = seeded_bytes("borrowed", 8 * STRIPE)
    memory = ctypes.create_string_buffer(data, len(data))
    from_memory = ctypes.pythonapi.PyMemoryView_FromMemory
    from_memory.argtypes, from_memory.restype = (ctypes.c_void_p, ctypes.c_ssize_t, ctypes.c_int), ctypes.py_object
    borrowed = from_memory(ctypes.addressof(memory), len(data), 0x100)  # PyBUF_READ
    assert borrowed.readonly and borrowed.obj is None
    with shared_client.writer(BUCKET, "src/borrowed", size=len(data)) as w:
        w.write(borrowed)
        ctypes.memset(memory, 0xEE, len(data))  # the caller reuses its memory at once
    assert shared_client.get(BUCKET, "src/borrowed") == data


def test_writer_abort_leaves_nothing_visible(shared_client):
    with pytest.raises(RuntimeError):
        with shared_client.writer(BUCKET, "src/aborted") as w:
            w.write(seeded_bytes("aborted", 3 * STRIPE))
            raise RuntimeError("caller gives up")
    with pytest.raises(ObjectNotFound):
        shared_client.get(BUCKET, "src/aborted")


def test_put_file_and_get_file(shared_client, tmp_path):
    data = seeded_bytes("file", 5 * STRIPE + 1)
    source = tmp_path / "in.bin"
    source.write_bytes(data)
    result = shared_client.put_file(BUCKET, "files/one", source)
    assert result.size == len(data)
    target = tmp_path / "out.bin"
    assert shared_client.get_file(BUCKET, "files/one", target) == len(data)
    assert target.read_bytes() == data
    assert not list(tmp_path.glob(".*hcstore-part"))


def test_overwrite_returns_newest(shared_client):
    first = shared_client.put(BUCKET, "over/obj", seeded_bytes("v1", 3 * STRIPE))
    second = shared_client.put(BUCKET, "over/obj", seeded_bytes("v2", 1000))
    third = shared_client.put(BUCKET, "over/obj", seeded_bytes("v3", 2 * STRIPE + 1))
    assert first.generation < second.generation < third.generation
    assert shared_client.get(BUCKET, "over/obj") == seeded_bytes("v3", 2 * STRIPE + 1)
    assert shared_client.stat(BUCKET, "over/obj").generation == third.generation
    [entry] = shared_client.list(BUCKET, "over/")
    assert (entry.generation, entry.size) == (third.generation, 2 * STRIPE + 1)


def test_list_by_prefix_merges_agents(shared_client):
    keys = {"lst/a": 10, "lst/b/c": 2 * STRIPE, "lst/b/d": 70_000, "lst/bb": 3, "lstx": 4, "other/x": 5}
    for key, size in keys.items():
        shared_client.put("listing", key, seeded_bytes(key, size))
    everything = shared_client.list("listing")
    assert [i.key for i in everything] == sorted(keys)
    assert {i.key: i.size for i in everything} == keys
    assert [i.key for i in shared_client.list("listing", "lst/b")] == ["lst/b/c", "lst/b/d", "lst/bb"]
    assert [i.key for i in shared_client.list("listing", "lst/b/")] == ["lst/b/c", "lst/b/d"]
    assert shared_client.list("listing", "nothing/") == []
    assert "listing" in shared_client.buckets()


@pytest.mark.parametrize("page", [1000, 7])
def test_list_pages_past_one_agent_limit(shared_client, monkeypatch, page):
    # Replicated objects land on 3 of 6 agents; many keys exercise the merge over agents and pages.
    monkeypatch.setattr(client_module, "_LIST_PAGE", page)
    keys = [f"many/{i:04d}" for i in range(120)]
    if not shared_client.exists("paging", keys[-1]):
        for key in keys:
            shared_client.put("paging", key, key.encode())
    assert [i.key for i in shared_client.list("paging", "many/")] == keys


def test_delete(shared_client):
    data = seeded_bytes("doomed", 2 * STRIPE)
    shared_client.put(BUCKET, "del/doomed", data)
    shared_client.put(BUCKET, "del/kept", b"kept")
    shared_client.delete(BUCKET, "del/doomed")
    with pytest.raises(ObjectNotFound):
        shared_client.get(BUCKET, "del/doomed")
    with pytest.raises(FileNotFoundError):
        shared_client.stat(BUCKET, "del/doomed")
    assert not shared_client.exists(BUCKET, "del/doomed")
    assert [i.key for i in shared_client.list(BUCKET, "del/")] == ["del/kept"]
    with pytest.raises(ObjectNotFound):
        shared_client.delete(BUCKET, "del/doomed")
    # A key can be written again after a delete.
    shared_client.put(BUCKET, "del/doomed", b"reborn")
    assert shared_client.get(BUCKET, "del/doomed") == b"reborn"


def test_missing_object(shared_client):
    with pytest.raises(ObjectNotFound):
        shared_client.get(BUCKET, "never/written")
    with pytest.raises(ObjectNotFound):
        shared_client.open(BUCKET, "never/written")


@pytest.mark.parametrize(
    "bucket,key",
    [
        ("UPPER", "k"),
        ("ab", "k"),
        ("-bad", "k"),
        ("b" * 64, "k"),
        ("has space", "k"),
        ("", "k"),
        ("okbucket", ""),
        ("okbucket", "a\x00b"),
        ("okbucket", "k" * 1025),
    ],
)
def test_bad_names_are_invalid(shared_client, bucket, key):
    with pytest.raises(InvalidRequest):
        shared_client.put(bucket, key, b"data")
    with pytest.raises(InvalidRequest):
        shared_client.get(bucket, key)
    with pytest.raises(ValueError):  # InvalidRequest is a ValueError too
        shared_client.stat(bucket, key)


def test_bad_bucket_in_list_is_invalid(shared_client):
    with pytest.raises(InvalidRequest):
        shared_client.list("NOPE")


def test_key_may_look_like_a_path(shared_client):
    for key in ("../../etc/passwd", "/abs/path", "ünïcode/ключ", "a" * 1024):
        shared_client.put(BUCKET, key, key.encode())
        assert shared_client.get(BUCKET, key) == key.encode()


def test_range_get_at_the_object_s_own_boundaries(shared_client, ranged):
    """The writer picks the chunk size: test at the boundaries it actually chose."""
    version = shared_client.resolve(BUCKET, "range/obj")
    chunk, stripe = version.chunk_size, version.k * version.chunk_size
    assert version.stripes == -(-len(ranged) // stripe) and version.stripes > 1
    for boundary in (chunk, 2 * chunk, stripe, 2 * stripe, stripe + 3 * chunk, (version.stripes - 1) * stripe):
        for offset, length in (
            (boundary - 1, 2),
            (boundary, chunk),
            (boundary - chunk, chunk),
            (boundary, 1),
            (boundary - 1, stripe + 2),
        ):
            got = shared_client.get(BUCKET, "range/obj", offset=offset, length=length)
            assert got == ranged[offset : offset + length], (offset, length)
