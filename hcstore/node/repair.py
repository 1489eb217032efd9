"""Repair and rebalance: carry out an :class:`~hcstore.node.repair_plan.ObjectPlan`.

A fragment that only **moves** (its holder is still there: a node joined above it,
or its node is draining) is copied: its chunks are read from the holder, checked
against their digests and sent on unchanged, with no decoding. A fragment that was
**lost** is rebuilt: :func:`repair_object` reads the object's stripes through the
normal verified read path (``k`` fragments, decoding when needed) and re-encodes
each stripe. Either way the chunks stream to their new owners through the same
:class:`~hcstore.client.upload.FragmentUploads` as a put (open, write, prepare,
commit, same generation); moved fragments are then dropped from their old holders,
each only once its new copy is committed. A copy that fails (a holder gone, a
corrupt chunk) is done again as a rebuild. Bytes are rate-limited so background
repair does not starve training I/O, and its reads name the ``repair`` path, which
holders serve on a pool of their own at background priority.
"""

from __future__ import annotations

import contextlib
import logging
from collections import deque
from collections.abc import Callable, Generator, Mapping
from typing import Any

from hcstore.client.access import ClusterAccess, CorruptionReport
from hcstore.client.headers import VersionLayout
from hcstore.client.reader import StripeReader, verified_chunks
from hcstore.client.upload import FragmentUploads
from hcstore.client.versions import ObjectVersion
from hcstore.coding import codec_for
from hcstore.errors import CorruptFragment, HCStoreError
from hcstore.node.rate_limit import RateLimiter
from hcstore.node.repair_plan import ObjectPlan
from hcstore.wire.protocol import REPAIR_READ, Reply

log = logging.getLogger(__name__)

WINDOW = 4
"""Stripes a repair keeps unacknowledged."""
COPY_BATCH = 8
"""Stripes asked of a holder per read when a fragment is copied (two such reads are kept in flight)."""

Stripes = Callable[[], Generator[Mapping[int, Any], None, None]]
"""The chunks of each stripe in turn, by fragment index."""


def repair_object(client: ClusterAccess, version: ObjectVersion, plan: ObjectPlan, limiter: RateLimiter) -> int:
    """Carry out ``plan``: copy or rebuild fragments on their new nodes, then drop moved ones. Returns bytes written.

    Fragments whose new node fails are left out; the rest are still committed.

    Raises:
        HCStoreError: reading failed (NotEnoughFragments), or no rebuilt fragment could be
            written (NotEnoughNodes, naming every failure).
    """
    for index, node in plan.extra:
        _drop(client, version, index, node)
    if not plan.rebuild:
        return 0
    sources = {index: plan.drop[index] for index in plan.rebuild if index in plan.drop}
    if len(sources) == len(plan.rebuild):  # every fragment moves: its holder has it, verbatim
        try:
            return _write(client, version, plan, limiter, lambda: copied_stripes(client, version, sources))
        except HCStoreError as exc:
            log.info("copy of %s/%s failed (%s); rebuilding it instead", version.bucket, version.key, exc)
    codec = codec_for(version.codec, version.k, version.m)

    def rebuilt() -> Generator[Mapping[int, Any], None, None]:
        for _stripe, data in StripeReader(client, version, path=REPAIR_READ).stripes(0, version.stripes):
            yield dict(enumerate([*data, *codec.encode(data)]))

    return _write(client, version, plan, limiter, rebuilt)


def _write(
    client: ClusterAccess, version: ObjectVersion, plan: ObjectPlan, limiter: RateLimiter, stripes: Stripes
) -> int:
    """Stream ``stripes`` to the new holders of ``plan.rebuild``, commit them, drop what moved."""
    written = 0
    with FragmentUploads(
        client,
        version.bucket,
        version.key,
        version.generation,
        chunk_size=version.chunk_size,
        fragments=version.k + version.m,
        targets=plan.rebuild,
        quorum=1,
        holders=version.found_at,
        expected_bytes=version.stripes * version.chunk_size,
        operation=f"repair of {version.bucket}/{version.key}",
    ) as uploads:
        uploads.open()
        with contextlib.closing(stripes()) as source:
            for _stripe in range(version.stripes):
                limiter.take(version.chunk_size * len(uploads.indices()))  # before the stripe is read: reads paced too
                fragments = next(source)
                chunks = {index: bytes(fragments[index]) for index in uploads.indices()}
                written += sum(len(chunk) for chunk in chunks.values())
                uploads.send_stripe(chunks)
                uploads.drain(WINDOW)
        uploads.drain(0)
        uploads.prepare(
            VersionLayout(
                bucket=version.bucket,
                key=version.key,
                generation=version.generation,
                codec=version.codec,
                k=version.k,
                m=version.m,
                chunk_size=version.chunk_size,
                size=version.size,
                stripes=version.stripes,
                meta=version.meta,
            )
        )
        committed = uploads.commit()
    for upload in committed:
        if plan.drop.get(upload.index):
            _drop(client, version, upload.index, plan.drop[upload.index])
    return written


def copied_stripes(
    client: ClusterAccess, version: ObjectVersion, sources: Mapping[int, str]
) -> Generator[dict[int, Any], None, None]:
    """The chunks of fragments ``sources`` (index -> holder), read unchanged from their holders, stripe by stripe.

    Every chunk is checked against its digest; two batches of :data:`COPY_BATCH` stripes are in flight.

    Raises:
        CorruptFragment: a chunk did not match its digest (reported as corrupt).
        HCStoreError: a holder failed or did not answer.
    """
    transport = client.transport
    starts = deque(range(0, version.stripes, COPY_BATCH))
    inflight: deque[tuple[int, int, dict[int, int]]] = deque()
    try:
        while starts or inflight:
            while starts and len(inflight) < 2:
                first = starts.popleft()
                count = min(COPY_BATCH, version.stripes - first)
                asked = {index: _ask(client, version, index, node, first, count) for index, node in sources.items()}
                inflight.append((first, count, asked))
            first, count, asked = inflight.popleft()
            results = transport.wait(asked.values())
            chunks = {index: _chunks(client, version, index, first, count, results[asked[index]]) for index in asked}
            for j in range(count):
                yield {index: chunks[index][j] for index in chunks}
    finally:
        transport.forget(request for _first, _count, asked in inflight for request in asked.values())


def _ask(client: ClusterAccess, version: ObjectVersion, index: int, node: str, first: int, count: int) -> int:
    fields = {"bucket": version.bucket, "key": version.key, "gen": version.generation, "idx": index}
    return client.transport.send(
        client.endpoint(node), "read", {**fields, "first": first, "count": count, "path": REPAIR_READ}
    )


def _chunks(
    client: ClusterAccess, version: ObjectVersion, index: int, first: int, count: int, result: Reply | HCStoreError
) -> list[Any]:
    if isinstance(result, HCStoreError):
        raise result
    chunks = verified_chunks(result.unwrap(), count, version.chunk_size)
    bad = [first + j for j, chunk in enumerate(chunks) if chunk is None]
    for stripe in bad:
        client.report_corruption(
            CorruptionReport(version.bucket, version.key, version.generation, index, stripe, version.locations[index])
        )
    if bad:
        raise CorruptFragment(f"fragment {index} of {version.bucket}/{version.key}: stripes {bad[:8]} are corrupt")
    return chunks


def _drop(client: ClusterAccess, version: ObjectVersion, index: int, node: str) -> None:
    """Ask ``node`` to delete its copy of fragment ``index``; a failure leaves it for a later scan."""
    try:
        client.transport.request(
            client.endpoint(node),
            "drop",
            {"bucket": version.bucket, "key": version.key, "gen": version.generation, "idx": index},
        )
    except HCStoreError:
        pass
