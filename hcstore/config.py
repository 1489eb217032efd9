"""Configuration of clients and agents.

Frozen dataclasses with a :meth:`default`. Precedence, documented once here and
in the README: an explicit argument beats an ``HCSTORE_*`` environment variable,
which beats the default. ``ClientConfig.from_env(chunk_size=...)`` applies that
rule; a bad value is an error that names the setting and the value.

Environment variables (``HCSTORE_`` + upper-case field name)::

    HCSTORE_EC=4+2  HCSTORE_CHUNK_SIZE=1048576  HCSTORE_REPLICATE_BELOW=65536
    HCSTORE_WINDOW=8  HCSTORE_READ_BATCH=4  HCSTORE_READ_AHEAD=4  HCSTORE_IO_THREADS=0
    HCSTORE_REQUEST_TIMEOUT=10  HCSTORE_CONNECT_TIMEOUT=0.5  HCSTORE_HEDGE_AFTER=0.5
    HCSTORE_LOCAL_NODE=n1  HCSTORE_CODEC=zfec
    HCSTORE_DURABILITY=commit  HCSTORE_HIGH_WATERMARK=0.9
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, fields
from typing import Any, TypeVar

from hcstore.errors import InvalidRequest

DURABILITY_POLICIES = ("none", "commit", "always")
T = TypeVar("T")


def _coerce(cls: type, name: str, raw: str) -> Any:
    kind = {f.name: f.type for f in fields(cls)}[name]
    try:
        if "float" in str(kind):
            return float(raw)
        if "int" in str(kind):
            return int(raw, 0)
    except ValueError:
        raise InvalidRequest(f"setting HCSTORE_{name.upper()}={raw!r} is not a number") from None
    return raw


def _from_env(cls: type[T], overrides: dict[str, Any]) -> T:
    known = {f.name for f in fields(cls)}
    unknown = set(overrides) - known
    if unknown:
        raise InvalidRequest(f"unknown {cls.__name__} setting(s): {', '.join(sorted(unknown))}")
    values: dict[str, Any] = {}
    for name in known:
        if overrides.get(name) is not None:
            values[name] = overrides[name]
        elif f"HCSTORE_{name.upper()}" in os.environ:
            values[name] = _coerce(cls, name, os.environ[f"HCSTORE_{name.upper()}"])
    return cls(**values)


class _Settings:
    """Shared constructors of the config classes."""

    @classmethod
    def default(cls: type[T]) -> T:
        return cls()

    @classmethod
    def from_env(cls: type[T], **overrides: Any) -> T:
        """Arguments, then ``HCSTORE_*`` variables, then defaults."""
        return _from_env(cls, overrides)


@dataclass(frozen=True)
class ClientConfig(_Settings):
    """How a client writes and reads.

    Attributes:
        ec: erasure-coding scheme ``"K+M"`` for new objects.
        chunk_size: largest chunk of a stripe, in bytes.
        replicate_below: objects smaller than this are replicated ``M+1`` times instead of coded.
        codec: codec for new coded objects (``None``: the fastest installed).
        window: stripes in flight per put (bounds a put's memory to about ``window*(K+M)*chunk_size``).
        read_batch: stripes fetched per read request.
        read_ahead: read requests (batches) in flight per get.
        io_threads: ZeroMQ I/O threads per client process (0: up to 4, one per core).
        request_timeout: seconds to wait for an agent's reply.
        connect_timeout: seconds to wait for a connection before an agent counts as unavailable.
        hedge_after: seconds after which a read that has not answered is also asked of another fragment.
        local_node: the node this client runs on, read first.
    """

    ec: str = "4+2"
    chunk_size: int = 1 << 20
    replicate_below: int = 64 << 10
    codec: str | None = None
    window: int = 8
    read_batch: int = 4
    read_ahead: int = 4
    io_threads: int = 0
    request_timeout: float = 10.0
    connect_timeout: float = 0.5
    hedge_after: float = 0.5
    local_node: str | None = None

    def __post_init__(self) -> None:
        from ec import parse_ec

        try:
            parse_ec(self.ec)
        except ValueError as exc:
            raise InvalidRequest(f"setting ec={self.ec!r}: {exc}") from None
        _positive(self, "chunk_size", "window", "read_batch", "read_ahead", "request_timeout", "connect_timeout", "hedge_after")
        if self.io_threads < 0:
            raise InvalidRequest(f"setting io_threads={self.io_threads} must be >= 0")
        if self.replicate_below < 0:
            raise InvalidRequest(f"setting replicate_below={self.replicate_below} must be >= 0")
        if self.chunk_size > 64 << 20 or self.chunk_size % 64:
            raise InvalidRequest(f"setting chunk_size={self.chunk_size} must be a multiple of 64 up to 64 MiB")

    def replace(self, **changes: Any) -> "ClientConfig":
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class AgentConfig(_Settings):
    """How an agent stores fragments.

    Attributes:
        node_id: this node's id in the cluster map.
        mountpaths: directories, one per SSD.
        host: address to bind.
        port: port to bind (0: any free port).
        durability: ``"none"`` (no fsync), ``"commit"`` (fsync each fragment before it is
            prepared, and its directory on rename), ``"always"`` (also fsync every chunk).
        high_watermark: fraction of a mountpath's capacity above which writes fail with StoreFull.
        capacity_bytes: capacity of each mountpath (0: the file system's size, from psutil).
        upload_ttl: seconds after which an idle, unfinished upload is discarded.
        controller: the controller's endpoint ("" for none: the agent then serves with no map).
        labels: failure-domain labels of this node, e.g. (("zone", "a"), ("rack", "r1")).
        weight: capacity weight of this node in placement.
        heartbeat: seconds between heartbeats to the controller.
        state_dir: where the agent persists the latest cluster map it has seen ("": its first mountpath).
        repair_rate: bytes per second that background repair and rebalance may write (0: unlimited).
        scan_interval: seconds between scans of this node's objects for repair (also after every map change).
        scrub_interval: seconds between scrubs (re-verification of every local chunk at ``repair_rate``).
    """

    node_id: str = "n1"
    mountpaths: tuple[str, ...] = ()
    host: str = "127.0.0.1"
    port: int = 0
    durability: str = "commit"
    high_watermark: float = 0.9
    capacity_bytes: int = 0
    upload_ttl: float = 600.0
    controller: str = ""
    labels: tuple[tuple[str, str], ...] = ()
    weight: float = 1.0
    heartbeat: float = 1.0
    state_dir: str = ""
    repair_rate: float = 256e6
    scan_interval: float = 30.0
    scrub_interval: float = 86400.0

    def __post_init__(self) -> None:
        if self.durability not in DURABILITY_POLICIES:
            raise InvalidRequest(f"setting durability={self.durability!r} must be one of {DURABILITY_POLICIES}")
        if not 0 < self.high_watermark <= 1:
            raise InvalidRequest(f"setting high_watermark={self.high_watermark} must be in (0, 1]")
        if self.capacity_bytes < 0:
            raise InvalidRequest(f"setting capacity_bytes={self.capacity_bytes} must be >= 0")
        if not 0 <= self.port < 65536:
            raise InvalidRequest(f"setting port={self.port} must be in [0, 65535]")
        if not self.node_id:
            raise InvalidRequest("setting node_id must not be empty")


def _positive(config: Any, *names: str) -> None:
    for name in names:
        if getattr(config, name) <= 0:
            raise InvalidRequest(f"setting {name}={getattr(config, name)!r} must be > 0")
