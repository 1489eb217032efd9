"""The serving side of a ROUTER socket: replies now, replies later through the outbox, replies kept for slow peers."""

from __future__ import annotations

import threading
import time

import pytest
import zmq

from hcstore.wire.server import Outbox, Replies, answer_pending

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
    outbox, replies = Outbox(), Replies(router)
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
        taken += answer_pending(replies, handle)
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
    assert outbox.flush(replies) == 2
    assert [dealer.recv(), dealer.recv()] == [b"slow-2 done", b"slow-1 done"]
    assert poller.poll(0) == []  # drained: no wake-up left behind
    outbox.close()


def test_answer_pending_stops_at_its_limit(pair):
    router, dealer = pair
    replies = Replies(router)
    for n in range(5):
        dealer.send(b"%d" % n)
    assert router.poll(WAIT_MS)
    answered: list[bytes] = []

    def handle(frames: list) -> list:
        answered.append(frames[1].bytes)
        return [frames[0], b"ok"]

    while len(answered) < 5:
        before = len(answered)
        assert answer_pending(replies, handle, limit=2) <= 2
        assert len(answered) - before <= 2
    assert answered == [b"0", b"1", b"2", b"3", b"4"]


def _slow_pair(context: zmq.Context, name: str, hwm: int) -> tuple[zmq.Socket, zmq.Socket, bytes]:
    """A ROUTER and a DEALER whose queues between them hold only a few messages; the DEALER's routing id."""
    router, dealer = context.socket(zmq.ROUTER), context.socket(zmq.DEALER)
    for sock in (router, dealer):
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RCVTIMEO, WAIT_MS)
        sock.setsockopt(zmq.SNDHWM, hwm)
        sock.setsockopt(zmq.RCVHWM, hwm)
    dealer.setsockopt(zmq.ROUTING_ID, b"slow-peer")
    router.bind(f"inproc://{name}")
    dealer.connect(f"inproc://{name}")
    dealer.send(b"hello")  # the ROUTER learns the peer
    assert router.recv_multipart()[0] == b"slow-peer"
    return router, dealer, b"slow-peer"


def _read_all(dealer: zmq.Socket, replies: Replies) -> list[bytes]:
    """What reaches the DEALER while the serving side keeps retrying, as its serving loop does."""
    received: list[bytes] = []
    deadline = time.monotonic() + WAIT_MS / 1000
    quiet_since = time.monotonic()
    while time.monotonic() < deadline and time.monotonic() - quiet_since < 0.5:
        replies.retry()
        if dealer.poll(5):
            received.append(dealer.recv())
            quiet_since = time.monotonic()
    return received


@pytest.fixture
def context():
    context = zmq.Context()
    yield context
    context.destroy(linger=0)


def test_replies_past_a_slow_peers_queue_wait_and_arrive_in_order(context):
    router, dealer, peer = _slow_pair(context, "slow-in-order", hwm=2)
    replies = Replies(router)
    for n in range(50):
        replies.send([peer, b"%d" % n])
    assert replies.waiting > 0  # the peer's queue is full: ZeroMQ alone would have dropped these
    received = _read_all(dealer, replies)
    assert received == [b"%d" % n for n in range(50)]
    assert replies.waiting == 0
    assert replies.dropped == 0


def test_a_peer_that_reads_nothing_keeps_only_its_newest_replies(context):
    router, dealer, peer = _slow_pair(context, "slow-bounded", hwm=2)
    replies = Replies(router, max_replies=3)
    for n in range(50):
        replies.send([peer, b"%d" % n])
    assert replies.waiting == 3
    assert replies.overflowed == replies.dropped > 0
    received = _read_all(dealer, replies)
    assert len(received) + replies.dropped == 50  # every reply either arrived or was counted as dropped
    assert received[-3:] == [b"47", b"48", b"49"]  # the waiting ones were the newest
    assert received == sorted(received, key=int)


def test_a_peer_over_its_byte_bound_keeps_its_newest_reply(context):
    router, dealer, peer = _slow_pair(context, "slow-bytes", hwm=1)
    replies = Replies(router, max_bytes=1000)
    for n in range(20):
        replies.send([peer, b"%02d" % n + b"x" * 598])
    assert replies.waiting == 1  # two would pass the bound; one always stays, however large
    assert _read_all(dealer, replies)[-1][:2] == b"19"


def test_a_reply_to_a_peer_that_is_gone_is_dropped_not_raised(context):
    router, _, _ = _slow_pair(context, "gone", hwm=2)
    replies = Replies(router)
    replies.send([b"nobody", b"reply"])
    assert (replies.waiting, replies.dropped) == (0, 1)
