"""The upload protocol: fragments of one object version streamed to their nodes, sealed and committed.

Every path that stores fragments (a put, a repair or a rebalance) goes through
:class:`FragmentUploads`. For each fragment index it has a target node:

1. **open** an upload on each target (``open``); a target that fails or is full is
   replaced by the next spare node, in ranking order;
2. **write** chunk ``i`` of each stripe to the target of fragment ``i`` (``write``),
   with at most ``window`` stripes unacknowledged (:meth:`FragmentUploads.drain`),
   so memory stays bounded whatever the object's size;
3. **prepare** each upload with its fragment header (``prepare``): sealed, fsynced,
   renamed, still invisible;
4. **commit** the prepared fragments (``commit``) once at least ``quorum`` of them
   are prepared; and finally, for a new version, **retire** older generations.

A put's targets and spares come from :func:`place_in_home_set`: every fragment of a
version stays inside the key's home set, which is what lets a reader prove that a
version is the newest (:mod:`placement.quorum`).

A fragment of at most one stripe skips the first three steps with one ``store``
message each (:meth:`FragmentUploads.store`). A target whose request fails is
dropped, and the uploads go on while ``quorum`` targets are left (a put's write
quorum; 1 for a repair); below that everything is aborted and
:class:`~hcstore.errors.NotEnoughNodes` (or :class:`~hcstore.errors.StoreFull`, when
mostly full nodes stood in the way) names every failure. Until a commit no reader
sees the new fragments, so an abort at any point leaves the previous state.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from hcstore.client.access import ClusterAccess
from hcstore.client.headers import VersionLayout, fragment_header, tombstone_layout
from hcstore.errors import AgentUnavailable, HCStoreError, NotEnoughNodes, ObjectNotFound, StoreFull
from hcstore.wire.protocol import Reply
from placement import ClusterMap, Placement, home_map, home_write_quorum, place, write_quorum

log = logging.getLogger(__name__)


def place_in_home_set(key: str, cluster_map: ClusterMap, k: int, m: int, *, operation: str) -> tuple[Placement, int]:
    """Targets and spares for a new ``k+m`` version of ``key``, all inside its home set, and its write quorum
    (:func:`placement.home_write_quorum`: nodes in maintenance excuse fragments).

    Raises:
        NotEnoughNodes: fewer writable nodes in the home set than the write quorum.
    """
    home = home_map(key, cluster_map, k, m)
    quorum = home_write_quorum(home, k, m)
    writable = len(home.writable())
    if writable < quorum:
        down = ", ".join(f"{n.id} ({n.state})" for n in home.nodes if n not in home.writable()) or "none"
        raise NotEnoughNodes(
            f"{operation}: only {writable} of the {len(home)} nodes of its home set are writable and the write "
            f"quorum of {k}+{m} is {quorum} (not writable: {down}); bring nodes back or add nodes"
        )
    return place(key, home, k, m), quorum


def store_tombstone(
    access: ClusterAccess,
    bucket: str,
    key: str,
    generation: str,
    m: int,
    *,
    holders: Collection[str] = (),
    also: Sequence[str] = (),
) -> tuple[str, ...]:
    """Store the tombstone ``generation`` of ``bucket/key`` on ``m + 1`` nodes of its home set.

    A tombstone is a replicated ``1+m`` version: it goes where :func:`place_in_home_set` puts one,
    spares of the home set standing in for nodes that refuse, until the replicated write quorum
    (``m + 1``) of home-set nodes hold it. It also goes to the nodes in ``also`` (holders of the
    versions it hides, which it retires there); those outside the home set do not count.

    Args:
        access: The cluster to write to.
        bucket: Bucket name.
        key: Object key.
        generation: The tombstone's generation.
        m: The tombstone needs ``m + 1`` holders.
        holders: Nodes that already hold this tombstone (a retry completing an earlier delete).
        also: Further nodes to send it to.

    Returns:
        The home-set nodes holding the tombstone.

    Raises:
        AgentUnavailable: fewer than ``m + 1`` nodes of the home set hold it; those that do keep
            it (the object reads as deleted where they answer), and a retry completes the delete.
    """
    name = f"{bucket}/{key}"
    home = home_map(name, access.cluster_map, 1, m)
    placement = place(name, home, 1, m)
    quorum = write_quorum(1, m)
    inside = {node.id for node in home.nodes}
    held = {node for node in holders if node in inside}
    everyone = sorted({*placement.nodes, *placement.spares, *(n for n in also if n), *held})
    layout = tombstone_layout(bucket, key, generation, len(everyone))
    spares = deque(node for node in placement.spares if node not in held)
    wanted = [node for node in dict.fromkeys((*placement.nodes, *also)) if node and node not in held]
    errors: list[str] = []
    transport = access.transport
    while wanted:
        sent: dict[int, str] = {}
        for node in wanted:
            header = fragment_header(layout, everyone.index(node), everyone)
            try:
                sent[transport.send(access.endpoint(node), "tombstone", {"header": header})] = node
            except HCStoreError as exc:
                errors.append(f"{node}: {exc}")
        for request_id, result in transport.wait(sent).items():
            error = _error_of(result)
            if error is not None:
                errors.append(f"{sent[request_id]}: {error}")
            elif sent[request_id] in inside:
                held.add(sent[request_id])
        short = quorum - len(held)
        wanted = [spares.popleft() for _ in range(min(max(short, 0), len(spares)))]
    if len(held) < quorum:
        why = "; ".join(errors) or "too few writable nodes"
        raise AgentUnavailable(
            f"delete {name}: only {len(held)} of the {quorum} nodes its tombstone needs in the home set "
            f"({', '.join(node.id for node in home.nodes)}) accepted it ({why}); "
            "where it landed the object reads as deleted, retry the delete to complete it"
        )
    return tuple(sorted(held))


@dataclass
class FragmentUpload:
    """One fragment's upload on one node.

    Attributes:
        index: The fragment index.
        node: The node id receiving it.
        endpoint: The node's endpoint.
        upload: The agent's upload id ("" once stored in one message).
        prepared: The fragment is sealed on the node (committing it makes it visible).
        failed: The error that made this target drop out, if any.
    """

    index: int
    node: str
    endpoint: str
    upload: str
    prepared: bool = False
    failed: HCStoreError | None = None


class StripeWindow:
    """Stripes sent and not yet acknowledged by every target, oldest first (bookkeeping only, no I/O)."""

    def __init__(self) -> None:
        self._stripes: deque[int] = deque()
        self._waiting: dict[int, int] = {}  # stripe -> replies still expected
        self._held: dict[int, Any] = {}  # stripe -> kept alive until acknowledged
        self._requests: dict[int, tuple[int, int]] = {}  # request id -> (stripe, fragment index)

    def __len__(self) -> int:
        """Stripes not yet released."""
        return len(self._stripes)

    @property
    def requests(self) -> list[int]:
        """The ids of the requests still awaiting a reply."""
        return list(self._requests)

    def open(self, stripe: int, hold: Any = None) -> None:
        """Start tracking ``stripe``; ``hold`` is kept until every reply for it has come."""
        if self._stripes and stripe <= self._stripes[-1]:
            raise ValueError(f"stripe {stripe} opened after stripe {self._stripes[-1]}")
        self._stripes.append(stripe)
        self._waiting[stripe] = 0
        self._held[stripe] = hold

    def track(self, request_id: int, stripe: int, index: int) -> None:
        """Record that ``request_id`` carries fragment ``index``'s chunk of an open ``stripe``."""
        if stripe not in self._waiting:
            raise KeyError(f"stripe {stripe} is not open")
        self._requests[request_id] = (stripe, index)
        self._waiting[stripe] += 1

    def settle(self, request_id: int) -> int:
        """A reply (or failure) for ``request_id`` came; returns the fragment index it carried."""
        stripe, index = self._requests.pop(request_id)
        self._waiting[stripe] -= 1
        return index

    def release(self) -> list[Any]:
        """Forget the oldest stripes that expect no more replies; returns what they held, oldest first."""
        released = []
        while self._stripes and self._waiting[self._stripes[0]] <= 0:
            stripe = self._stripes.popleft()
            del self._waiting[stripe]
            released.append(self._held.pop(stripe))
        return released

    def clear(self) -> list[int]:
        """Forget everything; returns the ids of the requests that were still awaiting a reply."""
        outstanding = list(self._requests)
        self._stripes.clear()
        self._waiting.clear()
        self._held.clear()
        self._requests.clear()
        return outstanding


def _error_of(result: Reply | HCStoreError) -> HCStoreError | None:
    """The error a request ended with, or None when it succeeded."""
    if isinstance(result, Reply):
        return None if result.ok else result.error()
    return result


class FragmentUploads:
    """Uploads of some fragments of one object version, from open to commit (or abort).

    Args:
        access: The cluster to write to.
        bucket: Bucket name.
        key: Object key.
        generation: The generation being written (a repair writes the version's own).
        chunk_size: Bytes per chunk.
        fragments: How many fragments the version has (``k + m``).
        targets: Fragment index -> the node meant to hold it.
        quorum: The fewest targets with which the uploads go on, and the fewest prepared
            fragments that may be committed.
        spares: Nodes, in order of preference, that stand in for targets that fail or are full.
        holders: Fragment index -> the node holding it outside these uploads (``""`` none); the
            headers' placement is this, overlaid with the live targets.
        expected_bytes: The size each fragment's data will have, when known (lets a full node
            refuse at open).
        operation: What the uploads are for, in error messages (``"put bucket/key"``).
    """

    def __init__(
        self,
        access: ClusterAccess,
        bucket: str,
        key: str,
        generation: str,
        *,
        chunk_size: int,
        fragments: int,
        targets: Mapping[int, str],
        quorum: int,
        spares: Sequence[str] = (),
        holders: Sequence[str] = (),
        expected_bytes: int | None = None,
        operation: str = "",
    ) -> None:
        self.access = access
        self.bucket = bucket
        self.key = key
        self.generation = generation
        self.chunk_size = chunk_size
        self.quorum = quorum
        self.expected_bytes = expected_bytes
        self.operation = operation or f"upload of {bucket}/{key}"
        self.targets: list[FragmentUpload | None] = [None] * fragments
        self.stripes = 0
        self.opened = False
        self._planned = dict(sorted(targets.items()))
        self._spares = tuple(spares)
        self._holders = tuple(holders)[:fragments] + ("",) * (fragments - len(holders))
        self._window = StripeWindow()
        self._errors: list[str] = []
        self._settled = False

    def __enter__(self) -> FragmentUploads:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        if exc_type is not None:
            self.abort()

    # ------------------------------------------------------------------ state

    def live(self) -> list[FragmentUpload]:
        """The targets still taking part, in fragment order."""
        return [t for t in self.targets if t is not None and t.failed is None]

    def indices(self) -> list[int]:
        """The fragment indices of the live targets."""
        return [t.index for t in self.live()]

    def placement(self) -> tuple[str, ...]:
        """The node holding each fragment index: a live target's, else the holder outside these uploads."""
        return self._overlay({t.index: t.node for t in self.live()})

    def _overlay(self, nodes: Mapping[int, str]) -> tuple[str, ...]:
        return tuple(nodes.get(index, holder) for index, holder in enumerate(self._holders))

    # ------------------------------------------------------------------ open / store

    def open(self) -> None:
        """Open an upload on every target, a spare standing in for each that fails or is full.

        Raises:
            StoreFull: fewer than ``quorum`` uploads opened, mostly because nodes are full.
            NotEnoughNodes: fewer than ``quorum`` uploads opened.
        """
        self._place("open", self._open_fields, lambda index: (), prepared=False)

    def store(self, payloads: Sequence[Sequence[Any]], layout: VersionLayout) -> None:
        """Write and prepare each fragment in one ``store`` message: ``payloads[i]`` are fragment ``i``'s chunks.

        For a version of at most one stripe. When spares stood in for failed targets, the
        fragments are stored again so that every header names the nodes that really hold them
        (repair and readers trust a header's placement).

        Raises:
            StoreFull: fewer than ``quorum`` fragments were stored, mostly because nodes are full.
            NotEnoughNodes: fewer than ``quorum`` fragments were stored.
        """

        def fields(index: int, placement: tuple[str, ...]) -> dict[str, Any]:
            return {
                **self._ident(index),
                "chunk_size": self.chunk_size,
                "header": fragment_header(layout, index, placement),
            }

        planned = self._overlay(self._planned)
        self._place("store", lambda index: fields(index, planned), lambda index: payloads[index], prepared=True)
        actual = self.placement()
        if actual != planned:
            self._phase("store", self.live(), lambda t: fields(t.index, actual), lambda t: payloads[t.index])

    def _open_fields(self, index: int) -> dict[str, Any]:
        fields = {**self._ident(index), "chunk_size": self.chunk_size}
        if self.expected_bytes is not None:
            fields["expected_bytes"] = self.expected_bytes
        return fields

    def _ident(self, index: int) -> dict[str, Any]:
        return {"bucket": self.bucket, "key": self.key, "gen": self.generation, "idx": index}

    def _place(
        self,
        op: str,
        fields_of: Callable[[int], dict[str, Any]],
        payloads_of: Callable[[int], Sequence[Any]],
        *,
        prepared: bool,
    ) -> None:
        """Send ``op`` for every planned target, moving a failed one to the next spare; check the quorum."""
        transport = self.access.transport
        spares = deque(self._spares)
        full = failures = 0
        wanted = list(self._planned.items())
        while wanted:
            sent: dict[int, tuple[int, str, str]] = {}
            errors: list[tuple[int, str, HCStoreError]] = []
            for index, node in wanted:
                try:
                    endpoint = self.access.endpoint(node)
                    sent[transport.send(endpoint, op, fields_of(index), payloads_of(index))] = (index, node, endpoint)
                except HCStoreError as exc:
                    errors.append((index, node, exc))
            for request_id, result in transport.wait(sent).items():
                index, node, endpoint = sent[request_id]
                error = _error_of(result)
                if error is None:
                    assert isinstance(result, Reply)
                    self.targets[index] = FragmentUpload(
                        index, node, endpoint, result.header.get("upload", ""), prepared=prepared
                    )
                else:
                    errors.append((index, node, error))
            wanted = []
            for index, node, error in sorted(errors, key=lambda e: e[0]):
                if isinstance(error, StoreFull):
                    full += 1
                else:
                    failures += 1
                self._errors.append(f"fragment {index} on {node}: {error}")
                if spares:
                    wanted.append((index, spares.popleft()))
                    log.info(
                        "%s: fragment %d: %s failed (%s); trying %s", self.operation, index, node, error, wanted[-1][1]
                    )
                else:
                    log.info("%s: fragment %d: %s failed (%s); no spare left", self.operation, index, node, error)
        self.opened = True
        stored = len(self.live())
        if stored < self.quorum:
            problem = self._problem() or "the cluster map has too few writable nodes"
            cls = StoreFull if full and full >= failures else NotEnoughNodes
            raise self._give_up(
                cls(
                    f"{self.operation}: only {stored} of {len(self._planned)} fragments could be "
                    f"placed and the write quorum is {self.quorum} ({problem})"
                )
            )

    # ------------------------------------------------------------------ streaming

    def send_stripe(self, chunks: Sequence[Any] | Mapping[int, Any], *, buffer: Any = None) -> None:
        """Send the next stripe: ``chunks[i]`` to the target of fragment ``i``, without copying it.

        The chunks must stay unchanged until the stripe is acknowledged; ``buffer`` (the
        caller's, holding them) is handed back by :meth:`drain` at that point.

        Raises:
            StoreFull, NotEnoughNodes: failures left fewer than ``quorum`` targets (all aborted).
        """
        if not self.opened:
            raise RuntimeError(f"{self.operation}: send_stripe before open")
        stripe = self.stripes
        self.stripes += 1
        self._window.open(stripe, (buffer, chunks))
        transport = self.access.transport
        for target in self.live():
            try:
                request_id = transport.send(
                    target.endpoint, "write", {"upload": target.upload, "stripe": stripe}, [chunks[target.index]]
                )
            except HCStoreError as exc:
                self._drop(target, exc)
                continue
            self._window.track(request_id, stripe, target.index)

    def drain(self, window: int) -> list[Any]:
        """Wait for acknowledgements until at most ``window`` stripes are unacknowledged.

        Returns:
            The ``buffer`` of each stripe acknowledged by now (for the caller to reuse), oldest first.

        Raises:
            StoreFull, NotEnoughNodes: failures left fewer than ``quorum`` targets (all aborted).
        """
        transport = self.access.transport
        freed: list[Any] = []
        while True:
            freed += [buffer for buffer, _chunks in self._window.release() if buffer is not None]
            if len(self._window) <= window:
                return freed
            requests = self._window.requests
            results = transport.poll(requests)
            if not results:
                transport.expire(requests)
                continue
            for request_id, result in results.items():
                index = self._window.settle(request_id)
                error = _error_of(result)
                target = self.targets[index]
                if error is not None and target is not None:
                    self._drop(target, error)

    def _drop(self, target: FragmentUpload, error: HCStoreError) -> None:
        """A target failed while streaming: go on without it, or give up below the quorum."""
        self._fail(target, error)
        left = len(self.live())
        if left >= self.quorum:
            return
        failed = [t.failed for t in self.targets if t is not None and t.failed is not None]
        if sum(isinstance(e, StoreFull) for e in failed) * 2 >= len(failed):
            raise self._give_up(
                StoreFull(
                    f"{self.operation}: the nodes holding its fragments filled up "
                    f"({self._problem()}); nothing was committed"
                )
            )
        raise self._give_up(
            NotEnoughNodes(
                f"{self.operation}: {left} fragments left after node failures, "
                f"the write quorum is {self.quorum} ({self._problem()})"
            )
        )

    # ------------------------------------------------------------------ prepare / commit

    def prepare(self, layout: VersionLayout) -> None:
        """Seal every live upload not yet prepared with its fragment header.

        Raises:
            NotEnoughNodes: fewer than ``quorum`` fragments are prepared (all aborted).
        """
        placement = self.placement()
        pending = [t for t in self.live() if not t.prepared]
        headers = {t.index: fragment_header(layout, t.index, placement) for t in pending}
        self._phase("prepare", pending, lambda t: {"upload": t.upload, "header": headers[t.index]})
        prepared = self.live()
        for target in prepared:
            target.prepared = True
        if len(prepared) < self.quorum:
            raise self._give_up(
                NotEnoughNodes(
                    f"{self.operation}: {len(prepared)} fragments prepared, the write quorum is {self.quorum}; "
                    f"nothing was committed ({self._problem()})"
                )
            )

    def commit(self) -> list[FragmentUpload]:
        """Commit the prepared fragments; returns those committed, none when a newer version superseded this one.

        Every target having lost its prepared fragment means a newer generation (or a delete)
        committed and retired this one while it was being committed: the put is then ordered just
        before that newer write (last writer wins, as two overlapping puts to one key are in S3),
        so it succeeded, and no reader will ever see it.

        Raises:
            AgentUnavailable: no target confirmed the commit; it may or may not be visible.
        """
        prepared = self.live()
        self._phase("commit", prepared, lambda t: self._ident(t.index))
        committed = self.live()
        if committed or all(isinstance(t.failed, ObjectNotFound) for t in prepared):
            self._settled = True
            return committed
        raise self._give_up(
            AgentUnavailable(
                f"{self.operation}: no agent confirmed the commit ({self._problem()}); what was written may or "
                "may not be visible, retry"
            )
        )

    def retire_older(self) -> None:
        """Ask the live targets to drop older generations; nobody waits for it (readers ignore old ones)."""
        transport = self.access.transport
        ids = []
        for target in self.live():
            try:
                ids.append(
                    transport.send(
                        target.endpoint, "retire", {"bucket": self.bucket, "key": self.key, "gen": self.generation}
                    )
                )
            except HCStoreError:
                pass
        transport.forget(ids)

    def abort(self) -> None:
        """Discard every live upload not yet prepared (idempotent; nothing to do once committed).

        A prepared fragment that is never committed stays invisible to readers.
        """
        if self._settled:
            return
        self._settled = True
        transport = self.access.transport
        transport.forget(self._window.clear())
        ids = []
        for target in self.live():
            if target.prepared:
                continue
            try:
                ids.append(transport.send(target.endpoint, "abort", {"upload": target.upload}))
            except HCStoreError:
                pass
        transport.forget(ids)

    # ------------------------------------------------------------------ helpers

    def _phase(
        self,
        op: str,
        targets: list[FragmentUpload],
        fields_of: Callable[[FragmentUpload], dict[str, Any]],
        payloads_of: Callable[[FragmentUpload], Sequence[Any]] = lambda t: (),
    ) -> None:
        """Send ``op`` to each target and wait; a target whose request fails drops out."""
        transport = self.access.transport
        ids: dict[int, FragmentUpload] = {}
        for target in targets:
            try:
                ids[transport.send(target.endpoint, op, fields_of(target), payloads_of(target))] = target
            except HCStoreError as exc:
                self._fail(target, exc)
        for request_id, result in transport.wait(ids).items():
            error = _error_of(result)
            if error is not None:
                self._fail(ids[request_id], error)

    def _fail(self, target: FragmentUpload, error: HCStoreError) -> None:
        if target.failed is None:
            log.warning("%s: dropping fragment %d on %s: %s", self.operation, target.index, target.node, error)
            target.failed = error
            self._errors.append(f"fragment {target.index} on {target.node}: {error}")

    def _problem(self) -> str:
        return "; ".join(self._errors)

    def _give_up(self, error: HCStoreError) -> HCStoreError:
        """Abort everything, and return ``error`` for the caller to raise."""
        self.abort()
        return error
