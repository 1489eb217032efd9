"""An agent's Prometheus metrics, in a registry of its own.

What happens on the data path and in repair is counted as it happens (counters and
histograms, children made once so a request costs a few increments); what the agent *is* (its
mountpaths, fragments held, map epoch, I/O queue, background work) is read when Prometheus
scrapes, by :class:`_AgentCollector`, and costs the data path nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ec import available_codecs
from hcstore import __version__
from hcstore.config import AgentConfig
from hcstore.metrics.recorder import MAP_FORMS, READ, REBALANCE, REPAIR, SCRUB, AgentRecorder
from hcstore.metrics.requests import LATENCY_BUCKETS, OK, RequestMetrics, build_info, reply_metrics
from hcstore.node.io_pool import IoPool
from hcstore.node.store import LocalStore
from hcstore.wire.protocol import OPERATIONS, READ_PATHS
from hcstore.wire.server import Replies

UNTAGGED = "untagged"  # a read that named no path (an older client)
OTHER = "other"  # a read that named a path this agent does not know
MOUNTPATH_STATES = ("enabled", "full", "disabled")


class AgentView(Protocol):
    """What the metrics read of an agent when scraped (the agent satisfies it)."""

    config: AgentConfig
    store: LocalStore
    io: IoPool
    maintainer: Any  # a Maintainer, or None without a controller
    controller_epoch: int | None
    replies: Replies

    @property
    def epoch(self) -> int:
        """The epoch of the cluster map the agent serves by."""
        ...


class AgentMetrics(AgentRecorder):
    """Counts an agent's work in :attr:`registry`; reads the rest of its state at scrape time.

    Args:
        agent: the agent observed.
    """

    def __init__(self, agent: AgentView) -> None:
        self.registry = CollectorRegistry()
        registry = self.registry
        build_info(registry, "agent", __version__, agent.config.node_id)
        self.requests = TrafficMetrics(registry, OPERATIONS)
        self.corrupt = Counter(
            "hcstore_corrupt_chunks_total",
            "Corrupt chunks found, by what found them (read: a fragment this agent could not serve; scrub)",
            ["found_by"],
            registry=registry,
        )
        for found_by in (READ, SCRUB):
            self.corrupt.labels(found_by)
        self.encode_seconds = Histogram(
            "hcstore_ec_encode_duration_seconds",
            "Seconds to encode one stripe in repair, by codec",
            ["codec"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.decode_seconds = Histogram(
            "hcstore_ec_decode_duration_seconds",
            "Seconds to rebuild one stripe's data from parity in repair, by codec",
            ["codec"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.encoded_bytes = Counter(
            "hcstore_ec_encoded_bytes_total", "Data bytes encoded in repair, by codec", ["codec"], registry=registry
        )
        self.decoded_bytes = Counter(
            "hcstore_ec_decoded_bytes_total",
            "Data bytes rebuilt from parity in repair, by codec",
            ["codec"],
            registry=registry,
        )
        for codec in available_codecs():  # series from the start, so rates read 0 before the first repair
            self.encoded_bytes.labels(codec)
            self.decoded_bytes.labels(codec)
        self.repair_objects = Counter(
            "hcstore_repair_objects_total",
            "Objects whose fragments repair rebuilt (repair: lost ones; rebalance: moved ones)",
            ["kind"],
            registry=registry,
        )
        self.repair_bytes = Counter(
            "hcstore_repair_bytes_total", "Fragment bytes written by repair, by kind", ["kind"], registry=registry
        )
        for kind in (REPAIR, REBALANCE):
            self.repair_objects.labels(kind)
            self.repair_bytes.labels(kind)
        self.repair_failures = Counter(
            "hcstore_repair_failures_total", "Repairs that failed (tried again in the next scan)", registry=registry
        )
        self.maps_received = Counter(
            "hcstore_maps_received_total",
            "Newer cluster maps from the controller, by form (whole; delta: the changes since ours; "
            "delta_mismatch: changes that did not give the controller's map)",
            ["form"],
            registry=registry,
        )
        for form in MAP_FORMS:
            self.maps_received.labels(form)
        self.repair_last = Gauge(
            "hcstore_repair_last_activity_timestamp_seconds",
            "Unix time repair last wrote a fragment (0: never since the agent started)",
            registry=registry,
        )
        registry.register(_AgentCollector(agent))
        self.codec_observer = self

    # ------------------------------------------------------------------ the data path

    def request(self, op: str, outcome: str, seconds: float, received: int, sent: int, path: str | None) -> None:
        """Count one answered request (see :meth:`AgentRecorder.request`)."""
        self.requests.observe_traffic(op, outcome, seconds, received, sent, path)

    def corrupt_chunks(self, found_by: str, count: int) -> None:
        """Count corrupt chunks found by ``read`` or ``scrub``."""
        self.corrupt.labels(found_by).inc(count)

    # ------------------------------------------------------------------ repair

    def repaired(self, kind: str, objects: int, nbytes: int) -> None:
        """Count objects and bytes repair rebuilt (``repair``) or moved (``rebalance``)."""
        self.repair_objects.labels(kind).inc(objects)
        self.repair_bytes.labels(kind).inc(nbytes)
        if nbytes:
            self.repair_last.set_to_current_time()

    def repair_failed(self) -> None:
        """Count a failed repair."""
        self.repair_failures.inc()

    def map_received(self, form: str) -> None:
        """Count a newer map from the controller, by form."""
        self.maps_received.labels(form).inc()

    def encoded(self, codec: str, seconds: float, nbytes: int) -> None:
        """Count one stripe encoded by repair."""
        self.encode_seconds.labels(codec).observe(seconds)
        self.encoded_bytes.labels(codec).inc(nbytes)

    def decoded(self, codec: str, seconds: float, nbytes: int) -> None:
        """Count one stripe rebuilt from parity by repair."""
        self.decode_seconds.labels(codec).observe(seconds)
        self.decoded_bytes.labels(codec).inc(nbytes)


class TrafficMetrics(RequestMetrics):
    """Requests as :class:`RequestMetrics` counts them, with the payload bytes they carried and reads by path.

    ``hcstore_received_bytes_total{op}``, ``hcstore_sent_bytes_total{op}``, ``hcstore_reads_total{path}``
    and ``hcstore_read_bytes_total{path}``: counted under the same one lock per request.
    """

    PATHS = (*READ_PATHS, UNTAGGED, OTHER)

    def __init__(self, registry: CollectorRegistry, operations: Iterable[str]) -> None:
        super().__init__(registry, operations)
        self._reads = {path: [0, 0] for path in self.PATHS}  # path -> [reads, bytes]

    def observe_traffic(
        self, op: str, outcome: str, seconds: float, received: int, sent: int, path: str | None
    ) -> None:
        """Count one answered request, its payload bytes and, for a read, how it was read."""
        stats = self.stats(op)
        with self._lock:
            stats.count(outcome, seconds)
            stats.received += received
            stats.sent += sent
            if op == "read" and outcome == OK:
                read = self._reads.get(path or UNTAGGED) or self._reads[OTHER]  # labels stay few
                read[0] += 1
                read[1] += sent

    def _families(self) -> list[Metric]:
        received = CounterMetricFamily(
            "hcstore_received_bytes", "Payload bytes received in requests, by operation", labels=["op"]
        )
        sent = CounterMetricFamily("hcstore_sent_bytes", "Payload bytes sent in replies, by operation", labels=["op"])
        for op, stats in self._answered():
            received.add_metric([op], stats.received)
            sent.add_metric([op], stats.sent)
        reads = CounterMetricFamily(
            "hcstore_reads",
            "Read requests answered, by how the client read the fragment (local, remote, degraded, hedged)",
            labels=["path"],
        )
        read_bytes = CounterMetricFamily(
            "hcstore_read_bytes", "Chunk bytes sent for reads, by how the client read the fragment", labels=["path"]
        )
        for path, (count, nbytes) in self._reads.items():
            reads.add_metric([path], count)
            read_bytes.add_metric([path], nbytes)
        return [*super()._families(), received, sent, reads, read_bytes]


class _AgentCollector(Collector):
    """The agent's state, read when scraped: map epoch, fragments, I/O queue, mountpaths, background work."""

    def __init__(self, agent: AgentView) -> None:
        self.agent = agent

    def collect(self) -> list[Metric]:
        """The gauges and counters of the agent's current state."""
        agent = self.agent
        node = agent.config.node_id
        stats = agent.store.stats()
        load = agent.io.load()
        metrics: list[Metric] = [
            _gauge("hcstore_map_epoch", "Epoch of the cluster map the agent serves by", {"node": node}, agent.epoch),
            _gauge(
                "hcstore_controller_epoch_seen",
                "Epoch in the controller's last reply (-1: none yet)",
                {"node": node},
                -1 if agent.controller_epoch is None else agent.controller_epoch,
            ),
            _gauge("hcstore_fragments", "Fragments held, tombstones included", {"node": node}, stats["fragments"]),
            _gauge("hcstore_data_fragments", "Data fragments held", {"node": node}, stats["data_fragments"]),
            _gauge("hcstore_open_uploads", "Fragment uploads open now", {"node": node}, stats["uploads"]),
            _gauge("hcstore_io_queue_jobs", "Disk jobs admitted to the I/O pool and not finished", {}, load["jobs"]),
            _gauge("hcstore_io_queue_bytes", "Payload bytes held by those jobs", {}, load["bytes"]),
            *reply_metrics(agent.replies.waiting, agent.replies.dropped),
        ]
        metrics += _mountpath_metrics(node, stats["mountpaths"])
        if agent.maintainer is not None:
            metrics += _maintainer_metrics(agent.maintainer.status())
        return metrics


def _mountpath_metrics(node: str, mountpaths: list[dict[str, Any]]) -> list[Metric]:
    """Per mountpath: its state as 0/1 gauges, capacity, use, write limit, fragments, I/O errors."""
    labels = ["node", "mountpath", "mountpath_id"]
    state = GaugeMetricFamily(
        "hcstore_mountpath_state",
        "1 for the mountpath's state (enabled, full: at its high "
        "watermark, disabled: after an I/O error), 0 for the others",
        labels=[*labels, "state"],
    )
    figures = {
        "capacity": GaugeMetricFamily("hcstore_mountpath_capacity_bytes", "Capacity of the mountpath", labels=labels),
        "used": GaugeMetricFamily(
            "hcstore_mountpath_used_bytes",
            "Bytes the high watermark counts as used (open uploads' reservations included)",
            labels=labels,
        ),
        "limit": GaugeMetricFamily(
            "hcstore_mountpath_limit_bytes",
            "Bytes the mountpath may hold (capacity times the high watermark)",
            labels=labels,
        ),
        "stored": GaugeMetricFamily("hcstore_mountpath_fragment_bytes", "Bytes of fragment files", labels=labels),
        "fragments": GaugeMetricFamily("hcstore_mountpath_fragments", "Fragment files", labels=labels),
    }
    errors = CounterMetricFamily(
        "hcstore_mountpath_io_errors", "I/O errors on the mountpath since the agent started", labels=labels
    )
    for mp in mountpaths:
        values = [node, mp["path"], mp["id"]]
        for name in MOUNTPATH_STATES:
            state.add_metric([*values, name], float(mp.get("state") == name))
        for key, family in figures.items():
            family.add_metric(values, mp.get(key, 0))
        errors.add_metric(values, mp.get("io_errors", 0))
    return [state, *figures.values(), errors]


def _maintainer_metrics(status: dict[str, Any]) -> list[Metric]:
    """Scans and scrubs done, whether one runs now, and when the last scan finished."""
    return [
        _counter("hcstore_scans", "Repair scans finished since the agent started", status.get("scans", 0)),
        _counter("hcstore_scrubs", "Scrubs finished since the agent started", status.get("scrubs", 0)),
        _gauge("hcstore_scan_running", "1 while a repair scan or scrub runs", {}, float(bool(status.get("running")))),
        _gauge(
            "hcstore_scan_last_finished_timestamp_seconds",
            "Unix time the last repair scan finished (0: none yet)",
            {},
            status.get("finished", 0.0),
        ),
    ]


def _gauge(name: str, documentation: str, labels: dict[str, str], value: float) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, documentation, labels=list(labels))
    family.add_metric(list(labels.values()), value)
    return family


def _counter(name: str, documentation: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, documentation, value=value)
