"""Quorum arithmetic: where a write may go, whom a read must ask, and when silence proves absence.

Everything is a function of ``(key, cluster map, k, m)``; there is no I/O. Let ``n = k + m``
and let ``R`` be the key's weighted HRW ranking (:func:`placement.hrw.rank`) over the map's
nodes in every state but ``out`` and ``decommissioned`` (:func:`ranking`). A node that is out
has been down for the out-interval and repair rebuilds its fragments elsewhere; a version
whose holders are all out or silent has lost at least ``W >= m + 1`` of them, past what its
code tolerates, so leaving out nodes aside only changes answers about objects already lost
beyond their protection (and keeps nodes that died long ago from making every read unprovable).

* **Home set** (:func:`home_set`): the first ``n + m`` nodes of ``R``. Every fragment of a
  version (its placement, the spares standing in for failed targets, repair and rebalance
  targets) stays inside the home set of the map it is written under.
* **Write quorum** (:func:`write_quorum`): a committed version has at least ``W`` fragments,
  prepared or committed, inside that home set: ``W = max(k, m) + 1`` when ``m > 0`` and
  ``W = k`` when ``m = 0``. For a replicated object (``k = 1``, ``m + 1`` copies) this is
  ``m + 1``: every copy.
* **During maintenance** (:func:`home_write_quorum`): each node of the home set in a planned
  outage excuses one fragment, down to ``max(k, m + 1)`` (``k`` when ``m = 0``): still
  decodable, and still more holders than ``m`` silent nodes can hide, so every proof below
  holds; the fragments the outage excused are rebuilt on the node when it is back.
* **Read candidates** (:func:`read_candidates`): the first ``n + 2m`` nodes of ``R``: the home
  set plus ``m`` positions of margin for nodes that joined above it since the write.
* **Proof** (:func:`prove`): a reader asks every read candidate; ``U`` are those that did not
  answer. A committed generation newer than what the answers show would need all of its
  ``>= W`` holders in ``U``. So the answers prove "absent" (or "this generation is the
  newest") exactly when ``|U| < W_min``, the smallest write quorum a writer of the key could
  have used (:func:`smallest_quorum` over the :func:`schemes_of` every EC in play). With at
  most ``m`` nodes silent, ``|U| <= m < m + 1 <= W_min`` and every read is proven.

A writer may use its EC coded, or replicated for a small object (``k = 1``, same ``m``), so
the schemes of an EC ``k+m`` are ``(k, m)`` and ``(1, m)``.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass

from placement.cluster_map import ClusterMap, Node
from placement.hrw import RankIndex, rank

__all__ = [
    "Proof",
    "home_map",
    "home_set",
    "home_write_quorum",
    "home_size",
    "listing_proof",
    "prove",
    "ranking",
    "read_candidate_count",
    "read_candidates",
    "schemes_of",
    "smallest_quorum",
    "write_quorum",
]

Scheme = tuple[int, int]
"""An erasure-coding scheme ``(k, m)``."""

_UNRANKED = frozenset({"out", "decommissioned"})


def _check(k: int, m: int) -> None:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be an int >= 1, got {k!r}")
    if isinstance(m, bool) or not isinstance(m, int) or m < 0:
        raise ValueError(f"m must be an int >= 0, got {m!r}")


def write_quorum(k: int, m: int) -> int:
    """The fewest fragments a committed version of a ``k+m`` scheme has: ``max(k, m) + 1``, or ``k`` when ``m = 0``.

    ``W > m`` keeps any ``W`` holders from hiding behind ``m`` silent nodes; ``W >= k`` keeps a
    committed version decodable. A replicated object (``k = 1``) needs all ``m + 1`` copies.

    Raises:
        ValueError: ``k < 1`` or ``m < 0``.
    """
    _check(k, m)
    return max(k, m) + 1 if m > 0 else k


def home_write_quorum(home: ClusterMap, k: int, m: int) -> int:
    """The write quorum of a ``k+m`` version written under ``home``, a key's home set (:func:`home_map`).

    ``W`` (:func:`write_quorum`) less one for each node of ``home`` in ``maintenance``, but never
    below ``max(k, m + 1)`` (``k`` when ``m = 0``): a planned outage does not stop writes, and what
    it excused is still decodable and cannot hide behind ``m`` silent nodes.

    Raises:
        ValueError: ``k < 1`` or ``m < 0``.
    """
    quorum = write_quorum(k, m)
    floor = max(k, m + 1) if m > 0 else k
    away = sum(1 for node in home.nodes if node.state == "maintenance")
    return max(quorum - away, floor)


def home_size(k: int, m: int) -> int:
    """How many top-ranked nodes form a key's home set: ``n + m``, with ``n = k + m``."""
    _check(k, m)
    return k + 2 * m


def read_candidate_count(k: int, m: int) -> int:
    """How many top-ranked nodes a reader of a ``k+m`` version asks: ``n + 2m``, with ``n = k + m``."""
    _check(k, m)
    return k + 3 * m


def schemes_of(k: int, m: int) -> tuple[Scheme, ...]:
    """The schemes a writer configured with EC ``k+m`` may use: coded ``(k, m)``, replicated ``(1, m)``."""
    _check(k, m)
    return ((k, m),) if k == 1 else ((k, m), (1, m))


def smallest_quorum(schemes: Iterable[Scheme]) -> int:
    """``W_min``: the smallest write quorum among ``schemes``.

    Raises:
        ValueError: no scheme given, or one out of range.
    """
    quorums = [write_quorum(k, m) for k, m in schemes]
    if not quorums:
        raise ValueError("smallest_quorum needs at least one scheme")
    return min(quorums)


def ranking(key: str, cluster_map: ClusterMap) -> list[Node]:
    """``R``: the key's HRW ranking over the map's nodes in every state but ``out`` and ``decommissioned``."""
    return rank(key, (node for node in cluster_map.nodes if node.state not in _UNRANKED))


def ranking_prefix(key: str, cluster_map: ClusterMap, count: int) -> list[Node]:
    """``ranking(key, cluster_map)[:count]``, from an index of the map's ranked nodes made once per map."""
    return cluster_map.memo("ranking", _ranking_index).top(key, count)


def _ranking_index(cluster_map: ClusterMap) -> RankIndex:
    return RankIndex(node for node in cluster_map.nodes if node.state not in _UNRANKED)


def home_set(key: str, cluster_map: ClusterMap, k: int, m: int) -> tuple[str, ...]:
    """The ids of the first ``n + m`` nodes of ``R``: where every fragment of a ``k+m`` version goes."""
    return tuple(node.id for node in ranking_prefix(key, cluster_map, home_size(k, m)))


def home_map(key: str, cluster_map: ClusterMap, k: int, m: int) -> ClusterMap:
    """The map restricted to the key's home set (same epoch), for :func:`placement.place` and ``plan_moves``."""
    return ClusterMap(cluster_map.epoch, tuple(ranking_prefix(key, cluster_map, home_size(k, m))))


def read_candidates(key: str, cluster_map: ClusterMap, schemes: Iterable[Scheme]) -> tuple[str, ...]:
    """The ids of the first ``max(n + 2m)`` nodes of ``R`` over ``schemes``: whom a reader must ask.

    Raises:
        ValueError: no scheme given, or one out of range.
    """
    counts = [read_candidate_count(k, m) for k, m in schemes]
    if not counts:
        raise ValueError("read_candidates needs at least one scheme")
    return tuple(node.id for node in ranking_prefix(key, cluster_map, max(counts)))


@dataclass(frozen=True)
class Proof:
    """What the answers of one read or listing prove.

    Attributes:
        candidates: The nodes that had to be asked.
        unreached: The candidates that did not answer (``U``), in candidate order.
        quorum: ``W_min``, the smallest write quorum a writer could have used.
    """

    candidates: tuple[str, ...]
    unreached: tuple[str, ...]
    quorum: int

    @property
    def proven(self) -> bool:
        """True when ``|U| < W_min``: no committed generation can hide in the silent nodes alone."""
        return len(self.unreached) < self.quorum


def prove(candidates: Sequence[str], answered: Collection[str], schemes: Iterable[Scheme]) -> Proof:
    """Whether the ``answered`` nodes among ``candidates`` rule out an unseen committed generation.

    Args:
        candidates: The nodes a reader must ask (:func:`read_candidates`).
        answered: The nodes that answered (others, asked or not, count as silent).
        schemes: Every scheme a writer of the key could have used.

    Raises:
        ValueError: no scheme given, or one out of range.
    """
    unreached = tuple(node for node in candidates if node not in answered)
    return Proof(tuple(candidates), unreached, smallest_quorum(schemes))


def listing_proof(cluster_map: ClusterMap, answered: Collection[str], schemes: Iterable[Scheme]) -> Proof:
    """Whether a listing that heard from ``answered`` is complete: every node but the out and decommissioned counts.

    Every committed generation of every key has ``>= W_min`` holders among those nodes, so with
    fewer than ``W_min`` of them silent, each key's newest generation answers from somewhere.

    Raises:
        ValueError: no scheme given, or one out of range.
    """
    everyone = [node.id for node in cluster_map.nodes if node.state not in _UNRANKED]
    return prove(everyone, answered, schemes)
