"""The codec interface and ``k+m`` validation (selection is in :mod:`ec.codecs`).

A :class:`Codec` turns the ``k`` data chunks of one stripe into ``m`` parity
chunks and back. Every codec here is **systematic** at the level of our chunks:
fragments ``0..k-1`` of a stripe are the plain data chunks, byte for byte, and
fragments ``k..k+m-1`` are parity. So a reader that gets all data fragments
never decodes, and a codec's own framing (pyeclib headers, padding) never
reaches disk.

Codecs:

- ``"zfec"``: Reed-Solomon from zfec (the default; always installed).
- ``"replica"``: ``k = 1``; each parity chunk is the data chunk itself. Used for
  small objects, where ``m + 1`` copies cost less than coding.
- ``"isal"``: Reed-Solomon from Intel ISA-L through pyeclib (optional extra
  ``hcstore[isal]``), several times faster than zfec.

Different codecs produce different parity for the same data, so the codec that
wrote an object is recorded in every fragment trailer, and a reader always
decodes with ``ec.codecs.make_codec(trailer.codec, trailer.k, trailer.m)``.
:func:`ec.codecs.default_codec_name` only chooses the codec for *new* writes.

Input checking lives here (template methods :meth:`Codec.encode` and
:meth:`Codec.decode`), so each implementation only does the arithmetic.
Codec objects hold no per-call state and may be shared between threads.
"""

from __future__ import annotations

import abc
import re
from collections.abc import Callable, Mapping, Sequence

from ec.buffer import Buffer, nbytes
from ec.errors import DecodeError

__all__ = [
    "MAX_K",
    "MAX_M",
    "Codec",
    "parse_ec",
    "validate_km",
]

#: Largest number of data chunks per stripe.
MAX_K = 128
#: Largest number of parity chunks per stripe (``k + m`` stays within zfec's 256).
MAX_M = 64

_EC_SPEC = re.compile(r"\s*(\d+)\s*\+\s*(\d+)\s*")


def validate_km(k: int, m: int) -> None:
    """Check that ``k`` and ``m`` are within the supported range.

    Args:
        k: Data chunks per stripe, ``1 <= k <= MAX_K``.
        m: Parity chunks per stripe, ``0 <= m <= MAX_M``.

    Raises:
        ValueError: Naming the bad value.
    """
    for name, value, low, high in (("k", k, 1, MAX_K), ("m", m, 0, MAX_M)):
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            raise ValueError(f"{name} must be an integer in [{low}, {high}], got {value!r}")


def parse_ec(spec: str) -> tuple[int, int]:
    """Parse an erasure-coding spec such as ``"4+2"``.

    Args:
        spec: ``"<k>+<m>"`` with decimal integers.

    Returns:
        ``(k, m)``.

    Raises:
        ValueError: The spec is malformed or ``k``/``m`` are out of range; the
            message quotes the spec.
    """
    match = _EC_SPEC.fullmatch(spec) if isinstance(spec, str) else None
    if match is None:
        raise ValueError(f"erasure-coding spec must look like '4+2' (k+m), got {spec!r}")
    k, m = int(match.group(1)), int(match.group(2))
    try:
        validate_km(k, m)
    except ValueError as exc:
        raise ValueError(f"erasure-coding spec {spec!r}: {exc}") from None
    return k, m


class Codec(abc.ABC):
    """A systematic erasure code over the chunks of one stripe.

    Attributes:
        name: Codec name as recorded in fragment trailers.
        k: Data chunks per stripe.
        m: Parity chunks per stripe.
    """

    name: str
    k: int
    m: int

    def __init__(self, k: int, m: int) -> None:
        validate_km(k, m)
        self.k = k
        self.m = m

    @classmethod
    def available(cls) -> bool:
        """Tell whether this codec's library is installed and working."""
        return True

    @classmethod
    def supports(cls, k: int, m: int) -> bool:
        """Tell whether this codec can code ``k+m`` (already range-checked)."""
        return True

    @property
    def n(self) -> int:
        """Total chunks per stripe (``k + m``)."""
        return self.k + self.m

    def __repr__(self) -> str:
        return f"{type(self).__name__}(k={self.k}, m={self.m})"

    def __reduce__(self) -> tuple[Callable[..., Codec], tuple[int, int]]:
        # Rebuild from (k, m) in another process: library handles are not
        # picklable, and the constructor recreates them.
        return type(self), (self.k, self.m)

    def encode(self, data: Sequence[Buffer]) -> list[Buffer]:
        """Compute the parity chunks of one stripe.

        Args:
            data: Exactly ``k`` data chunks of equal length (``bytes``,
                ``bytearray`` or ``memoryview``); they are fragments ``0..k-1``.

        Returns:
            The ``m`` parity chunks, fragments ``k..k+m-1`` in order (empty
            when ``m`` is 0).

        Raises:
            ValueError: Not exactly ``k`` chunks, or their lengths differ.
        """
        if len(data) != self.k:
            raise ValueError(f"{self.name} {self.k}+{self.m} encodes {self.k} data chunks, got {len(data)}")
        sizes = {nbytes(chunk) for chunk in data}
        if len(sizes) != 1:
            raise ValueError(f"data chunks must have equal lengths, got lengths {sorted(sizes)}")
        if self.m == 0:
            return []
        return self._encode(data)

    def decode(self, chunks: Mapping[int, Buffer]) -> list[Buffer]:
        """Recover the data chunks of one stripe.

        When all of fragments ``0..k-1`` are present they are returned as given,
        with no decoding; otherwise the missing ones are rebuilt from parity.

        Args:
            chunks: At least ``k`` chunks of equal length, keyed by fragment
                index in ``[0, k + m)``. Extra chunks beyond ``k`` are allowed.

        Returns:
            The ``k`` data chunks, in order.

        Raises:
            DecodeError: Fewer than ``k`` chunks, an index out of range, or
                chunks of different lengths.
        """
        if len(chunks) < self.k:
            raise DecodeError(
                f"{self.name} {self.k}+{self.m} needs {self.k} chunks to decode, "
                f"got {len(chunks)} (indexes {sorted(chunks)})"
            )
        bad = [i for i in chunks if not isinstance(i, int) or not 0 <= i < self.n]
        if bad:
            raise DecodeError(f"chunk indexes must be in [0, {self.n}), got {bad}")
        sizes = {nbytes(chunk) for chunk in chunks.values()}
        if len(sizes) != 1:
            raise DecodeError(f"chunks must have equal lengths, got lengths {sorted(sizes)}")
        if all(i in chunks for i in range(self.k)):
            return [chunks[i] for i in range(self.k)]
        return self._decode(chunks)

    @abc.abstractmethod
    def _encode(self, data: Sequence[Buffer]) -> list[Buffer]:
        """Compute ``m >= 1`` parity chunks from ``k`` validated data chunks."""

    @abc.abstractmethod
    def _decode(self, chunks: Mapping[int, Buffer]) -> list[Buffer]:
        """Rebuild the data chunks from >= ``k`` validated chunks, some data missing."""
