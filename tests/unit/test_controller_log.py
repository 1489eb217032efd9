"""The controller's log line for a new epoch names a few changed nodes and counts the rest: at fleet size it
stays a line, not the state of every node."""

from __future__ import annotations

from hcstore.config import ControllerConfig
from hcstore.control.controller import LOGGED_CHANGES, Controller
from hcstore.wire import protocol


def test_a_new_epoch_is_logged_as_its_changes_and_counts():
    now = [0.0]
    controller = Controller(ControllerConfig(insecure=True, metrics_port=-1), clock=lambda: now[0])
    try:
        for i in range(300):
            fields = {"node": f"n{i:03d}", "endpoint": "tcp://127.0.0.1:7700", "labels": {}, "weight": 1.0}
            controller.handle([b"peer", *protocol.request_frames("heartbeat", i, 0, fields)])
        assert controller.table.tick(now[0])
        assert controller._changes_since(0) == "300 nodes: 300 alive"
        before = controller.table.epoch
        controller.table.set_admin("n007", "draining", now[0])
        assert controller._changes_since(before) == "n007 draining; 300 nodes: 299 alive, 1 draining"
        before = controller.table.epoch
        now[0] += controller.table.intervals.suspect_after + 1  # nobody heartbeats: all suspect
        assert controller.table.tick(now[0])
        line = controller._changes_since(before)
        assert line.count(" suspect,") == LOGGED_CHANGES and f"{299 - LOGGED_CHANGES} more" in line
        assert line.endswith("300 nodes: 1 draining, 299 suspect") and len(line) < 1000
    finally:
        controller.socket.close(linger=0)
        controller.context.term()


def test_get_map_from_a_held_epoch_carries_the_changes_which_give_the_whole_map():
    from hcstore.control.client import _changed
    from placement import ClusterMap

    controller = Controller(ControllerConfig(insecure=True, metrics_port=-1), clock=lambda: 0.0)

    def get_map(epoch: int, **fields: object) -> dict:
        frames = controller.handle([b"peer", *protocol.request_frames("get_map", 1, epoch, dict(fields))])
        return protocol.decode_reply(frames[1:]).unwrap().header

    try:
        for i in range(50):
            fields = {"node": f"n{i:03d}", "endpoint": "tcp://127.0.0.1:7700", "labels": {}, "weight": 1.0}
            controller.handle([b"peer", *protocol.request_frames("heartbeat", i, 0, fields)])
        controller.table.tick(0.0)
        held = ClusterMap.from_dict(get_map(0)["map"])
        controller.table.set_admin("n007", "draining", 0.0)
        reply = get_map(held.epoch, deltas=True)
        assert "map" not in reply and len(reply["delta"]["nodes"]) == 1
        assert _changed(held, reply) == ClusterMap.from_dict(get_map(0)["map"])
        assert _changed(held, {**reply, "digest": b"another map"}) is None  # then the whole map is asked for
        assert _changed(held, {**reply, "delta": {"base": "x"}}) is None
        assert "map" in get_map(held.epoch)  # without `deltas`: whole, as before
        assert "map" in get_map(controller.table.epoch, deltas=True)  # nothing to change: whole
    finally:
        controller.socket.close(linger=0)
        controller.context.term()
