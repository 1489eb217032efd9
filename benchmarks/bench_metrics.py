"""What the metrics cost the data path: puts and gets with metrics on and off, in the same run.

Two local clusters of the same shape run side by side: one as configured by default (every
agent and the controller count requests and serve ``/metrics``, scraped here every
``--scrape-interval`` seconds, more often than Prometheus usually does), one with
``metrics_port = -1`` (no endpoint, nothing counted). Each round runs the same workloads on
both, in alternating order so that neither always goes first; the medians over the rounds are
compared, and the cost is held to the goal of less than 3%.

Figures: the throughput a client sees and the CPU time the cluster's daemons (agents and
controller, scrapes included) spent per operation, each with metrics on and off. On a shared,
busy machine both swing with the neighbours' load from one round to the next (the spread over
the rounds is printed), so the cost is also measured where the metrics run, in an agent's
handling of each request: two agents in this process, one with metrics and one without, answer
the same read and locate requests through ``Agent.handle`` in alternating blocks, timed by the
thread's own CPU clock, and the fastest block of each is compared. The cost of a put+get is then
the CPU the metrics add per agent request, times the agent requests a put+get makes (counted by
the metrics themselves), over the daemons' CPU per put+get; that is the figure held to the goal.

Workloads: small objects (``--small-kb``, 4 KiB by default) put and got one after another,
where a request's fixed cost weighs most, and one large object (``--large-mb``) put and got.

python benchmarks/bench_metrics.py [--agents 6] [--ec 4+2] [--rounds 5] [--small-ops 300] [--small-kb 4]
                                   [--large-mb 64] [--durability none] [--scrape-interval 1.0] [--json-out F]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

from hcstore.cluster.local import LocalCluster
from hcstore.config import AgentConfig, ControllerConfig

BUCKET = "bench"
GOAL = 0.03  # metrics may cost at most 3% of throughput


def _disable_metrics(cluster: LocalCluster) -> None:
    """Set ``metrics_port = -1`` in every daemon's config file of a cluster not yet started."""
    controller_file = cluster.path / "controller.toml"
    ControllerConfig.load(controller_file, environ={}).replace(metrics_port=-1).write(controller_file)
    for agent in cluster.agents():
        config = AgentConfig.load(agent.config_file, environ={}).replace(metrics_port=-1)
        config.write(agent.config_file, include=("node_id",))


def _metrics_urls(cluster: LocalCluster) -> list[str]:
    files = [cluster.controller_ready_file, *(agent.ready_file for agent in cluster.agents())]
    return [url for url in (json.loads(f.read_text()).get("metrics") for f in files) if url]


class Scraper(threading.Thread):
    """Scrapes every URL each ``interval`` seconds until stopped, as Prometheus would (more often)."""

    def __init__(self, urls: list[str], interval: float) -> None:
        super().__init__(daemon=True)
        self.urls, self.interval = urls, interval
        self.scrapes = 0
        self._done = threading.Event()

    def run(self) -> None:
        """Scrape until stopped."""
        while not self._done.wait(self.interval):
            for url in self.urls:
                urllib.request.urlopen(url, timeout=10).read()
                self.scrapes += 1

    def stop(self) -> None:
        """Stop scraping and wait for the thread."""
        self._done.set()
        self.join()


def _daemons(cluster: LocalCluster) -> list[psutil.Process]:
    files = [cluster.controller_ready_file, *(agent.ready_file for agent in cluster.agents())]
    return [psutil.Process(json.loads(f.read_text())["pid"]) for f in files]


def _cpu_seconds(processes: list[psutil.Process]) -> float:
    return sum(sum(p.cpu_times()[:2]) for p in processes)  # user + system


def scrape_cost(cluster: LocalCluster, scrapes: int = 20) -> float:
    """Milliseconds of an agent's CPU per scrape of its ``/metrics``."""
    agent = cluster.agents()[0]
    ready = json.loads(agent.ready_file.read_text())
    process = psutil.Process(ready["pid"])
    cpu = _cpu_seconds([process])
    for _ in range(scrapes):
        urllib.request.urlopen(ready["metrics"], timeout=10).read()
    return (_cpu_seconds([process]) - cpu) * 1e3 / scrapes


def handling_cost(directory: Path, requests: int = 200, blocks: int = 60) -> dict[str, dict[str, float]]:
    """Microseconds of CPU an agent spends answering one request, with metrics on and off: fastest of ``blocks``.

    Each agent holds one committed 64 KiB fragment; the requests are reads of one 64 KiB chunk
    of it and locates of its key, answered inline by ``Agent.handle`` (no socket, no client).
    """
    from ec import FragmentHeader, header_to_dict
    from hcstore.node.agent import Agent
    from hcstore.wire import protocol

    chunk, gen = 64 << 10, f"{1:019d}-0000-0000abcd"
    header = header_to_dict(
        FragmentHeader(
            bucket=BUCKET,
            key="k",
            generation=gen,
            kind="data",
            codec="replica",
            k=1,
            m=0,
            chunk_size=chunk,
            size=chunk,
            index=0,
            stripes=1,
            digests=bytes(32),
            placement=("n1",),
            created_ns=1,
        )
    )
    del header["digests"]
    agents = {}
    for side, port in (("on", 0), ("off", -1)):
        agent = agents[side] = Agent(
            AgentConfig(
                node_id="n1",
                mountpaths=(str(directory / side),),
                durability="none",
                metrics_port=port,
                insecure=True,
            )
        )
        upload = agent.store.open_upload(BUCKET, "k", gen, 0, chunk, chunk)
        agent.store.write_chunk(upload, 0, os.urandom(chunk))
        agent.store.prepare(upload, header)
        agent.store.commit(BUCKET, "k", gen, 0)
    frames = {
        "read": [
            b"peer",
            *protocol.request_frames(
                "read",
                1,
                0,
                {"bucket": BUCKET, "key": "k", "gen": gen, "idx": 0, "first": 0, "count": 1, "path": "remote"},
            ),
        ],
        "locate": [b"peer", *protocol.request_frames("locate", 2, 0, {"bucket": BUCKET, "key": "k"})],
    }
    best = {op: {side: float("inf") for side in agents} for op in frames}
    try:
        for block in range(blocks):
            for op, message in frames.items():
                for side in ("on", "off") if block % 2 == 0 else ("off", "on"):
                    handle = agents[side].handle
                    started = time.thread_time()  # this thread's CPU: waiting for a busy machine's cores is not counted
                    for _ in range(requests):
                        handle(message)
                    best[op][side] = min(best[op][side], (time.thread_time() - started) / requests * 1e6)
    finally:
        for agent in agents.values():
            agent.close()
    return best


def small_ops(client: Any, tag: str, count: int, size: int) -> tuple[float, int]:
    """Seconds and operations: ``count`` puts then ``count`` gets of ``size``-byte objects."""
    payload = os.urandom(size)
    started = time.perf_counter()
    for i in range(count):
        client.put(BUCKET, f"small/{tag}/{i}", payload)
    for i in range(count):
        client.get(BUCKET, f"small/{tag}/{i}")
    return time.perf_counter() - started, 2 * count


def large_object(client: Any, tag: str, data: bytes) -> tuple[float, int]:
    """Seconds and megabytes: one large object put then got (both transfers counted)."""
    started = time.perf_counter()
    client.put(BUCKET, f"large/{tag}", data)
    client.get(BUCKET, f"large/{tag}")
    return time.perf_counter() - started, round(2 * len(data) / 1e6)


Workload = Callable[[Any, str], tuple[float, int]]


def _agent_requests(urls: list[str]) -> float:
    """Requests the agents behind ``urls`` have answered, as their metrics count them."""
    from prometheus_client.parser import text_string_to_metric_families

    texts = (urllib.request.urlopen(url, timeout=10).read().decode() for url in urls)
    return sum(
        s.value
        for text in texts
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "hcstore_requests_total"
    )


def measure(
    rounds: int,
    workloads: dict[str, Workload],
    clients: dict[str, Any],
    daemons: dict[str, list[psutil.Process]],
    agent_urls: list[str],
) -> dict[str, dict[str, Any]]:
    """Each workload on each cluster, ``rounds`` times, alternating which cluster goes first.

    Returns, by workload: for each cluster ``rate`` (units per second) and ``cpu`` (daemon CPU
    milliseconds per unit), one per round; and ``requests``, agent requests per unit (metrics on).
    """
    results: dict[str, dict[str, Any]] = {
        name: {side: {"rate": [], "cpu": []} for side in clients} for name in workloads
    }
    sides = list(clients)
    for r in range(rounds):
        order = sides if r % 2 == 0 else sides[::-1]
        for name, workload in workloads.items():
            for side in order:
                cpu = _cpu_seconds(daemons[side])
                answered = _agent_requests(agent_urls) if side == "on" else 0.0
                seconds, units = workload(clients[side], f"{r}-{side}")
                results[name][side]["cpu"].append((_cpu_seconds(daemons[side]) - cpu) * 1e3 / units)
                results[name][side]["rate"].append(units / seconds)
                if side == "on":
                    results[name]["requests"] = (_agent_requests(agent_urls) - answered) / units
    return results


def main() -> None:
    """Run both clusters, print each workload's figure with metrics on and off, the cost and the goal."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--agents", type=int, default=6)
    parser.add_argument("--ec", default="4+2")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--small-ops", type=int, default=300)
    parser.add_argument("--small-kb", type=int, default=4)
    parser.add_argument("--large-mb", type=int, default=64)
    parser.add_argument("--durability", default="none", choices=["none", "commit", "always"])
    parser.add_argument("--scrape-interval", type=float, default=15.0)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--json-out", default=None)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="hcstore-bench-metrics-", dir=args.data_dir) as tmp:
        handling = handling_cost(Path(tmp))
    data = os.urandom(args.large_mb << 20)
    workloads: dict[str, Workload] = {
        f"{args.small_kb} KiB put+get, per op": lambda c, tag: small_ops(c, tag, args.small_ops, args.small_kb << 10),
        f"{args.large_mb} MiB put+get, per MB": lambda c, tag: large_object(c, tag, data),
    }
    with tempfile.TemporaryDirectory(prefix="hcstore-bench-metrics-", dir=args.data_dir) as tmp:
        shape = {"agents": args.agents, "ec": args.ec, "durability": args.durability, "scan_interval": 3600.0}
        on = LocalCluster.create(Path(tmp) / "on", **shape)  # no repair scans: they would only add noise
        off = LocalCluster.create(Path(tmp) / "off", **shape)
        _disable_metrics(off)
        scraper = None
        try:
            on.start()
            off.start()
            assert not _metrics_urls(off) and _metrics_urls(on), "one cluster must have metrics, the other none"
            scraper = Scraper(_metrics_urls(on), args.scrape_interval)
            scraper.start()
            clients = {"on": on.client(), "off": off.client()}
            for client in clients.values():  # warm up sockets and caches on both
                small_ops(client, "warm", 20, args.small_kb << 10)
            daemons = {"on": _daemons(on), "off": _daemons(off)}
            agent_urls = [json.loads(a.ready_file.read_text())["metrics"] for a in on.agents()]
            results = measure(args.rounds, workloads, clients, daemons, agent_urls)
            scraper.stop()
            scrape_ms = scrape_cost(on)
            for client in clients.values():
                client.close()
        finally:
            if scraper is not None and scraper.is_alive():
                scraper.stop()
            on.destroy()
            off.destroy()

    print(
        f"{args.agents} agents, EC {args.ec}, durability {args.durability}, {args.rounds} rounds, "
        f"{os.cpu_count()} cores; metrics on: {scraper.scrapes} scrapes every {args.scrape_interval}s"
    )
    added_us = max(by_side["on"] - by_side["off"] for by_side in handling.values())
    print(f"{'':<26}{'figure':<28}{'metrics on':>12}{'metrics off':>12}{'on/off':>8}   spread over rounds")
    for op, by_side in handling.items():
        added = by_side["on"] - by_side["off"]
        print(
            f"{f'agent answers a {op}':<26}{'CPU (us/request)':<28}{by_side['on']:>12,.1f}{by_side['off']:>12,.1f}"
            f"{by_side['on'] / by_side['off']:>8.3f}   fastest of 60 blocks: {added:+.1f} us"
        )
    report: list[dict[str, Any]] = [
        {"figure": f"agent {op} CPU us/request", **by_side} for op, by_side in handling.items()
    ]
    for name, by_side in results.items():
        unit = "op" if "per op" in name else "MB"
        rate_unit = "ops/s" if unit == "op" else "MB/s"
        for figure, key, scale in ((f"throughput ({rate_unit})", "rate", 1.0), (f"daemon CPU (us/{unit})", "cpu", 1e3)):
            on_values, off_values = (by_side[side][key] for side in ("on", "off"))
            on_median, off_median = statistics.median(on_values) * scale, statistics.median(off_values) * scale
            spread = (max(off_values) - min(off_values)) / statistics.median(off_values)
            print(
                f"{name if key == 'rate' else '':<26}{figure:<28}{on_median:>12,.1f}{off_median:>12,.1f}"
                f"{on_median / off_median:>8.3f}   {spread:.0%} (metrics off)"
            )
            report.append(
                {
                    "figure": f"{name}: {figure}",
                    "on": on_median,
                    "off": off_median,
                    "spread": spread,
                    "rounds": {"on": on_values, "off": off_values},
                }
            )
    print(
        f"cost on the data path, goal < {GOAL:.0%}: the CPU metrics add per agent request ({added_us:.1f} us, the "
        "larger of the two) times the agent requests per unit, over the daemons' CPU per unit (metrics off)"
    )
    for name, by_side in results.items():
        unit = "op" if "per op" in name else "MB"
        per_unit_us = statistics.median(by_side["off"]["cpu"]) * 1e3
        cost = added_us * by_side["requests"] / per_unit_us
        print(
            f"  {name}: {added_us:.1f} us x {by_side['requests']:.1f} requests/{unit} / {per_unit_us:,.0f} us/{unit}"
            f" = {cost:.2%}: {'met' if cost < GOAL else 'NOT met'}"
        )
        report.append(
            {
                "figure": f"{name}: cost",
                "cost": cost,
                "goal": GOAL,
                "met": cost < GOAL,
                "agent_requests_per_unit": by_side["requests"],
                "added_us_per_request": added_us,
            }
        )
    print(
        f"  and scrapes: one of an agent's /metrics takes {scrape_ms:.1f} ms of its CPU, {scrape_ms / 15e3:.3%} of a "
        "core at a 15 s interval"
    )
    report.append({"figure": "agent scrape CPU ms", "value": scrape_ms})
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
