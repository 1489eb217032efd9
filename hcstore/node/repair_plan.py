"""What an object needs, decided from where its fragments were found (pure: no I/O).

One code path serves node loss, disk loss, joins, weight changes and drains.
:func:`plan_object` compares where an object's fragments were found with where
:func:`placement.plan_moves` wants them under the current map, inside the key's
home set (:func:`placement.home_map`: rebuilt and moved fragments stay where
readers can prove them, as a put's do):

* a fragment on a node that is ``alive`` (or ``suspect``/``down``: not yet
  *out*, so it may come back; or in ``maintenance``, a planned outage) and
  still in the placement set stays;
* a fragment that is missing while its node answered (lost disk, quarantined
  by scrub), or whose node is *out*, decommissioned or gone, is **rebuilt**;
* a fragment on a node that left the placement set (a node joined above it,
  or the node is draining) is **moved**: rebuilt on its new owner, and only
  then dropped from the old one.

Fragments whose node did not answer are left alone until the node is *out*,
so a node that reboots within the out-interval causes no repair traffic at all;
a node in maintenance keeps its place however long it is away, and a fragment
that a put could not write to it is rebuilt there once it is back in service.
The scan and scrub reports and the cluster-wide protection summary live here too.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hcstore.client.versions import ObjectVersion
from placement import ClusterMap, home_set, plan_moves, rank

SETTLED = frozenset({"alive"})
MAY_RETURN = frozenset({"suspect", "down", "maintenance"})
GONE = frozenset({"out", "decommissioned"})


@dataclass(frozen=True)
class ObjectPlan:
    """What an object needs. ``rebuild`` maps fragment index -> new node; ``drop`` index -> old node."""

    rebuild: dict[int, str] = field(default_factory=dict)
    drop: dict[int, str] = field(default_factory=dict)
    extra: tuple[tuple[int, str], ...] = ()  # surplus copies (a node came back after repair): drop now
    waiting: tuple[int, ...] = ()  # fragments on nodes that are down but not yet out
    available: int = 0  # fragments readable now

    def status(self, k: int, n: int) -> str:
        """``unreadable`` (< k fragments), ``degraded`` (< n), ``misplaced`` (n, some to move) or ``protected``."""
        if self.available < k:
            return "unreadable"
        if self.available < n:
            return "degraded"
        return "misplaced" if self.rebuild else "protected"


def _planning_home(key: str, cluster_map: ClusterMap, k: int, m: int) -> ClusterMap:
    """The key's home map as placement should see it for existing data: nodes that may come back keep their
    place (they are ranked as they are; only their state reads *alive*)."""
    home = (cluster_map.node(node_id) for node_id in home_set(key, cluster_map, k, m))
    nodes = tuple(dataclasses.replace(n, state="alive") if n.state in MAY_RETURN else n for n in home)
    return ClusterMap(cluster_map.epoch, nodes)


def plan_object(version: ObjectVersion, cluster_map: ClusterMap) -> ObjectPlan:
    """Decide which fragments of ``version`` to rebuild, move or wait for (pure)."""
    n = version.k + version.m
    state = cluster_map.state_of
    holders: list[str] = []
    waiting: list[int] = []
    for index in range(n):
        found = version.found_at[index] if index < len(version.found_at) else ""
        expected = version.locations[index] if index < len(version.locations) else ""
        if found:
            holders.append(_serving_copy(index, found, version.copies, state))
        elif expected and expected not in version.answered and state(expected) not in GONE | {None}:
            holders.append(expected)  # unreachable for now, not out: keep its place, do nothing yet
            waiting.append(index)
        else:
            holders.append("")
    key = f"{version.bucket}/{version.key}"
    home = _planning_home(key, cluster_map, version.k, version.m)
    targets = plan_moves(holders, key, home, version.k, version.m)
    rebuild: dict[int, str] = {}
    drop: dict[int, str] = {}
    for index, (holder, target) in enumerate(zip(holders, targets, strict=True)):
        if index in waiting or not target or target == holder or state(target) != "alive":
            continue
        rebuild[index] = target
        if holder and state(holder) not in GONE | {None}:
            drop[index] = holder
    available = sum(1 for i, h in enumerate(holders) if h and i not in waiting)
    extra = tuple(
        (index, node)
        for index, node in version.copies
        if node != targets[index] and node != holders[index] and state(node) == "alive"
    )
    return ObjectPlan(rebuild=rebuild, drop=drop, extra=extra, waiting=tuple(waiting), available=available)


def _serving_copy(
    index: int, found: str, copies: tuple[tuple[int, str], ...], state: Callable[[str], str | None]
) -> str:
    """The holder of fragment ``index`` to plan with: ``found``, unless it is gone (out, decommissioned or
    unknown) and another copy of the fragment sits on a node that is not; the alive one first.

    A node removed by force may go on answering; a copy rebuilt elsewhere must then count as the
    fragment, or every scan would rebuild it again.
    """
    if state(found) not in GONE | {None}:
        return found
    others = [node for idx, node in copies if idx == index and state(node) not in GONE | {None}]
    others.sort(key=lambda node: state(node) != "alive")
    return others[0] if others else found


def checkers(placement: tuple[str, ...], cluster_map: ClusterMap, m: int) -> list[str]:
    """The nodes that look at an object in their scans: the first ``m+1`` serving nodes of its placement.

    As long as the object is recoverable, at least one of them still holds a fragment of it, so
    someone always looks, whichever fragments were lost.
    """
    state = cluster_map.state_of
    serving = [n for n in placement if n and state(n) == "alive"]
    serving += [n for n in placement if n and state(n) == "draining"]
    return list(dict.fromkeys(serving))[: m + 1]


def repairer(version: ObjectVersion, cluster_map: ClusterMap) -> str:
    """The one node that acts on an object: the first alive holder of a fragment in the key's ranking.

    It depends only on where fragments were found (not on any trailer, which repair may have made
    stale), so every checker computes the same answer from the same locate round.
    """
    holding = [cluster_map.node(node) for node in dict.fromkeys(version.found_at) if node and node in cluster_map]
    ranked = rank(f"{version.bucket}/{version.key}", holding)  # the holders in the key's ranking of every node
    for wanted in ("alive", "draining"):
        for node in ranked:
            if node.state == wanted:
                return node.id
    return ""


class _Report:
    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class ScanReport(_Report):
    """What one scan of an agent's objects found and did (sent to the controller with heartbeats).

    ``levels`` and ``level_bytes`` count objects and their bytes by protection level (see
    :mod:`hcstore.metrics.protection`); ``bytes_missing`` is the fragment bytes they lack for
    full protection, fragments on nodes that are down but not yet out included.
    """

    objects: int = 0
    protected: int = 0
    degraded: int = 0
    misplaced: int = 0
    unreadable: int = 0
    waiting: int = 0
    bytes_awaiting_repair: int = 0
    bytes_repaired: int = 0
    repaired: int = 0
    failed: int = 0
    started: float = 0.0
    finished: float = 0.0
    levels: dict[str, int] = field(default_factory=dict)
    level_bytes: dict[str, int] = field(default_factory=dict)
    bytes_missing: int = 0


@dataclass
class ScrubReport(_Report):
    """What one scrub pass over an agent's fragment files verified and found."""

    fragments: int = 0
    bytes: int = 0
    corrupt: int = 0
    started: float = 0.0
    finished: float = 0.0


PROTECTION_FIELDS = (
    "objects",
    "protected",
    "degraded",
    "misplaced",
    "unreadable",
    "bytes_awaiting_repair",
    "bytes_repaired",
    "repaired",
    "failed",
)


def protection_summary(stats: dict[str, dict[str, Any]]) -> dict[str, int]:
    """Add up the agents' latest scan reports (each object is counted by its one repairer)."""
    total = dict.fromkeys(PROTECTION_FIELDS, 0)
    for node_stats in stats.values():
        report = node_stats.get("repair") or {}
        for name in PROTECTION_FIELDS:
            total[name] += int(report.get(name, 0))
    total["scrub_corrupt"] = sum(
        int((s.get("repair") or {}).get("scrub", {}).get("corrupt", 0)) for s in stats.values()
    )
    return total
