"""What makes a daemon alive and ready (pure: the daemons gather the facts, these functions judge them).

``/healthz`` answers whether the process is alive: its serving loop runs. ``/readyz`` answers
whether it should be sent work: an agent is ready when it serves, has at least one mountpath in
service, and is on the cluster map epoch the controller last told it (or a newer one); the
controller is ready when it serves.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Health:
    """A verdict: ``ok``, the reasons when it is not, and the facts it was judged on."""

    ok: bool
    reasons: tuple[str, ...] = ()
    facts: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The JSON body of a health answer."""
        return {"ok": self.ok, "reasons": list(self.reasons), **self.facts}


def verdict(reasons: list[str], **facts: Any) -> Health:
    """A :class:`Health` that is ok when there are no ``reasons``."""
    return Health(not reasons, tuple(reasons), facts)


def liveness(serving: bool, **facts: Any) -> Health:
    """Alive while the serving loop runs."""
    return verdict([] if serving else ["the serving loop is not running"], **facts)


def agent_readiness(
    *,
    serving: bool,
    epoch: int,
    controller_epoch: int | None,
    has_controller: bool,
    usable_mountpaths: int,
    mountpaths: int,
) -> Health:
    """Whether an agent is ready for work.

    Args:
        serving: its serving loop runs (and it is not stopping).
        epoch: the epoch of the cluster map it serves by.
        controller_epoch: the epoch in the controller's last reply (None: no reply yet).
        has_controller: it is configured with a controller (a lone agent has no map to be behind on).
        usable_mountpaths: its mountpaths in service.
        mountpaths: all its mountpaths.
    """
    reasons = []
    if not serving:
        reasons.append("the serving loop is not running")
    if usable_mountpaths == 0:
        reasons.append(f"no usable mountpath: all {mountpaths} are disabled after I/O errors")
    if has_controller and controller_epoch is None:
        reasons.append("no reply from the controller yet: the cluster map epoch is unknown")
    elif has_controller and controller_epoch is not None and epoch < controller_epoch:
        reasons.append(f"on cluster map epoch {epoch}, older than the controller's {controller_epoch}")
    return verdict(
        reasons,
        epoch=epoch,
        controller_epoch=controller_epoch,
        usable_mountpaths=usable_mountpaths,
        mountpaths=mountpaths,
    )
