"""Read latency of one agent while it writes and fsyncs a large fragment: does its serving loop stall?

    python benchmarks/bench_stall.py [--size-mb 1024] [--idle-reads 1000] [--interval-ms 20] [--quick]
                                     [--data-dir DIR] [--json-out FILE]

One agent (a local cluster of one node, durability "commit": every fragment is fsynced before it is
prepared). A reader sends 64 KiB reads (one chunk of a committed fragment, in the page cache) to it, one
at a time, on a fixed schedule of one every ``--interval-ms``:

* idle: nothing else happens on the agent (half of these reads before the busy phase, half after, so
  that both phases meet the same background load on a shared machine);
* busy: meanwhile a writer process uploads one fragment of ``--size-mb`` to the same agent with raw
  ``open``, ``write`` (1 MiB chunks, 8 in flight), ``prepare`` (the fsync) and ``commit`` requests.

A read's latency runs from its *scheduled* send time to its reply, so a read delayed by an earlier slow
one counts the wait too (no coordinated omission: a loop that stalls for a second shows as a second of
late reads, not as one slow sample). Reported: reads, p50, p99 and max per phase, and p99 busy / p99 idle
against the goal of 3x.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from hcstore.client import headers
from hcstore.client.headers import VersionLayout
from hcstore.cluster.local import LocalCluster
from hcstore.errors import HCStoreError
from hcstore.generation import HybridClock
from hcstore.wire.transport import Transport

BUCKET = "bench-stall"
READ_CHUNK = 64 << 10
READ_STRIPES = 16
WRITE_CHUNK = 1 << 20
WRITE_WINDOW = 8
GOAL = 3.0
REQUEST_TIMEOUT = 300.0


@dataclass(frozen=True)
class Phase:
    """Latency figures of the reads sent in one phase, in milliseconds."""

    name: str
    reads: int
    p50_ms: float
    p99_ms: float
    max_ms: float


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of an ascending sequence."""
    if not sorted_values:
        return float("nan")
    rank = max(1, -(-len(sorted_values) * fraction // 1))
    return sorted_values[int(rank) - 1]


def phase(name: str, latencies: Sequence[float]) -> Phase:
    """The figures of one phase from its latencies in seconds."""
    ordered = sorted(latencies)
    return Phase(
        name,
        len(ordered),
        1e3 * percentile(ordered, 0.50),
        1e3 * percentile(ordered, 0.99),
        1e3 * (ordered[-1] if ordered else float("nan")),
    )


def fragment_header(key: str, gen: str, chunk_size: int, stripes: int) -> dict[str, Any]:
    """The header fields ``prepare`` takes for a one-fragment object (the agent adds the digests)."""
    layout = VersionLayout(BUCKET, key, gen, "zfec", 1, 1, chunk_size, chunk_size * stripes, stripes)
    return headers.fragment_header(layout, 0, ("n1", "n2"))


def upload(
    transport: Transport, endpoint: str, key: str, chunk_size: int, stripes: int, marks: dict[str, float] | None = None
) -> str:
    """Write one committed fragment with raw requests, ``WRITE_WINDOW`` chunks in flight; returns its generation.

    ``marks`` receives monotonic times: ``start``, ``prepare`` (prepare sent), ``prepared`` (its reply), ``end``.
    """
    marks = {} if marks is None else marks
    marks["start"] = time.monotonic()
    gen = HybridClock().now()
    upload_id = transport.request(
        endpoint,
        "open",
        {
            "bucket": BUCKET,
            "key": key,
            "gen": gen,
            "idx": 0,
            "chunk_size": chunk_size,
            "expected_bytes": chunk_size * stripes,
        },
    ).header["upload"]
    chunk = os.urandom(chunk_size)
    inflight: set[int] = set()
    for stripe in range(stripes):
        inflight.add(transport.send(endpoint, "write", {"upload": upload_id, "stripe": stripe}, [chunk]))
        while len(inflight) >= WRITE_WINDOW or (stripe == stripes - 1 and inflight):
            for request_id, result in transport.poll(inflight, REQUEST_TIMEOUT).items():
                inflight.discard(request_id)
                if isinstance(result, HCStoreError):
                    raise result
                result.unwrap()
    marks["prepare"] = time.monotonic()
    transport.request(
        endpoint, "prepare", {"upload": upload_id, "header": fragment_header(key, gen, chunk_size, stripes)}
    )
    marks["prepared"] = time.monotonic()
    transport.request(endpoint, "commit", {"bucket": BUCKET, "key": key, "gen": gen, "idx": 0})
    marks["end"] = time.monotonic()
    return gen


def writer_process(transport: Transport, endpoint: str, size_mb: int, results: Any, go: Any) -> None:
    """Upload one ``size_mb`` fragment (run in its own process, with the keys ``transport`` was
    pickled with) and send its phase times back."""
    go.wait()
    marks: dict[str, float] = {}
    upload(transport, endpoint, "big", WRITE_CHUNK, size_mb, marks)
    results.send(marks)
    transport.close()


def timed_reads(
    transport: Transport, endpoint: str, gen: str, interval: float, *, count: int = 0, until: Any = None
) -> list[tuple[float, float]]:
    """``(scheduled send time, latency)`` of 64 KiB reads sent on a fixed schedule, one at a time,
    ``count`` of them or until the event ``until`` is set."""
    samples = []
    start = time.monotonic()
    n = 0
    while (count and n < count) or (until is not None and not until.is_set()):
        scheduled = start + n * interval
        delay = scheduled - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        reply = transport.request(
            endpoint,
            "read",
            {"bucket": BUCKET, "key": "small", "gen": gen, "idx": 0, "first": n % READ_STRIPES, "count": 1},
        )
        samples.append((scheduled, time.monotonic() - scheduled))
        assert len(reply.payloads[0]) == READ_CHUNK
        n += 1
    return samples


def machine() -> str:
    """Cores, architecture, kernel and Python of this machine."""
    return (
        f"{os.cpu_count()} cores ({platform.machine()}), {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}"
    )


def run(*, size_mb: int, idle_reads: int, interval_ms: float, data_dir: str | None) -> dict[str, Any]:
    """Start a one-agent cluster, measure idle and busy read latency, and return the figures."""
    interval = interval_ms / 1e3
    with tempfile.TemporaryDirectory(dir=data_dir, prefix="bench-stall-") as tmp:
        cluster = LocalCluster.create(
            Path(tmp) / "cluster", agents=1, ec="1+1", durability="commit", mountpaths_per_agent=1
        )
        try:
            cluster.start()
            endpoint = cluster.cluster_map().node("n1").endpoint
            transport = cluster.client(request_timeout=REQUEST_TIMEOUT).transport  # the cluster's keys
            gen = upload(transport, endpoint, "small", READ_CHUNK, READ_STRIPES)
            timed_reads(transport, endpoint, gen, interval, count=100)  # warm up
            idle = [lat for _, lat in timed_reads(transport, endpoint, gen, interval, count=idle_reads // 2)]

            context = multiprocessing.get_context("spawn")
            receive, send = context.Pipe(duplex=False)
            go, done = context.Event(), threading.Event()
            writer = context.Process(target=writer_process, args=(transport, endpoint, size_mb, send, go), daemon=True)
            writer.start()
            threading.Thread(target=lambda: (writer.join(), done.set()), daemon=True).start()
            go.set()
            samples = timed_reads(transport, endpoint, gen, interval, until=done)
            writer.join()
            if writer.exitcode != 0 or not receive.poll(10):
                raise RuntimeError(f"the writer process failed (exit code {writer.exitcode})")
            marks = receive.recv()
            idle += [
                lat for _, lat in timed_reads(transport, endpoint, gen, interval, count=idle_reads - idle_reads // 2)
            ]
            transport.close()
        finally:
            cluster.destroy()
    busy = [lat for t, lat in samples if marks["start"] <= t <= marks["end"]]
    writing = [lat for t, lat in samples if marks["start"] <= t < marks["prepare"]]
    preparing = [lat for t, lat in samples if marks["prepare"] <= t <= marks["prepared"]]
    phases = [
        phase("idle", idle),
        phase("busy: whole upload", busy),
        phase("busy: writes", writing),
        phase("busy: prepare (fsync)", preparing),
    ]
    ratio = phases[1].p99_ms / phases[0].p99_ms
    return {
        "machine": machine(),
        "size_mb": size_mb,
        "read_bytes": READ_CHUNK,
        "interval_ms": interval_ms,
        "durability": "commit",
        "phases": [asdict(p) for p in phases],
        "p99_ratio": ratio,
        "goal": GOAL,
        "met": ratio <= GOAL,
        "writer": {"seconds": marks["end"] - marks["start"], "prepare_seconds": marks["prepared"] - marks["prepare"]},
    }


def report(figures: dict[str, Any]) -> None:
    """Print the figures for people."""
    print(
        f"bench_stall: {figures['read_bytes'] >> 10} KiB reads from one agent, one every "
        f"{figures['interval_ms']:g} ms, while that agent writes and fsyncs a {figures['size_mb']} MiB fragment "
        f"(durability {figures['durability']})"
    )
    print(f"machine: {figures['machine']}")
    print("statistic: latency from each read's scheduled send time to its reply (nearest-rank percentiles)")
    print(f"{'phase':<24}{'reads':>8}{'p50 ms':>10}{'p99 ms':>10}{'max ms':>10}")
    for p in figures["phases"]:
        print(f"{p['name']:<24}{p['reads']:>8}{p['p50_ms']:>10.2f}{p['p99_ms']:>10.2f}{p['max_ms']:>10.2f}")
    writer = figures["writer"]
    print(
        f"writer: {figures['size_mb']} MiB uploaded in {writer['seconds']:.1f} s "
        f"(prepare, i.e. the fsync: {writer['prepare_seconds']:.2f} s)"
    )
    print(
        f"p99 busy / p99 idle = {figures['p99_ratio']:.2f}x; goal: within {figures['goal']:g}x: "
        f"{'met' if figures['met'] else 'NOT met'}"
    )


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark from the command line."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mb", type=int, default=1024, help="size of the fragment written (default 1024)")
    parser.add_argument("--idle-reads", type=int, default=1000, help="reads measured on the idle agent (default 1000)")
    parser.add_argument("--interval-ms", type=float, default=20.0, help="time between scheduled reads (default 20)")
    parser.add_argument("--quick", action="store_true", help="256 MiB and 300 idle reads")
    parser.add_argument("--data-dir", default=None, help="where the cluster goes (default: the temp directory)")
    parser.add_argument("--json-out", default=None, help="also write the figures as JSON to this file")
    args = parser.parse_args(argv)
    if args.quick:
        args.size_mb, args.idle_reads = min(args.size_mb, 256), min(args.idle_reads, 300)
    figures = run(
        size_mb=args.size_mb, idle_reads=args.idle_reads, interval_ms=args.interval_ms, data_dir=args.data_dir
    )
    report(figures)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
