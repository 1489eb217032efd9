"""Which fragments a reader fetches first, and which it keeps in reserve.

A read needs any ``k`` of an object's ``k + m`` fragments. Which ``k`` matters:

* A fragment on the reader's own node costs no network transfer.
* Data fragments (index ``< k``) of a systematic code are the plain bytes: when all ``k``
  data fragments answer, the reader concatenates them and decodes nothing.
* Among the rest, nodes that answer faster finish the read sooner.

:func:`plan_read` orders the known fragments by exactly these preferences: local first,
then data before parity, then ascending latency (when known; nodes without a latency
estimate come after those with one), then fragment index. The first ``k`` form
``primary``; the rest are ``spares``, used in order to replace a fragment that is missing,
corrupt or slow. Fragments on nodes the caller marks ``unavailable`` never enter
``primary`` and sit at the very end of ``spares``, in the same order: such a node may
come back, and a read that has nothing better left should still try it.

The plan is a value, printable and testable; the client executes it.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

__all__ = ["ReadPlan", "plan_read"]


@dataclass(frozen=True)
class ReadPlan:
    """Fragment indices to read, in order.

    Attributes:
        primary: Up to ``k`` fragment indices to read first (fewer when fewer fragments
            are available).
        spares: The other known fragment indices, in replacement order; fragments on
            unavailable nodes come last.
    """

    primary: tuple[int, ...]
    spares: tuple[int, ...]

    @property
    def decode_free(self) -> bool:
        """Whether the primary fragments are exactly the data fragments ``0..k-1``."""
        return sorted(self.primary) == list(range(len(self.primary)))


def plan_read(
    locations: Sequence[str],
    k: int,
    *,
    local_node: str | None = None,
    unavailable: Collection[str] = (),
    latency: Mapping[str, float] | None = None,
) -> ReadPlan:
    """Plan which fragments of an object to read.

    Args:
        locations: ``locations[i]`` is the node holding fragment ``i``; ``""`` means
            unknown or not stored, and such fragments are never planned.
        k: Number of data fragments; a read needs ``k`` fragments.
        local_node: The reader's own node id, whose fragments are read first.
        unavailable: Node ids believed unreachable; their fragments go last.
        latency: Expected latency per node id (any unit; lower is better). Nodes
            missing from it, or with a NaN latency, sort after every known latency.

    Returns:
        The read plan.

    Raises:
        ValueError: If ``k`` is not an int >= 1.
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be an int >= 1, got {k!r}")
    down = frozenset(unavailable)
    latency = latency or {}

    def preference(index: int) -> tuple[bool, bool, bool, float, int]:
        node = locations[index]
        delay = latency.get(node, math.inf)
        if math.isnan(delay):
            delay = math.inf
        return (
            node in down,
            local_node is None or node != local_node,
            index >= k,
            delay,
            index,
        )

    order = sorted((i for i, node in enumerate(locations) if node), key=preference)
    available = sum(1 for i in order if locations[i] not in down)
    take = min(k, available)
    return ReadPlan(primary=tuple(order[:take]), spares=tuple(order[take:]))
