"""Repair and rebalance: carry out an :class:`~hcstore.node.repair_plan.ObjectPlan`.

:func:`repair_object` reads the object's stripes through the normal verified
read path (``k`` fragments, decoding when needed), re-encodes each stripe,
streams the needed chunks to their new owners with the normal upload protocol
(open, write, prepare, commit, same generation), then drops moved fragments
from their old holders. Bytes are rate-limited so background repair does not
starve training I/O.
"""

from __future__ import annotations

import time
from typing import Any

from ec import FragmentHeader, header_to_dict, make_codec
from hcstore.errors import HCStoreError, NotEnoughNodes
from hcstore.wire.protocol import Reply
from hcstore.client.access import ClusterAccess
from hcstore.client.reader import StripeReader
from hcstore.node.rate_limit import RateLimiter
from hcstore.node.repair_plan import ObjectPlan
from hcstore.client.versions import ObjectVersion

def repair_object(client: ClusterAccess, version: ObjectVersion, plan: ObjectPlan, limiter: RateLimiter) -> int:
    """Carry out ``plan``: rebuild fragments on their new nodes, then drop moved ones. Returns bytes written.

    Raises:
        HCStoreError: reading failed (NotEnoughFragments) or no new fragment could be written.
    """
    for index, node in plan.extra:
        _drop(client, version, index, node)
    if not plan.rebuild:
        return 0
    codec = make_codec(version.codec, version.k, version.m)
    placement = list(version.found_at)
    for index, node in plan.rebuild.items():
        placement[index] = node
    transport = client.transport
    errors: list[str] = []
    uploads = _open_uploads(client, version, plan.rebuild, errors)
    written = 0
    inflight: dict[int, int] = {}
    for stripe, data in StripeReader(client, version).stripes(0, version.stripes):
        chunks = list(data) + list(codec.encode(data))
        for index, (endpoint, upload) in list(uploads.items()):
            limiter.take(len(chunks[index]))
            try:
                inflight[transport.send(endpoint, "write", {"upload": upload, "stripe": stripe},
                                        [bytes(chunks[index])])] = index
            except HCStoreError as exc:
                errors.append(f"fragment {index}: {exc}")
                del uploads[index]
            written += len(chunks[index])
        while len(inflight) > 4 * max(1, len(uploads)):
            results = transport.poll(list(inflight))
            if not results:
                transport.expire(list(inflight))
            for request_id, result in results.items():
                _check_write(inflight.pop(request_id), result, uploads, errors)
    for request_id, result in transport.wait(list(inflight)).items():
        _check_write(inflight[request_id], result, uploads, errors)
    done = _seal(client, version, codec.name, uploads, tuple(placement), errors)
    for index in done:
        if plan.drop.get(index):
            _drop(client, version, index, plan.drop[index])
    if not done:
        raise NotEnoughNodes(f"repair of {version.bucket}/{version.key}: no rebuilt fragment could be committed "
                             f"({'; '.join(errors) or 'no upload could be opened'})")
    return written


def _drop(client: ClusterAccess, version: ObjectVersion, index: int, node: str) -> None:
    try:
        client.transport.request(client.endpoint(node), "drop", {
            "bucket": version.bucket, "key": version.key, "gen": version.generation, "idx": index})
    except HCStoreError:
        pass          # the stale copy stays; a later scan drops it


def _check_write(index: int, result: Any, uploads: dict[int, tuple[str, str]], errors: list[str]) -> None:
    if not (isinstance(result, Reply) and result.ok):
        errors.append(f"fragment {index}: {result.error() if isinstance(result, Reply) else result}")
        uploads.pop(index, None)


def _open_uploads(client: ClusterAccess, version: ObjectVersion, targets: dict[int, str],
                  errors: list[str]) -> dict[int, tuple[str, str]]:
    transport = client.transport
    sent: dict[int, tuple[int, str]] = {}
    for index, node in targets.items():
        try:
            endpoint = client.endpoint(node)
            sent[transport.send(endpoint, "open", {
                "bucket": version.bucket, "key": version.key, "gen": version.generation, "idx": index,
                "chunk_size": version.chunk_size, "expected_bytes": version.stripes * version.chunk_size})] = (
                index, endpoint)
        except HCStoreError as exc:
            errors.append(f"open fragment {index} on {node}: {exc}")
    uploads: dict[int, tuple[str, str]] = {}
    for request_id, result in transport.wait(list(sent)).items():
        index, endpoint = sent[request_id]
        if isinstance(result, Reply) and result.ok:
            uploads[index] = (endpoint, result.header["upload"])
        else:
            errors.append(f"open fragment {index} on {endpoint}: "
                          f"{result.error() if isinstance(result, Reply) else result}")
    return uploads


def _seal(client: ClusterAccess, version: ObjectVersion, codec: str, uploads: dict[int, tuple[str, str]],
          placement: tuple[str, ...], errors: list[str]) -> list[int]:
    """Prepare and commit the rebuilt fragments; returns the indices now committed."""
    transport = client.transport
    committed: list[int] = []
    for index, (endpoint, upload) in uploads.items():
        header = header_to_dict(FragmentHeader(
            bucket=version.bucket, key=version.key, generation=version.generation, kind="data", codec=codec,
            k=version.k, m=version.m, chunk_size=version.chunk_size, size=version.size, index=index,
            stripes=version.stripes, digests=bytes(32 * version.stripes), placement=placement,
            created_ns=time.time_ns(), meta=version.meta))
        del header["digests"]
        try:
            transport.request(endpoint, "prepare", {"upload": upload, "header": header})
            transport.request(endpoint, "commit", {"bucket": version.bucket, "key": version.key,
                                                   "gen": version.generation, "idx": index})
            committed.append(index)
        except HCStoreError as exc:
            errors.append(f"fragment {index}: {exc}")
    return committed


