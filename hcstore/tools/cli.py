"""The ``hcstore`` command line.

Cluster verbs: ``up``, ``down``, ``status``, ``node``, ``repair``, ``scrub``, ``keys``, and
``ray deploy|status|down`` for a Ray cluster; ``agent`` and ``controller`` run one
daemon in the foreground from its config file. Object verbs: ``put``, ``get``,
``ls``, ``rm``, ``stat`` on ``hcstore://BUCKET/KEY`` URLs. Showcases:
``demo`` and ``bench``. Every verb that talks to a cluster finds it through one
:class:`~hcstore.cluster.source.ClusterSource`: ``--cluster DIR`` or ``--cluster
tcp://CONTROLLER``, else ``HCSTORE_CLUSTER``, else the pointer ``hcstore up`` leaves
(``up`` and ``down`` work on local cluster directories only, and say so).

Every error, a bad argument included, prints one line, ``error (CODE): message``,
with the error's stable code, and exits with status 1: never a traceback.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, NoReturn

from rich.console import Console
from rich.markup import escape

from hcstore.cluster.local import DEFAULT_AGENTS, DEFAULT_MOUNTPATHS, LocalCluster
from hcstore.cluster.source import ClusterSource, point_at, unpoint
from hcstore.coding import parse_ec_spec
from hcstore.config import DURABILITY_POLICIES, AgentConfig, ClientConfig
from hcstore.errors import (
    HCStoreError,
    InvalidRequest,
    LocalFileError,
    NotInstalled,
)
from hcstore.names import parse_url
from hcstore.tools.admin_cli import add_verbs as add_admin_verbs
from hcstore.tools.daemons import add_verbs as add_daemon_verbs
from hcstore.tools.humanize import size
from hcstore.tools.keys_cli import add_verbs as add_keys_verbs

if TYPE_CHECKING:
    from hcstore.client.client import Client

DEFAULT_DATA_DIR = Path.home() / ".hcstore" / "cluster"
console = Console(width=None if sys.stdout.isatty() else 160, soft_wrap=True)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 160, soft_wrap=True)


# ---------------------------------------------------------------------- finding the cluster


def _source(args: argparse.Namespace) -> ClusterSource:
    """The cluster that ``--cluster``, ``HCSTORE_CLUSTER`` or ``hcstore up``'s pointer names."""
    return ClusterSource.find(args.cluster)


def _client(source: ClusterSource) -> Client:
    """A client of the cluster (imported here: verbs that need none load no data path)."""
    from hcstore.client.client import Client

    return Client(source)


# ---------------------------------------------------------------------- cluster verbs


def cmd_up(args: argparse.Namespace) -> int:
    """``hcstore up``: create (or restart) a local cluster, start it, and point commands at it."""
    data_dir = _data_dir(args)
    if (data_dir / "cluster.json").exists():
        cluster = LocalCluster(data_dir)
        console.print(f"restarting the existing cluster in {data_dir} (EC {cluster.ec})")
    else:
        given = {
            "agents": args.agents,
            "ec": args.ec,
            "mountpaths_per_agent": args.mountpaths_per_agent,
            "durability": args.durability,
            "capacity_bytes": args.capacity_bytes,
            "insecure": args.insecure or None,
        }
        cluster = LocalCluster.create(data_dir, **{name: value for name, value in given.items() if value is not None})
    cluster.start()
    point_at(data_dir)
    running = cluster.running()
    console.print(
        f"hcstore cluster up: {sum(p is not None for p in running.values())} agents, EC {cluster.ec}, "
        f"data in {data_dir}"
    )
    return 0


def _data_dir(args: argparse.Namespace) -> Path:
    """Where ``up`` keeps its cluster: ``--data-dir``, else a ``--cluster`` directory, else the default."""
    if args.data_dir:
        return Path(args.data_dir).expanduser().resolve()
    if args.cluster and "://" in args.cluster:
        raise InvalidRequest(
            f"`hcstore up` starts a local cluster, and --cluster {args.cluster} names a controller "
            "endpoint: give the cluster's directory with --data-dir DIR"
        )
    return Path(args.cluster or DEFAULT_DATA_DIR).expanduser().resolve()


def cmd_down(args: argparse.Namespace) -> int:
    """``hcstore down``: stop a local cluster (``--purge``: and delete it)."""
    path = _source(args).require_local("`hcstore down`")
    cluster = LocalCluster(path)
    cluster.stop()
    if args.purge:
        cluster.destroy()
    unpoint(path)
    console.print(f"hcstore cluster in {path} stopped{' and removed' if args.purge else ''}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    """``hcstore status``: agents, mountpaths, protection by level, repair progress and what needs attention.

    ``--json`` prints the same as one document (one line per refresh with ``--watch``); ``--watch
    [SECONDS]`` refreshes until Ctrl-C, or ``--count`` times.
    """
    from hcstore.tools.status import gather, render

    if args.count and args.watch is None:
        raise InvalidRequest("--count N counts the refreshes of --watch: add --watch [SECONDS]")
    source = _source(args)
    shown = 0
    try:
        while True:
            doc = gather(source)
            if args.json:
                print(json.dumps(doc, indent=None if args.watch else 2), flush=True)
            else:
                if args.watch and console.is_terminal:
                    console.clear()
                render(doc, console)
            shown += 1
            if args.watch is None or (args.count and shown >= args.count):
                return 0
            time.sleep(args.watch)
    except KeyboardInterrupt:
        return 0


class _Progress:
    """A progress bar on stderr for transfers of 64 MiB and more (nothing for small ones)."""

    THRESHOLD = 64 << 20

    def __init__(self, description: str, total: int | None) -> None:
        self.bar = None
        if total is not None and total >= self.THRESHOLD:
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                Progress,
                TextColumn,
                TransferSpeedColumn,
            )

            self.bar = Progress(
                TextColumn(escape(description)),
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                console=err_console,
                transient=True,
            )
            self.task = self.bar.add_task(description, total=total)

    def __enter__(self) -> _Progress:
        if self.bar:
            self.bar.start()
        return self

    def advance(self, nbytes: int) -> None:
        if self.bar:
            self.bar.advance(self.task, nbytes)

    def __exit__(self, *_: Any) -> None:
        if self.bar:
            self.bar.stop()


def _open_local(path: str | os.PathLike[str], mode: str) -> IO[bytes]:
    """Open a local file named on the command line.

    Raises:
        LocalFileError: it cannot be opened, with why.
    """
    try:
        return open(path, mode)
    except OSError as exc:
        doing = "read" if "r" in mode else "write"
        raise LocalFileError(f"cannot {doing} the local file {path}: {exc.strerror or exc}") from None


def cmd_put(args: argparse.Namespace) -> int:
    """``hcstore put LOCAL URL``: store a local file (or stdin) as an object."""
    bucket, key = parse_url(args.url)
    from_stdin = args.local == "-"
    local = sys.stdin.buffer if from_stdin else _open_local(args.local, "rb")
    try:
        total = None if from_stdin else os.fstat(local.fileno()).st_size
        client = _client(_source(args))
        with (
            _Progress(f"put hcstore://{bucket}/{key}", total) as progress,
            client.writer(bucket, key, size=total, ec=args.ec) as writer,
        ):
            while chunk := local.read(8 << 20):
                writer.write(chunk)
                progress.advance(len(chunk))
        result = writer.close()
    finally:
        if not from_stdin:
            local.close()
    note = " [yellow](degraded: awaiting repair)[/]" if result.degraded else ""
    console.print(
        f"put hcstore://{bucket}/{escape(key)}: {size(result.size)}, {result.codec} "
        f"{result.k}+{result.m}, generation {result.generation}{note}"
    )
    return 0


def cmd_get(args: argparse.Namespace) -> int:
    """``hcstore get URL LOCAL``: read an object into a local file (or stdout)."""
    bucket, key = parse_url(args.url)
    client = _client(_source(args))
    to_stdout = args.local == "-"
    target = Path(args.local)
    if not to_stdout and target.is_dir():
        target = target / key.rsplit("/", 1)[-1]
    tmp = target.with_name(f".{target.name}.hcstore-part")
    stream = client.open(bucket, key)
    total = stream.seek(0, os.SEEK_END)
    stream.seek(0)
    try:
        out = sys.stdout.buffer if to_stdout else _open_local(tmp, "wb")
        with _Progress(f"get hcstore://{bucket}/{key}", total) as progress:
            while chunk := stream.read(8 << 20):
                out.write(chunk)
                progress.advance(len(chunk))
        if not to_stdout:
            out.close()
            os.replace(tmp, target)
            err_console.print(
                f"got hcstore://{bucket}/{escape(key)} -> {escape(str(target))} ({size(total)})", highlight=False
            )
    finally:
        if not to_stdout:
            tmp.unlink(missing_ok=True)
    return 0


def cmd_ls(args: argparse.Namespace) -> int:
    """``hcstore ls [--partial] [URL]``: list the buckets, or the objects under a prefix.

    A listing that may lack entries (too many nodes did not answer) is an error, ``E_NOT_PROVEN``
    naming those nodes; with ``--partial`` it prints what the others hold and says on stderr,
    in one line starting ``partial listing``, which nodes it could not ask.
    """
    if args.url in ("hcstore://", "hcstore:", ""):
        buckets = _client(_source(args)).buckets(partial=args.partial)
        for bucket in buckets:
            print(f"hcstore://{bucket}/")
        _note_partial(buckets.complete, buckets.unreached)
        return 0
    bucket, prefix = parse_url(args.url, key_required=False)
    objects = _client(_source(args)).list(bucket, prefix, partial=args.partial)
    for info in objects:
        print(f"{info.size:>14}  {info.generation}  hcstore://{bucket}/{info.key}")
    _note_partial(objects.complete, objects.unreached)
    return 0


def _note_partial(complete: bool, unreached: tuple[str, ...]) -> None:
    """Say on stderr, in one line, that a listing is partial and which nodes it could not ask."""
    if not complete:
        sys.stdout.flush()
        err_console.print(
            f"partial listing: nodes {', '.join(unreached)} did not answer and may hold more entries", highlight=False
        )


def cmd_rm(args: argparse.Namespace) -> int:
    """``hcstore rm URL``: delete an object."""
    bucket, key = parse_url(args.url)
    _client(_source(args)).delete(bucket, key)
    console.print(f"deleted hcstore://{bucket}/{escape(key)}", highlight=False)
    return 0


def cmd_stat(args: argparse.Namespace) -> int:
    """``hcstore stat URL``: an object's size, generation and protection, as JSON."""
    bucket, key = parse_url(args.url)
    info = _client(_source(args)).stat(bucket, key)
    data = {
        "url": f"hcstore://{bucket}/{key}",
        "size": info.size,
        "generation": info.generation,
        "codec": info.codec,
        "k": info.k,
        "m": info.m,
        "fragments_found": info.fragments,
        "degraded": info.degraded,
        "meta": info.meta,
    }
    print(json.dumps(data, indent=None if args.json else 2))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """``hcstore demo``: a checkpoint survives the loss of ``m`` agents."""
    from hcstore.tools.demo import run_demo

    _check_agents_fit(args.agents, args.ec)
    return 0 if run_demo(size_mb=args.size_mb, agents=args.agents, ec=args.ec, data_dir=args.data_dir) else 1


def cmd_bench(args: argparse.Namespace) -> int:
    """``hcstore bench``: throughput and latency beside their limits."""
    from hcstore.tools.bench import run_bench, run_repair_bench

    _check_agents_fit(args.agents, args.ec)
    console = Console(stderr=True, width=max(Console().width, 120)) if args.json else None
    if args.repair:
        document = run_repair_bench(
            agents=args.agents + 1,
            ec=args.ec,
            node_mb=args.repair_node_mb,
            data_dir=args.data_dir,
            repair_rate=args.repair_rate,
            json_out=args.json_out,
            console=console,
        )
    else:
        document = run_bench(
            agents=args.agents,
            ec=args.ec,
            size_mb=args.size_mb,
            data_dir=args.data_dir,
            durability=args.durability,
            quick=args.quick,
            clients=args.clients,
            runs=args.runs,
            json_out=args.json_out,
            console=console,
        )
    if args.json:
        print(json.dumps(document, indent=2))
    return 0


def _check_agents_fit(agents: int, ec: str) -> None:
    """A showcase cluster needs an agent for each of the ``k+m`` fragments of an object."""
    k, m = parse_ec_spec(ec, what="--ec")
    if agents < k + m:
        raise InvalidRequest(
            f"--agents {agents} is fewer than the k+m={k + m} fragments of --ec {ec}: "
            f"use --agents {k + m} or more, or a smaller --ec"
        )


def cmd_ray(args: argparse.Namespace) -> int:
    """``hcstore ray ...``: run by the ``hcstore.plugins`` entry point ``ray`` (``ray_integration.cli``),
    so that this package never imports the layer above it."""
    from importlib.metadata import entry_points

    plugins = entry_points(group="hcstore.plugins", name="ray")
    try:
        run = next(iter(plugins)).load()
    except (StopIteration, ImportError) as exc:
        raise NotInstalled(
            f"Ray support is not installed ({exc or 'no hcstore.plugins entry point ray'}): pip install 'hcstore[ray]'"
        ) from None
    return int(run(args, lambda line: console.print(line, highlight=False)))


# ---------------------------------------------------------------------- arguments


class _Parser(argparse.ArgumentParser):
    """An argument parser whose complaints are :class:`InvalidRequest` errors, printed as one line."""

    def error(self, message: str) -> NoReturn:
        """Raise the complaint instead of printing usage and exiting with status 2."""
        raise InvalidRequest(f"{message} (see `{self.prog} --help`)")


def _argument(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """An argparse ``type`` from a parser that raises ValueError (InvalidRequest included)."""

    def convert(text: str) -> Any:
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = parse.__name__
    return convert


def _ec_spec(text: str) -> str:
    k, m = parse_ec_spec(text)
    return f"{k}+{m}"


def _number(kind: type, valid: Callable[[Any], bool], rule: str) -> Callable[[str], Any]:
    """A parser of numbers of ``kind`` that satisfy ``valid`` (``rule`` says which, in words)."""

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not valid(value):
            raise ValueError(f"{text!r} is not {rule}")
        return value

    parse.__name__ = kind.__name__
    return parse


EC = _argument(_ec_spec)
COUNT = _argument(_number(int, lambda n: n >= 1, "a whole number of at least 1"))
BYTES = _argument(_number(int, lambda n: n >= 0, "a whole number of bytes (0 or more)"))
SECONDS = _argument(_number(float, lambda s: 0 < s < math.inf, "a positive number of seconds"))
RATE = _argument(_number(float, lambda r: 0 <= r < math.inf, "a rate in bytes per second (0 or more)"))


def build_parser() -> argparse.ArgumentParser:
    """The ``hcstore`` argument parser, every verb included."""
    parser = _Parser(prog="hcstore", description="Erasure-coded object store on your GPU nodes' SSDs.")
    parser.add_argument(
        "--cluster",
        default=None,
        help="local cluster directory or controller endpoint tcp://HOST:PORT "
        "(default: $HCSTORE_CLUSTER or the one `up` started)",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="start an embedded local cluster in the background")
    up.add_argument("--agents", type=COUNT, help=f"number of agents (default {DEFAULT_AGENTS})")
    up.add_argument("--ec", type=EC, help=f"erasure coding K+M (default {ClientConfig.ec})")
    up.add_argument(
        "--data-dir", default=None, help=f"cluster directory (default: a --cluster directory, else {DEFAULT_DATA_DIR})"
    )
    up.add_argument("--mountpaths-per-agent", type=COUNT, help=f"directories per agent (default {DEFAULT_MOUNTPATHS})")
    up.add_argument(
        "--durability", choices=DURABILITY_POLICIES, help=f"fsync policy (default {AgentConfig.durability})"
    )
    up.add_argument("--capacity-bytes", type=BYTES, help="capacity of each mountpath (default: the disk's)")
    up.add_argument(
        "--insecure",
        action="store_true",
        help="no keys: plain ZeroMQ, no authentication or encryption (anyone who reaches a port can do anything)",
    )
    up.set_defaults(func=cmd_up)

    down = sub.add_parser("down", help="stop the local cluster")
    down.add_argument("--purge", action="store_true", help="also delete its data directory")
    down.set_defaults(func=cmd_down)

    status = sub.add_parser("status", help="agents, mountpaths, protection by level, repair progress and ETA")
    status.add_argument("--json", action="store_true", help="the same as JSON (field names: docs/observability.md)")
    status.add_argument(
        "--watch",
        nargs="?",
        const=2.0,
        type=SECONDS,
        metavar="SECONDS",
        help="refresh every SECONDS (default 2) until Ctrl-C",
    )
    status.add_argument("--count", type=COUNT, help="with --watch: stop after this many refreshes")
    status.set_defaults(func=cmd_status)

    add_admin_verbs(sub, console, err_console, SECONDS)

    put = sub.add_parser("put", help="store a local file (or - for stdin) as hcstore://BUCKET/KEY")
    put.add_argument("local")
    put.add_argument("url")
    put.add_argument("--ec", type=EC, default=None, help="erasure coding K+M for this object")
    put.set_defaults(func=cmd_put)

    get = sub.add_parser("get", help="read hcstore://BUCKET/KEY into a local file (or - for stdout)")
    get.add_argument("url")
    get.add_argument("local")
    get.set_defaults(func=cmd_get)

    ls = sub.add_parser("ls", help="list objects under hcstore://BUCKET/PREFIX (or buckets)")
    ls.add_argument("url", nargs="?", default="hcstore://")
    ls.add_argument(
        "--partial",
        action="store_true",
        help="when nodes that did not answer may hold more entries, list what the others hold "
        "(and say so on stderr) instead of failing",
    )
    ls.set_defaults(func=cmd_ls)

    rm = sub.add_parser("rm", help="delete hcstore://BUCKET/KEY")
    rm.add_argument("url")
    rm.set_defaults(func=cmd_rm)

    stat = sub.add_parser("stat", help="size, generation and protection of an object")
    stat.add_argument("url")
    stat.add_argument("--json", action="store_true", help="one-line JSON")
    stat.set_defaults(func=cmd_stat)

    demo = sub.add_parser("demo", help="store a checkpoint, kill m agents, read it all back verified")
    demo.add_argument("--size-mb", type=COUNT, default=256)
    demo.add_argument("--agents", type=COUNT, default=6)
    demo.add_argument("--ec", type=EC, default="4+2")
    demo.add_argument("--data-dir", default=None, help="where the demo cluster lives (default: a temporary directory)")
    demo.set_defaults(func=cmd_demo)

    bench = sub.add_parser("bench", help="throughput and latency, each beside its limit measured in the same run")
    bench.add_argument("--agents", type=COUNT, default=6)
    bench.add_argument("--ec", type=EC, default="4+2")
    bench.add_argument("--size-mb", type=COUNT, default=1024, help="size of the large object (default 1 GiB)")
    bench.add_argument("--durability", default="commit", choices=["none", "commit", "always"])
    bench.add_argument("--data-dir", default=None)
    bench.add_argument("--quick", action="store_true", help="small sizes and counts, for a smoke run")
    bench.add_argument("--clients", type=COUNT, default=8, help="concurrent clients of the small-object figures")
    bench.add_argument("--runs", type=COUNT, default=3, help="timed runs per throughput figure (median shown)")
    bench.add_argument("--json", action="store_true", help="print every figure and limit as JSON (tables: stderr)")
    bench.add_argument("--json-out", default=None, help="also write that JSON to this file")
    bench.add_argument(
        "--repair", action="store_true", help="instead: repair after losing a node, and rebalance onto a joining one"
    )
    bench.add_argument("--repair-node-mb", type=COUNT, default=512, help="fragment data on the lost node (MiB)")
    bench.add_argument(
        "--repair-rate",
        type=RATE,
        default=0,
        help="bytes/s each agent's repair may write in --repair (default 0: unlimited; the agents' default "
        f"is {AgentConfig.repair_rate:,.0f})",
    )
    bench.set_defaults(func=cmd_bench)

    add_daemon_verbs(sub)
    add_keys_verbs(sub, console)

    ray_verb = sub.add_parser("ray", help="deploy hcstore on a Ray cluster (one agent actor per node), status, down")
    ray_verb.add_argument("ray_command", choices=["deploy", "status", "down"])
    ray_verb.add_argument("--address", default="auto", help="Ray cluster address (default: auto)")
    ray_verb.add_argument(
        "--mountpath",
        action="append",
        default=[],
        help="directory for every node's agent, repeatable; may use {node_id} "
        "(default: a directory under the temp dir)",
    )
    ray_verb.add_argument("--ec", type=EC, default=ClientConfig.ec)
    ray_verb.add_argument("--durability", choices=DURABILITY_POLICIES, help=f"default {AgentConfig.durability}")
    ray_verb.add_argument(
        "--controller-dir",
        default=None,
        help="the controller's keys and cluster secret, on the head node (default: hcstore-ray/controller "
        "under its temp dir)",
    )
    ray_verb.add_argument(
        "--insecure", action="store_true", help="deploy without keys: plain ZeroMQ, no authentication"
    )
    ray_verb.add_argument("--timeout", type=SECONDS, default=300.0)
    ray_verb.set_defaults(func=cmd_ray)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one ``hcstore`` command; returns the exit status (errors: one line on stderr, status 1)."""
    try:
        args = build_parser().parse_args(argv)
        return args.func(args)
    except KeyboardInterrupt:
        return 130
    except HCStoreError as exc:
        _report(exc)
    except OSError as exc:  # a local file or device the command was pointed at
        _report(LocalFileError(f"{exc.strerror}: {exc.filename}" if exc.filename and exc.strerror else str(exc)))
    except ValueError as exc:  # a bad value that no check above caught
        _report(InvalidRequest(str(exc)))
    return 1


def _report(error: HCStoreError) -> None:
    """Print ``error (CODE): message`` as one line on stderr."""
    message = " ".join(str(error).split()) or type(error).__name__
    err_console.print(f"[red]error[/] ({error.code}): {escape(message)}", highlight=False)


if __name__ == "__main__":
    sys.exit(main())
