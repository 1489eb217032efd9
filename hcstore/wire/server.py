"""The serving side of a ROUTER socket, shared by the agent and the controller.

:func:`answer_pending` answers what waits on the socket; a handler that hands
slow work to other threads returns ``None`` and those threads post the reply to
an :class:`Outbox`, which the serving thread (the only one that may touch the
socket: ZeroMQ sockets are not thread-safe) sends when its poller wakes it.
Every reply leaves through :class:`Replies`, which keeps a reply that a slow
peer's queue cannot take yet instead of letting ZeroMQ drop it.
:func:`peer_of` names who sent a message, for limits kept per client.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

import zmq

log = logging.getLogger(__name__)
UNKNOWN_PEER = "unknown"
_PEER_PROPERTIES = ("User-Id", "Peer-Address")
WAITING_REPLIES = 1024  # replies kept per peer whose queue is full, before its oldest are dropped
WAITING_BYTES = 256 << 20  # and bytes
RETRY_MS = 5  # how soon a serving loop tries again the replies that wait for a slow peer's queue
IDLE_POLL_MS = 100  # the longest a serving loop waits for a request: stop() takes effect within it


def peer_of(frame: Any) -> str:
    """Who sent a received frame (any frame of the message): the authenticated user id when there is one
    (CURVE authentication sets it to the client's z85 public key), else the TCP peer's IP address, else
    ``"unknown"`` (an in-process transport, or a frame received with ``copy=True``, carries neither)."""
    for name in _PEER_PROPERTIES:
        try:
            value = frame.get(name)
        except (zmq.ZMQError, AttributeError, KeyError, TypeError, ValueError, UnicodeDecodeError):
            continue  # the property is not set on this frame (libzmq answers EINVAL)
        if value:
            return str(value)
    return UNKNOWN_PEER


class Replies:
    """Sends replies on a ROUTER socket, never dropping one for a peer that is only slow to read.

    ZeroMQ queues at most ``SNDHWM`` messages per peer and silently drops a ROUTER's
    messages past that. Here the socket is made ``ROUTER_MANDATORY``, so a full queue is
    reported instead: the reply waits in this object, behind that peer's earlier replies
    (a peer receives its replies in the order they were sent), and :meth:`retry` sends it
    once the queue has room. Serving thread only, like the socket.

    Two kinds of reply are dropped: one to a peer that is gone (no connection could
    receive it), and the oldest of a peer that has more than ``max_replies`` or
    ``max_bytes`` waiting (it reads none of them; memory stays bounded). Both are logged.
    """

    def __init__(
        self, socket: zmq.Socket[bytes], *, max_replies: int = WAITING_REPLIES, max_bytes: int = WAITING_BYTES
    ) -> None:
        socket.setsockopt(zmq.ROUTER_MANDATORY, 1)
        self.socket = socket
        self.max_replies = max_replies
        self.max_bytes = max_bytes
        self.dropped = 0  # replies dropped: to a peer that is gone, or over a slow peer's bounds
        self.overflowed = 0  # of those, over a slow peer's bounds
        self.waiting = 0  # replies waiting for room in their peer's queue (read from any thread)
        self._waiting: dict[bytes, deque[list[Any]]] = {}  # by routing id
        self._bytes: dict[bytes, int] = {}

    def send(self, frames: list[Any]) -> None:
        """Send a reply ``[routing id, ...]`` now, or keep it until its peer's queue has room."""
        peer = bytes(frames[0])
        queue = self._waiting.get(peer)
        if queue is None and self._sent(frames):
            return
        if queue is None:
            queue = self._waiting[peer] = deque()
            self._bytes[peer] = 0
        queue.append(frames)
        self._bytes[peer] += _size_of(frames)
        self.waiting += 1
        while len(queue) > self.max_replies or (self._bytes[peer] > self.max_bytes and len(queue) > 1):
            self._bytes[peer] -= _size_of(queue.popleft())
            self.waiting -= 1
            self.dropped += 1
            self.overflowed += 1
            if self.overflowed % 1000 == 1:  # a log line now and then, not one per reply
                log.warning(
                    "a peer reads none of its %d waiting replies: its oldest are dropped (%d so far)",
                    len(queue),
                    self.overflowed,
                )

    def retry(self) -> None:
        """Send what waits, in order per peer, until each peer's queue is full again."""
        for peer in list(self._waiting):
            queue = self._waiting[peer]
            while queue and self._sent(queue[0]):
                self._bytes[peer] -= _size_of(queue.popleft())
                self.waiting -= 1
            if not queue:
                del self._waiting[peer], self._bytes[peer]

    def _sent(self, frames: list[Any]) -> bool:
        """Try to send ``frames``: True when sent, or dropped because the peer is gone; False when its queue is full."""
        try:
            self.socket.send_multipart(frames, zmq.NOBLOCK, copy=False)
        except zmq.Again:
            return False
        except zmq.ZMQError as exc:
            if exc.errno != errno.EHOSTUNREACH:
                raise
            self.dropped += 1  # no connection could receive it
        return True


def _size_of(frames: list[Any]) -> int:
    return sum(memoryview(frame).nbytes for frame in frames)


def answer_pending(replies: Replies, handle: Callable[[list[Any]], list[Any] | None], *, limit: int = 0) -> int:
    """Answer requests waiting on a ROUTER socket with ``handle(frames)``, without blocking.

    Args:
        replies: the ROUTER socket's :class:`Replies`, which the requests are read from and answered through.
        handle: returns the reply frames, or ``None`` when the reply will be sent later.
        limit: stop after this many requests (0: until none waits), so other work gets a turn.

    Returns:
        How many requests were taken.
    """
    taken = 0
    while not limit or taken < limit:
        try:
            frames = replies.socket.recv_multipart(zmq.NOBLOCK, copy=False)
        except zmq.Again:
            break
        taken += 1
        reply = handle(frames)
        if reply is not None:
            replies.send(reply)
    return taken


class Outbox:
    """Replies finished on worker threads, waiting for the serving thread to send them.

    Register :meth:`fileno` with the serving thread's ``zmq.Poller`` (which then
    reports that descriptor); when it is readable, call :meth:`flush`.
    """

    def __init__(self) -> None:
        self._wake_read, self._wake_write = os.pipe()
        os.set_blocking(self._wake_read, False)
        os.set_blocking(self._wake_write, False)
        self._lock = threading.Lock()
        self._replies: deque[list[Any]] = deque()
        self._woken = False

    def fileno(self) -> int:
        """The descriptor that becomes readable when replies are waiting."""
        return self._wake_read

    def put(self, frames: list[Any]) -> None:
        """Queue a reply (any thread); wakes the serving thread once per batch."""
        with self._lock:
            self._replies.append(frames)
            if not self._woken:
                self._woken = True
                os.write(self._wake_write, b"\0")

    def flush(self, replies: Replies) -> int:
        """Send every queued reply through ``replies`` (serving thread only); returns how many."""
        try:
            os.read(self._wake_read, 64)
        except BlockingIOError:
            pass
        with self._lock:
            queued, self._replies = self._replies, deque()
            self._woken = False
        for frames in queued:
            replies.send(frames)
        return len(queued)

    def close(self) -> None:
        """Release the wake-up pipe."""
        os.close(self._wake_read)
        os.close(self._wake_write)
