"""Where the ``k + m`` fragments of an object live, and how they move when the map changes.

:func:`place` is a pure function of ``(key, cluster map, k, m)``: every client and agent
that holds the same map computes the same placement, so there is no placement table to
store, replicate or lose.

Algorithm:

1. Rank the writable nodes (:data:`~placement.cluster_map.WRITABLE_STATES`, minus
   ``exclude``) by weighted rendezvous hashing of the key (:func:`placement.hrw.rank`).
2. Walk the ranking and take a node unless that would put more than ``cap`` fragments of
   this object in one failure domain (:func:`placement.domains.failure_domains`) at any
   label level. ``cap = m`` (losing one domain loses at most ``m`` fragments, which the
   code tolerates); with ``m = 0`` the cap is 1.
3. If the map cannot satisfy the cap (too few zones, say), relax it one step at a
   time, outermost level first (zone, then rack, then host), walking the skipped nodes
   again in ranking order each time. Relaxing the outer level first keeps the inner
   levels spread: with a single zone, fragments still spread over racks and hosts.
4. ``Placement.nodes`` are the chosen nodes in ranking order, so fragment ``i`` goes to
   ``nodes[i]`` and the data fragments ``0..k-1`` sit on the top-ranked nodes;
   ``Placement.spares`` are the remaining eligible nodes in ranking order, the fallback
   when a placement node does not answer.

Invariants: at most ``min(k + m, eligible)`` distinct nodes; independent of the order of
nodes in the map; a node joining or leaving changes the placement of about
``(k + m) / N`` of all objects, because rendezvous ranks of the other nodes do not move.

:func:`plan_moves` turns a map change into the smallest set of fragment moves: a fragment
whose node is still in the object's new placement set stays where it is, even when the
node's position in the new ranking differs; only fragments on nodes that left the set
(or missing fragments) go to the set's newcomers. As a consequence, after a rebalance
fragment ``i`` is not necessarily on ``place(...).nodes[i]``; readers find fragments by
asking the placement set (and spares), not by index arithmetic.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from placement.cluster_map import LABEL_LEVELS, ClusterMap, Node
from placement.domains import failure_domains
from placement.hrw import rank

__all__ = ["Placement", "place", "plan_moves"]


@dataclass(frozen=True)
class Placement:
    """The nodes chosen for the fragments of one object.

    Attributes:
        key: The key that was placed (``"bucket/key"``).
        k: Number of data fragments.
        m: Number of parity fragments.
        nodes: Node id for fragment index ``0..len(nodes)-1``; its length is
            ``min(k + m, number of eligible writable nodes)``.
        spares: The remaining eligible writable nodes, in fallback (ranking) order.
    """

    key: str
    k: int
    m: int
    nodes: tuple[str, ...]
    spares: tuple[str, ...]

    @property
    def complete(self) -> bool:
        """Whether every one of the ``k + m`` fragments has a node."""
        return len(self.nodes) == self.k + self.m


def _check_code(k: int, m: int) -> None:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be an int >= 1, got {k!r}")
    if isinstance(m, bool) or not isinstance(m, int) or m < 0:
        raise ValueError(f"m must be an int >= 0, got {m!r}")


def _spread(ranked: Sequence[Node], want: int, cap: int) -> list[int]:
    """Choose up to ``want`` positions of ``ranked``, capping fragments per domain.

    Returns the chosen positions in ranking order.
    """
    domains: list[tuple[tuple[int, tuple[str, ...]], ...] | None] = [None] * len(ranked)
    limits = [cap] * len(LABEL_LEVELS)
    counts: Counter[tuple[int, tuple[str, ...]]] = Counter()
    taken = [False] * len(ranked)
    chosen: list[int] = []
    want = min(want, len(ranked))
    relax = 0  # index of the level to relax next, outermost first
    while True:
        for position, node in enumerate(ranked):
            if len(chosen) == want:
                return sorted(chosen)
            if taken[position]:
                continue
            node_domains = domains[position]
            if node_domains is None:
                node_domains = domains[position] = failure_domains(node)
            if all(counts[d] < limits[d[0]] for d in node_domains):
                taken[position] = True
                chosen.append(position)
                counts.update(node_domains)
        if len(chosen) == want:
            return sorted(chosen)
        while limits[relax] >= want:
            relax += 1  # this level no longer constrains anything; relax the next one
        limits[relax] += 1


def place(key: str, cluster_map: ClusterMap, k: int, m: int, *, exclude: Collection[str] = ()) -> Placement:
    """Choose the nodes for the ``k + m`` fragments of ``key``.

    Args:
        key: The object's key, ``"bucket/key"``.
        cluster_map: The cluster map to place on.
        k: Number of data fragments (>= 1).
        m: Number of parity fragments (>= 0).
        exclude: Node ids not to use (e.g. nodes that just failed a write).

    Returns:
        The placement: fragment ``i`` goes to ``nodes[i]``. Fewer than ``k + m`` nodes
        (``complete`` false) when the map has too few eligible nodes.

    Raises:
        ValueError: If ``k`` or ``m`` is out of range.
    """
    _check_code(k, m)
    excluded = frozenset(exclude)
    ranked = [n for n in rank(key, cluster_map.writable()) if n.id not in excluded]
    chosen = _spread(ranked, k + m, max(m, 1))
    chosen_set = set(chosen)
    return Placement(
        key=key,
        k=k,
        m=m,
        nodes=tuple(ranked[p].id for p in chosen),
        spares=tuple(node.id for p, node in enumerate(ranked) if p not in chosen_set),
    )


def plan_moves(old: Sequence[str], key: str, new_map: ClusterMap, k: int, m: int) -> tuple[str, ...]:
    """Return the target node of every fragment of ``key`` under ``new_map``.

    Fragments whose current node is in the new placement set stay on it; fragments on
    nodes that left the set, and missing fragments, go to the set's newcomers in
    ranking order (lowest fragment index first). A fragment moves when
    ``result[i] != old[i]``.

    Args:
        old: The node id holding fragment ``0..k+m-1`` now (``""`` where missing).
        key: The object's key, ``"bucket/key"``.
        new_map: The new cluster map.
        k: Number of data fragments.
        m: Number of parity fragments.

    Returns:
        ``k + m`` node ids, one per fragment index; ``""`` where the new map has too
        few eligible nodes to hold every fragment.

    Raises:
        ValueError: If ``old`` does not have ``k + m`` entries, or ``k``/``m`` are out
            of range.
    """
    _check_code(k, m)
    if len(old) != k + m:
        raise ValueError(f"old lists {len(old)} fragment holders; {k}+{m} code has {k + m}")
    new = place(key, new_map, k, m)
    new_set = set(new.nodes)
    targets = [""] * (k + m)
    staying: set[str] = set()
    for index, holder in enumerate(old):
        if holder in new_set and holder not in staying:
            targets[index] = holder
            staying.add(holder)
    newcomers = iter([node for node in new.nodes if node not in staying])
    for index, target in enumerate(targets):
        if not target:
            targets[index] = next(newcomers, "")
    return tuple(targets)
