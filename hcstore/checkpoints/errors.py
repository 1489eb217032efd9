"""The checkpoint error family: missing, corrupt, failed background saves and failed durable copies.

All four subclass :class:`hcstore.errors.HCStoreError`; the first two also subclass the
built-in that fits (``FileNotFoundError``, ``ValueError``), so code that knows nothing of
hcstore still catches them. *Missing* and *corrupt* stay apart: an incomplete checkpoint
is skipped, a file that does not match its manifest is an error.
"""

from __future__ import annotations

from hcstore.errors import HCStoreError

__all__ = ["BackgroundSaveFailed", "CheckpointCorrupt", "CheckpointNotFound", "DurableCopyFailed"]


class CheckpointNotFound(HCStoreError, FileNotFoundError):
    """No complete checkpoint matches what was asked for."""


class CheckpointCorrupt(HCStoreError, ValueError):
    """A checkpoint's manifest is unreadable, or a file does not match its manifest entry."""


class DurableCopyFailed(HCStoreError):
    """One or more background copies to the durable location failed (see ``failures``)."""

    def __init__(self, message: str, failures: list[tuple[int, BaseException]]) -> None:
        super().__init__(message)
        self.failures = failures


class BackgroundSaveFailed(HCStoreError):
    """A save persisted in the background (``save_async``) failed; nothing of it became visible.

    The original error is the ``__cause__``; ``step`` is the checkpoint that was not saved.
    """

    def __init__(self, message: str, step: int) -> None:
        super().__init__(message)
        self.step = step
