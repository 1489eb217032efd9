"""The cluster secret: 32 random bytes that the controller holds and hands to authenticated writers.

Values that run code when read (pickles, see :mod:`ray_integration.values`) carry an
HMAC-SHA256 under this secret; a reader unpickles only what verifies. The secret lives in
a file of its own, ``0600`` in a ``0700`` directory, owned by the user that runs the
controller: a local cluster's is ``<cluster dir>/keys/cluster.secret`` (made by
``hcstore up``), a Ray deployment's is made by its controller actor in its state directory
on the head node. Both are made once and kept, so that values written before a restart
still verify after it.
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

from hcstore.errors import LocalFileError
from hcstore.files import create_bytes_atomic

SECRET_BYTES = 32
SECRET_FILE = "cluster.secret"


def create_secret_file(path: str | os.PathLike[str]) -> bytes:
    """Make ``path`` hold a new random secret unless it holds one already; returns the secret it holds.

    The directory is made (or narrowed to) ``0700``, the file is created ``0600`` from its
    first byte and crash-safely; of processes racing to create it, one wins and all return
    its secret.

    Raises:
        LocalFileError: the file or its directory cannot be made, or the file is not a private secret.
    """
    path = Path(path)
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if path.parent.stat().st_uid == os.getuid():
            path.parent.chmod(0o700)
        create_bytes_atomic(path, secrets.token_bytes(SECRET_BYTES), mode=0o600)
    except OSError as exc:
        raise LocalFileError(f"cannot create the cluster secret file {path}: {exc}") from None
    return read_secret_file(path)


def read_secret_file(path: str | os.PathLike[str]) -> bytes:
    """The secret ``path`` holds, after checking that only this user could have written or read it.

    Raises:
        LocalFileError: the file is missing, not a regular file, not owned by this user, open to
            others (its mode or its directory's), or does not hold exactly ``SECRET_BYTES`` bytes.
    """
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as exc:
        raise LocalFileError(f"cannot read the cluster secret file {path}: {exc}") from None
    try:
        info = os.fstat(fd)
        _check_private(path, info, "file")
        _check_private(path.parent, path.parent.stat(), "directory")
        if not stat.S_ISREG(info.st_mode) or info.st_size != SECRET_BYTES:
            raise LocalFileError(
                f"the cluster secret file {path} must be a regular file of exactly {SECRET_BYTES} bytes"
            )
        secret = os.read(fd, SECRET_BYTES + 1)
    except LocalFileError:
        raise
    except OSError as exc:
        raise LocalFileError(f"cannot read the cluster secret file {path}: {exc}") from None
    finally:
        os.close(fd)
    if len(secret) != SECRET_BYTES:
        raise LocalFileError(f"the cluster secret file {path} must hold exactly {SECRET_BYTES} bytes")
    return secret


def _check_private(path: Path, info: os.stat_result, what: str) -> None:
    """Refuse a secret whose file others may read, or whose file or directory others may replace."""
    if info.st_uid != os.getuid():
        raise LocalFileError(f"the cluster secret {what} {path} is owned by uid {info.st_uid}, not this user")
    open_to = 0o077 if what == "file" else 0o022  # the file: no access; its directory: nobody else writes
    if info.st_mode & open_to:
        raise LocalFileError(
            f"the cluster secret {what} {path} has mode {stat.S_IMODE(info.st_mode):04o}, open to other users: "
            f"make it {'0600' if what == 'file' else '0700'}"
        )
