"""A put and a get of an object far larger than the client's memory budget stay bounded.

The object is 20x the client's bounded working set (window x (k+m) x chunk = 24 MiB), streamed
with an unknown size from a generator and read back through the streaming reader.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SIZE_MIB = 512
HERE = Path(__file__).parent


@pytest.mark.slow
def test_streaming_put_and_get_keep_memory_bounded(make_cluster):
    cluster = make_cluster()
    out = subprocess.run(
        [sys.executable, str(HERE / "stream_proc.py"), str(cluster.path), str(SIZE_MIB)],
        capture_output=True,
        text=True,
        timeout=240,
        check=True,
    )
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["size"] == SIZE_MIB << 20
    assert report["get_digest"] == report["put_digest"]
    # The data path adds its windows (put: 4 stripes in flight; get: 2 batches of 4 stripes plus one
    # cached span), about 100 MiB at most here, however large the object: a leak would show 512 MiB.
    assert report["maxrss_mib"] - report["baseline_mib"] < 128, report
