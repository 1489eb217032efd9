"""The cluster map: which nodes exist, where they sit, and what state they are in.

A :class:`ClusterMap` is the single input that every placement decision is a function
of. The controller publishes it, agents and clients hold a copy, and every reply on the
wire carries the map's ``epoch`` so a holder of a stale map notices and refreshes it.

Invariants:

* A map is an immutable value. Changes produce a new map with ``epoch + 1``
  (:meth:`ClusterMap.with_node`, :meth:`ClusterMap.without_node`,
  :meth:`ClusterMap.with_state`), so two maps with the same epoch from the same
  controller are the same map.
* Node ids are unique within a map, and the map keeps its nodes sorted by id. The order
  in which nodes were listed therefore never influences placement, equality or the
  serialised form.
* A :class:`Node` carries a capacity ``weight`` (finite, > 0) used by weighted
  rendezvous hashing, and ``labels`` that name its failure domains at the levels of
  :data:`LABEL_LEVELS` (zone, rack, host). Labels are an immutable, hashable mapping, so
  nodes and maps are hashable and picklable and can cross process boundaries.
* Node states follow the churn model: ``alive -> suspect -> down -> out``, plus the
  administrative ``draining`` (serves reads, takes no new fragments, hands its own over),
  ``maintenance`` (a planned outage: never marked out, nothing rebuilt for its absence)
  and ``decommissioned``. Only :data:`WRITABLE_STATES` receive new fragments;
  :data:`READABLE_STATES` are asked first for reads, and nodes in the other states are
  tried last (a ``down`` node, or one in maintenance, may come back).

``to_dict``/``from_dict`` give a plain-JSON form. ``from_dict`` validates everything it
reads and raises :class:`ValueError` naming the offending field, because a map arrives
from the network or from a file and must not be trusted blindly.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")

__all__ = [
    "LABEL_LEVELS",
    "ROLES",
    "Grant",
    "NODE_STATES",
    "READABLE_STATES",
    "WRITABLE_STATES",
    "ClusterMap",
    "Labels",
    "Node",
]

NODE_STATES: tuple[str, ...] = ("alive", "suspect", "down", "out", "draining", "maintenance", "decommissioned")
"""Every state a node can be in."""

WRITABLE_STATES: frozenset[str] = frozenset({"alive"})
"""States of nodes that receive new fragments."""

READABLE_STATES: frozenset[str] = frozenset({"alive", "suspect", "draining"})
"""States of nodes worth asking first for reads; ``down``, ``out`` and ``maintenance`` nodes are tried last."""

LABEL_LEVELS: tuple[str, ...] = ("zone", "rack", "host")
"""Failure-domain label levels, outermost first."""

_NODE_FIELDS = frozenset({"id", "endpoint", "weight", "labels", "state", "key"})
_MAP_FIELDS = frozenset({"epoch", "nodes", "keys"})
_GRANT_FIELDS = frozenset({"key", "role", "name"})

ROLES: tuple[str, ...] = ("client", "node", "admin")
"""What a key may do: ``client`` reads and writes data, ``node`` is an agent (bound to its
node id), ``admin`` also changes the map (drain, resume, remove, keys)."""

_Z85_KEY_LENGTH = 40  # a CurveZMQ public key, Z85-encoded


class Labels(Mapping[str, str]):
    """An immutable, hashable, picklable ``str -> str`` mapping for node labels.

    Compares equal to any mapping with the same items (including a plain ``dict``).

    Args:
        items: The labels, as a mapping or an iterable of ``(name, value)`` pairs.

    Raises:
        ValueError: If a label name or value is not a string.
    """

    __slots__ = ("_items",)

    def __init__(self, items: Mapping[str, str] | Iterable[tuple[str, str]] = ()) -> None:
        pairs = dict(items)
        for name, value in pairs.items():
            if not isinstance(name, str) or not isinstance(value, str):
                raise ValueError(
                    f"node.labels: label {name!r}={value!r} is invalid; label names and values must be strings"
                )
        self._items: dict[str, str] = dict(sorted(pairs.items()))

    def __getitem__(self, name: str) -> str:
        return self._items[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def get(self, name: str, default: Any = None) -> Any:
        """Return the label ``name``, or ``default`` if the node has none."""
        return self._items.get(name, default)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return hash(tuple(self._items.items()))

    def __repr__(self) -> str:
        return repr(self._items)

    def __reduce__(self) -> tuple[Any, ...]:
        return (Labels, (self._items,))

    def to_dict(self) -> dict[str, str]:
        """The labels as a new plain dict (``dict(labels)`` gives the same, a few times slower)."""
        return dict(self._items)


def _check_str(value: object, name: str, *, allow_empty: bool) -> str:
    if not isinstance(value, str) or (not allow_empty and not value):
        need = "a string" if allow_empty else "a non-empty string"
        raise ValueError(f"{name} must be {need}, got {value!r}")
    return value


def _check_weight(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number, got {value!r}")
    weight = float(value)
    if not math.isfinite(weight) or weight <= 0:
        raise ValueError(f"{name} must be finite and > 0, got {value!r}")
    return weight


def _check_state(value: object, name: str) -> str:
    if value not in NODE_STATES:
        raise ValueError(f"{name} must be one of {', '.join(NODE_STATES)}; got {value!r}")
    return str(value)


def _check_key(value: object, name: str) -> str:
    if not isinstance(value, str) or len(value) != _Z85_KEY_LENGTH or not value.isascii():
        raise ValueError(f"{name} must be a Z85 public key of {_Z85_KEY_LENGTH} characters, got {value!r}")
    return value


def _check_fields(d: object, allowed: frozenset[str], what: str) -> Mapping[str, Any]:
    if not isinstance(d, Mapping):
        raise ValueError(f"{what} must be a mapping, got {type(d).__name__}")
    unknown = sorted(str(key) for key in d if key not in allowed)
    if unknown:
        raise ValueError(f"{what}: unknown field(s) {', '.join(unknown)}")
    return d


def _list_field(d: Mapping[str, Any], name: str, what: str) -> list[Any]:
    """Field ``name`` of ``d``, which must be a list (absent: empty)."""
    value = d.get(name, [])
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Iterable):
        raise ValueError(f"{what}.{name} must be a list, got {type(value).__name__}")
    return list(value)


@dataclass(frozen=True)
class Node:
    """One storage node (an agent) in the cluster.

    Attributes:
        id: Unique, stable node id (never an address; addresses change).
        endpoint: Where the node's agent listens, e.g. ``"tcp://10.0.0.5:7700"``.
        weight: Capacity weight for weighted rendezvous hashing, finite and > 0. A node
            of weight 2 receives about twice the fragments of a node of weight 1.
        labels: Failure-domain labels, e.g. ``{"zone": "a", "rack": "r1", "host": "h1"}``.
            Stored as an immutable :class:`Labels` mapping.
        state: One of :data:`NODE_STATES`.
        key: The CurveZMQ public key (Z85) the node's agent proved to hold when it last reported;
            clients expect the agent at ``endpoint`` to hold it. "" in a cluster without authentication.

    Raises:
        ValueError: On construction, if a field is invalid; the message names the field.
    """

    id: str
    endpoint: str = ""
    weight: float = 1.0
    labels: Mapping[str, str] = field(default_factory=Labels)
    state: str = "alive"
    key: str = ""

    def __post_init__(self) -> None:
        _check_str(self.id, "node.id", allow_empty=False)
        _check_str(self.endpoint, "node.endpoint", allow_empty=True)
        object.__setattr__(self, "weight", _check_weight(self.weight, "node.weight"))
        if not isinstance(self.labels, Mapping):
            raise ValueError(f"node.labels must be a mapping, got {type(self.labels).__name__}")
        if not isinstance(self.labels, Labels):
            object.__setattr__(self, "labels", Labels(self.labels))
        _check_state(self.state, "node.state")
        if self.key:
            _check_key(self.key, "node.key")

    def to_dict(self) -> dict[str, Any]:
        """Return the node as a plain, JSON-serialisable dict (``key`` only when the node has one)."""
        out: dict[str, Any] = {
            "id": self.id,
            "endpoint": self.endpoint,
            "weight": self.weight,
            "labels": self.labels.to_dict() if isinstance(self.labels, Labels) else dict(self.labels),
            "state": self.state,
        }
        if self.key:
            out["key"] = self.key
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Node:
        """Build a node from :meth:`to_dict` output, validating every field.

        Args:
            d: A mapping with ``id`` and optionally ``endpoint``, ``weight``, ``labels``
                and ``state``.

        Returns:
            The node.

        Raises:
            ValueError: If ``d`` is not a mapping, has unknown fields, lacks ``id``, or a
                field is invalid; the message names the field.
        """
        d = _check_fields(d, _NODE_FIELDS, "node")
        if "id" not in d:
            raise ValueError("node.id is missing")
        labels = d.get("labels", {})
        if not isinstance(labels, Mapping):
            raise ValueError(f"node.labels must be a mapping, got {type(labels).__name__}")
        return cls(
            id=d["id"],
            endpoint=d.get("endpoint", ""),
            weight=d.get("weight", 1.0),
            labels=Labels(labels),
            state=d.get("state", "alive"),
            key=_check_str(d.get("key", ""), "node.key", allow_empty=True),
        )


@dataclass(frozen=True)
class Grant:
    """One entry of the cluster's allow-list: a CurveZMQ public key and what it may do.

    Attributes:
        key: The public key, Z85-encoded (40 characters).
        role: One of :data:`ROLES`.
        name: Who holds it: for a ``node`` key the node id it is bound to (an agent may
            speak only for that node); for others a label such as ``"alice"``.

    Raises:
        ValueError: On construction, if a field is invalid; the message names the field.
    """

    key: str
    role: str
    name: str = ""

    def __post_init__(self) -> None:
        _check_key(self.key, "grant.key")
        if self.role not in ROLES:
            raise ValueError(f"grant.role must be one of {', '.join(ROLES)}; got {self.role!r}")
        _check_str(self.name, "grant.name", allow_empty=self.role != "node")

    def to_dict(self) -> dict[str, Any]:
        """Return the grant as a plain, JSON-serialisable dict."""
        return {"key": self.key, "role": self.role, "name": self.name}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Grant:
        """Build a grant from :meth:`to_dict` output, validating every field."""
        d = _check_fields(d, _GRANT_FIELDS, "grant")
        return cls(key=d.get("key", ""), role=d.get("role", ""), name=d.get("name", ""))


@dataclass(frozen=True)
class ClusterMap:
    """An immutable, versioned view of the cluster's nodes.

    Attributes:
        epoch: Version of the map; every change increments it. Non-negative int.
        nodes: The nodes, with unique ids, kept sorted by id (any iterable is accepted
            and normalised to a sorted tuple).
        grants: The allow-list of public keys (:class:`Grant`), unique by key, kept sorted;
            empty in a cluster that runs without authentication.

    Raises:
        ValueError: On construction, if the epoch is invalid, an entry is not a
            :class:`Node`, or two nodes share an id.
    """

    epoch: int
    nodes: tuple[Node, ...] = ()
    grants: tuple[Grant, ...] = ()
    # Derived from ``nodes`` by __post_init__; not part of the value (no init, repr, equality or hash).
    _by_id: dict[str, Node] = field(init=False, repr=False, compare=False)
    _by_key: dict[str, Grant] = field(init=False, repr=False, compare=False)
    _writable: tuple[Node, ...] = field(init=False, repr=False, compare=False)
    _memo: dict[str, Any] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if isinstance(self.epoch, bool) or not isinstance(self.epoch, int) or self.epoch < 0:
            raise ValueError(f"cluster_map.epoch must be an int >= 0, got {self.epoch!r}")
        nodes = tuple(self.nodes)
        for node in nodes:
            if not isinstance(node, Node):
                raise ValueError(f"cluster_map.nodes must hold Node values, got {node!r}")
        ordered = tuple(sorted(nodes, key=lambda node: node.id))
        for before, after in itertools.pairwise(ordered):
            if before.id == after.id:
                raise ValueError(f"cluster_map.nodes: duplicate node id {after.id!r}")
        object.__setattr__(self, "nodes", ordered)
        object.__setattr__(self, "_by_id", {node.id: node for node in ordered})
        writable = tuple(node for node in ordered if node.state in WRITABLE_STATES)
        object.__setattr__(self, "_writable", writable)
        object.__setattr__(self, "_memo", {})
        grants = tuple(sorted(self.grants, key=lambda grant: grant.key))
        for grant in grants:
            if not isinstance(grant, Grant):
                raise ValueError(f"cluster_map.grants must hold Grant values, got {grant!r}")
        for first, second in itertools.pairwise(grants):
            if first.key == second.key:
                raise ValueError(f"cluster_map.grants: duplicate key {second.key!r}")
        object.__setattr__(self, "grants", grants)
        object.__setattr__(self, "_by_key", {grant.key: grant for grant in grants})

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_memo": {}}  # what memo() built is rebuilt where it is needed

    def memo(self, name: str, build: Callable[[ClusterMap], T]) -> T:
        """``build(self)``, made once per map under ``name`` (the map is immutable): for indexes that many
        lookups against the same map share, such as the ranking of a scan's keys."""
        try:
            value: T = self._memo[name]
        except KeyError:
            value = self._memo[name] = build(self)
        return value

    def state_of(self, node_id: str) -> str | None:
        """The state of node ``node_id``; None when the map has no such node."""
        node = self._by_id.get(node_id)
        return node.state if node is not None else None

    def grant(self, key: str) -> Grant | None:
        """The allow-list entry of public key ``key`` (None: the key is not allowed)."""
        return self._by_key.get(key)

    def node(self, node_id: str) -> Node:
        """Return the node with id ``node_id``.

        Raises:
            KeyError: If the map has no such node; the message names the id.
        """
        try:
            return self._by_id[node_id]
        except KeyError:
            raise KeyError(f"node {node_id!r} is not in cluster map epoch {self.epoch}") from None

    def __contains__(self, node_id: object) -> bool:
        return node_id in self._by_id

    def __len__(self) -> int:
        return len(self.nodes)

    def writable(self) -> tuple[Node, ...]:
        """Return the nodes that receive new fragments (state in :data:`WRITABLE_STATES`)."""
        return self._writable

    def readable(self) -> tuple[Node, ...]:
        """Return the nodes worth asking first for reads (:data:`READABLE_STATES`)."""
        return tuple(node for node in self.nodes if node.state in READABLE_STATES)

    def with_node(self, node: Node) -> ClusterMap:
        """Return a map with ``node`` added, or replacing the node of the same id; epoch + 1."""
        others = (other for other in self.nodes if other.id != node.id)
        return ClusterMap(self.epoch + 1, (*others, node), self.grants)

    def without_node(self, node_id: str) -> ClusterMap:
        """Return a map without node ``node_id``; epoch + 1.

        Raises:
            KeyError: If the map has no such node.
        """
        self.node(node_id)
        return ClusterMap(self.epoch + 1, tuple(n for n in self.nodes if n.id != node_id), self.grants)

    def with_state(self, node_id: str, state: str) -> ClusterMap:
        """Return a map in which node ``node_id`` is in ``state``; epoch + 1.

        Raises:
            KeyError: If the map has no such node.
            ValueError: If ``state`` is not one of :data:`NODE_STATES`.
        """
        _check_state(state, "state")
        old = self.node(node_id)
        new = dataclasses.replace(old, state=state)
        return ClusterMap(self.epoch + 1, tuple(new if n.id == node_id else n for n in self.nodes), self.grants)

    def to_dict(self) -> dict[str, Any]:
        """Return the map as a plain, JSON-serialisable dict (nodes sorted by id; ``keys`` only when
        the map has an allow-list, so that a map without one reads as it always has)."""
        out: dict[str, Any] = {"epoch": self.epoch, "nodes": [node.to_dict() for node in self.nodes]}
        if self.grants:
            out["keys"] = [grant.to_dict() for grant in self.grants]
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ClusterMap:
        """Build a map from :meth:`to_dict` output, validating every field.

        Raises:
            ValueError: If ``d`` is malformed; the message names the field.
        """
        d = _check_fields(d, _MAP_FIELDS, "cluster_map")
        if "epoch" not in d:
            raise ValueError("cluster_map.epoch is missing")
        return cls(
            epoch=d["epoch"],
            nodes=tuple(Node.from_dict(n) for n in _list_field(d, "nodes", "cluster_map")),
            grants=tuple(Grant.from_dict(g) for g in _list_field(d, "keys", "cluster_map")),
        )
