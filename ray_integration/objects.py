"""Values in and out of hcstore through a process-wide client (one per controller and settings)."""

from __future__ import annotations

import threading
from typing import Any

from hcstore.client.client import Client
from hcstore.client.reader import read_range
from hcstore.client.writer import PutResult
from ray_integration.values import byte_view, decode, empty_for, encode

_clients: dict[tuple[str, tuple[tuple[str, Any], ...]], Client] = {}
_lock = threading.Lock()


def client_for(controller: str, settings: tuple[tuple[str, Any], ...] = ()) -> Client:
    """This process's client of the cluster whose controller is at ``controller`` (made once)."""
    key = (controller, settings)
    with _lock:
        client = _clients.get(key)
        if client is None:
            client = _clients[key] = Client(controller, **dict(settings))
        return client


def write_value(client: Client, bucket: str, key: str, value: Any) -> PutResult:
    """Store a value (bytes, numpy array, or anything picklable) as the object's new version."""
    buffer, meta = encode(value)
    return client.put(bucket, key, buffer, meta=meta)


def read_value(client: Client, bucket: str, key: str) -> Any:
    """The value stored at ``bucket/key``; numpy arrays are decoded straight into a fresh array.

    Raises:
        ObjectNotFound: no such object.
    """
    version = client.resolve(bucket, key)
    array = empty_for(version.meta, version.size)
    read_range(client, version, 0, version.size, byte_view(array))
    return decode(version.meta, array)
