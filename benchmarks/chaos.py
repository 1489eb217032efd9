"""Chaos run: a mixed workload on a real local cluster while agents are killed, added and drained.

    python benchmarks/chaos.py [--seconds 600] [--agents 8] [--ec 4+2] [--keys 60] [--clients 3] [--seed 1]
                               [--data-dir DIR] [--keep]

A local cluster of ``--agents`` agent processes (EC 4+2 by default) runs with
short failure-detection intervals (heartbeat 0.2 s, suspect 0.6 s, down 1 s,
out 3 s) and a 1 s background repair scan. For ``--seconds``:

* ``--clients`` threads, each with its own :class:`hcstore.Client` and seeded
  RNG, put / overwrite / get / delete objects of 0 B to about 1 MiB over a
  key space of ``--keys`` keys. Every value is self-describing (key, writer,
  sequence number, body length and SHA-256 of the body), and every put
  attempt is recorded before it starts, so any read can be checked for being
  exactly one whole written version of that key.
* a driver SIGKILLs up to ``m`` agents at a time (never more than ``m`` down
  at once) and restarts each after 0.5-4 s, sometimes after more than
  ``out_after`` so that repair rebuilds its fragments elsewhere; it also adds
  one new agent once and drains another once.

Errors (NotEnoughFragments, NotEnoughNodes, AgentUnavailable, ...) during
the chaos phase are counted, not failures. Wrong bytes (not one whole written
version of the key) are failures at any time. Then the chaos stops, every
agent that should run is running, each agent is asked for a repair pass, and
the run waits (bounded) until every key reads back as its last acknowledged
operation left it and every object has all ``k+m`` fragments again.

The exit status is 0 when no object was lost, no read was wrong and every
object is fully protected at the end. ``tests/integration/test_chaos.py``
runs the same :func:`run_chaos` with small parameters.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import shutil
import sys
import tempfile
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hcstore.client.client import Client
from hcstore.cluster.local import LocalCluster
from hcstore.control.membership import Intervals
from hcstore.errors import HCStoreError, ObjectNotFound
from hcstore.node.repair_plan import protection_summary
from hcstore.control.client import ControllerClient

BUCKET = "chaos"
MAGIC = b"chaos1"


# ---------------------------------------------------------------------- settings and results


@dataclass
class ChaosConfig:
    """What a chaos run does. The defaults are the long run's; the CI test passes small ones."""

    seconds: float = 600.0
    agents: int = 8
    ec: str = "4+2"
    keys: int = 60
    clients: int = 3
    seed: int = 1
    max_size: int = 1 << 20
    chunk_size: int = 64 << 10
    request_timeout: float = 3.0
    intervals: Intervals = field(
        default_factory=lambda: Intervals(heartbeat=0.2, suspect_after=0.6, down_after=1.0, out_after=3.0)
    )
    scan_interval: float = 1.0
    repair_rate: float = 256e6
    durability: str = "none"
    max_down: int | None = None  # default: m of the EC scheme
    kill_gap: tuple[float, float] = (0.3, 2.0)  # seconds between kill attempts
    down_time: tuple[float, float] = (0.5, 4.0)  # seconds a killed agent stays down
    long_down_chance: float = 0.25  # chance a kill lasts longer than out_after
    add_agent_at: float | None = 0.3  # fraction of the run at which one agent is added (None: never)
    drain_at: float | None = 0.5  # fraction of the run at which one agent is drained (None: never)
    settle_timeout: float = 60.0
    verbose: bool = True


@dataclass
class ChaosReport:
    """What a chaos run saw. ``ok`` is the verdict."""

    seconds: float = 0.0
    ops: Counter = field(default_factory=Counter)
    errors: Counter = field(default_factory=Counter)
    kills: int = 0
    restarts: int = 0
    long_kills: int = 0
    max_down_seen: int = 0
    added: list[str] = field(default_factory=list)
    drained: list[str] = field(default_factory=list)
    wrong_reads: int = 0
    wrong_read_details: list[str] = field(default_factory=list)
    unexpected_not_found: int = 0
    unexpected_not_found_details: list[str] = field(default_factory=list)
    stale_reads: int = 0
    objects_checked: int = 0
    objects_expected: int = 0
    objects_deleted: int = 0
    objects_lost: int = 0
    objects_wrong: int = 0
    objects_resurrected: int = 0
    objects_unprotected: int = 0
    final_problems: list[str] = field(default_factory=list)
    settled: bool = False
    restart_seconds: float = 0.0
    settle_seconds: float = 0.0
    drained_fragments_left: dict[str, Any] = field(default_factory=dict)
    protection: dict[str, int] = field(default_factory=dict)
    driver_errors: list[str] = field(default_factory=list)
    events: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """The verdict: settled, with nothing lost, wrong, resurrected or unprotected, and no driver error."""
        return (
            self.settled
            and self.objects_lost == 0
            and self.wrong_reads == 0
            and self.objects_wrong == 0
            and self.objects_resurrected == 0
            and self.objects_unprotected == 0
            and not self.driver_errors
        )

    def summary(self) -> str:
        """The report as text for a terminal: counts, end state, up to 20 of each kind of problem, verdict."""
        lines = [
            f"chaos run: {self.seconds:.1f} s of workload",
            f"  operations: {dict(sorted(self.ops.items()))}",
            f"  errors:     {dict(sorted(self.errors.items()))}",
            f"  kills: {self.kills} ({self.long_kills} longer than out_after), restarts: {self.restarts}, "
            f"most agents down at once: {self.max_down_seen}, added: {self.added}, drained: {self.drained}",
            f"  reads during chaos: wrong {self.wrong_reads}, stale (older acknowledged version) {self.stale_reads}, "
            f"unexpected not-found {self.unexpected_not_found}",
            f"  end: objects checked {self.objects_checked} ({self.objects_expected} live, "
            f"{self.objects_deleted} deleted or never written), lost {self.objects_lost}, "
            f"wrong {self.objects_wrong}, resurrected {self.objects_resurrected}, "
            f"not fully protected {self.objects_unprotected}",
            f"  restarting agents took {self.restart_seconds:.1f} s; repair "
            f"{'settled' if self.settled else 'did NOT settle'} in {self.settle_seconds:.1f} s",
            f"  protection (agents' last scans): {self.protection}",
            f"  drained node fragments left: {self.drained_fragments_left}",
        ]
        for title, items in (
            ("wrong reads", self.wrong_read_details),
            ("unexpected not-found", self.unexpected_not_found_details),
            ("final problems", self.final_problems),
            ("driver errors", self.driver_errors),
        ):
            if items:
                lines.append(f"  {title}:")
                lines.extend(f"    {item}" for item in items[:20])
                if len(items) > 20:
                    lines.append(f"    ... and {len(items) - 20} more")
        lines.append(f"  verdict: {'OK' if self.ok else 'FAILED'}")
        return "\n".join(lines)


# ---------------------------------------------------------------------- values


def make_value(key: str, writer: int, seq: int, body_len: int, rng: random.Random) -> bytes:
    """A self-describing value: a header line naming key, writer, sequence, body length and hash, then the body."""
    if body_len < 0:
        return b""  # the empty object (recognised by its hash)
    body = rng.randbytes(body_len)
    header = f"{MAGIC.decode()} {key} {writer} {seq} {body_len} {hashlib.sha256(body).hexdigest()}\n".encode()
    return header + body


def describe(data: bytes) -> tuple[str, str]:
    """(verdict, text): verdict ``ok`` when the value is internally consistent, else what is wrong with it."""
    if data == b"":
        return "ok", "empty"
    line, sep, body = data.partition(b"\n")
    parts = line.split(b" ")
    if not sep or len(parts) != 6 or parts[0] != MAGIC:
        return "garbage", f"{len(data)} bytes without a chaos header (starts {data[:40]!r})"
    _, key, writer, seq, length, digest = (p.decode(errors="replace") for p in parts)
    if int(length) != len(body):
        return "torn", f"{key} w{writer}#{seq}: body {len(body)} bytes, header says {length}"
    if hashlib.sha256(body).hexdigest() != digest:
        return "mixed", f"{key} w{writer}#{seq}: body hash does not match its header (a mix of versions?)"
    return "ok", f"{key} w{writer}#{seq} ({len(data)} B)"


# ---------------------------------------------------------------------- the ledger of operations


@dataclass
class Op:
    """One write attempt (a put or a delete) on one key: what it wrote, when it ran, and how it ended."""

    kind: str  # "put" or "delete"
    key: str
    digest: str = ""  # put: SHA-256 of the whole value
    label: str = ""
    start: float = 0.0
    end: float | None = None  # None while in flight
    acked: bool | None = None  # None while in flight; False: raised (may or may not have landed)


class Ledger:
    """Every write attempt per key, with its interval and outcome (thread-safe)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.ops: dict[str, list[Op]] = {}
        self.by_digest: dict[str, dict[str, Op]] = {}

    def begin(self, kind: str, key: str, digest: str = "", label: str = "") -> Op:
        """Record an attempt as it starts (before any byte is sent); returns it, in flight."""
        op = Op(kind, key, digest, label, time.monotonic())
        with self.lock:
            self.ops.setdefault(key, []).append(op)
            if kind == "put":
                # the empty value may be written many times: keep the latest attempt under its digest
                self.by_digest.setdefault(key, {})[digest] = op
        return op

    def finish(self, op: Op, acked: bool) -> None:
        """Record the end of an attempt: acknowledged, or raised (then it may or may not have landed)."""
        with self.lock:
            op.end = time.monotonic()
            op.acked = acked

    def discard(self, op: Op) -> None:
        """Forget an attempt that certainly wrote nothing (a delete of an absent key)."""
        with self.lock:
            self.ops[op.key].remove(op)

    def attempt(self, key: str, digest: str) -> Op | None:
        """The latest put attempt on ``key`` of the value with SHA-256 ``digest``, or None if none wrote it."""
        with self.lock:
            return self.by_digest.get(key, {}).get(digest)

    def not_found_allowed(self, key: str, t0: float, t1: float) -> bool:
        """May a get that ran from t0 to t1 find no object?

        No, when a put was acknowledged before the get started and every delete attempt
        that started before the get ended had ended before that put started.
        """
        with self.lock:
            ops = list(self.ops.get(key, ()))
        puts = [o for o in ops if o.kind == "put" and o.acked and o.end is not None and o.end < t0]
        if not puts:
            return True
        latest_start = max(p.start for p in puts)
        return any(o.kind == "delete" and o.start < t1 and (o.end is None or o.end > latest_start) for o in ops)

    def superseded(self, op: Op, t0: float) -> bool:
        """Was ``op`` certainly overwritten (by an acknowledged op that began after it ended, ended before t0)?"""
        with self.lock:
            ops = list(self.ops.get(op.key, ()))
        return op.end is not None and any(
            o.acked and o.end is not None and o.start > op.end and o.end < t0 for o in ops
        )

    def final_candidates(self, key: str) -> list[Op]:
        """Attempts that may be the key's final state: no acknowledged op began after they ended."""
        with self.lock:
            ops = list(self.ops.get(key, ()))
        assert all(o.end is not None for o in ops), "final_candidates called while operations are in flight"
        return [o for o in ops if not any(a.acked and a.start > o.end for a in ops)]  # type: ignore[operator]


# ---------------------------------------------------------------------- the run


class Chaos:
    """One chaos run on a started cluster: client threads, the fault driver, then the settling checks."""

    def __init__(self, cluster: LocalCluster, config: ChaosConfig, log: Callable[[str], None]) -> None:
        from ec import parse_ec

        self.cluster = cluster
        self.config = config
        self.k, self.m = parse_ec(config.ec)
        self.max_down = self.m if config.max_down is None else config.max_down
        self.keys = [f"obj-{i:03d}" for i in range(config.keys)]
        self.ledger = Ledger()
        self.report = ChaosReport()
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.down: dict[str, float] = {}  # node -> when to restart it
        self.t0 = time.monotonic()
        self._log = log

    def log(self, text: str) -> None:
        """Record an event, stamped with the seconds since the run began, and print it when verbose."""
        line = f"[{time.monotonic() - self.t0:7.2f}] {text}"
        with self.lock:
            self.report.events.append(line)
        if self.config.verbose:
            self._log(line)

    def count(self, counter: str, name: str) -> None:
        """Add one to ``name`` in the report's ``counter`` ("ops" or "errors")."""
        with self.lock:
            getattr(self.report, counter)[name] += 1

    # -------------------------------------------------------------- workload

    def _size(self, rng: random.Random) -> int:
        roll = rng.random()
        if roll < 0.03:
            return -1  # the empty object
        if roll < 0.35:
            return rng.randrange(0, 48 << 10)  # small: replicated
        if roll < 0.85:
            return rng.randrange(48 << 10, 320 << 10)  # a few stripes
        return rng.randrange(320 << 10, self.config.max_size)

    def worker(self, index: int) -> None:
        """Client thread ``index``: random gets, puts and deletes until the run stops, each checked and counted."""
        rng = random.Random(f"{self.config.seed}/client/{index}")
        seq = 0
        client = Client(
            self.cluster.path, chunk_size=self.config.chunk_size, request_timeout=self.config.request_timeout
        )
        acked_once: set[str] = set()
        try:
            while not self.stop.is_set():
                key = rng.choice(self.keys)
                roll = rng.random()
                try:
                    if roll < 0.40:
                        self._get(client, key)
                    elif roll < 0.88:
                        seq += 1
                        self._put(client, key, index, seq, rng, "overwrite" if key in acked_once else "put")
                        acked_once.add(key)
                    else:
                        self._delete(client, key)
                except HCStoreError as exc:
                    self.count("errors", type(exc).__name__)
        except Exception:  # noqa: BLE001 - a driver bug or an unexpected error type: recorded, and it fails the run
            with self.lock:
                self.report.driver_errors.append(f"client {index}: {traceback.format_exc()}")
            self.stop.set()
        finally:
            client.close()

    def _put(self, client: Client, key: str, writer: int, seq: int, rng: random.Random, kind: str) -> None:
        value = make_value(key, writer, seq, self._size(rng), rng)
        op = self.ledger.begin("put", key, hashlib.sha256(value).hexdigest(), f"w{writer}#{seq}")
        self.count("ops", kind)
        try:
            client.put(BUCKET, key, value)
        except BaseException:
            self.ledger.finish(op, False)
            self.count("ops", f"{kind}_failed")
            raise
        self.ledger.finish(op, True)

    def _delete(self, client: Client, key: str) -> None:
        op = self.ledger.begin("delete", key, label="delete")
        self.count("ops", "delete")
        try:
            client.delete(BUCKET, key)
        except ObjectNotFound:
            self.ledger.discard(op)  # resolve found nothing; no tombstone was written
            self.count("ops", "delete_absent")
            return
        except BaseException:
            self.ledger.finish(op, False)
            self.count("ops", "delete_failed")
            raise
        self.ledger.finish(op, True)

    def _get(self, client: Client, key: str) -> None:
        self.count("ops", "get")
        t0 = time.monotonic()
        try:
            data = client.get(BUCKET, key)
        except ObjectNotFound:
            t1 = time.monotonic()
            self.count("ops", "get_not_found")
            if not self.ledger.not_found_allowed(key, t0, t1):
                with self.lock:
                    down = sorted(self.down)
                    self.report.unexpected_not_found += 1
                    self.report.unexpected_not_found_details.append(
                        f"t={t0 - self.t0:.2f} {key}: not found after an acknowledged put (agents down: {down})"
                    )
                self.log(f"UNEXPECTED NOT FOUND {key} (down {down})")
            return
        verdict, text = describe(data)
        op = self.ledger.attempt(key, hashlib.sha256(data).hexdigest())
        if verdict != "ok" or op is None:
            problem = verdict if verdict != "ok" else "never written to this key"
            with self.lock:
                self.report.wrong_reads += 1
                self.report.wrong_read_details.append(f"t={t0 - self.t0:.2f} get {key}: {problem}: {text}")
            self.log(f"WRONG READ {key}: {problem}: {text}")
            return
        if self.ledger.superseded(op, t0):
            self.count("ops", "get_stale")
            with self.lock:
                self.report.stale_reads += 1

    # -------------------------------------------------------------- faults

    def running_agents(self) -> list[str]:
        """The agents not killed by the driver at the moment."""
        return [a.node_id for a in self.cluster.agents() if a.node_id not in self.down]

    def controller(self) -> ControllerClient:
        """A client of the cluster's controller (close it after use)."""
        return ControllerClient(self.cluster.controller_endpoint(), timeout=5.0)

    def restart(self, node: str) -> None:
        """Start a killed agent again and wait until the map shows it back (alive, or in maintenance if drained)."""
        if node in self.report.drained:
            # LocalCluster.start waits for the node to be "alive", but a drained node comes back in
            # "maintenance" (local_cluster.py start()): wait for the process, then for that state.
            try:
                self.cluster.start(node, timeout=5.0)
            except HCStoreError:
                if self.cluster.running().get(node) is None:
                    raise
            self.cluster.wait_for_map(lambda m: node in m and m.node(node).state == "maintenance", timeout=30.0)
        else:
            self.cluster.start(node, timeout=30.0)
        with self.lock:
            self.down.pop(node, None)
            self.report.restarts += 1
        self.log(f"restarted {node}")

    def faults(self, seconds: float) -> None:
        """The fault driver for ``seconds``: kill and restart agents, add one and drain one, as configured."""
        config = self.config
        rng = random.Random(f"{config.seed}/faults")
        start = time.monotonic()
        end = start + seconds
        add_at = None if config.add_agent_at is None else start + config.add_agent_at * seconds
        drain_at = None if config.drain_at is None else start + config.drain_at * seconds
        next_kill = start + rng.uniform(*config.kill_gap)
        try:
            while time.monotonic() < end and not self.stop.is_set():
                now = time.monotonic()
                for node, when in sorted(self.down.items()):
                    if when <= now:
                        self.restart(node)
                if add_at is not None and now >= add_at:
                    add_at = None
                    node = self.cluster.add_agent()
                    self.report.added.append(node)
                    self.log(f"added agent {node}")
                if drain_at is not None and now >= drain_at:
                    choices = [n for n in self.running_agents() if n not in self.report.added]
                    if choices:
                        drain_at = None
                        node = rng.choice(choices)
                        with self.controller() as controller:
                            controller.drain(node)
                        self.report.drained.append(node)
                        self.log(f"draining {node}")
                if now >= next_kill:
                    next_kill = now + rng.uniform(*config.kill_gap)
                    if len(self.down) < self.max_down:
                        node = rng.choice(self.running_agents())
                        long = rng.random() < config.long_down_chance
                        outage = (
                            config.intervals.out_after + rng.uniform(0.5, 2.0)
                            if long
                            else rng.uniform(*config.down_time)
                        )
                        self.cluster.kill(node)
                        with self.lock:
                            self.down[node] = time.monotonic() + outage
                            self.report.kills += 1
                            self.report.long_kills += long
                            self.report.max_down_seen = max(self.report.max_down_seen, len(self.down))
                        self.log(f"killed {node} for {outage:.1f} s (down now: {sorted(self.down)})")
                time.sleep(0.05)
        except Exception:  # noqa: BLE001 - recorded as a driver error, which fails the run
            with self.lock:
                self.report.driver_errors.append(f"fault driver: {traceback.format_exc()}")
            self.stop.set()

    # -------------------------------------------------------------- the end

    def bring_everyone_back(self) -> None:
        """Restart every agent that is down and wait until the map shows them all alive or in maintenance."""
        for node in sorted(self.down):
            self.restart(node)
        for agent in self.cluster.agents():
            if self.cluster.running().get(agent.node_id) is None:
                self.log(f"agent {agent.node_id} was not running at the end: starting it")
                self.restart(agent.node_id)
        ids = {a.node_id for a in self.cluster.agents()}
        self.cluster.wait_for_map(
            lambda m: all(i in m and m.node(i).state in ("alive", "maintenance") for i in ids), timeout=30.0
        )

    def ask_for_repair(self, client: Client) -> None:
        """Ask every serving agent for a repair pass now; an agent that fails to answer is logged and skipped."""
        for node in client.cluster_map.nodes:
            if node.endpoint and node.state in ("alive", "maintenance"):
                try:
                    client.transport.request(node.endpoint, "maintain", {"job": "repair"})
                except HCStoreError as exc:
                    self.log(f"maintain on {node.id} failed: {exc}")

    def check_key(self, client: Client, key: str) -> tuple[str, str]:
        """("ok" | "lost" | "wrong" | "resurrected" | "unprotected", detail) for one key at the end."""
        candidates = self.ledger.final_candidates(key)
        puts = {o.digest: o for o in candidates if o.kind == "put"}
        may_be_absent = any(o.kind == "delete" for o in candidates) or not any(
            o.acked for o in candidates if o.kind == "put"
        )
        labels = sorted(f"{o.label}{'' if o.acked else '?'}" for o in candidates)
        try:
            data = client.get(BUCKET, key)
        except ObjectNotFound:
            return ("ok", "absent") if may_be_absent else ("lost", f"{key}: not found; expected one of {labels}")
        except HCStoreError as exc:
            return "lost", f"{key}: {type(exc).__name__}: {exc}; expected one of {labels}"
        digest = hashlib.sha256(data).hexdigest()
        if digest not in puts:
            op = self.ledger.attempt(key, digest)
            what = describe(data)[1]
            if op is None:
                return "wrong", f"{key}: read {what}, which was never written to it; expected one of {labels}"
            if not puts:
                return "resurrected", f"{key}: deleted, but reads back {op.label}; last ops {labels}"
            return "wrong", f"{key}: reads back superseded {op.label} ({what}); expected one of {labels}"
        try:
            info = client.stat(BUCKET, key)
        except HCStoreError as exc:
            return "unprotected", f"{key}: stat failed: {type(exc).__name__}: {exc}"
        if info.fragments != info.k + info.m:
            return "unprotected", (
                f"{key}: {info.fragments} of {info.k}+{info.m} fragments "
                f"({info.codec}, {info.size} B, generation {info.generation})"
            )
        return "ok", "present"

    def settle(self) -> None:
        """Check every key until all are right or ``settle_timeout`` passes, and record the end state in the report."""
        report = self.report
        config = self.config
        with Client(self.cluster.path, chunk_size=config.chunk_size, request_timeout=5.0) as client:
            start = time.monotonic()
            deadline = start + config.settle_timeout
            next_nudge = 0.0
            rounds = 0
            while True:
                client.refresh()
                if time.monotonic() >= next_nudge:
                    self.ask_for_repair(client)
                    next_nudge = time.monotonic() + 3.0
                results = {key: self.check_key(client, key) for key in self.keys}
                rounds += 1
                bad = {key: r for key, r in results.items() if r[0] != "ok"}
                if not bad or time.monotonic() > deadline:
                    break
                if rounds == 1 or rounds % 5 == 0:
                    self.log(f"settling: {len(bad)} keys not yet right, e.g. {next(iter(bad.values()))[1]}")
                time.sleep(0.5)
            report.settle_seconds = time.monotonic() - start
            report.settled = not bad
            report.objects_checked = len(results)
            report.objects_expected = sum(1 for r in results.values() if r == ("ok", "present")) + sum(
                1 for r in results.values() if r[0] in ("lost", "wrong", "unprotected")
            )
            report.objects_deleted = sum(1 for r in results.values() if r == ("ok", "absent")) + sum(
                1 for r in results.values() if r[0] == "resurrected"
            )
            for kind, attr in (
                ("lost", "objects_lost"),
                ("wrong", "objects_wrong"),
                ("resurrected", "objects_resurrected"),
                ("unprotected", "objects_unprotected"),
            ):
                setattr(report, attr, sum(1 for r in results.values() if r[0] == kind))
            report.final_problems = [r[1] for r in bad.values()]
            try:
                with self.controller() as controller:
                    stats = controller.status().stats
                report.protection = protection_summary(stats)
                report.drained_fragments_left = {n: stats.get(n, {}).get("fragments")
                                                 for n in report.drained}
            except HCStoreError as exc:
                report.driver_errors.append(f"controller status: {exc}")

    def run(self) -> ChaosReport:
        """The whole run: workload and faults for ``config.seconds``, then every agent back, then settling."""
        config = self.config
        self.log(
            f"chaos: {len(self.cluster.agents())} agents, EC {config.ec}, {config.keys} keys, "
            f"{config.clients} clients, {config.seconds:.0f} s, seed {config.seed}"
        )
        threads = [
            threading.Thread(target=self.worker, args=(i,), name=f"chaos-client-{i}", daemon=True)
            for i in range(config.clients)
        ]
        start = time.monotonic()
        for t in threads:
            t.start()
        self.faults(config.seconds)
        self.stop.set()
        for t in threads:
            t.join(timeout=60.0)
            if t.is_alive():
                self.report.driver_errors.append(f"{t.name} did not stop within 60 s")
        self.report.seconds = time.monotonic() - start
        self.log(f"chaos phase over: {dict(self.report.ops)}; errors {dict(self.report.errors)}")
        back = time.monotonic()
        self.bring_everyone_back()
        self.report.restart_seconds = time.monotonic() - back
        self.log("every agent is running; waiting for repair to settle")
        if self.report.driver_errors:
            return self.report
        self.settle()
        self.log(f"settled={self.report.settled} after {self.report.settle_seconds:.1f} s")
        return self.report


def run_chaos(
    path: str | Path, config: ChaosConfig | None = None, *, log: Callable[[str], None] = print
) -> ChaosReport:
    """Create a local cluster at ``path`` (which must not hold one), run the chaos on it, and report.

    The cluster is left stopped but not removed (its logs are under ``path``).
    """
    config = config or ChaosConfig()
    cluster = LocalCluster.create(
        path,
        agents=config.agents,
        ec=config.ec,
        durability=config.durability,
        intervals=config.intervals,
        scan_interval=config.scan_interval,
        repair_rate=config.repair_rate,
    )
    try:
        cluster.start()
        return Chaos(cluster, config, log).run()
    finally:
        cluster.stop()


def main(argv: list[str] | None = None) -> int:
    """Parse the command line, run the chaos and print its report; returns 0 when the verdict is OK."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=600.0)
    parser.add_argument("--agents", type=int, default=8)
    parser.add_argument("--ec", default="4+2")
    parser.add_argument("--keys", type=int, default=60)
    parser.add_argument("--clients", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--max-size", type=int, default=1 << 20)
    parser.add_argument("--settle-timeout", type=float, default=120.0)
    parser.add_argument("--data-dir", default=None, help="where the cluster lives (default: a temporary directory)")
    parser.add_argument("--keep", action="store_true", help="keep the cluster directory (logs) afterwards")
    parser.add_argument("--quiet", action="store_true", help="no event log, only the summary")
    parser.add_argument("--json-out", default=None, help="also write the counts as JSON to this file")
    args = parser.parse_args(argv)
    root = Path(args.data_dir) if args.data_dir else Path(tempfile.mkdtemp(prefix="hcstore-chaos-"))
    config = ChaosConfig(
        seconds=args.seconds,
        agents=args.agents,
        ec=args.ec,
        keys=args.keys,
        clients=args.clients,
        seed=args.seed,
        max_size=args.max_size,
        settle_timeout=args.settle_timeout,
        verbose=not args.quiet,
    )
    report = run_chaos(root / "cluster", config)
    print(report.summary())
    if args.json_out:
        data = {k: v for k, v in report.__dict__.items() if k != "events"}
        Path(args.json_out).write_text(json.dumps(data, indent=2, default=str))
    if args.keep or not report.ok:
        print(f"cluster directory (agent logs): {root / 'cluster'}")
    else:
        shutil.rmtree(root, ignore_errors=True)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
