"""Helpers for the integration tests: polling with a deadline, seeded data, fragment files, the CLI."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from hcstore.cluster.local import LocalCluster
from hcstore.node.store import key_hash

T = TypeVar("T")
CHUNK = 64 << 10          # small chunks, so a few-MiB object spans many stripes


@contextmanager
def started_cluster(path: Path, *, agents: int = 6, ec: str = "4+2", **options: Any) -> Iterator[LocalCluster]:
    """A started local cluster (durability "none" unless told), destroyed on exit even after a failure."""
    options.setdefault("durability", "none")
    cluster = LocalCluster.create(path, agents=agents, ec=ec, **options)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.destroy()


def wait_until(predicate: Callable[[], T], *, timeout: float = 10.0, interval: float = 0.02,
               what: str = "a condition") -> T:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def seeded_bytes(seed: Any, size: int) -> bytes:
    """``size`` pseudo-random bytes that depend only on ``seed``."""
    return random.Random(seed).randbytes(size)


def fragment_files_of(cluster: LocalCluster, bucket: str, key: str,
                      generation: str | None = None) -> dict[int, tuple[str, Path]]:
    """Committed fragment files of one object: fragment index -> (node id, path)."""
    digest = key_hash(bucket, key)
    found: dict[int, tuple[str, Path]] = {}
    for agent in cluster.agents():
        for path in cluster.fragment_files(agent.node_id):
            name_hash, gen, idx, _suffix = path.name.split(".")
            if name_hash == digest and (generation is None or gen == generation):
                found[int(idx)] = (agent.node_id, path)
    return found


def flip_bytes(path: Path, offset: int, count: int = 1) -> None:
    """Invert ``count`` bytes of a file at ``offset`` in place."""
    with open(path, "r+b") as f:
        f.seek(offset)
        data = f.read(count)
        assert len(data) == count, f"{path} has no {count} bytes at offset {offset}"
        f.seek(offset)
        f.write(bytes(b ^ 0xFF for b in data))


HCSTORE = Path(sys.executable).with_name("hcstore")


def run_cli(*args: str, env: dict[str, str] | None = None, stdin: bytes | None = None,
            timeout: float = 60) -> subprocess.CompletedProcess:
    """Run the ``hcstore`` command (the installed script, else ``python -m``) as a subprocess."""
    command = [str(HCSTORE)] if HCSTORE.exists() else [sys.executable, "-m", "hcstore.tools.cli"]
    return subprocess.run([*command, *args], input=stdin, capture_output=True, env=env, timeout=timeout,
                          check=False)


def clean_env(home: Path, **variables: str) -> dict[str, str]:
    """This process's environment without ``HCSTORE_*`` variables, with ``HOME`` at ``home``, plus ``variables``."""
    return {**{k: v for k, v in os.environ.items() if not k.startswith("HCSTORE_")}, "HOME": str(home), **variables}


def cli_ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    """``proc``, asserted to have exited with status 0."""
    assert proc.returncode == 0, (proc.returncode, proc.stdout.decode(), proc.stderr.decode())
    return proc


def one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> str:
    """The error line of a CLI run that must fail: status 1, one line on stderr, no traceback."""
    assert proc.returncode == 1, (proc.returncode, proc.stdout.decode(), proc.stderr.decode())
    message = proc.stderr.decode().strip()
    assert message and len(message.splitlines()) == 1, f"error message is not one line: {message!r}"
    assert "Traceback" not in message
    for needle in needles:
        assert needle in message, message
    return message
