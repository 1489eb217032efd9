"""Erasure coding for hcstore: codecs, stripe math, checksums, fragment format.

This package is pure: functions of their inputs, with no file or network I/O,
so every rule here is property-tested without a cluster. ``hcstore`` does the
I/O around it.

- :mod:`ec.codec` -- the :class:`Codec` interface and :func:`parse_ec`;
  :mod:`ec.codecs` -- codec selection (:func:`make_codec`,
  :func:`default_codec_name`); the implementations are :mod:`ec.zfec_codec`, :mod:`ec.replica_codec` and the
  optional :mod:`ec.isal_codec`.
- :mod:`ec.stripe` -- how an object maps onto stripes, chunks and fragments.
- :mod:`ec.objects` -- whole-object encode/decode in memory.
- :mod:`ec.checksum` -- the per-chunk blake3 digest.
- :mod:`ec.fragment` -- the frozen, versioned fragment file format.
- :mod:`ec.errors` -- the error family.
"""

from ec.buffer import Buffer
from ec.checksum import DIGEST_SIZE, chunk_digest, verify_chunk
from ec.codec import MAX_K, MAX_M, Codec, parse_ec, validate_km
from ec.codecs import available_codecs, default_codec_name, make_codec
from ec.errors import (
    CodecUnavailable,
    DecodeError,
    ECError,
    FormatVersionError,
    FragmentFormatError,
)
from ec.fragment import (
    DATA_OFFSET,
    FOOTER_MAGIC,
    FOOTER_SIZE,
    FORMAT_VERSION,
    KINDS,
    MAGIC,
    MAX_TRAILER_SIZE,
    PREAMBLE_SIZE,
    FragmentHeader,
    check_preamble,
    chunk_offset,
    encode_fragment,
    encode_preamble,
    encode_trailer,
    header_from_dict,
    header_to_dict,
    parse_footer,
    parse_fragment,
    parse_trailer,
)
from ec.isal_codec import IsalCodec
from ec.objects import decode_object, encode_object, fragment_digests
from ec.replica_codec import ReplicaCodec
from ec.stripe import (
    CHUNK_ALIGN,
    DEFAULT_CHUNK_SIZE,
    StripeLayout,
    chunk_size_for,
    join_data,
    split_stripe,
)
from ec.zfec_codec import ZfecCodec

__all__ = [
    "CHUNK_ALIGN",
    "DATA_OFFSET",
    "DEFAULT_CHUNK_SIZE",
    "DIGEST_SIZE",
    "FOOTER_MAGIC",
    "FOOTER_SIZE",
    "FORMAT_VERSION",
    "KINDS",
    "MAGIC",
    "MAX_K",
    "MAX_M",
    "MAX_TRAILER_SIZE",
    "PREAMBLE_SIZE",
    "Buffer",
    "Codec",
    "CodecUnavailable",
    "DecodeError",
    "ECError",
    "FormatVersionError",
    "FragmentFormatError",
    "FragmentHeader",
    "IsalCodec",
    "ReplicaCodec",
    "StripeLayout",
    "ZfecCodec",
    "available_codecs",
    "check_preamble",
    "chunk_digest",
    "chunk_offset",
    "chunk_size_for",
    "default_codec_name",
    "decode_object",
    "encode_fragment",
    "encode_object",
    "encode_preamble",
    "fragment_digests",
    "encode_trailer",
    "header_from_dict",
    "header_to_dict",
    "join_data",
    "make_codec",
    "parse_ec",
    "parse_footer",
    "parse_fragment",
    "parse_trailer",
    "split_stripe",
    "validate_km",
    "verify_chunk",
]
