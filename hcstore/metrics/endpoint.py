"""A daemon's HTTP endpoint: ``/metrics`` (Prometheus), ``/healthz`` and ``/readyz``.

One small threaded HTTP server per daemon, on the daemon's ``metrics_host``/``metrics_port``,
serving the daemon's own :class:`~prometheus_client.CollectorRegistry`. It runs on threads of
its own, so a scrape never waits for the daemon's serving loop, and the loop never waits for a
scrape. ``/healthz`` and ``/readyz`` answer 200 when their check passes and 503 when it does
not, with a JSON body that says why (see :mod:`hcstore.metrics.health`).
"""

from __future__ import annotations

import json
import logging
import socket
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from hcstore.metrics.health import Health

_SHUTDOWN_POLL_S = 0.1  # how often the serving thread looks for close(), which waits for it (the default is 0.5 s)

log = logging.getLogger(__name__)
Check = Callable[[], Health]


class _Server(ThreadingHTTPServer):
    daemon_threads = True


class _Server6(_Server):
    address_family = socket.AF_INET6


class MetricsEndpoint:
    """Serves ``registry`` and two health checks over HTTP until :meth:`close`.

    Args:
        registry: the daemon's metrics.
        host: address to bind.
        port: port to bind (0: any free port).
        alive: the ``/healthz`` check.
        ready: the ``/readyz`` check.

    Raises:
        OSError: the address cannot be bound (e.g. the port is taken).
    """

    def __init__(self, registry: CollectorRegistry, host: str, port: int, *, alive: Check, ready: Check) -> None:
        handler = _handler(registry, {"/healthz": alive, "/readyz": ready})
        server_class = _Server6 if ":" in host else _Server
        try:
            self._server = server_class((host.strip("[]"), port), handler)
        except OSError as exc:
            raise OSError(exc.errno, f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}") from None
        bound = self._server.server_address[1]
        self.base_url = f"http://{f'[{host}]' if ':' in host else host}:{bound}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(_SHUTDOWN_POLL_S,), name="metrics-http", daemon=True
        )
        self._thread.start()

    @property
    def url(self) -> str:
        """The ``/metrics`` URL."""
        return f"{self.base_url}/metrics"

    def close(self) -> None:
        """Stop serving and release the port."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def _handler(registry: CollectorRegistry, checks: dict[str, Check]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            try:
                if path == "/metrics":
                    encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
                    self._send(200, content_type, encoder(registry))
                elif path in checks:
                    health = checks[path]()
                    body = json.dumps(health.to_dict()).encode() + b"\n"
                    self._send(200 if health.ok else 503, "application/json", body)
                else:
                    self._send(404, "text/plain", b"not found: try /metrics, /healthz or /readyz\n")
            except Exception as exc:  # a failed collection is a 500, never a dead endpoint
                log.exception("metrics endpoint: %s failed", path)
                self._send(500, "text/plain", f"{path} failed: {type(exc).__name__}: {exc}\n".encode())

        def _send(self, status: int, content_type: str, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            log.debug("metrics endpoint: " + format, *args)

    return Handler
