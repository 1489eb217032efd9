"""Byte-buffer helpers shared by the codec and stripe modules.

Chunks travel through hcstore as ``bytes``, ``bytearray`` or ``memoryview``
(ZeroMQ frames, slices of a reusable stripe buffer, numpy arrays viewed as
bytes). These helpers give one flat, byte-addressed :class:`memoryview` over any
of them without copying, so that lengths are byte counts and slicing is free.
"""

from __future__ import annotations

from typing import TypeAlias

__all__ = ["Buffer", "byte_view", "nbytes"]

#: Anything that exposes a C-contiguous buffer: ``bytes``, ``bytearray``,
#: ``memoryview`` (and numpy arrays, which satisfy the buffer protocol).
Buffer: TypeAlias = bytes | bytearray | memoryview


def byte_view(buf: Buffer) -> memoryview:
    """Return a flat, unsigned-byte memoryview over ``buf`` without copying.

    Args:
        buf: Any object supporting the buffer protocol, C-contiguous.

    Returns:
        A one-dimensional memoryview of format ``"B"`` sharing ``buf``'s memory.

    Raises:
        TypeError: ``buf`` does not support the buffer protocol, or is not
            C-contiguous.
    """
    view = buf if isinstance(buf, memoryview) else memoryview(buf)
    if view.format == "B" and view.ndim == 1:
        return view
    if not view.c_contiguous:
        raise TypeError(f"buffer must be C-contiguous, got a {type(buf).__name__} that is not")
    return view.cast("B")


def nbytes(buf: Buffer) -> int:
    """Return the size of ``buf`` in bytes (not in items).

    Args:
        buf: Any object supporting the buffer protocol.

    Returns:
        The number of bytes ``buf`` exposes.
    """
    if isinstance(buf, (bytes, bytearray)):
        return len(buf)
    return memoryview(buf).nbytes
