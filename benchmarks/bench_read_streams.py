"""Large reads by number of read streams and ZeroMQ I/O threads: what ``read_streams`` and ``io_threads``
should be on this machine.

python benchmarks/bench_read_streams.py [--size-mb 1024] [--runs 3] [--streams 1,2,4,8] [--io-threads 2,4,8]

One local cluster (6 agents, EC 4+2, durability none); a 1 GiB object is read warm with ``get_into`` into
one reused buffer, and with ``get`` (new bytes), by a client for each setting; the median of ``--runs``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from hcstore.cluster.local import LocalCluster

BUCKET = "bench"


def main() -> None:
    """Print the read rates of every combination, best first."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mb", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--streams", default="1,2,4,8")
    parser.add_argument("--io-threads", default="2,4,8")
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args()
    size = args.size_mb << 20
    data = np.random.default_rng(5).integers(0, 256, size, dtype=np.uint8).tobytes()
    rows = []
    with tempfile.TemporaryDirectory(prefix="hcstore-streams-", dir=args.data_dir) as tmp:
        cluster = LocalCluster.create(Path(tmp) / "c", agents=6, ec="4+2", durability="none")
        try:
            cluster.start()
            with cluster.client() as writer:
                writer.put(BUCKET, "large", data)
            buffer = bytearray(size)
            for io_threads in map(int, args.io_threads.split(",")):
                for streams in map(int, args.streams.split(",")):
                    with cluster.client(read_streams=streams, io_threads=io_threads) as client:
                        into = _median_rate(lambda c=client: c.get_into(BUCKET, "large", buffer), size, args.runs)
                        fresh = _median_rate(lambda c=client: c.get(BUCKET, "large"), size, args.runs)
                    rows.append((into, fresh, streams, io_threads))
                    setting = f"read_streams {streams} io_threads {io_threads}"
                    print(f"{setting}: get_into {into:,.0f} MB/s, get {fresh:,.0f} MB/s", flush=True)
            if buffer != data:
                raise AssertionError("benchmark read returned wrong bytes")
        finally:
            cluster.destroy()
    best = max(rows)
    print(f"{os.cpu_count()} cores; best get_into: read_streams {best[2]} io_threads {best[3]} ({best[0]:,.0f} MB/s)")
    print(f"BEST_STREAMS={best[2]} BEST_IO_THREADS={best[3]}")


def _median_rate(read, size: int, runs: int) -> float:
    rates = []
    for _ in range(runs):
        t0 = time.perf_counter()
        read()
        rates.append(size / (time.perf_counter() - t0) / 1e6)
    return statistics.median(rates)


if __name__ == "__main__":
    main()
