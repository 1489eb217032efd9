"""The serving side of a ROUTER socket, shared by the agent and the controller.

:func:`answer_pending` answers what waits on the socket; a handler that hands
slow work to other threads returns ``None`` and those threads post the reply to
an :class:`Outbox`, which the serving thread (the only one that may touch the
socket: ZeroMQ sockets are not thread-safe) sends when its poller wakes it.
:func:`peer_of` names who sent a message, for limits kept per client.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

import zmq

UNKNOWN_PEER = "unknown"
_PEER_PROPERTIES = ("User-Id", "Peer-Address")


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


def answer_pending(
    socket: zmq.Socket[bytes], handle: Callable[[list[Any]], list[Any] | None], *, limit: int = 0
) -> int:
    """Answer requests waiting on a ROUTER socket with ``handle(frames)``, without blocking.

    Args:
        socket: the ROUTER socket.
        handle: returns the reply frames, or ``None`` when the reply will be sent later.
        limit: stop after this many requests (0: until none waits), so other work gets a turn.

    Returns:
        How many requests were taken.
    """
    taken = 0
    while not limit or taken < limit:
        try:
            frames = socket.recv_multipart(zmq.NOBLOCK, copy=False)
        except zmq.Again:
            break
        taken += 1
        reply = handle(frames)
        if reply is not None:
            socket.send_multipart(reply, copy=False)
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

    def flush(self, socket: zmq.Socket[bytes]) -> int:
        """Send every queued reply on ``socket`` (serving thread only); returns how many."""
        try:
            os.read(self._wake_read, 64)
        except BlockingIOError:
            pass
        with self._lock:
            replies, self._replies = self._replies, deque()
            self._woken = False
        for frames in replies:
            socket.send_multipart(frames, copy=False)
        return len(replies)

    def close(self) -> None:
        """Release the wake-up pipe."""
        os.close(self._wake_read)
        os.close(self._wake_write)
