"""What each role may ask of an agent and of the controller (pure rules, no I/O).

Roles nest: ``admin`` may do everything a ``node`` may, and a ``node`` everything a
``client`` may. A ``client`` reads and writes data; a ``node`` (an agent, or the controller
asking one) also moves fragments between nodes and takes corrupt ones out of service; an
``admin`` also changes the cluster: drain, resume, remove, keys, on-demand repair and scrub.
Every operation of the wire protocol is named here exactly once, so a new operation cannot
be added without deciding who may run it (a test checks that).
"""

from __future__ import annotations

from placement import ROLES

RANK = {role: rank for rank, role in enumerate(ROLES)}  # client < node < admin

AGENT_OPERATIONS: dict[str, str] = {
    **dict.fromkeys(
        (
            "ping",
            "node_stats",
            "open",
            "write",
            "store",
            "prepare",
            "commit",
            "abort",
            "retire",
            "tombstone",
            "read",
            "locate",
            "locate_many",
            "list",
            "buckets",
        ),
        "client",
    ),
    "drop": "node",
    "quarantine": "node",
    "maintain": "admin",
}
"""The least role that may run each agent operation."""

CONTROLLER_OPERATIONS: dict[str, str] = {
    "get_map": "client",
    "status": "client",
    "cluster_secret": "client",
    "heartbeat": "node",
    "node_admin": "admin",
    "keys": "admin",
}
"""The least role that may run each controller operation (a heartbeat also only for the node its key is bound to)."""


def permits(role: str | None, needed: str) -> bool:
    """Whether a key of ``role`` (None: not in the allow-list) may run an operation that needs ``needed``."""
    return role is not None and role in RANK and RANK[role] >= RANK[needed]
