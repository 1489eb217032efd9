"""Concurrent writers and readers of one key: every read is exactly one whole version, last writer wins."""

from __future__ import annotations

import hashlib
import random
import struct
import threading
import time

from hcstore import ObjectChanged
from hcstore.client.upload import FragmentUploads
from hcstore.client.writer import PutResult
from integration_support import CHUNK, seeded_bytes

BUCKET = "race"
_HEAD = struct.Struct("<IIQ32s")  # writer id, sequence, body length, sha256 of the body


def make_version(writer: int, seq: int, rng: random.Random) -> bytes:
    size = rng.choice([100, 5000, 3 * 4 * CHUNK + rng.randrange(4 * CHUNK), 600_000])
    body = rng.randbytes(size)
    return _HEAD.pack(writer, seq, len(body), hashlib.sha256(body).digest()) + body


def check_version(blob: bytes) -> tuple[int, int]:
    """The (writer, sequence) of a whole, unmixed version; fails on anything else."""
    assert len(blob) >= _HEAD.size, f"read {len(blob)} bytes, shorter than the header"
    writer, seq, length, digest = _HEAD.unpack_from(blob)
    body = blob[_HEAD.size :]
    assert len(body) == length, f"version {writer}/{seq}: body of {len(body)} bytes, header says {length}"
    assert hashlib.sha256(body).digest() == digest, f"version {writer}/{seq}: body does not match its hash"
    return writer, seq


def test_concurrent_writers_and_readers_of_one_key(shared_cluster):
    key = "hot"
    with shared_cluster.client(chunk_size=CHUNK) as setup:
        first = make_version(99, 0, random.Random(0))
        setup.put(BUCKET, key, first)
    written: dict[tuple[int, int], tuple[str, bytes]] = {(99, 0): ("", first)}
    lock = threading.Lock()
    errors: list[BaseException] = []
    reads: list[tuple[int, int]] = []
    changed = [0]
    writers_done = threading.Event()

    def writer(wid: int) -> None:
        rng = random.Random(1000 + wid)
        try:
            with shared_cluster.client(chunk_size=CHUNK, request_timeout=10.0) as client:
                for seq in range(1, 6):
                    blob = make_version(wid, seq, rng)
                    result = client.put(BUCKET, key, blob)
                    with lock:
                        written[(wid, seq)] = (result.generation, blob)
        except BaseException as exc:  # surfaced by the main thread
            errors.append(exc)

    def reader(rid: int) -> None:
        try:
            with shared_cluster.client(chunk_size=CHUNK, request_timeout=10.0) as client:
                while not writers_done.is_set():
                    try:
                        if rid == 0:
                            with client.open(BUCKET, key) as stream:
                                blob = stream.read()
                        else:
                            blob = client.get(BUCKET, key)
                    except ObjectChanged:
                        changed[0] += 1  # retryable by contract: the version vanished mid-read
                        continue
                    ident = check_version(blob)
                    with lock:
                        reads.append(ident)
                        assert written.get(ident, (None, blob))[1] == blob or ident not in written
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(3)]
    readers = [threading.Thread(target=reader, args=(r,)) for r in range(2)]
    for t in threads + readers:
        t.start()
    for t in threads:
        t.join(timeout=120)
    writers_done.set()
    for t in readers:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads + readers), "a thread hung"
    assert not errors, errors
    assert len(written) == 1 + 3 * 5
    assert len(reads) >= 5, f"only {len(reads)} reads completed ({changed[0]} saw ObjectChanged)"
    assert set(reads) <= set(written), set(reads) - set(written)

    with shared_cluster.client(chunk_size=CHUNK) as client:
        final = client.get(BUCKET, key)
        ident = check_version(final)
        assert written[ident][1] == final
        newest = max(written.values())[0]
        assert client.stat(BUCKET, key).generation == newest  # last writer wins
        assert written[ident][0] == newest


def test_threads_sharing_one_client(shared_client):
    errors: list[BaseException] = []

    def work(tid: int) -> None:
        try:
            for i in range(5):
                data = seeded_bytes(f"{tid}-{i}", random.Random(tid * 10 + i).randrange(1, 6 * 4 * CHUNK))
                shared_client.put(BUCKET, f"shared/{tid}/{i}", data)
                assert shared_client.get(BUCKET, f"shared/{tid}/{i}") == data
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    assert len(shared_client.list(BUCKET, "shared/")) == 20


def test_delete_races_with_puts(shared_cluster):
    """A delete racing with puts leaves either a whole version or nothing: never a mix."""
    key = "del-race"
    stop = time.monotonic() + 3.0
    errors: list[BaseException] = []
    versions: dict[tuple[int, int], bytes] = {}

    def putter() -> None:
        rng = random.Random(5)
        try:
            with shared_cluster.client(chunk_size=CHUNK) as client:
                seq = 0
                while time.monotonic() < stop:
                    seq += 1
                    blob = make_version(1, seq, rng)
                    versions[(1, seq)] = blob
                    client.put(BUCKET, key, blob)  # a newer delete may supersede it: still a success
        except BaseException as exc:
            errors.append(exc)

    def deleter() -> None:
        from hcstore import ObjectNotFound

        try:
            with shared_cluster.client(chunk_size=CHUNK) as client:
                while time.monotonic() < stop:
                    try:
                        client.delete(BUCKET, key)
                    except ObjectNotFound:
                        pass
                    try:
                        check_version(client.get(BUCKET, key))
                    except (ObjectNotFound, ObjectChanged):
                        pass
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=putter), threading.Thread(target=deleter)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    with shared_cluster.client(chunk_size=CHUNK) as client:
        from hcstore import ObjectNotFound

        try:
            blob = client.get(BUCKET, key)
        except ObjectNotFound:
            return
        assert versions[check_version(blob)] == blob


def test_a_put_retired_between_prepare_and_commit_succeeds_as_superseded(shared_cluster, monkeypatch):
    """Last writer wins also at the narrowest point: the older put returns, marked superseded, never an error."""
    key = "superseded"
    older_blob, newer_blob = seeded_bytes(71, 3 * 4 * CHUNK), seeded_bytes(72, 5000)
    commit = FragmentUploads.commit
    newer: list[PutResult] = []

    def newer_put_commits_first(uploads: FragmentUploads) -> list:
        monkeypatch.undo()  # the older put is prepared everywhere; a newer one commits and retires it
        with shared_cluster.client(chunk_size=CHUNK) as other:
            newer.append(other.put(BUCKET, key, newer_blob))
            retire = {"bucket": BUCKET, "key": key, "gen": newer[0].generation}
            for node in other.cluster_map.nodes:  # the put's own retire is not waited for: finish it here
                other.transport.request(node.endpoint, "retire", retire)
        return commit(uploads)

    monkeypatch.setattr(FragmentUploads, "commit", newer_put_commits_first)
    with shared_cluster.client(chunk_size=CHUNK) as client:
        older = client.put(BUCKET, key, older_blob)
        assert newer and newer[0].generation > older.generation
        assert older.superseded and not older.degraded and not any(older.fragments)
        assert not newer[0].superseded
        assert client.get(BUCKET, key) == newer_blob
        assert client.stat(BUCKET, key).generation == newer[0].generation
