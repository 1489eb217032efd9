"""Reed-Solomon codec on zfec, the default codec.

zfec's encoder is systematic: its primary blocks are the data chunks
unchanged, and secondary blocks ``k..n-1`` are parity. zfec reads chunks
through the buffer protocol, so memoryviews into a stripe buffer or a received
frame are coded without copying.

``zfec.Encoder``/``zfec.Decoder`` objects hold only the coding matrix; one pair
is cached per ``(k, m)`` and shared by every codec instance and thread.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence

import zfec

from ec.buffer import Buffer
from ec.codec import Codec

__all__ = ["ZfecCodec"]


@functools.lru_cache(maxsize=64)
def _coders(k: int, m: int) -> tuple[zfec.Encoder, zfec.Decoder]:
    return zfec.Encoder(k, k + m), zfec.Decoder(k, k + m)


class ZfecCodec(Codec):
    """Systematic Reed-Solomon over GF(2^8) from zfec."""

    name = "zfec"

    def __init__(self, k: int, m: int) -> None:
        super().__init__(k, m)
        self._encoder, self._decoder = _coders(k, m)
        self._parity_nums = tuple(range(k, k + m))

    def _encode(self, data: Sequence[Buffer]) -> list[Buffer]:
        return list(self._encoder.encode(tuple(data), self._parity_nums))

    def _decode(self, chunks: Mapping[int, Buffer]) -> list[Buffer]:
        # Data chunks first: zfec then rebuilds from the fewest parity chunks.
        nums = sorted(chunks)[: self.k]
        return list(self._decoder.decode(tuple(chunks[i] for i in nums), tuple(nums)))
