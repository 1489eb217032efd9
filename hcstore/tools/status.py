"""``hcstore status``: what each node, disk and object is doing, and what needs an operator.

:func:`gather` asks every agent for its ``node_stats`` and the controller for its status, and
:func:`document` turns the answers into one JSON-ready document whose field names are stable
(they are listed in ``docs/observability.md``); :func:`render` prints it as tables. The
document ends with ``problems``: one line per thing an operator should act on, each saying
what to do.
"""

from __future__ import annotations

import math
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from hcstore.cluster.local import LocalCluster
from hcstore.cluster.source import ClusterSource
from hcstore.control.client import ControllerStatus
from hcstore.errors import HCStoreError
from hcstore.metrics.protection import FULL, UNREADABLE, level_order
from hcstore.tools.humanize import size
from placement import ClusterMap

NEAR_FULL = 0.9
"""A mountpath whose used bytes pass this fraction of its limit is reported before it fills."""


def gather(source: ClusterSource) -> dict[str, Any]:
    """The status document of the cluster ``source`` names (see :func:`document`)."""
    from hcstore.client.client import Client

    with Client(source) as client:
        stats = client.node_stats()
        controller = client.controller() if source.controller_endpoint() else None
        ec = source.default_ec(controller)
        try:
            status = controller.status() if controller else None
        except HCStoreError:
            status = None
        cluster_map = client.cluster_map
        secure = client.credentials.secure
    running = LocalCluster(source.directory).running() if source.directory else {}
    return document(
        source.location, ec, cluster_map, stats, status, running, source.controller_endpoint(), secure=secure
    )


def document(
    location: str,
    ec: str,
    cluster_map: ClusterMap,
    stats: dict[str, Any],
    status: ControllerStatus | None,
    running: dict[str, int | None],
    controller_endpoint: str,
    *,
    secure: bool = True,
) -> dict[str, Any]:
    """The status document from what the agents and the controller answered (pure).

    Args:
        location: the cluster's directory or controller endpoint.
        ec: the cluster's default erasure coding.
        cluster_map: the current map.
        stats: each node's ``node_stats`` reply, or the error that stood in its way, by node id.
        status: the controller's status (None: no controller answered).
        running: pids of a local cluster's agents, by node id.
        controller_endpoint: the controller's endpoint ("" for none).
        secure: whether the cluster was reached over CurveZMQ (False: it runs insecure).
    """
    ages = status.ages if status else {}
    reports = status.stats if status else {}
    nodes = [
        _node(node, stats.get(node.id), running.get(node.id), ages.get(node.id), reports.get(node.id))
        for node in cluster_map.nodes
    ]
    protection = status.protection if status and status.protection else None
    doc = {
        "cluster": location,
        "ec": ec,
        "epoch": cluster_map.epoch,
        "security": "curve" if secure else "insecure",
        "controller": {
            "endpoint": controller_endpoint or None,
            "metrics_url": (status.metrics_url or None) if status else None,
        },
        "nodes": nodes,
        "protection": _protection(protection) if protection else None,
        "repair": _repair(protection, nodes) if protection else None,
    }
    doc["problems"] = problems(doc)
    return doc


def _node(node: Any, seen: Any, pid: int | None, age: float | None, report: dict[str, Any] | None) -> dict[str, Any]:
    """One node's row: what the map says, what the agent answered just now, and its disks."""
    answer = seen if isinstance(seen, dict) else None
    state = node.state if answer or node.state not in ("alive", "suspect") else "down"  # what we just saw wins
    return {
        "id": node.id,
        "state": state,
        "map_state": node.state,
        "endpoint": node.endpoint or None,
        "metrics_url": (answer.get("metrics") or None) if answer else None,
        "pid": pid,
        "epoch": answer.get("epoch") if answer else None,
        "heartbeat_age": None if age is None else round(age, 3),
        "scanning": bool(((report or {}).get("repair") or {}).get("running")),
        "fragments": answer["fragments"] if answer else None,
        "used": answer["used"] if answer else None,
        "free": answer["free"] if answer else None,
        "mountpaths": [_mountpath(mp) for mp in answer["mountpaths"]] if answer else [],
        "error": None if answer else str(seen or f"node {node.id} did not answer"),
    }


def _mountpath(mp: dict[str, Any]) -> dict[str, Any]:
    """One mountpath's entry (``state``: enabled, full or disabled; ``error``: why it was disabled)."""
    state = mp.get("state") or ("disabled" if mp.get("disabled") else "enabled")
    return {
        "id": mp["id"],
        "path": mp["path"],
        "state": state,
        "used": mp.get("used", mp.get("stored")),
        "free": mp["free"],
        "capacity": mp["capacity"],
        "limit": mp.get("limit"),
        "fragments": mp["fragments"],
        "fragment_bytes": mp.get("stored"),
        "io_errors": mp.get("io_errors", 0),
        "error": mp.get("disabled") or None,
    }


def _protection(summary: dict[str, Any]) -> dict[str, Any]:
    return {
        "objects": summary["objects"],
        "bytes": summary["bytes"],
        "below_full": summary["below_full"],
        "reports": summary["reports"],
    }


def _repair(summary: dict[str, Any], nodes: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "bytes_awaiting": summary["bytes_awaiting_repair"],
        "bytes_missing": summary["bytes_missing"],
        "bytes_repaired": summary["bytes_repaired"],
        "repaired": summary["repaired"],
        "failed": summary["failed"],
        "rate_bytes_per_second": summary["repair_rate"],
        "eta_seconds": summary["eta_seconds"],
        "scrub_corrupt": summary["scrub_corrupt"],
        "scanning": [n["id"] for n in nodes if n["scanning"]],
    }


def problems(doc: dict[str, Any]) -> list[str]:
    """What an operator should act on, one line each, saying what to do (pure)."""
    found = []
    for node in doc["nodes"]:
        if node["state"] in ("down", "suspect", "out"):
            found.append(
                f"node {node['id']} is {node['state']}: its fragments are read around; if it stays away "
                "past out_after repair rebuilds them elsewhere; restart its agent or check the host"
            )
        if node["epoch"] is not None and node["epoch"] < doc["epoch"]:
            found.append(
                f"node {node['id']} serves by map epoch {node['epoch']}, older than {doc['epoch']}: "
                "check that it reaches the controller"
            )
        for mp in node["mountpaths"]:
            if mp["state"] == "disabled":
                found.append(
                    f"mountpath {mp['path']} of node {node['id']} is disabled ({mp['error']}): its "
                    "fragments are rebuilt elsewhere; replace the disk and restart the agent"
                )
            elif mp["state"] == "full":
                found.append(
                    f"mountpath {mp['path']} of node {node['id']} is full: it takes no new fragments; "
                    "free space or add mountpaths"
                )
            elif mp["limit"] and mp["used"] > NEAR_FULL * mp["limit"]:
                found.append(
                    f"mountpath {mp['path']} of node {node['id']} is {mp['used'] / mp['limit']:.0%} of "
                    "its limit: free space or add mountpaths before it fills"
                )
    protection, repair = doc["protection"], doc["repair"]
    if protection and protection["objects"].get(UNREADABLE):
        found.append(
            f"{protection['objects'][UNREADABLE]} objects are unreadable (fewer than k fragments): bring "
            "back the nodes or disks that held them"
        )
    if repair and repair["bytes_awaiting"] and not repair["rate_bytes_per_second"]:
        found.append(
            f"repair is stalled: {size(repair['bytes_awaiting'])} to rebuild and nothing written in the "
            "last minutes; see the agents' logs"
        )
    return found


def render(doc: dict[str, Any], console: Console) -> None:
    """Print the status document as tables and lines."""
    controller = doc["controller"]
    where = f", controller {controller['endpoint']}" if controller["endpoint"] else ", no controller"
    if controller["metrics_url"]:
        where += f" (metrics {controller['metrics_url']})"
    console.print(
        f"hcstore cluster {escape(doc['cluster'])}: EC {doc['ec'] or '-'}, map epoch {doc['epoch']}{escape(where)}",
        highlight=False,
    )
    if doc["security"] == "insecure":
        console.print(
            "[bold red]INSECURE[/]: [red]no authentication, no encryption: anyone who reaches a port can read, "
            "delete and reconfigure everything[/]",
            highlight=False,
        )
    console.print(_nodes_table(doc["nodes"]))
    console.print(_mountpaths_table(doc["nodes"]))
    if doc["protection"]:
        console.print(protection_line(doc["protection"]), highlight=False)
        console.print(repair_line(doc["repair"]), highlight=False)
    else:
        console.print("protection: unknown (no controller answered)", highlight=False)
    for problem in doc["problems"]:
        console.print(f"[red]attention[/]: {escape(problem)}", highlight=False)


def _nodes_table(nodes: list[dict[str, Any]]) -> Table:
    table = Table(title="agents")
    for column in ("id", "state", "endpoint", "metrics", "pid", "epoch", "fragments", "used", "free"):
        table.add_column(column)
    for n in nodes:
        table.add_row(
            n["id"],
            n["state"] + (" (scanning)" if n["scanning"] else ""),
            n["endpoint"] or "-",
            n["metrics_url"] or "-",
            _text(n["pid"]),
            _text(n["epoch"]),
            _text(n["fragments"]),
            _size(n["used"]),
            _size(n["free"]),
            style="" if n["state"] == "alive" else "red",
        )
    return table


def _mountpaths_table(nodes: list[dict[str, Any]]) -> Table:
    table = Table(title="mountpaths")
    for column in ("node", "path", "id", "state", "used", "free", "capacity", "fragments", "I/O errors"):
        table.add_column(column)
    for n in nodes:
        for mp in n["mountpaths"]:
            table.add_row(
                n["id"],
                mp["path"],
                mp["id"][:8],
                mp["state"],
                _size(mp["used"]),
                _size(mp["free"]),
                _size(mp["capacity"]),
                _text(mp["fragments"]),
                _text(mp["io_errors"]),
                style="" if mp["state"] == "enabled" else "red",
            )
    return table


def protection_line(protection: dict[str, Any]) -> str:
    """``protection (latest scans of N agents): ...`` with objects and bytes per level, most protected first."""
    parts = []
    for level in sorted(protection["objects"], key=level_order):
        count, nbytes = protection["objects"][level], protection["bytes"].get(level, 0)
        if level == FULL:
            what = "fully protected"
        elif level == UNREADABLE:
            what = "unreadable"
        else:
            what = f"can lose {level} more fragment{'' if level == '1' else 's'}"
        parts.append(f"{count} {what} ({size(nbytes)})")
    return f"protection (latest scans of {protection['reports']} agents): {', '.join(parts)}"


def repair_line(repair: dict[str, Any]) -> str:
    """``repair: ...``: what is missing, the rate, and when full protection is back."""
    done = f"{size(repair['bytes_repaired'])} rebuilt since the agents started"
    if not repair["bytes_missing"]:
        return f"repair: nothing missing; {done}"
    eta = repair["eta_seconds"]
    when = (
        f"full protection in about {_duration(eta)}"
        if eta is not None and math.isfinite(eta)
        else "no repair progress in the last minutes (waiting for down nodes to return or to be out)"
    )
    return (
        f"repair: {size(repair['bytes_missing'])} missing, {size(repair['bytes_awaiting'])} being rebuilt at "
        f"{size(repair['rate_bytes_per_second'])}/s; {when}; {done}"
    )


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f}s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _text(value: Any) -> str:
    return "-" if value is None else str(value)


def _size(value: Any) -> str:
    return "-" if value is None else size(value)
