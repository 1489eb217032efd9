"""A controller for a fleet: heartbeats, map fan-out, repair planning and placement at 10,000 nodes.

    python benchmarks/bench_scale.py [--nodes 10000] [--processes 4] [--interval 1.0] [--seconds 30]
                                     [--warmup S] [--suspect-after 30] [--plan-sample 60] [--placements 100000]
                                     [--whole-maps] [--quick] [--json-out FILE]

Three parts, each printed beside its goal and written under stable names by ``--json-out``:

1. **Heartbeats.** A real controller process (``python -m hcstore.control.controller``) listens on
   127.0.0.1 only, started ``insecure`` (no CurveZMQ: a key handshake is paid once per connection, not
   per heartbeat, and 10,000 node keys would only slow the start; a secure map also lists every key
   twice, which the map size figure leaves out). ``--processes`` processes simulate ``--nodes`` nodes
   between them; each simulated node is a DEALER socket of its own, with the agent's socket options,
   that sends the agent's heartbeat (the same fields, the same wire format, the epoch of the newest map
   it got; once it holds a map, it asks for the changes since, as an agent does, unless ``--whole-maps``)
   every ``--interval`` seconds, and takes the epoch of a map or a delta a reply carries without decoding
   it (the controller's cost is measured, not the fleet's). The warm-up lasts until every node the
   controller accepts (at most ``MAX_MAP_NODES``) holds a map and no newer epoch has come for two
   intervals, or until its budget runs out (``settled_before_steady_phase`` says which). The controller
   is started with ``suspect_after`` = ``--suspect-after`` (default 30 s, the product's is 3 s): a
   controller slower than that to answer a heartbeat marks its node suspect, which changes the map and
   sends it to every node again, a storm that would never let the warm-up end on a small machine.
   The steady phase (``--seconds``) measures the controller's CPU per heartbeat answered (psutil
   ``cpu_times`` of its process) and heartbeat latency from send to reply. Then one node is drained
   (a map change) and the fan-out is the time from the drain request until each registered node has seen
   the new epoch in a heartbeat reply (p50 and max over the nodes that saw it). The map's size is the
   reply that carries it, as sent (a header and the map's bulk frame); a delta's, likewise.
2. **Repair planning** after a node goes out, on a map of ``--nodes`` nodes: the pure planning code
   a scan runs per object (:func:`~hcstore.node.repair_plan.checkers` on each of the ``k+m`` holders,
   :func:`~hcstore.node.repair_plan.repairer` on the ``m+1`` checkers, :func:`~hcstore.node.repair_plan.plan_object`
   on the repairer) over a synthetic index: ``--plan-sample`` objects of a 100-million-object fleet placed
   by :func:`placement.place`, each with one holder out. Each call ranks all nodes, so it costs O(nodes)
   and a sample of millions cannot be planned in minutes: the time for 100 million objects is an
   extrapolation from the sample, and is printed as one.
3. **Placement** of ``--placements`` objects of EC 4+2 over ``--nodes`` nodes without labels (placement
   is then the top ``k+m`` of the HRW ranking, counted with :func:`placement.hrw_score_matrix` and
   cross-checked against :func:`placement.place`): fragments per node against the mean and against what
   chance gives, projected to 100 million objects; and the share of fragments one join moves against
   the ideal ``1/(N+1)`` (the newcomer's share).
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import platform
import subprocess
import sys
import tempfile
import time
from array import array
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import psutil
import zmq

from hcstore.client.versions import ObjectVersion
from hcstore.control.client import ControllerClient
from hcstore.errors import ControllerUnavailable, HCStoreError, ObjectNotFound
from hcstore.node.repair_plan import checkers, plan_object, repairer
from hcstore.wire import protocol
from placement import ClusterMap, Node, hrw_score_matrix, place

LOOPBACK = "127.0.0.1"
K, M = 4, 2
FLEET_NODES = 10_000  # the fleet the goals are for
FLEET_OBJECTS = 100_000_000  # objects in the fleet whose repair planning is extrapolated
CPU_GOAL_US = 50.0  # controller CPU per heartbeat: 10,000 nodes at one heartbeat a second on half a core
WARMUP_PER_1000_NODES = 6.0  # most seconds the fleet may take to register and settle, per 1,000 nodes (>= 20)
FANOUT_PER_1000_NODES = 1.5  # seconds the fleet runs after the map change per 1,000 nodes, at least 5
BALANCE_CHUNK = 100  # keys per score matrix
JOINS = 64  # newcomers whose join is tried, one at a time, for the movement figure
READY_TIMEOUT = 30.0
SEND_BATCH_MS = 20  # a simulated process sends the heartbeats that fell due in the last 20 ms together
AGENT_CONTROLLER_HWM = 16  # heartbeats queued on an agent's socket to the controller, as in hcstore.node.agent
MAP_FORMS = ("map", "delta")  # how a heartbeat reply carries a newer map: whole, or the changes since the node's


# ---------------------------------------------------------------------------------------------- statistics


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of an ascending sequence (nan when empty)."""
    if not sorted_values:
        return float("nan")
    rank = max(1, math.ceil(len(sorted_values) * fraction))
    return sorted_values[rank - 1]


@dataclass(frozen=True)
class Balance:
    """How evenly fragments spread over nodes: the extremes against the mean, and the spread against chance.

    Attributes:
        mean: fragments per node.
        max_over_mean: the fullest node's count over the mean.
        min_over_mean: the emptiest node's count over the mean.
        sd_over_binomial: the counts' standard deviation over that of a perfectly random placement,
            ``sqrt(mean * (1 - 1/N))``: 1.0 means the hash spreads as well as chance can.
    """

    mean: float
    max_over_mean: float
    min_over_mean: float
    sd_over_binomial: float


def balance(counts: np.ndarray) -> Balance:
    """The :class:`Balance` of fragment counts per node."""
    mean = float(counts.mean())
    binomial_sd = math.sqrt(mean * (1 - 1 / len(counts)))
    return Balance(mean, float(counts.max()) / mean, float(counts.min()) / mean, float(counts.std()) / binomial_sd)


def expected_extreme(mean: float, nodes: int) -> float:
    """The largest relative deviation from ``mean`` to expect among ``nodes`` binomial counts: ``z / sqrt(mean)``,
    with ``z = sqrt(2 ln nodes)``, the usual estimate of the largest of that many normal deviates (a projection,
    not a measurement)."""
    z = math.sqrt(2 * math.log(nodes))  # the usual bound on the largest of N normal deviates
    return z / math.sqrt(mean)


# ---------------------------------------------------------------------------------------------- heartbeats


def node_ids(count: int) -> list[str]:
    """The ids of the simulated nodes."""
    return [f"sim-{i:05d}" for i in range(count)]


def heartbeat_fields(node: str, index: int) -> dict[str, Any]:
    """What an agent sends with each heartbeat (``Agent._send_heartbeat``), for a node of a fleet."""
    return {
        "node": node,
        "endpoint": f"tcp://{LOOPBACK}:{20000 + index % 40000}",  # never connected to: the controller only records it
        "labels": {"zone": f"z{index % 4}", "rack": f"r{index % 200}", "host": node},
        "weight": 1.0,
        "stats": {"fragments": 0, "data_fragments": 0, "used": 0, "free": 1 << 40, "pid": os.getpid(), "metrics": ""},
        "framed": True,  # a whole map comes as a bulk frame
    }


@dataclass(frozen=True)
class ReplySummary:
    """What a simulated node takes from a heartbeat reply: its id, error code ("" when ok), the controller's
    epoch, and how it carries the map of that epoch: ``map`` (whole), ``delta`` (the changes since the node's),
    or "" (not at all). The map or delta itself is skipped, not decoded."""

    id: int
    code: str
    epoch: int
    carries: str

    @classmethod
    def of(cls, header: bytes) -> ReplySummary:
        """Read a reply's header frame, skipping over its ``map`` or ``delta`` (a map in a bulk frame is not read)."""
        unpacker = msgpack.Unpacker(raw=False, max_buffer_size=len(header))
        unpacker.feed(header)
        fields: dict[str, Any] = {}
        for _ in range(unpacker.read_map_header()):
            name = unpacker.unpack()
            if name in MAP_FORMS:
                unpacker.skip()
                fields[name] = True
            else:
                fields[name] = unpacker.unpack()
        if "map" in (fields.get("bulk") or ()):
            fields["map"] = True
        code = "" if fields.get("ok") else str(fields.get("code", "E_INTERNAL"))
        carries = next((form for form in MAP_FORMS if form in fields), "")
        return cls(int(fields["id"]), code, int(fields.get("epoch", 0)), carries)


def simulate_nodes(
    endpoint: str,
    first: int,
    ids: list[str],
    interval: float,
    start: float,
    stop: Any,
    progress: Any,
    slot: int,
    results: Any,
    deltas: bool = True,
) -> None:
    """One process of the fleet: heartbeat for ``ids`` (the nodes numbered from ``first``) from ``start``
    (monotonic) until the event ``stop`` is set, then send the results down the pipe ``results``.

    ``progress`` is shared: one :data:`PROGRESS_FIELDS` triple per process, this one's from index ``slot``.
    It tells the parent how far registration has come without asking the controller.

    Results: the send time of each heartbeat; per reply the send time of its heartbeat, its latency and
    whether it was refused; per node the arrival time, epoch and header size of each reply that raised its
    epoch; the largest header seen carrying a whole map; counts of refusals by code. A node
    asks for deltas once it holds a map, unless ``deltas`` is False (an agent from before deltas).
    """
    context = zmq.Context()
    context.set(zmq.MAX_SOCKETS, len(ids) + 64)
    poller = zmq.Poller()
    sockets = []
    for _ in ids:
        sock = context.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.IMMEDIATE, 1)
        sock.setsockopt(zmq.SNDHWM, AGENT_CONTROLLER_HWM)
        sock.setsockopt(zmq.RCVHWM, AGENT_CONTROLLER_HWM)
        sock.connect(endpoint)
        poller.register(sock, zmq.POLLIN)
        sockets.append(sock)
    index_of = {sock: i for i, sock in enumerate(sockets)}
    fields = [heartbeat_fields(node, first + i) for i, node in enumerate(ids)]
    epochs = [0] * len(ids)
    in_flight: list[dict[int, float]] = [{} for _ in ids]  # send time by request id, per node
    sent, sent_at, latency, refused = array("d"), array("d"), array("d"), array("b")
    adopted: list[tuple[int, float, int, int]] = []  # (node number, arrival, epoch, header bytes)
    codes: dict[str, int] = {}
    map_bytes = 0
    request_id, turn, position = 0, 0, 0
    while not stop.is_set():
        now = time.monotonic()
        due = start + (turn + position / len(ids)) * interval
        while due <= now:
            request_id += 1
            try:
                heartbeat = fields[position]
                if deltas and epochs[position]:
                    heartbeat = {**heartbeat, "deltas": True}
                frames = protocol.request_frames("heartbeat", request_id, epochs[position], heartbeat)
                sockets[position].send_multipart(frames, flags=zmq.NOBLOCK)
                in_flight[position][request_id] = now
                sent.append(now)
            except zmq.Again:
                codes["not sent (queue full)"] = codes.get("not sent (queue full)", 0) + 1
            position += 1
            if position == len(ids):
                position, turn = 0, turn + 1
            due = start + (turn + position / len(ids)) * interval
        for sock, _ in poller.poll(max(SEND_BATCH_MS, int((due - time.monotonic()) * 1000))):
            i = index_of[sock]
            while True:
                try:
                    frames = sock.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                arrival = time.monotonic()
                reply = ReplySummary.of(frames[0])
                when = in_flight[i].pop(reply.id, None)
                if when is None:
                    continue
                sent_at.append(when)
                latency.append(arrival - when)
                refused.append(bool(reply.code))
                if reply.code:
                    codes[reply.code] = codes.get(reply.code, 0) + 1
                elif reply.carries and reply.epoch > epochs[i]:
                    progress[slot + 2] += epochs[i] == 0  # a node's first map: it is registered
                    epochs[i] = reply.epoch
                    size = sum(len(frame) for frame in frames)
                    adopted.append((first + i, arrival, epochs[i], size))
                    if reply.carries == "map":
                        map_bytes = max(map_bytes, size)
                    if reply.epoch > progress[slot]:
                        progress[slot], progress[slot + 1] = reply.epoch, arrival
    for sock in sockets:
        sock.close(linger=0)
    context.term()
    results.send(
        {
            "sent": sent.tobytes(),
            "sent_at": sent_at.tobytes(),
            "latency": latency.tobytes(),
            "refused": refused.tobytes(),
            "adopted": adopted,
            "codes": codes,
            "map_bytes": map_bytes,
        }
    )
    results.close()


def cpu_seconds(processes: list[psutil.Process]) -> float:
    """User and system CPU seconds the processes have used so far."""
    return sum(sum(process.cpu_times()[:2]) for process in processes)


def start_controller(directory: Path, interval: float, suspect_after: float) -> tuple[subprocess.Popen[bytes], str]:
    """Start a controller process on the loopback address, without authentication; returns it and its endpoint."""
    config, ready = directory / "controller.toml", directory / "controller.ready"
    config.write_text(
        f'host = "{LOOPBACK}"\nport = 0\ninsecure = true\nmetrics_port = -1\nheartbeat = {interval}\n'
        f"suspect_after = {suspect_after}\ndown_after = {2 * suspect_after}\n"
        f"out_after = {max(600.0, 4 * suspect_after)}\n"
        f'ready_file = "{ready}"\nlog_file = "{directory / "controller.log"}"\n'
    )
    process = subprocess.Popen([sys.executable, "-m", "hcstore.control.controller", "--config", str(config)])
    deadline = time.monotonic() + READY_TIMEOUT
    while not ready.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"the controller did not start (exit code {process.poll()}); see {directory}")
        time.sleep(0.05)
    return process, json.loads(ready.read_text())["endpoint"]


def stop_controller(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL after 10 s: a controller far behind its heartbeats answers its backlog first."""
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


PROGRESS_FIELDS = ("newest epoch seen", "when it was first seen", "nodes registered")


def wait_until_settled(progress: Any, processes: int, nodes: int, interval: float, deadline: float) -> bool:
    """Wait until ``nodes`` simulated nodes hold a map and no newer epoch has reached the fleet for two heartbeat
    intervals; False if that did not happen by ``deadline`` (monotonic). The controller is not asked: while it
    fans a map out, a request waits its turn behind every node's queued heartbeats."""
    while time.monotonic() < deadline:
        newest = [progress[3 * p] for p in range(processes)]
        last_change = max(progress[3 * p + 1] for p in range(processes))
        registered = sum(progress[3 * p + 2] for p in range(processes))
        if registered >= nodes and min(newest) == max(newest) and time.monotonic() - last_change >= 2 * interval:
            return True
        time.sleep(interval / 4)
    return False


def drain(endpoint: str, candidates: Sequence[str], timeout: float) -> ClusterMap | None:
    """Drain the first of ``candidates`` in the map (a full map leaves some nodes out); the map that results,
    or None when the controller did not answer in time (a controller fanning out a map answers an admin request
    only after every node's queued heartbeats)."""
    with ControllerClient(endpoint, timeout=timeout) as admin:
        for node in candidates:
            try:
                return admin.drain(node)
            except ObjectNotFound:
                continue
            except ControllerUnavailable:
                return None
    return None


def run_fleet(
    *,
    nodes: int,
    processes: int,
    interval: float,
    seconds: float,
    suspect_after: float,
    warmup: float,
    deltas: bool = True,
) -> dict[str, Any]:
    """Run the simulated fleet against a real controller; return the heartbeat and fan-out figures.

    ``warmup`` is the most seconds the fleet may take to register and settle (0: 6 s per 1,000 nodes, >= 20);
    ``deltas`` False: the nodes take whole maps only.
    """
    ids = node_ids(nodes)
    warmup = warmup or max(20.0, WARMUP_PER_1000_NODES * nodes / 1000)
    fanout = max(5.0, FANOUT_PER_1000_NODES * nodes / 1000)
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        controller, endpoint = start_controller(Path(tmp), interval, suspect_after)
        try:
            start = time.monotonic() + 2.0  # time for every process to connect its sockets
            context = multiprocessing.get_context("spawn")
            stop = context.Event()
            share = math.ceil(nodes / processes)
            progress = context.RawArray("d", len(PROGRESS_FIELDS) * math.ceil(nodes / share))
            pipes, workers = [], []
            for number, first in enumerate(range(0, nodes, share)):
                receive, send = context.Pipe(duplex=False)
                slot = len(PROGRESS_FIELDS) * number
                worker = context.Process(
                    target=simulate_nodes,
                    args=(
                        endpoint,
                        first,
                        ids[first : first + share],
                        interval,
                        start,
                        stop,
                        progress,
                        slot,
                        send,
                        deltas,
                    ),
                    daemon=True,
                )
                worker.start()
                pipes.append(receive)
                workers.append(worker)
            usage = psutil.Process(controller.pid)
            fleet = [psutil.Process(worker.pid) for worker in workers]
            expected = min(nodes, protocol.MAX_MAP_NODES)  # the controller registers no more
            settled = wait_until_settled(progress, len(workers), expected, interval, start + warmup)
            steady_from = time.monotonic()
            cpu_before, fleet_before = cpu_seconds([usage]), cpu_seconds(fleet)
            time.sleep(seconds)
            cpu_after, fleet_after = cpu_seconds([usage]), cpu_seconds(fleet)
            change_at = time.monotonic()
            drained = drain(endpoint, ids[::share], fanout)  # the first node a process starts, if in the map
            time.sleep(max(0.0, change_at + fanout - time.monotonic()))
            stop.set()
            parts = [pipe.recv() for pipe in pipes]
            for worker in workers:
                worker.join()
        finally:
            stop_controller(controller)
    return fleet_figures(
        parts,
        nodes=nodes,
        interval=interval,
        steady=(steady_from, change_at),
        cpu=(cpu_after - cpu_before, fleet_after - fleet_before),
        changed=(change_at, fanout),
        new_epoch=drained.epoch if drained is not None else None,
        map_nodes=len(drained) if drained is not None else 0,
    ) | {
        "settled_before_steady_phase": settled,
        "nodes_take_deltas": deltas,
        "warmup_seconds": steady_from - start,
        "suspect_after_seconds": suspect_after,
    }


def fleet_figures(
    parts: list[dict[str, Any]],
    *,
    nodes: int,
    interval: float,
    steady: tuple[float, float],
    cpu: tuple[float, float],
    changed: tuple[float, float],
    new_epoch: int | None,
    map_nodes: int = 0,
) -> dict[str, Any]:
    """Heartbeat, map and fan-out figures from what the fleet's processes saw.

    ``map_nodes``: the nodes of the controller's map after the change (0: not known, then those registered).

    ``cpu`` is the CPU time of the controller and of the fleet's processes over the steady phase;
    ``changed`` the time of the map change and how long the fleet ran after it.
    """
    cpu_seconds = cpu[0]
    sent = np.concatenate([np.frombuffer(p["sent"], dtype=np.float64) for p in parts])
    sent_at = np.concatenate([np.frombuffer(p["sent_at"], dtype=np.float64) for p in parts])
    latency = np.concatenate([np.frombuffer(p["latency"], dtype=np.float64) for p in parts])
    refused = np.concatenate([np.frombuffer(p["refused"], dtype=np.int8) for p in parts]).astype(bool)
    arrival = sent_at + latency
    in_steady = (arrival >= steady[0]) & (arrival < steady[1])
    answered = int(in_steady.sum())
    served = in_steady & ~refused
    scheduled_in_steady = (sent_at >= steady[0]) & (sent_at < steady[1])
    steady_latency = sorted(latency[scheduled_in_steady].tolist())
    sent_in_steady = int(((sent >= steady[0]) & (sent < steady[1])).sum())
    registered = {node for node, *_ in (event for p in parts for event in p["adopted"])}
    seen: dict[int, float] = {}
    change_bytes: dict[int, int] = {}  # per node, the header of the reply that brought it the change
    for p in parts:
        for node, when, epoch, size in p["adopted"]:
            if new_epoch is not None and epoch >= new_epoch and when >= changed[0] and node not in seen:
                seen[node] = when - changed[0]
                change_bytes[node] = size
    fanout = sorted(seen.values())
    steady_epochs = [e for p in parts for _, when, e, _ in p["adopted"] if steady[0] <= when < steady[1]]
    codes: dict[str, int] = {}
    for p in parts:
        for code, count in p["codes"].items():
            codes[code] = codes.get(code, 0) + count
    seconds = steady[1] - steady[0]
    map_bytes = max(p["map_bytes"] for p in parts)
    in_map = map_nodes or len(registered)  # the largest map sent had at most as many nodes as the last one
    return {
        "nodes_simulated": nodes,
        "nodes_registered": len(registered),
        "heartbeat_interval_seconds": interval,
        "steady_seconds": seconds,
        "heartbeats_offered_per_second": nodes / interval,
        "heartbeats_answered_per_second": answered / seconds,
        "heartbeats_refused_per_second": float((in_steady & refused).sum()) / seconds,
        "heartbeats_unanswered_in_steady_phase": sent_in_steady - int(scheduled_in_steady.sum()),
        "controller_cpu_seconds_per_second": cpu_seconds / seconds,
        "fleet_processes_cpu_seconds_per_second": cpu[1] / seconds,
        "controller_cpu_us_per_heartbeat": 1e6 * cpu_seconds / answered if answered else float("nan"),
        "controller_cores_for_10000_nodes": cpu_seconds / answered * FLEET_NODES if answered else float("nan"),
        "heartbeat_latency_p50_ms": 1e3 * percentile(steady_latency, 0.50),
        "heartbeat_latency_p99_ms": 1e3 * percentile(steady_latency, 0.99),
        "heartbeats_served_in_steady_phase": int(served.sum()),
        "epoch_changes_seen_in_steady_phase": len(set(steady_epochs)),
        "map_bytes_on_wire": map_bytes,
        "nodes_in_map": in_map,
        "map_bytes_per_node": map_bytes / in_map if in_map else float("nan"),
        "map_bytes_at_10000_nodes_projected": map_bytes / in_map * FLEET_NODES if in_map else float("nan"),
        "change_reply_bytes_p50": percentile(sorted(change_bytes.values()), 0.50),
        "map_bytes_per_second_at_full_fanout": map_bytes * len(registered) / interval,
        "fanout_bytes_per_change": sum(change_bytes.values()),
        "fanout_window_seconds": changed[1],
        "fanout_drain_answered": new_epoch is not None,
        "fanout_nodes_reached": len(fanout),
        "fanout_p50_seconds": percentile(fanout, 0.50),
        "fanout_max_seconds": fanout[-1] if fanout else float("nan"),
        "refusals": codes,
    }


# ---------------------------------------------------------------------------------------------- repair planning


def fleet_map(nodes: int) -> ClusterMap:
    """A map of ``nodes`` alive nodes over 4 zones and 200 racks, one node per host."""
    return ClusterMap(
        1,
        tuple(
            Node(
                f"sim-{i:05d}",
                f"tcp://{LOOPBACK}:{20000 + i % 40000}",
                labels={"zone": f"z{i % 4}", "rack": f"r{i % 200}"},
            )
            for i in range(nodes)
        ),
    )


def synthetic_index(cluster_map: ClusterMap, count: int, seed: int = 0) -> list[tuple[ObjectVersion, ClusterMap]]:
    """``count`` objects of a 100-million-object fleet, as a scan finds them after some nodes went out.

    Each object ``bench/obj-<n>`` (``n`` drawn at random below :data:`FLEET_OBJECTS`) has its ``k+m``
    fragments where :func:`placement.place` put them; the holder of fragment ``n % (k+m)`` is out, and its
    fragment was not found. One map, with all those holders out, serves every object, as one map serves a
    scan. Returns each object with that map.
    """
    rng = np.random.default_rng(seed)
    objects = []
    for n in rng.integers(0, FLEET_OBJECTS, size=count):
        key = f"obj-{n}"
        holders = place(f"bench/{key}", cluster_map, K, M).nodes
        lost = holders[int(n) % (K + M)]
        found = tuple("" if node == lost else node for node in holders)
        version = ObjectVersion(
            "bench", key, "g1", "coded", 4 << 20, "zfec", K, M, 1 << 20, 1, holders, K + M - 1, K + M - 1,
            found_at=found, answered=frozenset(found) - {""},
        )  # fmt: skip
        objects.append((version, lost))
    out = {lost for _, lost in objects}
    after = ClusterMap(
        cluster_map.epoch + 1, tuple(replace(n, state="out") if n.id in out else n for n in cluster_map.nodes)
    )
    return [(version, after) for version, _ in objects]


def run_planning(*, nodes: int, sample: int) -> dict[str, Any]:
    """Time the scan's pure planning per object on a synthetic index; extrapolate to 100 million objects."""
    index = synthetic_index(fleet_map(nodes), sample)
    timings = {"checkers": 0.0, "repairer": 0.0, "plan_object": 0.0}
    rebuilt = 0
    for version, cluster_map in index:
        started = time.process_time()
        for _ in range(K + M):  # every holder asks whether it is a checker
            checkers(version.locations, cluster_map, M)
        middle = time.process_time()
        for _ in range(M + 1):  # every checker asks who acts
            repairer(version, cluster_map)
        planned = time.process_time()
        plan = plan_object(version, cluster_map)  # the repairer plans
        timings["checkers"] += middle - started
        timings["repairer"] += planned - middle
        timings["plan_object"] += time.process_time() - planned
        rebuilt += len(plan.rebuild)
    per_object = sum(timings.values()) / sample
    return {
        "plan_nodes": nodes,
        "plan_sample_objects": sample,
        "plan_fragments_rebuilt_in_sample": rebuilt,
        "plan_cpu_ms_per_object": 1e3 * per_object,
        "plan_cpu_ms_per_object_by_step": {name: 1e3 * t / sample for name, t in timings.items()},
        "plan_objects_per_second_one_core": 1 / per_object,
        "plan_fleet_objects": FLEET_OBJECTS,
        "plan_fleet_cpu_hours_extrapolated": per_object * FLEET_OBJECTS / 3600,
        "plan_fleet_minutes_per_node_extrapolated": per_object * FLEET_OBJECTS / nodes / 60,
    }


# ---------------------------------------------------------------------------------------------- placement


def run_placement(*, nodes: int, placements: int) -> dict[str, Any]:
    """Fragments per node, and what one join moves, for ``placements`` objects of 4+2 over ``nodes`` nodes.

    A join moves one fragment of each object whose HRW score for the newcomer beats the lowest of its
    ``k+m`` winners (``plan_moves`` moves just that one); averaged over :data:`JOINS` newcomers tried one
    at a time, since one join moves only about ``1/N`` of the fragments.
    """
    ids = node_ids(nodes)
    newcomers = [f"joining-{j}" for j in range(JOINS)]
    width = K + M
    counts = np.zeros(nodes, dtype=np.int64)
    moved = 0
    for start in range(0, placements, BALANCE_CHUNK):
        keys = [f"bench/obj-{i}" for i in range(start, min(start + BALANCE_CHUNK, placements))]
        scores = hrw_score_matrix(keys, ids)
        winners = np.argpartition(scores, -width, axis=1)[:, -width:]
        counts += np.bincount(winners.ravel(), minlength=nodes)
        lowest_winner = np.take_along_axis(scores, winners, axis=1).min(axis=1)
        moved += int((hrw_score_matrix(keys, newcomers) > lowest_winner[:, None]).sum())
        if start == 0:  # the counting is placement itself
            cmap = ClusterMap(1, tuple(Node(i) for i in ids))
            for key, row in list(zip(keys, winners, strict=True))[:20]:
                assert set(place(key, cmap, K, M).nodes) == {ids[p] for p in row}
    spread = balance(counts)
    moved_fraction = moved / JOINS / (placements * width)
    return {
        "placement_nodes": nodes,
        "placement_objects": placements,
        "fragments_per_node_mean": spread.mean,
        "fragments_per_node_max_over_mean": spread.max_over_mean,
        "fragments_per_node_min_over_mean": spread.min_over_mean,
        "fragments_per_node_sd_over_binomial": spread.sd_over_binomial,
        "fragments_per_node_max_deviation_projected_at_fleet": expected_extreme(FLEET_OBJECTS * width / nodes, nodes),
        "join_newcomers_tried": JOINS,
        "join_moved_fraction": moved_fraction,
        "join_ideal_fraction": 1 / (nodes + 1),
        "join_moved_over_ideal": moved_fraction * (nodes + 1),
    }


# ---------------------------------------------------------------------------------------------- report

ROWS: tuple[tuple[str, str, float | None, bool], ...] = (
    ("nodes_registered", "nodes that got a map", float(FLEET_NODES), False),
    ("nodes_in_map", "nodes in the controller's map", None, False),
    ("heartbeats_answered_per_second", "heartbeats answered / s (steady)", None, False),
    ("controller_cpu_us_per_heartbeat", "controller CPU per heartbeat, us", CPU_GOAL_US, True),
    ("controller_cores_for_10000_nodes", "controller cores, 10,000 nodes at 1/s", 0.5, True),
    ("heartbeat_latency_p50_ms", "heartbeat latency p50, ms", 10.0, True),
    ("heartbeat_latency_p99_ms", "heartbeat latency p99, ms", 100.0, True),
    ("epoch_changes_seen_in_steady_phase", "epochs changed in the steady phase", 0.0, True),
    ("map_bytes_on_wire", "cluster map as sent, bytes", float(protocol.MAX_HEADER_BYTES), True),
    ("change_reply_bytes_p50", "reply bringing the drain, p50, bytes", None, True),
    ("fanout_bytes_per_change", "bytes sent for one change (drain)", None, True),
    (
        "map_bytes_at_10000_nodes_projected",
        "map at 10,000 nodes, bytes (proj.)",
        float(protocol.MAX_HEADER_BYTES),
        True,
    ),
    ("fanout_p50_seconds", "new epoch reaches nodes, p50, s", 1.0, True),
    ("fanout_max_seconds", "new epoch reaches nodes, max, s", 2.0, True),
    ("plan_cpu_ms_per_object", "repair planning CPU per object, ms", None, True),
    ("plan_objects_per_second_one_core", "repair planning, objects / s / core", None, False),
    ("plan_fleet_minutes_per_node_extrapolated", "scan of 1e8 objects, min per node (extr.)", 10.0, True),
    ("fragments_per_node_max_over_mean", "fragments per node, max / mean", None, True),
    ("fragments_per_node_min_over_mean", "fragments per node, min / mean", None, False),
    ("fragments_per_node_sd_over_binomial", "spread / a random placement's", 1.1, True),
    ("fragments_per_node_max_deviation_projected_at_fleet", "max deviation at 1e8 objects (proj.)", 0.05, True),
    ("join_moved_over_ideal", "one join moves, x the ideal 1/(N+1)", 1.1, True),
)
"""(name, what it is, goal, whether lower is better) of each figure printed; goal None: shown for the record.
Goals: the controller of a 10,000-node fleet heartbeating once a second on half a core; a map that fits
a header (``MAX_HEADER_BYTES``); a new epoch everywhere within one heartbeat (p50) and two (max); a scan
planned within the out-interval (10 min); every node within 5 % of the mean at the fleet's 1e8 objects."""


def machine() -> str:
    """Cores, architecture, kernel and Python of this machine."""
    return (
        f"{os.cpu_count()} cores ({platform.machine()}), {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}"
    )


def verdict(value: float, goal: float | None, lower_is_better: bool) -> str:
    """``met``, ``NOT met`` or ``-`` (no goal) for one figure."""
    if goal is None:
        return "-"
    if math.isnan(value):
        return "NOT met"
    return "met" if (value <= goal if lower_is_better else value >= goal) else "NOT met"


def report(figures: dict[str, Any]) -> None:
    """Print every figure beside its goal."""
    print(f"bench_scale: {figures['nodes_simulated']} simulated nodes, EC {K}+{M}; machine: {figures['machine']}")
    print(f"{'figure':<44}{'value':>14}  {'goal':>14}  verdict")
    for name, label, goal, lower in ROWS:
        value = float(figures[name])
        shown_goal = "-" if goal is None else f"{'<=' if lower else '>='} {goal:g}"
        print(f"{label:<44}{value:>14.4g}  {shown_goal:>14}  {verdict(value, goal, lower)}")
    settled = "settled" if figures["settled_before_steady_phase"] else "NOT settled (the steady phase measures a storm)"
    print(
        f"warm-up: {figures['warmup_seconds']:.0f} s, {settled}; "
        f"controller suspect_after {figures['suspect_after_seconds']:g} s; heartbeats unanswered in the steady phase: "
        f"{figures['heartbeats_unanswered_in_steady_phase']}; CPU of the fleet's processes "
        f"{figures['fleet_processes_cpu_seconds_per_second']:.2f} cores"
    )
    if not figures["fanout_drain_answered"]:
        print(f"fan-out: the drain was not answered within {figures['fanout_window_seconds']:g} s")
    if figures["refusals"]:
        print(f"heartbeats refused or not sent, by code: {figures['refusals']}")
    taken = "as the changes since their own map" if figures["nodes_take_deltas"] else "as whole maps (--whole-maps)"
    print(
        f"fan-out: {figures['fanout_nodes_reached']} of {figures['nodes_registered']} registered nodes saw the new "
        f"epoch within {figures['fanout_window_seconds']:g} s, {taken}; a whole map goes out at "
        f"{figures['map_bytes_per_second_at_full_fanout'] / 1e6:.0f} MB/s when every node needs it"
    )
    steps = ", ".join(f"{name} {ms:.2f} ms" for name, ms in figures["plan_cpu_ms_per_object_by_step"].items())
    print(
        f"repair planning: EXTRAPOLATED from {figures['plan_sample_objects']} objects at {figures['plan_nodes']} "
        f"nodes ({steps}): {figures['plan_fleet_cpu_hours_extrapolated']:.0f} CPU-hours for {FLEET_OBJECTS:.0e} objects"
    )
    print(
        f"placement: {figures['placement_objects']} objects over {figures['placement_nodes']} nodes, "
        f"{figures['fragments_per_node_mean']:.0f} fragments per node on average"
    )


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark from the command line."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=10_000, help="simulated nodes (default 10000)")
    parser.add_argument("--processes", type=int, default=4, help="processes that simulate them (default 4)")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between heartbeats (default 1.0)")
    parser.add_argument("--seconds", type=float, default=30.0, help="length of the steady phase (default 30)")
    parser.add_argument(
        "--warmup",
        type=float,
        default=0.0,
        help="most seconds to wait for the fleet to settle (default: 6 per 1000 nodes)",
    )
    parser.add_argument(
        "--suspect-after",
        type=float,
        default=30.0,
        help="the controller's suspect_after (default 30; the product's is 3): see the module docstring",
    )
    parser.add_argument("--plan-sample", type=int, default=60, help="objects planned (default 60)")
    parser.add_argument("--placements", type=int, default=100_000, help="objects placed (default 100000)")
    parser.add_argument(
        "--whole-maps", action="store_true", help="the nodes never ask for map deltas (as agents before them)"
    )
    parser.add_argument("--quick", action="store_true", help="1000 nodes, an 8 s steady phase, 50000 placements")
    parser.add_argument("--json-out", default=None, help="also write the figures as JSON to this file")
    args = parser.parse_args(argv)
    if args.quick:
        args.nodes, args.seconds, args.placements = min(args.nodes, 1000), min(args.seconds, 8.0), 50_000
    figures: dict[str, Any] = {"machine": machine(), "command": " ".join(sys.argv)}
    try:
        figures |= run_fleet(
            nodes=args.nodes,
            processes=args.processes,
            interval=args.interval,
            seconds=args.seconds,
            suspect_after=args.suspect_after,
            warmup=args.warmup,
            deltas=not args.whole_maps,
        )
    except HCStoreError as exc:
        print(f"bench_scale: the controller failed: {exc}", file=sys.stderr)
        return 1
    figures |= run_planning(nodes=args.nodes, sample=args.plan_sample)
    figures |= run_placement(nodes=args.nodes, placements=args.placements)
    report(figures)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
