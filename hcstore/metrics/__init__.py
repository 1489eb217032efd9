"""Observability of hcstore daemons: Prometheus metrics, health checks, protection math and log format.

- :mod:`hcstore.metrics.protection` -- protection levels, the cluster's protection summary and the
  repair ETA (pure);
- :mod:`hcstore.metrics.health` -- what makes a daemon alive and ready (pure);
- :mod:`hcstore.metrics.requests` -- the request counters and histograms both daemons share;
- :mod:`hcstore.metrics.agent` and :mod:`hcstore.metrics.controller` -- each daemon's metrics, in a
  registry of its own;
- :mod:`hcstore.metrics.http` -- the HTTP endpoint: ``/metrics``, ``/healthz``, ``/readyz``;
- :mod:`hcstore.metrics.logs` -- text or JSON log lines.

Metric names, labels and alerts are documented in ``docs/observability.md``.
"""
