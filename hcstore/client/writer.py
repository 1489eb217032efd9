"""The put path: an object streamed stripe by stripe into ``k+m`` fragments.

An :class:`ObjectWriter` buffers one stripe (``k × chunk`` bytes), encodes its
``m`` parity chunks, and sends chunk ``i`` to the agent holding fragment ``i``,
with at most ``window`` stripes unacknowledged, so memory stays bounded
whatever the object's size. Nothing is sent until the first stripe is full or
the writer is closed: a small object whose size was not known in advance is
still replicated rather than coded.

Protection is synchronous: when the last stripe is acknowledged, every
fragment is *prepared* (sealed, fsynced, renamed), and only when at least the
write quorum (``k+1`` fragments, ``k`` when ``m = 0``) is prepared are they
*committed*. Until a commit, no reader can see the new generation, so a writer
killed at any point before it leaves the previous version readable; after the
first commit the new generation is the object (readers roll forward over
prepared fragments). Finally older generations are retired on the write set.

A fragment whose agent fails while the put runs is dropped, and the put goes
on as long as the quorum can still be met: the result says ``degraded``.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass
from collections.abc import Callable
from typing import Any

from ec import (
    Codec,
    FragmentHeader,
    chunk_size_for,
    default_codec_name,
    header_to_dict,
    make_codec,
    parse_ec,
    split_stripe,
)
from hcstore.errors import (
    AgentUnavailable,
    HCStoreError,
    InvalidRequest,
    NotEnoughNodes,
    ObjectChanged,
    ObjectNotFound,
    StoreFull,
)
from hcstore.client.access import ClusterAccess
from hcstore.names import check_bucket, check_key
from hcstore.wire.protocol import Reply
from placement import place

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PutResult:
    """What a put stored.

    Attributes:
        fragments: node id holding each fragment index ("" where none could be stored).
        degraded: fewer than ``k+m`` fragments were committed; the object is
            readable and awaits repair.
    """

    bucket: str
    key: str
    generation: str
    size: int
    codec: str
    k: int
    m: int
    fragments: tuple[str, ...]
    degraded: bool


@dataclass
class _Target:
    """One fragment's destination during a put."""

    index: int
    node: str
    endpoint: str
    upload: str
    prepared: bool = False
    failed: HCStoreError | None = None


def write_quorum(k: int, m: int) -> int:
    """Fragments that must be committed before a put is acknowledged."""
    return k + 1 if m > 0 else k


class ObjectWriter:
    """A file-like, write-only stream into one new generation of an object.

    Use as a context manager, or call :meth:`close` (commit) / :meth:`abort`.
    """

    def __init__(self, client: ClusterAccess, bucket: str, key: str, *, size: int | None = None,
                 ec: str | None = None, codec: str | None = None, meta: dict[str, str] | None = None) -> None:
        self.client = client
        self.bucket = check_bucket(bucket)
        self.key = check_key(key)
        if size is not None and size < 0:
            raise InvalidRequest(f"size must be >= 0, got {size}")
        self.size_hint = size
        self.k, self.m = parse_ec(ec or client.config.ec)
        self.codec_name = codec or client.config.codec
        self.meta = dict(meta or {})
        self.generation = client.clock.now()
        self.written = 0
        self.result: PutResult | None = None
        self._codec: Codec | None = None
        self._chunk = 0
        self._buffer: bytearray | None = None
        self._fill = 0
        self._stripe = 0
        self._targets: list[_Target | None] = []
        self._inflight: dict[int, tuple[int, int]] = {}      # request id -> (stripe, fragment index)
        self._open_stripes: deque[int] = deque()
        self._acks: dict[int, int] = {}                       # stripe -> replies still expected
        self._pool: list[bytearray] = []
        self._held: dict[int, Any] = {}                       # stripe -> buffer kept alive until acked
        self._closed = False
        self._stash = bytearray()
        if size is not None:
            self._start(size)

    # ------------------------------------------------------------------ file-like

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        """Append bytes; returns how many."""
        if self._closed:
            raise ValueError("write to a closed ObjectWriter")
        view = memoryview(data).cast("B")
        try:
            self.written += len(view)
            if self._codec is None:
                self._stash += view
                if len(self._stash) >= self.k * self.client.config.chunk_size:
                    self._start(None)
            else:
                self._append(view)
        except BaseException:
            self.abort()
            raise
        return len(view)

    def close(self) -> PutResult:
        """Send what is left, prepare and commit; returns the result. Idempotent."""
        if self.result is not None:
            return self.result
        if self._closed:
            raise ValueError("ObjectWriter was aborted")
        try:
            if self._codec is None:
                self._start(len(self._stash))
            if not self._targets:
                self._store_whole()
            else:
                if self._fill:
                    self._flush_buffer()
                self._drain(0)
            self.result = self._finish()
        except BaseException:
            self.abort()
            raise
        self._closed = True
        return self.result

    def abort(self) -> None:
        """Discard everything sent; the previous version stays the object."""
        if self._closed:
            return
        self._closed = True
        transport = self.client.transport
        transport.forget(self._inflight)
        for target in self._live_targets():
            try:
                transport.send(target.endpoint, "abort", {"upload": target.upload})
            except HCStoreError:
                pass

    def __enter__(self) -> "ObjectWriter":
        return self

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    # ------------------------------------------------------------------ set-up

    def _start(self, size: int | None) -> None:
        """Choose codec and chunk size, place the fragments, open their uploads, send the stash."""
        config = self.client.config
        k, m = self.k, self.m
        if size is not None and size < config.replicate_below and k > 1:
            name, k = "replica", 1
        else:
            name = self.codec_name or default_codec_name(k, m)
        self._codec = make_codec(name, k, m)
        self.k_eff = k
        self._chunk = chunk_size_for(size, k, config.chunk_size)
        self._expected = None if size is None else -(-size // (k * self._chunk)) * self._chunk
        self._buffer = self._new_buffer()
        self._placement = place(f"{self.bucket}/{self.key}", self.client.cluster_map, k, m)
        stash, self._stash = self._stash, bytearray()
        if stash:
            self._append(memoryview(stash))

    def _append(self, view: memoryview) -> None:
        stripe_bytes = self.k_eff * self._chunk
        while view:
            assert self._buffer is not None
            if self._fill == 0 and len(view) >= stripe_bytes and view.readonly:
                self._send_stripe(view[:stripe_bytes], hold=view.obj)   # zero copy from immutable input
                view = view[stripe_bytes:]
                continue
            take = min(len(view), stripe_bytes - self._fill)
            self._buffer[self._fill:self._fill + take] = view[:take]
            self._fill += take
            view = view[take:]
            if self._fill == stripe_bytes:
                self._flush_buffer()

    def _new_buffer(self) -> bytearray:
        return self._pool.pop() if self._pool else bytearray(self.k_eff * self._chunk)

    def _open_targets(self, send: Callable[[int, str], int], *, prepared: bool = False) -> None:
        """Start one fragment per placement node with ``send(index, node)``; a node that fails is
        replaced by the next in the ranking."""
        codec = self._codec
        assert codec is not None
        placement = self._placement
        quorum = write_quorum(codec.k, codec.m)
        spares = deque(placement.spares)
        self._targets = [None] * codec.n
        full: list[str] = []
        failures: list[str] = []
        wanted = list(enumerate(placement.nodes))
        while wanted:
            sent: dict[int, tuple[int, str]] = {}
            errors: list[tuple[int, str, HCStoreError]] = []
            for index, node in wanted:
                try:
                    sent[send(index, node)] = (index, node)
                except HCStoreError as exc:
                    errors.append((index, node, exc))
            for request_id, result in self.client.transport.wait(sent).items():
                index, node = sent[request_id]
                if isinstance(result, Reply) and result.ok:
                    self._targets[index] = _Target(index, node, self.client.endpoint(node),
                                                   result.header.get("upload", ""), prepared=prepared)
                else:
                    errors.append((index, node, result.error() if isinstance(result, Reply) else result))
            wanted = []
            for index, node, error in errors:
                (full if isinstance(error, StoreFull) else failures).append(f"{node}: {error}")
                if spares:
                    wanted.append((index, spares.popleft()))
        stored = len(self._live_targets())
        if stored < quorum:
            self.abort()
            problem = "; ".join(full + failures) or "the cluster map has too few writable nodes"
            cls = StoreFull if full and len(full) >= len(failures) else NotEnoughNodes
            raise cls(f"put {self.bucket}/{self.key}: only {stored} of {codec.n} fragments could be placed "
                      f"and the write quorum is {quorum} ({problem})")

    def _store_whole(self) -> None:
        """An object of at most one stripe: each fragment is written and prepared in one message."""
        codec = self._codec
        assert codec is not None and self._buffer is not None
        if self.written:
            chunks = split_stripe(memoryview(self._buffer)[:self._fill], codec.k, self._chunk)
            fragments: list[Any] = [*chunks, *codec.encode(chunks)]
            self._stripe = 1
        else:
            fragments = [None] * codec.n
        nodes = self._placement.nodes
        placement = tuple(nodes) + ("",) * (codec.n - len(nodes))

        def send(index: int, node: str) -> int:
            payloads = [fragments[index]] if self._stripe else []
            fields = {"bucket": self.bucket, "key": self.key, "gen": self.generation, "idx": index,
                      "chunk_size": self._chunk, "header": self._header(index, placement)}
            return self.client.transport.send(self.client.endpoint(node), "store", fields, payloads)

        self._open_targets(send, prepared=True)
        actual = tuple(t.node if t is not None else "" for t in self._targets)
        if actual != placement:
            # Spares stood in for failed nodes: store again so every trailer names the real holders
            # (repair and readers trust the trailer's placement).
            placement = actual
            self._phase_with(send, self._live_targets())

    def _phase_with(self, send: Callable[[int, str], int], targets: list[_Target]) -> None:
        """Send each target its request through ``send(index, node)`` and wait; failures mark the target."""
        ids: dict[int, _Target] = {}
        for target in targets:
            try:
                ids[send(target.index, target.node)] = target
            except HCStoreError as exc:
                target.failed = exc
        for request_id, result in self.client.transport.wait(ids).items():
            if not (isinstance(result, Reply) and result.ok):
                ids[request_id].failed = result.error() if isinstance(result, Reply) else result

    def _send_open(self, index: int, node: str) -> int:
        fields = {"bucket": self.bucket, "key": self.key, "gen": self.generation, "idx": index,
                  "chunk_size": self._chunk}
        if self._expected is not None:
            fields["expected_bytes"] = self._expected
        return self.client.transport.send(self.client.endpoint(node), "open", fields)

    # ------------------------------------------------------------------ streaming

    def _flush_buffer(self) -> None:
        assert self._buffer is not None
        buffer, fill = self._buffer, self._fill
        self._send_stripe(memoryview(buffer)[:fill], hold=buffer)
        self._buffer = self._new_buffer()
        self._fill = 0

    def _send_stripe(self, data: memoryview, *, hold: Any) -> None:
        codec = self._codec
        assert codec is not None
        if not self._targets:
            self._open_targets(self._send_open)
        chunks = split_stripe(data, codec.k, self._chunk)
        fragments = list(chunks) + list(codec.encode(chunks))
        stripe = self._stripe
        transport = self.client.transport
        expected = 0
        for target in self._live_targets():
            chunk = fragments[target.index]
            try:
                request_id = transport.send(target.endpoint, "write", {"upload": target.upload, "stripe": stripe}, [chunk])
            except HCStoreError as exc:
                self._fail(target, exc)
                continue
            self._inflight[request_id] = (stripe, target.index)
            expected += 1
        self._acks[stripe] = expected
        self._held[stripe] = (hold, fragments)
        self._open_stripes.append(stripe)
        self._stripe += 1
        self._drain(self.client.config.window)

    def _live_targets(self) -> list[_Target]:
        return [t for t in self._targets if t is not None and t.failed is None]

    def _fail(self, target: _Target, error: HCStoreError) -> None:
        if target.failed is None:
            log.warning("put %s/%s: dropping fragment %d on %s: %s", self.bucket, self.key, target.index,
                        target.node, error)
            target.failed = error
        quorum = write_quorum(self._codec.k, self._codec.m)  # type: ignore[union-attr]
        if len(self._live_targets()) < quorum:
            failed = [t.failed for t in self._targets if t is not None and t.failed is not None]
            if sum(isinstance(e, StoreFull) for e in failed) * 2 >= len(failed):
                raise StoreFull(f"put {self.bucket}/{self.key}: the nodes holding its fragments filled up "
                                f"({error}); nothing was committed")
            raise NotEnoughNodes(
                f"put {self.bucket}/{self.key}: {len(self._live_targets())} fragments left after node failures, "
                f"the write quorum is {quorum} (last error: {error})")

    def _drain(self, window: int) -> None:
        """Wait for acknowledgements until at most ``window`` stripes are outstanding."""
        transport = self.client.transport
        while len(self._open_stripes) > window:
            oldest = self._open_stripes[0]
            if self._acks.get(oldest, 0) <= 0:
                self._retire_stripe(self._open_stripes.popleft())
                continue
            results = transport.poll(list(self._inflight))
            if not results:
                transport.expire(list(self._inflight))
                continue
            for request_id, result in results.items():
                stripe, index = self._inflight.pop(request_id)
                self._acks[stripe] -= 1
                if isinstance(result, Reply) and result.ok:
                    continue
                target = self._targets[index]
                assert target is not None
                self._fail(target, result.error() if isinstance(result, Reply) else result)

    def _retire_stripe(self, stripe: int) -> None:
        """A stripe every agent acknowledged: its buffer may be reused."""
        del self._acks[stripe]
        hold, _ = self._held.pop(stripe)
        if hold is not self._stash and isinstance(hold, bytearray) and len(hold) == self.k_eff * self._chunk:
            self._pool.append(hold)

    # ------------------------------------------------------------------ commit

    def _header(self, index: int, placement: tuple[str, ...]) -> dict[str, Any]:
        """The fragment's trailer fields; the agent adds the chunk digests it computed on receipt."""
        codec = self._codec
        assert codec is not None
        fields = header_to_dict(FragmentHeader(
            bucket=self.bucket, key=self.key, generation=self.generation, kind="data",
            codec=codec.name, k=codec.k, m=codec.m, chunk_size=self._chunk, size=self.written,
            index=index, stripes=self._stripe, digests=bytes(32 * self._stripe),
            placement=placement, created_ns=time.time_ns(), meta=self.meta))
        del fields["digests"]
        return fields

    def _phase(self, op: str, targets: list[_Target], fields_of: Callable[[_Target], dict[str, Any]]) -> None:
        """Send ``op`` to each target and wait; a target whose request fails is marked failed."""
        by_index = {t.index: t for t in targets}
        self._phase_with(lambda index, node: self.client.transport.send(
            by_index[index].endpoint, op, fields_of(by_index[index])), targets)

    def _finish(self) -> PutResult:
        codec = self._codec
        assert codec is not None
        quorum = write_quorum(codec.k, codec.m)
        placement = tuple(t.node if t is not None and t.failed is None else "" for t in self._targets)
        self._phase("prepare", [t for t in self._live_targets() if not t.prepared],
                    lambda t: {"upload": t.upload, "header": self._header(t.index, placement)})
        prepared = self._live_targets()
        if len(prepared) < quorum:
            errors = "; ".join(f"{t.node}: {t.failed}" for t in self._targets if t is not None and t.failed)
            raise NotEnoughNodes(f"put {self.bucket}/{self.key}: {len(prepared)} fragments prepared, "
                                 f"the write quorum is {quorum}; nothing was committed ({errors})")
        ident = {"bucket": self.bucket, "key": self.key, "gen": self.generation}
        self._phase("commit", prepared, lambda t: {**ident, "idx": t.index})
        committed = self._live_targets()
        if not committed and all(isinstance(t.failed, ObjectNotFound) for t in prepared):
            raise ObjectChanged(f"put {self.bucket}/{self.key}: superseded while committing "
                                "(a newer version or a delete removed this one); it was not stored")
        if not committed:
            raise AgentUnavailable(f"put {self.bucket}/{self.key}: no agent confirmed the commit; "
                                   "the new version may or may not be visible, retry the put")
        self._retire_older(committed)
        fragments = tuple(t.node if t is not None and t.failed is None else "" for t in self._targets)
        return PutResult(self.bucket, self.key, self.generation, self.written, codec.name, codec.k, codec.m,
                         fragments, degraded=sum(bool(f) for f in fragments) < codec.n)

    def _retire_older(self, committed: list[_Target]) -> None:
        """Ask the write set to drop older generations; nobody waits for it (readers ignore old ones)."""
        transport = self.client.transport
        ids = []
        for target in committed:
            try:
                ids.append(transport.send(target.endpoint, "retire",
                                          {"bucket": self.bucket, "key": self.key, "gen": self.generation}))
            except HCStoreError:
                pass
        transport.forget(ids)
