"""``hcstore.Client``: put, get, open, delete, list and stat over a cluster of agents.

A client holds no live socket when pickled: it is rebuilt from its cluster
argument and config in the receiving process, and sockets are made there on
first use (see :mod:`hcstore.wire.transport`).

Example::

    client = hcstore.Client("/tmp/hcstore-cluster")          # or Client() inside `hcstore up`
    client.put("ckpt", "step-100/model.pt", data)
    assert client.get("ckpt", "step-100/model.pt") == data
"""

from __future__ import annotations

import io
import logging
import os
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from hcstore.config import ClientConfig
from hcstore.errors import AgentUnavailable, ClusterNotFound, HCStoreError, InvalidRequest, NotEnoughNodes, ObjectChanged, ObjectNotFound
from hcstore.generation import HybridClock
from hcstore.cluster.directory import (
    controller_endpoint,
    find_cluster_dir,
    map_stamp,
    read_cluster_ec,
    read_cluster_map,
)
from hcstore.names import check_bucket, check_prefix
from hcstore.wire.protocol import Reply
from hcstore.client.reader import ObjectReader, iter_range, read_range
from hcstore.client.access import CorruptionReport
from hcstore.client.headers import fragment_header, tombstone_layout
from hcstore.client.versions import ObjectVersion, resolve
from hcstore.wire.transport import Transport
from hcstore.client.writer import ObjectWriter, PutResult
from placement import ClusterMap, place

log = logging.getLogger(__name__)
_COPY_BLOCK = 8 << 20
_LIST_PAGE = 1000
_MAP_RECHECK = 1.0
_MAP_MIN_AGE = 0.1


@dataclass(frozen=True)
class ObjectInfo:
    """What ``stat`` and ``list`` report of an object."""

    bucket: str
    key: str
    size: int
    generation: str
    codec: str = ""
    k: int = 0
    m: int = 0
    fragments: int = 0          # fragments found
    degraded: bool = False
    meta: dict[str, str] | None = None


class Client:
    """A client of one hcstore cluster.

    Args:
        cluster: a local cluster directory, a controller's endpoint (``"tcp://host:port"``, as
            ``ray_integration.deploy`` prints), a :class:`placement.ClusterMap`, or None to find the
            running cluster (``HCSTORE_CLUSTER``, a directory or endpoint, or ``hcstore up``'s pointer).
        config: a full :class:`ClientConfig`; or pass its fields as keyword arguments
            (argument > ``HCSTORE_*`` environment > default).
    """

    def __init__(self, cluster: str | os.PathLike[str] | ClusterMap | None = None, *,
                 config: ClientConfig | None = None, **settings: Any) -> None:
        self._dir: Path | None = None
        self._controller = ""
        ec_chosen = config is not None or settings.get("ec") is not None or "HCSTORE_EC" in os.environ
        if cluster is None and os.environ.get("HCSTORE_CLUSTER", "").startswith("tcp://"):
            cluster = os.environ["HCSTORE_CLUSTER"]
        if isinstance(cluster, ClusterMap):
            self._cluster_arg: Any = cluster
            self._map = cluster
        elif isinstance(cluster, str) and cluster.startswith("tcp://"):
            self._cluster_arg = self._controller = cluster
            self._map = ClusterMap(0, ())
        else:
            self._dir = find_cluster_dir(cluster)
            self._cluster_arg = str(self._dir)
            self._map = read_cluster_map(self._dir)
            if not ec_chosen:
                settings["ec"] = read_cluster_ec(self._dir)     # the cluster's EC is this client's default
        self.config = config.replace(**settings) if config else ClientConfig.from_env(**settings)
        self._stamp = map_stamp(self._dir) if self._dir else ()
        self._checked = 0.0
        self._from_controller = False
        self._lock = threading.Lock()
        self.transport = Transport(connect_timeout=self.config.connect_timeout,
                                   request_timeout=self.config.request_timeout, io_threads=self.config.io_threads)
        self.clock = HybridClock()
        self.corruptions: list[CorruptionReport] = []
        if self._controller:
            self._first_map_from_controller(explicit_ec=ec_chosen)

    def _first_map_from_controller(self, *, explicit_ec: bool) -> None:
        try:
            reply = self.transport.request(self._controller, "get_map", {},
                                           timeout=max(self.config.request_timeout, 5.0))
        except HCStoreError as exc:
            raise ClusterNotFound(f"no hcstore controller answers at {self._controller}: {exc}") from None
        self._map = ClusterMap.from_dict(reply.header["map"])
        self._from_controller = True
        self._checked = time.monotonic()
        if not explicit_ec and reply.header.get("ec"):
            self.config = self.config.replace(ec=reply.header["ec"])     # the cluster's EC is the default

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_client, (self._cluster_arg, self.config))

    # ------------------------------------------------------------------ cluster map

    @property
    def cluster_map(self) -> ClusterMap:
        """The current cluster map.

        Asked of the controller every ``_MAP_RECHECK`` seconds, and at once when an agent's
        reply carries a newer epoch. With no controller running, a local cluster's map is
        read from its directory; a client that has a controller's map keeps it while the
        controller is down.
        """
        age = time.monotonic() - self._checked
        stale = age > _MAP_RECHECK or (self.transport.max_epoch > self._map.epoch and age > _MAP_MIN_AGE)
        if (self._dir is not None or self._controller) and stale:
            with self._lock:
                self._checked = time.monotonic()
                fresh = self._load_map()
                if fresh.epoch != self._map.epoch:
                    self.transport.forgive(n.endpoint for n in fresh.nodes if n.state == "alive")
                self._map = fresh
        return self._map

    def _load_map(self) -> ClusterMap:
        endpoint = self._controller or controller_endpoint(self._dir)
        if endpoint:
            try:
                reply = self.transport.request(endpoint, "get_map", {}, timeout=min(1.0, self.config.request_timeout))
                fresh = ClusterMap.from_dict(reply.header["map"])
                first, self._from_controller = not self._from_controller, True
                return fresh if first or fresh.epoch >= self._map.epoch else self._map
            except HCStoreError as exc:
                log.info("controller %s unavailable (%s); using the cached cluster map", endpoint, exc)
        if self._from_controller or self._dir is None:
            return self._map
        stamp = map_stamp(self._dir)
        if stamp != self._stamp:
            self._stamp = stamp
            return read_cluster_map(self._dir)
        return self._map

    def refresh(self) -> ClusterMap:
        """Re-read the cluster map now, and give every agent another chance."""
        self._checked = 0.0
        self.transport.forgive(n.endpoint for n in self._map.nodes)
        return self.cluster_map

    def endpoint(self, node_id: str) -> str:
        """The endpoint of a node of the current map.

        Raises:
            AgentUnavailable: the node is not in the map or has no endpoint (down).
        """
        try:
            endpoint = self.cluster_map.node(node_id).endpoint
        except KeyError:
            raise AgentUnavailable(f"node {node_id!r} is not in the cluster map") from None
        if not endpoint:
            raise AgentUnavailable(f"node {node_id} is down (no endpoint in the cluster map)")
        return endpoint

    def is_unavailable(self, node_id: str) -> bool:
        """True when a node is down in the map, or failed or answered too slowly moments ago."""
        try:
            endpoint = self.endpoint(node_id)
        except AgentUnavailable:
            return True
        return self.transport.is_unavailable(endpoint) or self.transport.is_slow(endpoint)

    def locate_fanout(self) -> int:
        """How many of a key's top-ranked nodes are asked first where its fragments are."""
        from ec import parse_ec

        k, m = parse_ec(self.config.ec)
        return k + m + 2

    def report_corruption(self, report: CorruptionReport) -> None:
        log.warning("corrupt chunk: hcstore://%s/%s generation %s fragment %d stripe %d on node %s",
                    report.bucket, report.key, report.generation, report.fragment, report.stripe, report.node)
        self.corruptions.append(report)

    # ------------------------------------------------------------------ writes

    def writer(self, bucket: str, key: str, *, size: int | None = None, ec: str | None = None,
               codec: str | None = None, meta: dict[str, str] | None = None) -> ObjectWriter:
        """A writable stream that becomes the object's new version when closed."""
        return ObjectWriter(self, bucket, key, size=size, ec=ec, codec=codec, meta=meta)

    def put(self, bucket: str, key: str, data: bytes | bytearray | memoryview | BinaryIO | Iterable[bytes], *,
            size: int | None = None, ec: str | None = None, codec: str | None = None,
            meta: dict[str, str] | None = None) -> PutResult:
        """Store ``data`` (bytes, a binary file or stream, or an iterable of bytes) as a new version.

        Returns when the fragments are committed on ``k+m`` distinct nodes, or
        on the write quorum (the result then says ``degraded``).

        Raises:
            NotEnoughNodes: the write quorum could not be reached; the previous version is unchanged.
            StoreFull: the nodes that could take the object are full.
            InvalidRequest: a bad bucket, key or setting.
        """
        if isinstance(data, (bytes, bytearray, memoryview)):
            for attempt in (1, 2):              # an agent that knows a newer map makes us retry once with it
                epoch = self.cluster_map.epoch
                try:
                    with self.writer(bucket, key, size=memoryview(data).nbytes, ec=ec, codec=codec, meta=meta) as w:
                        w.write(data)
                    return w.close()
                except NotEnoughNodes:
                    if attempt == 2 or self.transport.max_epoch <= epoch or self.refresh().epoch <= epoch:
                        raise
        if size is None and hasattr(data, "fileno"):
            try:
                size = os.fstat(data.fileno()).st_size - data.tell()  # type: ignore[union-attr]
            except (OSError, io.UnsupportedOperation, AttributeError):
                size = None
        with self.writer(bucket, key, size=size, ec=ec, codec=codec, meta=meta) as w:
            if hasattr(data, "readinto"):
                block = bytearray(_COPY_BLOCK)
                while n := data.readinto(block):  # type: ignore[union-attr]
                    w.write(memoryview(block)[:n])
            elif hasattr(data, "read"):
                while chunk := data.read(_COPY_BLOCK):  # type: ignore[union-attr]
                    w.write(chunk)
            else:
                for chunk in data:  # type: ignore[union-attr]
                    w.write(chunk)
        return w.close()

    def put_file(self, bucket: str, key: str, path: str | os.PathLike[str], **options: Any) -> PutResult:
        with open(path, "rb") as f:
            return self.put(bucket, key, f, **options)

    def delete(self, bucket: str, key: str) -> None:
        """Delete an object by writing a tombstone generation on its placement nodes.

        Raises:
            ObjectNotFound: there is no such object.
        """
        version = resolve(self, bucket, key)
        gen = self.clock.now()
        placed = place(f"{bucket}/{key}", self.cluster_map, version.k, version.m).nodes
        nodes = tuple(sorted({n for n in version.locations if n} | set(placed)))
        layout = tombstone_layout(bucket, key, gen, len(nodes))
        ids = []
        for index, node in enumerate(nodes):
            header = fragment_header(layout, index, nodes)
            try:
                ids.append(self.transport.send(self.endpoint(node), "tombstone", {"header": header}))
            except HCStoreError as exc:
                log.info("delete %s/%s: node %s skipped: %s", bucket, key, node, exc)
        accepted = sum(isinstance(r, Reply) and r.ok for r in self.transport.wait(ids).values())
        if accepted == 0:
            raise NotEnoughNodes(f"delete hcstore://{bucket}/{key}: no agent accepted the tombstone")

    # ------------------------------------------------------------------ reads

    def resolve(self, bucket: str, key: str) -> ObjectVersion:
        """The newest readable version of an object (see :func:`hcstore.client.reader.resolve`)."""
        return resolve(self, bucket, key)

    def get(self, bucket: str, key: str, *, offset: int = 0, length: int | None = None) -> bytes:
        """The object's bytes, or ``length`` bytes from ``offset``.

        Raises:
            ObjectNotFound: no such object.
            NotEnoughFragments: more than ``m`` fragments are lost or corrupt.
        """
        for attempt in range(3):
            version = resolve(self, bucket, key)
            start, count = _check_range(version.size, offset, length)
            try:
                return b"".join(iter_range(self, version, start, count))
            except ObjectChanged:
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def get_into(self, bucket: str, key: str, buffer: Any, *, offset: int = 0) -> int:
        """Read the object (from ``offset``) into a writable buffer, e.g. a numpy array; returns bytes read.

        Raises:
            ValueError: the buffer is too small for the object.
        """
        version = resolve(self, bucket, key)
        start, count = _check_range(version.size, offset, None)
        read_range(self, version, start, count, buffer)
        return count

    def open(self, bucket: str, key: str) -> io.BufferedReader:
        """A seekable binary stream over the object's current version."""
        return io.BufferedReader(ObjectReader(self, resolve(self, bucket, key)), buffer_size=1 << 20)

    def get_file(self, bucket: str, key: str, path: str | os.PathLike[str]) -> int:
        """Stream an object into a local file (written to a temporary name, then renamed)."""
        target = Path(path)
        tmp = target.with_name(f".{target.name}.hcstore-part")
        version = resolve(self, bucket, key)
        reader = ObjectReader(self, version)
        written = 0
        try:
            with open(tmp, "wb") as f:
                while chunk := reader.read(_COPY_BLOCK):
                    f.write(chunk)
                    written += len(chunk)
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        return written

    def stat(self, bucket: str, key: str) -> ObjectInfo:
        """Size, generation, coding and protection of an object.

        Raises:
            ObjectNotFound: no such object.
        """
        v = resolve(self, bucket, key)
        return ObjectInfo(bucket, key, v.size, v.generation, v.codec, v.k, v.m, v.found, v.degraded, v.meta)

    def exists(self, bucket: str, key: str) -> bool:
        try:
            resolve(self, bucket, key)
            return True
        except ObjectNotFound:
            return False

    def list(self, bucket: str, prefix: str = "") -> list[ObjectInfo]:
        """Objects under ``prefix``, merged over every agent (asked all at once), in key order."""
        check_bucket(bucket)
        check_prefix(prefix)
        newest: dict[str, tuple[str, str, int]] = {}
        pending = {n.endpoint: "" for n in self.cluster_map.nodes if n.endpoint}     # endpoint -> start_after
        while pending:
            replies = self.transport.broadcast(pending, "list", {
                "bucket": bucket, "prefix": prefix, "limit": _LIST_PAGE}, start_after=pending)
            more = {}
            for endpoint, reply in replies.items():
                if isinstance(reply, HCStoreError):
                    log.info("list: agent %s skipped: %s", endpoint, reply)
                    continue
                entries = reply.header.get("entries", [])
                for key, gen, kind, size in entries:
                    if key not in newest or gen > newest[key][0]:
                        newest[key] = (gen, kind, size)
                if len(entries) == _LIST_PAGE:
                    more[endpoint] = entries[-1][0]
            pending = more
        return [ObjectInfo(bucket, key, size, gen) for key, (gen, kind, size) in sorted(newest.items())
                if kind != "tombstone"]

    def buckets(self) -> list[str]:
        names: set[str] = set()
        for result in self.transport.broadcast([n.endpoint for n in self.cluster_map.nodes if n.endpoint],
                                               "buckets", {}).values():
            if isinstance(result, Reply) and result.ok:
                names.update(result.header.get("buckets", []))
        return sorted(names)

    def node_stats(self) -> dict[str, dict[str, Any] | HCStoreError]:
        """Each node's ``node_stats`` reply (or the error that stood in its way), by node id."""
        nodes = self.cluster_map.nodes
        results = self.transport.broadcast([n.endpoint for n in nodes if n.endpoint], "node_stats", {}, timeout=2.0)
        out: dict[str, dict[str, Any] | HCStoreError] = {}
        for node in nodes:
            result = results.get(node.endpoint) if node.endpoint else AgentUnavailable(f"node {node.id} is down")
            out[node.id] = result.header if isinstance(result, Reply) and result.ok else (
                result if isinstance(result, HCStoreError) else HCStoreError("no reply"))
        return out

    def close(self) -> None:
        self.transport.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *_: Any) -> None:
        self.close()


def _rebuild_client(cluster: Any, config: ClientConfig) -> Client:
    return Client(cluster, config=config)


def _check_range(size: int, offset: int, length: int | None) -> tuple[int, int]:
    if offset < 0 or (length is not None and length < 0):
        raise InvalidRequest(f"invalid range: offset={offset} length={length}")
    if offset > size:
        raise InvalidRequest(f"offset {offset} is past the end of a {size}-byte object")
    return offset, (size - offset if length is None else min(length, size - offset))
