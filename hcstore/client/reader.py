"""The get path: read the stripes of one resolved version by plan.

Resolution (:mod:`hcstore.client.versions`) picks the generation; stripes are then
fetched in batches: for each batch, ``k`` fragments chosen by :func:`placement.plan_read`
(own node first, data before parity) are asked for their chunks, and every chunk is checked against its blake3 digest. A
missing, corrupt or unanswering fragment is replaced by the next one of the
plan and, when parity is involved, the stripe is decoded: the caller notices
nothing but the time. A fragment that has not answered after ``hedge_after``
seconds is hedged: one more fragment is asked for the same stripes, whichever
answers first is used, and the slow one is read last from then on. A corrupt chunk is reported to the client's
``corruptions`` list and the log. Every byte of one read comes from one
generation: if that generation disappears mid-read (a concurrent overwrite
retired it), the read fails with :class:`ObjectChanged` instead of mixing.
A read pinned to one version (a stream, a file of the fsspec filesystem) is
retried by the policy of :mod:`hcstore.client.retry`, except when the version
itself is gone. Each read request tells the agent how it reads (``path``: local, remote,
degraded or hedged, see :func:`read_path`), for the agent's metrics.
"""

from __future__ import annotations

import ctypes
import io
import logging
from collections import deque
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any, TypeVar

from ec import verify_chunk
from hcstore.client.access import ClusterAccess, CorruptionReport
from hcstore.client.retry import retrying
from hcstore.client.versions import ObjectVersion
from hcstore.coding import codec_for
from hcstore.errors import (
    AgentUnavailable,
    CorruptFragment,
    HCStoreError,
    InvalidRequest,
    NotEnoughFragments,
    ObjectChanged,
    ObjectNotFound,
)
from hcstore.wire.protocol import Reply
from placement import plan_read

log = logging.getLogger(__name__)
T = TypeVar("T")
STREAM_BATCHES = 2  # batches a streaming reader fetches at a time


@dataclass
class _Batch:
    """Stripes ``first..first+count-1`` being read: good chunks per fragment, None where one was bad."""

    first: int
    count: int
    chunks: dict[int, list[Any]] = field(default_factory=dict)  # fragment index -> chunk or None per stripe
    tried: set[int] = field(default_factory=set)
    pending: int = 0

    def deficit(self, k: int) -> int:
        """Fragments still missing for the stripe that has the fewest good chunks."""
        return max(k - sum(chunks[j] is not None for chunks in self.chunks.values()) for j in range(self.count))


class StripeReader:
    """Reads decoded stripes of one :class:`ObjectVersion`.

    ``path``, when given, is the path every read request names instead of :func:`read_path`'s
    (a repair's reads say ``repair``: the agents serve them after clients' reads).
    """

    def __init__(
        self, client: ClusterAccess, version: ObjectVersion, *, read_ahead: int = 0, path: str | None = None
    ) -> None:
        self.client = client
        self.version = version
        self.path = path
        self.read_ahead = read_ahead or client.config.read_ahead
        self.codec = codec_for(version.codec, version.k, version.m)
        unavailable = {n for n in set(version.locations) if n and client.is_unavailable(n)}
        plan = plan_read(version.locations, version.k, local_node=client.config.local_node, unavailable=unavailable)
        self.order = [i for i in (*plan.primary, *plan.spares)]
        self.failed: dict[int, HCStoreError] = {}
        self._inflight: dict[int, tuple[_Batch, int]] = {}

    def stripes(self, first: int, last: int) -> Iterator[tuple[int, list[Any]]]:
        """Yield ``(stripe, k data chunks)`` for stripes ``first..last-1`` in order."""
        batch_size = self.client.config.read_batch
        starts = deque(range(first, last, batch_size))
        window: deque[_Batch] = deque()
        try:
            while starts or window:
                while starts and len(window) < self.read_ahead:
                    start = starts.popleft()
                    batch = _Batch(start, min(batch_size, last - start))
                    window.append(batch)
                    self._fill(batch)
                head = window[0]
                if head.deficit(self.version.k) <= 0:
                    window.popleft()
                    yield from self._decode(head)
                    continue
                self._receive(head)
        finally:
            self.client.transport.forget(self._inflight)
            self._inflight.clear()

    def _fill(self, batch: _Batch) -> None:
        """Ask enough fragments for every stripe of the batch to reach ``k`` good chunks."""
        while batch.pending < batch.deficit(self.version.k):
            candidates = [i for i in self.order if i not in batch.tried and i not in self.failed]
            if not candidates:
                if batch.pending:
                    return
                raise self._not_enough(batch)
            index = candidates[0]
            batch.tried.add(index)
            try:
                request_id = self._send_read(batch, index)
            except HCStoreError as exc:
                self.failed[index] = exc
                continue
            self._inflight[request_id] = (batch, index)
            batch.pending += 1

    def _receive(self, head: _Batch) -> None:
        transport = self.client.transport
        results = transport.poll(list(self._inflight), self.client.config.hedge_after)
        if not results and head.pending:
            self._hedge(head)
            results = transport.poll(list(self._inflight))
        if not results:
            transport.expire(list(self._inflight))
            results = transport.poll(list(self._inflight), 0)
        for request_id, result in results.items():
            batch, index = self._inflight.pop(request_id)
            batch.pending -= 1
            if isinstance(result, Reply) and result.ok:
                batch.chunks[index] = self._verified(batch, index, result)
            else:
                error = result.error() if isinstance(result, Reply) else result
                self.failed[index] = error
                if isinstance(error, CorruptFragment):  # the agent found the fragment file itself damaged
                    for j in range(batch.count):
                        self._report(batch, index, j)
                log.info(
                    "read %s/%s: fragment %d unavailable (%s)", self.version.bucket, self.version.key, index, error
                )
            self._fill(batch)

    def _hedge(self, head: _Batch) -> None:
        """A fragment is slow: ask another one for every batch waiting on it, and read it last from now on."""
        slow = {index for b, index in self._inflight.values() if b is head}
        for index in slow:
            self.client.transport.mark_slow(self.client.endpoint(self.version.locations[index]))
        self.order = [i for i in self.order if i not in slow] + [i for i in self.order if i in slow]
        for batch in {id(b): b for b, index in self._inflight.values() if index in slow}.values():
            self._hedge_batch(batch)
        log.info(
            "read %s/%s: fragments %s slow after %.2fs; hedged",
            self.version.bucket,
            self.version.key,
            sorted(slow),
            self.client.config.hedge_after,
        )

    def _hedge_batch(self, batch: _Batch) -> None:
        candidates = [i for i in self.order if i not in batch.tried and i not in self.failed]
        if not candidates:
            return
        batch.pending += 1  # the spare's request; _fill will not count it as missing
        index = candidates[0]
        batch.tried.add(index)
        try:
            request_id = self._send_read(batch, index, hedged=True)
        except HCStoreError as exc:
            batch.pending -= 1
            self.failed[index] = exc
            return
        self._inflight[request_id] = (batch, index)

    def _send_read(self, batch: _Batch, index: int, *, hedged: bool = False) -> int:
        node = self.version.locations[index]
        path = self.path or read_path(index, node, self.version.k, self.client.config.local_node, hedged=hedged)
        return self.client.transport.send(
            self.client.endpoint(node),
            "read",
            {
                "bucket": self.version.bucket,
                "key": self.version.key,
                "gen": self.version.generation,
                "idx": index,
                "first": batch.first,
                "count": batch.count,
                "path": path,
            },
        )

    def _verified(self, batch: _Batch, index: int, reply: Reply) -> list[Any]:
        """The reply's chunks, with None for each one whose digest does not match (each one reported)."""
        chunks = verified_chunks(reply, batch.count, self.version.chunk_size)
        for j, chunk in enumerate(chunks):
            if chunk is None:
                self._report(batch, index, j)
        return chunks

    def _report(self, batch: _Batch, index: int, j: int) -> None:
        """Report chunk ``j`` of the batch in fragment ``index`` as corrupt."""
        self.client.report_corruption(
            CorruptionReport(
                self.version.bucket,
                self.version.key,
                self.version.generation,
                index,
                batch.first + j,
                self.version.locations[index],
            )
        )

    def _decode(self, batch: _Batch) -> Iterator[tuple[int, list[Any]]]:
        k = self.version.k
        for j in range(batch.count):
            use = sorted(i for i, chunks in batch.chunks.items() if chunks[j] is not None)[:k]
            if use == list(range(k)):
                yield batch.first + j, [batch.chunks[i][j] for i in use]
            else:
                yield batch.first + j, self.codec.decode({i: batch.chunks[i][j] for i in use})

    def _not_enough(self, batch: _Batch) -> HCStoreError:
        # Fragments of a committed version vanish when a newer one retires them: if every failure is a
        # vanished fragment or an unreachable node, and at least one vanished, the version was replaced.
        vanished = [e for e in self.failed.values() if isinstance(e, ObjectNotFound)]
        if vanished and all(isinstance(e, (ObjectNotFound, AgentUnavailable)) for e in self.failed.values()):
            return ObjectChanged(
                f"hcstore://{self.version.bucket}/{self.version.key} generation "
                f"{self.version.generation} was replaced while it was read ({len(vanished)} of its "
                "fragments are gone); read it again"
            )
        version = self.version
        reasons = "; ".join(f"fragment {i} on {version.locations[i] or '?'}: {e}" for i, e in self.failed.items())
        return NotEnoughFragments(
            f"hcstore://{version.bucket}/{version.key}: only {version.k - batch.deficit(version.k)} of the "
            f"{version.k} fragments needed could be read for stripes {batch.first}..{batch.first + batch.count - 1} "
            f"({reasons or 'corrupt chunks'}); at most {version.m} of {version.k + version.m} may be lost"
        )


def verified_chunks(reply: Reply, count: int, chunk_size: int) -> list[Any]:
    """The ``count`` chunks of a read's reply, each checked against the digest the agent sent with it:
    None for a chunk that is missing, of the wrong size or does not match."""
    digests = reply.header.get("digests") or []
    frames = reply.payloads
    if len(frames) != count or len(digests) != count:
        return [None] * count
    return [
        frame.buffer if len(frame) == chunk_size and verify_chunk(frame.buffer, digest) else None
        for frame, digest in zip(frames, digests, strict=True)
    ]


def read_path(index: int, node: str, k: int, local_node: str | None, *, hedged: bool = False) -> str:
    """How fragment ``index`` on ``node`` is read, as a read request tells its agent.

    ``hedged``: asked because another fragment answered too slowly; ``local``: from the reader's
    own node; ``degraded``: a parity fragment from another node, which a read plan asks for only
    when a data fragment is missing, unavailable, failed or corrupt (the stripe is decoded);
    ``remote``: a data fragment from another node.
    """
    if hedged:
        return "hedged"
    if local_node is not None and node == local_node:
        return "local"
    return "degraded" if index >= k else "remote"


def iter_range(
    client: ClusterAccess, version: ObjectVersion, offset: int, length: int, *, read_ahead: int = 0
) -> Iterator[memoryview]:
    """The bytes ``offset..offset+length`` of ``version``, as consecutive verified pieces."""
    if length == 0:
        return
    stripe_bytes = version.layout.stripe_bytes
    chunk = version.chunk_size
    end = offset + length
    reader = StripeReader(client, version, read_ahead=read_ahead)
    for stripe, chunks in reader.stripes(offset // stripe_bytes, (end - 1) // stripe_bytes + 1):
        base = stripe * stripe_bytes
        for i, data in enumerate(chunks):
            lo = max(offset, base + i * chunk)
            hi = min(end, base + (i + 1) * chunk)
            if lo < hi:
                start = lo - base - i * chunk
                yield memoryview(data)[start : start + hi - lo]


def stream_parts(first: int, last: int, streams: int, min_stripes: int) -> list[tuple[int, int]]:
    """Stripes ``first..last-1`` cut into at most ``streams`` contiguous runs ``(first, last)`` of at
    least ``min_stripes`` stripes each (one run when the range is shorter than two)."""
    count = last - first
    parts = max(1, min(streams, count // max(1, min_stripes)))
    bounds = [first + count * i // parts for i in range(parts + 1)]
    return list(zip(bounds, bounds[1:], strict=False))


def read_range(client: ClusterAccess, version: ObjectVersion, offset: int, length: int, out: Any) -> None:
    """Read ``length`` bytes at ``offset`` of ``version`` into the writable buffer ``out`` (see :func:`in_parts`)."""
    view = memoryview(out).cast("B")
    if view.readonly:
        raise InvalidRequest(f"read of hcstore://{version.bucket}/{version.key}: the buffer is read-only")
    if len(view) < length:
        raise InvalidRequest(
            f"read of hcstore://{version.bucket}/{version.key}: a buffer of {len(view)} bytes "
            f"is smaller than the {length} bytes asked for"
        )

    import numpy as np  # here, not at the top: agents import this module and never read into a buffer

    def copy(lo: int, count: int, read_ahead: int) -> None:
        target = np.frombuffer(view[lo - offset : lo - offset + count], dtype=np.uint8)  # numpy copies drop the GIL
        pos = 0
        for piece in iter_range(client, version, lo, count, read_ahead=read_ahead):
            target[pos : pos + len(piece)] = np.frombuffer(piece, dtype=np.uint8)
            pos += len(piece)

    in_parts(client, version, offset, length, copy)


def read_bytes(client: ClusterAccess, version: ObjectVersion, offset: int, length: int) -> bytearray:
    """``length`` bytes at ``offset`` of ``version`` in a new ``bytearray`` that owns them.

    The buffer is allocated without being filled, and the parts are read straight into it at once
    (:func:`read_range`): each received chunk is copied once, and the fresh memory is first touched by
    the threads that fill it, not by one thread beforehand.
    """
    out = unfilled_bytearray(length)
    read_range(client, version, offset, length, out)
    return out


def unfilled_bytearray(length: int) -> bytearray:
    """A ``bytearray`` of ``length`` bytes whose contents are not set (``bytearray(length)`` writes
    zeros over all of it first, on one thread): for a buffer about to be overwritten in full."""
    return _new_bytearray(None, length)


_new_bytearray = ctypes.pythonapi.PyByteArray_FromStringAndSize
_new_bytearray.argtypes = (ctypes.c_char_p, ctypes.c_ssize_t)
_new_bytearray.restype = ctypes.py_object


def in_parts(
    client: ClusterAccess, version: ObjectVersion, offset: int, length: int, read: Callable[[int, int, int], T]
) -> list[T]:
    """``read(offset, length, read_ahead)`` of each part of the range, in order.

    A range of many stripes is cut into up to ``read_streams`` contiguous parts (:func:`stream_parts`),
    read by as many threads at once, each over its own connections, verifying its own chunks: hashing
    and copying release the GIL, so they run on as many cores. Each stream keeps ``read_ahead /
    read_streams`` batches (at least 2) in flight. When a part fails, the others are finished before
    the error is raised, so no thread is still reading when this returns.
    """
    if length == 0:
        return []
    config = client.config
    stripe_bytes = version.layout.stripe_bytes
    end = offset + length
    parts = stream_parts(
        offset // stripe_bytes, (end - 1) // stripe_bytes + 1, config.read_streams, 2 * config.read_batch
    )
    if len(parts) == 1:
        return [read(offset, length, 0)]
    read_ahead = max(2, -(-config.read_ahead // len(parts)))

    def read_part(part: tuple[int, int]) -> T:
        lo, hi = max(offset, part[0] * stripe_bytes), min(end, part[1] * stripe_bytes)
        return read(lo, hi - lo, read_ahead)

    submitted = [client.read_executor().submit(read_part, part) for part in parts]
    futures.wait(submitted)
    return [future.result() for future in submitted]


class ObjectReader(io.RawIOBase):
    """A seekable, read-only stream over one generation of an object.

    Reads fetch whole batches of stripes ahead of the position, so sequential
    reads stream at full speed while memory stays bounded.
    """

    def __init__(self, client: ClusterAccess, version: ObjectVersion) -> None:
        super().__init__()
        self.client = client
        self.version = version
        self._pos = 0
        self._cache_start = 0
        self._cache: bytes | bytearray = b""

    @property
    def size(self) -> int:
        """The object's size in bytes."""
        return self.version.size

    def readable(self) -> bool:
        """True: the stream can be read."""
        return True

    def seekable(self) -> bool:
        """True: the stream can seek anywhere in the version."""
        return True

    def tell(self) -> int:
        """The current position."""
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        """Move the position (``io.SEEK_SET``/``SEEK_CUR``/``SEEK_END``); returns it."""
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self.version.size}[whence]
        if base + offset < 0:
            raise ValueError(f"negative seek position {base + offset}")
        self._pos = base + offset
        return self._pos

    def readinto(self, buffer: Any) -> int:
        """Read verified bytes into ``buffer``; returns how many (0 at the end)."""
        view = memoryview(buffer).cast("B")
        want = min(len(view), self.version.size - self._pos)
        if want <= 0:
            return 0
        cache_end = self._cache_start + len(self._cache)
        if not self._cache_start <= self._pos < cache_end:
            self._load(self._pos)
            cache_end = self._cache_start + len(self._cache)
        take = min(want, cache_end - self._pos)
        start = self._pos - self._cache_start
        view[:take] = memoryview(self._cache)[start : start + take]
        self._pos += take
        return take

    def _load(self, pos: int) -> None:
        layout = self.version.layout
        span = layout.stripe_bytes * self.client.config.read_batch * STREAM_BATCHES
        start = pos - pos % layout.stripe_bytes
        length = min(span, self.version.size - start)
        self._cache = b""
        self._cache_start, self._cache = start, read_pinned(self.client, self.version, start, length)


def read_pinned(client: ClusterAccess, version: ObjectVersion, offset: int, length: int) -> bytearray:
    """``length`` bytes at ``offset`` of exactly ``version`` (retried as :func:`retry_pinned` says).

    Raises:
        ObjectChanged: the version was replaced (and retired) while it was read.
        NotEnoughFragments: more than ``m`` of its fragments are lost or corrupt.
    """
    return retry_pinned(client, version, lambda: read_bytes(client, version, offset, length))


def retry_pinned(client: ClusterAccess, version: ObjectVersion, read: Callable[[], T]) -> T:
    """Run ``read``, a read of exactly ``version``, under the retry policy of :mod:`hcstore.client.retry`.

    A fresh cluster map can find fragments that moved or an agent that came back, but
    nothing brings back a version that was replaced: :class:`ObjectChanged` is final here.
    """
    return retrying(
        client,
        read,
        final=(ObjectChanged,),
        what=f"read of hcstore://{version.bucket}/{version.key} generation {version.generation}",
    )
