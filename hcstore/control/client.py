"""Requests to a cluster's controller: its map, its status, node administration, heartbeats.

Every operation the controller serves (:mod:`hcstore.control.controller`) has one
method here, so that nothing else composes controller requests by hand. A
:class:`ControllerClient` holds no live socket when pickled (see
:mod:`hcstore.wire.transport`); it can share a client's transport, so that the
epochs the controller reports count as seen by that client.

Example::

    with ControllerClient("tcp://127.0.0.1:7480") as controller:
        controller.drain("n3")
        print(controller.status().stats["n3"]["data_fragments"])
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from hcstore.errors import (
    AgentUnavailable,
    ControllerUnavailable,
    HCStoreError,
    InvalidRequest,
    ProtocolError,
    Timeout,
)
from hcstore.security.curve import INSECURE, Credentials
from hcstore.wire import protocol
from hcstore.wire.transport import Transport
from placement import ClusterMap, Grant, MapDelta

NODE_ACTIONS = ("drain", "resume", "remove")


@dataclass(frozen=True)
class MapReply:
    """The controller's cluster map, and the cluster's default erasure coding ("" when it has none)."""

    cluster_map: ClusterMap
    ec: str = ""


@dataclass(frozen=True)
class ControllerStatus:
    """The controller's view of the cluster.

    Attributes:
        cluster_map: the current map.
        ages: seconds since each node's last heartbeat, by node id.
        stats: each node's last heartbeat report (fragments, repair and scrub counts), by node id.
        protection: the cluster's protection by level, repair backlog, rate and ETA
            (:meth:`hcstore.metrics.protection.ProtectionSummary.to_dict`).
        metrics_url: the controller's Prometheus endpoint ("" when it has none).
    """

    cluster_map: ClusterMap
    ages: dict[str, float]
    stats: dict[str, dict[str, Any]]
    protection: dict[str, Any] = field(default_factory=dict)
    metrics_url: str = ""


def _changed(held: ClusterMap, header: dict[str, Any]) -> ClusterMap | None:
    """``held`` with the changes a reply carries, when they give the controller's map (its digest); else None."""
    try:
        delta = MapDelta.from_dict(header["delta"])
        newer = delta.apply(held) if delta.base == held.epoch else None
    except (KeyError, TypeError, ValueError):
        return None
    if newer is None or not protocol.has_digest(newer, header.get("digest")):
        return None
    return newer


class ControllerClient:
    """A client of one controller.

    Args:
        endpoint: the controller's ``tcp://host:port``.
        transport: a transport to share (it stays open on :meth:`close`); None makes one.
        timeout: seconds to wait for each reply.
        connect_timeout: seconds to wait for a connection (a transport made here).

        credentials: this process's keys, for a transport made here (a shared one has its own).
        server_key: the controller's public key (CurveZMQ); "" when the transport already trusts it
            or the cluster runs insecure.

    Every method raises :class:`~hcstore.errors.ControllerUnavailable` when the controller
    does not answer, and the controller's own error (e.g. ``InvalidRequest``) when it refuses.
    """

    def __init__(
        self,
        endpoint: str,
        *,
        transport: Transport | None = None,
        timeout: float = 5.0,
        connect_timeout: float = 1.0,
        credentials: Credentials = INSECURE,
        server_key: str = "",
    ) -> None:
        if not endpoint.startswith("tcp://"):
            raise InvalidRequest(f"controller endpoint {endpoint!r} must look like tcp://HOST:PORT")
        self.endpoint = endpoint
        self.timeout = timeout
        self._owns_transport = transport is None
        self.transport = transport or Transport(
            connect_timeout=connect_timeout, request_timeout=timeout, credentials=credentials
        )
        if server_key:
            self.transport.trust(endpoint, server_key)

    # ------------------------------------------------------------------ operations

    def get_map(self, held: ClusterMap | None = None, *, fresh: bool = False) -> MapReply:
        """The current cluster map and the cluster's default erasure coding.

        Args:
            held: a map this cluster's controller gave before: the controller may send only the changes since
                (checked against the digest of its map; on a mismatch the whole map is asked for).
            fresh: have the controller publish what heartbeats changed since its last tick first (it publishes
                them twice a heartbeat interval); a new epoch, so for one who waits on a change, not for polling.
        """
        asked = {"fresh": True} if fresh else {}
        if held is not None:
            header = self._request("get_map", {"deltas": True, **asked}, epoch=held.epoch)
            newer = ClusterMap.from_dict(header["map"]) if "map" in header else _changed(held, header)
            if newer is not None:
                return MapReply(newer, header.get("ec", ""))
        header = self._request("get_map", asked)
        return MapReply(ClusterMap.from_dict(header["map"]), header.get("ec", ""))

    def status(self) -> ControllerStatus:
        """The map, every node's heartbeat age and its last report."""
        header = self._request("status", {})
        return ControllerStatus(
            ClusterMap.from_dict(header["map"]),
            dict(header.get("ages", {})),
            dict(header.get("stats", {})),
            dict(header.get("protection") or {}),
            str(header.get("metrics", "")),
        )

    def cluster_secret(self) -> bytes:
        """The cluster secret (:mod:`hcstore.secret`) that signs values which run code when read.

        Raises:
            InvalidRequest: the controller has no secret (its ``secret_file`` is not set), or refused.
        """
        secret = self._request("cluster_secret", {}).get("secret")
        if not isinstance(secret, bytes) or not secret:
            raise ProtocolError(f"the controller at {self.endpoint} answered cluster_secret without a secret")
        return secret

    def node_admin(self, node: str, action: str, **fields: Any) -> ClusterMap:
        """Drain, resume, remove, or start or end the maintenance of ``node``; returns the map that results.

        Raises:
            InvalidRequest: an unknown action, a remove refused because the node holds fragments,
                a maintenance refused (the node is draining or removed, or too long a duration).
            ObjectNotFound: the map has no such node.
        """
        return ClusterMap.from_dict(self._request("node_admin", {"node": node, "action": action, **fields})["map"])

    def drain(self, node: str) -> ClusterMap:
        """Drain ``node``: it serves reads, takes no new fragments, hands its own over."""
        return self.node_admin(node, "drain")

    def enter_maintenance(self, node: str, seconds: float) -> ClusterMap:
        """Start a planned outage of ``node`` for at most ``seconds``: it is not marked out, nothing is
        rebuilt for its absence, and writes that would place a fragment on it go on without it."""
        return self.node_admin(node, "enter_maintenance", seconds=seconds)

    def exit_maintenance(self, node: str) -> ClusterMap:
        """End the maintenance of ``node`` (no error if it is not in maintenance): what it missed is rebuilt on it."""
        return self.node_admin(node, "exit_maintenance")

    def resume(self, node: str) -> ClusterMap:
        """Bring a drained or removed ``node`` back into service."""
        return self.node_admin(node, "resume")

    def remove(self, node: str, *, force: bool = False) -> ClusterMap:
        """Decommission ``node``; refused while it holds fragments unless ``force``."""
        return self.node_admin(node, "remove", force=force)

    def keys(self) -> list[Grant]:
        """The cluster's allow-list."""
        return [Grant.from_dict(entry) for entry in self._request("keys", {"action": "list"})["keys"]]

    def add_key(self, key: str, role: str, name: str = "") -> list[Grant]:
        """Allow ``key`` with ``role`` (a ``node`` key is bound to node ``name``); returns the new allow-list.

        Raises:
            InvalidRequest: a malformed key, an unknown role, a node key without a node name.
        """
        fields = {"action": "add", "key": key, "role": role, "name": name}
        return [Grant.from_dict(entry) for entry in self._request("keys", fields)["keys"]]

    def revoke_key(self, key: str) -> list[Grant]:
        """Remove ``key`` from the allow-list (its connections are refused from their next request on).

        Raises:
            ObjectNotFound: the key is not in the allow-list.
        """
        return [Grant.from_dict(entry) for entry in self._request("keys", {"action": "revoke", "key": key})["keys"]]

    def heartbeat(
        self,
        node: str,
        endpoint: str,
        *,
        labels: dict[str, str] | None = None,
        weight: float = 1.0,
        epoch: int = 0,
        stats: dict[str, Any] | None = None,
        cluster_map: ClusterMap | None = None,
    ) -> ClusterMap | None:
        """Report ``node`` alive at ``endpoint`` (the first heartbeat registers it).

        Args:
            node: the node's id.
            endpoint: where the node's agent serves.
            labels: the node's failure-domain labels.
            weight: the node's capacity weight in placement.
            epoch: the newest map epoch the node has; the controller answers with its map when newer.
            stats: the node's report (fragments held, repair progress), shown by ``status``.
            cluster_map: a map the node persisted, for a controller that restarted without state.

        Returns:
            The controller's map when it is newer than ``epoch``, else None.
        """
        fields: dict[str, Any] = {"node": node, "endpoint": endpoint, "labels": dict(labels or {}), "weight": weight}
        if stats is not None:
            fields["stats"] = stats
        large = False
        if cluster_map is not None:
            fields["map"], large = protocol.encode_map(cluster_map.to_dict())
        header = self._request("heartbeat", *protocol.with_bulk(fields, framed=large), epoch=epoch)
        return ClusterMap.from_dict(header["map"]) if "map" in header else None

    def wait_for_map(
        self, condition: Callable[[ClusterMap], bool], *, timeout: float = 30.0, interval: float = 0.05
    ) -> ClusterMap:
        """Ask for the map until ``condition(map)`` holds; returns that map.

        Each ask is ``fresh``: a node that registered or came back is seen without waiting for the controller's
        next tick. A controller that does not answer yet (starting, restarting) is asked again.

        Raises:
            Timeout: the condition did not hold within ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        seen = "no map (the controller did not answer)"
        while True:
            try:
                cluster_map = self.get_map(fresh=True).cluster_map
                if condition(cluster_map):
                    return cluster_map
                seen = f"epoch {cluster_map.epoch}: " + ", ".join(f"{n.id} {n.state}" for n in cluster_map.nodes)
            except ControllerUnavailable:
                pass
            if time.monotonic() > deadline:
                raise Timeout(
                    f"the cluster map of the controller at {self.endpoint} did not reach the expected "
                    f"state within {timeout}s; last seen: {seen}"
                )
            time.sleep(interval)

    # ------------------------------------------------------------------ plumbing

    def _request(
        self, op: str, fields: dict[str, Any], payloads: Sequence[bytes] = (), *, epoch: int = 0
    ) -> dict[str, Any]:
        """Ask the controller; the reply's header, with any large fields it sent as bulk frames among them."""
        try:
            request_id = self.transport.send(self.endpoint, op, {**fields, "framed": True}, payloads, epoch=epoch)
        except AgentUnavailable as exc:
            raise self._unavailable(exc) from None
        result = self.transport.wait([request_id], self.timeout)[request_id]
        if isinstance(result, AgentUnavailable):
            raise self._unavailable(result)
        if isinstance(result, HCStoreError):
            raise result
        return result.unwrap().header

    def _unavailable(self, cause: AgentUnavailable) -> ControllerUnavailable:
        why = str(cause).removeprefix(f"agent {self.endpoint} ")  # the transport speaks of agents
        return ControllerUnavailable(f"no hcstore controller answers at {self.endpoint}: {why}")

    def close(self) -> None:
        """Close the sockets of a transport made here (a shared one stays open)."""
        if self._owns_transport:
            self.transport.close()

    def __enter__(self) -> ControllerClient:
        return self

    def __exit__(self, *_: Any) -> None:
        self.close()
