"""``torch.distributed.checkpoint`` storage readers and writers for checkpoint directory URLs.

torch is imported only when one is made, so the rest of :mod:`hcstore.checkpoints`
works without it.
"""

from __future__ import annotations

from typing import Any

__all__ = ["dcp_reader", "dcp_writer"]


def _fsspec_dcp() -> tuple[type, type]:
    """torch.distributed.checkpoint's ``(FsspecReader, FsspecWriter)``, wherever this torch keeps them.

    torch 2.13 does not export them from ``torch.distributed.checkpoint``; they live in its
    ``_fsspec_filesystem`` module (where torch's own tests import them from).
    """
    try:
        from torch.distributed.checkpoint import FsspecReader, FsspecWriter  # type: ignore[attr-defined]
    except ImportError:
        from torch.distributed.checkpoint._fsspec_filesystem import FsspecReader, FsspecWriter
    return FsspecReader, FsspecWriter


def dcp_writer(url: str, *, sync_files: bool = False, **options: Any) -> Any:
    """A ``torch.distributed.checkpoint`` storage writer for a directory URL (e.g. ``hcstore://b/run/step-1``).

    ``sync_files`` defaults to False: an hcstore file is committed (fsynced on ``k+m`` nodes with
    durability "commit") when it is closed, and DCP's fsync of a file object without ``fileno()``
    falls back to a machine-wide ``os.sync()`` per file. Other ``options`` go to ``FsspecWriter``
    (``thread_count``, ``single_file_per_rank``, ...) and to the filesystem (``cluster=``).
    """
    return _fsspec_dcp()[1](url, sync_files=sync_files, **options)


def dcp_reader(url: str, **options: Any) -> Any:
    """A ``torch.distributed.checkpoint`` storage reader for a directory URL (options as for :func:`dcp_writer`)."""
    return _fsspec_dcp()[0](url, **options)
