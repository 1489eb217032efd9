"""Crash-safe writes of the small files a daemon depends on (maps, id files, ready files, configs).

A file is written to a temporary name in the same directory, fsynced, renamed over the
old one, and the directory is fsynced: after a crash or a power cut a reader finds the
old content or the new one, whole, never an empty or torn file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def fsync_directory(path: Path) -> None:
    """Make a rename or a new file in ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_bytes_atomic(path: Path, data: bytes, *, mode: int = 0o644) -> None:
    """Replace ``path`` with ``data``: readers, and a restart after a power cut, see old or new, whole.

    ``mode`` is the new file's permission bits from its creation on (a secret is never readable by
    others, not even briefly).
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)  # the umask, or a leftover temporary file, must not widen it
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_directory(path.parent)


def write_json_atomic(path: Path, data: dict[str, Any], *, indent: int | None = None) -> None:
    """Replace ``path`` with ``data`` as JSON, crash-safely (see :func:`write_bytes_atomic`)."""
    write_bytes_atomic(path, json.dumps(data, indent=indent).encode())
