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

import builtins
import io
import logging
import os
import threading
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

from ec import parse_ec
from hcstore.client.access import CorruptionReport
from hcstore.client.reader import ObjectReader, read_bytes, read_range
from hcstore.client.retry import retrying
from hcstore.client.upload import store_tombstone
from hcstore.client.versions import ObjectVersion, resolve
from hcstore.client.writer import ObjectWriter, PutResult
from hcstore.cluster.source import ClusterSource
from hcstore.coding import check_codec, parse_ec_spec
from hcstore.config import ClientConfig
from hcstore.control.client import ControllerClient
from hcstore.errors import (
    AgentUnavailable,
    HCStoreError,
    InvalidRequest,
    NotProven,
    ObjectNotFound,
)
from hcstore.generation import HybridClock
from hcstore.names import check_bucket, check_prefix
from hcstore.security.curve import Credentials
from hcstore.security.identity import client_credentials
from hcstore.wire.protocol import Reply
from hcstore.wire.transport import Transport
from placement import ClusterMap, home_set, listing_proof, schemes_of, write_quorum

log = logging.getLogger(__name__)
T = TypeVar("T")
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
    fragments: int = 0  # fragments found
    degraded: bool = False
    meta: dict[str, str] | None = None


class Listing(builtins.list[T]):
    """The entries of a listing, in order, and whether they are all there.

    A plain list to use; a listing asked for with ``partial=True`` may lack entries.

    Attributes:
        complete: Every entry is there: fewer nodes than the smallest write quorum did not
            answer, so each object (or bucket) had a holder among those that did.
        unreached: The nodes that did not answer (some may be silent even when complete).
    """

    def __init__(self, entries: Iterable[T] = (), *, unreached: Iterable[str] = (), complete: bool = True) -> None:
        super().__init__(entries)
        self.complete = complete
        self.unreached = tuple(unreached)


class Client:
    """A client of one hcstore cluster.

    Args:
        cluster: a :class:`~hcstore.cluster.source.ClusterSource`, a local cluster directory, a
            controller's endpoint (``"tcp://host:port"``, as ``ray_integration.deploy`` prints), a
            :class:`placement.ClusterMap` (a fixed map, never refreshed), or None to find the running
            cluster (``HCSTORE_CLUSTER``, or ``hcstore up``'s pointer).
        config: a full :class:`ClientConfig`; or pass its fields as keyword arguments
            (argument > ``HCSTORE_*`` environment > default). The cluster's own EC is the default
            when neither names one.
        credentials: this client's key pair and the controller's public key, given in memory
            (None: found as :func:`hcstore.security.identity.client_credentials` says). A pickled
            client carries them: pickle it only into processes you would give the key to.

    Raises:
        ClusterNotFound: no cluster where ``cluster`` (or the environment) points.
        InvalidRequest: a bad setting, or a malformed endpoint.
    """

    def __init__(
        self,
        cluster: str | os.PathLike[str] | ClusterSource | ClusterMap | None = None,
        *,
        config: ClientConfig | None = None,
        credentials: tuple[Credentials, str] | None = None,
        **settings: Any,
    ) -> None:
        ec_chosen = config is not None or settings.get("ec") is not None or "HCSTORE_EC" in os.environ
        self.source: ClusterSource | None = None
        if isinstance(cluster, ClusterMap):
            self._map = cluster
        else:
            self.source = ClusterSource.find(cluster)
            self._map = self.source.directory_map() if self.source.is_local else ClusterMap(0, ())
            if self.source.is_local and not ec_chosen:
                settings["ec"] = self.source.default_ec()  # the cluster's EC is this client's default
        self.config = config.replace(**settings) if config else ClientConfig.from_env(**settings)
        self._stamp = self.source.map_stamp() if self.source else ()
        self._checked = 0.0
        self._from_controller = False
        self._lock = threading.Lock()
        self.credentials, self._controller_key = credentials or client_credentials(
            self.config, self.source.directory if self.source else None
        )
        self.transport = Transport(
            connect_timeout=self.config.connect_timeout,
            request_timeout=self.config.request_timeout,
            io_threads=self.config.io_threads,
            credentials=self.credentials,
        )
        self.adopt_map(self._map)
        self.clock = HybridClock()
        self.corruptions: list[CorruptionReport] = []
        self._secret = b""  # the cluster secret, once asked for; never pickled (see __reduce__)
        self._read_pool: ThreadPoolExecutor | None = None
        if self.source is not None and not self.source.is_local:
            self._first_map_from_controller(explicit_ec=ec_chosen)

    def _first_map_from_controller(self, *, explicit_ec: bool) -> None:
        assert self.source is not None
        reply = self.source.view(self.controller(timeout=max(self.config.request_timeout, 5.0)))
        self.adopt_map(reply.cluster_map)
        self._from_controller = True
        self._checked = time.monotonic()
        if not explicit_ec and reply.ec:
            self.config = self.config.replace(ec=reply.ec)  # the cluster's EC is the default

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_client, (self.source or self._map, self.config, (self.credentials, self._controller_key)))

    # ------------------------------------------------------------------ cluster map

    def controller(self, *, timeout: float | None = None) -> ControllerClient:
        """A client of the cluster's controller, sharing this client's sockets.

        Raises:
            ControllerUnavailable: a local cluster whose controller is not running.
            InvalidRequest: this client was given a fixed map, and knows no controller.
        """
        if self.source is None:
            raise InvalidRequest("this client was given a fixed cluster map and knows no controller")
        return ControllerClient(
            self.source.require_controller(),
            transport=self.transport,
            timeout=self.config.request_timeout if timeout is None else timeout,
            server_key=self._controller_key,
        )

    def adopt_map(self, cluster_map: ClusterMap) -> None:
        """Use ``cluster_map`` from now on, and expect each node's agent to hold the public key it lists."""
        self._map = cluster_map
        self.transport.trust_nodes((node.endpoint, node.key) for node in cluster_map.nodes)

    def cluster_secret(self) -> bytes:
        """The cluster secret (:mod:`hcstore.secret`), asked of the controller once and kept by this client.

        It signs and verifies values that run code when read (see :mod:`ray_integration.values`).
        A client that is pickled leaves it behind; the copy asks again when it needs it.

        Raises:
            InvalidRequest: the controller has no secret, or this client was given a fixed map.
            ControllerUnavailable: the controller is not running or does not answer.
        """
        if not self._secret:
            secret = self.controller(timeout=max(self.config.request_timeout, 5.0)).cluster_secret()
            with self._lock:
                self._secret = self._secret or secret
        return self._secret

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
        if self.source is not None and stale:
            with self._lock:
                self._checked = time.monotonic()
                fresh = self._load_map()
                if fresh.epoch != self._map.epoch:
                    self.transport.forgive(n.endpoint for n in fresh.nodes if n.state == "alive")
                self.adopt_map(fresh)
        return self._map

    def _load_map(self) -> ClusterMap:
        assert self.source is not None
        if self.source.controller_endpoint():
            try:
                held = self._map if self._from_controller else None  # its changes since, when it is the controller's
                fresh = self.controller(timeout=min(1.0, self.config.request_timeout)).get_map(held).cluster_map
                first, self._from_controller = not self._from_controller, True
                return fresh if first or fresh.epoch >= self._map.epoch else self._map
            except HCStoreError as exc:
                log.info(
                    "%s: no map from the controller (%s); using the cached cluster map", self.source.describe(), exc
                )
        if self._from_controller or not self.source.is_local:
            return self._map
        stamp = self.source.map_stamp()
        if stamp != self._stamp:
            self._stamp = stamp
            return self.source.directory_map()
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

    def report_corruption(self, report: CorruptionReport) -> None:
        """Log a chunk whose bytes did not match their digest, and keep it in ``corruptions``."""
        log.warning(
            "corrupt chunk: hcstore://%s/%s generation %s fragment %d stripe %d on node %s",
            report.bucket,
            report.key,
            report.generation,
            report.fragment,
            report.stripe,
            report.node,
        )
        self.corruptions.append(report)

    # ------------------------------------------------------------------ writes

    def writer(
        self,
        bucket: str,
        key: str,
        *,
        size: int | None = None,
        ec: str | None = None,
        codec: str | None = None,
        meta: dict[str, str] | None = None,
    ) -> ObjectWriter:
        """A writable stream that becomes the object's new version when closed.

        Raises:
            InvalidRequest: a bad bucket, key, size or EC scheme.
            UnknownCodec: the codec named (or ``HCSTORE_CODEC``) is unknown or not installed here.
        """
        codec = codec or self.config.codec
        if ec is not None or codec:
            k, m = parse_ec_spec(ec or self.config.ec, what="ec")
            if codec:
                check_codec(codec, k, m)
        return ObjectWriter(self, bucket, key, size=size, ec=ec, codec=codec, meta=meta)

    def put(
        self,
        bucket: str,
        key: str,
        data: bytes | bytearray | memoryview | BinaryIO | Iterable[bytes | bytearray | memoryview],
        *,
        size: int | None = None,
        ec: str | None = None,
        codec: str | None = None,
        meta: dict[str, str] | None = None,
    ) -> PutResult:
        """Store ``data`` (bytes, a binary file or stream, or an iterable of bytes) as a new version.

        Returns when the fragments are committed on ``k+m`` distinct nodes, or
        on the write quorum (the result then says ``degraded``). A put from bytes or
        a seekable file is retried as :mod:`hcstore.client.retry` says (e.g. when an
        agent knows a newer cluster map); one from a stream is tried once.

        Raises:
            NotEnoughNodes: the write quorum could not be reached; the previous version is unchanged.
            StoreFull: the nodes that could take the object are full.
            InvalidRequest: a bad bucket, key or setting.
        """
        options: dict[str, Any] = {"ec": ec, "codec": codec, "meta": meta}
        what = f"put hcstore://{bucket}/{key}"
        if isinstance(data, (bytes, bytearray, memoryview)):
            nbytes = memoryview(data).nbytes
            return retrying(self, lambda: self._put_once(bucket, key, (data,), nbytes, options), what=what)
        if size is None and hasattr(data, "fileno"):
            try:
                size = os.fstat(data.fileno()).st_size - data.tell()  # type: ignore[union-attr, attr-defined]
            except (OSError, io.UnsupportedOperation, AttributeError):
                size = None
        start = _seekable_position(data)
        if start is None:  # a stream cannot be sent twice: one attempt
            return self._put_once(bucket, key, _pieces(data), size, options)
        seekable: BinaryIO = data  # type: ignore[assignment]

        def from_start() -> PutResult:
            seekable.seek(start)
            return self._put_once(bucket, key, _pieces(seekable), size, options)

        return retrying(self, from_start, what=what)

    def _put_once(
        self, bucket: str, key: str, pieces: Iterable[Any], size: int | None, options: dict[str, Any]
    ) -> PutResult:
        """One attempt at a put: stream ``pieces`` into a new version."""
        with self.writer(bucket, key, size=size, **options) as w:
            for piece in pieces:
                w.write(piece)
        return w.close()

    def put_file(self, bucket: str, key: str, path: str | os.PathLike[str], **options: Any) -> PutResult:
        """Store a local file as a new version (see :meth:`put`)."""
        with open(path, "rb") as f:
            return self.put(bucket, key, f, **options)

    def delete(self, bucket: str, key: str) -> None:
        """Delete an object by writing a tombstone generation on ``m + 1`` nodes of its home set.

        A delete that finds a tombstone with too few holders (an earlier delete that did not
        complete) completes that one.

        Raises:
            ObjectNotFound: there is no such object (proven, see :meth:`resolve`).
            NotProven: nodes that did not answer leave it unproven whether the object exists.
            AgentUnavailable: fewer than ``m + 1`` nodes of the home set accepted the tombstone;
                where it landed the object reads as deleted, and a retry completes the delete.
        """
        mine: dict[str, Any] = {}  # the tombstone this call wrote ("gen", "m"), once it has one
        retrying(self, lambda: self._delete(bucket, key, mine), what=f"delete hcstore://{bucket}/{key}")

    def _delete(self, bucket: str, key: str, mine: dict[str, Any]) -> None:
        """One attempt at a delete; ``mine`` is the tombstone an earlier attempt of this call wrote."""
        try:
            version = resolve(self, bucket, key)
        except ObjectNotFound as exc:
            tombstone = getattr(exc, "tombstone", None)
            if tombstone is None:
                raise
            ours = tombstone == mine.get("gen")
            m = mine["m"] if ours else parse_ec(self.config.ec)[1]
            holders = set(getattr(exc, "holders", ()))
            held = holders.intersection(home_set(f"{bucket}/{key}", self.cluster_map, 1, m))
            if len(held) < write_quorum(1, m):
                store_tombstone(self, bucket, key, tombstone, m, holders=holders)  # complete an earlier delete
            elif not ours:
                raise  # deleted already, and that delete is complete
            return
        mine.update(gen=self.clock.now(), m=version.m)
        store_tombstone(self, bucket, key, mine["gen"], version.m, also=version.locations)

    # ------------------------------------------------------------------ reads

    def resolve(self, bucket: str, key: str, *, fewest: bool = False) -> ObjectVersion:
        """The newest readable version of an object, proven newest (see :func:`hcstore.client.versions.resolve`).

        With ``fewest`` (to read it), only as many nodes are asked as prove the version and locate
        ``k`` of its fragments, and ``found`` counts only what they hold; without, every read
        candidate is asked and ``found`` counts every fragment.

        Raises:
            ObjectNotFound: proven: no such object.
            NotProven: nodes that did not answer could hold a newer version (or the only one);
                raised after the retries of :mod:`hcstore.client.retry`.
        """
        return retrying(
            self, lambda: resolve(self, bucket, key, fewest=fewest), what=f"resolve hcstore://{bucket}/{key}"
        )

    def get(self, bucket: str, key: str, *, offset: int = 0, length: int | None = None) -> bytearray:
        """The object's bytes, or ``length`` bytes from ``offset``, in a new ``bytearray`` (the buffer the
        object was read into: no second copy; ``bytes(...)`` of it makes an immutable one).

        A read that finds its version replaced midway starts again on the new one.

        Raises:
            ObjectNotFound: proven: no such object.
            NotProven: nodes that did not answer could hold a newer version (or the only one).
            NotEnoughFragments: more than ``m`` fragments are lost or corrupt.
            InvalidRequest: a bad range.
        """

        def read() -> bytearray:
            version = resolve(self, bucket, key, fewest=True)
            start, count = _check_range(version.size, offset, length)
            return read_bytes(self, version, start, count)

        return retrying(self, read, what=f"get hcstore://{bucket}/{key}")

    def get_into(self, bucket: str, key: str, buffer: Any, *, offset: int = 0) -> int:
        """Read the object (from ``offset``) into a writable buffer, e.g. a numpy array; returns bytes read.

        Raises:
            ObjectNotFound: proven: no such object.
            NotProven: nodes that did not answer could hold a newer version (or the only one).
            InvalidRequest: the buffer is too small for the object, or a bad offset.
        """

        def read() -> int:
            version = resolve(self, bucket, key, fewest=True)
            start, count = _check_range(version.size, offset, None)
            read_range(self, version, start, count, buffer)
            return count

        return retrying(self, read, what=f"get_into hcstore://{bucket}/{key}")

    def open(self, bucket: str, key: str) -> io.BufferedReader:
        """A seekable binary stream over the object's current version.

        Raises:
            ObjectNotFound: proven: no such object.
            NotProven: nodes that did not answer could hold a newer version (or the only one).
        """
        return io.BufferedReader(ObjectReader(self, self.resolve(bucket, key, fewest=True)), buffer_size=1 << 20)

    def get_file(self, bucket: str, key: str, path: str | os.PathLike[str]) -> int:
        """Stream an object into a local file (written to a temporary name, then renamed)."""
        target = Path(path)
        tmp = target.with_name(f".{target.name}.hcstore-part")
        reader = ObjectReader(self, self.resolve(bucket, key, fewest=True))
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
            ObjectNotFound: proven: no such object.
            NotProven: nodes that did not answer could hold a newer version (or the only one).
        """
        v = self.resolve(bucket, key)
        return ObjectInfo(bucket, key, v.size, v.generation, v.codec, v.k, v.m, v.found, v.degraded, v.meta)

    def exists(self, bucket: str, key: str) -> bool:
        """True when the object exists (its newest version is not a delete); False only when that is proven.

        Raises:
            NotProven: nodes that did not answer could hold a newer version (or the only one).
        """
        try:
            self.resolve(bucket, key, fewest=True)
            return True
        except ObjectNotFound:
            return False

    def list(self, bucket: str, prefix: str = "", *, partial: bool = False) -> Listing[ObjectInfo]:
        """Objects under ``prefix``, merged over every agent (asked all at once), in key order.

        The listing is complete when fewer nodes did not answer than the smallest write quorum
        (``W_min``, at least ``m + 1``): every object then has a holder among those that did.

        Args:
            bucket: Bucket name.
            prefix: Key prefix ("" for every object).
            partial: When it cannot be complete, return what the nodes that answered hold
                (``complete`` False, ``unreached`` naming the others) instead of raising.

        Raises:
            NotProven: nodes that did not answer could hold objects of the listing, and
                ``partial`` is False (retried as :mod:`hcstore.client.retry` says first).
        """
        check_bucket(bucket)
        check_prefix(prefix)
        if partial:
            return self._list_once(bucket, prefix, partial=True)
        return retrying(
            self, lambda: self._list_once(bucket, prefix, partial=False), what=f"list hcstore://{bucket}/{prefix}"
        )

    def _list_once(self, bucket: str, prefix: str, *, partial: bool) -> Listing[ObjectInfo]:
        """One listing round over every agent."""
        cluster_map = self.cluster_map
        nodes = {n.endpoint: n.id for n in cluster_map.nodes if n.endpoint}
        newest: dict[str, tuple[str, str, int]] = {}
        failed: set[str] = set()
        pending = dict.fromkeys(nodes, "")  # endpoint -> start_after
        while pending:
            replies = self.transport.broadcast(
                pending, "list", {"bucket": bucket, "prefix": prefix, "limit": _LIST_PAGE}, start_after=pending
            )
            more = {}
            for endpoint, reply in replies.items():
                if isinstance(reply, HCStoreError):
                    log.info("list: agent %s (%s) skipped: %s", nodes[endpoint], endpoint, reply)
                    failed.add(nodes[endpoint])
                    continue
                entries = reply.header.get("entries", [])
                for key, gen, kind, size in entries:
                    if key not in newest or gen > newest[key][0]:
                        newest[key] = (gen, kind, size)
                if len(entries) == _LIST_PAGE:
                    more[endpoint] = entries[-1][0]
            pending = more
        found = [
            ObjectInfo(bucket, key, size, gen)
            for key, (gen, kind, size) in sorted(newest.items())
            if kind != "tombstone"
        ]
        return self._listing(found, set(nodes.values()) - failed, f"hcstore://{bucket}/{prefix}", partial)

    def buckets(self, *, partial: bool = False) -> Listing[str]:
        """Every bucket that some agent holds objects of, sorted.

        Complete, or partial, as :meth:`list` says.

        Raises:
            NotProven: nodes that did not answer could hold buckets, and ``partial`` is False.
        """
        if partial:
            return self._buckets_once(partial=True)
        return retrying(self, lambda: self._buckets_once(partial=False), what="list buckets")

    def _buckets_once(self, *, partial: bool) -> Listing[str]:
        """One round of asking every agent for its buckets."""
        cluster_map = self.cluster_map
        nodes = {n.endpoint: n.id for n in cluster_map.nodes if n.endpoint}
        names: set[str] = set()
        answered: set[str] = set()
        for endpoint, result in self.transport.broadcast(nodes, "buckets", {}).items():
            if isinstance(result, Reply) and result.ok:
                names.update(result.header.get("buckets", []))
                answered.add(nodes[endpoint])
        return self._listing(sorted(names), answered, "the buckets", partial, cluster_map)

    def _listing(
        self, entries: Iterable[T], answered: set[str], what: str, partial: bool, cluster_map: ClusterMap | None = None
    ) -> Listing[T]:
        """``entries`` as a listing, complete or partial as the answers prove; or NotProven."""
        proof = listing_proof(
            self.cluster_map if cluster_map is None else cluster_map, answered, schemes_of(*parse_ec(self.config.ec))
        )
        if not proof.proven and not partial:
            raise NotProven(
                f"listing {what} may be incomplete: {len(proof.unreached)} of the {len(proof.candidates)} nodes did "
                f"not answer ({', '.join(proof.unreached)}), and an object needs as few as {proof.quorum} nodes, so "
                "some could sit on them alone; retry later, bring those nodes back, or ask for a partial listing",
                proof.unreached,
            )
        if not proof.proven:
            log.info("listing %s is partial: nodes %s did not answer", what, ", ".join(proof.unreached))
        return Listing(entries, unreached=proof.unreached, complete=proof.proven)

    def node_stats(self) -> dict[str, dict[str, Any] | HCStoreError]:
        """Each node's ``node_stats`` reply (or the error that stood in its way), by node id."""
        nodes = self.cluster_map.nodes
        results = self.transport.broadcast([n.endpoint for n in nodes if n.endpoint], "node_stats", {}, timeout=2.0)
        out: dict[str, dict[str, Any] | HCStoreError] = {}
        for node in nodes:
            result = results.get(node.endpoint) if node.endpoint else AgentUnavailable(f"node {node.id} is down")
            if isinstance(result, Reply) and result.ok:
                out[node.id] = result.header
            elif isinstance(result, Reply):
                out[node.id] = result.error()
            else:
                out[node.id] = result or AgentUnavailable(f"node {node.id} did not answer")
        return out

    def read_executor(self) -> ThreadPoolExecutor:
        """The ``read_streams`` threads that read the parts of one large range at once (started on first use)."""
        with self._lock:
            if self._read_pool is None:
                self._read_pool = ThreadPoolExecutor(self.config.read_streams, thread_name_prefix="hcstore-read")
            return self._read_pool

    def close(self) -> None:
        """Close this thread's sockets and stop the read threads; the next request opens new ones."""
        with self._lock:
            pool, self._read_pool = self._read_pool, None
        if pool is not None:
            pool.shutdown(wait=True)
        self.transport.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: Any) -> None:
        self.close()


def _rebuild_client(
    cluster: ClusterSource | ClusterMap, config: ClientConfig, credentials: tuple[Credentials, str] | None = None
) -> Client:
    return Client(cluster, config=config, credentials=credentials)


def _seekable_position(data: Any) -> int | None:
    """Where a seekable file stands now (a put can start there again); None for anything else."""
    try:
        return data.tell() if hasattr(data, "seek") and data.seekable() else None
    except (OSError, ValueError, AttributeError):
        return None


def _pieces(data: Any) -> Iterator[Any]:
    """The bytes of a binary file, stream or iterable of bytes, piece by piece."""
    if hasattr(data, "readinto"):
        block = bytearray(_COPY_BLOCK)
        while n := data.readinto(block):
            yield memoryview(block)[:n]
    elif hasattr(data, "read"):
        while chunk := data.read(_COPY_BLOCK):
            yield chunk
    else:
        yield from data


def _check_range(size: int, offset: int, length: int | None) -> tuple[int, int]:
    if offset < 0 or (length is not None and length < 0):
        raise InvalidRequest(f"invalid range: offset={offset} length={length}")
    if offset > size:
        raise InvalidRequest(f"offset {offset} is past the end of a {size}-byte object")
    return offset, (size - offset if length is None else min(length, size - offset))
