"""Values in and out of hcstore through a process-wide client (one per controller and settings)."""

from __future__ import annotations

import os
import threading
from typing import Any

import ray

from hcstore.client.client import Client
from hcstore.client.reader import read_range
from hcstore.client.writer import PutResult
from hcstore.security.curve import Credentials
from ray_integration.lookup import credentials as deployment_credentials
from ray_integration.values import byte_view, decode, empty_for, encode

_clients: dict[tuple[str, tuple[tuple[str, Any], ...]], Client] = {}
_lock = threading.Lock()


def client_for(
    controller: str,
    settings: tuple[tuple[str, Any], ...] = (),
    *,
    credentials: tuple[Credentials, str] | None = None,
) -> Client:
    """This process's client of the cluster whose controller is at ``controller`` (made once).

    Its keys: ``credentials`` (this process's key pair and the controller's public key) if given,
    else a key named by ``HCSTORE_KEY``, else (inside a Ray job) the deployment's client key,
    handed over by the controller actor through Ray.
    """
    key = (controller, settings)
    with _lock:
        client = _clients.get(key)
        if client is None:
            credentials = credentials or job_credentials()
            client = _clients[key] = Client(controller, credentials=credentials, **dict(settings))
        return client


def job_credentials() -> tuple[Credentials, str] | None:
    """Inside a Ray job with no ``HCSTORE_KEY`` set: the deployment's client key and the controller's
    public key, handed over by the controller actor through Ray; else None (found as usual)."""
    if os.environ.get("HCSTORE_KEY") or not ray.is_initialized():
        return None
    result: tuple[Credentials, str] = deployment_credentials("client")
    return result


def write_value(client: Client, bucket: str, key: str, value: Any, *, allow_pickle: bool = False) -> PutResult:
    """Store a value as the object's new version (see :mod:`ray_integration.values`).

    Bytes, numpy arrays and Arrow tables are stored as data; any other value only with
    ``allow_pickle``, pickled and signed with the cluster secret (asked of the controller once).

    Raises:
        UnsupportedValue: a value that needs pickle, and ``allow_pickle`` is False.
        InvalidRequest: ``allow_pickle``, and the controller has no cluster secret.
    """
    buffer, meta = encode(value, allow_pickle=allow_pickle, secret=client.cluster_secret, bucket=bucket, key=key)
    return client.put(bucket, key, buffer, meta=meta)


def read_value(client: Client, bucket: str, key: str, *, allow_pickle: bool = False) -> Any:
    """The value stored at ``bucket/key``; numpy arrays are decoded straight into a fresh array.

    A pickled value is unpickled only with ``allow_pickle``, and only when its MAC verifies
    under the cluster secret (asked of the controller once).

    Raises:
        ObjectNotFound: no such object.
        UntrustedValue: a pickle not allowed, unsigned, or whose MAC does not verify; nothing is unpickled.
        InvalidRequest: metadata that does not describe the object (a lying dtype or shape).
    """
    version = client.resolve(bucket, key, fewest=True)
    array = empty_for(version.meta, version.size, allow_pickle=allow_pickle, bucket=bucket, key=key)
    read_range(client, version, 0, version.size, byte_view(array))
    return decode(version.meta, array, allow_pickle=allow_pickle, secret=client.cluster_secret, bucket=bucket, key=key)
