"""Crash-safe writes of the small files a daemon depends on (maps, id files, ready files, configs).

A file is written to a temporary name in the same directory, fsynced, renamed over the
old one, and the directory is fsynced: after a crash or a power cut a reader finds the
old content or the new one, whole, never an empty or torn file.
"""

from __future__ import annotations

import json
import os
import threading
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

    The file is created with ``mode`` (less the umask) from its first byte, so a file of
    secrets is never readable by others, not even for a moment.
    """
    tmp = _write_temporary(path, data, mode)
    os.replace(tmp, path)
    fsync_directory(path.parent)


def create_bytes_atomic(path: Path, data: bytes, *, mode: int = 0o644) -> bool:
    """Create ``path`` holding ``data`` unless it exists; crash-safe as :func:`write_bytes_atomic`.

    Of writers racing to create the same file exactly one wins; the others leave it as it is.

    Returns:
        True when this call created the file, False when it existed already.
    """
    tmp = _write_temporary(path, data, mode)
    try:
        os.link(tmp, path)  # fails when the name is taken: never replaces what another writer made
    except FileExistsError:
        return False
    finally:
        tmp.unlink(missing_ok=True)
    fsync_directory(path.parent)
    return True


def _write_temporary(path: Path, data: bytes, mode: int) -> Path:
    """``data`` written and fsynced to a new temporary file beside ``path``, created with ``mode``."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.unlink(missing_ok=True)  # a leftover of a crash: O_EXCL below makes a file of our mode
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    return tmp


def write_json_atomic(path: Path, data: dict[str, Any], *, indent: int | None = None) -> None:
    """Replace ``path`` with ``data`` as JSON, crash-safely (see :func:`write_bytes_atomic`)."""
    write_bytes_atomic(path, json.dumps(data, indent=indent).encode())
