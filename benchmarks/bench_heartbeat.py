"""The controller's CPU per heartbeat, in-process: ``Controller.handle`` on a fixed clock, no sockets.

    python benchmarks/bench_heartbeat.py [--nodes 1000,4096,10000,16384] [--heartbeats 400]

For each map size, a controller (insecure, no metrics endpoint) registers that many nodes, then answers
``--heartbeats`` heartbeats of each kind, timed together and divided:

- from a node that holds the current map (the steady state);
- from a node one epoch behind (one node drained) that asks for the changes since (a delta);
- from a node one epoch behind that takes whole maps (an agent from before deltas, or one without a map), as a
  compressed bulk frame;
- from a node beyond ``MAX_MAP_NODES`` when the map is full (refused);

and, once, what a new epoch costs the first request that needs the map (a ``get_map``): the map encoded, its
digest, and compressed as a bulk frame. The controller does that once per epoch, not per reply, so it is left
out of the per-heartbeat figures and has no goal.

Each figure is printed beside the goal of ``bench_scale.py`` (10,000 nodes at one heartbeat a second on
half a core: 50 µs). The fixed clock means no node ages and no tick runs: what is measured is the
heartbeat path alone, which the fleet runs of ``bench_scale.py`` measure with sockets and contention.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from bench_scale import CPU_GOAL_US, heartbeat_fields, node_ids  # this folder: run as a script

from hcstore.config import ControllerConfig
from hcstore.control.controller import Controller
from hcstore.wire import protocol

NEW_EPOCH = "new epoch, first map"


def per_heartbeat_us(controller: Controller, fleet: list[dict[str, Any]], epoch: int, **extra: Any) -> float:
    """Microseconds of ``controller.handle`` per heartbeat, one from each node of ``fleet`` (their fields)."""
    messages = [
        [b"peer", *protocol.request_frames("heartbeat", i, epoch, {**fields, **extra})]
        for i, fields in enumerate(fleet)
    ]
    started = time.perf_counter()
    for frames in messages:
        controller.handle(frames)
    return (time.perf_counter() - started) / len(fleet) * 1e6


def measure(nodes: int, heartbeats: int) -> dict[str, float]:
    """The four figures for a map of ``nodes`` nodes."""
    fleet = [heartbeat_fields(node, i) for i, node in enumerate(node_ids(nodes + heartbeats))]
    members, asking, beyond = fleet[:nodes], fleet[: min(heartbeats, nodes)], fleet[nodes:]
    controller = Controller(ControllerConfig(insecure=True, metrics_port=-1), clock=lambda: 0.0)
    try:
        per_heartbeat_us(controller, members, 0)  # registers them
        controller.table.tick(0.0)
        epoch = controller.table.epoch
        figures = {"current": per_heartbeat_us(controller, asking, epoch, deltas=True)}
        controller.table.set_admin(members[0]["node"], "draining", 0.0)
        started = time.perf_counter()  # the first whole map of the new epoch: encoded, digested, compressed
        controller.handle([b"peer", *protocol.request_frames("get_map", 0, 0, {"framed": True})])
        first_map_us = (time.perf_counter() - started) * 1e6
        figures["behind, delta"] = per_heartbeat_us(controller, asking, epoch, deltas=True)
        figures["behind, whole map"] = per_heartbeat_us(controller, asking, epoch)
        figures[NEW_EPOCH] = first_map_us
        if nodes >= protocol.MAX_MAP_NODES:
            figures["refused, map full"] = per_heartbeat_us(controller, beyond, 0)
        return figures
    finally:
        controller.socket.close(linger=0)
        controller.context.term()


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark from the command line."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--nodes", default=f"1000,4096,10000,{protocol.MAX_MAP_NODES}", help="map sizes, comma-separated"
    )
    parser.add_argument("--heartbeats", type=int, default=400, help="heartbeats of each kind (default 400)")
    args = parser.parse_args(argv)
    print(f"{'nodes':>6}  {'heartbeat':<23}{'µs each':>10}  goal")
    for nodes in (int(n) for n in args.nodes.split(",")):
        for kind, us in measure(nodes, args.heartbeats).items():
            verdict = "met" if us <= CPU_GOAL_US else "not met"
            goal = f"<= {CPU_GOAL_US:g} µs ({verdict})" if kind != NEW_EPOCH else "once per epoch"
            print(f"{nodes:>6}  {kind:<23}{us:>10.0f}  {goal}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
