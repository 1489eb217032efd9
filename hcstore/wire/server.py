"""The serving side of a ROUTER socket, shared by the agent and the controller."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import zmq


def answer_pending(socket: zmq.Socket, handle: Callable[[list[Any]], list[Any]]) -> None:
    """Answer every request waiting on a ROUTER socket with ``handle(frames)``, without blocking."""
    while True:
        try:
            frames = socket.recv_multipart(zmq.NOBLOCK, copy=False)
        except zmq.Again:
            return
        socket.send_multipart(handle(frames), copy=False)
