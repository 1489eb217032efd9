"""How much of an agent one client (peer) may hold with open uploads, so that no peer starves the others.

An upload holds a file descriptor while it is open and, when it declares its size, reserves that room on
its mountpath before a byte arrives (so that a full node refuses at once). Both are finite, and a peer that
opened uploads without end, or declared the node's whole free space, would leave nothing to everyone else.
:class:`PeerLimits` decides what a new upload of one peer may have:

* at most ``max_uploads`` open uploads per peer (:data:`MAX_UPLOADS_PER_PEER`);
* at most ``reserve_share`` of the node's room (:data:`PEER_RESERVE_SHARE`) reserved *ahead of its writes*:
  bytes promised to its open uploads and not written yet. Bytes that have arrived are data like any other
  and do not count. An upload that declares more than what is left of its peer's share still opens, with
  the reservation cut to that rest; it grows as its chunks arrive, like an upload that declared nothing, and
  meets :class:`~hcstore.errors.StoreFull` only if the node truly fills. A peer holding no reservation may
  always start one upload with its first chunk reserved, so that a nearly full node still takes small writes.

A peer is who :func:`hcstore.wire.server.peer_of` says sent the request: the authenticated user id (the
client's public key) where there is one, else its IP address. Over the limit, the agent answers
:class:`~hcstore.errors.PeerLimitReached` (``E_PEER_LIMIT``), which is retryable.
"""

from __future__ import annotations

from dataclasses import dataclass

from hcstore.errors import InvalidRequest, PeerLimitReached

MAX_UPLOADS_PER_PEER = 1024
"""Open uploads one peer may hold on one agent at once."""
PEER_RESERVE_SHARE = 0.25
"""The share of a node's room for new data that one peer may hold reserved ahead of its writes."""


@dataclass(frozen=True)
class PeerLimits:
    """The limits on what one peer's open uploads may hold on an agent (pure: the store keeps the counts).

    Attributes:
        max_uploads: open uploads per peer.
        reserve_share: share of the node's room for new data that one peer may hold reserved ahead of its writes.
    """

    max_uploads: int = MAX_UPLOADS_PER_PEER
    reserve_share: float = PEER_RESERVE_SHARE

    def __post_init__(self) -> None:
        if self.max_uploads < 1:
            raise InvalidRequest(f"max_uploads must be at least 1, got {self.max_uploads}")
        if not 0 < self.reserve_share <= 1:
            raise InvalidRequest(f"reserve_share must be in (0, 1], got {self.reserve_share}")

    def admit(self, peer: str, uploads: int, *, node: str = "") -> None:
        """Check that ``peer``, holding ``uploads`` open uploads, may open one more.

        Args:
            peer: who opens the upload (named in the error).
            uploads: the peer's open uploads on this node.
            node: the node's id, for the error message.

        Raises:
            PeerLimitReached: the peer holds ``max_uploads`` open uploads already.
        """
        if uploads >= self.max_uploads:
            raise PeerLimitReached(
                f"{_where(node)}: peer {peer} has {uploads} open uploads, the most one peer may hold "
                f"(limit {self.max_uploads} per peer); finish or abort some, then send again"
            )

    def grant(self, peer: str, *, ahead: int, want: int, least: int, room: int, node: str = "") -> int:
        """The bytes a new upload of ``peer`` may reserve: ``want``, cut to what is left of the peer's share.

        Args:
            peer: who opens the upload (named in the error).
            ahead: bytes the peer's open uploads hold reserved beyond what they have written.
            want: bytes the new upload asks for (its declared size and the file's framing).
            least: the fewest bytes it can start with (its first chunk and the framing); at most ``want``.
            room: the node's room for new data, every reservation already deducted.
            node: the node's id, for the error message.

        Returns:
            Between ``least`` and ``want`` bytes.

        Raises:
            PeerLimitReached: the peer's reservations leave no room in its share for the new upload's
                first chunk.
        """
        share = int(self.reserve_share * (max(room, 0) + ahead))
        left = share - ahead
        if left >= want:
            return want
        if left >= least:
            return left
        if ahead <= 0:
            return least  # every peer may start one upload; the node's own watermark was checked already
        raise PeerLimitReached(
            f"{_where(node)}: peer {peer} holds {ahead} bytes reserved by its open uploads ahead of their writes, "
            f"its whole share (limit {self.reserve_share:.0%} of the node's room per peer: {share} bytes); "
            "send again once its uploads make progress or finish"
        )


def _where(node: str) -> str:
    return f"node {node}" if node else "this node"
