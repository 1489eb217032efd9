"""Small pieces shared by the agent and the controller processes."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
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


def write_json_atomic(path: Path, data: dict[str, Any], *, indent: int | None = None) -> None:
    """Replace ``path`` with ``data`` as JSON: readers see the old file or the new one, never a mix."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=indent))
    os.replace(tmp, path)
