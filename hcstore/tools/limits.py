"""What this machine can do, measured for ``hcstore bench`` beside each figure it bounds.

Each probe runs the one operation a data path is made of, alone, on as many cores as the
machine has (worker processes started together, each running for the same few seconds):
erasure encode and decode, blake3, ZeroMQ over loopback on one and on several connections,
a small request/reply round trip and rate, a disk's write rate with fsync, its cold read rate
(the file dropped from the page cache first), its fsync rate, and the rate at which fresh memory
can be touched. A figure's limit is the smallest of the limits on its path (:func:`path_limit`).
"""

from __future__ import annotations

import multiprocessing
import os
import statistics
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zmq

from ec import chunk_digest, default_codec_name, make_codec, split_stripe

REPLY_BYTES = 1 << 20  # a streamed reply: one chunk, as a read returns
WINDOW = 8  # requests in flight per connection, as a reader keeps them
SMALL_BYTES = 4096


@dataclass(frozen=True)
class Limit:
    """One limit of this machine: its stable name, what it measures, its value and unit."""

    name: str
    what: str
    value: float
    unit: str


def path_limit(limits: dict[str, Limit], path: Mapping[str, float]) -> tuple[str, float]:
    """The limit that bounds a figure whose path goes through ``path`` (limit name -> the share of the
    figure's bytes that crosses it, e.g. 1.5 for a disk that writes k+m fragments of k): the name and
    value of the smallest ``limit / share``."""
    bounds = {name: limits[name].value / share for name, share in path.items() if name in limits}
    name = min(bounds, key=bounds.__getitem__)
    return name, bounds[name]


def measure_limits(
    directory: Path, *, k: int, m: int, chunk_size: int, clients: int, seconds: float = 1.5, file_mb: int = 512
) -> dict[str, Limit]:
    """Every limit ``hcstore bench`` sets figures against, measured now; ``directory`` is on the disk under test."""
    cores = os.cpu_count() or 1
    streams = min(8, cores)

    def together(count: int, kind: str) -> float:
        return _in_processes(count, (kind, k, m, chunk_size), seconds)

    write, cold_read = disk_rates(directory, file_mb << 20)
    limits = [
        Limit(
            "encode_all_cores",
            f"{default_codec_name(k, m)} encode, {cores} processes",
            together(cores, "encode"),
            "MB/s",
        ),
        Limit(
            "decode_all_cores",
            f"decode with {m} data chunks lost, {cores} processes",
            together(cores, "decode"),
            "MB/s",
        ),
        Limit(
            "blake3_all_cores",
            f"blake3 of {chunk_size >> 10} KiB chunks, {cores} processes",
            together(cores, "blake3"),
            "MB/s",
        ),
        Limit("zeromq_1_stream", "ZeroMQ loopback, 1 connection (CurveZMQ)", together(1, "stream"), "MB/s"),
        Limit(
            "zeromq_n_streams",
            f"ZeroMQ loopback, {streams} connections (CurveZMQ)",
            together(streams, "stream"),
            "MB/s",
        ),
        Limit(
            "request_reply_rate",
            f"ZeroMQ 4 KiB request/reply, {clients} clients (CurveZMQ)",
            together(clients, "request") * 1e6 / SMALL_BYTES,  # MB/s of 4 KiB requests -> requests/s
            "ops/s",
        ),
        Limit("round_trip", "ZeroMQ 1-byte round trip, p50 (CurveZMQ)", round_trip_ms(), "ms"),
        Limit("disk_write_fsync", f"one {file_mb} MiB file written, then fsync", write, "MB/s"),
        Limit("disk_read_cold", "that file read after dropping it from the page cache", cold_read, "MB/s"),
        Limit("disk_fsync_rate", "4 KiB files written, fsynced, renamed", fsync_rate(directory, seconds), "ops/s"),
        Limit("fresh_memory", f"first touch of a new {file_mb} MiB buffer", fresh_memory_rate(file_mb << 20), "MB/s"),
    ]
    return {limit.name: limit for limit in limits}


def _in_processes(count: int, job: tuple[str, int, int, int], seconds: float) -> float:
    """MB/s of ``count`` processes running ``job`` together for ``seconds`` (summed)."""
    ctx = multiprocessing.get_context("spawn")
    start_at = time.time() + 2.0 + 0.2 * count  # every worker imported and ready before the clock starts
    with ctx.Pool(count) as pool:
        done = pool.map(_probe, [(job, start_at, seconds)] * count)
    return sum(done) / seconds / 1e6


def _probe(args: tuple[tuple[str, int, int, int], float, float]) -> int:
    """Bytes one worker processed with ``job`` between ``start_at`` and ``start_at + seconds``."""
    (kind, k, m, chunk_size), start_at, seconds = args
    step = _STEPS[kind](k, m, chunk_size)
    while time.time() < start_at:
        time.sleep(0.001)
    deadline, done = start_at + seconds, 0  # the same window for all: a late worker counts less, never more
    while time.time() < deadline:
        done += step()
    return done


def _random(nbytes: int) -> bytes:
    return np.random.default_rng(1).integers(0, 256, nbytes, dtype=np.uint8).tobytes()


def _encode_step(k: int, m: int, chunk_size: int) -> Callable[[], int]:
    codec = make_codec(default_codec_name(k, m), k, m)
    chunks = split_stripe(memoryview(_random(k * chunk_size)), k, chunk_size)
    return lambda: (codec.encode(chunks), k * chunk_size)[1]


def _decode_step(k: int, m: int, chunk_size: int) -> Callable[[], int]:
    codec = make_codec(default_codec_name(k, m), k, m)
    data = split_stripe(memoryview(_random(k * chunk_size)), k, chunk_size)
    fragments = [*data, *codec.encode(data)]
    survivors = {i: fragments[i] for i in range(min(m, k), min(m, k) + k)}  # the first m data chunks lost
    return lambda: (codec.decode(survivors), k * chunk_size)[1]


def _blake3_step(k: int, m: int, chunk_size: int) -> Callable[[], int]:
    chunk = _random(chunk_size)
    return lambda: (chunk_digest(chunk), chunk_size)[1]


def _stream_step(k: int, m: int, chunk_size: int) -> Callable[[], int]:
    """A client receiving 1 MiB replies over one CurveZMQ connection, WINDOW requests in flight."""
    client = _served_pair(REPLY_BYTES)
    for _ in range(WINDOW):
        client.send(b"r")

    def step() -> int:
        frame = client.recv(copy=False)
        client.send(b"r")
        return len(frame.buffer)

    return step


def _request_step(k: int, m: int, chunk_size: int) -> Callable[[], int]:
    """A client sending 4 KiB requests and waiting for each 4 KiB reply (one in flight)."""
    client = _served_pair(SMALL_BYTES)
    payload = os.urandom(SMALL_BYTES)

    def step() -> int:
        client.send(payload)
        client.recv(copy=False)
        return SMALL_BYTES

    return step


_STEPS: dict[str, Callable[[int, int, int], Callable[[], int]]] = {
    "encode": _encode_step,
    "decode": _decode_step,
    "blake3": _blake3_step,
    "stream": _stream_step,
    "request": _request_step,
}


def _served_pair(reply_bytes: int) -> Any:
    """A DEALER connected over CurveZMQ to a ROUTER in a thread of this process that answers every
    request with ``reply_bytes`` bytes."""
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance(io_threads=2)
    server_public, server_secret = zmq.curve_keypair()
    client_public, client_secret = zmq.curve_keypair()
    server = context.socket(zmq.ROUTER)
    server.curve_server, server.curve_secretkey, server.curve_publickey = True, server_secret, server_public
    port = server.bind_to_random_port("tcp://127.0.0.1")
    reply = os.urandom(reply_bytes)

    def serve() -> None:
        while True:
            identity, _request = server.recv_multipart(copy=False)
            server.send_multipart([identity, reply], copy=False)

    threading.Thread(target=serve, daemon=True).start()
    client = context.socket(zmq.DEALER)
    client.curve_secretkey, client.curve_publickey, client.curve_serverkey = client_secret, client_public, server_public
    client.connect(f"tcp://127.0.0.1:{port}")
    return client


def round_trip_ms(count: int = 2000) -> float:
    """Median milliseconds of one 1-byte request and its reply over CurveZMQ loopback."""
    client = _served_pair(1)
    times = []
    for _ in range(count):
        t0 = time.perf_counter()
        client.send(b"r")
        client.recv()
        times.append((time.perf_counter() - t0) * 1000)
    client.close(linger=0)
    return statistics.median(times)


def disk_rates(directory: Path, nbytes: int) -> tuple[float, float]:
    """MB/s of writing ``nbytes`` to one file in ``directory`` with an fsync, and of reading it back
    after dropping it from the page cache."""
    path = directory / "limits-disk.bin"
    data = memoryview(_random(min(nbytes, 64 << 20)))
    t0 = time.perf_counter()
    with open(path, "wb", buffering=0) as f:
        for off in range(0, nbytes, len(data)):
            f.write(data[: min(len(data), nbytes - off)])
        os.fsync(f.fileno())
    write = nbytes / (time.perf_counter() - t0) / 1e6
    drop_from_page_cache([path])
    t0 = time.perf_counter()
    with open(path, "rb", buffering=0) as f:
        while f.read(8 << 20):
            pass
    read = nbytes / (time.perf_counter() - t0) / 1e6
    path.unlink()
    return write, read


def drop_from_page_cache(paths: list[Path]) -> None:
    """Drop the files' clean pages from the page cache (written back first), so that the next read is
    from the disk."""
    os.sync()
    for path in paths:
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            continue
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def fsync_rate(directory: Path, seconds: float) -> float:
    """Small files per second written, fsynced and renamed into place (what a durable small put does)."""
    payload = os.urandom(SMALL_BYTES)
    tmp, final = directory / "limits-fsync.tmp", directory / "limits-fsync.bin"
    deadline, count = time.perf_counter() + seconds, 0
    t0 = time.perf_counter()
    while time.perf_counter() < deadline:
        with open(tmp, "wb", buffering=0) as f:
            f.write(payload)
            os.fsync(f.fileno())
        os.replace(tmp, final)
        count += 1
    rate = count / (time.perf_counter() - t0)
    final.unlink()
    return rate


def fresh_memory_rate(nbytes: int) -> float:
    """MB/s at which a new buffer of ``nbytes`` is allocated and first written (page faults, zeroing)."""
    t0 = time.perf_counter()
    buffer = bytearray(nbytes)
    elapsed = time.perf_counter() - t0
    del buffer
    return nbytes / elapsed / 1e6
