"""Helper process for test_bounded_memory: streams a large object in and out, reports peak RSS.

    python stream_proc.py CLUSTER_DIR SIZE_MIB
Prints one JSON line: {"put_digest", "get_digest", "size", "baseline_mib", "maxrss_mib"}.
"""

from __future__ import annotations

import json
import resource
import sys

import blake3

from hcstore.client.client import Client

BLOCK = 1 << 20


def blocks(count: int):
    base = bytearray(range(256)) * (BLOCK // 256)
    for i in range(count):
        base[:8] = i.to_bytes(8, "little")
        yield bytes(base)


def main() -> None:
    cluster_dir, size_mib = sys.argv[1], int(sys.argv[2])
    client = Client(cluster_dir, chunk_size=BLOCK, window=4)
    client.put("stream", "warm-up", b"x" * (3 * BLOCK))  # import and connect everything first
    client.get("stream", "warm-up")
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    put_hash = blake3.blake3()
    with client.writer("stream", "big") as writer:  # size unknown: a true stream
        for block in blocks(size_mib):
            put_hash.update(block)
            writer.write(block)
    result = writer.close()
    get_hash = blake3.blake3()
    with client.open("stream", "big") as reader:
        while piece := reader.read(4 * BLOCK):
            get_hash.update(piece)
    print(
        json.dumps(
            {
                "put_digest": put_hash.hexdigest(),
                "get_digest": get_hash.hexdigest(),
                "size": result.size,
                "baseline_mib": baseline,
                "maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            }
        )
    )


if __name__ == "__main__":
    main()
