"""Protection levels, the cluster's protection summary and the repair ETA (pure: no I/O).

An object coded ``k+m`` stays readable while ``k`` of its fragments are. Its *protection level*
says how many more fragment losses it survives:

* ``"full"``: all ``k+m`` fragments are readable (``m`` more losses survived);
* ``"j"`` for ``0 <= j < m``: ``k+j`` fragments are readable, ``j = available - k``: the object is
  ``j`` failures from loss in the sense that it survives ``j`` more and the next one after
  them loses it (``"0"``: one more loss and it is unreadable);
* ``"unreadable"``: fewer than ``k`` fragments are readable.

Each agent counts the objects it is the repairer of in every scan (see
:mod:`hcstore.node.maintenance`); :func:`summarize` adds up the reports of the serving nodes,
and :class:`RepairRate` with :func:`repair_eta` turns the bytes repair wrote recently into the
time repair needs to bring everything back to full protection.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Collection, Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from itertools import pairwise
from typing import Any

FULL = "full"
UNREADABLE = "unreadable"
RATE_WINDOW = 300.0
"""Seconds of repair progress the repair rate is measured over."""


def protection_level(available: int, k: int, m: int) -> str:
    """The protection level of an object coded ``k+m`` with ``available`` readable fragments.

    Args:
        available: fragments readable now.
        k: data fragments (the fewest an object is read from).
        m: parity fragments.

    Returns:
        ``"full"``, ``"unreadable"``, or ``str(available - k)`` in between.
    """
    if available < k:
        return UNREADABLE
    if available >= k + m:
        return FULL
    return str(available - k)


def missing_fragments(available: int, k: int, m: int) -> int:
    """How many fragments an object lacks for full protection (0 when it has them all)."""
    return max(0, k + m - available)


def level_order(level: str) -> tuple[int, int]:
    """A sort key: ``full`` first, then from the most failures survived to the fewest, ``unreadable`` last."""
    if level == FULL:
        return (0, 0)
    if level == UNREADABLE:
        return (2, 0)
    return (1, -int(level)) if level.isdigit() else (1, 1)


def repair_eta(missing_bytes: int, rate: float) -> float:
    """Seconds until repair restores full protection at ``rate`` bytes per second.

    Args:
        missing_bytes: fragment bytes missing from full protection.
        rate: bytes per second repair wrote recently.

    Returns:
        0 when nothing is missing, ``math.inf`` when something is and repair writes nothing.
    """
    if missing_bytes <= 0:
        return 0.0
    if rate <= 0:
        return math.inf
    return missing_bytes / rate


@dataclass
class ProtectionSummary:
    """The cluster's protection, added up from the serving agents' latest scan reports.

    Attributes:
        objects: objects by protection level.
        bytes: their bytes (object sizes) by protection level.
        bytes_awaiting_repair: fragment bytes repair planned to rebuild and has not (yet).
        bytes_missing: fragment bytes missing from full protection, those on nodes that are
            down but not yet out included (repair waits for them).
        bytes_repaired: fragment bytes repair and rebalance wrote since each agent started.
        repaired: objects repaired since each agent started.
        failed: repairs that failed in the latest scans (tried again in the next).
        scrub_corrupt: corrupt fragments the latest scrubs found.
        reports: how many agents' reports were counted.
        repair_rate: bytes per second repair wrote recently (see :class:`RepairRate`; 0 until measured).
        eta_seconds: seconds until full protection at that rate (:func:`repair_eta`; ``inf``: not in sight).
    """

    objects: dict[str, int] = field(default_factory=dict)
    bytes: dict[str, int] = field(default_factory=dict)
    bytes_awaiting_repair: int = 0
    bytes_missing: int = 0
    bytes_repaired: int = 0
    repaired: int = 0
    failed: int = 0
    scrub_corrupt: int = 0
    reports: int = 0
    repair_rate: float = 0.0
    eta_seconds: float = 0.0

    @property
    def below_full(self) -> int:
        """Objects not fully protected (unreadable ones included)."""
        return sum(count for level, count in self.objects.items() if level != FULL)

    def levels(self) -> list[str]:
        """The levels seen, ``full`` and ``unreadable`` always, in :func:`level_order`."""
        return sorted({FULL, UNREADABLE, *self.objects, *self.bytes}, key=level_order)

    def at_rate(self, rate: float) -> ProtectionSummary:
        """This summary with the repair rate, and the ETA it gives for the missing bytes."""
        return replace(self, repair_rate=rate, eta_seconds=repair_eta(self.bytes_missing, rate))

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values: every level of :meth:`levels` in ``objects`` and ``bytes``; no ETA in sight is None."""
        data = asdict(self)
        data["objects"] = {level: self.objects.get(level, 0) for level in self.levels()}
        data["bytes"] = {level: self.bytes.get(level, 0) for level in self.levels()}
        data["below_full"] = self.below_full
        data["eta_seconds"] = None if math.isinf(self.eta_seconds) else self.eta_seconds
        return data


def summarize(stats: Mapping[str, Mapping[str, Any]], nodes: Collection[str] | None = None) -> ProtectionSummary:
    """Add up the latest scan reports in the agents' heartbeat ``stats`` (each object counted by its repairer).

    Args:
        stats: each node's last heartbeat report, by node id (its ``repair`` entry is the scan report).
        nodes: the nodes whose reports count (None: all). The report of a node that is down is
            stale: another node counts its objects now.
    """
    summary = ProtectionSummary()
    for node, node_stats in stats.items():
        if nodes is not None and node not in nodes:
            continue
        report = node_stats.get("repair") or {}
        summary.reports += 1
        _add(summary.objects, report.get("levels") or {})
        _add(summary.bytes, report.get("level_bytes") or {})
        summary.bytes_awaiting_repair += int(report.get("bytes_awaiting_repair", 0))
        summary.bytes_missing += int(report.get("bytes_missing", 0))
        summary.bytes_repaired += int(report.get("bytes_repaired", 0))
        summary.repaired += int(report.get("repaired", 0))
        summary.failed += int(report.get("failed", 0))
        summary.scrub_corrupt += int((report.get("scrub") or {}).get("corrupt", 0))
    return summary


def _add(total: dict[str, int], counts: Mapping[str, Any]) -> None:
    for level, count in counts.items():
        total[str(level)] = total.get(str(level), 0) + int(count)


class RepairRate:
    """Bytes per second repair wrote over the last ``window`` seconds, from each node's running total.

    A node's total only grows while its agent runs; a smaller total means the agent restarted
    and counts from zero again (as Prometheus's ``rate`` treats a counter reset).

    Args:
        window: seconds the rate is measured over.
    """

    def __init__(self, window: float = RATE_WINDOW) -> None:
        if window <= 0:
            raise ValueError(f"a rate window must be > 0 seconds, got {window}")
        self.window = window
        self._samples: dict[str, deque[tuple[float, int]]] = {}

    def observe(self, node: str, now: float, total: int) -> None:
        """Record ``node``'s running total of repaired bytes at time ``now``."""
        samples = self._samples.setdefault(node, deque())
        samples.append((now, total))
        while len(samples) > 2 and samples[1][0] <= now - self.window:
            samples.popleft()  # keep one sample at or before the window's start, as the baseline

    def forget(self, node: str) -> None:
        """Stop counting ``node`` (it left the cluster)."""
        self._samples.pop(node, None)

    def rate(self, now: float) -> float:
        """Bytes per second over the window, summed over nodes; nodes silent for a whole window count 0."""
        total = 0.0
        for samples in self._samples.values():
            if len(samples) < 2 or now - samples[-1][0] > self.window:
                continue
            span = samples[-1][0] - samples[0][0]
            if span > 0:
                total += _increase(value for _, value in samples) / span
        return total


def _increase(values: Iterable[int]) -> int:
    """How much a running total grew over ``values``, a drop counting as a restart from zero."""
    return sum(after - before if after >= before else after for before, after in pairwise(values))
