"""The ``hcstore`` command line.

Cluster verbs: ``up``, ``down``, ``status``, ``node``, ``repair``, ``scrub``, and
``ray deploy|status|down`` for a Ray cluster; ``agent`` and ``controller`` run one
daemon in the foreground from its config file. Object verbs: ``put``, ``get``,
``ls``, ``rm``, ``stat`` on ``hcstore://BUCKET/KEY`` URLs. Showcases:
``demo`` and ``bench``. Every verb finds the cluster through ``--cluster DIR``
or ``--cluster tcp://CONTROLLER``, ``HCSTORE_CLUSTER``, or the pointer ``hcstore up`` leaves.
Errors print one line naming what went wrong and exit with status 1.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from hcstore.config import DURABILITY_POLICIES, AgentConfig, ClientConfig
from hcstore.errors import HCStoreError
from hcstore.tools.daemons import add_verbs as add_daemon_verbs
from hcstore.tools.humanize import size
from hcstore.cluster.directory import POINTER, find_cluster_dir
from hcstore.cluster.local import DEFAULT_AGENTS, DEFAULT_MOUNTPATHS, LocalCluster
from hcstore.names import parse_url

DEFAULT_DATA_DIR = Path.home() / ".hcstore" / "cluster"
console = Console(width=None if sys.stdout.isatty() else 160, soft_wrap=True)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 160, soft_wrap=True)


def _client(args: argparse.Namespace) -> Any:
    from hcstore.client.client import Client

    return Client(args.cluster)


def cmd_up(args: argparse.Namespace) -> int:
    data_dir = Path(args.data_dir or DEFAULT_DATA_DIR).resolve()
    if (data_dir / "cluster.json").exists():
        cluster = LocalCluster(data_dir)
        console.print(f"restarting the existing cluster in {data_dir} (EC {cluster.ec})")
    else:
        given = {"agents": args.agents, "ec": args.ec, "mountpaths_per_agent": args.mountpaths_per_agent,
                 "durability": args.durability, "capacity_bytes": args.capacity_bytes}
        cluster = LocalCluster.create(data_dir, **{name: value for name, value in given.items() if value is not None})
    cluster.start()
    POINTER.parent.mkdir(parents=True, exist_ok=True)
    POINTER.write_text(str(data_dir))
    running = cluster.running()
    console.print(f"hcstore cluster up: {sum(p is not None for p in running.values())} agents, EC {cluster.ec}, "
                  f"data in {data_dir}")
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    path = find_cluster_dir(args.cluster)
    cluster = LocalCluster(path)
    cluster.stop()
    if args.purge:
        cluster.destroy()
    if POINTER.exists() and Path(POINTER.read_text().strip()) == path:
        POINTER.unlink()
    console.print(f"hcstore cluster in {path} stopped{' and removed' if args.purge else ''}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    path = find_cluster_dir(args.cluster)
    cluster = LocalCluster(path)
    client = _client(args)
    stats = client.node_stats()
    running = cluster.running()
    rows = []
    for node in client.cluster_map.nodes:
        s = stats[node.id]
        up = isinstance(s, dict)
        state = node.state if up or node.state not in ("alive", "suspect") else "down"   # what we just saw wins
        rows.append({
            "id": node.id, "endpoint": node.endpoint or "-", "pid": running.get(node.id),
            "state": state, "map_state": node.state, "mountpaths": len(s["mountpaths"]) if up else None,
            "used": s["used"] if up else None, "free": s["free"] if up else None,
            "fragments": s["fragments"] if up else None, "error": None if up else str(s)})
    protection = _protection(args)
    if args.json:
        print(json.dumps({"cluster": str(path), "ec": cluster.ec, "epoch": client.cluster_map.epoch,
                          "nodes": rows, "protection": protection}, indent=2))
        return 0
    table = Table(title=f"hcstore cluster {path} (EC {cluster.ec})")
    for column in ("id", "endpoint", "pid", "state", "mountpaths", "used", "free", "fragments"):
        table.add_column(column)
    for r in rows:
        style = "" if r["state"] == "alive" else "red"
        table.add_row(r["id"], r["endpoint"], str(r["pid"] or "-"), r["state"], str(r["mountpaths"] or "-"),
                      size(r["used"]) if r["used"] is not None else "-",
                      size(r["free"]) if r["free"] is not None else "-",
                      str(r["fragments"]) if r["fragments"] is not None else "-", style=style)
    console.print(table)
    if protection:
        p = protection
        console.print(f"protection (last scans): {p['protected']} objects fully protected, {p['degraded']} degraded, "
                      f"{p['misplaced']} being moved, {p['unreadable']} unreadable; "
                      f"{size(p['bytes_awaiting_repair'])} awaiting repair, {size(p['bytes_repaired'])} rebuilt")
    return 0


def _controller_request(args: argparse.Namespace, op: str, fields: dict[str, Any]) -> dict[str, Any]:
    from hcstore.cluster.directory import controller_endpoint
    from hcstore.wire.transport import Transport

    path = find_cluster_dir(args.cluster)
    endpoint = controller_endpoint(path)
    if not endpoint:
        raise HCStoreError(f"the controller of {path} is not running: start the cluster with `hcstore up`")
    transport = Transport(connect_timeout=1.0, request_timeout=5.0)
    try:
        return transport.request(endpoint, op, fields).header
    finally:
        transport.close()


def cmd_node(args: argparse.Namespace) -> int:
    fields = {"node": args.node, "action": args.action}
    if args.action == "remove":
        fields["force"] = args.force
    _controller_request(args, "node_admin", fields)
    if args.action == "drain":
        console.print(f"node {args.node} is draining: it serves reads, takes no new fragments, and hands its "
                      "fragments over")
        if args.wait:
            _wait_drained(args)
    elif args.action == "resume":
        console.print(f"node {args.node} is back in service")
    else:
        console.print(f"node {args.node} removed from the cluster map")
    return 0


def _wait_drained(args: argparse.Namespace) -> None:
    import time

    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        held = _controller_request(args, "status", {})["stats"].get(args.node, {}).get("data_fragments")
        if held == 0:
            console.print(f"node {args.node} holds no fragments: safe to remove (`hcstore node remove {args.node}`)")
            return
        err_console.print(f"node {args.node}: {held} fragments left to hand over", highlight=False)
        time.sleep(2.0)
    raise HCStoreError(f"node {args.node} still holds fragments after {args.timeout}s; the drain goes on")


def cmd_background(args: argparse.Namespace) -> int:
    """``hcstore repair`` / ``hcstore scrub``: run the job on every agent now and show progress."""
    import time

    from hcstore.node.repair_plan import protection_summary

    client = _client(args)
    key = "scans" if args.command == "repair" else "scrubs"
    before: dict[str, int] = {}
    for node in client.cluster_map.nodes:
        if node.endpoint and node.state in ("alive", "maintenance"):
            try:
                before[node.id] = client.transport.request(node.endpoint, "maintain", {"job": args.command}).header[key]
            except HCStoreError as exc:
                err_console.print(f"node {node.id} skipped: {exc}", highlight=False)
    deadline = time.monotonic() + args.timeout
    while True:
        stats = _controller_request(args, "status", {})["stats"]
        done = [n for n, count in before.items() if (stats.get(n, {}).get("repair") or {}).get(key, 0) > count]
        summary = protection_summary(stats)
        err_console.print(f"{args.command}: {len(done)}/{len(before)} agents finished a pass; "
                          f"{summary['protected']} objects protected, {summary['degraded']} degraded, "
                          f"{summary['misplaced']} misplaced, {summary['unreadable']} unreadable, "
                          f"{summary['bytes_repaired']} bytes rebuilt", highlight=False)
        if len(done) == len(before):
            break
        if time.monotonic() > deadline:
            raise HCStoreError(f"{args.command} did not finish within {args.timeout}s; it goes on in the background")
        time.sleep(1.0)
    if args.command == "scrub":
        console.print(f"scrub done: {summary['scrub_corrupt']} corrupt fragments quarantined (repair rebuilds them)")
    else:
        console.print(f"repair pass done: {summary['protected']}/{summary['objects']} objects fully protected")
    return 0


def _protection(args: argparse.Namespace) -> dict[str, int] | None:
    from hcstore.node.repair_plan import protection_summary

    try:
        return protection_summary(_controller_request(args, "status", {})["stats"])
    except HCStoreError:
        return None


class _Progress:
    """A progress bar on stderr for transfers of 64 MiB and more (nothing for small ones)."""

    THRESHOLD = 64 << 20

    def __init__(self, description: str, total: int | None) -> None:
        self.bar = None
        if total is not None and total >= self.THRESHOLD:
            from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

            self.bar = Progress(TextColumn(description), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                                console=err_console, transient=True)
            self.task = self.bar.add_task(description, total=total)

    def __enter__(self) -> "_Progress":
        if self.bar:
            self.bar.start()
        return self

    def advance(self, nbytes: int) -> None:
        if self.bar:
            self.bar.advance(self.task, nbytes)

    def __exit__(self, *_: Any) -> None:
        if self.bar:
            self.bar.stop()


def cmd_put(args: argparse.Namespace) -> int:
    bucket, key = parse_url(args.url)
    client = _client(args)
    source = sys.stdin.buffer if args.local == "-" else open(args.local, "rb")
    try:
        total = None if args.local == "-" else Path(args.local).stat().st_size
        with _Progress(f"put hcstore://{bucket}/{key}", total) as progress, \
                client.writer(bucket, key, size=total, ec=args.ec) as writer:
            while chunk := source.read(8 << 20):
                writer.write(chunk)
                progress.advance(len(chunk))
        result = writer.close()
    finally:
        if source is not sys.stdin.buffer:
            source.close()
    note = " [yellow](degraded: awaiting repair)[/]" if result.degraded else ""
    console.print(f"put hcstore://{bucket}/{key}: {size(result.size)}, {result.codec} "
                  f"{result.k}+{result.m}, generation {result.generation}{note}")
    return 0


def cmd_get(args: argparse.Namespace) -> int:
    bucket, key = parse_url(args.url)
    client = _client(args)
    to_stdout = args.local == "-"
    target = Path(args.local)
    if not to_stdout and target.is_dir():
        target = target / key.rsplit("/", 1)[-1]
    tmp = target.with_name(f".{target.name}.hcstore-part")
    stream = client.open(bucket, key)
    total = client.stat(bucket, key).size
    try:
        out = sys.stdout.buffer if to_stdout else open(tmp, "wb")
        with _Progress(f"get hcstore://{bucket}/{key}", total) as progress:
            while chunk := stream.read(8 << 20):
                out.write(chunk)
                progress.advance(len(chunk))
        if not to_stdout:
            out.close()
            os.replace(tmp, target)
            err_console.print(f"got hcstore://{bucket}/{key} -> {target} ({size(total)})")
    finally:
        if not to_stdout:
            tmp.unlink(missing_ok=True)
    return 0


def cmd_ls(args: argparse.Namespace) -> int:
    client = _client(args)
    if args.url in ("hcstore://", "hcstore:", ""):
        for bucket in client.buckets():
            print(f"hcstore://{bucket}/")
        return 0
    bucket, prefix = parse_url(args.url, key_required=False)
    for info in client.list(bucket, prefix):
        print(f"{info.size:>14}  {info.generation}  hcstore://{bucket}/{info.key}")
    return 0


def cmd_rm(args: argparse.Namespace) -> int:
    bucket, key = parse_url(args.url)
    _client(args).delete(bucket, key)
    console.print(f"deleted hcstore://{bucket}/{key}")
    return 0


def cmd_stat(args: argparse.Namespace) -> int:
    bucket, key = parse_url(args.url)
    info = _client(args).stat(bucket, key)
    data = {"url": f"hcstore://{bucket}/{key}", "size": info.size, "generation": info.generation,
            "codec": info.codec, "k": info.k, "m": info.m, "fragments_found": info.fragments,
            "degraded": info.degraded, "meta": info.meta}
    print(json.dumps(data, indent=None if args.json else 2))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from hcstore.tools.demo import run_demo

    return 0 if run_demo(size_mb=args.size_mb, agents=args.agents, ec=args.ec, data_dir=args.data_dir) else 1


def cmd_bench(args: argparse.Namespace) -> int:
    from hcstore.tools.bench import run_bench, run_repair_bench

    if args.repair:
        run_repair_bench(agents=args.agents + 1, ec=args.ec, node_mb=args.repair_node_mb, data_dir=args.data_dir)
        return 0
    run_bench(agents=args.agents, ec=args.ec, size_mb=args.size_mb, data_dir=args.data_dir,
              durability=args.durability, quick=args.quick)
    return 0


def cmd_ray(args: argparse.Namespace) -> int:
    """``hcstore ray ...``: run by the ``hcstore.plugins`` entry point ``ray`` (``ray_integration.cli``),
    so that this package never imports the layer above it."""
    from importlib.metadata import entry_points

    plugins = entry_points(group="hcstore.plugins", name="ray")
    try:
        run = next(iter(plugins)).load()
    except (StopIteration, ImportError) as exc:
        err_console.print(f"[red]error[/]: Ray support is not installed ({exc}): pip install 'hcstore[ray]'",
                          highlight=False)
        return 1
    return int(run(args, lambda line: console.print(line, highlight=False)))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hcstore", description="Erasure-coded object store on your GPU nodes' SSDs.")
    parser.add_argument("--cluster", default=None, help="local cluster directory or controller endpoint tcp://HOST:PORT "
                        "(default: $HCSTORE_CLUSTER or the one `up` started)")
    sub = parser.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="start an embedded local cluster in the background")
    up.add_argument("--agents", type=int, help=f"number of agents (default {DEFAULT_AGENTS})")
    up.add_argument("--ec", help=f"erasure coding K+M (default {ClientConfig.ec})")
    up.add_argument("--data-dir", default=None, help=f"cluster directory (default {DEFAULT_DATA_DIR})")
    up.add_argument("--mountpaths-per-agent", type=int, help=f"directories per agent (default {DEFAULT_MOUNTPATHS})")
    up.add_argument("--durability", choices=DURABILITY_POLICIES,
                    help=f"fsync policy (default {AgentConfig.durability})")
    up.add_argument("--capacity-bytes", type=int, help="capacity of each mountpath (default: the disk's)")
    up.set_defaults(func=cmd_up)

    down = sub.add_parser("down", help="stop the local cluster")
    down.add_argument("--purge", action="store_true", help="also delete its data directory")
    down.set_defaults(func=cmd_down)

    status = sub.add_parser("status", help="table of agents")
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=cmd_status)

    node = sub.add_parser("node", help="drain, resume or remove a node")
    node.add_argument("action", choices=["drain", "resume", "remove"])
    node.add_argument("node")
    node.add_argument("--force", action="store_true", help="remove even if the node still holds fragments")
    node.add_argument("--wait", action="store_true", help="drain: wait until the node holds no fragments")
    node.add_argument("--timeout", type=float, default=3600.0)
    node.set_defaults(func=cmd_node)

    for job, text in (("repair", "check every object now and rebuild or move what is missing or misplaced"),
                      ("scrub", "re-verify every fragment's checksums now; corrupt ones are quarantined and rebuilt")):
        verb = sub.add_parser(job, help=text)
        verb.add_argument("--timeout", type=float, default=3600.0)
        verb.set_defaults(func=cmd_background)

    put = sub.add_parser("put", help="store a local file (or - for stdin) as hcstore://BUCKET/KEY")
    put.add_argument("local")
    put.add_argument("url")
    put.add_argument("--ec", default=None, help="erasure coding K+M for this object")
    put.set_defaults(func=cmd_put)

    get = sub.add_parser("get", help="read hcstore://BUCKET/KEY into a local file (or - for stdout)")
    get.add_argument("url")
    get.add_argument("local")
    get.set_defaults(func=cmd_get)

    ls = sub.add_parser("ls", help="list objects under hcstore://BUCKET/PREFIX (or buckets)")
    ls.add_argument("url", nargs="?", default="hcstore://")
    ls.set_defaults(func=cmd_ls)

    rm = sub.add_parser("rm", help="delete hcstore://BUCKET/KEY")
    rm.add_argument("url")
    rm.set_defaults(func=cmd_rm)

    stat = sub.add_parser("stat", help="size, generation and protection of an object")
    stat.add_argument("url")
    stat.add_argument("--json", action="store_true", help="one-line JSON")
    stat.set_defaults(func=cmd_stat)

    demo = sub.add_parser("demo", help="store a checkpoint, kill m agents, read it all back verified")
    demo.add_argument("--size-mb", type=int, default=256)
    demo.add_argument("--agents", type=int, default=6)
    demo.add_argument("--ec", default="4+2")
    demo.add_argument("--data-dir", default=None, help="where the demo cluster lives (default: a temporary directory)")
    demo.set_defaults(func=cmd_demo)

    bench = sub.add_parser("bench", help="throughput and latency, each beside its limit measured in the same run")
    bench.add_argument("--agents", type=int, default=6)
    bench.add_argument("--ec", default="4+2")
    bench.add_argument("--size-mb", type=int, default=1024, help="size of the large object (default 1 GiB)")
    bench.add_argument("--durability", default="commit", choices=["none", "commit", "always"])
    bench.add_argument("--data-dir", default=None)
    bench.add_argument("--quick", action="store_true", help="small sizes and counts, for a smoke run")
    bench.add_argument("--repair", action="store_true",
                       help="instead: repair after losing a node, and rebalance onto a joining one")
    bench.add_argument("--repair-node-mb", type=int, default=512, help="fragment data on the lost node (MiB)")
    bench.set_defaults(func=cmd_bench)

    add_daemon_verbs(sub)

    ray_verb = sub.add_parser("ray", help="deploy hcstore on a Ray cluster (one agent actor per node), status, down")
    ray_verb.add_argument("ray_command", choices=["deploy", "status", "down"])
    ray_verb.add_argument("--address", default="auto", help="Ray cluster address (default: auto)")
    ray_verb.add_argument("--mountpath", action="append", default=[],
                          help="directory for every node's agent, repeatable; may use {node_id} "
                               "(default: a directory under the temp dir)")
    ray_verb.add_argument("--ec", default="4+2")
    ray_verb.add_argument("--durability", choices=DURABILITY_POLICIES, help=f"default {AgentConfig.durability}")
    ray_verb.add_argument("--timeout", type=float, default=300.0)
    ray_verb.set_defaults(func=cmd_ray)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except HCStoreError as exc:
        err_console.print(f"[red]error[/] ({exc.code}): {exc}", highlight=False)
        return 1
    except (FileNotFoundError, IsADirectoryError, PermissionError) as exc:
        err_console.print(f"[red]error[/]: {exc}", highlight=False)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
