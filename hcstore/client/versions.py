"""Which version of an object a read uses, and where its fragments are.

Resolution asks every read candidate of the key (the top of its ranking, see
:mod:`placement.quorum`; and, if they know nothing, every other agent) for the
generations of the key they hold, and picks the newest generation that has at
least one *committed* fragment; a tombstone there means the object is deleted.
Because a writer commits only after its write quorum is prepared, a committed
fragment proves the whole generation was durably written, and prepared fragments
of it are read too.

Reads tell the truth: "not found", or a generation as the newest, is answered
only when the candidates that did not answer are fewer than the smallest write
quorum a writer of the key could have used, so that no newer committed
generation can sit on them alone. Otherwise resolution raises
:class:`~hcstore.errors.NotProven`, naming them; the retry policy asks again.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ec import StripeLayout, parse_ec
from hcstore.client.access import ClusterAccess
from hcstore.errors import HCStoreError, NotProven, ObjectNotFound, UnknownOperation
from hcstore.names import check_bucket, check_key
from hcstore.wire.protocol import MAX_LOCATE_MANY, Reply
from placement import ClusterMap, Proof, prove, rank, read_candidates, schemes_of, smallest_quorum

log = logging.getLogger(__name__)


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


def resolve(
    client: ClusterAccess, bucket: str, key: str, *, exhaustive: bool = False, fewest: bool = False
) -> ObjectVersion:
    """The newest readable version of ``bucket/key``, proven newest (``exhaustive``: ask every node, as repair does).

    Every read candidate of the key is asked (:func:`placement.read_candidates`; every node when
    ``exhaustive``), and every other node too when none of them holds a committed generation.
    With ``fewest`` (a read), only as many candidates as a proof needs are asked first, those
    that answered quickly of late ahead, and the rest only when their answers do not prove a
    version with ``k`` of its fragments located: the version's ``found`` then counts only the
    fragments on the nodes asked.
    The answer stands only when the candidates that did not answer are too few to hold a newer
    committed generation on their own (:func:`placement.prove`).

    Raises:
        ObjectNotFound: proven: no node holds a committed generation, or the newest is a
            tombstone (then ``tombstone`` is its generation and ``holders`` the nodes found
            holding it).
        NotProven: the nodes that did not answer could hold a newer generation (or the only
            one); ``unreached`` names them.
    """
    search = _Search(client, client.cluster_map, bucket, key, schemes_of(*parse_ec(client.config.ec)))
    if exhaustive:
        search.ask(search.everyone)
    return _conclude(search, exhaustive=exhaustive, fewest=fewest)


def resolve_many(
    client: ClusterAccess, names: Sequence[tuple[str, str]]
) -> dict[tuple[str, str], ObjectVersion | HCStoreError]:
    """:func:`resolve` (``exhaustive``) of many keys, asking each node about all of them in one request.

    A repair scan resolves every object it checks on every node; one ``locate_many`` of up to
    :data:`~hcstore.wire.protocol.MAX_LOCATE_MANY` keys per node costs the agents and the scan
    a small part of what one ``locate`` per key and node does. An agent that does not know
    ``locate_many`` yet (a cluster being upgraded) gets one ``locate`` per key instead.

    Returns:
        each name's version, or the error its :func:`resolve` would have raised.
    """
    configured = schemes_of(*parse_ec(client.config.ec))
    searches: dict[tuple[str, str], _Search] = {}
    outcomes: dict[tuple[str, str], ObjectVersion | HCStoreError] = {}
    for name in names:
        try:
            searches[name] = _Search(client, client.cluster_map, *name, configured)
        except HCStoreError as exc:  # a name that is not valid
            outcomes[name] = exc
    if not _ask_many(client, client.cluster_map.nodes, searches):
        return {**outcomes, **{name: _outcome(resolve, client, *name, exhaustive=True) for name in searches}}
    return {**outcomes, **{name: _outcome(_conclude, search, exhaustive=True) for name, search in searches.items()}}


def _outcome(fn: Any, *args: Any, **kwargs: Any) -> ObjectVersion | HCStoreError:
    """What ``fn`` returns, or the error it raises."""
    try:
        result: ObjectVersion = fn(*args, **kwargs)
        return result
    except HCStoreError as exc:
        return exc


def _conclude(search: _Search, *, exhaustive: bool, fewest: bool = False) -> ObjectVersion:
    """Ask whom the proof still needs, then the proven newest version of the search's key (see :func:`resolve`)."""
    client, cluster_map, bucket, key = search.client, search.cluster_map, search.bucket, search.key
    while missing := [cluster_map.node(n) for n in search.candidates() if n not in search.asked]:
        search.ask(_usable_first(client, missing), at_once=search.enough_to_prove() if fewest else None)
    if search.newest() is None:
        search.ask([node for node in search.everyone if node.id not in search.asked])
    proof = prove(search.candidates(), search.answered, search.schemes())
    gen = search.newest()
    if (not proof.proven or gen is None) and client.transport.max_epoch > cluster_map.epoch:
        client.refresh()  # an agent knows a newer map: ask again with it, once
        if client.cluster_map.epoch > cluster_map.epoch:
            return resolve(client, bucket, key, exhaustive=exhaustive, fewest=fewest)
    if not proof.proven:
        raise _not_proven(f"hcstore://{bucket}/{key}", search, gen, proof)
    if gen is None:
        raise ObjectNotFound(f"hcstore://{bucket}/{key} not found")
    client.clock.observe(gen)
    group = search.groups[gen]
    info = group["info"]
    if info["kind"] == "tombstone":
        error = ObjectNotFound(f"hcstore://{bucket}/{key} not found (deleted)")
        error.tombstone = gen  # type: ignore[attr-defined]
        holders = {*group["where"].values(), *(node for _, node in group["copies"])}
        error.holders = tuple(sorted(holders))  # type: ignore[attr-defined]
        raise error
    if group["prepared"]:
        _roll_forward(client, bucket, key, gen, group["prepared"])
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
        frozenset(search.answered),
        tuple(group["copies"]),
    )


def _not_proven(url: str, search: _Search, gen: str | None, proof: Proof) -> NotProven:
    """The error of a read whose silent candidates could hold a newer committed generation."""
    silent = ", ".join(proof.unreached)
    why = (
        f"{len(proof.unreached)} of the {len(proof.candidates)} nodes that could hold it did not answer "
        f"({silent}), and a version needs as few as {proof.quorum} nodes, so one could sit on them alone"
    )
    if gen is None:
        what = f"{url}: cannot tell whether it exists"
    elif search.groups[gen]["info"]["kind"] == "tombstone":
        what = f"{url}: found deleted (generation {gen}), but a newer version may exist"
    else:
        what = f"{url}: found generation {gen}, but a newer one may exist"
    return NotProven(f"{what}: {why}; retry later, or bring those nodes back", proof.unreached)


class _Search:
    """The locate answers gathered so far for one key: generations by node, who answered, who was asked."""

    def __init__(
        self,
        client: ClusterAccess,
        cluster_map: ClusterMap,
        bucket: str,
        key: str,
        configured: tuple[tuple[int, int], ...],
    ) -> None:
        check_bucket(bucket)
        check_key(key)
        self.client = client
        self.cluster_map = cluster_map
        self.bucket = bucket
        self.key = key
        self.name = f"{bucket}/{key}"
        self.configured = configured
        self.groups: dict[str, dict[str, Any]] = {}
        self.answered: set[str] = set()
        self.asked: set[str] = set()
        self._candidates: dict[tuple[tuple[int, int], ...], tuple[str, ...]] = {}

    @functools.cached_property
    def everyone(self) -> list[Any]:
        """Every node of the map, in the key's ranking."""
        return rank(self.name, self.cluster_map.nodes)

    def newest(self) -> str | None:
        """The newest generation with a committed fragment among the answers, if any."""
        visible = [gen for gen, g in self.groups.items() if g["committed"]]
        return max(visible) if visible else None

    def schemes(self) -> tuple[tuple[int, int], ...]:
        """The schemes a writer of this key could have used: the configured EC's and the newest version's."""
        gen = self.newest()
        info = self.groups[gen]["info"] if gen is not None else None
        if info is None or info["kind"] == "tombstone":
            return self.configured
        return tuple(dict.fromkeys((*self.configured, *schemes_of(info["k"], info["m"]))))

    def candidates(self) -> tuple[str, ...]:
        """The nodes whose answers the proof needs."""
        schemes = self.schemes()
        if schemes not in self._candidates:
            self._candidates[schemes] = read_candidates(self.name, self.cluster_map, schemes)
        return self._candidates[schemes]

    def settled(self, silent: set[str]) -> bool:
        """True when a committed generation is known, enough of its fragments to read it are located
        among the answers, and it stays proven even if ``silent`` never answer."""
        gen = self.newest()
        if gen is None:
            return False
        group = self.groups[gen]
        if len(group["where"]) < (1 if group["info"]["kind"] == "tombstone" else group["info"]["k"]):
            return False
        return prove(self.candidates(), self.answered - silent, self.schemes()).proven

    def enough_to_prove(self) -> int:
        """How many more candidates must answer before a proof can stand: all but ``W_min - 1`` of them."""
        unanswered = [node for node in self.candidates() if node not in self.answered]
        return max(1, len(unanswered) - smallest_quorum(self.schemes()) + 1)

    def ask(self, nodes: list[Any], *, at_once: int | None = None) -> None:
        """Ask ``nodes`` what they hold of the key, ``at_once`` of them first (see :func:`_gather`)."""
        self.asked.update(node.id for node in nodes)
        _gather(
            self.client,
            nodes,
            "locate",
            {"bucket": self.bucket, "key": self.key},
            self.settled,
            self.merge,
            at_once=at_once,
        )

    def merge(self, node: str, entries: list[dict[str, Any]]) -> None:
        """Take in what ``node`` answered it holds of the key."""
        self.answered.add(node)
        for entry in entries:
            _merge_entry(self.groups, node, entry)


def _ask_many(client: ClusterAccess, nodes: Sequence[Any], searches: Mapping[tuple[str, str], _Search]) -> bool:
    """Ask ``nodes`` about every search's key, in ``locate_many`` requests; False when a node does not know them."""
    unknown: list[str] = []

    def refused(node: str, error: HCStoreError) -> None:
        if isinstance(error, UnknownOperation):
            unknown.append(node)

    batch = list(searches.values())
    for first in range(0, len(batch), MAX_LOCATE_MANY):
        part = batch[first : first + MAX_LOCATE_MANY]
        for search in part:
            search.asked.update(node.id for node in nodes)

        def settled(silent: set[str], part: list[_Search] = part) -> bool:
            return all(search.settled(silent) for search in part)

        def merge(node: str, per_key: list[list[dict[str, Any]]], part: list[_Search] = part) -> None:
            for search, entries in zip(part, per_key, strict=False):
                search.merge(node, entries)

        objects = [{"bucket": search.bucket, "key": search.key} for search in part]
        _gather(client, nodes, "locate_many", {"objects": objects}, settled, merge, refused)
        if unknown:
            return False
    return True


def _gather(
    client: ClusterAccess,
    nodes: Sequence[Any],
    op: str,
    fields: dict[str, Any],
    settled: Callable[[set[str]], bool],
    merge: Callable[[str, Any], None],
    refused: Callable[[str, HCStoreError], None] = lambda node, error: None,
    *,
    at_once: int | None = None,
) -> None:
    """Send ``op`` to ``nodes`` and ``merge`` each answer's ``entries``.

    Only the first ``at_once`` nodes are asked at first (all when None); the others are asked
    when those answers are in and not ``settled``, when one of them fails, or once
    ``hedge_after`` has passed. Waiting for slow nodes stops once ``hedge_after`` has passed
    and they cannot change the answer (``settled`` by the nodes still silent).
    """
    transport = client.transport
    unsent = list(nodes)
    sent: dict[int, str] = {}
    endpoints: dict[int, str] = {}
    waiting: set[int] = set()

    def send(count: int) -> None:
        while unsent and count > 0:
            node = unsent.pop(0)
            if not node.endpoint:
                continue
            try:
                request_id = transport.send(node.endpoint, op, fields)
            except HCStoreError:
                continue
            sent[request_id], endpoints[request_id] = node.id, node.endpoint
            waiting.add(request_id)
            count -= 1

    send(at_once or len(unsent))
    soon = time.monotonic() + client.config.hedge_after
    deadline = time.monotonic() + client.config.request_timeout
    failed = False
    while waiting or unsent:
        now = time.monotonic()
        if now >= deadline:
            transport.expire(waiting)
            break
        hurry = now >= soon or all(transport.is_slow(endpoints[i]) for i in waiting)
        if (hurry or failed or not waiting) and settled({sent[i] for i in waiting}):
            break
        if unsent and (hurry or failed or not waiting):
            send(len(unsent))  # the first answers do not settle it: ask the rest
            continue
        for request_id, result in transport.poll(waiting, (soon if now < soon else deadline) - now).items():
            waiting.discard(request_id)
            if isinstance(result, Reply) and result.ok:
                merge(sent[request_id], result.header.get("entries", []))
            else:
                failed = True
                if isinstance(result, Reply):
                    refused(sent[request_id], result.error())
    transport.forget(waiting)


def _usable_first(client: ClusterAccess, nodes: list[Any]) -> list[Any]:
    """``nodes`` in order, those that failed or were slow moments ago last (asked only if the rest cannot settle it)."""
    return sorted(nodes, key=lambda node: client.is_unavailable(node.id))


def _roll_forward(client: ClusterAccess, bucket: str, key: str, gen: str, prepared: dict[int, str]) -> None:
    """Commit the prepared fragments of a version that readers now see (read-repair of a writer that died
    between commits): the version must stay visible when the nodes of its committed fragments go down.

    Commits are idempotent; a node that cannot be reached keeps its fragment prepared for the next
    reader or repair scan to commit.
    """
    transport = client.transport
    sent = []
    for idx, node in prepared.items():
        try:
            sent.append(
                transport.send(client.endpoint(node), "commit", {"bucket": bucket, "key": key, "gen": gen, "idx": idx})
            )
        except HCStoreError as exc:
            log.info("hcstore://%s/%s: fragment %d on %s stays prepared: %s", bucket, key, idx, node, exc)
    for result in transport.wait(sent).values():
        if not (isinstance(result, Reply) and result.ok):
            log.info(
                "hcstore://%s/%s: a prepared fragment was not committed: %s",
                bucket,
                key,
                result.error() if isinstance(result, Reply) else result,
            )


def _merge_entry(groups: dict[str, dict[str, Any]], node: str, entry: dict[str, Any]) -> None:
    group = groups.setdefault(
        entry["gen"], {"committed": 0, "where": {}, "copies": [], "prepared": {}, "info": entry["info"]}
    )
    if entry["idx"] not in group["where"]:
        group["where"][entry["idx"]] = node
        group["committed"] += entry["state"] == "committed"
        if entry["state"] != "committed":
            group["prepared"][entry["idx"]] = node
    elif group["where"][entry["idx"]] != node:
        group["copies"].append((entry["idx"], node))
