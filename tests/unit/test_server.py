"""The serving side of a ROUTER socket: replies now, replies later through the outbox."""

from __future__ import annotations

import threading

import pytest
import zmq

from hcstore.wire.server import Outbox, answer_pending

WAIT_MS = 5000


@pytest.fixture
def pair():
    """A ROUTER and a DEALER connected over inproc."""
    context = zmq.Context()
    router, dealer = context.socket(zmq.ROUTER), context.socket(zmq.DEALER)
    for sock in (router, dealer):
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RCVTIMEO, WAIT_MS)
    router.bind("inproc://server-test")
    dealer.connect("inproc://server-test")
    yield router, dealer
    router.close()
    dealer.close()
    context.term()


def test_deferred_replies_leave_through_the_outbox_in_completion_order(pair):
    router, dealer = pair
    outbox = Outbox()
    later: list[list] = []

    def handle(frames: list) -> list | None:
        body = frames[1].bytes
        if body.startswith(b"slow"):
            later.append([frames[0], body + b" done"])
            return None
        return [frames[0], body + b" now"]

    for body in (b"slow-1", b"fast", b"slow-2"):
        dealer.send(body)
    assert router.poll(WAIT_MS)
    taken = 0
    while taken < 3:
        taken += answer_pending(router, handle)
    assert dealer.recv() == b"fast now"

    poller = zmq.Poller()
    poller.register(outbox.fileno(), zmq.POLLIN)
    assert poller.poll(0) == []
    workers = [threading.Thread(target=outbox.put, args=(frames,)) for frames in reversed(later)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert poller.poll(WAIT_MS) == [(outbox.fileno(), zmq.POLLIN)]
    assert outbox.flush(router) == 2
    assert [dealer.recv(), dealer.recv()] == [b"slow-2 done", b"slow-1 done"]
    assert poller.poll(0) == []  # drained: no wake-up left behind
    outbox.close()


def test_answer_pending_stops_at_its_limit(pair):
    router, dealer = pair
    for n in range(5):
        dealer.send(b"%d" % n)
    assert router.poll(WAIT_MS)
    answered: list[bytes] = []

    def handle(frames: list) -> list:
        answered.append(frames[1].bytes)
        return [frames[0], b"ok"]

    while len(answered) < 5:
        before = len(answered)
        assert answer_pending(router, handle, limit=2) <= 2
        assert len(answered) - before <= 2
    assert answered == [b"0", b"1", b"2", b"3", b"4"]
