"""Replication as a degenerate systematic code (``k = 1``).

Small objects are stored as ``m + 1`` identical copies instead of being coded:
the same tolerance of ``m`` lost fragments at a lower cost for tiny objects, and
any single fragment answers a read. Fragment 0 is the data chunk; each parity
"chunk" is that same object, returned without copying.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ec.buffer import Buffer
from ec.codec import Codec

__all__ = ["ReplicaCodec"]


class ReplicaCodec(Codec):
    """``m + 1`` copies of one data chunk."""

    name = "replica"

    def __init__(self, k: int, m: int) -> None:
        if k != 1:
            raise ValueError(f"replica codec needs k == 1 (one data chunk copied m times), got k={k!r}")
        super().__init__(k, m)

    @classmethod
    def supports(cls, k: int, m: int) -> bool:
        """Tell whether ``k+m`` is a replica layout (``k == 1``)."""
        return k == 1

    def _encode(self, data: Sequence[Buffer]) -> list[Buffer]:
        return [data[0]] * self.m

    def _decode(self, chunks: Mapping[int, Buffer]) -> list[Buffer]:
        return [chunks[min(chunks)]]
