"""The agent's background worker: scans its objects, repairs and rebalances them, and scrubs.

A thread inside the agent process. It wakes on every new cluster map, every
``scan_interval`` seconds, and on request (``hcstore repair``), and walks the
newest committed generation of every object this node holds. Each object is
looked at by the first ``m+1`` serving nodes of its placement (at least one of
them holds a fragment while the object is recoverable), and on every
``FULL_SCAN_EVERY``-th scan (and while the node drains) by every holder,
since repair can leave trailers naming stale holders. It is acted on by one
node, its :func:`~hcstore.node.repair.repairer` (all compute the same answer from
the same locate round), so the work is not done twice. Every node drops its
copies of generations that something newer has replaced. The worker talks to
the cluster, its own agent included, only through the wire protocol, so the
agent's store keeps a single writer. A scan resolves its objects in batches, each
node asked about a whole batch in one ``locate_many`` request
(:func:`~hcstore.client.versions.resolve_many`), so a scan that a map change
starts on every agent at once costs the cluster a few requests per batch, not one
per object and node.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import TYPE_CHECKING, Any, Protocol

import msgpack

from hcstore.client.versions import ObjectVersion, resolve_many
from hcstore.coding import observing_codecs
from hcstore.config import AgentConfig, ClientConfig
from hcstore.errors import HCStoreError, ObjectNotFound
from hcstore.metrics.protection import missing_fragments, protection_level
from hcstore.metrics.recorder import REBALANCE, REPAIR, SCRUB, AgentRecorder
from hcstore.node.index import FragmentIndex
from hcstore.node.priority import run_as_background
from hcstore.node.rate_limit import RateLimiter
from hcstore.node.repair import repair_object
from hcstore.node.repair_plan import ScanReport, ScrubReport, checkers, plan_object, repairer
from hcstore.node.store import LocalStore
from hcstore.wire.protocol import MAX_LOCATE_MANY
from placement import ClusterMap

if TYPE_CHECKING:
    from hcstore.client.client import Client


class MaintainedNode(Protocol):
    """What the background worker needs of its agent (the agent satisfies it)."""

    config: AgentConfig
    store: LocalStore
    endpoint: str
    metrics: AgentRecorder

    @property
    def cluster_map(self) -> ClusterMap | None:
        """The newest cluster map the agent has."""
        ...


log = logging.getLogger(__name__)
FULL_SCAN_EVERY = 5  # trailers can name stale holders after repair; a periodic full scan misses nothing


class Maintainer(threading.Thread):
    """Repairs and rebalances the objects its agent is a checker of; scrubs its fragment files."""

    def __init__(self, agent: MaintainedNode) -> None:
        super().__init__(name=f"maintainer-{agent.config.node_id}", daemon=True)
        self.agent = agent
        self.limiter = RateLimiter(agent.config.repair_rate)
        self.report = ScanReport()
        self.scrub_report = ScrubReport()
        self.scans = 0
        self.scrubs = 0
        self.bytes_repaired = 0
        self.repaired = 0
        self._scrub_requested = False
        self._next_scrub = time.monotonic() + agent.config.scrub_interval
        self.running = False
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._client: Client | None = None

    def wake(self, *, scrub: bool = False) -> None:
        """Start a scan now (and a scrub too when ``scrub``)."""
        self._scrub_requested |= scrub
        self._wake.set()

    def stop(self) -> None:
        """Stop after the objects being checked; requests they wait on end now (other agents may be stopping too)."""
        self._stop.set()
        self._wake.set()
        if self._client is not None:
            self._client.transport.cancel()

    def status(self) -> dict[str, Any]:
        """The last finished scan's counts; ``bytes_repaired`` and ``repaired`` add up over all scans, the
        running one included."""
        return {
            **self.report.to_dict(),
            "bytes_repaired": self.bytes_repaired,
            "repaired": self.repaired,
            "scans": self.scans,
            "running": self.running,
            "scrubs": self.scrubs,
            "scrub": self.scrub_report.to_dict(),
        }

    def run(self) -> None:
        """Scan (and scrub when due) on every wake-up, map change or ``scan_interval``, until stopped.

        This thread, and the threads it starts (repair workers, its client's), run at background priority.
        """
        run_as_background(self.agent.config.background_nice)
        while not self._stop.is_set():
            self._wake.wait(self.agent.config.scan_interval)
            self._wake.clear()
            if self._stop.is_set():
                break
            cluster_map = self.agent.cluster_map
            if cluster_map is None:
                continue
            self.running = True
            try:
                if self._scrub_requested or time.monotonic() >= self._next_scrub:
                    self._scrub_requested = False
                    self.scrub_report = self.scrub()
                    self.scrubs += 1
                    self._next_scrub = time.monotonic() + self.agent.config.scrub_interval
                self.report = self.scan()
            except Exception:  # the worker must outlive any one bad object or scan
                log.exception("background scan failed")
            finally:
                self.running = False
                self.scans += 1

    def scan(self) -> ScanReport:
        """Check every object this node is a checker of; rebuild or move what the map wants elsewhere."""
        cluster_map = self.agent.cluster_map
        assert cluster_map is not None
        me = self.agent.config.node_id
        draining = me in cluster_map and cluster_map.node(me).state == "draining"
        full = self.scans % FULL_SCAN_EVERY == 0  # now and then look at everything held here
        report = ScanReport(started=time.time())
        todo = []
        for mountpath in self.agent.store.serving:
            untidy = FragmentIndex.untidy_keys(mountpath.index.path)  # every holder tidies its own copies
            for bucket, key, gen, info_blob in FragmentIndex.newest_objects(mountpath.index.path):
                info = msgpack.unpackb(info_blob, raw=False)
                tidy = (bucket, key) in untidy
                untidy.discard((bucket, key))
                if tidy or full or draining or me in checkers(tuple(info["placement"]), cluster_map, info["m"]):
                    todo.append((bucket, key, gen, tidy))
            todo += [(bucket, key, "", True) for bucket, key in sorted(untidy)]  # only prepared fragments here
        if not todo:  # nothing held here to check: no client needed (an agent that just started holds nothing)
            report.finished = time.time()
            return report
        client = self._client_for(cluster_map)

        def current() -> bool:
            return not self._stop.is_set() and self.agent.cluster_map is cluster_map  # else: a newer map, start over

        def check(item: tuple[str, str, str, bool], outcome: ObjectVersion | HCStoreError) -> None:
            if current():
                with observing_codecs(self.agent.metrics.codec_observer):
                    self._check(client, *item, outcome, report)

        with ThreadPoolExecutor(self.agent.config.repair_workers, thread_name_prefix="repair") as pool:
            pending: set[Future[None]] = set()
            for first in range(0, len(todo), MAX_LOCATE_MANY):
                if not current():
                    break
                batch = todo[first : first + MAX_LOCATE_MANY]
                outcomes = resolve_many(client, [(bucket, key) for bucket, key, _gen, _tidy in batch])
                pending.update(pool.submit(check, item, outcomes[item[0], item[1]]) for item in batch)
                while len(pending) > MAX_LOCATE_MANY:  # resolve ahead of the checks by one batch at most
                    _done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in pending:
                future.result()
        report.finished = time.time()
        return report

    def scrub(self) -> ScrubReport:
        """Re-read every local fragment and check each chunk against its digest (rate-limited).

        A fragment with a bad chunk is quarantined through the agent's own socket (the store
        keeps a single writer); it then counts as lost, and repair rebuilds it.
        """
        report = ScrubReport(started=time.time())
        client = self._client_for(self.agent.cluster_map) if self.agent.cluster_map is not None else None
        for mountpath in self.agent.store.serving:
            for name, bucket, key, gen, idx in FragmentIndex.fragment_files(mountpath.index.path):
                if self._stop.is_set():
                    return report
                path = mountpath.fragment_path(name)
                try:
                    bad = _bad_chunks(path, self.limiter)
                except FileNotFoundError:
                    continue  # retired or dropped while we walked
                report.fragments += 1
                report.bytes += path.stat().st_size if path.exists() else 0
                if bad:
                    self.agent.metrics.corrupt_chunks(SCRUB, len(bad))
                if bad and client is not None:
                    report.corrupt += 1
                    log.warning("scrub: fragment %d of %s/%s has corrupt chunks %s", idx, bucket, key, bad[:8])
                    try:
                        client.transport.request(
                            self.agent.endpoint, "quarantine", {"bucket": bucket, "key": key, "gen": gen, "idx": idx}
                        )
                    except HCStoreError as exc:
                        log.warning("scrub: quarantine failed: %s", exc)
        report.finished = time.time()
        return report

    def _check(
        self,
        client: Client,
        bucket: str,
        key: str,
        gen: str,
        tidy: bool,
        outcome: ObjectVersion | HCStoreError,
        report: ScanReport,
    ) -> None:
        """Act on one object: drop this node's stale copies; as its repairer, count it and repair it.

        ``outcome`` is the object's version as resolved on every node, or why it could not be.
        """
        me = self.agent.config.node_id
        if isinstance(outcome, ObjectNotFound):
            tombstone = getattr(outcome, "tombstone", None)
            if tombstone:
                self._retire_here(client, bucket, key, tombstone)  # deleted since: our copy is garbage
            return
        if isinstance(outcome, HCStoreError):
            log.info("repair scan: %s/%s not resolved: %s", bucket, key, outcome)
            return
        version = outcome
        if version.generation != gen or tidy:
            self._retire_here(client, bucket, key, version.generation)  # drop our copies of older generations
        if version.generation != gen:
            return
        if repairer(version, client.cluster_map) != me:
            return  # another holder acts on it
        plan = plan_object(version, client.cluster_map)
        status = plan.status(version.k, version.k + version.m)
        level = protection_level(plan.available, version.k, version.m)
        fragment_bytes = version.stripes * version.chunk_size
        with self._lock:
            report.objects += 1
            setattr(report, status, getattr(report, status) + 1)
            report.levels[level] = report.levels.get(level, 0) + 1
            report.level_bytes[level] = report.level_bytes.get(level, 0) + version.size
            report.bytes_missing += missing_fragments(plan.available, version.k, version.m) * fragment_bytes
            report.waiting += len(plan.waiting)
            report.bytes_awaiting_repair += fragment_bytes * len(plan.rebuild)
        if not plan.rebuild and not plan.extra:
            return
        try:
            written = repair_object(client, version, plan, self.limiter)
            log.info(
                "repaired %s/%s: fragments %s rebuilt on %s",
                bucket,
                key,
                sorted(plan.rebuild),
                sorted(set(plan.rebuild.values())),
            )
            with self._lock:
                report.bytes_repaired += written
                report.repaired += bool(plan.rebuild)
                report.bytes_awaiting_repair -= fragment_bytes * len(plan.rebuild)
                self.bytes_repaired += written
                self.repaired += bool(plan.rebuild)
            self._count_repair(plan.rebuild, plan.drop, written)
        except HCStoreError as exc:
            self.agent.metrics.repair_failed()
            with self._lock:
                report.failed += 1
            log.warning("repair of %s/%s failed (will retry): %s", bucket, key, exc)

    def _count_repair(self, rebuild: dict[int, str], drop: dict[int, str], written: int) -> None:
        """Count one object's repair in the agent's metrics: fragments rebuilt where lost (``repair``), and
        fragments moved to where the map wants them (``rebalance``: their old copy is dropped)."""
        if not rebuild:
            return
        moved = sum(1 for index in rebuild if index in drop)
        lost = len(rebuild) - moved
        per_fragment = written / len(rebuild)
        if lost:
            self.agent.metrics.repaired(REPAIR, 1, round(per_fragment * lost))
        if moved:
            self.agent.metrics.repaired(REBALANCE, 0 if lost else 1, round(per_fragment * moved))

    def _retire_here(self, client: Client, bucket: str, key: str, newer: str) -> None:
        """Drop this node's generations of a key older than ``newer`` (a newer version or a tombstone)."""
        try:
            client.transport.request(self.agent.endpoint, "retire", {"bucket": bucket, "key": key, "gen": newer})
        except HCStoreError as exc:
            log.info("could not retire old copies of %s/%s: %s", bucket, key, exc)

    def _client_for(self, cluster_map: Any) -> Client:
        if self._client is None:
            from hcstore.client.client import Client  # here: an agent loads the client on its first scan, not at start

            agent = self.agent.config
            self._client = Client(
                cluster_map,
                config=ClientConfig(
                    request_timeout=10.0,
                    key=agent.key,
                    insecure=agent.insecure,
                    read_batch=1,  # a repair reads one stripe at a time, after its rate limit let it:
                    read_ahead=1,  # a node going out starts no burst of reads
                ),
            )
        if self._client._map.epoch != cluster_map.epoch:  # nodes the new map calls alive get another chance
            self._client.transport.forgive(n.endpoint for n in cluster_map.nodes if n.state == "alive")
        self._client.adopt_map(cluster_map)  # the agent's map is the truth for its own work
        return self._client


def _bad_chunks(path: Any, limiter: RateLimiter) -> list[int]:
    """Stripes of a fragment file whose chunk does not match its digest (all of them if the file is damaged)."""
    from ec import FragmentFormatError, chunk_offset, verify_chunk

    try:
        header = LocalStore._load_header(path)
    except FragmentFormatError:
        return [-1]
    bad = []
    with open(path, "rb") as f:
        for stripe in range(header.stripes):
            limiter.take(header.chunk_size)
            f.seek(chunk_offset(stripe, header.chunk_size))
            if not verify_chunk(f.read(header.chunk_size), header.digest(stripe)):
                bad.append(stripe)
    return bad
