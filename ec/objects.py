"""Whole-object encoding in memory (pure).

Composes :mod:`ec.stripe` and a :class:`~ec.codec.Codec` into the two
directions a small in-memory put or get needs, and that tests use to check the
codec end to end: an object becomes ``k + m`` fragments (each a list of one
chunk per stripe), and any ``k`` fragments give the object back.

Large objects are streamed by ``hcstore`` stripe by stripe with the same
building blocks (:func:`ec.stripe.split_stripe`, :meth:`Codec.encode`,
:meth:`Codec.decode`, :func:`ec.stripe.join_data`); these helpers hold the
whole object and all fragments in memory at once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ec.buffer import Buffer, byte_view
from ec.checksum import chunk_digest
from ec.codec import Codec
from ec.errors import DecodeError
from ec.stripe import StripeLayout, join_data, split_stripe

__all__ = ["decode_object", "encode_object", "fragment_digests"]


def encode_object(data: Buffer, codec: Codec, chunk_size: int) -> list[list[Buffer]]:
    """Cut an object into stripes and encode every stripe.

    Args:
        data: The object bytes.
        codec: The codec (gives ``k`` and ``m``).
        chunk_size: Bytes per chunk.

    Returns:
        ``k + m`` fragments; fragment ``i`` is the list of chunk ``i`` of each
        stripe, in stripe order. Data chunks of full stripes are views of ``data``.
    """
    view = byte_view(data)
    layout = StripeLayout(view.nbytes, codec.k, chunk_size)
    fragments: list[list[Buffer]] = [[] for _ in range(codec.n)]
    for stripe in range(layout.stripes):
        offset, length = layout.stripe_span(stripe)
        chunks: list[Buffer] = list(split_stripe(view[offset : offset + length], codec.k, chunk_size))
        for fragment, chunk in zip(fragments, chunks + codec.encode(chunks), strict=True):
            fragment.append(chunk)
    return fragments


def decode_object(fragments: Mapping[int, Sequence[Buffer]], codec: Codec, size: int, chunk_size: int) -> bytes:
    """Rebuild an object from at least ``k`` of its fragments.

    Args:
        fragments: Fragments keyed by index; each a sequence of one chunk per stripe.
        codec: The codec that wrote the object.
        size: Object size in bytes.
        chunk_size: Bytes per chunk.

    Returns:
        The object bytes.

    Raises:
        DecodeError: Fewer than ``k`` fragments, or a fragment with the wrong
            number of chunks.
    """
    layout = StripeLayout(size, codec.k, chunk_size)
    short = {i: len(chunks) for i, chunks in fragments.items() if len(chunks) != layout.stripes}
    if short:
        raise DecodeError(f"fragments must hold {layout.stripes} chunks each, got {short}")
    parts = []
    for stripe in range(layout.stripes):
        data = codec.decode({i: chunks[stripe] for i, chunks in fragments.items()})
        parts.append(join_data(data, layout.stripe_span(stripe)[1]))
    return b"".join(parts)


def fragment_digests(chunks: Sequence[Buffer]) -> bytes:
    """Return the ``digests`` field for a fragment: each chunk's digest, concatenated.

    Args:
        chunks: The fragment's chunks in stripe order.

    Returns:
        ``32 * len(chunks)`` bytes.
    """
    return b"".join(chunk_digest(chunk) for chunk in chunks)
