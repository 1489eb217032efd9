"""The hcstore agent: one per node, serving its local store over ZeroMQ.

One ROUTER socket, owned by one serving thread that only decodes, dispatches
and replies, so it never stalls behind a disk. Requests are decoded and
validated (:func:`hcstore.wire.protocol.decode_request`); those that touch no
file data (:data:`hcstore.node.routes.INLINE`: ping, stats, locate, list) are
answered at once; reads of fragments go to a read pool of their own (reads for
other agents' repairs to a second one, whose threads run at background priority:
:mod:`hcstore.node.priority`), and the rest
(hashing, writing, fsync, rename, delete) to a bounded
:class:`~hcstore.node.io_pool.IoPool` in the lane :mod:`hcstore.node.routes`
names; their replies come back through an :class:`~hcstore.wire.server.Outbox`
that the serving thread drains. A full pool answers
:class:`~hcstore.errors.AgentBusy` (retryable) at once. Payloads arrive as
zero-copy frames. Any failure while handling a request, bad
input included, becomes an error reply with a stable code; nothing a client
sends can stop the loop. ``SIGTERM``/``SIGINT`` stop it cleanly: requests not
started are refused as unavailable, running ones finish and are answered.

Run it as ``python -m hcstore.node.agent --config agent.toml`` (or ``hcstore agent --config
agent.toml``); the file's settings are :class:`hcstore.config.AgentConfig`'s. When it is
ready it writes ``{"endpoint", "pid", "node_id", "metrics"}`` to the config's ``ready_file``;
``metrics`` is the URL of its Prometheus endpoint (see :mod:`hcstore.metrics`), which also
answers ``/healthz`` and ``/readyz``.
"""

from __future__ import annotations

import json
import logging
import os
import resource
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import zmq

from hcstore import daemon
from hcstore.config import AgentConfig, BadSetting
from hcstore.errors import (
    AgentBusy,
    AgentUnavailable,
    CorruptFragment,
    DiskError,
    HCStoreError,
    InvalidRequest,
    ProtocolError,
)
from hcstore.files import write_json_atomic
from hcstore.metrics import health
from hcstore.metrics.agent import AgentMetrics
from hcstore.metrics.endpoint import MetricsEndpoint
from hcstore.metrics.recorder import READ, AgentRecorder
from hcstore.metrics.requests import INVALID, OK
from hcstore.node import routes
from hcstore.node.io_pool import IoPool, Job
from hcstore.node.maintenance import Maintainer
from hcstore.node.store import FragmentFileDamaged, LocalStore
from hcstore.security import roles
from hcstore.security.curve import Gate, secure_client
from hcstore.security.identity import INSECURE_WARNING, daemon_credentials
from hcstore.security.keys import public_key
from hcstore.wire import bulk, protocol
from hcstore.wire.protocol import Request
from hcstore.wire.server import IDLE_POLL_MS, RETRY_MS, Outbox, Replies, answer_pending, peer_of
from placement import ClusterMap, MapDelta

log = logging.getLogger(__name__)
_HOUSEKEEPING_INTERVAL = 5.0
_BATCH = 256  # requests taken per turn before queued replies are sent
_CLOSE_LINGER_MS = 1000  # how long final replies may take to leave at shutdown
_PEER_HWM = 64  # messages queued per peer and direction on the agent's socket (see __init__)
_CONTROLLER_SILENCE = 5  # heartbeats unanswered after which the socket to the controller is made again
_CONTROLLER_HWM = 16  # heartbeats and their replies queued on the socket to the controller
_LOGGED = frozenset({HCStoreError.code, DiskError.code, CorruptFragment.code})  # error replies worth a log line
Reply = tuple[dict[str, Any], list[Any]]


class Agent:
    """Serves one node's :class:`LocalStore` on a ZeroMQ ROUTER socket."""

    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        self.credentials = daemon_credentials(config, f"agent {config.node_id}")
        self.controller_key = ""
        if self.credentials.secure and config.controller:
            if not config.controller_key:
                raise BadSetting(
                    ("controller_key",),
                    f"agent {config.node_id}: setting controller_key is empty: name the controller's public key "
                    "(Z85 text or its .key file), so the agent knows it reports to the real controller",
                )
            self.controller_key = public_key(config.controller_key)
        _raise_open_file_limit()
        self.store = LocalStore(config)
        self.io = IoPool(config.io_workers, config.io_queue, config.io_queue_bytes, name=f"io-{config.node_id}")
        self.reads = IoPool(config.read_workers, config.io_queue, config.io_queue_bytes, name=f"read-{config.node_id}")
        self.repair_reads = IoPool(
            config.read_workers,
            config.io_queue,
            config.io_queue_bytes,
            name=f"repair-read-{config.node_id}",
            nice=config.background_nice,
        )
        self.outbox = Outbox()
        self.map_file = Path(config.state_dir or config.mountpaths[0]) / "cluster-map.json"
        self.cluster_map = _load_map(self.map_file)
        self._controller: zmq.Socket | None = None
        self._controller_heard = 0.0  # when the controller last answered (or the socket to it was made)
        self._heartbeat_due = 0.0
        self._send_map = True  # tell a (possibly restarted) controller what we know
        self._whole_map_due = False  # a delta did not give the controller's map: ask for the whole map once
        self.maintainer: Maintainer | None = None
        # A context of its own: ZeroMQ authenticates the connections of a context with one handler. Its I/O
        # threads encrypt and decrypt (CurveZMQ), each connection on one of them: several spread the cost.
        self.context: zmq.Context[zmq.Socket[bytes]] = zmq.Context(io_threads=min(4, os.cpu_count() or 1))
        self.socket = self.context.socket(zmq.ROUTER)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.setsockopt(zmq.MAXMSGSIZE, protocol.MAX_MESSAGE_BYTES)  # per frame; decoding checks the whole
        # Queues per connected peer, in messages. Inbound: a client keeps about `window` (8) chunk writes and a
        # few reads in flight per agent, and the loop drains the queue at once; 64 is 8 times that, and a peer
        # that fills it is only slowed (ZeroMQ stops reading its connection), so memory stays bounded with
        # no loss. Outbound: replies wait here only for a peer that does not read them (a client's own
        # queue takes them otherwise); past 64 they wait in `replies` (bounded) until the peer reads.
        self.socket.setsockopt(zmq.RCVHWM, _PEER_HWM)
        self.socket.setsockopt(zmq.SNDHWM, _PEER_HWM)
        self.replies = Replies(self.socket)
        self.gate = Gate(self.context, self.socket, self.credentials, self._role_of)
        self.endpoint = self._bind()
        self.requests = 0
        self.errors = 0
        self.busy = 0  # requests refused because the I/O pool was full
        self._errors_lock = threading.Lock()
        self._stopping = False
        self._handlers: dict[str, Callable[[Request], tuple[dict[str, Any], list[Any]]]] = {
            "ping": self._ping,
            "node_stats": self._node_stats,
            "open": self._open,
            "write": self._write,
            "store": self._store,
            "prepare": self._prepare,
            "commit": self._commit,
            "abort": self._abort,
            "retire": self._retire,
            "drop": self._drop,
            "quarantine": self._quarantine,
            "maintain": self._maintain,
            "tombstone": self._tombstone,
            "read": self._read,
            "locate": self._locate,
            "locate_many": self._locate_many,
            "list": self._list,
            "buckets": self._buckets,
        }
        missing = set(protocol.OPERATIONS) - set(self._handlers)
        if missing:
            raise RuntimeError(f"operations without a handler: {missing}")
        self._persisted_epoch = self.epoch
        self.controller_epoch: int | None = None  # the epoch in the controller's last reply
        self._serving = False
        self.metrics: AgentRecorder = AgentRecorder()  # records nothing when the endpoint is off
        self.metrics_endpoint: MetricsEndpoint | None = None
        if config.metrics_port >= 0:
            self.metrics = metrics = AgentMetrics(self)
            self.metrics_endpoint = MetricsEndpoint(
                metrics.registry,
                config.metrics_host or config.host,
                config.metrics_port,
                alive=self.liveness,
                ready=self.readiness,
            )
        self.metrics_url = self.metrics_endpoint.url if self.metrics_endpoint else ""

    @property
    def epoch(self) -> int:
        """The epoch of the agent's cluster map (0 before it has one)."""
        return self.cluster_map.epoch if self.cluster_map is not None else 0

    def _bind(self) -> str:
        host = self.config.host
        if self.config.port:
            try:
                self.socket.bind(f"tcp://{host}:{self.config.port}")
                return f"tcp://{host}:{self.config.port}"
            except zmq.ZMQError as exc:
                log.warning("port %d busy (%s); binding a free port instead", self.config.port, exc)
        port = self.socket.bind_to_random_port(f"tcp://{host}")
        return f"tcp://{host}:{port}"

    # ------------------------------------------------------------------ loop

    def serve(self, *, ready_file: str | None = None) -> None:
        """Serve until :meth:`stop` (or SIGTERM/SIGINT when run as a process)."""
        if ready_file:
            write_json_atomic(
                Path(ready_file),
                {
                    "endpoint": self.endpoint,
                    "pid": os.getpid(),
                    "node_id": self.config.node_id,
                    "metrics": self.metrics_url,
                },
            )
        log.info("agent %s serving on %s (metrics: %s)", self.config.node_id, self.endpoint, self.metrics_url or "off")
        if not self.credentials.secure:
            log.warning("agent %s runs %s", self.config.node_id, INSECURE_WARNING)
        self._serving = True
        poller = zmq.Poller()
        poller.register(self.socket, zmq.POLLIN)
        poller.register(self.outbox.fileno(), zmq.POLLIN)
        if self.config.controller:
            self._connect_controller(poller)
            self.maintainer = Maintainer(self)
            self.maintainer.start()
        next_housekeeping = time.monotonic() + _HOUSEKEEPING_INTERVAL
        while not self._stopping:
            for source, _ in poller.poll(RETRY_MS if self.replies.waiting else IDLE_POLL_MS):
                if source == self.outbox.fileno():
                    self.outbox.flush(self.replies)
                elif source is self.socket:
                    answer_pending(self.replies, self.handle, limit=_BATCH)
                else:
                    self._receive_from_controller()
            self.replies.retry()
            if self._controller is not None and time.monotonic() >= self._heartbeat_due:
                if time.monotonic() - self._controller_heard > _CONTROLLER_SILENCE * self.config.heartbeat:
                    self._connect_controller(poller)  # ZeroMQ gives up on a connection whose handshake was refused
                self._send_heartbeat()
            if time.monotonic() >= next_housekeeping:
                self.io.submit(None, Job(self.store.expire_uploads))  # a full pool: try again next time
                if self.epoch > self._persisted_epoch:
                    self.io.submit(("cluster map",), Job(self._persist_map))
                next_housekeeping = time.monotonic() + _HOUSEKEEPING_INTERVAL
        self.close()

    # ------------------------------------------------------------------ membership

    def _connect_controller(self, poller: zmq.Poller) -> None:
        """A (new) socket to the controller, polled by ``poller``.

        It is made again when the controller has not answered for a while: ZeroMQ stops reconnecting
        after the controller refuses this agent's key (not yet allowed, or revoked and allowed again).
        """
        if self._controller is not None:
            poller.unregister(self._controller)
            self._controller.close(linger=0)
        self._controller_heard = time.monotonic()
        sock = self.context.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.IMMEDIATE, 1)
        sock.setsockopt(zmq.RECONNECT_IVL_MAX, 1000)
        secure_client(sock, self.credentials, self.controller_key)
        # One heartbeat a second and its reply: a few queued are plenty; a heartbeat that finds the queue
        # full is skipped (the next one says the same). Replies are a header, and a map as a bulk frame.
        sock.setsockopt(zmq.SNDHWM, _CONTROLLER_HWM)
        sock.setsockopt(zmq.RCVHWM, _CONTROLLER_HWM)
        sock.setsockopt(zmq.MAXMSGSIZE, max(protocol.MAX_HEADER_BYTES, bulk.MAX_BULK_FRAME_BYTES))  # per frame
        sock.connect(self.config.controller)
        self._controller = sock
        poller.register(sock, zmq.POLLIN)

    def _send_heartbeat(self) -> None:
        """Report to the controller; the first report (and one after a controller restart) carries our map."""
        assert self._controller is not None
        self._heartbeat_due = time.monotonic() + self.config.heartbeat
        fields: dict[str, Any] = {
            "node": self.config.node_id,
            "endpoint": self.endpoint,
            "labels": dict(self.config.labels),
            "weight": self.config.weight,
            "stats": self.report(),
            "framed": True,  # a map in a bulk frame; a controller from before them ignores the field
        }
        large = False
        if self._send_map and self.cluster_map is not None:
            fields["map"], large = protocol.encode_map(self.cluster_map.to_dict())
        if not self._whole_map_due and self.cluster_map is not None:
            fields["deltas"] = True  # a controller from before deltas ignores the field and sends whole maps
        fields, payloads = protocol.with_bulk(fields, framed=large)  # a map a header holds: any controller takes it
        try:
            self._controller.send_multipart(
                protocol.request_frames("heartbeat", 0, self.epoch, fields, payloads), flags=zmq.NOBLOCK
            )
        except zmq.Again:
            pass  # controller unreachable: keep serving on the map we have

    def _receive_from_controller(self) -> None:
        assert self._controller is not None
        while True:
            try:
                frames = self._controller.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                reply = protocol.decode_reply(frames)
                epoch = reply.header.get("epoch", 0)
                if type(epoch) is not int or not 0 <= epoch <= protocol.MAX_EPOCH:
                    raise ProtocolError(f"reply epoch {epoch!r:.40} is not an integer in [0, {protocol.MAX_EPOCH}]")
                newer = self._newer_map(reply.header) if reply.ok else None
            except (HCStoreError, ValueError, KeyError, TypeError) as exc:  # checked like any message from the wire
                log.warning("ignoring a malformed reply from the controller: %s", exc)
                continue
            self._controller_heard = time.monotonic()
            if not reply.ok:
                log.warning("controller refused a heartbeat: %s", reply.error())
                continue
            self.controller_epoch = epoch
            self._send_map = epoch < self.epoch
            if newer is not None:
                self.adopt_map(newer)

    def _newer_map(self, header: dict[str, Any]) -> ClusterMap | None:
        """The map a heartbeat reply carries: whole, or as the changes since ours, checked against its digest.

        Raises:
            ValueError, KeyError, TypeError: a malformed map or delta.
        """
        if "map" in header:
            self._whole_map_due = False
            self.metrics.map_received("whole")
            return ClusterMap.from_dict(header["map"])
        if "delta" not in header:
            return None
        delta = MapDelta.from_dict(header["delta"])
        if self.cluster_map is None or delta.base != self.cluster_map.epoch:
            return None  # the answer to a heartbeat sent before our map changed
        newer = delta.apply(self.cluster_map)
        if not protocol.has_digest(newer, header.get("digest")):
            log.warning(
                "the changes to cluster map epoch %d do not give the controller's map; asking for all of it",
                newer.epoch,
            )
            self._whole_map_due = True
            self.metrics.map_received("delta_mismatch")
            return None
        self.metrics.map_received("delta")
        return newer

    def adopt_map(self, cluster_map: ClusterMap) -> None:
        """Take a newer cluster map and persist it (so a restarted controller can recover the epoch)."""
        if cluster_map.epoch <= self.epoch:
            return
        self.cluster_map = cluster_map
        self.io.submit(("cluster map",), Job(self._persist_map))  # a full pool: housekeeping tries again
        log.info("cluster map epoch %d", cluster_map.epoch)
        if self.maintainer is not None:
            self.maintainer.wake()

    def _persist_map(self) -> None:
        """Write the newest map to disk unless it is there already (crash-safe, fsynced; one writer at a time:
        the map's own I/O lane, or :meth:`close` once the pool has stopped)."""
        cluster_map = self.cluster_map
        if cluster_map is None or cluster_map.epoch <= self._persisted_epoch:
            return
        try:
            write_json_atomic(self.map_file, cluster_map.to_dict())
        except OSError as exc:  # housekeeping tries again; the map in memory is what the agent serves by
            log.warning("cannot save cluster map epoch %d to %s: %s", cluster_map.epoch, self.map_file, exc)
            return
        self._persisted_epoch = cluster_map.epoch

    def report(self) -> dict[str, Any]:
        """What the agent tells the controller each heartbeat."""
        stats = self.store.stats()
        report = {
            "fragments": stats["fragments"],
            "data_fragments": stats["data_fragments"],
            "used": stats["used"],
            "free": stats["free"],
            "pid": os.getpid(),
            "metrics": self.metrics_url,
        }
        if self.maintainer is not None:
            report["repair"] = self.maintainer.status()
        return report

    def handle(self, frames: list[Any]) -> list[Any] | None:
        """Answer one ROUTER message ``[routing id, header, payload...]``; never raises.

        Returns the reply, or ``None`` when the request went to the I/O pool, which posts its
        reply to :attr:`outbox` when done.
        """
        started = time.perf_counter()
        routing, body = frames[:1], frames[1:]
        self.requests += 1
        header: dict[Any, Any] = {}
        try:  # decoded once: an error reply takes its id from what was decoded
            request = protocol.check_request(protocol.decode_header(body, header), body)
        except Exception as exc:  # noqa: BLE001 - every failure, a bug included, becomes an error reply
            return self._refuse(routing, protocol.request_id_of(header), exc, None, started)
        try:
            request.sender = peer_of(body[0])  # per-client limits and roles are kept by sender
            self._authorize(request)
            if request.op in routes.INLINE:
                return self._answer(routing, request, started)
            job = Job(
                run=lambda: self.outbox.put(self._answer(routing, request, started)),
                cancel=lambda: self.outbox.put(
                    self._refuse(
                        routing,
                        request.id,
                        AgentUnavailable(f"node {self.config.node_id} is stopping; request not started"),
                        request,
                        started,
                    )
                ),
                cost=_payload_bytes(request.payloads),
            )
            pool = self._pool_for(request)
            if pool.submit(routes.LANES[request.op](request), job):
                return None
            self.busy += 1
            load = pool.load()
            return self._refuse(
                routing,
                request.id,
                AgentBusy(
                    f"node {self.config.node_id} is busy ({load['jobs']} requests, {load['bytes']} bytes of disk "
                    f"work queued); send again later"
                ),
                request,
                started,
            )
        except Exception as exc:  # noqa: BLE001 - every failure, a bug included, becomes an error reply
            return self._refuse(routing, request.id, exc, request, started)

    def _pool_for(self, request: Request) -> IoPool:
        """The pool that runs a request that is not answered inline (see :mod:`hcstore.node.routes`)."""
        if request.op not in routes.READS:
            return self.io
        return self.repair_reads if request.fields.get("path") in routes.BACKGROUND_READS else self.reads

    def _role_of(self, key: str) -> str | None:
        """The role of a public key: the controller's is admin; others as the map's allow-list says."""
        if key == self.controller_key:
            return "admin"
        grant = self.cluster_map.grant(key) if self.cluster_map is not None else None
        return grant.role if grant is not None else None

    def _authorize(self, request: Request) -> None:
        self.gate.require(
            request.sender, roles.AGENT_OPERATIONS[request.op], f"{request.op} on node {self.config.node_id}"
        )

    def _answer(self, routing: list[Any], request: Request, started: float) -> list[Any]:
        """Run a request's handler (any thread) and return its reply or error reply; never raises."""
        try:
            fields, payloads = self._handlers[request.op](request)
            reply = routing + protocol.reply_frames(request.id, self.epoch, fields, payloads)
        except Exception as exc:  # noqa: BLE001 - every failure, a bug included, becomes an error reply
            return self._refuse(routing, request.id, exc, request, started)
        self.metrics.request(
            request.op,
            OK,
            time.perf_counter() - started,
            _payload_bytes(request.payloads),
            _payload_bytes(payloads),
            request.fields.get("path"),
        )
        return reply

    def _refuse(
        self, routing: list[Any], request_id: int, exc: Exception, request: Request | None, started: float
    ) -> list[Any]:
        """The error reply for ``exc``: its own code, or E_INTERNAL for a bug; bugs and disk trouble are logged
        with the request id, which the client's error message ends with."""
        with self._errors_lock:
            self.errors += 1
        op = request.op if request is not None else INVALID
        where = {"request_id": request_id, "op": op}
        if not isinstance(exc, HCStoreError):  # a bug must not take the node down; report it as internal
            log.error("request %d (%s): internal error", request_id, op, exc_info=exc, extra=where)
            exc = HCStoreError(f"internal error on node {self.config.node_id}: {type(exc).__name__}")
        elif exc.code in _LOGGED:
            log.warning("request %d (%s) failed: %s: %s", request_id, op, exc.code, exc, extra=where)
        self.metrics.request(
            op, exc.code, time.perf_counter() - started, _payload_bytes(request.payloads) if request else 0, 0, None
        )
        if isinstance(exc, CorruptFragment) and request is not None and request.op == "read":
            self.metrics.corrupt_chunks(READ, request.fields["count"])
        return routing + protocol.error_frames(request_id, self.epoch, exc)

    # ------------------------------------------------------------------ health

    def liveness(self) -> health.Health:
        """``/healthz``: alive while the serving loop runs."""
        return health.liveness(self._serving and not self._stopping, node=self.config.node_id)

    def readiness(self) -> health.Health:
        """``/readyz``: serving, a mountpath in service, and on the controller's map epoch or a newer one."""
        return health.agent_readiness(
            serving=self._serving and not self._stopping,
            epoch=self.epoch,
            controller_epoch=self.controller_epoch,
            has_controller=bool(self.config.controller),
            usable_mountpaths=len(self.store.serving),
            mountpaths=len(self.store.mountpaths),
        )

    def stop(self) -> None:
        """Ask the serving loop to finish (safe from a signal handler)."""
        self._stopping = True

    def close(self) -> None:
        """Stop background work, finish the running disk work and send its replies, then close."""
        self._serving = False
        if self.maintainer is not None:
            self.maintainer.stop()
        self.reads.close()
        self.repair_reads.close()
        self.io.close()
        self._persist_map()
        self.outbox.flush(self.replies)
        self.replies.retry()
        if self._controller is not None:
            self._controller.close(linger=0)
        self.socket.close(linger=_CLOSE_LINGER_MS)
        self.gate.close()
        self.context.term()
        self.outbox.close()
        self.store.close()
        if self.metrics_endpoint is not None:
            self.metrics_endpoint.close()

    # ------------------------------------------------------------------ handlers

    def _ping(self, request: Request) -> tuple[dict[str, Any], list[Any]]:
        return {"node": self.config.node_id, "pid": os.getpid()}, []

    def _node_stats(self, request: Request) -> tuple[dict[str, Any], list[Any]]:
        stats = self.store.stats()
        stats.update(
            node=self.config.node_id,
            pid=os.getpid(),
            endpoint=self.endpoint,
            epoch=self.epoch,
            metrics=self.metrics_url,
            requests=self.requests,
            errors=self.errors,
            busy=self.busy,
            io=self.io.load(),
        )
        return stats, []

    def _open(self, request: Request) -> Reply:
        f = request.fields
        upload = self.store.open_upload(
            f["bucket"], f["key"], f["gen"], f["idx"], f["chunk_size"], f.get("expected_bytes"), peer=request.sender
        )
        return {"upload": upload}, []

    def _store(self, request: Request) -> Reply:
        f = request.fields
        upload = self.store.open_upload(
            f["bucket"],
            f["key"],
            f["gen"],
            f["idx"],
            f["chunk_size"],
            len(request.payloads) * f["chunk_size"],
            peer=request.sender,
            reserve_ahead=False,  # the chunks are here already
        )
        try:
            for stripe, payload in enumerate(request.payloads):
                self.store.write_chunk(upload, stripe, payload.buffer)
            self.store.prepare(upload, f["header"])
        finally:
            self.store.abort(upload)  # no-op once prepared
        return {}, []

    def _write(self, request: Request) -> tuple[dict[str, Any], list[Any]]:
        if len(request.payloads) != 1:
            raise ProtocolError(f"write carries {len(request.payloads)} payload frames, expected 1")
        self.store.write_chunk(request.fields["upload"], request.fields["stripe"], request.payloads[0].buffer)
        return {}, []

    def _prepare(self, request: Request) -> tuple[dict[str, Any], list[Any]]:
        self.store.prepare(request.fields["upload"], request.fields["header"])
        return {}, []

    def _commit(self, request: Request) -> tuple[dict[str, Any], list[Any]]:
        f = request.fields
        self.store.commit(f["bucket"], f["key"], f["gen"], f["idx"])
        return {}, []

    def _abort(self, request: Request) -> tuple[dict[str, Any], list[Any]]:
        self.store.abort(request.fields["upload"])
        return {}, []

    def _drop(self, request: Request) -> tuple[dict[str, Any], list[Any]]:
        f = request.fields
        self.store.drop(f["bucket"], f["key"], f["gen"], f["idx"])
        return {}, []

    def _quarantine(self, request: Request) -> tuple[dict[str, Any], list[Any]]:
        f = request.fields
        self.store.quarantine(f["bucket"], f["key"], f["gen"], f["idx"])
        return {}, []

    def _maintain(self, request: Request) -> tuple[dict[str, Any], list[Any]]:
        job = request.fields["job"]
        if job not in ("repair", "scrub"):
            raise InvalidRequest(f"unknown background job {job!r}: use repair or scrub")
        if self.maintainer is None:
            raise InvalidRequest(f"node {self.config.node_id} runs no background work (no controller configured)")
        self.maintainer.wake(scrub=job == "scrub")
        return {"scans": self.maintainer.scans, "scrubs": self.maintainer.scrubs}, []

    def _retire(self, request: Request) -> tuple[dict[str, Any], list[Any]]:
        f = request.fields
        return {"removed": self.store.retire(f["bucket"], f["key"], f["gen"])}, []

    def _tombstone(self, request: Request) -> tuple[dict[str, Any], list[Any]]:
        self.store.tombstone(request.fields["header"])
        return {}, []

    def _read(self, request: Request) -> tuple[dict[str, Any], list[Any]]:
        f = request.fields
        try:
            digests, chunks = self.store.read_chunks(
                f["bucket"], f["key"], f["gen"], f["idx"], f["first"], f["count"], protocol.MAX_READ_BYTES
            )
        except FragmentFileDamaged:
            self._quarantine_later(f["bucket"], f["key"], f["gen"], f["idx"])
            raise
        return {"digests": digests}, chunks

    def _quarantine_later(self, bucket: str, key: str, gen: str, idx: int) -> None:
        """Take a damaged fragment out of service on the object's I/O lane (repair then rebuilds it); when the
        pool is full, a later read or the scrub does it."""

        def quarantine() -> None:
            try:
                self.store.quarantine(bucket, key, gen, idx)
            except Exception as exc:  # noqa: BLE001 - a background job: log, the scrub tries again
                log.warning("cannot quarantine damaged fragment %d of %s/%s: %s", idx, bucket, key, exc)

        self.io.submit(("object", bucket, key), Job(quarantine))

    def _locate(self, request: Request) -> tuple[dict[str, Any], list[Any]]:
        return {"entries": self.store.locate(request.fields["bucket"], request.fields["key"])}, []

    def _locate_many(self, request: Request) -> tuple[dict[str, Any], list[Any]]:
        return {"entries": [self.store.locate(o["bucket"], o["key"]) for o in request.fields["objects"]]}, []

    def _list(self, request: Request) -> tuple[dict[str, Any], list[Any]]:
        f = request.fields
        rows = self.store.list(f["bucket"], f.get("prefix", ""), f.get("start_after", ""), f.get("limit", 1000))
        return {"entries": [list(r) for r in rows]}, []

    def _buckets(self, request: Request) -> tuple[dict[str, Any], list[Any]]:
        return {"buckets": self.store.buckets()}, []


def _payload_bytes(frames: list[Any]) -> int:
    """Bytes in payload frames (ZeroMQ frames, bytes or memoryviews of bytes)."""
    return sum(map(len, frames))


def _raise_open_file_limit() -> None:
    """Let this process open as many files as its hard limit allows: every open upload and every connection
    holds a descriptor, and the common soft limit of 1024 is below what one client may hold
    (:data:`~hcstore.node.peers.MAX_UPLOADS_PER_PEER`). Past it, requests are refused as busy, never
    taken for disk faults."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else 1 << 20
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    except (ValueError, OSError) as exc:
        log.info("keeping the open-file limit at %d (cannot raise it to %d: %s)", soft, wanted, exc)


def _load_map(path: Path) -> ClusterMap | None:
    try:
        return ClusterMap.from_dict(json.loads(path.read_text()))
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError) as exc:
        log.warning("ignoring unreadable cluster map %s: %s", path, exc)
        return None


def main(argv: list[str] | None = None) -> int:
    """``python -m hcstore.node.agent --config FILE``: run one agent until SIGTERM/SIGINT."""
    return daemon.main("hcstore-agent", AgentConfig, Agent, argv)


if __name__ == "__main__":
    sys.exit(main())
