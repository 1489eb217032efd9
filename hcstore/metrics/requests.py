"""The metrics both daemons have: requests by operation and outcome, their durations, and build info.

Requests are counted on the data path, so :class:`RequestMetrics` keeps plain numbers under one
lock taken once per request (a ``prometheus_client`` counter or histogram takes a lock per
value) and turns them into metric families only when scraped.
"""

from __future__ import annotations

import platform
import threading
from bisect import bisect_left
from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Gauge, disable_created_metrics
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

# No `*_created` series: they double what a scrape carries and Prometheus's rate() does not need them.
disable_created_metrics()

LATENCY_BUCKETS = (0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)
"""Seconds: from 250 µs (a ping, a read from the page cache) to 10 s (a large fsync under load)."""
INVALID = "invalid"
"""The operation label of a request that could not be decoded (its operation is unknown)."""
OK = "ok"


class OperationStats:
    """One operation's requests: answered ok, failed by error code, durations in buckets, payload bytes.

    ``buckets[i]`` counts the durations in bucket ``i`` alone (the last one: above every bound), not
    cumulatively; :meth:`cumulative` gives Prometheus's form.
    """

    __slots__ = ("ok", "errors", "buckets", "seconds", "received", "sent")

    def __init__(self) -> None:
        self.ok = 0
        self.errors: dict[str, int] = {}
        self.buckets = [0] * (len(LATENCY_BUCKETS) + 1)
        self.seconds = 0.0
        self.received = 0
        self.sent = 0

    def count(self, outcome: str, seconds: float) -> None:
        """One request answered with ``outcome`` after ``seconds``."""
        if outcome == OK:
            self.ok += 1
        else:
            self.errors[outcome] = self.errors.get(outcome, 0) + 1
        self.buckets[bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.seconds += seconds

    @property
    def answered(self) -> int:
        """Requests answered, whatever the outcome."""
        return self.ok + sum(self.errors.values())

    def cumulative(self) -> list[tuple[str, float]]:
        """Prometheus buckets: ``(le, durations <= le)``, ``+Inf`` last."""
        running, buckets = 0, list[tuple[str, float]]()
        for bound, count in zip((*(repr(b) for b in LATENCY_BUCKETS), "+Inf"), self.buckets, strict=True):
            running += count
            buckets.append((bound, running))
        return buckets


class RequestMetrics(Collector):
    """``hcstore_requests_total{op,outcome}`` and ``hcstore_request_duration_seconds{op}``.

    The outcome is ``ok`` or the error's stable wire code (``E_NOT_FOUND``, ``E_BUSY``, ...), a
    bounded set; an operation outside ``operations`` is counted as ``invalid``. An operation's
    series appear with its first request.

    Args:
        registry: the daemon's registry (this collector registers itself there).
        operations: the operations the daemon serves.
    """

    def __init__(self, registry: CollectorRegistry, operations: Iterable[str]) -> None:
        self._lock = threading.Lock()
        self._ops = {op: OperationStats() for op in (*operations, INVALID)}
        registry.register(self)

    def stats(self, op: str) -> OperationStats:
        """The figures of ``op`` (of ``invalid`` for an operation this daemon does not serve)."""
        return self._ops.get(op) or self._ops[INVALID]

    def observe(self, op: str, outcome: str, seconds: float) -> None:
        """Count one answered request and its duration."""
        stats = self.stats(op)
        with self._lock:
            stats.count(outcome, seconds)

    def collect(self) -> list[Metric]:
        """The families, from one consistent moment."""
        with self._lock:
            return self._families()

    def _answered(self) -> list[tuple[str, OperationStats]]:
        """The operations that have answered requests, by name (the caller holds the lock)."""
        return [(op, stats) for op, stats in sorted(self._ops.items()) if stats.answered]

    def _families(self) -> list[Metric]:
        """The families (the caller holds the lock)."""
        total = CounterMetricFamily(
            "hcstore_requests",
            "Requests answered, by operation and outcome (ok or the error code)",
            labels=["op", "outcome"],
        )
        durations = HistogramMetricFamily(
            "hcstore_request_duration_seconds",
            "Seconds from a request's arrival to its reply, queueing for the I/O pool included",
            labels=["op"],
        )
        for op, stats in self._answered():
            total.add_metric([op, OK], stats.ok)
            for outcome, count in sorted(stats.errors.items()):
                total.add_metric([op, outcome], count)
            durations.add_metric([op], stats.cumulative(), stats.seconds)
        return [total, durations]


def build_info(registry: CollectorRegistry, role: str, version: str, node: str = "") -> None:
    """``hcstore_build_info{role,version,python,node} 1``: which build runs where."""
    gauge = Gauge(
        "hcstore_build_info",
        "Always 1: the daemon's role, hcstore and Python versions, and node id",
        ["role", "version", "python", "node"],
        registry=registry,
    )
    gauge.labels(role, version, platform.python_version(), node).set(1)


def reply_metrics(waiting: int, dropped: int) -> list[Metric]:
    """Replies a serving socket keeps for slow peers, and those it dropped (:class:`hcstore.wire.server.Replies`)."""
    return [
        GaugeMetricFamily(
            "hcstore_replies_waiting",
            "Replies kept for clients slow to read them (their connection's queue is full)",
            value=waiting,
        ),
        CounterMetricFamily(
            "hcstore_replies_dropped",
            "Replies dropped: their client had disconnected, or kept too many unread",
            value=dropped,
        ),
    ]
