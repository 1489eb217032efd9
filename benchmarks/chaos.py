"""Chaos run: a mixed workload on a real local cluster while agents are killed, added and drained,
fragment files are corrupted on disk and writer processes are killed mid-put.

    python benchmarks/chaos.py [--seconds 600] [--agents 8] [--ec 4+2] [--keys 60] [--clients 3] [--seed 1]
                               [--crash-keys 4] [--no-corruption] [--data-dir DIR] [--keep]

A local cluster of ``--agents`` agent processes (EC 4+2 by default) runs with
short failure-detection intervals (heartbeat 0.2 s, suspect 0.6 s, down 1 s,
out 3 s), a 1 s background repair scan and a 4 s scrub. For ``--seconds``:

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
* the driver flips bytes of a committed fragment file of a running agent now
  and then. A corrupt fragment counts as one of the ``m`` failures its object
  tolerates until scrub quarantines it and repair rebuilds it, so the driver
  corrupts a fragment, and kills an agent, only while every object with a corrupt
  fragment stays within ``m`` failures (its corrupt fragment files, its missing
  fragments and the down agents holding any of its fragments). Reads must route
  around the corrupt chunks and return exact bytes.
* a writer thread starts a separate writer process that puts a known value to
  one of ``--crash-keys`` keys of its own, and SIGKILLs it at a random moment
  of the put (or lets it finish). The key must then read back whole as the
  version before or the one being written, never a mix, never nothing when the
  version before was acknowledged.

Every answer is checked against the record of operations. A *wrong answer*
fails the run: bytes that are not one whole version written to the key
(``wrong``), an older version after a newer one was acknowledged (``stale``),
not-found after an acknowledged put (``unexpected not-found``), and at the
end an acknowledged object that no longer reads back (``lost``), a deleted one
that does (``resurrected``) or one not fully protected after settling
(``unprotected``: fewer than ``k+m`` fragments, or a corrupt fragment left).
A read that raises a :class:`~hcstore.errors.Retryable` error (an agent did
not answer, the object is not proven to exist or not) is no answer: it is
counted as ``unavailable`` and the key is read again a little later. Other
errors during the chaos (NotEnoughFragments, NotEnoughNodes, ...) are counted,
not failures.

Then the chaos stops, every agent that should run is running, each agent is
asked for a scrub and a repair pass, and the run waits (bounded) until every
key reads back as its last acknowledged operation left it, every object has
all ``k+m`` fragments and no corrupt fragment is left. The exit status is 0
when every wrong-answer count is zero, everything settled and the driver met
no error. ``tests/integration/test_chaos.py`` runs the same :func:`run_chaos`
with small parameters.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import queue
import random
import shutil
import subprocess
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

from ec import DATA_OFFSET
from hcstore.client.client import Client
from hcstore.client.versions import resolve
from hcstore.cluster.local import LocalCluster
from hcstore.cluster.source import ClusterSource
from hcstore.control.client import ControllerClient
from hcstore.control.membership import Intervals
from hcstore.errors import HCStoreError, ObjectNotFound, Retryable
from hcstore.node.repair_plan import protection_summary
from hcstore.node.store import key_hash

BUCKET = "chaos"
MAGIC = b"chaos1"
CRASH_WRITER = 99  # the writer number in the values that writer processes put
COLD_WRITER = 98  # the writer number in the values of keys written once, before the chaos


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
    scrub_interval: float = 4.0
    repair_rate: float = 256e6
    durability: str = "none"
    max_down: int | None = None  # default: m of the EC scheme
    kill_gap: tuple[float, float] = (0.3, 2.0)  # seconds between kill attempts
    down_time: tuple[float, float] = (0.5, 4.0)  # seconds a killed agent stays down
    long_down_chance: float = 0.25  # chance a kill lasts longer than out_after
    add_agent_at: float | None = 0.3  # fraction of the run at which one agent is added (None: never)
    drain_at: float | None = 0.5  # fraction of the run at which one agent is drained (None: never)
    corrupt_gap: tuple[float, float] | None = (1.0, 4.0)  # seconds between corruptions (None: never)
    cold_keys: int = 8  # keys written once before the chaos and then only read (and corrupted)
    crash_keys: int = 4  # keys written only by killed writer processes (0: no writer processes)
    crash_gap: tuple[float, float] = (0.5, 2.5)  # seconds between two writer processes
    recheck_after: float = 0.5  # seconds before a key whose read was unavailable is read again
    settle_timeout: float = 60.0
    verbose: bool = True


@dataclass
class Corruption:
    """Bytes flipped in one fragment file, and what became of them."""

    key: str
    generation: str
    index: int
    node: str
    path: Path
    offset: int
    original: bytes
    flipped: bytes
    at: float  # monotonic time of the flip
    k: int  # fragments the object needs
    fragments: int  # fragments the object has (k + m)
    state: str = "outstanding"  # then "healed" (quarantined and rebuilt) or "superseded" (the version is gone)
    scrubbed: bool = False  # the corrupt bytes are no longer in any fragment file


@dataclass
class ChaosReport:
    """What a chaos run saw. ``ok`` is the verdict: every wrong-answer count zero, settled, no driver error."""

    seconds: float = 0.0
    ops: Counter = field(default_factory=Counter)
    errors: Counter = field(default_factory=Counter)
    kills: int = 0
    restarts: int = 0
    long_kills: int = 0
    kills_refused: int = 0
    max_down_seen: int = 0
    added: list[str] = field(default_factory=list)
    drained: list[str] = field(default_factory=list)
    unavailable: int = 0
    wrong_reads: int = 0
    wrong_read_details: list[str] = field(default_factory=list)
    unexpected_not_found: int = 0
    unexpected_not_found_details: list[str] = field(default_factory=list)
    stale_reads: int = 0
    stale_read_details: list[str] = field(default_factory=list)
    corruptions: int = 0
    corruptions_healed: int = 0
    corruptions_superseded: int = 0
    corruptions_refused: int = 0
    corrupt_chunks_read_around: int = 0
    writers_started: int = 0
    writers_killed: int = 0
    writers_finished: int = 0
    writers_failed: int = 0
    writer_outcomes: Counter = field(default_factory=Counter)
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
    def wrong_answers(self) -> dict[str, int]:
        """Every kind of wrong answer and how often it was seen; each one fails the run."""
        return {
            "lost": self.objects_lost,
            "wrong": self.wrong_reads + self.objects_wrong,
            "resurrected": self.objects_resurrected,
            "unprotected": self.objects_unprotected,
            "unexpected_not_found": self.unexpected_not_found,
            "stale": self.stale_reads,
        }

    @property
    def ok(self) -> bool:
        """The verdict: settled, no wrong answer of any kind, and no driver error."""
        return self.settled and not any(self.wrong_answers.values()) and not self.driver_errors

    def summary(self) -> str:
        """The report as text for a terminal: counts, end state, up to 20 of each kind of problem, verdict."""
        wrong = ", ".join(f"{name.replace('_', ' ')} {count}" for name, count in self.wrong_answers.items())
        lines = [
            f"chaos run: {self.seconds:.1f} s of workload",
            f"  wrong answers (any fails the run): {wrong}",
            f"    wrong: {self.wrong_reads} during the chaos, {self.objects_wrong} at the end",
            f"  unavailable reads (retried later, not wrong): {self.unavailable}",
            f"  operations: {dict(sorted(self.ops.items()))}",
            f"  errors:     {dict(sorted(self.errors.items()))}",
            f"  kills: {self.kills} ({self.long_kills} longer than out_after), restarts: {self.restarts}, "
            f"refused beyond tolerance: {self.kills_refused}, most agents down at once: {self.max_down_seen}, "
            f"added: {self.added}, drained: {self.drained}",
            f"  corruptions: {self.corruptions} (healed {self.corruptions_healed}, superseded "
            f"{self.corruptions_superseded}, refused beyond tolerance {self.corruptions_refused}); "
            f"corrupt chunks read around: {self.corrupt_chunks_read_around}",
            f"  writer processes: {self.writers_started} started, {self.writers_killed} killed mid-put, "
            f"{self.writers_finished} finished, {self.writers_failed} failed; "
            f"read back after each: {dict(sorted(self.writer_outcomes.items()))}",
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
            ("stale reads", self.stale_read_details),
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

    def counts(self) -> dict[str, Any]:
        """The report as plain data (for ``--json-out``), without the event log."""
        data = {k: v for k, v in self.__dict__.items() if k != "events"}
        data["wrong_answers"] = self.wrong_answers
        data["ok"] = self.ok
        return data


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

    def superseded_by(self, op: Op, t0: float) -> Op | None:
        """An acknowledged op that certainly overwrote ``op`` (began after it ended, ended before t0), if any."""
        with self.lock:
            ops = list(self.ops.get(op.key, ()))
        if op.end is None:
            return None
        return next((o for o in ops if o.acked and o.end is not None and o.start > op.end and o.end < t0), None)

    def acked_since(self, key: str, t: float) -> bool:
        """Was an op on ``key`` that began after ``t`` acknowledged?"""
        with self.lock:
            return any(o.acked and o.start > t for o in self.ops.get(key, ()))

    def final_candidates(self, key: str) -> list[Op]:
        """Attempts that may be the key's final state: no acknowledged op began after they ended."""
        with self.lock:
            ops = list(self.ops.get(key, ()))
        assert all(o.end is not None for o in ops), "final_candidates called while operations are in flight"
        return [o for o in ops if not any(a.acked and a.start > o.end for a in ops)]  # type: ignore[operator]


# ---------------------------------------------------------------------- writer processes


class WriterProcess:
    """A child process that puts one value to one key when told to, so that it can be killed mid-put.

    It is this script run as ``chaos.py crash-writer CLUSTER KEY CHUNK_SIZE TIMEOUT``; the value
    arrives on its stdin (8-byte length, then the bytes), and it prints ``READY`` once connected,
    puts on ``GO``, and prints ``DONE <generation> <seconds>`` (or ``FAILED <error>``).
    """

    def __init__(self, cluster: Path, key: str, value: bytes, chunk_size: int, timeout: float, log: Path) -> None:
        with open(log, "ab") as log_file:
            self.proc = subprocess.Popen(
                [sys.executable, str(Path(__file__).resolve()), "crash-writer", str(cluster), key,
                 str(chunk_size), str(timeout)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log_file,
            )  # fmt: skip
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.ended = False
        threading.Thread(target=self._pump, daemon=True, name=f"writer-{self.proc.pid}").start()
        assert self.proc.stdin is not None
        self.proc.stdin.write(len(value).to_bytes(8, "big") + value)
        self.proc.stdin.flush()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.decode(errors="replace").strip())
        self.lines.put(None)

    def next_line(self, timeout: float) -> str | None:
        """The next line the writer printed within ``timeout`` seconds; "" if none came, None at its end."""
        if self.ended:
            return None
        try:
            line = self.lines.get(timeout=max(0.0, timeout))
        except queue.Empty:
            return ""
        self.ended = line is None
        return line

    def go(self) -> None:
        """Tell the writer to start its put."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"GO\n")
        self.proc.stdin.flush()

    def kill(self) -> list[str]:
        """SIGKILL the writer (if it still runs), reap it, and return the lines it printed and nobody read."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=30)
        left = []
        deadline = time.monotonic() + 10.0
        while (line := self.next_line(deadline - time.monotonic())) is not None:
            if line == "" and time.monotonic() >= deadline:
                break  # its output never ended: something else holds the pipe
            if line:
                left.append(line)
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                if stream is not None:
                    stream.close()
            except OSError:
                pass
        return left


def crash_writer_main(argv: list[str]) -> int:
    """The writer process: read the value from stdin, connect, wait for GO, put it and say how it went."""
    cluster, key, chunk_size, timeout = argv[0], argv[1], int(argv[2]), float(argv[3])
    stdin = sys.stdin.buffer
    size = int.from_bytes(stdin.read(8), "big")
    value = stdin.read(size)
    with Client(cluster, chunk_size=chunk_size, request_timeout=timeout) as client:
        client.cluster_map  # noqa: B018 - the map is loaded now, not after GO
        print("READY", flush=True)
        if stdin.readline().strip() != b"GO":
            return 2
        start = time.monotonic()
        try:
            result = client.put(BUCKET, key, value)
        except HCStoreError as exc:
            print(f"FAILED {type(exc).__name__}: {exc}", flush=True)
            return 3
        print(f"DONE {result.generation} {time.monotonic() - start:.3f}", flush=True)
    return 0


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
        self.cold_keys = [f"cold-{i:02d}" for i in range(config.cold_keys)]
        self.crash_keys = [f"crash-{i:02d}" for i in range(config.crash_keys)]
        self.ledger = Ledger()
        self.report = ChaosReport()
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.down: dict[str, float] = {}  # node -> when to restart it
        self.rechecks: list[tuple[float, str]] = []  # (when, key): keys to read again after an unavailable read
        self.corruptions: list[Corruption] = []
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
        """Add one to ``name`` in the report's ``counter`` ("ops", "errors" or "writer_outcomes")."""
        with self.lock:
            getattr(self.report, counter)[name] += 1

    def client(self, request_timeout: float | None = None) -> Client:
        """A new client of the cluster with the run's chunk size (close it after use)."""
        return Client(
            self.cluster.path,
            chunk_size=self.config.chunk_size,
            request_timeout=request_timeout or self.config.request_timeout,
        )

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

    def recheck_later(self, key: str, delay: float | None = None) -> None:
        """Have a client thread read ``key`` again after ``delay`` seconds (default: ``recheck_after``)."""
        with self.lock:
            self.rechecks.append((time.monotonic() + (self.config.recheck_after if delay is None else delay), key))

    def _due_recheck(self) -> str | None:
        """A key whose recheck is due, taken off the list; None when none is."""
        now = time.monotonic()
        with self.lock:
            for i, (when, key) in enumerate(self.rechecks):
                if when <= now:
                    del self.rechecks[i]
                    return key
        return None

    def worker(self, index: int) -> None:
        """Client thread ``index``: random gets, puts and deletes until the run stops, each checked and counted."""
        rng = random.Random(f"{self.config.seed}/client/{index}")
        seq = 0
        client = self.client()
        acked_once: set[str] = set()
        try:
            while not self.stop.is_set():
                recheck = self._due_recheck()
                if recheck is not None:
                    try:
                        self._get(client, recheck, "recheck")
                    except HCStoreError as exc:
                        self.count("errors", type(exc).__name__)
                    continue
                key = rng.choice(self.keys)
                roll = rng.random()
                try:
                    if roll < 0.40:
                        if self.cold_keys and rng.random() < 0.3:
                            key = rng.choice(self.cold_keys)
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
            with self.lock:
                self.report.corrupt_chunks_read_around += len(client.corruptions)
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

    def _get(self, client: Client, key: str, kind: str = "get") -> tuple[str, Op | None]:
        """Read ``key`` and check the answer; returns ("found", the op that wrote it), ("absent", None) or
        ("unavailable", None) when the read raised a Retryable error (the key is read again later)."""
        self.count("ops", kind)
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
            return "absent", None
        except Retryable as exc:
            with self.lock:
                self.report.unavailable += 1
                self.report.errors[type(exc).__name__] += 1
            self.recheck_later(key)
            return "unavailable", None
        except HCStoreError as exc:
            self.log(f"get {key}: {type(exc).__name__} (down {sorted(self.down)}): {exc}; {self.where(client, key)}")
            raise
        return "found", self.check_answer(key, data, t0)

    def where(self, client: Client, key: str) -> str:
        """Where a key's fragments are, as a read resolves them and as the agents' disks hold them (for the log)."""
        try:
            version = resolve(client, BUCKET, key)
        except HCStoreError as exc:
            return f"resolve: {type(exc).__name__}: {exc}"
        files = self.fragment_files(key, version.generation)
        on_disk = {
            index: sorted(f"{node}:{path.suffix[1:]}" for node, path in files.get(index, []))
            for index in range(version.k + version.m)
        }
        return (
            f"generation {version.generation}: locations {list(version.locations)}, found at "
            f"{list(version.found_at)}, answered {sorted(version.answered)}, on disk {on_disk}"
        )

    def check_answer(self, key: str, data: bytes, t0: float) -> Op | None:
        """Check bytes a read of ``key`` begun at ``t0`` returned; returns the op that wrote them (None: wrong)."""
        verdict, text = describe(data)
        op = self.ledger.attempt(key, hashlib.sha256(data).hexdigest())
        if verdict != "ok" or op is None:
            problem = verdict if verdict != "ok" else "never written to this key"
            with self.lock:
                self.report.wrong_reads += 1
                self.report.wrong_read_details.append(f"t={t0 - self.t0:.2f} get {key}: {problem}: {text}")
            self.log(f"WRONG READ {key}: {problem}: {text}")
            return None
        newer = self.ledger.superseded_by(op, t0)
        if newer is not None:
            self.count("ops", "get_stale")
            with self.lock:
                self.report.stale_reads += 1
                self.report.stale_read_details.append(
                    f"t={t0 - self.t0:.2f} get {key}: read {op.label}, but {newer.label} (acknowledged at "
                    f"t={newer.end - self.t0:.2f}) began after it ended"  # type: ignore[operator]
                )
            self.log(f"STALE READ {key}: {op.label} after {newer.label}")
        return op

    # -------------------------------------------------------------- writer processes

    def writers(self) -> None:
        """Writer thread: one writer process after another, each SIGKILLed at a random moment of its put."""
        config = self.config
        rng = random.Random(f"{config.seed}/writers")
        client = self.client()
        estimate = 0.5  # seconds a put takes (a running mean of the writers that finished)
        seq = 0
        try:
            while not self.stop.is_set():
                seq += 1
                key = rng.choice(self.crash_keys)
                value = make_value(key, CRASH_WRITER, seq, self._size(rng), rng)
                kill_after = rng.uniform(0.0, 1.5 * estimate)
                took = self._one_writer(key, seq, value, kill_after)
                if took is not None:
                    estimate = 0.8 * estimate + 0.2 * took
                self._check_after_writer(client, key)
                self.stop.wait(rng.uniform(*config.crash_gap))
        except Exception:  # noqa: BLE001 - recorded as a driver error, which fails the run
            with self.lock:
                self.report.driver_errors.append(f"writer thread: {traceback.format_exc()}")
            self.stop.set()
        finally:
            client.close()

    def _one_writer(self, key: str, seq: int, value: bytes, kill_after: float) -> float | None:
        """Run one writer process putting ``value``, SIGKILL it ``kill_after`` seconds into the put unless it
        finished; returns how long the put took when it finished."""
        writer = WriterProcess(
            self.cluster.path, key, value, self.config.chunk_size, self.config.request_timeout,
            self.cluster.path / "crash-writers.log",
        )  # fmt: skip
        with self.lock:
            self.report.writers_started += 1
        lines: list[str] = []
        try:
            started = time.monotonic()
            while (line := writer.next_line(0.5)) != "READY":
                if line is None or time.monotonic() - started > 60.0:
                    raise RuntimeError(f"writer process for {key} did not start (see crash-writers.log)")
                if self.stop.is_set():
                    return None
            op = self.ledger.begin("put", key, hashlib.sha256(value).hexdigest(), f"x#{seq}")
            writer.go()
            deadline = time.monotonic() + kill_after
            while (line := writer.next_line(deadline - time.monotonic())) not in ("", None):
                lines.append(line)
        finally:
            lines += writer.kill()
        done = next((line for line in lines if line.startswith("DONE")), None)
        failed = next((line for line in lines if line.startswith("FAILED")), None)
        self.ledger.finish(op, done is not None)
        with self.lock:
            if done is not None:
                self.report.writers_finished += 1
            elif failed is not None:
                self.report.writers_failed += 1
                self.report.errors[f"writer {failed.split()[1].rstrip(':')}"] += 1
            else:
                self.report.writers_killed += 1
        what = "finished" if done else failed or f"killed after {kill_after:.2f} s"
        self.log(f"writer process x#{seq} on {key} ({len(value)} B): {what}")
        return float(done.split()[2]) if done else None

    def _check_after_writer(self, client: Client, key: str) -> None:
        """Read a writer process's key until it answers (a few tries); count which version it shows."""
        for _ in range(10):
            if self.stop.is_set():
                return
            try:
                found, op = self._get(client, key, "get_after_writer")
            except HCStoreError as exc:
                self.count("errors", type(exc).__name__)
                found, op = "unavailable", None
            if found == "unavailable":
                self.stop.wait(self.config.recheck_after)
                continue
            if found == "absent":
                self.count("writer_outcomes", "absent")
            elif op is not None:
                self.count("writer_outcomes", "new" if op.label == self._latest_label(key) else "old")
            return
        self.count("writer_outcomes", "unavailable")

    def _latest_label(self, key: str) -> str:
        """The label of the latest write attempt on ``key``."""
        with self.ledger.lock:
            return self.ledger.ops[key][-1].label

    # -------------------------------------------------------------- corruption

    def mountpaths(self) -> dict[str, list[Path]]:
        """Each agent's mountpath directories (read from the agents' configs once, again after an agent joins)."""
        with self.lock:
            cached = getattr(self, "_mountpaths", None)
        if cached is None or len(cached) != len(self.cluster.spec["nodes"]):
            cached = {a.node_id: a.mountpaths for a in self.cluster.agents()}
            with self.lock:
                self._mountpaths = cached
        return cached

    def fragment_files(self, key: str, generation: str) -> dict[int, list[tuple[str, Path]]]:
        """Fragment files (committed or prepared) of one generation of a key on every agent: index -> (node, path)."""
        digest = key_hash(BUCKET, key)
        found: dict[int, list[tuple[str, Path]]] = {}
        for node, mountpaths in self.mountpaths().items():
            for mountpath in mountpaths:
                for path in (mountpath / "frags" / digest[:2]).glob(f"{digest}.{generation}.*"):
                    _digest, _gen, index, suffix = path.name.split(".")
                    if suffix in ("frag", "prep"):
                        found.setdefault(int(index), []).append((node, path))
        return found

    def outstanding(self) -> dict[tuple[str, str], list[Corruption]]:
        """Corruptions not yet healed or superseded, grouped by (key, generation)."""
        groups: dict[tuple[str, str], list[Corruption]] = {}
        with self.lock:
            for c in self.corruptions:
                if c.state == "outstanding":
                    groups.setdefault((c.key, c.generation), []).append(c)
        return groups

    @staticmethod
    def failures(
        files: dict[int, list[tuple[str, Path]]],
        corrupt: list[Corruption],
        down: set[str],
        fragments: int,
        bad_paths: frozenset[Path] = frozenset(),
    ) -> int:
        """How many of its tolerated failures an object suffers: each fragment file that holds flipped bytes
        (or is in ``bad_paths``), each fragment index with no file, and each node in ``down`` holding any file."""
        spoilt = sum(
            1
            for index, holders in files.items()
            for _node, path in holders
            if path in bad_paths
            or any(c.index == index and _bytes_at(path, c.offset, len(c.flipped)) == c.flipped for c in corrupt)
        )
        missing = sum(1 for index in range(fragments) if index not in files)
        holders_down = {node for holders in files.values() for node, _path in holders if node in down}
        return spoilt + missing + len(holders_down)

    def kill_candidates(self) -> list[str]:
        """Running agents whose loss keeps every object with a corrupt fragment within its ``m`` failures."""
        groups = [(cs, self.fragment_files(key, gen)) for (key, gen), cs in self.outstanding().items()]
        down = set(self.down)
        return [
            node
            for node in self.running_agents()
            if all(
                self.failures(files, cs, down | {node}, cs[0].fragments) <= cs[0].fragments - cs[0].k
                for cs, files in groups
                if files
            )
        ]

    def write_cold_keys(self) -> None:
        """Put every cold key once (before the chaos), so that corruption of them lasts until scrub heals it."""
        rng = random.Random(f"{self.config.seed}/cold")
        with self.client() as client:
            for key in self.cold_keys:
                value = make_value(key, COLD_WRITER, 1, self._size(rng), rng)
                op = self.ledger.begin("put", key, hashlib.sha256(value).hexdigest(), f"w{COLD_WRITER}#1")
                client.put(BUCKET, key, value)
                self.ledger.finish(op, True)

    def corrupt_one(self, rng: random.Random, client: Client) -> None:
        """Flip bytes in a committed fragment of a random live object, if that stays within its tolerance.

        Mostly a cold key's (which stays corrupt until scrub and repair heal it), else any key's.
        """
        keys = self.cold_keys if self.cold_keys and rng.random() < 0.7 else self.keys
        for key in rng.sample(keys, min(6, len(keys))):
            try:
                version = client.resolve(BUCKET, key)
            except HCStoreError:
                continue
            if version.stripes == 0:
                continue  # the empty object has no chunk to corrupt
            files = self.fragment_files(key, version.generation)
            spoilt = self.outstanding().get((key, version.generation), [])
            choices = sorted(
                (index, node, path)
                for index, holders in files.items()
                for node, path in holders
                if node not in self.down and path.suffix == ".frag" and all(c.path != path for c in spoilt)
            )
            if not choices:
                continue
            index, node, path = rng.choice(choices)
            chunk = version.chunk_size
            within = rng.randrange(chunk)
            offset = DATA_OFFSET + rng.randrange(version.stripes) * chunk + within
            count = min(rng.randint(1, 16), chunk - within)
            original = _bytes_at(path, offset, count)
            if original is None:
                continue  # retired meanwhile
            flipped = bytes(b ^ 0xFF for b in original)
            failures = self.failures(files, spoilt, set(self.down), version.k + version.m, frozenset({path}))
            if failures > version.m:
                with self.lock:
                    self.report.corruptions_refused += 1
                continue
            c = Corruption(
                key, version.generation, index, node, path, offset, original, flipped, time.monotonic(), version.k,
                version.k + version.m,
            )  # fmt: skip
            try:
                with open(path, "r+b") as f:
                    f.seek(offset)
                    f.write(flipped)
            except FileNotFoundError:
                continue
            with self.lock:
                self.corruptions.append(c)
                self.report.corruptions += 1
            self.log(
                f"corrupted {count} B of fragment {index} of {key} on {node} (stripe "
                f"{(offset - DATA_OFFSET) // chunk}); the object now has {failures} of its {version.m} tolerated "
                "failures"
            )
            self.recheck_later(key, 0.0)  # read it at once: the read must route around the corrupt chunk
            return

    def update_corruptions(self) -> None:
        """Mark corruptions healed (no file holds the flipped bytes, one holds the right ones) or superseded."""
        for (key, gen), cs in self.outstanding().items():
            files = self.fragment_files(key, gen)
            for c in cs:
                contents = [_bytes_at(path, c.offset, len(c.flipped)) for _node, path in files.get(c.index, [])]
                state = "outstanding"
                if not files or self.ledger.acked_since(key, c.at):
                    state = "superseded"
                elif c.flipped not in contents:
                    c.scrubbed = True
                    if c.original in contents:
                        state = "healed"
                if state != "outstanding":
                    with self.lock:
                        c.state = state
                        if state == "healed":
                            self.report.corruptions_healed += 1
                        else:
                            self.report.corruptions_superseded += 1
                    self.log(f"corruption of fragment {c.index} of {key} on {c.node}: {state}")

    # -------------------------------------------------------------- faults

    def running_agents(self) -> list[str]:
        """The agents not killed by the driver at the moment."""
        return [a.node_id for a in self.cluster.agents() if a.node_id not in self.down]

    def controller(self) -> ControllerClient:
        """A client of the cluster's controller (close it after use)."""
        return ClusterSource.local(self.cluster.path).controller(timeout=5.0)

    def restart(self, node: str) -> None:
        """Start a killed agent again and wait until the map shows it back (alive, or in maintenance if drained)."""
        self.cluster.start(node, timeout=60.0)  # on 2 busy cores an agent can take many seconds to start
        if node in self.report.drained:  # it comes back in maintenance, and stays there
            self.cluster.wait_for_map(lambda m: node in m and m.node(node).state == "draining", timeout=30.0)
        with self.lock:
            self.down.pop(node, None)
            self.report.restarts += 1
        self.log(f"restarted {node}")

    def faults(self, seconds: float) -> None:
        """The fault driver for ``seconds``: kill and restart agents, corrupt fragments, add one agent and drain
        one, as configured."""
        config = self.config
        rng = random.Random(f"{config.seed}/faults")
        start = time.monotonic()
        end = start + seconds
        add_at = None if config.add_agent_at is None else start + config.add_agent_at * seconds
        drain_at = None if config.drain_at is None else start + config.drain_at * seconds
        next_kill = start + rng.uniform(*config.kill_gap)
        next_corrupt = None if config.corrupt_gap is None else start + rng.uniform(*config.corrupt_gap)
        next_heal_check = start
        client = self.client(request_timeout=1.0)
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
                if now >= next_heal_check:
                    next_heal_check = now + 0.5
                    self.update_corruptions()
                if next_corrupt is not None and now >= next_corrupt:
                    next_corrupt = now + rng.uniform(*config.corrupt_gap)  # type: ignore[misc]
                    self.corrupt_one(rng, client)
                if now >= next_kill:
                    next_kill = now + rng.uniform(*config.kill_gap)
                    if len(self.down) < self.max_down:
                        self._kill_one(rng)
                time.sleep(0.05)
        except Exception:  # noqa: BLE001 - recorded as a driver error, which fails the run
            with self.lock:
                self.report.driver_errors.append(f"fault driver: {traceback.format_exc()}")
            self.stop.set()
        finally:
            client.close()

    def _kill_one(self, rng: random.Random) -> None:
        """SIGKILL a random running agent whose loss the objects with corrupt fragments tolerate, if any."""
        config = self.config
        candidates = self.kill_candidates()
        if not candidates:
            with self.lock:
                self.report.kills_refused += 1
            return
        node = rng.choice(candidates)
        long = rng.random() < config.long_down_chance
        outage = config.intervals.out_after + rng.uniform(0.5, 2.0) if long else rng.uniform(*config.down_time)
        self.cluster.kill(node)
        with self.lock:
            self.down[node] = time.monotonic() + outage
            self.report.kills += 1
            self.report.long_kills += long
            self.report.max_down_seen = max(self.report.max_down_seen, len(self.down))
        self.log(f"killed {node} for {outage:.1f} s (down now: {sorted(self.down)}){self.corrupt_objects()}")

    def corrupt_objects(self) -> str:
        """The failures of each object with a corrupt fragment, as text for the log ("" when there is none)."""
        down = set(self.down)
        parts = []
        for (key, gen), cs in sorted(self.outstanding().items()):
            files = self.fragment_files(key, gen)
            if files:
                parts.append(f"{key} {self.failures(files, cs, down, cs[0].fragments)}/{cs[0].fragments - cs[0].k}")
        return f"; failures of objects with corrupt fragments: {', '.join(parts)}" if parts else ""

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
            lambda m: all(i in m and m.node(i).state in ("alive", "draining") for i in ids), timeout=30.0
        )

    def ask_agents(self, client: Client, job: str) -> None:
        """Ask every serving agent for a ``job`` pass ("repair" or "scrub") now; one that fails is logged."""
        for node in client.cluster_map.nodes:
            if node.endpoint and node.state in ("alive", "draining"):
                try:
                    client.transport.request(node.endpoint, "maintain", {"job": job})
                except HCStoreError as exc:
                    self.log(f"maintain {job} on {node.id} failed: {exc}")

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
        spoilt = self.outstanding().get((key, info.generation), [])
        if spoilt:
            c = spoilt[0]
            state = "quarantined, not yet rebuilt" if c.scrubbed else "not yet scrubbed"
            return "unprotected", f"{key}: fragment {c.index} (corrupted on {c.node}) {state}"
        return "ok", "present"

    def settle(self) -> None:
        """Check every key until all are right or ``settle_timeout`` passes, and record the end state in the report."""
        report = self.report
        config = self.config
        keys = self.keys + self.cold_keys + self.crash_keys
        with Client(self.cluster.path, chunk_size=config.chunk_size, request_timeout=5.0) as client:
            self.ask_agents(client, "scrub")
            start = time.monotonic()
            deadline = start + config.settle_timeout
            next_nudge = 0.0
            rounds = 0
            while True:
                client.refresh()
                if time.monotonic() >= next_nudge:
                    self.ask_agents(client, "repair")
                    next_nudge = time.monotonic() + 3.0
                self.update_corruptions()
                results = {key: self.check_key(client, key) for key in keys}
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
                report.drained_fragments_left = {n: stats.get(n, {}).get("fragments") for n in report.drained}
            except HCStoreError as exc:
                report.driver_errors.append(f"controller status: {exc}")

    def run(self) -> ChaosReport:
        """The whole run: workload and faults for ``config.seconds``, then every agent back, then settling."""
        config = self.config
        self.log(
            f"chaos: {len(self.cluster.agents())} agents, EC {config.ec}, {config.keys} keys, "
            f"{config.clients} clients, {config.cold_keys} cold keys, {config.crash_keys} keys for writer processes, "
            f"corruption {'every ' + '-'.join(map(str, config.corrupt_gap)) + ' s' if config.corrupt_gap else 'off'}, "
            f"{config.seconds:.0f} s, seed {config.seed}"
        )
        threads = [
            threading.Thread(target=self.worker, args=(i,), name=f"chaos-client-{i}", daemon=True)
            for i in range(config.clients)
        ]
        if self.crash_keys:
            threads.append(threading.Thread(target=self.writers, name="chaos-writers", daemon=True))
        self.write_cold_keys()
        start = time.monotonic()
        for t in threads:
            t.start()
        self.faults(config.seconds)
        self.stop.set()
        stopping = time.monotonic()
        for t in threads:
            t.join(timeout=60.0)
            if t.is_alive():
                self.report.driver_errors.append(f"{t.name} did not stop within 60 s")
        self.report.seconds = time.monotonic() - start
        self.log(
            f"faults stopped after {stopping - start:.1f} s; the workload's last operations took "
            f"{time.monotonic() - stopping:.1f} s more"
        )
        self.log(f"chaos phase over: {dict(self.report.ops)}; errors {dict(self.report.errors)}")
        back = time.monotonic()
        self.bring_everyone_back()
        self.report.restart_seconds = time.monotonic() - back
        self.log("every agent is running; waiting for scrub and repair to settle")
        if self.report.driver_errors:
            return self.report
        self.settle()
        self.log(f"settled={self.report.settled} after {self.report.settle_seconds:.1f} s")
        return self.report


def _bytes_at(path: Path, offset: int, count: int) -> bytes | None:
    """``count`` bytes of a file at ``offset``; None when the file is gone or too short."""
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read(count)
    except FileNotFoundError:
        return None
    return data if len(data) == count else None


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
        scrub_interval=config.scrub_interval,
        repair_rate=config.repair_rate,
    )
    try:
        cluster.start()
        return Chaos(cluster, config, log).run()
    finally:
        cluster.stop()


def main(argv: list[str] | None = None) -> int:
    """Parse the command line, run the chaos and print its report; returns 0 when the verdict is OK."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["crash-writer"]:
        return crash_writer_main(argv[1:])
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=600.0)
    parser.add_argument("--agents", type=int, default=8)
    parser.add_argument("--ec", default="4+2")
    parser.add_argument("--keys", type=int, default=60)
    parser.add_argument("--clients", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--max-size", type=int, default=1 << 20)
    parser.add_argument("--crash-keys", type=int, default=4, help="keys written by killed writer processes (0: none)")
    parser.add_argument("--no-corruption", action="store_true", help="do not corrupt fragment files")
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
        crash_keys=args.crash_keys,
        corrupt_gap=None if args.no_corruption else ChaosConfig.corrupt_gap,
        settle_timeout=args.settle_timeout,
        verbose=not args.quiet,
    )
    root.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(
        filename=root / "hcstore.log",
        level=logging.INFO,
        format="%(asctime)s %(threadName)s %(name)s %(levelname)s %(message)s",
    )
    report = run_chaos(root / "cluster", config)
    print(report.summary())
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(report.counts(), indent=2, default=str))
    if args.keep or not report.ok:
        print(f"cluster directory (agent logs): {root / 'cluster'}; client log: {root / 'hcstore.log'}")
    else:
        shutil.rmtree(root, ignore_errors=True)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
