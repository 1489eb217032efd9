"""The ``hcstore`` command line.

Cluster verbs: ``up``, ``down``, ``status``. Object verbs: ``put``, ``get``,
``ls``, ``rm``, ``stat`` on ``hcstore://BUCKET/KEY`` URLs. Showcases:
``demo`` and ``bench``. Every verb finds the running local cluster through
``--cluster DIR``, ``HCSTORE_CLUSTER``, or the pointer ``hcstore up`` leaves.
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

from hcstore.errors import HCStoreError
from hcstore.humanize import size
from hcstore.local_cluster import POINTER, LocalCluster, find_cluster_dir
from hcstore.names import parse_url

DEFAULT_DATA_DIR = Path.home() / ".hcstore" / "cluster"
console = Console(width=None if sys.stdout.isatty() else 160, soft_wrap=True)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 160, soft_wrap=True)


def _client(args: argparse.Namespace) -> Any:
    from hcstore.client import Client

    return Client(args.cluster)


def cmd_up(args: argparse.Namespace) -> int:
    data_dir = Path(args.data_dir or DEFAULT_DATA_DIR).resolve()
    if (data_dir / "cluster.json").exists():
        cluster = LocalCluster(data_dir)
        console.print(f"restarting the existing cluster in {data_dir} (EC {cluster.ec})")
    else:
        cluster = LocalCluster.create(data_dir, agents=args.agents, ec=args.ec,
                                      mountpaths_per_agent=args.mountpaths_per_agent, durability=args.durability,
                                      capacity_bytes=args.capacity_bytes)
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
    if args.json:
        print(json.dumps({"cluster": str(path), "ec": cluster.ec, "epoch": client.cluster_map.epoch,
                          "nodes": rows}, indent=2))
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
    return 0


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
    from hcstore.demo import run_demo

    return 0 if run_demo(size_mb=args.size_mb, agents=args.agents, ec=args.ec, data_dir=args.data_dir) else 1


def cmd_bench(args: argparse.Namespace) -> int:
    from hcstore.bench import run_bench

    run_bench(agents=args.agents, ec=args.ec, size_mb=args.size_mb, data_dir=args.data_dir,
              durability=args.durability, quick=args.quick)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hcstore", description="Erasure-coded object store on your GPU nodes' SSDs.")
    parser.add_argument("--cluster", default=None, help="local cluster directory (default: $HCSTORE_CLUSTER or the one `up` started)")
    sub = parser.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="start an embedded local cluster in the background")
    up.add_argument("--agents", type=int, default=6)
    up.add_argument("--ec", default="4+2", help="erasure coding K+M (default 4+2)")
    up.add_argument("--data-dir", default=None, help=f"cluster directory (default {DEFAULT_DATA_DIR})")
    up.add_argument("--mountpaths-per-agent", type=int, default=2)
    up.add_argument("--durability", default="commit", choices=["none", "commit", "always"])
    up.add_argument("--capacity-bytes", type=int, default=0, help="capacity of each mountpath (0: the disk's)")
    up.set_defaults(func=cmd_up)

    down = sub.add_parser("down", help="stop the local cluster")
    down.add_argument("--purge", action="store_true", help="also delete its data directory")
    down.set_defaults(func=cmd_down)

    status = sub.add_parser("status", help="table of agents")
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=cmd_status)

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
    bench.set_defaults(func=cmd_bench)
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
