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
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from ec import chunk_size_for, default_codec_name, parse_ec
from hcstore.client.upload import place_in_home_set
from hcstore.cluster.local import LocalCluster
from hcstore.config import ClientConfig
from hcstore.tools.foreground import PacedReader
from hcstore.tools.limits import Limit, drop_from_page_cache, measure_limits, path_limit

BUCKET = "bench"
PROBE_BYTES = 4 << 20  # the foreground reader's object, read while repair runs
AISTORE_10MIB_P50_MS = 17.0  # AIStore's published latency for one 10 MiB GET stream on real hardware


@dataclass
class Figure:
    """One measured figure, with the limit measured in the same run, their ratio, and the target it is held to.

    ``key`` is the figure's stable name in ``--json`` output; ``limit`` names the machine limit
    (see :mod:`hcstore.tools.limits`) that bounds it, when one does.
    """

    name: str
    value: float
    unit: str
    reference: str = ""
    ratio: float | None = None
    target: str = ""
    met: bool | None = None
    key: str = ""
    limit: str = ""


@dataclass
class Runs:
    """How figures that are timed more than once are summarised."""

    count: int
    statistic: str = "median"

    def summary(self, values: list[float]) -> float:
        """The figure reported for ``values``: their median."""
        return float(statistics.median(values))


def _mbps(nbytes: int, seconds: float) -> float:
    return nbytes / seconds / 1e6


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


def bounded(
    name: str,
    key: str,
    value: float,
    limits: dict[str, Limit],
    path: Mapping[str, float],
    *,
    goal: float | None = None,
    unit: str = "MB/s",
) -> Figure:
    """A figure beside the smallest limit on its ``path`` (see :func:`path_limit`), held to ``goal`` x that limit."""
    limit_name, limit = path_limit(limits, path)
    return replace(relative(name, key, value, unit, limit_name, limit, goal), limit=limit_name)


def relative(
    name: str, key: str, value: float, unit: str, other_name: str, other: float, goal: float | None = None
) -> Figure:
    """A figure beside another figure of the same run (``other_name``), held to ``goal`` x it."""
    ratio = value / other
    return Figure(
        name,
        value,
        unit,
        f"{other_name} {other:,.0f} {unit}",
        ratio,
        f">= {goal}x {other_name}" if goal is not None else "",
        ratio >= goal if goal is not None else None,
        key,
    )


def run_bench(
    *,
    agents: int = 6,
    ec: str = "4+2",
    size_mb: int = 1024,
    data_dir: str | None = None,
    durability: str = "commit",
    quick: bool = False,
    clients: int = 8,
    runs: int = 3,
    json_out: str | None = None,
    console: Console | None = None,
) -> dict[str, Any]:
    """Measure the machine's limits, then every figure on a fresh local cluster; print the tables.

    Throughput figures are the median of ``runs`` timed runs; small operations and latency come
    from one timed phase each. Returns the figures and limits as :func:`bench_document` puts them
    (``json_out``: written there too).
    """
    console = console or Console(width=max(Console().width, 120))
    k, m = parse_ec(ec)
    if quick:
        size_mb, runs = min(size_mb, 64), 1
    summary = Runs(runs)
    latency_gets = 20 if quick else 100
    small_seconds = 1.0 if quick else 5.0
    spread = (k + m) / k  # bytes on the disks and the wire per byte of the object
    figures: list[Figure] = []
    with tempfile.TemporaryDirectory(prefix="hcstore-bench-", dir=data_dir) as tmp:
        console.print(f"measuring this machine's limits ({os.cpu_count()} cores, disk under {tmp}) ...")
        chunk = chunk_size_for(None, k, ClientConfig().chunk_size)
        limits = measure_limits(
            Path(tmp), k=k, m=m, chunk_size=chunk, clients=clients, seconds=0.5 if quick else 1.5, file_mb=size_mb
        )
        cluster = LocalCluster.create(Path(tmp) / "cluster", agents=agents, ec=ec, durability=durability)
        try:
            cluster.start()
            client = cluster.client()
            size = size_mb << 20
            console.print(
                f"cluster: {agents} agents, EC {ec}, codec {default_codec_name(k, m)}, "
                f"chunk {chunk >> 10} KiB, durability {durability}, object {size_mb} MiB, "
                f"{os.cpu_count()} cores; {summary.statistic} of {runs} runs"
            )
            data = np.random.default_rng(7).integers(0, 256, size, dtype=np.uint8).tobytes()

            put_rates = []
            for _ in range(runs):
                os.sync()
                t0 = time.perf_counter()
                large = client.put(BUCKET, "large", data)
                put_rates.append(_mbps(size, time.perf_counter() - t0))
            put = summary.summary(put_rates)
            disk = "disk_write_fsync" if durability != "none" else "zeromq_n_streams"
            figures.append(
                bounded(
                    f"put {size_mb} MiB",
                    "put_mbps",
                    put,
                    limits,
                    {"encode_all_cores": 1, disk: spread, "zeromq_n_streams": spread},
                    goal=0.5,
                )
            )
            fragment_files = cluster.fragment_files()
            cold = _get_rates(client, data, runs, fragment_files, into=True)
            warm = _get_rates(client, data, runs, None, into=True)
            fresh = _get_rates(client, data, runs, None, into=False)
            read_path = {"zeromq_n_streams": 1, "blake3_all_cores": 1}
            figures += [
                bounded(
                    f"get_into {size_mb} MiB, cold",
                    "get_into_cold_mbps",
                    summary.summary(cold),
                    limits,
                    {**read_path, "disk_read_cold": 1},
                ),
                bounded(
                    f"get_into {size_mb} MiB, warm",
                    "get_into_warm_mbps",
                    summary.summary(warm),
                    limits,
                    read_path,
                    goal=0.8,
                ),
                relative(
                    f"get {size_mb} MiB (new bytes), warm",
                    "get_warm_vs_get_into",
                    summary.summary(fresh),
                    "MB/s",
                    "get_into warm",
                    summary.summary(warm),
                    goal=round(1 / 1.2, 2),
                ),
                bounded(
                    f"get {size_mb} MiB (new bytes), warm",
                    "get_warm_mbps",
                    summary.summary(fresh),
                    limits,
                    {**read_path, "fresh_memory": 1},
                ),
            ]

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
                    "get_10mib_p50_ms",
                )
            )
            figures.append(Figure("get 10 MiB p99", p99, "ms", key="get_10mib_p99_ms"))

            ctx = multiprocessing.get_context("spawn")
            with ctx.Pool(clients) as pool:
                counts = pool.map(
                    _small_ops_worker, [(str(cluster.path), w, small_seconds, 4096) for w in range(clients)]
                )
            small_path = {"request_reply_rate": 1}
            figures.append(
                bounded(
                    f"4 KiB put, {clients} clients",
                    "small_put_ops",
                    sum(c[0] for c in counts) / small_seconds,
                    limits,
                    small_path if durability == "none" else {**small_path, "disk_fsync_rate": 1},
                    goal=0.5,
                    unit="ops/s",
                )
            )
            figures.append(
                bounded(
                    f"4 KiB get, {clients} clients",
                    "small_get_ops",
                    sum(c[1] for c in counts) / small_seconds,
                    limits,
                    small_path,
                    goal=0.5,
                    unit="ops/s",
                )
            )

            victims = list(large.fragments[:m])  # holders of data fragments: every stripe must be decoded
            for node in victims:
                cluster.kill(node)
            client.refresh()
            degraded = summary.summary(_get_rates(client, data, runs, None, into=True))
            figures.append(
                relative(
                    f"get_into {size_mb} MiB, {m} data-holding agents killed",
                    "get_into_degraded_mbps",
                    degraded,
                    "MB/s",
                    "get_into warm",
                    summary.summary(warm),
                    goal=0.7,
                )
            )
            client.close()
        finally:
            cluster.destroy()
        figures += security_cost(
            put,
            summary.summary(fresh),
            agents=agents,
            ec=ec,
            size_mb=size_mb,
            data=data,
            durability=durability,
            path=Path(tmp),
            runs=summary,
        )
    return _report(console, figures, limits, summary, json_out)


def security_cost(
    put: float,
    get: float,
    *,
    agents: int,
    ec: str,
    size_mb: int,
    data: bytes,
    durability: str,
    path: Path,
    runs: Runs,
) -> list[Figure]:
    """Put and get on the same cluster made ``insecure`` (plain ZeroMQ), beside the CurveZMQ figures
    ``put`` and ``get`` just measured: what authentication and encryption cost."""
    cluster = LocalCluster.create(path / "plain", agents=agents, ec=ec, durability=durability, insecure=True)
    try:
        cluster.start()
        client = cluster.client()
        rates = []
        for _ in range(runs.count):
            os.sync()
            t0 = time.perf_counter()
            client.put(BUCKET, "large", data)
            rates.append(_mbps(len(data), time.perf_counter() - t0))
        plain_put = runs.summary(rates)
        plain_get = runs.summary(_get_rates(client, data, runs.count, None, into=False))
        client.close()
    finally:
        cluster.destroy()
    return [
        relative(f"put {size_mb} MiB, CurveZMQ", "put_curve_vs_plain", put, "MB/s", "plain ZeroMQ", plain_put, 0.75),
        relative(f"get {size_mb} MiB, CurveZMQ", "get_curve_vs_plain", get, "MB/s", "plain ZeroMQ", plain_get, 0.75),
    ]


def _get_rates(client: Any, data: bytes, runs: int, cold: list[Path] | None, *, into: bool) -> list[float]:
    """MB/s of ``runs`` reads of the large object: into one reused buffer (``into``) or as new bytes;
    each from the disks (``cold``: these fragment files dropped from the page cache first) or not."""
    buffer = bytearray(len(data)) if into else None
    rates = []
    for _ in range(runs):
        if cold is not None:
            drop_from_page_cache(cold)
        t0 = time.perf_counter()
        if buffer is not None:
            client.get_into(BUCKET, "large", buffer)
            got: Any = buffer
        else:
            got = client.get(BUCKET, "large")
        rates.append(_mbps(len(data), time.perf_counter() - t0))
        if got != data:
            raise AssertionError("benchmark read returned wrong bytes")
        del got
    return rates


def _report(
    console: Console, figures: list[Figure], limits: dict[str, Limit], runs: Runs | None, json_out: str | None
) -> dict[str, Any]:
    _print(console, figures, limits)
    document = bench_document(figures, limits, runs)
    if json_out:
        Path(json_out).write_text(json.dumps(document, indent=2))
    return document


def bench_document(figures: list[Figure], limits: dict[str, Limit], runs: Runs | None) -> dict[str, Any]:
    """The ``--json`` form: every figure and every limit under its stable name.

    Raises:
        ValueError: two figures share a name (one would hide the other).
    """
    names = [f.key or f.name for f in figures]
    if len(set(names)) != len(names):
        raise ValueError(f"figures named twice: {sorted({n for n in names if names.count(n) > 1})}")
    return {
        "machine": {"cores": os.cpu_count()},
        "runs": {"count": runs.count, "statistic": runs.statistic} if runs else None,
        "limits": {name: {"value": lim.value, "unit": lim.unit, "what": lim.what} for name, lim in limits.items()},
        "figures": {
            f.key or f.name: {
                "name": f.name,
                "value": f.value,
                "unit": f.unit,
                "limit": f.limit or None,
                "against": f.reference,
                "ratio": f.ratio,
                "target": f.target or None,
                "met": f.met,
            }
            for f in figures
        },
    }


def _print(console: Console, figures: list[Figure], limits: dict[str, Limit]) -> None:
    if limits:
        table = Table(title="this machine's limits, measured first")
        for column in ("limit", "value", "what"):
            table.add_column(column)
        for lim in limits.values():
            table.add_row(
                lim.name,
                f"{lim.value:,.2f} {lim.unit}" if lim.unit == "ms" else f"{lim.value:,.0f} {lim.unit}",
                lim.what,
            )
        console.print(table)
    table = Table(title="hcstore bench")
    for column in ("measure", "figure", "limit measured in the same run", "ratio", "target", "met"):
        table.add_column(column)
    for f in figures:
        value = f"{f.value:,.1f} {f.unit}" if f.unit in ("ms", "s") else f"{f.value:,.0f} {f.unit}"
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
    repair_rate: float = 0,
    probe_seconds: float = 10.0,
    json_out: str | None = None,
    console: Console | None = None,
) -> dict[str, Any]:
    """Lose one node holding ``node_mb`` MiB of fragments; time repair to full protection, then a rebalance.

    Beside them, the limits measured in the same run (first): the disk's cold read and its write rate
    with fsync, decode on all cores, ZeroMQ over several connections. The survivors' fragment files are
    dropped from the page cache before the kill, so that repair reads them from the disk. Each agent's
    repair and rebalance write at most ``repair_rate`` bytes/s (0: unlimited, the hardware's speed).

    A foreground reader reads a 4 MiB object that has no fragment on the lost node, 20 times a second
    (:class:`~hcstore.tools.foreground.PacedReader`): for ``probe_seconds`` before the loss, and while
    repair runs. Its p99 during repair, over its p99 before, is held to 2x.
    """
    from hcstore.control.membership import Intervals

    console = console or Console(width=max(Console().width, 120))
    k, m = parse_ec(ec)
    object_mb = 32
    total = int(node_mb * agents / (k + m) * k)  # object bytes that put about node_mb on each node
    count = max(1, total // object_mb)
    figures: list[Figure] = []
    with tempfile.TemporaryDirectory(prefix="hcstore-repair-bench-", dir=data_dir) as tmp:
        console.print(f"measuring this machine's limits ({os.cpu_count()} cores, disk under {tmp}) ...")
        chunk = chunk_size_for(None, k, ClientConfig().chunk_size)
        limits = measure_limits(Path(tmp), k=k, m=m, chunk_size=chunk, clients=1, file_mb=min(node_mb, 1024))
        cluster = LocalCluster.create(
            Path(tmp) / "cluster",
            agents=agents,
            ec=ec,
            durability="commit",
            intervals=Intervals(0.25, 0.75, 1.5, 3.0),
            repair_rate=repair_rate,  # the scan interval is the agents' default: a map change starts a scan
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
            console.print(
                f"{count} objects of {object_mb} MiB, EC {ec}, {agents} agents; node {victim} holds "
                f"{lost / 1e9:.2f} GB of fragments; out after 3 s"
            )
            probe_key = _key_off_node(client, victim, k, m)
            client.put(BUCKET, probe_key, payload[:PROBE_BYTES])
            probe_client = cluster.client()
            drop_from_page_cache([p for files in held.values() for p in files])
            with PacedReader(probe_client, BUCKET, probe_key, PROBE_BYTES) as idle:
                time.sleep(probe_seconds)
            cluster.kill(victim)
            t_kill = time.time()
            cluster.wait_for_map(lambda cm: cm.node(victim).state == "out", timeout=60)
            t_out = time.time()
            probe_client.refresh()  # the reader knows the node is out, as the cluster's clients soon do
            with PacedReader(probe_client, BUCKET, probe_key, PROBE_BYTES) as busy:
                _wait_protected(client, keys, excluding={victim}, timeout=1800)
            probe_client.close()
            t_done = _last_written(cluster.fragment_files(), since=t_kill)
            # per byte rebuilt: k fragments read (from the disk, over the wire) and decoded, one written and sent
            rebuild_path = {
                "disk_read_cold": k,
                "decode_all_cores": k,
                "disk_write_fsync": 1,
                "zeromq_n_streams": k + 1,
            }
            figures.append(
                bounded(
                    f"repair of a lost node ({lost / 1e9:.2f} GB)",
                    "repair_mbps",
                    lost / (t_done - t_out) / 1e6,
                    limits,
                    rebuild_path,
                    goal=0.5,
                )
            )
            figures.append(_foreground_impact(idle, busy, repair_rate))
            figures.append(
                Figure(
                    "time from kill to full protection",
                    t_done - t_kill,
                    "s",
                    f"detection (out-interval) {t_out - t_kill:.1f} s",
                    key="repair_seconds",
                )
            )
            drop_from_page_cache(cluster.fragment_files())
            t_start = time.time()
            newcomer = cluster.add_agent()
            cluster.wait_for_map(lambda cm: newcomer in cm and cm.node(newcomer).state == "alive", timeout=60)
            t_join = time.time()  # from here the cluster knows of the newcomer, as repair counts from t_out
            _wait_protected(client, keys, excluding=set(), timeout=1800, joined=newcomer)
            arrived = cluster.fragment_files(newcomer)
            moved = sum(p.stat().st_size for p in arrived)
            t_placed = _last_written(arrived, since=t_start)
            # per byte moved: one read from its holder, sent to the repairer and on, written once
            move_path = {"disk_read_cold": 1, "disk_write_fsync": 1, "zeromq_n_streams": 2}
            figures.append(
                bounded(
                    f"rebalance onto a joining node ({moved / 1e9:.2f} GB)",
                    "rebalance_mbps",
                    moved / (t_placed - t_join) / 1e6,
                    limits,
                    move_path,
                    goal=0.5,
                )
            )
            figures.append(
                Figure(
                    "time from the newcomer's start to every fragment in place",
                    t_placed - t_start,
                    "s",
                    f"agent start until it is in the map {t_join - t_start:.1f} s",
                    key="rebalance_seconds",
                )
            )
            client.close()
        finally:
            cluster.destroy()
    return _report(console, figures, limits, None, json_out)


def _key_off_node(client: Any, node: str, k: int, m: int) -> str:
    """A key whose ``k+m`` fragments a put places off ``node`` (all nodes serving)."""
    for attempt in range(1000):
        key = f"probe/{attempt}"
        placement, _quorum = place_in_home_set(f"{BUCKET}/{key}", client.cluster_map, k, m, operation="bench probe")
        if node not in placement.nodes:
            return key
    raise RuntimeError(f"no key of 1000 tried places its fragments off node {node}")


def _foreground_impact(idle: PacedReader, busy: PacedReader, repair_rate: float) -> Figure:
    """The foreground reader's p99 while repair ran, beside its p99 before the loss, held to 2x."""
    rate = f"{repair_rate / 1e6:,.0f} MB/s per agent" if repair_rate else "unlimited"
    ratio = busy.p99() / idle.p99()
    failed = f", {len(busy.errors)} failed" if busy.errors else ""
    return Figure(
        f"4 MiB get p99 during repair ({rate}; {len(busy.latencies_ms)} reads{failed})",
        busy.p99(),
        "ms",
        f"p99 before the loss {idle.p99():,.1f} ms",
        ratio,
        "<= 2x before",
        ratio <= 2.0 and not busy.errors,
        "repair_foreground_p99_ms",
    )


def _last_written(files: list[Path], *, since: float) -> float:
    """When the last of ``files`` written after ``since`` was written: the end of a repair, read from the
    disk rather than from when a poll noticed it."""
    return max((t for t in (p.stat().st_mtime for p in files) if t > since), default=time.time())


def _wait_protected(
    client: Any,
    keys: list[str],
    *,
    excluding: set[str],
    timeout: float,
    joined: str | None = None,
) -> None:
    """Poll until every object has all k+m fragments off ``excluding`` (and, after ``joined`` joined,
    every fragment sits where the map with it wants: nothing left to move)."""
    from hcstore.client.versions import resolve_many
    from hcstore.node.repair_plan import plan_object

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if joined is not None:
            client.refresh()
        ok = joined is None or (joined in client.cluster_map and client.cluster_map.node(joined).state == "alive")
        for version in resolve_many(client, [(BUCKET, key) for key in keys]).values() if ok else ():
            if isinstance(version, Exception):
                raise version
            held = [n for n in version.found_at if n and n not in excluding]
            placed = joined is None or not plan_object(version, client.cluster_map).rebuild
            if len(held) < version.k + version.m or not placed:
                ok = False
                break
        if ok:
            return
        time.sleep(0.5)
    raise TimeoutError(f"objects not fully protected within {timeout}s")
