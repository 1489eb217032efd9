"""The controller's Prometheus metrics, in a registry of its own.

Requests are counted as they are answered; everything else (nodes by state, heartbeat ages,
the cluster's protection by level, repair progress and its ETA) is read from one consistent
:class:`ControllerSnapshot` when Prometheus scrapes.
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from hcstore import __version__
from hcstore.metrics.protection import ProtectionSummary
from hcstore.metrics.requests import RequestMetrics, build_info, reply_metrics
from hcstore.wire.protocol import CONTROLLER_OPERATIONS
from placement import NODE_STATES, ClusterMap


@dataclass(frozen=True)
class ControllerSnapshot:
    """The controller's view at one instant.

    Attributes:
        cluster_map: the current map.
        ages: seconds since each node's last heartbeat, by node id.
        protection: the cluster's protection summary, with the repair rate and ETA.
        out_after: seconds without a heartbeat after which a node is *out* and its fragments rebuilt.
        replies_waiting: replies kept for peers slow to read them.
        replies_dropped: replies dropped since the controller started (peer gone, or too many unread).
    """

    cluster_map: ClusterMap
    ages: dict[str, float]
    protection: ProtectionSummary
    out_after: float
    replies_waiting: int = 0
    replies_dropped: int = 0


class ControllerMetrics:
    """Counts the controller's requests in :attr:`registry`; reads the rest from ``snapshot`` when scraped.

    Args:
        snapshot: returns the controller's current :class:`ControllerSnapshot` (thread-safe).
    """

    def __init__(self, snapshot: Callable[[], ControllerSnapshot]) -> None:
        self.registry = CollectorRegistry()
        build_info(self.registry, "controller", __version__)
        self.requests = RequestMetrics(self.registry, CONTROLLER_OPERATIONS)
        self.registry.register(_ControllerCollector(snapshot))


class _ControllerCollector(Collector):
    def __init__(self, snapshot: Callable[[], ControllerSnapshot]) -> None:
        self.snapshot = snapshot

    def collect(self) -> list[Metric]:
        """Nodes, protection and repair progress, from one snapshot."""
        view = self.snapshot()
        return [
            *_node_metrics(view),
            *_protection_metrics(view.protection),
            _gauge(
                "hcstore_out_after_seconds",
                "Seconds without a heartbeat after which a node is out and repair rebuilds its fragments",
                view.out_after,
            ),
            *reply_metrics(view.replies_waiting, view.replies_dropped),
        ]


def _node_metrics(view: ControllerSnapshot) -> list[Metric]:
    """The map's epoch, nodes by state, each node's state and heartbeat age."""
    by_state = GaugeMetricFamily("hcstore_nodes", "Nodes in the cluster map, by state", labels=["state"])
    counts = Tally(node.state for node in view.cluster_map.nodes)
    for name in sorted({*NODE_STATES, *counts}):
        by_state.add_metric([name], counts.get(name, 0))
    state = GaugeMetricFamily(
        "hcstore_node_state", "1 for each node's state in the cluster map", labels=["node", "state"]
    )
    age = GaugeMetricFamily(
        "hcstore_node_heartbeat_age_seconds", "Seconds since each node's last heartbeat", labels=["node"]
    )
    for node in view.cluster_map.nodes:
        state.add_metric([node.id, node.state], 1)
        if node.id in view.ages:
            age.add_metric([node.id], view.ages[node.id])
    epoch = _gauge("hcstore_controller_map_epoch", "Epoch of the controller's cluster map", view.cluster_map.epoch)
    return [epoch, by_state, state, age]


def _protection_metrics(summary: ProtectionSummary) -> list[Metric]:
    """Objects and bytes by protection level, and repair's backlog, rate and ETA."""
    objects = GaugeMetricFamily(
        "hcstore_objects",
        "Objects by protection level (full; j: k+j fragments readable, "
        "j more losses survived; unreadable), from the agents' latest scans",
        labels=["level"],
    )
    nbytes = GaugeMetricFamily("hcstore_object_bytes", "Bytes of objects by protection level", labels=["level"])
    for level in summary.levels():
        objects.add_metric([level], summary.objects.get(level, 0))
        nbytes.add_metric([level], summary.bytes.get(level, 0))
    return [
        objects,
        nbytes,
        _gauge(
            "hcstore_repair_awaiting_bytes",
            "Fragment bytes repair planned to rebuild and has not yet",
            summary.bytes_awaiting_repair,
        ),
        _gauge(
            "hcstore_repair_missing_bytes",
            "Fragment bytes missing from full protection (those on nodes down but not yet out included)",
            summary.bytes_missing,
        ),
        _gauge(
            "hcstore_repair_rate_bytes_per_second",
            "Bytes per second repair wrote over the last minutes",
            summary.repair_rate,
        ),
        _gauge(
            "hcstore_repair_eta_seconds",
            "Seconds until full protection at the current repair rate (+Inf: "
            "nothing is being repaired while bytes are missing)",
            summary.eta_seconds,
        ),
        _gauge("hcstore_repair_failed_objects", "Repairs that failed in the agents' latest scans", summary.failed),
        _gauge(
            "hcstore_scrub_corrupt_fragments",
            "Corrupt fragments found by the agents' latest scrubs",
            summary.scrub_corrupt,
        ),
        _gauge(
            "hcstore_protection_reports", "Agents whose scan reports the protection figures add up", summary.reports
        ),
    ]


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)
