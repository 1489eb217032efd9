"""Fragment file format v1: golden bytes, round trips, and rejection of bad input."""

from __future__ import annotations

import json
import pathlib
import pickle
import struct
from typing import Any

import blake3
import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import ec
from ec import (
    FOOTER_SIZE,
    PREAMBLE_SIZE,
    FormatVersionError,
    FragmentFormatError,
    FragmentHeader,
    check_preamble,
    encode_fragment,
    encode_trailer,
    header_from_dict,
    header_to_dict,
    parse_footer,
    parse_fragment,
    parse_trailer,
)

GOLDEN = json.loads((pathlib.Path(__file__).parent / "golden" / "ec_fragment_v1.json").read_text())


def header_from_json(d: dict[str, Any]) -> FragmentHeader:
    return header_from_dict({**d, "digests": bytes.fromhex(d["digests"])})


def make_header(**changes: Any) -> FragmentHeader:
    base = dict(
        bucket="b",
        key="k",
        generation="g1",
        kind="data",
        codec="zfec",
        k=4,
        m=2,
        chunk_size=64,
        size=300,
        index=1,
        stripes=2,
        digests=bytes(64),
        placement=("n1", "n2", "n3", "n4", "n5", ""),
        created_ns=1,
        meta={"content-type": "text/plain"},
    )
    fields = {**base, **changes}
    if "stripes" not in changes:  # keep the layout consistent with a changed size
        fields["stripes"] = ec.StripeLayout(fields["size"], fields["k"], fields["chunk_size"]).stripes
        fields["digests"] = changes.get("digests", bytes(32 * fields["stripes"]))
    return FragmentHeader(**fields)


def test_preamble_layout() -> None:
    assert ec.encode_preamble() == b"HCSFRAG\x00" + struct.pack("<HHI", 1, 0, 0)
    assert PREAMBLE_SIZE == ec.DATA_OFFSET == 16 and FOOTER_SIZE == 48
    check_preamble(ec.encode_preamble())


@pytest.mark.parametrize("index", sorted(GOLDEN["fragments"]))
def test_golden_fragment_files(index: str) -> None:
    vector = GOLDEN["fragments"][index]
    expected = bytes.fromhex(vector["file_hex"])
    header = header_from_json(vector["header"])
    # Rebuilding the fragment from the object gives the checked-in bytes ...
    codec = ec.make_codec(header.codec, header.k, header.m)
    obj = bytes.fromhex(GOLDEN["object_hex"])
    chunks = ec.encode_object(obj, codec, header.chunk_size)[header.index]
    assert ec.fragment_digests(chunks) == header.digests
    assert encode_fragment(header, chunks) == expected
    # ... and parsing the checked-in bytes gives the header and the chunks.
    parsed, data = parse_fragment(expected)
    assert parsed == header
    for stripe in range(parsed.stripes):
        offset = ec.chunk_offset(stripe, parsed.chunk_size) - ec.DATA_OFFSET
        chunk = data[offset : offset + parsed.chunk_size]
        assert bytes(chunk) == bytes(chunks[stripe])
        assert ec.verify_chunk(chunk, parsed.digest(stripe))


def test_golden_fragments_decode_the_object() -> None:
    fragments = {}
    for vector in GOLDEN["fragments"].values():
        header, data = parse_fragment(bytes.fromhex(vector["file_hex"]))
        fragments[header.index] = [
            data[i * header.chunk_size : (i + 1) * header.chunk_size] for i in range(header.stripes)
        ]
    # Only two of the four needed; add the remaining data fragments from a fresh encode.
    codec = ec.make_codec(header.codec, header.k, header.m)
    obj = bytes.fromhex(GOLDEN["object_hex"])
    full = ec.encode_object(obj, codec, header.chunk_size)
    fragments.update({i: full[i] for i in (0, 5)})
    assert ec.decode_object(fragments, codec, header.size, header.chunk_size) == obj


def test_golden_tombstone() -> None:
    vector = GOLDEN["tombstone"]
    header = header_from_json(vector["header"])
    assert (header.kind, header.size, header.stripes, header.digests) == ("tombstone", 0, 0, b"")
    expected = bytes.fromhex(vector["file_hex"])
    assert encode_fragment(header, []) == expected
    parsed, data = parse_fragment(expected)
    assert parsed == header and data.nbytes == 0


headers = st.builds(
    make_header,
    bucket=st.text(min_size=1, max_size=20),
    key=st.text(min_size=1, max_size=40),
    generation=st.text(min_size=1, max_size=30),
    size=st.integers(0, 1 << 20),
    created_ns=st.integers(0, (1 << 64) - 1),
    meta=st.dictionaries(st.text(max_size=10), st.text(max_size=10), max_size=4),
)


@settings(max_examples=100, deadline=None, derandomize=True)
@given(header=headers)
def test_trailer_round_trip(header: FragmentHeader) -> None:
    offset = ec.chunk_offset(header.stripes, header.chunk_size)
    tail = encode_trailer(header, offset)
    trailer_offset, length, digest = parse_footer(tail, file_size=offset + len(tail))
    assert trailer_offset == offset and length == len(tail) - FOOTER_SIZE
    assert parse_trailer(tail[:length], digest, trailer_offset=offset) == header
    assert header_from_dict(msgpack.unpackb(msgpack.packb(header_to_dict(header)))) == header
    assert pickle.loads(pickle.dumps(header)) == header


def test_header_accessors() -> None:
    header = make_header(digests=bytes(range(64)))
    assert header.digest(1) == bytes(range(32, 64))
    assert header.layout == ec.StripeLayout(300, 4, 64)
    with pytest.raises(IndexError, match="stripe must be in"):
        header.digest(2)
    with pytest.raises(TypeError):
        header.meta["x"] = "y"  # type: ignore[index]


# --- bad input ---------------------------------------------------------------


def golden_file() -> bytes:
    return bytes.fromhex(GOLDEN["fragments"]["1"]["file_hex"])


def test_truncated_preamble() -> None:
    with pytest.raises(FragmentFormatError, match="truncated fragment preamble: 15 bytes"):
        check_preamble(ec.encode_preamble()[:15])


def test_wrong_magic() -> None:
    with pytest.raises(FragmentFormatError, match="bad fragment magic"):
        check_preamble(b"NOTFRAG\x00" + ec.encode_preamble()[8:])


def test_future_version() -> None:
    with pytest.raises(FormatVersionError, match="unsupported fragment format version 2"):
        check_preamble(struct.pack("<8sHHI", ec.MAGIC, 2, 0, 0))
    with pytest.raises(FormatVersionError):
        parse_fragment(struct.pack("<8sHHI", ec.MAGIC, 2, 0, 0) + golden_file()[PREAMBLE_SIZE:])


@pytest.mark.parametrize(
    ("flags", "reserved", "match"), [(1, 0, "unknown fragment flags"), (0, 7, "reserved preamble word")]
)
def test_nonzero_flags_or_reserved(flags: int, reserved: int, match: str) -> None:
    with pytest.raises(FragmentFormatError, match=match):
        check_preamble(struct.pack("<8sHHI", ec.MAGIC, 1, flags, reserved))


def test_truncated_footer() -> None:
    with pytest.raises(FragmentFormatError, match="truncated fragment footer: 47 bytes, need 48"):
        parse_footer(golden_file()[-47:])


def test_truncated_file() -> None:
    with pytest.raises(FragmentFormatError, match="footer"):
        parse_fragment(golden_file()[:-1])
    with pytest.raises(FragmentFormatError):
        parse_fragment(golden_file()[:10])


def test_wrong_footer_magic() -> None:
    with pytest.raises(FragmentFormatError, match="bad fragment footer magic b'XXXX'"):
        parse_footer(golden_file()[:-4] + b"XXXX")


@pytest.mark.parametrize(
    ("offset", "length", "match"),
    [(3, 10, "before the data offset"), (16, 0, "trailer_length 0"), (16, ec.MAX_TRAILER_SIZE + 1, "trailer_length")],
)
def test_impossible_footer_fields(offset: int, length: int, match: str) -> None:
    footer = struct.pack("<QI32s4s", offset, length, bytes(32), ec.FOOTER_MAGIC)
    with pytest.raises(FragmentFormatError, match=match):
        parse_footer(footer)


def test_footer_disagrees_with_file_size() -> None:
    data = golden_file()
    with pytest.raises(FragmentFormatError, match=f"the file is {len(data) + 1} bytes"):
        parse_footer(data, file_size=len(data) + 1)


def test_trailer_checksum_mismatch() -> None:
    data = bytearray(golden_file())
    offset, length, _ = parse_footer(data)
    data[offset + 5] ^= 0x01
    with pytest.raises(FragmentFormatError, match="trailer checksum mismatch"):
        parse_fragment(bytes(data))


def test_trailer_offset_disagrees_with_header() -> None:
    header = make_header()
    tail = encode_trailer(header, ec.chunk_offset(2, 64))
    _, length, digest = parse_footer(tail)
    with pytest.raises(FragmentFormatError, match="trailer_offset 99 disagrees"):
        parse_trailer(tail[:length], digest, trailer_offset=99)
    with pytest.raises(ValueError, match="trailer_offset 99 does not match"):
        encode_trailer(header, 99)


def reseal(trailer: bytes) -> tuple[bytes, bytes]:
    return trailer, blake3.blake3(trailer).digest()


def test_trailer_not_msgpack() -> None:
    with pytest.raises(FragmentFormatError, match="not valid msgpack"):
        parse_trailer(*reseal(b"\xc1\xff\x00"))


def test_trailer_not_a_map() -> None:
    with pytest.raises(FragmentFormatError, match="must be a map, got list"):
        parse_trailer(*reseal(msgpack.packb([1, 2])))


def test_trailer_missing_and_unknown_fields() -> None:
    d = header_to_dict(make_header())
    del d["size"]
    with pytest.raises(FragmentFormatError, match=r"missing field\(s\) \['size'\]"):
        parse_trailer(*reseal(msgpack.packb(d)))
    d = {**header_to_dict(make_header()), "colour": "red"}
    with pytest.raises(FragmentFormatError, match=r"unknown field\(s\) \['colour'\]"):
        parse_trailer(*reseal(msgpack.packb(d)))


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"k": 0}, "k"),
        ({"k": True}, "k"),
        ({"k": "4"}, "k"),
        ({"m": -1}, "m"),
        ({"index": 6}, "index"),
        ({"index": -1}, "index"),
        ({"chunk_size": 0}, "chunk_size"),
        ({"size": -1}, "size"),
        ({"stripes": 3}, "stripes"),
        ({"digests": bytes(63)}, "digests"),
        ({"digests": "00" * 32}, "digests"),
        ({"placement": ["a"] * 5}, "placement"),
        ({"placement": [1, 2, 3, 4, 5, 6]}, "placement"),
        ({"kind": "deleted"}, "kind"),
        ({"kind": "tombstone"}, "size"),
        ({"codec": "Zfec!"}, "codec"),
        ({"bucket": ""}, "bucket"),
        ({"key": 5}, "key"),
        ({"generation": None}, "generation"),
        ({"created_ns": -5}, "created_ns"),
        ({"meta": {"a": 1}}, "meta"),
        ({"meta": ["x"]}, "meta"),
    ],
)
def test_invalid_fields_are_named(changes: dict[str, Any], field: str) -> None:
    d = {**header_to_dict(make_header()), **changes}
    with pytest.raises(FragmentFormatError, match=f"field '{field}'"):
        parse_trailer(*reseal(msgpack.packb(d, use_bin_type=True)))
    with pytest.raises(FragmentFormatError, match=f"field '{field}'"):
        header_from_dict(d)


def test_unencodable_text_is_rejected() -> None:
    with pytest.raises(FragmentFormatError, match="field 'key'.*UTF-8"):
        make_header(key="bad\udc80")


def test_encode_fragment_rejects_wrong_chunks() -> None:
    header = make_header()
    with pytest.raises(ValueError, match="2 stripes, got 1"):
        encode_fragment(header, [bytes(64)])
    with pytest.raises(ValueError, match=r"sizes \[63\]"):
        encode_fragment(header, [bytes(64), bytes(63)])


def test_errors_are_one_family() -> None:
    assert issubclass(FragmentFormatError, ValueError) and issubclass(FragmentFormatError, ec.ECError)
    assert issubclass(FormatVersionError, FragmentFormatError)
    assert issubclass(ec.DecodeError, ec.ECError) and issubclass(ec.CodecUnavailable, ec.ECError)
