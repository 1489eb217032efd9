"""Helpers for the integration tests: polling with a deadline, seeded data, fragment files, agent
settings, the controller and the command line."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import zmq
from prometheus_client.parser import text_string_to_metric_families

from hcstore.cluster.local import LocalCluster
from hcstore.cluster.source import ClusterSource
from hcstore.node.store import key_hash
from placement import ClusterMap, place

T = TypeVar("T")
CHUNK = 64 << 10  # small chunks, so a few-MiB object spans many stripes


@contextmanager
def started_cluster(path: Path, *, agents: int = 6, ec: str = "4+2", **options: Any) -> Iterator[LocalCluster]:
    """A started local cluster, destroyed on exit even after a failure; durability is the product's default."""
    cluster = LocalCluster.create(path, agents=agents, ec=ec, **options)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.destroy()


def wait_until(
    predicate: Callable[[], T], *, timeout: float = 10.0, interval: float = 0.02, what: str = "a condition"
) -> T:
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


def fragment_files_of(
    cluster: LocalCluster, bucket: str, key: str, generation: str | None = None
) -> dict[int, tuple[str, Path]]:
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


def run_cli(
    *args: str, env: dict[str, str] | None = None, stdin: bytes | None = None, timeout: float = 60
) -> subprocess.CompletedProcess:
    """Run the ``hcstore`` command (the installed script, else ``python -m``) as a subprocess."""
    command = [str(HCSTORE)] if HCSTORE.exists() else [sys.executable, "-m", "hcstore.tools.cli"]
    return subprocess.run([*command, *args], input=stdin, capture_output=True, env=env, timeout=timeout, check=False)


def clean_env(home: Path, **variables: str) -> dict[str, str]:
    """This process's environment without ``HCSTORE_*`` variables, with ``HOME`` at ``home``, plus ``variables``."""
    return {**{k: v for k, v in os.environ.items() if not k.startswith("HCSTORE_")}, "HOME": str(home), **variables}


def connect_raw(sock: Any, cluster: LocalCluster, node: str | None = None, credentials: Any = None) -> None:
    """Connect a raw DEALER ``sock`` to an agent (``node``) or the controller (None) of ``cluster`` as an
    authenticated peer: the cluster's admin key unless ``credentials`` are given (tests of the wire itself)."""
    from hcstore.security import keys
    from hcstore.security.curve import Credentials, secure_client

    credentials = credentials or Credentials(keys.secret_pair(cluster.path / "keys" / "admin.key_secret"))
    if node is None:
        endpoint, server_key = cluster.controller_endpoint(), keys.load(cluster.path / "keys" / "controller.key").public
    else:
        entry = cluster.cluster_map().node(node)
        endpoint, server_key = entry.endpoint, entry.key
    secure_client(sock, credentials, server_key)
    sock.connect(endpoint)


def allow_key(cluster: LocalCluster, role: str, name: str = "") -> Any:
    """A new key pair, allowed with ``role`` by the cluster's admin once every agent has the map that says so;
    returns its :class:`~hcstore.security.curve.Credentials`."""
    from hcstore.security import keys
    from hcstore.security.curve import Credentials

    pair = keys.generate()
    with ClusterSource.local(cluster.path).controller() as controller:
        controller.add_key(pair.public, role, name)
        epoch = controller.get_map().cluster_map.epoch
    with cluster.client() as client:
        wait_until(
            lambda: all(isinstance(s, dict) and s["epoch"] >= epoch for s in client.node_stats().values()),
            timeout=10,
            what=f"every agent on map epoch {epoch}",
        )
    return Credentials(pair)


def key_env(cluster: LocalCluster) -> dict[str, str]:
    """The ``HCSTORE_*`` variables that give a client the local cluster's admin key, as when it is
    reached by its controller's endpoint rather than its directory."""
    keys = cluster.path / "keys"
    return {"HCSTORE_KEY": str(keys / "admin.key_secret"), "HCSTORE_CONTROLLER_KEY": str(keys / "controller.key")}


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


def reconfigure_agent(cluster: LocalCluster, node_id: str, **settings: Any) -> None:
    """Restart one agent with some of its :class:`~hcstore.config.AgentConfig` settings changed."""
    cluster.stop(node_id)
    config = cluster.agent_config(node_id).replace(**settings)
    config.write(cluster.agent(node_id).config_file, include=("node_id",))
    cluster.start(node_id)


def controller_request(cluster: LocalCluster, op: str, **fields: Any) -> dict[str, Any]:
    """One raw request to the cluster's controller; returns its reply header (tests of the wire itself)."""
    with ClusterSource.local(cluster.path).controller(timeout=5.0) as controller:  # the cluster's admin key
        return controller.transport.request(cluster.controller_endpoint(), op, fields).header


def key_placed_on(cluster_map: ClusterMap, bucket: str, node: str, k: int, m: int, prefix: str) -> str:
    """The first key ``prefix/N`` whose placement under ``cluster_map`` includes ``node``."""
    return next(
        key
        for key in (f"{prefix}/{i}" for i in range(1000))
        if node in place(f"{bucket}/{key}", cluster_map, k, m).nodes
    )


def fully_protected(client: Any, bucket: str, keys: Iterable[str], *, excluding: Iterable[str] = ()) -> bool:
    """Every object has all ``k+m`` fragments, none of them on an excluded node."""
    excluded = set(excluding)
    for key in keys:
        version = client.resolve(bucket, key)
        held = [node for node in version.found_at if node]
        if len(held) < version.k + version.m or excluded.intersection(held):
            return False
    return True


# ---------------------------------------------------------------------- scraping metrics


def scrape(url: str) -> list:
    """Every sample an endpoint serves, parsed by prometheus_client's own parser."""
    text = urllib.request.urlopen(url, timeout=10).read().decode()
    return [sample for family in text_string_to_metric_families(text) for sample in family.samples]


def value(url: str, name: str, **labels: str) -> float:
    """The sum of the samples called ``name`` whose labels include ``labels``."""
    return sum(s.value for s in scrape(url) if s.name == name and labels.items() <= s.labels.items())


def agent_urls(cluster, *, excluding=()) -> dict[str, str]:
    """Each running agent's metrics URL, from its ready file."""
    urls = {}
    for agent in cluster.agents():
        if agent.node_id not in excluding and agent.ready_file.exists():
            urls[agent.node_id] = json.loads(agent.ready_file.read_text())["metrics"]
    return urls


def total(cluster, name: str, *, excluding=(), **labels: str) -> float:
    """``name`` summed over the running agents."""
    return sum(value(url, name, **labels) for url in agent_urls(cluster, excluding=excluding).values())


class StubRouter:
    """A stand-in peer: a ROUTER socket on loopback whose thread answers each message ``body`` with the
    frames ``answer(body)`` returns."""

    def __init__(self, answer: Callable[[list[bytes]], list[Any]]) -> None:
        self.socket = zmq.Context.instance().socket(zmq.ROUTER)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.endpoint = f"tcp://127.0.0.1:{self.socket.bind_to_random_port('tcp://127.0.0.1')}"
        self._answer = answer
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            if not self.socket.poll(20):
                continue
            routing, *body = self.socket.recv_multipart()
            self.socket.send_multipart([routing, *self._answer(body)])

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.socket.close(linger=0)
