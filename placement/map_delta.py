"""The changes from one cluster map to a newer one: what a heartbeat reply carries instead of the map.

When one node of an N-node map changes, every node needs to learn it. Sending each the whole map costs
O(N) bytes per node and O(N²) per change; a :class:`MapDelta` names only what changed since the map the
node holds: the entries of nodes that joined or changed, the ids of nodes that left, and the allow-list
when it changed. Applied to the map at epoch ``base`` it gives the map at ``epoch``. Maps are values
(sorted by node id), so the result is exactly the sender's map; a receiver that holds some other map of
the same epoch (a controller restarted without state may reuse an epoch) checks a digest of the result
and asks for the whole map when it differs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from placement.cluster_map import ClusterMap, Grant, Node, _check_fields, _list_field

_DELTA_FIELDS = frozenset({"base", "epoch", "nodes", "removed", "keys"})


@dataclass(frozen=True)
class MapDelta:
    """The nodes that joined or changed (their new entries), those that left, and the allow-list if it changed."""

    base: int
    epoch: int
    nodes: tuple[Node, ...] = ()
    removed: tuple[str, ...] = ()
    grants: tuple[Grant, ...] | None = None  # None: the allow-list is the base map's

    def apply(self, old: ClusterMap) -> ClusterMap:
        """The map at :attr:`epoch`, from ``old``, the map at :attr:`base`.

        Raises:
            ValueError: ``old`` is not at epoch :attr:`base`.
        """
        if old.epoch != self.base:
            raise ValueError(f"a delta from epoch {self.base} cannot apply to a map at epoch {old.epoch}")
        kept = {node.id: node for node in old.nodes}
        for node_id in self.removed:
            kept.pop(node_id, None)
        kept.update((node.id, node) for node in self.nodes)
        return ClusterMap(self.epoch, tuple(kept.values()), old.grants if self.grants is None else self.grants)

    def to_dict(self) -> dict[str, Any]:
        """The delta as a plain dict (``keys`` only when the allow-list changed)."""
        out: dict[str, Any] = {
            "base": self.base,
            "epoch": self.epoch,
            "nodes": [node.to_dict() for node in self.nodes],
            "removed": list(self.removed),
        }
        if self.grants is not None:
            out["keys"] = [grant.to_dict() for grant in self.grants]
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> MapDelta:
        """Build a delta from :meth:`to_dict` output, validating every field.

        Raises:
            ValueError: ``d`` is malformed; the message names the field.
        """
        d = _check_fields(d, _DELTA_FIELDS, "map delta")
        for name in ("base", "epoch"):
            if type(d.get(name)) is not int or d[name] < 0:
                raise ValueError(f"map delta.{name} must be a non-negative integer, got {d.get(name)!r:.40}")
        if d["epoch"] <= d["base"]:
            raise ValueError(f"map delta.epoch {d['epoch']} is not above its base {d['base']}")
        removed = _list_field(d, "removed", "map delta")
        if not all(isinstance(node_id, str) for node_id in removed):
            raise ValueError("map delta.removed must hold node ids (strings)")
        grants = _list_field(d, "keys", "map delta") if "keys" in d else None
        return cls(
            base=d["base"],
            epoch=d["epoch"],
            nodes=tuple(Node.from_dict(node) for node in _list_field(d, "nodes", "map delta")),
            removed=tuple(removed),
            grants=None if grants is None else tuple(Grant.from_dict(grant) for grant in grants),
        )
