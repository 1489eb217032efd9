"""Failure domains of a node, derived from its labels.

A failure domain is a set of nodes that can fail together: a zone (power, network), a
rack (top-of-rack switch, PDU), a host (several agents on one machine). Placement caps
how many fragments of one object a single domain may hold, so that losing any one
domain loses at most ``m`` fragments and the object stays decodable.

Invariants:

* Levels are :data:`~placement.cluster_map.LABEL_LEVELS`, outermost first. Labels at
  other names are ignored here.
* Domains are hierarchical: a node's rack domain is the path ``(zone, rack)`` and its
  host domain ``(zone, rack, host)``. Racks named ``r1`` in two zones are two racks; a
  label missing above a level counts as the empty string in the path.
* A node without a label for a level is its own domain at that level. It then shares
  that domain with nobody, so it never needs a key and is simply left out.
"""

from __future__ import annotations

from placement.cluster_map import LABEL_LEVELS, Node

__all__ = ["DomainKey", "failure_domains"]

DomainKey = tuple[int, tuple[str, ...]]
"""``(level index, label path)``: one failure domain that a node belongs to."""


def failure_domains(node: Node) -> tuple[DomainKey, ...]:
    """Return the shared failure domains of ``node``, outermost level first.

    Args:
        node: The node.

    Returns:
        One ``(level index, label path)`` key per level of
        :data:`~placement.cluster_map.LABEL_LEVELS` at which the node carries a label.
    """
    labels = node.labels
    path: tuple[str, ...] = ()
    domains: list[DomainKey] = []
    for level, name in enumerate(LABEL_LEVELS):
        value = labels.get(name)
        path += ("" if value is None else value,)
        if value is not None:
            domains.append((level, path))
    return tuple(domains)
