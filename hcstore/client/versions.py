"""Which version of an object a read uses, and where its fragments are.

Resolution asks the agents at the top of the key's ranking (and, if they know
nothing, every other agent) for the generations of the key they hold, and
picks the newest generation that has at least one *committed* fragment; a
tombstone there means the object is deleted. Because a writer commits only
after its write quorum is prepared, a committed fragment proves the whole
generation was durably written, and prepared fragments of it are read too.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from ec import StripeLayout
from hcstore.client.access import ClusterAccess
from hcstore.errors import HCStoreError, ObjectNotFound
from hcstore.names import check_bucket, check_key
from hcstore.wire.protocol import Reply
from placement import rank


@dataclass(frozen=True)
class ObjectVersion:
    """The generation of an object that a read will use, and where its fragments are."""

    bucket: str
    key: str
    generation: str
    kind: str
    size: int
    codec: str
    k: int
    m: int
    chunk_size: int
    stripes: int
    locations: tuple[str, ...]  # node per fragment index ("" unknown)
    committed: int  # committed fragments found
    found: int  # fragments found (committed or prepared)
    meta: dict[str, str] = field(default_factory=dict)
    found_at: tuple[str, ...] = ()  # node where each fragment index was found ("" not found)
    answered: frozenset[str] = frozenset()  # nodes that answered the locate round
    copies: tuple[tuple[int, str], ...] = ()  # further copies of a fragment index found on other nodes

    @property
    def layout(self) -> StripeLayout:
        """How the object's bytes are split into stripes and chunks."""
        return StripeLayout(self.size, self.k, self.chunk_size)

    @property
    def degraded(self) -> bool:
        """True when fewer than all ``k + m`` fragments were found: the object awaits repair."""
        return self.found < self.k + self.m


def resolve(client: ClusterAccess, bucket: str, key: str, *, exhaustive: bool = False) -> ObjectVersion:
    """The newest readable version of ``bucket/key`` (``exhaustive``: ask every node, as repair does).

    Raises:
        ObjectNotFound: no agent holds a committed generation, or the newest is a tombstone.
    """
    check_bucket(bucket)
    check_key(key)
    cluster_map = client.cluster_map
    ranking = [node for node in rank(f"{bucket}/{key}", cluster_map.nodes) if node.endpoint]
    first = len(ranking) if exhaustive else _first_batch(ranking, client.locate_fanout())
    groups: dict[str, dict[str, Any]] = {}
    answered: set[str] = set()
    for batch in (ranking[:first], ranking[first:]):
        if batch:
            for node, reply in _gather_locations(client, batch, bucket, key):
                answered.add(node)
                for entry in reply.header.get("entries", []):
                    _merge_entry(groups, node, entry)
        if any(g["committed"] for g in groups.values()):
            break
    visible = [gen for gen, g in groups.items() if g["committed"]]
    if not visible:
        if client.transport.max_epoch > cluster_map.epoch:  # an agent knows a newer map: retry once with it
            client.refresh()
            if client.cluster_map.epoch > cluster_map.epoch:
                return resolve(client, bucket, key, exhaustive=exhaustive)
        raise ObjectNotFound(f"hcstore://{bucket}/{key} not found")
    gen = max(visible)
    client.clock.observe(gen)
    group = groups[gen]
    info = group["info"]
    if info["kind"] == "tombstone":
        error = ObjectNotFound(f"hcstore://{bucket}/{key} not found (deleted)")
        error.tombstone = gen  # type: ignore[attr-defined]
        raise error
    locations = list(info["placement"])
    for idx, node in group["where"].items():
        if 0 <= idx < len(locations):
            locations[idx] = node
    found_at = tuple(group["where"].get(i, "") for i in range(len(locations)))
    return ObjectVersion(
        bucket,
        key,
        gen,
        info["kind"],
        info["size"],
        info["codec"],
        info["k"],
        info["m"],
        info["chunk_size"],
        info["stripes"],
        tuple(locations),
        group["committed"],
        len(group["where"]),
        dict(info.get("meta") or {}),
        found_at,
        frozenset(answered),
        tuple(group["copies"]),
    )


def _first_batch(ranking: list[Any], fanout: int) -> int:
    """How many of the ranking to ask first: enough to include ``fanout`` alive nodes, since placement
    skips nodes that are not alive and fragments then sit further down the ranking."""
    alive = 0
    for position, node in enumerate(ranking):
        alive += node.state == "alive"
        if alive == fanout:
            return position + 1
    return len(ranking)


def _gather_locations(client: ClusterAccess, nodes: list[Any], bucket: str, key: str) -> list[tuple[str, Reply]]:
    """Ask ``nodes`` what they hold of a key; stop waiting for slow ones once some node has answered
    with a committed fragment and ``hedge_after`` has passed."""
    transport = client.transport
    sent: dict[int, str] = {}
    endpoints: dict[int, str] = {}
    for node in nodes:
        try:
            request_id = transport.send(node.endpoint, "locate", {"bucket": bucket, "key": key})
        except HCStoreError:
            continue
        sent[request_id], endpoints[request_id] = node.id, node.endpoint
    answers: list[tuple[str, Reply]] = []
    soon = time.monotonic() + client.config.hedge_after
    deadline = time.monotonic() + client.config.request_timeout
    waiting = set(sent)
    while waiting:
        now = time.monotonic()
        if now >= deadline:
            transport.expire(waiting)
            break
        found = any(e.get("state") == "committed" for _, r in answers for e in r.header.get("entries", []))
        if found and (now >= soon or all(transport.is_slow(endpoints[i]) for i in waiting)):
            break
        for request_id, result in transport.poll(waiting, (soon if now < soon else deadline) - now).items():
            waiting.discard(request_id)
            if isinstance(result, Reply) and result.ok:
                answers.append((sent[request_id], result))
    transport.forget(waiting)
    return answers


def _merge_entry(groups: dict[str, dict[str, Any]], node: str, entry: dict[str, Any]) -> None:
    group = groups.setdefault(entry["gen"], {"committed": 0, "where": {}, "copies": [], "info": entry["info"]})
    if entry["idx"] not in group["where"]:
        group["where"][entry["idx"]] = node
        group["committed"] += entry["state"] == "committed"
    elif group["where"][entry["idx"]] != node:
        group["copies"].append((entry["idx"], node))
