"""Fragment headers as they are sent to agents: the one place that builds them (pure: no I/O).

A put, a repair and a delete all tell agents what a fragment's trailer says. What
every fragment of one object version shares is a :class:`VersionLayout`;
:func:`fragment_header` adds a fragment's index and the placement (the node
holding each index) and returns the map that ``store``, ``prepare`` and
``tombstone`` requests carry.

A data header leaves out ``digests``: the agent fills them in from the chunks it
received and wrote, so a header never vouches for bytes its sender did not see
arrive. A tombstone has no chunks, and its (empty) digests are sent as they are.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ec import DIGEST_SIZE, FragmentFormatError, FragmentHeader, header_to_dict
from hcstore.errors import InvalidRequest

TOMBSTONE_CHUNK_SIZE = 64
"""The chunk size a tombstone header names (it has no chunks; any valid size would do)."""


@dataclass(frozen=True)
class VersionLayout:
    """What every fragment header of one object version says, apart from its index and placement.

    Attributes:
        bucket: Bucket name.
        key: Object key.
        generation: The version's generation.
        codec: Codec name (``"replica"`` for replicated objects and tombstones).
        k: Data fragments per stripe.
        m: Parity fragments per stripe.
        chunk_size: Bytes per chunk.
        size: Object size in bytes.
        stripes: Chunks in each fragment.
        meta: User metadata.
        kind: ``"data"`` or ``"tombstone"``.
    """

    bucket: str
    key: str
    generation: str
    codec: str
    k: int
    m: int
    chunk_size: int
    size: int
    stripes: int
    meta: Mapping[str, str] = field(default_factory=dict)
    kind: str = "data"

    @property
    def fragments(self) -> int:
        """How many fragments the version has (``k + m``)."""
        return self.k + self.m


def tombstone_layout(bucket: str, key: str, generation: str, holders: int) -> VersionLayout:
    """The layout of a delete: a tombstone replicated on ``holders`` nodes.

    Args:
        bucket: Bucket name.
        key: Object key.
        generation: The tombstone's generation (newer than every version it hides).
        holders: How many nodes receive a tombstone fragment.
    """
    return VersionLayout(
        bucket=bucket,
        key=key,
        generation=generation,
        codec="replica",
        k=1,
        m=holders - 1,
        chunk_size=TOMBSTONE_CHUNK_SIZE,
        size=0,
        stripes=0,
        kind="tombstone",
    )


def fragment_header(layout: VersionLayout, index: int, placement: Sequence[str]) -> dict[str, Any]:
    """The header fields of fragment ``index`` of ``layout``, as a request carries them.

    Args:
        layout: What all fragments of the version share.
        index: The fragment's index, ``0 <= index < k + m``.
        placement: The node holding each fragment index, ``k + m`` entries (``""`` where none).

    Returns:
        :func:`ec.header_to_dict`'s map, with a fresh ``created_ns``; a data header has no
        ``digests`` (the receiving agent adds the digests it computed).

    Raises:
        InvalidRequest: a field is invalid (named in the message), such as metadata larger than a header holds.
    """
    try:
        header = FragmentHeader(
            bucket=layout.bucket,
            key=layout.key,
            generation=layout.generation,
            kind=layout.kind,
            codec=layout.codec,
            k=layout.k,
            m=layout.m,
            chunk_size=layout.chunk_size,
            size=layout.size,
            index=index,
            stripes=layout.stripes,
            digests=bytes(DIGEST_SIZE * layout.stripes),
            placement=tuple(placement),
            created_ns=time.time_ns(),
            meta=layout.meta,
        )
    except FragmentFormatError as exc:
        raise InvalidRequest(f"{layout.bucket}/{layout.key}: {exc}") from None
    fields = header_to_dict(header)
    if layout.kind == "data":
        del fields["digests"]
    return fields
