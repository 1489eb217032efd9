"""What an agent reports as it works, and the recorder that records nothing (``metrics_port = -1``).

The agent and its background worker call these methods on the data path and during repair;
:class:`hcstore.metrics.agent.AgentMetrics` counts them in Prometheus metrics. This module
imports no metrics library, so a disabled endpoint costs an empty method call per request.
"""

from __future__ import annotations

from hcstore.coding import CodecObserver

REPAIR = "repair"
"""A repair kind: fragments rebuilt because they were lost (a node out, a disk failed, a chunk corrupt)."""
REBALANCE = "rebalance"
"""A repair kind: fragments moved because the map wants them elsewhere (a join, a drain)."""
SCRUB = "scrub"
READ = "read"
MAP_FORMS = ("whole", "delta", "delta_mismatch")
"""How a newer map reaches an agent: whole, as the changes since its own, or as changes that did not give the
controller's map (the agent then asks for the whole map)."""


class AgentRecorder:
    """Records nothing: the agent runs without metrics."""

    codec_observer: CodecObserver | None = None
    """Told of the coding done in the agent's repair (None: not observed)."""

    def request(self, op: str, outcome: str, seconds: float, received: int, sent: int, path: str | None) -> None:
        """One request answered.

        Args:
            op: its operation.
            outcome: ``ok`` or the error code of the reply.
            seconds: from its arrival to its reply.
            received: payload bytes it carried.
            sent: payload bytes the reply carried.
            path: a read's ``path`` field (None when absent or for other operations).
        """

    def corrupt_chunks(self, found_by: str, count: int) -> None:
        """``count`` corrupt chunks found by ``found_by`` (``read`` or ``scrub``)."""

    def repaired(self, kind: str, objects: int, nbytes: int) -> None:
        """Repair of kind ``repair`` or ``rebalance`` finished ``objects`` objects, writing ``nbytes``."""

    def repair_failed(self) -> None:
        """A repair failed (it is tried again in the next scan)."""

    def map_received(self, form: str) -> None:
        """A newer cluster map came from the controller, in ``form`` (see :data:`MAP_FORMS`)."""
