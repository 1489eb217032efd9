"""Generate the golden vectors of the ``ec`` package (run once; output is checked in).

    PYTHONPATH=. .venv/bin/python tests/unit/golden/ec_make_golden.py

Regenerating is only right when a format or codec version is deliberately
added; the tests in ``tests/unit/test_ec_*.py`` compare against these files so
that an accidental change to the fragment format or to parity bytes fails.
"""

from __future__ import annotations

import json
import pathlib

import ec

HERE = pathlib.Path(__file__).parent

CODEC_INPUT = bytes((i * 31 + 7) % 256 for i in range(256))  # 4 chunks of 64 bytes
OBJECT = bytes((i * 7 + 3) % 251 for i in range(300))  # 2 stripes of 4 x 64 bytes, short tail
CHUNK_SIZE = 64
FRAGMENT_INDEXES = (1, 4)  # one data fragment, one parity fragment


def codec_vector(name: str, k: int, m: int) -> dict:
    chunk = len(CODEC_INPUT) // k
    data = [CODEC_INPUT[i * chunk : (i + 1) * chunk] for i in range(k)]
    parity = ec.make_codec(name, k, m).encode(data)
    return {
        "codec": name,
        "k": k,
        "m": m,
        "data_hex": [d.hex() for d in data],
        "parity_hex": [bytes(p).hex() for p in parity],
    }


def header_json(header: ec.FragmentHeader) -> dict:
    d = ec.header_to_dict(header)
    d["digests"] = d["digests"].hex()
    return d


def fragment_vectors() -> dict:
    codec = ec.make_codec("zfec", 4, 2)
    fragments = ec.encode_object(OBJECT, codec, CHUNK_SIZE)
    base = dict(
        bucket="bkt",
        key="dir/obj.bin",
        generation="0000018bcfe56800-0000-w1",
        codec="zfec",
        k=4,
        m=2,
        chunk_size=CHUNK_SIZE,
        placement=("n1", "n2", "n3", "n4", "n5", ""),
        created_ns=1_700_000_000_000_000_000,
        meta={"content-type": "application/octet-stream"},
    )
    files = {}
    for index in FRAGMENT_INDEXES:
        chunks = fragments[index]
        header = ec.FragmentHeader(
            kind="data",
            size=len(OBJECT),
            index=index,
            stripes=len(chunks),
            digests=ec.fragment_digests(chunks),
            **base,
        )
        files[str(index)] = {"header": header_json(header), "file_hex": ec.encode_fragment(header, chunks).hex()}
    tombstone = ec.FragmentHeader(
        **{**base, "generation": "0000018bcfe56801-0000-w1", "meta": {}},
        kind="tombstone",
        size=0,
        index=0,
        stripes=0,
        digests=b"",
    )
    return {
        "format_version": ec.FORMAT_VERSION,
        "object_hex": OBJECT.hex(),
        "fragments": files,
        "tombstone": {"header": header_json(tombstone), "file_hex": ec.encode_fragment(tombstone, []).hex()},
    }


def write(name: str, payload: dict) -> None:
    (HERE / name).write_text(json.dumps(payload, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    write("ec_codec_zfec_4_2.json", codec_vector("zfec", 4, 2))
    if "isal" in ec.available_codecs():
        write("ec_codec_isal_4_2.json", codec_vector("isal", 4, 2))
    write("ec_fragment_v1.json", fragment_vectors())
