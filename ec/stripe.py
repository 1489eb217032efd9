"""Stripe and fragment arithmetic (pure).

An object of ``size`` bytes is cut into **stripes** of ``k * chunk_size`` bytes.
Stripe ``j`` covers object bytes ``[j * k * chunk_size, (j + 1) * k * chunk_size)``
and is split into ``k`` data chunks of ``chunk_size`` bytes; the codec adds
``m`` parity chunks. **Fragment** ``i`` of the object is chunk ``i`` of every
stripe, laid end to end, so every fragment holds exactly
``stripes * chunk_size`` payload bytes.

Invariants:

- Only the last stripe may be short; it is zero-padded to ``k * chunk_size``
  before encoding, and the padding is part of the stored chunks (and of their
  digests). The object size, recorded in every fragment header, says where the
  real bytes end.
- An empty object has zero stripes and empty fragments.
- ``chunk_size`` is chosen once per object by :func:`chunk_size_for`: small
  objects get small chunks (rounded up to :data:`CHUNK_ALIGN` bytes, which SIMD
  codecs like), large or streamed ones get ``max_chunk``.

Nothing here allocates more than the one reusable stripe buffer a caller hands
in; full-length stripes are cut into zero-copy memoryviews.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ec.buffer import Buffer, byte_view

__all__ = [
    "CHUNK_ALIGN",
    "DEFAULT_CHUNK_SIZE",
    "StripeLayout",
    "chunk_size_for",
    "join_data",
    "split_stripe",
]

#: Chunk size used for large and streamed objects (1 MiB).
DEFAULT_CHUNK_SIZE = 1 << 20
#: Every chunk size chosen by :func:`chunk_size_for` is a multiple of this.
CHUNK_ALIGN = 64


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _check_int(name: str, value: object, minimum: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def chunk_size_for(size: int | None, k: int, max_chunk: int = DEFAULT_CHUNK_SIZE) -> int:
    """Choose the chunk size for an object.

    Args:
        size: Object size in bytes, or ``None`` when unknown (streaming).
        k: Data chunks per stripe.
        max_chunk: Largest chunk size; a positive multiple of :data:`CHUNK_ALIGN`.

    Returns:
        ``max_chunk`` when ``size`` is ``None``. Otherwise the smallest aligned
        chunk that cuts the object into as few stripes as ``max_chunk`` allows,
        all of them (nearly) full: with ``s = ceil(size / (k * max_chunk))``
        stripes, ``ceil(size / (k * s))`` rounded up to :data:`CHUNK_ALIGN`, at
        least :data:`CHUNK_ALIGN`. Padding is then under ``k * CHUNK_ALIGN``
        bytes per stripe instead of up to a whole stripe, so a 10 MiB object
        in 4+2 with 1 MiB chunks is 3 stripes of 853.4 KiB chunks, not 3 of 1 MiB.

    Raises:
        ValueError: ``size`` is negative, ``k`` < 1, or ``max_chunk`` is not a
            positive multiple of :data:`CHUNK_ALIGN`.
    """
    _check_int("k", k, 1)
    _check_int("max_chunk", max_chunk, CHUNK_ALIGN)
    if max_chunk % CHUNK_ALIGN:
        raise ValueError(f"max_chunk must be a multiple of {CHUNK_ALIGN}, got {max_chunk}")
    if size is None:
        return max_chunk
    _check_int("size", size, 0)
    stripes = max(1, _ceil_div(size, k * max_chunk))
    per_chunk = _ceil_div(size, k * stripes)
    aligned = _ceil_div(per_chunk, CHUNK_ALIGN) * CHUNK_ALIGN
    return min(max_chunk, max(CHUNK_ALIGN, aligned))


@dataclass(frozen=True)
class StripeLayout:
    """How an object of ``size`` bytes maps onto stripes and fragments.

    Attributes:
        size: Object size in bytes (>= 0).
        k: Data chunks per stripe (>= 1).
        chunk_size: Bytes per chunk (>= 1).
    """

    size: int
    k: int
    chunk_size: int

    def __post_init__(self) -> None:
        _check_int("size", self.size, 0)
        _check_int("k", self.k, 1)
        _check_int("chunk_size", self.chunk_size, 1)

    @property
    def stripe_bytes(self) -> int:
        """Object bytes covered by one full stripe (``k * chunk_size``)."""
        return self.k * self.chunk_size

    @property
    def stripes(self) -> int:
        """Number of stripes (``ceil(size / stripe_bytes)``; 0 for an empty object)."""
        return _ceil_div(self.size, self.stripe_bytes)

    @property
    def fragment_bytes(self) -> int:
        """Payload bytes in every fragment (``stripes * chunk_size``)."""
        return self.stripes * self.chunk_size

    def stripe_span(self, stripe: int) -> tuple[int, int]:
        """Return where a stripe's real bytes lie in the object.

        Args:
            stripe: Stripe number, ``0 <= stripe < stripes``.

        Returns:
            ``(offset, length)`` of the object bytes in that stripe; ``length``
            is ``stripe_bytes`` except for a short last stripe.

        Raises:
            ValueError: ``stripe`` is out of range.
        """
        if not isinstance(stripe, int) or isinstance(stripe, bool) or not 0 <= stripe < self.stripes:
            raise ValueError(f"stripe must be in [0, {self.stripes}), got {stripe!r}")
        offset = stripe * self.stripe_bytes
        return offset, min(self.stripe_bytes, self.size - offset)

    def stripes_for_range(self, offset: int, length: int) -> range:
        """Return the stripes that hold object bytes ``[offset, offset + length)``.

        Args:
            offset: First byte wanted, ``0 <= offset <= size``.
            length: Bytes wanted, ``>= 0`` with ``offset + length <= size``.

        Returns:
            A range of stripe numbers; empty when ``length`` is 0.

        Raises:
            ValueError: The range is negative or runs past the end of the object.
        """
        _check_int("offset", offset, 0)
        _check_int("length", length, 0)
        if offset + length > self.size:
            raise ValueError(f"range [{offset}, {offset + length}) runs past the object end ({self.size} bytes)")
        if length == 0:
            return range(0)
        first = offset // self.stripe_bytes
        last = (offset + length - 1) // self.stripe_bytes
        return range(first, last + 1)


def split_stripe(data: Buffer, k: int, chunk_size: int, out: bytearray | None = None) -> list[memoryview]:
    """Cut up to one stripe of object bytes into ``k`` chunks of ``chunk_size``.

    A full-length stripe is cut into views of ``data`` (no copy). A short one is
    copied into a stripe buffer and zero-padded: into ``out`` when given (a
    reusable ``bytearray`` of exactly ``k * chunk_size`` bytes), else into a new
    one. The returned views into ``out`` change when ``out`` is reused.

    Args:
        data: At most ``k * chunk_size`` bytes.
        k: Data chunks per stripe.
        chunk_size: Bytes per chunk.
        out: Optional reusable stripe buffer for the padded case.

    Returns:
        ``k`` memoryviews of ``chunk_size`` bytes each.

    Raises:
        ValueError: ``data`` is longer than a stripe, ``k``/``chunk_size`` are
            not positive, or ``out`` has the wrong length.
    """
    _check_int("k", k, 1)
    _check_int("chunk_size", chunk_size, 1)
    stripe_bytes = k * chunk_size
    view = byte_view(data)
    length = view.nbytes
    if length > stripe_bytes:
        raise ValueError(f"stripe data is {length} bytes, more than k * chunk_size = {stripe_bytes}")
    if length < stripe_bytes:
        if out is None:
            out = bytearray(stripe_bytes)
        elif len(out) != stripe_bytes:
            raise ValueError(f"out buffer is {len(out)} bytes, expected k * chunk_size = {stripe_bytes}")
        out[:length] = view
        out[length:] = bytes(stripe_bytes - length)
        view = memoryview(out)
    return [view[i * chunk_size : (i + 1) * chunk_size] for i in range(k)]


def join_data(chunks: Sequence[Buffer], length: int) -> bytes:
    """Concatenate data chunks and cut the result to the stripe's real length.

    Args:
        chunks: The ``k`` data chunks of a stripe, in order.
        length: Real bytes in the stripe (drops the zero padding of a short
            last stripe).

    Returns:
        The first ``length`` bytes of the concatenation (one copy).

    Raises:
        ValueError: ``length`` is negative or exceeds the chunks' total size.
    """
    _check_int("length", length, 0)
    parts: list[memoryview] = []
    remaining = length
    for chunk in chunks:
        if remaining == 0:
            break
        view = byte_view(chunk)
        parts.append(view[:remaining])
        remaining -= min(remaining, view.nbytes)
    if remaining:
        raise ValueError(f"chunks hold {length - remaining} bytes, fewer than length {length}")
    return b"".join(parts)
