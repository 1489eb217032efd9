"""The one retry policy of every operation on a cluster.

An attempt that fails is tried again when its error is
:class:`~hcstore.errors.Retryable` (an agent or the controller did not answer,
the object changed while it was read, a wait ran out), or when it could not
reach enough nodes (:class:`~hcstore.errors.NotEnoughNodes`,
:class:`~hcstore.errors.NotEnoughFragments`) while an agent already knew a newer
cluster map than the one the attempt used: the newer map may place the object
elsewhere. Before each retry the map is refreshed, after a short exponential
backoff; after the last attempt the last error is raised.

Only whole operations that can be repeated safely are retried (a put from bytes
or a seekable file, a read into a buffer, a delete), never a stream already
half handed to the caller. An operation names the errors that are final for it:
a put superseded by a newer version must not overwrite that version, and a read
pinned to one version cannot be helped by asking again when that version is gone.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from hcstore.client.access import ClusterAccess
from hcstore.errors import (
    HCStoreError,
    InvalidRequest,
    NotEnoughFragments,
    NotEnoughNodes,
    Retryable,
)

log = logging.getLogger(__name__)
T = TypeVar("T")
MAP_DEPENDENT: tuple[type[HCStoreError], ...] = (NotEnoughNodes, NotEnoughFragments)


@dataclass(frozen=True)
class RetryPolicy:
    """How often, and how soon, a failed operation is tried again.

    Attributes:
        attempts: tries in all, the first included.
        backoff: seconds before the first retry; doubled before each further one.
        max_backoff: the longest wait before a retry.
    """

    attempts: int = 3
    backoff: float = 0.05
    max_backoff: float = 0.5

    def __post_init__(self) -> None:
        if self.attempts < 1 or self.backoff < 0 or self.max_backoff < 0:
            raise InvalidRequest(f"retry policy needs attempts >= 1 and backoffs >= 0, got {self}")

    def delay(self, retry: int) -> float:
        """Seconds to wait before retry number ``retry`` (1 for the first)."""
        return min(self.max_backoff, self.backoff * 2 ** (retry - 1))

    def should_retry(
        self, error: HCStoreError, *, map_was_stale: bool, final: tuple[type[HCStoreError], ...] = ()
    ) -> bool:
        """Whether ``error`` is worth another attempt.

        Args:
            error: what the attempt raised.
            map_was_stale: an agent reported a newer cluster map than the attempt used.
            final: errors that are never retried for this operation.
        """
        if isinstance(error, final):
            return False
        return isinstance(error, Retryable) or (map_was_stale and isinstance(error, MAP_DEPENDENT))

    def run(
        self,
        access: ClusterAccess,
        operation: Callable[[], T],
        *,
        what: str,
        final: tuple[type[HCStoreError], ...] = (),
    ) -> T:
        """Run ``operation``, trying again as this policy says.

        Args:
            access: the cluster the operation works on (its map is refreshed before a retry).
            operation: the whole operation, safe to repeat.
            what: the operation in words, for the log.
            final: errors that are never retried for this operation.

        Raises:
            HCStoreError: the last attempt's error, or one that is not worth retrying.
        """
        for attempt in range(1, self.attempts + 1):
            epoch = access.cluster_map.epoch
            try:
                return operation()
            except HCStoreError as exc:
                stale = access.transport.max_epoch > epoch
                if attempt == self.attempts or not self.should_retry(exc, map_was_stale=stale, final=final):
                    raise
                log.info(
                    "%s: attempt %d of %d failed (%s: %s); retrying with a fresh cluster map",
                    what,
                    attempt,
                    self.attempts,
                    exc.code,
                    exc,
                )
            time.sleep(self.delay(attempt))
            access.refresh()
        raise AssertionError("unreachable")


DEFAULT_POLICY = RetryPolicy()


def retrying(
    access: ClusterAccess, operation: Callable[[], T], *, what: str, final: tuple[type[HCStoreError], ...] = ()
) -> T:
    """Run ``operation`` under :data:`DEFAULT_POLICY` (see :meth:`RetryPolicy.run`)."""
    return DEFAULT_POLICY.run(access, operation, what=what, final=final)
