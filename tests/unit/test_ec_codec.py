"""Codec properties: any k of k+m chunks give the data back, systematic, golden parity."""

from __future__ import annotations

import itertools
import json
import pathlib
import pickle
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import ec
from ec import CodecUnavailable, DecodeError, decode_object, encode_object, make_codec

GOLDEN = pathlib.Path(__file__).parent / "golden"

CONFIGS = [
    ("zfec", 1, 0),
    ("zfec", 2, 1),
    ("zfec", 4, 2),
    ("zfec", 8, 2),
    ("zfec", 10, 4),
    ("replica", 1, 2),
    ("isal", 2, 1),
    ("isal", 4, 2),
    ("isal", 8, 2),
    ("isal", 10, 4),
    ("isal", 6, 5),
]
MAX_COMBINATIONS = 40  # 10+4 has 1001 survivor sets; sample so each test stays fast


def survivor_sets(k: int, m: int, seed: int) -> list[tuple[int, ...]]:
    """Every k-subset of fragment indexes, or a seeded sample that keeps the extremes."""
    combos = list(itertools.combinations(range(k + m), k))
    if len(combos) <= MAX_COMBINATIONS:
        return combos
    rng = random.Random(seed)
    return [combos[0], combos[-1], *rng.sample(combos[1:-1], MAX_COMBINATIONS - 2)]


def payload(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


def assert_round_trips(name: str, k: int, m: int, data: bytes, chunk_size: int, seed: int) -> None:
    codec = make_codec(name, k, m)
    fragments = encode_object(data, codec, chunk_size)
    assert len(fragments) == k + m
    for survivors in survivor_sets(k, m, seed):
        kept = {i: fragments[i] for i in survivors}
        assert decode_object(kept, codec, len(data), chunk_size) == data, survivors


SIZES = st.one_of(
    st.sampled_from([0, 1, 63, 64, 65, 255, 256, 257, 1000, 4095, 4096, 4097]),
    st.integers(min_value=0, max_value=40_000),
)


@pytest.mark.parametrize(("name", "k", "m"), CONFIGS)
@settings(max_examples=25, deadline=None, derandomize=True)
@given(size=SIZES, max_chunk=st.sampled_from([64, 256, 1024]), seed=st.integers(0, 2**32 - 1))
def test_any_k_chunks_decode(name: str, k: int, m: int, size: int, max_chunk: int, seed: int) -> None:
    chunk_size = ec.chunk_size_for(size, k, max_chunk)
    assert_round_trips(name, k, m, payload(size, seed), chunk_size, seed)


@pytest.mark.parametrize(("name", "k", "m"), CONFIGS)
@pytest.mark.parametrize("size", [3 * (1 << 20) + 17, 5 * (1 << 20)])
def test_multi_mib_objects_decode(name: str, k: int, m: int, size: int) -> None:
    data = payload(size, size)
    codec = make_codec(name, k, m)
    chunk_size = ec.chunk_size_for(size, k)
    fragments = encode_object(data, codec, chunk_size)
    # All data fragments, parity replacing the first data fragments, and the last k.
    for survivors in {tuple(range(k)), tuple(range(m, m + k)), tuple(range(m, k + m))}:
        kept = {i: fragments[i] for i in survivors}
        assert decode_object(kept, codec, size, chunk_size) == data, survivors


@pytest.mark.parametrize(("name", "k", "m"), CONFIGS)
def test_encode_is_systematic_and_accepts_views(name: str, k: int, m: int) -> None:
    codec = make_codec(name, k, m)
    stripe = bytearray(payload(k * 128, 7))
    chunks = ec.split_stripe(memoryview(stripe), k, 128)
    parity = codec.encode(chunks)
    assert len(parity) == m
    assert all(ec.buffer.nbytes(p) == 128 for p in parity)
    assert bytes(ec.join_data(chunks, len(stripe))) == stripe
    as_bytes = codec.encode([bytes(c) for c in chunks])
    assert [bytes(p) for p in as_bytes] == [bytes(p) for p in parity]


@pytest.mark.parametrize(("name", "k", "m"), CONFIGS)
def test_decode_with_all_data_chunks_returns_them_unchanged(name: str, k: int, m: int) -> None:
    codec = make_codec(name, k, m)
    data = [payload(64, i) for i in range(k)]
    chunks = dict(enumerate(data + codec.encode(data)))
    out = codec.decode(chunks)
    assert all(o is d for o, d in zip(out, data, strict=True))


def test_replica_returns_the_same_object() -> None:
    codec = make_codec("replica", 1, 3)
    chunk = b"x" * 100
    parity = codec.encode([chunk])
    assert len(parity) == 3 and all(p is chunk for p in parity)
    assert codec.decode({2: chunk}) == [chunk]


def test_replica_needs_k_1() -> None:
    with pytest.raises(ValueError, match="k == 1"):
        make_codec("replica", 2, 1)


def test_decode_fewer_than_k_chunks() -> None:
    codec = make_codec("zfec", 4, 2)
    with pytest.raises(DecodeError, match="needs 4 chunks.*got 3"):
        codec.decode({0: b"a" * 64, 1: b"b" * 64, 5: b"c" * 64})


def test_decode_mismatched_lengths() -> None:
    codec = make_codec("zfec", 2, 1)
    with pytest.raises(DecodeError, match="equal lengths"):
        codec.decode({0: b"a" * 64, 2: b"b" * 65})


def test_decode_index_out_of_range() -> None:
    codec = make_codec("zfec", 2, 1)
    with pytest.raises(DecodeError, match=r"\[0, 3\)"):
        codec.decode({0: b"a" * 64, 3: b"b" * 64})


def test_encode_wrong_chunk_count_or_lengths() -> None:
    codec = make_codec("zfec", 3, 1)
    with pytest.raises(ValueError, match="got 2"):
        codec.encode([b"a", b"b"])
    with pytest.raises(ValueError, match="equal lengths"):
        codec.encode([b"a", b"b", b"cc"])


def test_m_zero_has_no_parity() -> None:
    assert make_codec("zfec", 3, 0).encode([b"a", b"b", b"c"]) == []


def test_unknown_codec() -> None:
    with pytest.raises(CodecUnavailable, match="'nope'"):
        make_codec("nope", 4, 2)


@pytest.mark.parametrize(("k", "m", "bad"), [(0, 1, "k"), (129, 1, "k"), (4, -1, "m"), (4, 65, "m"), (True, 1, "k")])
def test_make_codec_rejects_out_of_range(k: int, m: int, bad: str) -> None:
    with pytest.raises(ValueError, match=f"^{bad} must be"):
        make_codec("zfec", k, m)


@pytest.mark.parametrize(
    ("spec", "expected"), [("4+2", (4, 2)), ("1+0", (1, 0)), (" 10 + 4 ", (10, 4)), ("128+64", (128, 64))]
)
def test_parse_ec(spec: str, expected: tuple[int, int]) -> None:
    assert ec.parse_ec(spec) == expected


@pytest.mark.parametrize("spec", ["4", "4+", "+2", "4-2", "a+b", "0+2", "4+65", "129+1", "", "4+2+1"])
def test_parse_ec_rejects(spec: str) -> None:
    with pytest.raises(ValueError, match=repr(spec).replace("+", r"\+")):
        ec.parse_ec(spec)


def test_available_and_default_codecs() -> None:
    names = ec.available_codecs()
    assert {"zfec", "replica"} <= set(names)
    assert ec.default_codec_name(4, 2) == "isal"
    assert ec.default_codec_name(4, 0) == "zfec"
    assert ec.default_codec_name(40, 4) == "zfec"  # beyond liberasurecode's 32 fragments


def test_isal_unavailable_falls_back(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ec.IsalCodec, "available", classmethod(lambda cls: False))
    assert ec.default_codec_name(4, 2) == "zfec"
    assert "isal" not in ec.available_codecs()
    with pytest.raises(CodecUnavailable, match="hcstore\\[isal\\]"):
        make_codec("isal", 4, 2)


@pytest.mark.parametrize(("name", "k", "m"), CONFIGS)
def test_codecs_pickle(name: str, k: int, m: int) -> None:
    codec = pickle.loads(pickle.dumps(make_codec(name, k, m)))
    assert (codec.name, codec.k, codec.m, codec.n) == (name, k, m, k + m)


@pytest.mark.parametrize(
    "golden",
    ["ec_codec_zfec_4_2.json", "ec_codec_isal_4_2.json"],
)
def test_golden_parity(golden: str) -> None:
    vector = json.loads((GOLDEN / golden).read_text())
    codec = make_codec(vector["codec"], vector["k"], vector["m"])
    data = [bytes.fromhex(h) for h in vector["data_hex"]]
    parity = [bytes.fromhex(h) for h in vector["parity_hex"]]
    assert [bytes(p) for p in codec.encode(data)] == parity
    chunks = dict(enumerate(data + parity))
    for lost in itertools.combinations(range(codec.n), codec.m):
        kept = {i: c for i, c in chunks.items() if i not in lost}
        assert [bytes(c) for c in codec.decode(kept)] == data


def test_isal_segments_match_whole_stripe_coding() -> None:
    from pyeclib.ec_iface import ECDriver

    k, m = 4, 2
    chunk_size = 2 * ec.isal_codec.SEGMENT_SIZE + 192  # two full segments and a short tail
    data = [payload(chunk_size, 100 + i) for i in range(k)]
    whole = ECDriver(k=k, m=m, ec_type=ec.isal_codec.ISAL_EC_TYPE).encode(b"".join(data))
    expected = [bytes(f[len(f) - chunk_size :]) for f in whole]
    assert expected[:k] == data  # liberasurecode adds no padding: payloads are the plain chunks
    assert [bytes(p) for p in make_codec("isal", k, m).encode(data)] == expected[k:]
