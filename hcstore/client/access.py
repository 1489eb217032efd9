"""What one put, one read or one repair needs of a client: the map, the transport, the settings.

Writers, readers and repair depend on this protocol, not on :class:`~hcstore.client.client.Client`,
so the client module sits above them and nothing circles back to it.
"""

from __future__ import annotations

from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Protocol

from hcstore.config import ClientConfig
from hcstore.generation import HybridClock
from hcstore.wire.transport import Transport
from placement import ClusterMap


@dataclass(frozen=True)
class CorruptionReport:
    """A chunk whose bytes did not match its digest."""

    bucket: str
    key: str
    generation: str
    fragment: int
    stripe: int
    node: str


class ClusterAccess(Protocol):
    """A view of one cluster through which objects are written, read and repaired."""

    config: ClientConfig
    transport: Transport
    clock: HybridClock

    @property
    def cluster_map(self) -> ClusterMap:
        """The current cluster map."""
        ...

    def refresh(self) -> ClusterMap:
        """Re-read the cluster map now."""
        ...

    def endpoint(self, node_id: str) -> str:
        """The endpoint of a node of the current map (raises ``AgentUnavailable`` when it has none)."""
        ...

    def is_unavailable(self, node_id: str) -> bool:
        """True when a node is down in the map, or failed or answered too slowly moments ago."""
        ...

    def read_executor(self) -> Executor:
        """The threads that read the parts of one large range at once (``read_streams`` of them)."""
        ...

    def report_corruption(self, report: CorruptionReport) -> None:
        """Record a chunk whose bytes did not match their digest."""
        ...
