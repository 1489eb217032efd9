"""The fragment file format, version 1 (frozen).

A fragment file holds fragment ``index`` of one object version: chunk ``index``
of every stripe, each chunk's blake3 digest, and a header naming the object,
its generation, codec and layout. The header sits in a *trailer* so that a
writer can stream chunks straight to disk and append the header last, when the
digests are known; a fixed-size *footer* at the very end says where the trailer
is. All integers are little-endian.

======================  ==============  =============================================
offset                  size            contents
======================  ==============  =============================================
0                       8               ``MAGIC`` = ``b"HCSFRAG\\x00"``
8                       2               u16 format version = ``FORMAT_VERSION`` (1)
10                      2               u16 flags = 0 (no flags are defined)
12                      4               u32 reserved = 0
16 (``DATA_OFFSET``)    S * C           DATA: ``S = stripes`` chunks of exactly
                                        ``C = chunk_size`` bytes; chunk ``j`` of the
                                        file is chunk ``index`` of stripe ``j``, the
                                        last stripe zero-padded
T = 16 + S * C          L               TRAILER: msgpack map of :class:`FragmentHeader`
                                        fields (:func:`header_to_dict`)
T + L                   8               FOOTER u64 trailer offset ``T``
T + L + 8               4               FOOTER u32 trailer length ``L``
T + L + 12              32              FOOTER blake3 digest of the ``L`` trailer bytes
T + L + 44              4               FOOTER magic ``FOOTER_MAGIC`` = ``b"HCFE"``
======================  ==============  =============================================

The preamble is ``struct "<8sHHI"`` (16 bytes); the footer is
``struct "<QI32s4s"`` (48 bytes). The file size is ``T + L + 48``.

The trailer map has the keys ``bucket, key, generation, kind, codec, k, m,
chunk_size, size, index, stripes, digests, placement, created_ns, meta`` (in
that order when written); ``digests`` is msgpack *bin* (``stripes * 32``
bytes, the digest of each chunk of this fragment in stripe order),
``placement`` an array of ``k + m`` strings, ``meta`` a map of strings.

A **tombstone** (a delete) is a fragment with ``kind = "tombstone"``,
``size = 0``, ``stripes = 0`` and empty ``digests``: preamble, trailer, footer.

Invariants a reader relies on, all checked by :func:`parse_footer` and
:func:`parse_trailer` (every violation raises :class:`FragmentFormatError`
naming the field; an unknown version raises :class:`FormatVersionError`):

- the trailer bytes hash to the footer's digest, so a torn or bit-flipped
  header is never trusted;
- ``stripes`` equals ``StripeLayout(size, k, chunk_size).stripes``, so the data
  region is exactly ``stripes * chunk_size`` bytes and ``T`` is implied by the
  header;
- ``len(digests) == 32 * stripes``, ``len(placement) == k + m``,
  ``0 <= index < k + m``.

Be conservative: this layout is on disk on every node. Any change, even one
field, needs a new ``FORMAT_VERSION`` and code that still reads version 1; the
golden vectors in ``tests/unit/golden`` fail on any accidental change.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import Any

import blake3
import msgpack

from ec.buffer import Buffer, byte_view, nbytes
from ec.checksum import DIGEST_SIZE
from ec.codec import MAX_K, MAX_M
from ec.errors import FormatVersionError, FragmentFormatError
from ec.stripe import StripeLayout

__all__ = [
    "DATA_OFFSET",
    "FOOTER_MAGIC",
    "FOOTER_SIZE",
    "FORMAT_VERSION",
    "KINDS",
    "MAGIC",
    "MAX_TRAILER_SIZE",
    "PREAMBLE_SIZE",
    "FragmentHeader",
    "check_preamble",
    "chunk_offset",
    "encode_preamble",
    "encode_fragment",
    "encode_trailer",
    "header_from_dict",
    "header_to_dict",
    "parse_footer",
    "parse_fragment",
    "parse_trailer",
]

MAGIC = b"HCSFRAG\x00"
FORMAT_VERSION = 1
FOOTER_MAGIC = b"HCFE"
_PREAMBLE = struct.Struct("<8sHHI")
_FOOTER = struct.Struct("<QI32s4s")
PREAMBLE_SIZE = _PREAMBLE.size  # 16
FOOTER_SIZE = _FOOTER.size  # 48
DATA_OFFSET = PREAMBLE_SIZE

#: Valid values of :attr:`FragmentHeader.kind`.
KINDS = ("data", "tombstone")
#: Largest trailer accepted (a 1 TiB object in 1 MiB chunks needs ~8 MiB of digests).
MAX_TRAILER_SIZE = 64 << 20
#: Largest chunk size accepted in a header.
MAX_CHUNK_SIZE = 1 << 30
#: Largest UTF-8 size of bucket, key, generation and of each placement entry.
MAX_NAME_BYTES = 4096
#: Largest total UTF-8 size of the user metadata keys and values.
MAX_META_BYTES = 64 << 10
_MAX_U64 = (1 << 64) - 1
_CODEC_NAME = re.compile(r"[a-z0-9_\-]{1,32}")


def _bad(name: str, value: object, why: str) -> FragmentFormatError:
    shown = repr(value)
    if len(shown) > 80:
        shown = shown[:77] + "..."
    return FragmentFormatError(f"invalid fragment header field {name!r}: {shown} ({why})")


def _check_int(name: str, value: object, low: int, high: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise _bad(name, value, "must be an integer")
    if not low <= value <= high:
        raise _bad(name, value, f"must be in [{low}, {high}]")


def _check_str(name: str, value: object, *, empty_ok: bool = False) -> None:
    if not isinstance(value, str):
        raise _bad(name, value, "must be a string")
    if not value and not empty_ok:
        raise _bad(name, value, "must not be empty")
    try:
        encoded = value.encode("utf-8")
    except UnicodeEncodeError:
        raise _bad(name, value, "must be valid UTF-8 text") from None
    if len(encoded) > MAX_NAME_BYTES:
        raise _bad(name, value, f"longer than {MAX_NAME_BYTES} bytes")


def _check_meta(meta: object) -> None:
    if not isinstance(meta, Mapping):
        raise _bad("meta", meta, "must be a map of strings to strings")
    total = 0
    for key, value in meta.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise _bad("meta", {key: value}, "keys and values must be strings")
        try:
            total += len(key.encode("utf-8")) + len(value.encode("utf-8"))
        except UnicodeEncodeError:
            raise _bad("meta", {key: value}, "keys and values must be valid UTF-8 text") from None
    if total > MAX_META_BYTES:
        raise _bad("meta", f"<{total} bytes>", f"larger than {MAX_META_BYTES} bytes")


@dataclass(frozen=True)
class FragmentHeader:
    """Everything a fragment file says about itself (the trailer).

    Construction validates every field, so an invalid header cannot exist.

    Attributes:
        bucket: Bucket name.
        key: Object key within the bucket.
        generation: Opaque, sortable version id; the greatest generation wins.
        kind: ``"data"`` or ``"tombstone"``.
        codec: Name of the codec that wrote the object (see :func:`ec.make_codec`).
        k: Data chunks per stripe.
        m: Parity chunks per stripe.
        chunk_size: Bytes per chunk.
        size: Object size in bytes.
        index: This fragment's index, ``0 <= index < k + m``.
        stripes: Number of stripes (and of chunks in this fragment).
        digests: ``stripes * 32`` bytes, the blake3 digest of each chunk of this
            fragment in stripe order.
        placement: Node id holding each fragment index at write time, ``k + m``
            entries, ``""`` for an index that was not stored.
        created_ns: Write time, nanoseconds since the Unix epoch.
        meta: Small user metadata (e.g. content type); read-only.

    Raises:
        FragmentFormatError: A field has the wrong type or value (named in the
            message). Also a :class:`ValueError`.
    """

    bucket: str
    key: str
    generation: str
    kind: str
    codec: str
    k: int
    m: int
    chunk_size: int
    size: int
    index: int
    stripes: int
    digests: bytes
    placement: tuple[str, ...]
    created_ns: int
    meta: Mapping[str, str] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        for name in ("bucket", "key", "generation"):
            _check_str(name, getattr(self, name))
        if self.kind not in KINDS:
            raise _bad("kind", self.kind, f"must be one of {KINDS}")
        if not isinstance(self.codec, str) or not _CODEC_NAME.fullmatch(self.codec):
            raise _bad("codec", self.codec, "must be a codec name of 1-32 [a-z0-9_-] characters")
        _check_int("k", self.k, 1, MAX_K)
        _check_int("m", self.m, 0, MAX_M)
        _check_int("chunk_size", self.chunk_size, 1, MAX_CHUNK_SIZE)
        _check_int("size", self.size, 0, (1 << 63) - 1)
        _check_int("index", self.index, 0, self.k + self.m - 1)
        _check_int("created_ns", self.created_ns, 0, _MAX_U64)
        expected = StripeLayout(self.size, self.k, self.chunk_size).stripes
        if self.stripes != expected:
            raise _bad(
                "stripes",
                self.stripes,
                f"must be {expected} for size={self.size}, k={self.k}, chunk_size={self.chunk_size}",
            )
        if not isinstance(self.digests, bytes):
            raise _bad("digests", type(self.digests).__name__, "must be bytes")
        if len(self.digests) != DIGEST_SIZE * self.stripes:
            raise _bad(
                "digests",
                f"<{len(self.digests)} bytes>",
                f"must be {DIGEST_SIZE} bytes per stripe = {DIGEST_SIZE * self.stripes}",
            )
        if self.kind == "tombstone" and self.size != 0:
            raise _bad("size", self.size, "must be 0 for a tombstone")
        if not isinstance(self.placement, tuple):
            raise _bad("placement", self.placement, "must be a tuple of node ids")
        if len(self.placement) != self.k + self.m:
            raise _bad("placement", self.placement, f"must have k + m = {self.k + self.m} entries")
        for node in self.placement:
            _check_str("placement", node, empty_ok=True)
        _check_meta(self.meta)
        object.__setattr__(self, "meta", MappingProxyType(dict(self.meta)))

    def __reduce__(self) -> tuple[Callable[[Mapping[str, Any]], FragmentHeader], tuple[dict[str, Any]]]:
        # meta is a read-only mapping proxy, which pickle cannot copy.
        return header_from_dict, (header_to_dict(self),)

    def digest(self, stripe: int) -> bytes:
        """Return the recorded digest of this fragment's chunk in ``stripe``.

        Args:
            stripe: Stripe number, ``0 <= stripe < stripes``.

        Returns:
            The 32-byte blake3 digest.

        Raises:
            IndexError: ``stripe`` is out of range.
        """
        if not 0 <= stripe < self.stripes:
            raise IndexError(f"stripe must be in [0, {self.stripes}), got {stripe}")
        return self.digests[stripe * DIGEST_SIZE : (stripe + 1) * DIGEST_SIZE]

    @property
    def layout(self) -> StripeLayout:
        """The object's stripe layout."""
        return StripeLayout(self.size, self.k, self.chunk_size)


_FIELDS = tuple(f.name for f in fields(FragmentHeader))
_REQUIRED = frozenset(_FIELDS) - {"meta"}


def header_to_dict(header: FragmentHeader) -> dict[str, Any]:
    """Return a header as a msgpack-able map (the trailer's content).

    Args:
        header: The header.

    Returns:
        A dict with one entry per field in declaration order; ``digests`` stays
        ``bytes``, ``placement`` becomes a list, ``meta`` a plain dict.
    """
    out = {name: getattr(header, name) for name in _FIELDS}
    out["placement"] = list(header.placement)
    out["meta"] = dict(header.meta)
    return out


def header_from_dict(d: Mapping[str, Any]) -> FragmentHeader:
    """Build and validate a header from :func:`header_to_dict`'s map.

    Args:
        d: A map as produced by :func:`header_to_dict` (or unpacked from
            msgpack); ``meta`` may be absent.

    Returns:
        The header.

    Raises:
        FragmentFormatError: The map is not a map, lacks a field, has an
            unknown one, or a field is invalid (named in the message).
    """
    if not isinstance(d, Mapping):
        raise FragmentFormatError(f"fragment header must be a map, got {type(d).__name__}")
    missing = sorted(_REQUIRED - d.keys())
    if missing:
        raise FragmentFormatError(f"fragment header is missing field(s) {missing}")
    unknown = sorted(str(name) for name in d.keys() - set(_FIELDS))
    if unknown:
        raise FragmentFormatError(f"fragment header has unknown field(s) {unknown}")
    values = dict(d)
    if isinstance(values["placement"], list):
        values["placement"] = tuple(values["placement"])
    if isinstance(values["digests"], (bytearray, memoryview)):
        values["digests"] = bytes(values["digests"])
    return FragmentHeader(**values)


def encode_preamble() -> bytes:
    """Return the 16-byte preamble that starts every version-1 fragment file."""
    return _PREAMBLE.pack(MAGIC, FORMAT_VERSION, 0, 0)


def check_preamble(buf: Buffer) -> None:
    """Validate the preamble at the start of a fragment file.

    Args:
        buf: At least the first :data:`PREAMBLE_SIZE` bytes of the file.

    Raises:
        FormatVersionError: The version is not :data:`FORMAT_VERSION`.
        FragmentFormatError: ``buf`` is too short, or the magic, flags or
            reserved word is wrong.
    """
    if nbytes(buf) < PREAMBLE_SIZE:
        raise FragmentFormatError(f"truncated fragment preamble: {nbytes(buf)} bytes, need {PREAMBLE_SIZE}")
    magic, version, flags, reserved = _PREAMBLE.unpack_from(buf)
    if magic != MAGIC:
        raise FragmentFormatError(f"bad fragment magic {magic!r}, expected {MAGIC!r}")
    if version != FORMAT_VERSION:
        raise FormatVersionError(
            f"unsupported fragment format version {version}; this code reads version {FORMAT_VERSION}"
        )
    if flags:
        raise FragmentFormatError(f"unknown fragment flags 0x{flags:04x} in version {FORMAT_VERSION}")
    if reserved:
        raise FragmentFormatError(f"reserved preamble word is 0x{reserved:08x}, expected 0")


def chunk_offset(stripe: int, chunk_size: int) -> int:
    """Return the file offset of this fragment's chunk in ``stripe``.

    ``chunk_offset(stripes, chunk_size)`` is the trailer offset ``T``.

    Args:
        stripe: Stripe number (``0 <= stripe``; ``stripe == stripes`` gives the end of DATA).
        chunk_size: Bytes per chunk.

    Returns:
        ``DATA_OFFSET + stripe * chunk_size``.

    Raises:
        ValueError: ``stripe`` is negative or ``chunk_size`` is not positive.
    """
    if stripe < 0 or chunk_size < 1:
        raise ValueError(f"need stripe >= 0 and chunk_size >= 1, got stripe={stripe}, chunk_size={chunk_size}")
    return DATA_OFFSET + stripe * chunk_size


def encode_trailer(header: FragmentHeader, trailer_offset: int) -> bytes:
    """Return the trailer and footer to append to a fragment file.

    Args:
        header: The fragment's header.
        trailer_offset: Where the trailer starts; must be
            ``chunk_offset(header.stripes, header.chunk_size)``.

    Returns:
        Trailer bytes followed by the 48-byte footer.

    Raises:
        ValueError: ``trailer_offset`` does not match the header's layout.
    """
    expected = chunk_offset(header.stripes, header.chunk_size)
    if trailer_offset != expected:
        raise ValueError(
            f"trailer_offset {trailer_offset} does not match the header: "
            f"{header.stripes} stripes of {header.chunk_size} bytes end at {expected}"
        )
    trailer: bytes = msgpack.packb(header_to_dict(header), use_bin_type=True)
    footer = _FOOTER.pack(trailer_offset, len(trailer), blake3.blake3(trailer).digest(), FOOTER_MAGIC)
    return trailer + footer


def parse_footer(buf: Buffer, file_size: int | None = None) -> tuple[int, int, bytes]:
    """Parse the footer at the end of a fragment file.

    Args:
        buf: Bytes ending at the end of the file; the last :data:`FOOTER_SIZE`
            of them are parsed (a larger tail read is fine).
        file_size: The file's size, when known; then the footer must describe
            a trailer that ends exactly where the footer begins.

    Returns:
        ``(trailer_offset, trailer_length, trailer_digest)``.

    Raises:
        FragmentFormatError: ``buf`` is shorter than a footer, the magic is
            wrong, or the offsets are impossible.
    """
    size = nbytes(buf)
    if size < FOOTER_SIZE:
        raise FragmentFormatError(f"truncated fragment footer: {size} bytes, need {FOOTER_SIZE}")
    offset, length, digest, magic = _FOOTER.unpack_from(buf, size - FOOTER_SIZE)
    if magic != FOOTER_MAGIC:
        raise FragmentFormatError(f"bad fragment footer magic {magic!r}, expected {FOOTER_MAGIC!r}")
    if offset < DATA_OFFSET:
        raise FragmentFormatError(f"footer trailer_offset {offset} is before the data offset {DATA_OFFSET}")
    if not 0 < length <= MAX_TRAILER_SIZE:
        raise FragmentFormatError(f"footer trailer_length {length} is not in [1, {MAX_TRAILER_SIZE}]")
    if file_size is not None and offset + length + FOOTER_SIZE != file_size:
        raise FragmentFormatError(
            f"footer says trailer [{offset}, {offset + length}) + {FOOTER_SIZE}-byte footer, "
            f"but the file is {file_size} bytes"
        )
    return offset, length, digest


def parse_trailer(buf: Buffer, expected_digest: bytes, trailer_offset: int | None = None) -> FragmentHeader:
    """Verify and decode a trailer.

    Args:
        buf: Exactly the trailer bytes (``trailer_length`` of them).
        expected_digest: The digest from the footer.
        trailer_offset: The trailer offset from the footer, when the caller
            wants it checked against the header's layout.

    Returns:
        The validated header.

    Raises:
        FragmentFormatError: Checksum mismatch, undecodable msgpack, a missing,
            unknown or invalid field, or a trailer offset that disagrees with
            the header (each named in the message).
    """
    actual = blake3.blake3(buf).digest()
    if actual != expected_digest:
        raise FragmentFormatError(
            f"fragment trailer checksum mismatch: footer says {bytes(expected_digest).hex()[:16]}..., "
            f"trailer hashes to {actual.hex()[:16]}..."
        )
    try:
        d = msgpack.unpackb(buf, raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises several unrelated exception types
        raise FragmentFormatError(f"fragment trailer is not valid msgpack: {exc}") from exc
    header = header_from_dict(d)
    if trailer_offset is not None:
        expected = chunk_offset(header.stripes, header.chunk_size)
        if trailer_offset != expected:
            raise FragmentFormatError(
                f"trailer_offset {trailer_offset} disagrees with the header: "
                f"{header.stripes} stripes of {header.chunk_size} bytes end at {expected}"
            )
    return header


def encode_fragment(header: FragmentHeader, chunks: Sequence[Buffer]) -> bytes:
    """Return a whole fragment file for a fragment held in memory.

    Streaming writers emit :func:`encode_preamble`, the chunks and
    :func:`encode_trailer` themselves; this joins them in one call.

    Args:
        header: The fragment's header.
        chunks: ``header.stripes`` chunks of ``header.chunk_size`` bytes each.

    Returns:
        The file bytes.

    Raises:
        ValueError: The chunks do not match the header's layout.
    """
    if len(chunks) != header.stripes:
        raise ValueError(f"header says {header.stripes} stripes, got {len(chunks)} chunks")
    sizes = sorted({nbytes(chunk) for chunk in chunks} - {header.chunk_size})
    if sizes:
        raise ValueError(f"chunks must be chunk_size={header.chunk_size} bytes, got sizes {sizes}")
    trailer = encode_trailer(header, chunk_offset(header.stripes, header.chunk_size))
    return b"".join([encode_preamble(), *chunks, trailer])


def parse_fragment(buf: Buffer) -> tuple[FragmentHeader, memoryview]:
    """Validate a whole fragment file held in memory and split it.

    Chunk digests are not verified here (see :func:`ec.checksum.verify_chunk`).

    Args:
        buf: The complete file bytes.

    Returns:
        ``(header, data)``: the validated header and a view of the DATA region
        (``header.stripes * header.chunk_size`` bytes).

    Raises:
        FormatVersionError: The file is in an unknown format version.
        FragmentFormatError: Any part of the file is malformed.
    """
    view = byte_view(buf)
    size = view.nbytes
    check_preamble(view[:PREAMBLE_SIZE])
    offset, length, digest = parse_footer(view[max(0, size - FOOTER_SIZE) :], file_size=size)
    header = parse_trailer(view[offset : offset + length], digest, trailer_offset=offset)
    return header, view[DATA_OFFSET:offset]
