"""A writer killed with SIGKILL at any point of a put leaves exactly the old or exactly the new version."""

from __future__ import annotations

import queue
import random
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from hcstore import ObjectNotFound
from integration_support import CHUNK, fragment_files_of, seeded_bytes

BUCKET = "crash"
STRIPE = 4 * CHUNK
NEW_SIZE = 4 * (1 << 20) + 4321
WRITER = Path(__file__).with_name("writer_proc.py")


class WriterProcess:
    """``writer_proc.py`` as a child process whose stdout lines arrive on a queue."""

    def __init__(self, cluster_dir: Path, key: str, seed: int, *, piece: int = CHUNK, delay: float = 0.005,
                 size: int = NEW_SIZE) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(WRITER), str(cluster_dir), BUCKET, key, str(size), str(seed), str(CHUNK),
             str(piece), str(delay)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(line.strip())
        self.lines.put(None)

    def wait_for(self, predicate, timeout: float = 20.0) -> str:
        """Read lines until one satisfies ``predicate``; fails on EOF or time-out."""
        while True:
            try:
                line = self.lines.get(timeout=timeout)
            except queue.Empty:
                raise AssertionError(f"writer printed nothing matching within {timeout}s") from None
            if line is None:
                raise AssertionError(f"writer exited ({self.proc.wait()}): {self.proc.stderr.read()}")
            if predicate(line):
                return line

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)
        self.proc.stdout.close()
        self.proc.stderr.close()


@pytest.fixture
def crash_cluster(make_cluster):
    cluster = make_cluster()
    with cluster.client(chunk_size=CHUNK, request_timeout=5.0) as client:
        yield cluster, client


def _stripes(line: str) -> int:
    return int(line.split()[1]) if line.startswith("STRIPES") else -1


def test_writer_killed_mid_put_leaves_old_version(crash_cluster):
    cluster, client = crash_cluster
    old = seeded_bytes("old", 3 * STRIPE + 99)
    old_result = client.put(BUCKET, "ckpt", old)
    writer = WriterProcess(cluster.path, "ckpt", seed=1)
    writer.wait_for(lambda line: _stripes(line) >= 3)
    writer.kill()
    assert writer.proc.returncode == -signal.SIGKILL
    assert client.get(BUCKET, "ckpt") == old
    info = client.stat(BUCKET, "ckpt")
    assert (info.generation, info.size) == (old_result.generation, len(old))
    [entry] = client.list(BUCKET, "ckpt")
    assert entry.generation == old_result.generation
    # No upload left behind blocks the key: a new put goes through and wins.
    new = seeded_bytes("after", 2 * STRIPE)
    assert client.put(BUCKET, "ckpt", new).generation > old_result.generation
    assert client.get(BUCKET, "ckpt") == new


def test_writer_killed_mid_put_of_new_key_leaves_nothing(crash_cluster):
    cluster, client = crash_cluster
    writer = WriterProcess(cluster.path, "fresh", seed=2)
    writer.wait_for(lambda line: _stripes(line) >= 5)
    writer.kill()
    with pytest.raises(ObjectNotFound):
        client.get(BUCKET, "fresh")
    assert client.list(BUCKET, "fresh") == []
    assert fragment_files_of(cluster, BUCKET, "fresh") == {}


def test_writer_killed_at_random_points_is_all_or_nothing(crash_cluster):
    cluster, client = crash_cluster
    rng = random.Random(2024)
    size = 2 * (1 << 20) + 77
    total_pieces = -(-size // (2 * CHUNK))
    outcomes = []
    for attempt in range(6):
        old = seeded_bytes(f"old-{attempt}", rng.randrange(1, 4 * STRIPE))
        key = f"loop-{attempt}"
        old_gen = client.put(BUCKET, key, old).generation
        seed = 100 + attempt
        new = random.Random(seed).randbytes(size)
        writer = WriterProcess(cluster.path, key, seed, piece=2 * CHUNK, delay=0.002, size=size)
        # Kill after a random line: anywhere from the first stripe to just after the commit began.
        stop_after = rng.randrange(0, total_pieces + 2)
        seen = 0
        def counted(line: str) -> bool:
            nonlocal seen
            seen += line.startswith(("STRIPES", "CLOSING"))
            return seen > stop_after or line.startswith("DONE")
        writer.wait_for(counted)
        writer.kill()
        got = client.get(BUCKET, key)
        info = client.stat(BUCKET, key)
        if got == old:
            assert info.generation == old_gen, attempt
            outcomes.append("old")
        else:
            assert got == new, f"attempt {attempt}: neither the old nor the new version"
            assert info.generation > old_gen and info.size == size
            outcomes.append("new")
    print("outcomes", outcomes)
    assert "old" in outcomes      # the seeded kill points include mid-put kills
