"""Membership: who is in the cluster and in which state, as a pure function of heartbeats.

The controller feeds this table heartbeats and clock ticks; the table answers
with the versioned :class:`placement.ClusterMap`. Every change of a node's
endpoint, labels, weight or state bumps the map's epoch, and the epoch never
goes backwards: a controller that restarts without state adopts the highest
epoch any agent reports and continues above it. The table remembers which node
each of its recent epochs changed, so a node a few epochs behind is sent what
changed since its map (:class:`placement.MapDelta`), not the whole map. A table
whose ``coalesce`` is set (the controller's) holds what heartbeats change (a node
registering, its endpoint, its return to *alive*) until its next :meth:`tick`,
so that a thousand nodes starting together make one new epoch, not a thousand;
an operator's change, or one the ages make, publishes at once, and them with it.

Liveness states follow heartbeat age (``alive → suspect → down → out``); a
node that heartbeats again is ``alive`` again and its fragments count again.
Administrative states override liveness: ``draining`` while the node is
reachable (serves reads, receives no new fragments, hands its fragments over),
``decommissioned`` (removed; never comes back on its own), and ``maintenance``,
a planned outage whatever the heartbeats say, until the operator ends it or its
deadline passes (then liveness rules again: a node still silent by then may be
*out* at once). A *down* node is served around by degraded reads; repair starts
only when it is *out*, so a node that reboots within ``out_after`` causes no
repair storm, and one in maintenance none at all.
"""

from __future__ import annotations

import bisect
import dataclasses
import math
from dataclasses import dataclass, field

from placement import ClusterMap, Grant, MapDelta, Node


@dataclass(frozen=True)
class Intervals:
    """Failure-detection timing, in seconds. Defaults suit GPU nodes: down in seconds, out in minutes."""

    heartbeat: float = 1.0
    suspect_after: float = 3.0
    down_after: float = 8.0
    out_after: float = 600.0

    def __post_init__(self) -> None:
        if not 0 < self.heartbeat < self.suspect_after < self.down_after < self.out_after:
            raise ValueError(
                "intervals must satisfy 0 < heartbeat < suspect_after < down_after < out_after, got "
                f"{self.heartbeat}, {self.suspect_after}, {self.down_after}, {self.out_after}"
            )


def liveness(age: float, intervals: Intervals) -> str:
    """The liveness state of a node whose last heartbeat is ``age`` seconds old."""
    if age > intervals.out_after:
        return "out"
    if age > intervals.down_after:
        return "down"
    if age > intervals.suspect_after:
        return "suspect"
    return "alive"


ADMIN_STATES = frozenset({"draining", "maintenance", "decommissioned"})
"""States an operator sets, which survive a controller restart through the agents' maps."""

MAX_MAINTENANCE_SECONDS = 30 * 86400.0
"""The longest planned outage any controller allows: one of a month is a decommission."""

DEFAULT_MAINTENANCE = 3600.0
"""Seconds a maintenance lasts when its deadline is not known (adopted from an agent's map)."""

MAX_CHANGES = 1 << 14
"""Changes remembered for deltas; a node further behind than the oldest is sent the whole map."""

_ALLOW_LIST = ""
"""What a change of the allow-list is recorded as, in place of a node id (node ids are never empty)."""


@dataclass
class _Member:
    node: Node
    last_seen: float
    admin: str = ""  # "" or one of ADMIN_STATES
    dead: bool = False  # declared dead by an outside authority until it heartbeats again
    until: float = math.inf  # when a maintenance ends by itself


@dataclass
class MembershipTable:
    """The controller's view of the cluster; every method is pure bookkeeping on ``now``."""

    intervals: Intervals = field(default_factory=Intervals)
    epoch: int = 0
    members: dict[str, _Member] = field(default_factory=dict)
    grants: tuple[Grant, ...] = ()
    overdue: list[str] = field(default_factory=list)  # maintenances ended by their deadline, not yet reported
    changes: list[tuple[int, str]] = field(default_factory=list)  # (epoch, node id changed then), oldest first
    deltas_from: int = 0  # every change after this epoch is in ``changes``: a delta can start here or later
    coalesce: bool = False  # hold the changes heartbeats make until the next tick
    _nodes: dict[str, Node] = field(default_factory=dict, init=False, repr=False)  # as published at ``epoch``
    _pending: dict[str, None] = field(default_factory=dict, init=False, repr=False)  # changed, not yet published
    _published: ClusterMap | None = field(default=None, init=False, repr=False)

    def cluster_map(self) -> ClusterMap:
        """The current map: the members' nodes as of the current epoch, and the allow-list.

        Built once per epoch (the controller asks for it with every reply): every published change
        raises the epoch, and changes held for the next tick are not in it yet.
        """
        if self._published is None or self._published.epoch != self.epoch:
            self._published = ClusterMap(self.epoch, tuple(self._nodes.values()), self.grants)
        return self._published

    def set_grants(self, grants: tuple[Grant, ...]) -> None:
        """Replace the allow-list (a key added or revoked): the map's epoch rises so every holder learns it.

        A map adopted from an agent never changes the allow-list: the controller's own is the truth.
        """
        if set(grants) != set(self.grants):
            self.grants = grants
            self._bump(_ALLOW_LIST)

    def adopt(self, seen: ClusterMap, now: float) -> None:
        """Continue from a map an agent persisted: its epoch, and nodes not yet heard from.

        Nodes learnt this way count as just seen, so a restarted controller gives every
        node a full ``out_after`` before declaring it out, and a node in maintenance (whose
        deadline the map does not carry) a full :data:`DEFAULT_MAINTENANCE`. A map at our epoch
        or above moves the epoch past it, and no delta then reaches back before the jump (those
        epochs were another controller's); nodes added from an older map are a change of our own.
        """
        added = [node for node in seen.nodes if node.id not in self.members]
        for node in added:
            admin = node.state if node.state in ADMIN_STATES else ""
            until = now + DEFAULT_MAINTENANCE if admin == "maintenance" else math.inf
            self.members[node.id] = _Member(node, now, admin, until=until)
        if seen.epoch >= self.epoch:
            self._jump(seen.epoch + 1)
        elif added:
            self._bump(*(node.id for node in added))
        self._refresh_states(now)

    def observe_epoch(self, epoch: int) -> None:
        """An agent has seen ``epoch``: never publish a map below it (a restarted controller jumps past it)."""
        if epoch > self.epoch:
            self._jump(epoch + 1)

    def heartbeat(
        self, node_id: str, endpoint: str, labels: dict[str, str], weight: float, now: float, key: str = ""
    ) -> None:
        """Record a heartbeat (the first one registers the node); ``key`` is the public key it was sent with.

        What it changes is published now, or at the next :meth:`tick` when the table coalesces.
        """
        member = self.members.get(node_id)
        changed = member is None
        if member is None:
            member = self.members[node_id] = _Member(Node(node_id, endpoint, weight, labels, key=key), now)
        member.last_seen = now
        member.dead = False
        node = member.node
        if (node.endpoint, dict(node.labels), node.weight, node.key) != (endpoint, labels, weight, key):
            member.node = Node(node_id, endpoint, weight, labels, node.state, key)
            changed = True
        changed |= self._refresh(member, now)  # a heartbeat changes its own node only; tick() ages the others
        if changed and self.coalesce:
            self._pending[node_id] = None
        elif changed:
            self._bump(node_id)

    def tick(self, now: float) -> bool:
        """Apply heartbeat ages and publish the changes held since the last tick; True when the map changed."""
        return self._refresh_states(now) or self.publish()

    def publish(self) -> bool:
        """Publish the changes held since the last tick (an operator's request sees every node registered);
        True when there were any."""
        if not self._pending:
            return False
        self._bump()
        return True

    def set_admin(self, node_id: str, admin: str, now: float, *, seconds: float = math.inf) -> None:
        """Set ``draining`` (drain), ``decommissioned`` (remove), ``maintenance`` for ``seconds``, or ``""`` (resume).

        Raises:
            KeyError: no such node.
        """
        if node_id not in self.members:
            raise KeyError(f"no node {node_id!r} in the cluster map (epoch {self.epoch})")
        member = self.members[node_id]
        member.admin = admin
        member.until = now + seconds if admin == "maintenance" else math.inf
        self._refresh_states(now)

    def admin_of(self, node_id: str) -> str:
        """The administrative state an operator set on ``node_id`` ("" for none).

        Raises:
            KeyError: no such node.
        """
        return self.members[node_id].admin

    def maintenance_left(self, now: float) -> dict[str, float]:
        """Seconds until each maintenance ends by itself, by node id."""
        return {node_id: m.until - now for node_id, m in self.members.items() if m.admin == "maintenance"}

    def mark_dead(self, node_id: str, now: float) -> None:
        """An outside authority (Ray's node table) says the node is gone: it is *down* now, not in seconds.

        Its ``out`` clock still runs from its last heartbeat, so repair starts ``out_after`` after it died.
        Unknown nodes are ignored.
        """
        member = self.members.get(node_id)
        if member is not None:
            member.dead = True
            self._refresh_states(now)

    def forget(self, node_id: str) -> None:
        """Drop a decommissioned node from the map entirely."""
        if self.members.pop(node_id, None) is not None:
            self._bump(node_id)

    def ages(self, now: float) -> dict[str, float]:
        """Seconds since each node's last heartbeat."""
        return {node_id: now - m.last_seen for node_id, m in self.members.items()}

    def delta_since(self, epoch: int) -> MapDelta | None:
        """What changed from our map at ``epoch`` to the current one; None when that is not known (the epoch
        is older than the changes remembered, or not one of ours), for epoch 0 (a node without a map: ours
        at 0 may already hold the allow-list), or when nothing changed."""
        if not max(self.deltas_from, 1) <= epoch < self.epoch:
            return None
        start = bisect.bisect_right(self.changes, epoch, key=lambda change: change[0])
        changed = dict.fromkeys(node_id for _epoch, node_id in self.changes[start:])
        allow_list_changed = _ALLOW_LIST in changed
        changed.pop(_ALLOW_LIST, None)
        return MapDelta(
            base=epoch,
            epoch=self.epoch,
            nodes=tuple(self._nodes[node_id] for node_id in changed if node_id in self._nodes),
            removed=tuple(node_id for node_id in changed if node_id not in self._nodes),
            grants=self.grants if allow_list_changed else None,
        )

    def _bump(self, *node_ids: str) -> None:
        """A new epoch, in which ``node_ids`` (``_ALLOW_LIST`` for the allow-list) and every held change
        are published."""
        node_ids = (*self._pending, *node_ids)
        self._pending.clear()
        self.epoch += 1
        for node_id in node_ids:
            member = self.members.get(node_id)
            if member is not None:
                self._nodes[node_id] = member.node
            else:
                self._nodes.pop(node_id, None)
        self.changes.extend((self.epoch, node_id) for node_id in node_ids)
        if len(self.changes) > MAX_CHANGES:
            cut = len(self.changes) - MAX_CHANGES // 2  # halve at once: trimming stays O(1) per change
            self.deltas_from = self.changes[cut - 1][0]
            del self.changes[:cut]

    def _jump(self, epoch: int) -> None:
        """Publish every member at ``epoch``, forgetting the changes before it: deltas start there."""
        self.epoch = self.deltas_from = epoch
        self.changes.clear()
        self._pending.clear()
        self._nodes = {node_id: member.node for node_id, member in self.members.items()}

    def _refresh_states(self, now: float) -> bool:
        changed = [member.node.id for member in self.members.values() if self._refresh(member, now)]
        if changed:
            self._bump(*changed)
        return bool(changed)

    def _refresh(self, member: _Member, now: float) -> bool:
        """Bring one member's state up to ``now``; True when it changed (the caller raises the epoch)."""
        if member.admin == "maintenance" and now >= member.until:
            member.admin, member.until = "", math.inf  # overdue: normal failure handling resumes
            self.overdue.append(member.node.id)
        state = liveness(now - member.last_seen, self.intervals)
        if member.dead and state in ("alive", "suspect"):
            state = "down"
        if member.admin in ("decommissioned", "maintenance"):
            state = member.admin
        elif member.admin == "draining" and state in ("alive", "suspect"):
            state = "draining"
        if state == member.node.state:
            return False
        member.node = dataclasses.replace(member.node, state=state)
        return True
