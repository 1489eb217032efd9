"""hcstore: an erasure-coded object store on the local SSDs of a GPU fleet.

The public surface: :class:`Client` (put, get, open, delete, list, stat), the
error family in :mod:`hcstore.errors`, configuration in :mod:`hcstore.config`,
and the embedded local cluster :class:`LocalCluster`.

The names below are imported on first use (PEP 562), so that ``import
hcstore.errors`` or ``import hcstore.config`` loads neither ZeroMQ nor the
data path, and no module inside the package depends on this facade.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Client": "hcstore.client.client",
    "ObjectInfo": "hcstore.client.client",
    "PutResult": "hcstore.client.writer",
    "LocalCluster": "hcstore.cluster.local",
    "AgentConfig": "hcstore.config",
    "ClientConfig": "hcstore.config",
    "ControllerConfig": "hcstore.config",
    **{
        name: "hcstore.errors"
        for name in (
            "AgentBusy",
            "AgentUnavailable",
            "ClusterNotFound",
            "CorruptFragment",
            "HCStoreError",
            "InvalidRequest",
            "NotEnoughFragments",
            "NotEnoughNodes",
            "NotProven",
            "ObjectChanged",
            "ObjectNotFound",
            "ProtocolError",
            "Retryable",
            "StoreFull",
            "Timeout",
        )
    },
}

__all__ = sorted(_EXPORTS)
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'hcstore' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
