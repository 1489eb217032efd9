"""The controller: owner of the versioned cluster map, outside Ray a process of its own.

Agents heartbeat to it (the first heartbeat registers them) and get the map
back whenever theirs is older; clients ask it for the map. It runs the
failure detector (:mod:`hcstore.control.membership`) on a clock tick, takes drain,
resume and remove commands, and aggregates the agents' reports into the
cluster's protection summary. It keeps no state on disk: a restarted
controller learns the highest epoch, and the nodes, from the maps the agents
persisted, so the epoch keeps rising. While it is down the data path goes on
with the maps that agents and clients already hold.

Run it as ``python -m hcstore.control.controller --config controller.toml`` (or ``hcstore
controller --config controller.toml``); the file's settings are
:class:`hcstore.config.ControllerConfig`'s. Its Prometheus endpoint (``metrics_host``/``metrics_port``,
its URL in the ready file) also answers ``/healthz`` and ``/readyz``; see :mod:`hcstore.metrics`.
"""

from __future__ import annotations

import logging
import math
import os
import queue
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import zmq

from ec import parse_ec
from hcstore import daemon
from hcstore.config import ControllerConfig
from hcstore.control.membership import MembershipTable
from hcstore.errors import AgentUnavailable, Forbidden, HCStoreError, InvalidRequest, ObjectNotFound
from hcstore.files import write_json_atomic
from hcstore.metrics import health
from hcstore.metrics.controller import ControllerMetrics, ControllerSnapshot
from hcstore.metrics.endpoint import MetricsEndpoint
from hcstore.metrics.protection import ProtectionSummary, RepairRate, summarize
from hcstore.metrics.requests import INVALID, OK
from hcstore.secret import read_secret_file
from hcstore.security import roles
from hcstore.security.allow_list import read_allow_list, with_key, without_key, write_allow_list
from hcstore.security.curve import Gate
from hcstore.security.identity import INSECURE_WARNING, daemon_credentials
from hcstore.wire import bulk, protocol
from hcstore.wire.protocol import Request
from hcstore.wire.server import IDLE_POLL_MS, RETRY_MS, Replies, answer_pending, peer_of
from hcstore.wire.transport import Transport
from placement import ClusterMap, Grant

log = logging.getLogger(__name__)
ADMIN_QUERY_TIMEOUT = 3.0  # seconds an admin guard waits for the node it asks
ADMIN_ACTIONS = {
    "drain": "draining",
    "resume": "",
    "remove": "decommissioned",
    "enter_maintenance": "maintenance",
    "exit_maintenance": "",
}
REPORTING = frozenset({"alive", "suspect", "draining"})  # nodes whose scan reports are current
LEAVING = frozenset({"out", "draining", "decommissioned"})  # nodes that will hold no fragments
LOGGED_CHANGES = 20  # node changes named in the log line of a new epoch; the rest are counted
MAX_DELTAS_KEPT = 64  # deltas to the current epoch kept encoded, one per base epoch that nodes hold
MAX_DELTA_BYTES = protocol.MAX_HEADER_BYTES // 4  # a delta travels in the header; a larger change, the whole map


class Controller:
    """Serves the cluster map and membership on a ZeroMQ ROUTER socket."""

    def __init__(self, config: ControllerConfig | None = None, *, clock: Any = time.monotonic) -> None:
        """Bind the controller's socket (``serve`` answers on it).

        Args:
            config: address, the cluster's EC and failure-detection timing (default: the defaults).
            clock: the monotonic clock membership ages are measured with.

        Raises:
            LocalFileError: ``config.secret_file`` is set and does not hold a private secret.
        """
        config = config or ControllerConfig()
        self.config = config
        # read before the socket is bound: a missing or open secret file fails the start
        self._secret = read_secret_file(config.secret_file) if config.secret_file else b""
        self.ec = config.ec  # the cluster's default erasure coding, told to clients ("" for none)
        self.table = MembershipTable(config.intervals, coalesce=True)  # one epoch per tick for heartbeats' changes
        self.clock = clock
        self.stats: dict[str, dict[str, Any]] = {}
        self.credentials = daemon_credentials(config, "controller")
        # An epoch of its own (1): a node's first heartbeat, answered before its registration is published at the
        # next tick, already brings it the allow-list, so that it admits clients before the map lists it.
        self.table.set_grants(read_allow_list(config.keys_file) if config.keys_file else ())
        self._grants = {grant.key: grant for grant in self.table.grants}
        if self.credentials.secure and not self._grants:
            log.warning("the allow-list is empty: no agent or client can connect (add keys with `hcstore keys add`)")
        # A context of its own: ZeroMQ authenticates the connections of a context with one handler.
        self.context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self.socket = self.context.socket(zmq.ROUTER)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.setsockopt(zmq.MAXMSGSIZE, max(protocol.MAX_HEADER_BYTES, bulk.MAX_BULK_FRAME_BYTES))  # a frame
        # Messages queued per peer: an agent heartbeats once per `heartbeat` and a client asks one thing at a
        # time, so 64 is ample. A peer past it inbound is slowed (nothing lost); replies past it wait in
        # `replies` (bounded) until the peer reads.
        self.socket.setsockopt(zmq.RCVHWM, 64)
        self.socket.setsockopt(zmq.SNDHWM, 64)
        self.replies = Replies(self.socket)
        self.gate = Gate(self.context, self.socket, self.credentials, self._role_of)
        host, port = config.host, config.port
        if port:
            self.socket.bind(f"tcp://{host}:{port}")
            self.endpoint = f"tcp://{host}:{port}"
        else:
            self.endpoint = f"tcp://{host}:{self.socket.bind_to_random_port(f'tcp://{host}')}"
        self._stopping = False
        self._dead: queue.SimpleQueue[str] = queue.SimpleQueue()
        self._transport = Transport(
            connect_timeout=1.0, request_timeout=ADMIN_QUERY_TIMEOUT, credentials=self.credentials
        )
        self._handlers = {
            "heartbeat": self._heartbeat,
            "get_map": self._get_map,
            "node_admin": self._node_admin,
            "status": self._status,
            "keys": self._keys,
            "cluster_secret": self._cluster_secret,
        }
        self.repair_rate = RepairRate()
        self._sent: _SentMap | None = None  # the current map as replies carry it
        self._lock = threading.Lock()  # the serving loop's state, against scrapes from the endpoint's threads
        self._serving = False
        self.metrics: ControllerMetrics | None = None
        self.metrics_endpoint: MetricsEndpoint | None = None
        if config.metrics_port >= 0:
            self.metrics = ControllerMetrics(self.snapshot)
            self.metrics_endpoint = MetricsEndpoint(
                self.metrics.registry,
                config.metrics_host or host,
                config.metrics_port,
                alive=self.liveness,
                ready=self.liveness,
            )
        self.metrics_url = self.metrics_endpoint.url if self.metrics_endpoint else ""

    @property
    def cluster_map(self) -> ClusterMap:
        """The current cluster map."""
        return self.table.cluster_map()

    def serve(self, *, ready_file: str | None = None) -> None:
        """Serve until :meth:`stop`, writing ``ready_file`` (endpoint and pid) once serving."""
        if ready_file:
            write_json_atomic(
                Path(ready_file), {"endpoint": self.endpoint, "pid": os.getpid(), "metrics": self.metrics_url}
            )
        if not self.credentials.secure:
            log.warning("the controller runs %s", INSECURE_WARNING)
        poller = zmq.Poller()
        poller.register(self.socket, zmq.POLLIN)
        tick = self.table.intervals.heartbeat / 2
        next_tick = self.clock()
        self._serving = True
        while not self._stopping:
            if poller.poll(RETRY_MS if self.replies.waiting else min(IDLE_POLL_MS, int(tick * 1000))):
                with self._lock:
                    answer_pending(self.replies, self.handle)
            self.replies.retry()
            with self._lock:
                while not self._dead.empty():
                    self.table.mark_dead(self._dead.get(), self.clock())
                if self.clock() < next_tick:
                    continue  # ages are looked at twice a heartbeat, not after every message: a tick costs O(nodes)
                next_tick = self.clock() + tick
                before = self.table.epoch
                if self.table.tick(self.clock()):
                    log.info("cluster map epoch %d: %s", self.table.epoch, self._changes_since(before))
                while self.table.overdue:
                    node = self.table.overdue.pop(0)
                    log.warning("node %s: maintenance overdue, ended; normal failure handling resumes", node)
        self._serving = False
        self.socket.close(linger=0)
        self.gate.close()
        self.context.term()
        self._transport.close()
        if self.metrics_endpoint is not None:
            self.metrics_endpoint.close()

    def _changes_since(self, epoch: int) -> str:
        """What changed in the map since ``epoch``, for the log: a few nodes by name, the rest counted, then the
        nodes by state, so that a fleet's log line stays short."""
        delta = self.table.delta_since(epoch)  # None from epoch 0: every node is new
        named = [f"{node.id} {node.state}" for node in delta.nodes] if delta is not None else []
        named += [f"{gone} gone" for gone in delta.removed] if delta is not None else []
        if len(named) > LOGGED_CHANGES:
            named = [*named[:LOGGED_CHANGES], f"{len(named) - LOGGED_CHANGES} more"]
        states = Counter(node.state for node in self.cluster_map.nodes)
        counts = ", ".join(f"{count} {state}" for state, count in sorted(states.items()))
        return f"{', '.join(named) + '; ' if named else ''}{len(self.cluster_map)} nodes: {counts or 'none'}"

    def stop(self) -> None:
        """Make :meth:`serve` return soon; safe from a signal handler."""
        self._stopping = True

    def mark_dead(self, node_id: str) -> None:
        """Thread-safe: the node is known dead (e.g. Ray says so); it turns *down* on the next loop."""
        self._dead.put(node_id)

    def handle(self, frames: list[Any]) -> list[Any]:
        """Answer one ROUTER message; never raises."""
        started = time.perf_counter()
        routing, body = frames[:1], frames[1:]
        op = INVALID
        header: dict[Any, Any] = {}
        try:  # decoded once: an error reply takes its id from what was decoded
            request = protocol.check_request(protocol.decode_header(body, header), body, protocol.CONTROLLER_OPERATIONS)
            op = request.op
            request.sender = peer_of(body[0])
            self._authorize(request)
            fields, payloads = protocol.with_bulk(
                self._handlers[request.op](request), framed=bool(request.fields.get("framed"))
            )
            reply = protocol.reply_frames(request.id, self.table.epoch, fields, payloads)
            self._count(op, OK, started)
            return routing + reply
        except HCStoreError as exc:
            self._count(op, exc.code, started)
            return routing + protocol.error_frames(protocol.request_id_of(header), self.table.epoch, exc)
        except Exception as exc:
            request_id = protocol.request_id_of(header)
            log.exception(
                "request %d (%s): internal error in the controller",
                request_id,
                op,
                extra={"request_id": request_id, "op": op},
            )
            self._count(op, HCStoreError.code, started)
            return routing + protocol.error_frames(
                request_id, self.table.epoch, HCStoreError(f"controller internal error: {type(exc).__name__}")
            )

    def _role_of(self, key: str) -> str | None:
        grant = self._grants.get(key)
        return grant.role if grant is not None else None

    def _authorize(self, request: Request) -> None:
        """Refuse a request its sender's key may not make; a node's key speaks for its own node only."""
        self.gate.require(request.sender, roles.CONTROLLER_OPERATIONS[request.op], request.op)
        if request.op == "heartbeat" and self.gate.secure:
            grant = self._grants[request.sender]
            if grant.role != "node" or grant.name != request.fields["node"]:
                raise Forbidden(
                    f"a heartbeat for node {request.fields['node']!r} must come from a node key bound to it; "
                    f"this key is of role {grant.role}{' bound to ' + repr(grant.name) if grant.name else ''}"
                )

    def _count(self, op: str, outcome: str, started: float) -> None:
        if self.metrics is not None:
            self.metrics.requests.observe(op, outcome, time.perf_counter() - started)

    # ------------------------------------------------------------------ observability

    def protection(self) -> ProtectionSummary:
        """The cluster's protection from the serving nodes' latest scans, with the repair rate and ETA."""
        serving = {node.id for node in self.cluster_map.nodes if node.state in REPORTING}
        return summarize(self.stats, serving).at_rate(self.repair_rate.rate(self.clock()))

    def snapshot(self) -> ControllerSnapshot:
        """The map, heartbeat ages and protection at one instant (safe from any thread)."""
        with self._lock:
            return ControllerSnapshot(
                self.cluster_map,
                self.table.ages(self.clock()),
                self.protection(),
                self.table.intervals.out_after,
                self.replies.waiting,
                self.replies.dropped,
            )

    def liveness(self) -> health.Health:
        """``/healthz`` and ``/readyz``: the controller is alive, and ready, while its serving loop runs."""
        return health.liveness(self._serving and not self._stopping, epoch=self.table.epoch)

    # ------------------------------------------------------------------ handlers

    def _heartbeat(self, request: Request) -> dict[str, Any]:
        f = request.fields
        now = self.clock()
        seen = None
        if "map" in f:
            try:
                seen = ClusterMap.from_dict(f["map"])
            except (ValueError, KeyError, TypeError) as exc:
                raise InvalidRequest(f"heartbeat from {f['node']!r}: bad map: {exc}") from None
        for what, epoch in (("epoch", request.epoch), ("map epoch", seen.epoch if seen is not None else 0)):
            if epoch > max(self.table.epoch, protocol.MAX_ADOPTED_EPOCH):  # headroom to count on from
                raise InvalidRequest(
                    f"heartbeat from {f['node']!r}: {what} {epoch} is beyond {protocol.MAX_ADOPTED_EPOCH}, "
                    "higher than any this cluster can have reached"
                )
        joining = {f["node"], *(node.id for node in seen.nodes)} if seen is not None else {f["node"]}
        newcomers = sum(node not in self.table.members for node in joining)  # not `joining - keys()`: O(nodes)
        if len(self.table.members) + newcomers > protocol.MAX_MAP_NODES:
            raise InvalidRequest(
                f"heartbeat from {f['node']!r}: the cluster map holds at most {protocol.MAX_MAP_NODES} nodes"
            )
        if seen is not None:
            self.table.adopt(self._trusted_part(seen), now)
        elif request.epoch > self.table.epoch:
            # This controller restarted and knows less than the agent: registering the node now would
            # publish a map of the nodes heard so far, without the ones that are down or in maintenance.
            # The reply's lower epoch makes the agent send its map with its next heartbeat, which is adopted.
            return {}
        self.table.observe_epoch(request.epoch)
        labels = dict(f["labels"])
        try:
            key = request.sender if self.gate.secure else ""  # the key the node proves it holds
            self.table.heartbeat(f["node"], f["endpoint"], labels, float(f["weight"]), now, key)
        except ValueError as exc:
            raise InvalidRequest(f"heartbeat from {f['node']!r}: {exc}") from None
        if "stats" in f:
            self.stats[f["node"]] = f["stats"]
            self.repair_rate.observe(f["node"], now, int((f["stats"].get("repair") or {}).get("bytes_repaired", 0)))
        return self._map_since(request) if request.epoch < self.table.epoch else {}

    def _map_since(self, request: Request) -> dict[str, Any]:
        """The current map for a requester holding the map of ``request.epoch``: the changes since, with the map's
        digest, when it takes them (``deltas``) and they are known and small; else the whole map."""
        sent = self._sent_map()
        delta = sent.delta_since(request.epoch, self.table) if request.fields.get("deltas") else None
        return {"map": sent.packed} if delta is None else {"delta": delta, "digest": sent.digest}

    def _sent_map(self) -> _SentMap:
        """The current map as replies carry it, made once per map: after a change every node asks for it."""
        if self._sent is None or self._sent.cluster_map is not self.cluster_map:
            self._sent = _SentMap(self.cluster_map)
        return self._sent

    def _trusted_part(self, seen: ClusterMap) -> ClusterMap:
        """Of a map an agent persisted, the nodes whose keys the allow-list binds to them (all, when insecure)."""
        if not self.gate.secure:
            return seen
        bound = {(g.name, g.key) for g in self._grants.values() if g.role == "node"}
        return ClusterMap(seen.epoch, tuple(n for n in seen.nodes if (n.id, n.key) in bound))

    def _keys(self, request: Request) -> dict[str, Any]:
        """List, add or revoke keys of the allow-list; a change is a new map epoch, saved to the keys file."""
        f = request.fields
        action = f["action"]
        if action == "list":
            return {"keys": [grant.to_dict() for grant in self.table.grants]}
        if action not in ("add", "revoke"):
            raise InvalidRequest(f"unknown keys action {action!r}: use list, add or revoke")
        if action == "add":
            grants = with_key(self.table.grants, f.get("key", ""), f.get("role", ""), f.get("name", ""))
        else:
            grants = without_key(self.table.grants, f.get("key", ""))
        self._set_grants(grants)
        log.info("allow-list: %s %s; cluster map epoch %d", action, f.get("key", ""), self.table.epoch)
        return {"keys": [grant.to_dict() for grant in grants]}

    def _set_grants(self, grants: tuple[Grant, ...]) -> None:
        if set(grants) == set(self.table.grants):
            return
        if self.config.keys_file:
            write_allow_list(self.config.keys_file, grants)  # saved before it takes effect
        self.table.set_grants(grants)
        self._grants = {grant.key: grant for grant in grants}

    def allow_node(self, node_id: str, key: str) -> None:
        """Thread-safe: bind ``key`` to node ``node_id``, replacing the node's older keys (an agent that
        made a new key pair, e.g. on a fresh host). For deployers that vouch for the node themselves."""
        with self._lock:
            others = tuple(g for g in self.table.grants if not (g.role == "node" and g.name == node_id))
            self._set_grants(with_key(others, key, "node", node_id))

    def _get_map(self, request: Request) -> dict[str, Any]:
        if request.fields.get("fresh"):
            self.table.publish()  # what heartbeats changed since the last tick, now rather than at the next
        return {**self._map_since(request), **({"ec": self.ec} if self.ec else {})}

    def _node_admin(self, request: Request) -> dict[str, Any]:
        f = request.fields
        action, node = f["action"], f["node"]
        if action not in ADMIN_ACTIONS:
            raise InvalidRequest(f"unknown node action {action!r}: use one of {', '.join(ADMIN_ACTIONS)}")
        self.table.publish()  # judged on every node registered so far, not on the last tick's map
        if node not in self.cluster_map:
            raise ObjectNotFound(f"no node {node!r} in the cluster map")
        admin = self.table.admin_of(node)
        if action == "drain":
            self._refuse_unless_room_without(node)
        if action == "remove" and not f.get("force"):
            self._refuse_unless_empty(node)
        seconds = math.inf
        if action == "enter_maintenance":
            if admin in ("draining", "decommissioned"):
                raise InvalidRequest(
                    f"node {node} is {admin}: a planned outage is for nodes in service; resume it first"
                )
            seconds = f.get("seconds") or 0
            if not 0 < seconds <= self.config.maintenance_limit:
                raise InvalidRequest(
                    f"maintenance of node {node}: seconds must be in (0, {self.config.maintenance_limit:g}] "
                    f"(the controller's maintenance_limit), got {seconds:g}"
                )
            log.info("node %s enters maintenance for at most %gs", node, seconds)
        elif action == "exit_maintenance":
            if admin != "maintenance":
                return {"map": self._sent_map().packed}  # nothing to end: a retried exit is not an error
            log.info("node %s leaves maintenance", node)
        self.table.set_admin(node, ADMIN_ACTIONS[action], self.clock(), seconds=seconds)
        return {"map": self._sent_map().packed}

    def _refuse_unless_room_without(self, node: str) -> None:
        """Refuse to drain a node whose fragments would have nowhere to go: fewer nodes left in service
        than the ``k+m`` fragments of the cluster's EC, each of which needs a node of its own."""
        if not self.ec:
            return
        k, m = parse_ec(self.ec)
        left = [n.id for n in self.cluster_map.nodes if n.id != node and n.state not in LEAVING]
        if len(left) < k + m:
            raise InvalidRequest(
                f"draining node {node} would leave {len(left)} node{'' if len(left) == 1 else 's'} in service "
                f"({', '.join(left) or 'none'}), "
                f"fewer than the {k + m} fragments of the cluster's EC {self.ec}: its fragments would have "
                "nowhere to go; add a node first"
            )

    def _refuse_unless_empty(self, node: str) -> None:
        """Refuse to remove a node that holds data fragments (tombstones have copies elsewhere).

        The node itself is asked: its last heartbeat report may predate the latest puts. A node
        that cannot be asked counts as holding an unknown number of fragments.
        """
        endpoint, key = self.cluster_map.node(node).endpoint, self.cluster_map.node(node).key
        try:
            if not endpoint:
                raise AgentUnavailable(f"node {node} is down")
            if key:
                self._transport.trust(endpoint, key)
            held: Any = self._transport.request(endpoint, "node_stats", {}).header.get("data_fragments")
        except HCStoreError as exc:
            log.info("remove %s: could not ask the node how many fragments it holds: %s", node, exc)
            held = None
        if held is None or held > 0:
            raise InvalidRequest(
                f"node {node} still holds {held if held is not None else 'an unknown number of'} fragments; "
                "removing it now could lose data: run `hcstore node drain` first and wait until it holds "
                "none, or pass --force"
            )

    def _status(self, request: Request) -> dict[str, Any]:
        now = self.clock()
        return {
            "map": self._sent_map().packed,
            "ages": self.table.ages(now),
            "stats": self.stats,
            "protection": self.protection().to_dict(),
            "metrics": self.metrics_url,
        }

    def _cluster_secret(self, request: Request) -> dict[str, Any]:
        if not self._secret:
            raise InvalidRequest(
                "this controller has no cluster secret (its secret_file setting is empty), so values that "
                "need one (pickles written with allow_pickle=True) can be neither written nor read: "
                "set secret_file to a file of 32 random bytes, mode 0600"
            )
        return {"secret": self._secret}


class _SentMap:
    """One map as replies carry it: whole (encoded once), its digest, and the changes to it from each epoch
    a node asked from (the nodes behind mostly hold the same few epochs)."""

    def __init__(self, cluster_map: ClusterMap) -> None:
        self.cluster_map = cluster_map
        self.packed = protocol.Packed.of(cluster_map.to_dict())
        self.digest = protocol.map_digest(self.packed.data)
        self._deltas: dict[int, protocol.Packed | None] = {}

    def delta_since(self, base: int, table: MembershipTable) -> protocol.Packed | None:
        """The changes from epoch ``base`` as a reply carries them; None when ``table`` does not know them, or
        when they hold half the map or more (or would crowd the header), which then goes whole."""
        if base not in self._deltas:
            if len(self._deltas) >= MAX_DELTAS_KEPT:
                self._deltas.clear()
            delta = table.delta_since(base)
            small = delta is not None and 2 * (len(delta.nodes) + len(delta.removed)) < len(self.cluster_map)
            packed = protocol.Packed.of(delta.to_dict()) if delta is not None and small else None
            fits = packed is not None and len(packed.data) <= MAX_DELTA_BYTES
            self._deltas[base] = packed if fits else None
        return self._deltas[base]


def main(argv: list[str] | None = None) -> int:
    """``python -m hcstore.control.controller --config FILE``: run the controller until SIGTERM/SIGINT."""
    return daemon.main("hcstore-controller", ControllerConfig, Controller, argv)


if __name__ == "__main__":
    sys.exit(main())
