"""hcstore: an erasure-coded object store on the local SSDs of a GPU fleet.

The public surface: :class:`Client` (put, get, open, delete, list, stat), the
error family in :mod:`hcstore.errors`, configuration in :mod:`hcstore.config`,
and the embedded local cluster in :mod:`hcstore.local_cluster`.
"""

from hcstore.client import Client, ObjectInfo
from hcstore.config import AgentConfig, ClientConfig
from hcstore.errors import (
    AgentUnavailable,
    CorruptFragment,
    HCStoreError,
    InvalidRequest,
    NotEnoughFragments,
    NotEnoughNodes,
    ObjectChanged,
    ObjectNotFound,
    ProtocolError,
    Retryable,
    StoreFull,
)
from hcstore.local_cluster import LocalCluster
from hcstore.writer import PutResult

__all__ = [
    "AgentConfig", "AgentUnavailable", "Client", "ClientConfig", "CorruptFragment", "HCStoreError",
    "InvalidRequest", "LocalCluster", "NotEnoughFragments", "NotEnoughNodes", "ObjectChanged",
    "ObjectInfo", "ObjectNotFound", "ProtocolError", "PutResult", "Retryable", "StoreFull",
]
__version__ = "0.1.0"
