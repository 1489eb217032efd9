"""A slow writer process for crash tests: puts one object through ``Client.writer`` in pieces.

Usage: ``python writer_proc.py CLUSTER_DIR BUCKET KEY SIZE SEED CHUNK_SIZE PIECE DELAY``

The content is ``random.Random(SEED).randbytes(SIZE)``, so the test knows it.
Prints ``STARTED``, then ``STRIPES n`` after every piece (n: whole stripes
written so far), ``CLOSING`` before the commit and ``DONE <generation>`` after;
each line is flushed at once so a parent can kill the process at a chosen point.
"""

from __future__ import annotations

import random
import sys
import time

from hcstore import Client


def main(argv: list[str]) -> int:
    cluster, bucket, key = argv[0], argv[1], argv[2]
    size, seed, chunk_size, piece = int(argv[3]), int(argv[4]), int(argv[5]), int(argv[6])
    delay = float(argv[7])
    data = random.Random(seed).randbytes(size)
    with Client(cluster, chunk_size=chunk_size, request_timeout=5.0) as client:
        k = int(client.config.ec.split("+")[0])
        stripe_bytes = k * chunk_size
        print("STARTED", flush=True)
        with client.writer(bucket, key, size=size) as writer:
            for start in range(0, size, piece):
                writer.write(data[start:start + piece])
                print(f"STRIPES {min(start + piece, size) // stripe_bytes}", flush=True)
                time.sleep(delay)      # pacing, so the parent can kill mid-put
            print("CLOSING", flush=True)
        print(f"DONE {writer.result.generation}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
