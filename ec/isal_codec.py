"""Reed-Solomon codec on Intel ISA-L, through pyeclib (optional).

ISA-L's SIMD kernels encode several times faster than zfec. It is reached
through pyeclib/liberasurecode, installed with the ``hcstore[isal]`` extra; when
pyeclib is missing or its ISA-L backend does not load, this codec reports itself
unavailable and :func:`ec.codec.default_codec_name` falls back to zfec.

**Systematic at our level.** liberasurecode frames every fragment as an
80-byte header followed by the payload, and pads the input to its alignment.
We feed it exactly one stripe of ``k * chunk_size`` bytes; ISA-L's alignment
for byte-wide codes is ``k`` bytes, so no padding is added, each fragment
payload is exactly ``chunk_size`` bytes, and data payloads are the data chunks
unchanged. Encoding strips the headers; decoding prepends the header
liberasurecode expects. The headers depend only on
``(k, m, chunk_size)`` and the library -- never on the data, since checksums
are off -- so they are taken once per chunk size from encoding a zero stripe
and cached. Nothing of pyeclib's framing is ever stored.

**Matrix choice.** The ``isa_l_rs_vand`` backend is not MDS for ``m >= 5``:
some ``k``-subsets of fragments cannot be decoded (e.g. ``6+5``). This codec
therefore uses ``isa_l_rs_cauchy``, whose Cauchy matrix makes any ``k``
fragments sufficient for every supported ``k+m``. The name ``"isal"`` in a
fragment trailer means exactly this code; changing the matrix would make old
parity unreadable.

**Segments.** Reed-Solomon codes each byte column of a stripe on its own, so
coding a stripe in column segments gives the same parity as coding it whole.
liberasurecode allocates fresh fragment buffers on every call; for 1 MiB chunks
glibc serves them with ``mmap`` and the page faults cost more than the coding
(about 0.5 GB/s instead of 5). Segments of :data:`SEGMENT_SIZE` bytes per chunk
keep every allocation on the heap, so chunks are coded in 32 KiB slices and the
results copied into the output chunks. Header templates are cached per segment
width (at most two widths per chunk size).

pyeclib holds the GIL while coding, so calls from several threads run one at
a time (correct, but not parallel).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence

from ec.buffer import Buffer, byte_view
from ec.codec import Codec
from ec.errors import CodecUnavailable, DecodeError, ECError

try:  # optional dependency
    from pyeclib.ec_iface import ECDriver
except ImportError:  # pragma: no cover - depends on the environment
    _HAVE_PYECLIB = False
else:
    _HAVE_PYECLIB = True

__all__ = ["ISAL_EC_TYPE", "ISAL_MAX_N", "SEGMENT_SIZE", "IsalCodec"]

#: The liberasurecode backend behind the ``"isal"`` codec name (frozen).
ISAL_EC_TYPE = "isa_l_rs_cauchy"
#: Largest ``k + m`` accepted (liberasurecode's historical fragment limit).
ISAL_MAX_N = 32
#: Chunks are coded in column segments of this many bytes (see the module docstring).
SEGMENT_SIZE = 32 << 10


@functools.lru_cache(maxsize=64)
def _driver(k: int, m: int) -> ECDriver:
    return ECDriver(k=k, m=m, ec_type=ISAL_EC_TYPE)


def _encode_stripe(k: int, m: int, stripe: bytes, chunk_size: int) -> tuple[list[bytes], int]:
    """Encode one stripe with liberasurecode; return fragments and header size."""
    fragments = _driver(k, m).encode(stripe)
    header_size = len(fragments[0]) - chunk_size
    if len(fragments) != k + m or header_size <= 0 or any(len(f) != header_size + chunk_size for f in fragments):
        raise ECError(
            f"liberasurecode {ISAL_EC_TYPE} returned fragments of sizes "
            f"{[len(f) for f in fragments]} for {k}+{m} chunks of {chunk_size} bytes"
        )
    return fragments, header_size


@functools.lru_cache(maxsize=64)
def _headers(k: int, m: int, chunk_size: int) -> tuple[bytes, ...]:
    fragments, header_size = _encode_stripe(k, m, bytes(k * chunk_size), chunk_size)
    return tuple(f[:header_size] for f in fragments)


def _segments(chunk_size: int) -> list[tuple[int, int]]:
    """Cut ``[0, chunk_size)`` into ``(start, end)`` pieces of at most ``SEGMENT_SIZE``."""
    return [(start, min(start + SEGMENT_SIZE, chunk_size)) for start in range(0, chunk_size, SEGMENT_SIZE)]


def _parity(k: int, m: int, data: Sequence[Buffer]) -> list[Buffer]:
    """Return the ``m`` parity chunks of one stripe, coded segment by segment."""
    views = [byte_view(chunk) for chunk in data]
    chunk_size = views[0].nbytes
    parity = [bytearray(chunk_size) for _ in range(m)]
    for start, end in _segments(chunk_size):
        segment = b"".join([view[start:end] for view in views])
        fragments, header_size = _encode_stripe(k, m, segment, end - start)
        for out, fragment in zip(parity, fragments[k:], strict=True):
            out[start:end] = memoryview(fragment)[header_size:]
    return list(parity)


def _rebuild(k: int, m: int, chunks: Mapping[int, Buffer]) -> list[Buffer]:
    """Return the ``k`` data chunks of one stripe from any ``k`` of its chunks."""
    views = {i: byte_view(chunk) for i, chunk in chunks.items()}
    chunk_size = next(iter(views.values())).nbytes
    nums = sorted(views)[:k]
    rebuilt = {i: bytearray(chunk_size) for i in range(k) if i not in views}
    driver = _driver(k, m)
    for start, end in _segments(chunk_size):
        headers = _headers(k, m, end - start)
        fragments = [b"".join((headers[i], views[i][start:end])) for i in nums]
        try:
            segment = memoryview(driver.decode(fragments))
        except Exception as exc:  # pyeclib raises its own ECDriverError family
            raise DecodeError(f"isal {k}+{m} decode from fragments {nums} failed: {exc}") from exc
        width = end - start
        for i, out in rebuilt.items():
            out[start:end] = segment[i * width : (i + 1) * width]
    return [rebuilt[i] if i in rebuilt else chunks[i] for i in range(k)]


@functools.lru_cache(maxsize=1)
def _works() -> bool:
    """Round-trip one tiny stripe to prove the backend loads and codes correctly."""
    if not _HAVE_PYECLIB:
        return False
    data = [bytes(range(64)), bytes(range(64, 128))]
    try:
        parity = _parity(2, 1, data)
        return [bytes(c) for c in _rebuild(2, 1, {1: data[1], 2: parity[0]})] == data
    except Exception:  # noqa: BLE001 - any failure to load or run the backend means "unavailable"
        return False


class IsalCodec(Codec):
    """Systematic Cauchy Reed-Solomon from ISA-L via pyeclib."""

    name = "isal"

    def __init__(self, k: int, m: int) -> None:
        super().__init__(k, m)
        if not self.available():
            raise CodecUnavailable(
                "isal codec needs pyeclib with a working ISA-L backend; install the hcstore[isal] extra"
            )
        if not self.supports(k, m):
            raise ValueError(f"isal codec needs m >= 1 and k + m <= {ISAL_MAX_N}, got k={k}, m={m}")

    @classmethod
    def available(cls) -> bool:
        """Tell whether pyeclib is installed and its ISA-L backend works."""
        return _works()

    @classmethod
    def supports(cls, k: int, m: int) -> bool:
        """Tell whether liberasurecode codes ``k+m`` (``m >= 1``, ``k + m <= 32``)."""
        return m >= 1 and k + m <= ISAL_MAX_N

    def _encode(self, data: Sequence[Buffer]) -> list[Buffer]:
        return _parity(self.k, self.m, data)

    def _decode(self, chunks: Mapping[int, Buffer]) -> list[Buffer]:
        return _rebuild(self.k, self.m, chunks)
