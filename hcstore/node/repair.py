"""Repair and rebalance: carry out an :class:`~hcstore.node.repair_plan.ObjectPlan`.

:func:`repair_object` reads the object's stripes through the normal verified
read path (``k`` fragments, decoding when needed), re-encodes each stripe, and
streams the needed chunks to their new owners through the same
:class:`~hcstore.client.upload.FragmentUploads` as a put (open, write, prepare,
commit, same generation); then it drops moved fragments from their old holders,
each only once its new copy is committed. Bytes are rate-limited so background
repair does not starve training I/O.
"""

from __future__ import annotations

from hcstore.client.access import ClusterAccess
from hcstore.client.headers import VersionLayout
from hcstore.client.reader import StripeReader
from hcstore.client.upload import FragmentUploads
from hcstore.client.versions import ObjectVersion
from hcstore.coding import codec_for
from hcstore.errors import HCStoreError
from hcstore.node.rate_limit import RateLimiter
from hcstore.node.repair_plan import ObjectPlan

WINDOW = 4
"""Stripes a repair keeps unacknowledged."""


def repair_object(client: ClusterAccess, version: ObjectVersion, plan: ObjectPlan, limiter: RateLimiter) -> int:
    """Carry out ``plan``: rebuild fragments on their new nodes, then drop moved ones. Returns bytes written.

    Fragments whose new node fails are left out; the rest are still committed.

    Raises:
        HCStoreError: reading failed (NotEnoughFragments), or no rebuilt fragment could be
            written (NotEnoughNodes, naming every failure).
    """
    for index, node in plan.extra:
        _drop(client, version, index, node)
    if not plan.rebuild:
        return 0
    codec = codec_for(version.codec, version.k, version.m)
    written = 0
    with FragmentUploads(
        client,
        version.bucket,
        version.key,
        version.generation,
        chunk_size=version.chunk_size,
        fragments=codec.n,
        targets=plan.rebuild,
        quorum=1,
        holders=version.found_at,
        expected_bytes=version.stripes * version.chunk_size,
        operation=f"repair of {version.bucket}/{version.key}",
    ) as uploads:
        uploads.open()
        for _stripe, data in StripeReader(client, version).stripes(0, version.stripes):
            fragments = [*data, *codec.encode(data)]
            chunks = {index: bytes(fragments[index]) for index in uploads.indices()}
            for chunk in chunks.values():
                limiter.take(len(chunk))
                written += len(chunk)
            uploads.send_stripe(chunks)
            uploads.drain(WINDOW)
        uploads.drain(0)
        uploads.prepare(
            VersionLayout(
                bucket=version.bucket,
                key=version.key,
                generation=version.generation,
                codec=codec.name,
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
