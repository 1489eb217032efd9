"""Header fields too large for a header: one compressed payload frame each.

A cluster map of thousands of nodes (about 113 bytes per node, 229 with CurveZMQ keys) outgrows the
1 MiB header at a few thousand nodes, and so do the controller's per-node ages and reports. Such a
field travels as a *bulk frame*: its msgpack encoding, zlib-compressed, in a payload frame of its
own; the header's ``bulk`` list names the fields of the frames that follow it, in order
(:func:`hcstore.wire.protocol.with_bulk` and the decoders in that module).

A bulk frame is decoded within limits sized to the largest map (:data:`MAX_BULK_FRAME_BYTES`
compressed, :data:`MAX_BULK_BYTES` once inflated, and bounded arrays, maps and containers), so a
hostile frame costs at most a few hundred milliseconds and tens of megabytes, never the process.
"""

from __future__ import annotations

import zlib
from typing import Any

import msgpack

from hcstore.errors import MessageTooLarge, ProtocolError

MAX_BULK_FRAME_BYTES = 16 << 20  # one bulk frame as sent (compressed)
MAX_BULK_BYTES = 32 << 20  # one bulk field's msgpack encoding, inflated: 2 KiB per node of the largest map
COMPRESSION_LEVEL = 6  # a 10,000-node map: 1.1 MB to about a fifth of that, in tens of milliseconds, once per map


class _TooMany(Exception):
    """Raised inside msgpack's hooks to stop decoding a frame with too many maps and arrays."""


def compress(encoded: bytes) -> bytes:
    """A bulk frame of an encoded (msgpack) value."""
    return zlib.compress(encoded, COMPRESSION_LEVEL)


def decompress(frame: Any, name: str, *, max_items: int, max_containers: int) -> Any:
    """The value a bulk frame carries.

    Args:
        frame: the payload frame (bytes, or a ``zmq.Frame``).
        name: the field it carries, for errors.
        max_items: the most items of one array and entries of one map.
        max_containers: the most arrays and maps in all.

    Raises:
        MessageTooLarge: the frame, its inflated form or its arrays, maps or containers exceed the limits.
        ProtocolError: the frame is not zlib-compressed msgpack of one value.
    """
    data = frame.buffer if hasattr(frame, "buffer") else frame
    if len(data) > MAX_BULK_FRAME_BYTES:
        raise MessageTooLarge(f"bulk field {name!r}: frame of {len(data)} bytes exceeds {MAX_BULK_FRAME_BYTES}")
    inflater = zlib.decompressobj()
    try:
        encoded = inflater.decompress(data, MAX_BULK_BYTES)
    except zlib.error as exc:
        raise ProtocolError(f"bulk field {name!r} is not zlib-compressed: {exc}") from None
    if inflater.unconsumed_tail:
        raise MessageTooLarge(f"bulk field {name!r} inflates past {MAX_BULK_BYTES} bytes")
    if not inflater.eof or inflater.unused_data:
        raise ProtocolError(f"bulk field {name!r}: the compressed stream is truncated or followed by other bytes")
    containers = 0

    def count(value: Any) -> Any:
        nonlocal containers
        containers += 1
        if containers > max_containers:
            raise _TooMany
        return value

    try:
        return msgpack.unpackb(
            encoded,
            raw=False,
            strict_map_key=True,
            max_str_len=MAX_BULK_BYTES,
            max_bin_len=MAX_BULK_BYTES,
            max_array_len=max_items,
            max_map_len=max_items,
            max_ext_len=0,
            list_hook=count,
            object_hook=count,
        )
    except _TooMany:
        raise MessageTooLarge(f"bulk field {name!r} holds more than {max_containers} maps and arrays") from None
    except Exception as exc:  # noqa: BLE001 - msgpack raises several unrelated types for bad input
        if isinstance(exc, ValueError) and "exceeds max_" in str(exc):
            raise MessageTooLarge(f"bulk field {name!r}: {exc}") from None
        raise ProtocolError(f"bulk field {name!r} is not valid msgpack: {type(exc).__name__}") from None
