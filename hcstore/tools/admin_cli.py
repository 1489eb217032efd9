"""The operator's verbs: ``hcstore node ...``, ``hcstore repair``/``scrub`` and ``hcstore wait ...``.

``hcstore node drain|resume|remove NODE`` and ``hcstore node maintenance enter|exit NODE``
change a node's administrative state through the controller (an admin key). ``hcstore repair``
and ``hcstore scrub`` run a pass on every agent now and show its progress. ``hcstore wait ready``
and ``hcstore wait protected`` block until the cluster is ready or every object is fully
protected, for scripts and playbooks: exit status 0, or 1 with the reason at the timeout.
"""

from __future__ import annotations

import argparse
import functools
import time
from collections.abc import Callable, Collection
from typing import Any

from rich.console import Console
from rich.markup import escape

from hcstore.cluster.source import ClusterSource
from hcstore.control.client import ControllerClient
from hcstore.control.membership import DEFAULT_MAINTENANCE
from hcstore.errors import HCStoreError, Timeout

POLL = 1.0  # seconds between two looks while waiting


def add_verbs(sub: Any, console: Console, err_console: Console, seconds: Callable[[str], float]) -> None:
    """Register ``node``, ``repair``, ``scrub`` and ``wait`` on the ``hcstore`` parser's subcommands.

    Args:
        sub: the ``hcstore`` parser's subcommands.
        console: where results go (standard output).
        err_console: where progress and warnings go (standard error).
        seconds: the argument type of a duration in seconds.
    """
    run = functools.partial

    node = sub.add_parser("node", help="drain, resume, remove, or start or end the maintenance of a node")
    actions = node.add_subparsers(dest="node_command", required=True)
    drain = actions.add_parser("drain", help="serve reads, take no new fragments, hand every fragment over")
    drain.add_argument("--wait", action="store_true", help="wait until the node holds no fragments")
    drain.add_argument("--timeout", type=seconds, default=3600.0)
    actions.add_parser("resume", help="bring a drained or removed node back into service")
    remove = actions.add_parser("remove", help="take the node out of the cluster map (refused while it holds data)")
    remove.add_argument("--force", action="store_true", help="remove even if the node still holds fragments")
    maintenance = actions.add_parser(
        "maintenance",
        help="a planned outage: the node is not marked out and nothing is rebuilt for its absence",
    )
    maintenance.add_argument("maintenance_command", choices=["enter", "exit"])
    maintenance.add_argument(
        "--max-duration",
        type=seconds,
        default=DEFAULT_MAINTENANCE,
        help=f"enter: after this many seconds normal failure handling resumes (default {DEFAULT_MAINTENANCE:g})",
    )
    for action in (drain, actions.choices["resume"], remove, maintenance):
        action.add_argument("node")
    node.set_defaults(func=run(cmd_node, console=console, err_console=err_console))

    for job, text in (
        ("repair", "check every object now and rebuild or move what is missing or misplaced"),
        ("scrub", "re-verify every fragment's checksums now; corrupt ones are quarantined and rebuilt"),
    ):
        verb = sub.add_parser(job, help=text)
        verb.add_argument("--timeout", type=seconds, default=3600.0)
        verb.set_defaults(func=run(cmd_background, console=console, err_console=err_console))

    wait = sub.add_parser("wait", help="block until the cluster is ready, or every object fully protected")
    conditions = wait.add_subparsers(dest="wait_command", required=True)
    ready = conditions.add_parser(
        "ready", help="the controller answers, and every node answers and serves the current map epoch"
    )
    ready.add_argument(
        "--node", action="append", default=[], help="only this node (repeatable; default: every node in service)"
    )
    conditions.add_parser("protected", help="every object is fully protected, by a scan of every agent made now")
    for condition in conditions.choices.values():
        condition.add_argument("--timeout", type=seconds, default=600.0)
    wait.set_defaults(func=run(cmd_wait, console=console, err_console=err_console))


# ---------------------------------------------------------------------- node administration


def cmd_node(args: argparse.Namespace, *, console: Console, err_console: Console) -> int:
    """``hcstore node ...``: node administration through the controller."""
    with ClusterSource.find(args.cluster).controller() as controller:
        verb, node = args.node_command, args.node
        if verb == "drain":
            controller.drain(node)
            console.print(f"node {node} is draining: it serves reads, takes no new fragments, hands its fragments over")
            if args.wait:
                _wait_drained(controller, node, args.timeout, console, err_console)
        elif verb == "resume":
            controller.resume(node)
            console.print(f"node {node} is back in service")
        elif verb == "remove":
            controller.remove(node, force=args.force)
            console.print(f"node {node} removed from the cluster map")
        elif args.maintenance_command == "enter":
            controller.enter_maintenance(node, args.max_duration)
            console.print(
                f"node {node} is in maintenance for at most {args.max_duration:g}s: it may stop; it is not marked "
                "out and nothing is rebuilt for its absence; end it with `hcstore node maintenance exit`"
            )
        else:
            controller.exit_maintenance(node)
            console.print(f"node {node} is in service: what it missed is rebuilt on it (`hcstore wait protected`)")
    return 0


def _wait_drained(controller: ControllerClient, node: str, timeout: float, console: Console, err: Console) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        held = controller.status().stats.get(node, {}).get("data_fragments")
        if held == 0:
            console.print(f"node {node} holds no fragments: safe to remove (`hcstore node remove {node}`)")
            return
        err.print(f"node {node}: {held} fragments left to hand over", highlight=False)
        time.sleep(2.0)
    raise Timeout(
        f"node {node} still holds fragments after {timeout}s; the drain goes on (`hcstore status` shows its progress)"
    )


# ---------------------------------------------------------------------- background passes


def cmd_background(args: argparse.Namespace, *, console: Console, err_console: Console) -> int:
    """``hcstore repair`` / ``hcstore scrub``: run the job on every agent now and show progress."""
    from hcstore.client.client import Client

    with Client(ClusterSource.find(args.cluster)) as client:
        summary = run_pass(client, args.command, time.monotonic() + args.timeout, err_console)
    if args.command == "scrub":
        console.print(f"scrub done: {summary['scrub_corrupt']} corrupt fragments quarantined (repair rebuilds them)")
    else:
        console.print(f"repair pass done: {summary['protected']}/{summary['objects']} objects fully protected")
    return 0


def run_pass(client: Any, job: str, deadline: float, err: Console) -> dict[str, int]:
    """Ask every agent in service to run ``job`` (``repair`` or ``scrub``) now; wait until each finished a pass.

    Returns the protection summary of the agents' reports after their passes.

    Raises:
        Timeout: not every agent finished a pass by ``deadline`` (time.monotonic()).
    """
    from hcstore.node.repair_plan import protection_summary

    key = "scans" if job == "repair" else "scrubs"
    controller = client.controller()
    before: dict[str, int] = {}
    for node in client.cluster_map.nodes:
        if node.endpoint and node.state in ("alive", "draining"):
            try:
                before[node.id] = client.transport.request(node.endpoint, "maintain", {"job": job}).header[key]
            except HCStoreError as exc:
                err.print(f"node {node.id} skipped: {escape(str(exc))}", highlight=False)
    while True:
        stats = controller.status().stats
        done = [n for n, count in before.items() if (stats.get(n, {}).get("repair") or {}).get(key, 0) > count]
        summary = protection_summary(stats)
        err.print(
            f"{job}: {len(done)}/{len(before)} agents finished a pass; "
            f"{summary['protected']} objects protected, {summary['degraded']} degraded, "
            f"{summary['misplaced']} misplaced, {summary['unreadable']} unreadable, "
            f"{summary['bytes_repaired']} bytes rebuilt",
            highlight=False,
        )
        if len(done) == len(before):
            return summary
        if time.monotonic() > deadline:
            raise Timeout(f"{job} did not finish within the time given; it goes on in the background")
        time.sleep(POLL)


# ---------------------------------------------------------------------- waiting


def cmd_wait(args: argparse.Namespace, *, console: Console, err_console: Console) -> int:
    """``hcstore wait ready|protected``: poll until the condition holds; Timeout (status 1) says why not."""
    source = ClusterSource.find(args.cluster)
    deadline = time.monotonic() + args.timeout
    if args.wait_command == "ready":
        _wait_ready(source, args.node, deadline, args.timeout, console, err_console)
    else:
        _wait_protected(source, deadline, args.timeout, console, err_console)
    return 0


def _wait_ready(
    source: ClusterSource, nodes: list[str], deadline: float, timeout: float, console: Console, err: Console
) -> None:
    from hcstore.tools.status import gather

    reasons = ["the controller did not answer"]
    while time.monotonic() < deadline:
        try:
            doc = gather(source)
        except HCStoreError as exc:
            reasons = [f"the controller did not answer: {exc}"]
        else:
            reasons = unready(doc, nodes)
            if not reasons:
                console.print(f"ready: {_names(doc, nodes)} serve map epoch {doc['epoch']}", highlight=False)
                return
        err.print(f"not ready yet: {'; '.join(reasons)}", highlight=False)
        time.sleep(POLL)
    raise Timeout(f"not ready after {timeout:g}s: {'; '.join(reasons)}")


def unready(doc: dict[str, Any], nodes: Collection[str] = ()) -> list[str]:
    """Why the cluster in the status document ``doc`` is not ready, one reason a line ([] when it is; pure).

    Every node named in ``nodes`` (none named: every node but the decommissioned) must answer and
    serve the map's epoch or a newer one.
    """
    known = {node["id"]: node for node in doc["nodes"]}
    reasons = [f"node {name} is not in the cluster map" for name in nodes if name not in known]
    if nodes:
        wanted = [known[name] for name in nodes if name in known]
    else:
        wanted = [node for node in doc["nodes"] if node["map_state"] != "decommissioned"]
    for node in wanted:
        if node["error"]:
            reasons.append(f"node {node['id']} ({node['map_state']}) did not answer: {node['error']}")
        elif node["epoch"] is None or node["epoch"] < doc["epoch"]:
            reasons.append(f"node {node['id']} serves map epoch {node['epoch']}, the controller's is {doc['epoch']}")
    return reasons


def _names(doc: dict[str, Any], nodes: Collection[str]) -> str:
    return ", ".join(nodes) if nodes else f"all {len(doc['nodes'])} nodes"


def _wait_protected(source: ClusterSource, deadline: float, timeout: float, console: Console, err: Console) -> None:
    from hcstore.client.client import Client

    below: Any = "unknown"
    while time.monotonic() < deadline:
        with Client(source) as client:
            run_pass(client, "repair", deadline, err)
            protection = client.controller().status().protection
        below = protection.get("below_full")
        if below == 0:
            objects = sum(protection.get("objects", {}).values())
            console.print(f"protected: all {objects} objects fully protected, by scans made now", highlight=False)
            return
        err.print(f"{below} objects below full protection; scanning again", highlight=False)
        time.sleep(POLL)
    raise Timeout(f"{below} objects still below full protection after {timeout:g}s; repair goes on")
