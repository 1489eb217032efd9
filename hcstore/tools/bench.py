"""``hcstore bench``: the data path's figures, each beside its limit measured in the same run.

Nothing here is a timed test: the figures are printed with the limit they are
measured against (the codec's own encode rate over the same bytes, writing the
same bytes to one local file with the same fsync policy, blake3's own rate
over the same bytes), because on a shared, noisy machine only ratios taken in
one run mean anything.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from ec import chunk_digest, chunk_size_for, default_codec_name, make_codec, parse_ec, split_stripe
from hcstore.cluster.local import LocalCluster

BUCKET = "bench"
AISTORE_10MIB_P50_MS = 17.0  # AIStore's published latency for one 10 MiB GET stream on real hardware


@dataclass
class Figure:
    """One measured figure, with the limit measured in the same run, their ratio, and the target it is held to."""

    name: str
    value: float
    unit: str
    reference: str = ""
    ratio: float | None = None
    target: str = ""
    met: bool | None = None


def _mbps(nbytes: int, seconds: float) -> float:
    return nbytes / seconds / 1e6


def encode_only_rate(data: bytes, k: int, m: int, chunk_size: int) -> float:
    """MB/s of splitting and encoding ``data`` with the codec a put would use (no I/O)."""
    codec = make_codec(default_codec_name(k, m), k, m)
    view = memoryview(data)
    stripe = k * chunk_size
    t0 = time.perf_counter()
    for off in range(0, len(data), stripe):
        codec.encode(split_stripe(view[off : off + stripe], k, chunk_size))
    return _mbps(len(data), time.perf_counter() - t0)


def local_file_rate(data: bytes, directory: Path, durability: str) -> float:
    """MB/s of writing ``data`` to one local file, fsynced at the end unless durability is 'none'."""
    path = directory / "local-file-baseline.bin"
    view = memoryview(data)
    t0 = time.perf_counter()
    with open(path, "wb", buffering=0) as f:
        for off in range(0, len(data), 8 << 20):
            f.write(view[off : off + (8 << 20)])
        if durability != "none":
            os.fsync(f.fileno())
    rate = _mbps(len(data), time.perf_counter() - t0)
    path.unlink()
    return rate


def blake3_rate(data: bytes, chunk_size: int) -> float:
    """MB/s of blake3 over ``data`` in chunks, as a get verifies it."""
    view = memoryview(data)
    t0 = time.perf_counter()
    for off in range(0, len(data), chunk_size):
        chunk_digest(view[off : off + chunk_size])
    return _mbps(len(data), time.perf_counter() - t0)


def _small_ops_worker(args: tuple[str, int, float, int]) -> tuple[int, int]:
    """One of the concurrent clients: 4 KiB puts then gets for ``seconds`` each; returns op counts."""
    cluster_dir, worker, seconds, size = args
    from hcstore.client.client import Client

    client = Client(cluster_dir)
    payload = os.urandom(size)
    puts = gets = 0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        client.put(BUCKET, f"small/{worker}/{puts}", payload)
        puts += 1
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        client.get(BUCKET, f"small/{worker}/{gets % puts}")
        gets += 1
    client.close()
    return puts, gets


def run_bench(
    *,
    agents: int = 6,
    ec: str = "4+2",
    size_mb: int = 1024,
    data_dir: str | None = None,
    durability: str = "commit",
    quick: bool = False,
    clients: int = 8,
    json_out: str | None = None,
    console: Console | None = None,
) -> list[Figure]:
    """Run every benchmark on a fresh local cluster and print the table; returns the figures."""
    console = console or Console(width=max(Console().width, 120))
    k, m = parse_ec(ec)
    if quick:
        size_mb = min(size_mb, 64)
    latency_gets = 20 if quick else 100
    small_seconds = 1.0 if quick else 5.0
    figures: list[Figure] = []
    with tempfile.TemporaryDirectory(prefix="hcstore-bench-", dir=data_dir) as tmp:
        cluster = LocalCluster.create(Path(tmp) / "cluster", agents=agents, ec=ec, durability=durability)
        try:
            cluster.start()
            client = cluster.client()
            chunk = chunk_size_for(None, k, client.config.chunk_size)
            size = size_mb << 20
            console.print(
                f"cluster: {agents} agents, EC {ec}, codec {default_codec_name(k, m)}, "
                f"chunk {chunk >> 10} KiB, durability {durability}, object {size_mb} MiB, "
                f"{os.cpu_count()} cores"
            )
            data = np.random.default_rng(7).integers(0, 256, size, dtype=np.uint8).tobytes()

            encode = encode_only_rate(data, k, m, chunk)
            local_rates, put_rates = [], []
            for _ in range(2):  # alternate, each from a clean page cache (os.sync first)
                os.sync()
                local_rates.append(local_file_rate(data, Path(tmp), durability))
                os.sync()
                t0 = time.perf_counter()
                large = client.put(BUCKET, "large", data)
                put_rates.append(_mbps(size, time.perf_counter() - t0))
            local, put = max(local_rates), max(put_rates)
            figures.append(
                Figure(
                    f"put {size_mb} MiB",
                    put,
                    "MB/s",
                    f"encode-only {encode:,.0f} MB/s",
                    put / encode,
                    ">= 0.5x encode-only",
                    put >= 0.5 * encode,
                )
            )
            figures.append(
                Figure(f"put {size_mb} MiB", put, "MB/s", f"local file write {local:,.0f} MB/s", put / local)
            )

            hash_rate = blake3_rate(data, chunk)
            healthy = _best_get_rate(client, size, data)
            figures.append(
                Figure(
                    f"get {size_mb} MiB healthy", healthy, "MB/s", f"blake3 {hash_rate:,.0f} MB/s", healthy / hash_rate
                )
            )
            into = _best_get_into_rate(client, size, data)
            figures.append(
                Figure(
                    f"get_into {size_mb} MiB buffer", into, "MB/s", f"blake3 {hash_rate:,.0f} MB/s", into / hash_rate
                )
            )

            ten = data[: 10 << 20]
            client.put(BUCKET, "ten-mib", ten)
            latencies = []
            for _ in range(latency_gets):
                t0 = time.perf_counter()
                client.get(BUCKET, "ten-mib")
                latencies.append((time.perf_counter() - t0) * 1000)
            p50 = statistics.median(latencies)
            p99 = float(np.percentile(latencies, 99))
            figures.append(
                Figure(
                    "get 10 MiB p50",
                    p50,
                    "ms",
                    f"AIStore {AISTORE_10MIB_P50_MS:.0f} ms",
                    p50 / AISTORE_10MIB_P50_MS,
                    "<= 17 ms",
                    p50 <= AISTORE_10MIB_P50_MS,
                )
            )
            figures.append(Figure("get 10 MiB p99", p99, "ms"))

            ctx = multiprocessing.get_context("spawn")
            with ctx.Pool(clients) as pool:
                counts = pool.map(
                    _small_ops_worker, [(str(cluster.path), w, small_seconds, 4096) for w in range(clients)]
                )
            figures.append(Figure(f"4 KiB put, {clients} clients", sum(c[0] for c in counts) / small_seconds, "ops/s"))
            figures.append(Figure(f"4 KiB get, {clients} clients", sum(c[1] for c in counts) / small_seconds, "ops/s"))

            victims = list(large.fragments[:m])  # holders of data fragments: every stripe must be decoded
            for node in victims:
                cluster.kill(node)
            client.refresh()
            degraded = _best_get_rate(client, size, data)
            figures.append(
                Figure(
                    f"get {size_mb} MiB, {m} data-holding agents killed",
                    degraded,
                    "MB/s",
                    f"healthy get {healthy:,.0f} MB/s",
                    degraded / healthy,
                    ">= 0.5x healthy",
                    degraded >= 0.5 * healthy,
                )
            )
            client.close()
        finally:
            cluster.destroy()
        figures += security_cost(
            put, healthy, agents=agents, ec=ec, size_mb=size_mb, data=data, durability=durability, path=Path(tmp)
        )
    return _report(console, figures, json_out)


def security_cost(
    put: float, get: float, *, agents: int, ec: str, size_mb: int, data: bytes, durability: str, path: Path
) -> list[Figure]:
    """Put and get on the same cluster made ``insecure`` (plain ZeroMQ), beside the CurveZMQ figures
    ``put`` and ``get`` just measured: what authentication and encryption cost."""
    cluster = LocalCluster.create(path / "plain", agents=agents, ec=ec, durability=durability, insecure=True)
    try:
        cluster.start()
        client = cluster.client()
        rates = []
        for _ in range(2):
            os.sync()
            t0 = time.perf_counter()
            client.put(BUCKET, "large", data)
            rates.append(_mbps(len(data), time.perf_counter() - t0))
        plain_put, plain_get = max(rates), _best_get_rate(client, len(data), data)
        client.close()
    finally:
        cluster.destroy()
    return [
        Figure(
            f"put {size_mb} MiB, CurveZMQ",
            put,
            "MB/s",
            f"plain ZeroMQ {plain_put:,.0f} MB/s",
            put / plain_put,
            ">= 0.75x plain",
            put >= 0.75 * plain_put,
        ),
        Figure(
            f"get {size_mb} MiB, CurveZMQ",
            get,
            "MB/s",
            f"plain ZeroMQ {plain_get:,.0f} MB/s",
            get / plain_get,
            ">= 0.75x plain",
            get >= 0.75 * plain_get,
        ),
    ]


def _best_get_rate(client: Any, size: int, data: bytes) -> float:
    rates = []
    for _ in range(2):
        os.sync()
        t0 = time.perf_counter()
        got = client.get(BUCKET, "large")
        rates.append(_mbps(size, time.perf_counter() - t0))
        if got != data:
            raise AssertionError("benchmark read returned wrong bytes")
        del got
    return max(rates)


def _best_get_into_rate(client: Any, size: int, data: bytes) -> float:
    """Reads into one reused buffer (as a training job reads into pinned memory): no allocation per get."""
    buffer = bytearray(size)
    rates = []
    for _ in range(2):
        t0 = time.perf_counter()
        client.get_into(BUCKET, "large", buffer)
        rates.append(_mbps(size, time.perf_counter() - t0))
    if buffer != data:
        raise AssertionError("benchmark read returned wrong bytes")
    return max(rates)


def _report(console: Console, figures: list[Figure], json_out: str | None) -> list[Figure]:
    _print(console, figures)
    if json_out:
        Path(json_out).write_text(json.dumps([f.__dict__ for f in figures], indent=2))
    return figures


def _print(console: Console, figures: list[Figure]) -> None:
    table = Table(title="hcstore bench")
    for column in ("measure", "figure", "limit measured in the same run", "ratio", "target", "met"):
        table.add_column(column)
    for f in figures:
        value = f"{f.value:,.1f} {f.unit}" if f.unit == "ms" else f"{f.value:,.0f} {f.unit}"
        table.add_row(
            f.name,
            value,
            f.reference,
            "" if f.ratio is None else f"{f.ratio:.2f}x",
            f.target,
            "" if f.met is None else ("yes" if f.met else "NO"),
        )
    console.print(table)


def run_repair_bench(
    *,
    agents: int = 7,
    ec: str = "4+2",
    node_mb: int = 512,
    data_dir: str | None = None,
    json_out: str | None = None,
    console: Console | None = None,
) -> list[Figure]:
    """Lose one node holding ``node_mb`` MiB of fragments; time repair to full protection, and a rebalance.

    Beside them: the raw read rate of the surviving disks over the same fragment files, measured in
    the same run (repair must read ``k`` fragments for each one it rebuilds).
    """
    from hcstore.client.versions import resolve
    from hcstore.control.membership import Intervals

    console = console or Console(width=max(Console().width, 120))
    k, m = parse_ec(ec)
    object_mb = 32
    total = int(node_mb * agents / (k + m) * k)  # object bytes that put about node_mb on each node
    count = max(1, total // object_mb)
    figures: list[Figure] = []
    with tempfile.TemporaryDirectory(prefix="hcstore-repair-bench-", dir=data_dir) as tmp:
        cluster = LocalCluster.create(
            Path(tmp) / "cluster",
            agents=agents,
            ec=ec,
            durability="commit",
            intervals=Intervals(0.25, 0.75, 1.5, 3.0),
            scan_interval=1.0,
            repair_rate=0,
        )
        try:
            cluster.start()
            client = cluster.client()
            payload = np.random.default_rng(3).integers(0, 256, object_mb << 20, dtype=np.uint8).tobytes()
            keys = [f"repair/{i:05d}" for i in range(count)]
            for key in keys:
                client.put(BUCKET, key, payload)
            held = {a.node_id: cluster.fragment_files(a.node_id) for a in cluster.agents()}
            victim = max(held, key=lambda n: sum(p.stat().st_size for p in held[n]))
            lost = sum(p.stat().st_size for p in held[victim])
            survivors = [p for n, files in held.items() if n != victim for p in files]
            os.sync()
            raw = _raw_read_rate(survivors, k * lost)
            console.print(
                f"{count} objects of {object_mb} MiB, EC {ec}, {agents} agents; node {victim} holds "
                f"{lost / 1e9:.2f} GB of fragments; out after 3 s"
            )
            cluster.kill(victim)
            t_kill = time.perf_counter()
            cluster.wait_for_map(lambda cm: cm.node(victim).state == "out", timeout=60)
            t_out = time.perf_counter()
            _wait_protected(client, keys, resolve, excluding={victim}, timeout=1800)
            t_done = time.perf_counter()
            repair_rate = lost / (t_done - t_out) / 1e6
            figures.append(
                Figure(
                    f"repair of {lost / 1e9:.2f} GB lost node",
                    repair_rate,
                    "MB/s",
                    f"raw read of surviving disks {raw:,.0f} MB/s (reads k={k}x)",
                    repair_rate * k / raw,
                )
            )
            figures.append(
                Figure(
                    "time from kill to full protection",
                    t_done - t_kill,
                    "s",
                    f"detection (out-interval) {t_out - t_kill:.1f} s",
                )
            )
            newcomer = cluster.add_agent()
            t_join = time.perf_counter()
            _wait_protected(client, keys, resolve, excluding=set(), timeout=1800, settle_on=newcomer, cluster=cluster)
            moved = sum(p.stat().st_size for p in cluster.fragment_files(newcomer))
            figures.append(
                Figure(
                    f"rebalance onto a joining node ({moved / 1e9:.2f} GB)",
                    moved / (time.perf_counter() - t_join) / 1e6,
                    "MB/s",
                    f"raw read of surviving disks {raw:,.0f} MB/s",
                )
            )
            client.close()
        finally:
            cluster.destroy()
    return _report(console, figures, json_out)


def _raw_read_rate(files: list[Path], nbytes: int) -> float:
    """MB/s of plain sequential reads of fragment files, up to ``nbytes``."""
    done = 0
    t0 = time.perf_counter()
    for path in files:
        with open(path, "rb", buffering=0) as f:
            while chunk := f.read(8 << 20):
                done += len(chunk)
        if done >= nbytes:
            break
    return _mbps(done, time.perf_counter() - t0)


def _wait_protected(
    client: Any,
    keys: list[str],
    resolve: Any,
    *,
    excluding: set[str],
    timeout: float,
    settle_on: str | None = None,
    cluster: Any = None,
) -> None:
    """Poll until every object has all k+m fragments off ``excluding`` (and, for a join, the
    newcomer's fragment count has stopped growing)."""
    deadline = time.monotonic() + timeout
    last = -1
    while time.monotonic() < deadline:
        ok = True
        for key in keys:
            version = resolve(client, BUCKET, key, exhaustive=True)
            held = [n for n in version.found_at if n and n not in excluding]
            if len(held) < version.k + version.m:
                ok = False
                break
        if ok and settle_on is not None:
            now = len(cluster.fragment_files(settle_on))
            ok, last = now == last and now > 0, now
        if ok:
            return
        time.sleep(0.5)
    raise TimeoutError(f"objects not fully protected within {timeout}s")
