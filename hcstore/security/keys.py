"""CurveZMQ key pairs on disk, in ZeroMQ's certificate format.

A key pair is two files: ``NAME.key`` holds the public key (safe to copy anywhere) and
``NAME.key_secret`` holds both keys, readable by its owner only (0600). The secret file is
made on the host that uses it and never leaves it; only public keys travel. Both are the
text files ``zmq.auth.create_certificates`` writes, so ``zmq.auth.load_certificate`` and
other ZeroMQ tools read them too. Keys are Z85 text (40 characters) everywhere in hcstore:
files, the cluster map's allow-list, configs.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from pathlib import Path

import zmq
import zmq.auth

from hcstore.errors import InvalidRequest, LocalFileError
from hcstore.files import write_bytes_atomic

Z85_KEY_LENGTH = 40
PUBLIC_SUFFIX = ".key"
SECRET_SUFFIX = ".key_secret"


@dataclass(frozen=True)
class KeyPair:
    """A CurveZMQ key pair, Z85-encoded; ``secret`` is "" for a public key alone."""

    public: str
    secret: str = ""

    def __repr__(self) -> str:  # never print a secret key
        return f"KeyPair(public={self.public!r}, secret={'<hidden>' if self.secret else ''!r})"


def secret_file(directory: str | os.PathLike[str], name: str) -> Path:
    """Where the pair called ``name`` keeps its secret (``NAME.key_secret``) in ``directory``."""
    return Path(directory) / f"{name}{SECRET_SUFFIX}"


def public_file(directory: str | os.PathLike[str], name: str) -> Path:
    """Where the pair called ``name`` keeps its public key (``NAME.key``) in ``directory``."""
    return Path(directory) / f"{name}{PUBLIC_SUFFIX}"


def generate() -> KeyPair:
    """A new random key pair (in memory)."""
    public, secret = zmq.curve_keypair()
    return KeyPair(public.decode("ascii"), secret.decode("ascii"))


def create(directory: str | os.PathLike[str], name: str) -> KeyPair:
    """Make a key pair and write ``NAME.key`` (0644) and ``NAME.key_secret`` (0600) in ``directory``.

    The directory is created (0700) if needed. An existing pair of that name is kept and returned:
    a key is never silently replaced (revoke it and make one under another name).

    Raises:
        InvalidRequest: ``name`` is not a plain file name.
    """
    if not name or "/" in name or name.startswith("."):
        raise InvalidRequest(f"key name {name!r} must be a plain file name (letters, digits, - and _)")
    root = Path(directory)
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    secret = secret_file(root, name)
    if secret.exists():
        return load(secret)
    pair = generate()
    write_bytes_atomic(secret, _certificate(pair, secret=True), mode=0o600)
    write_bytes_atomic(public_file(root, name), _certificate(pair, secret=False))
    return pair


def _certificate(pair: KeyPair, *, secret: bool) -> bytes:
    kind = "Secret" if secret else "Public"
    lines = [
        f"#   ****  Generated on {datetime.datetime.now():%Y-%m-%d %H:%M:%S} by hcstore  ****",
        f"#   ZeroMQ CURVE **{kind}** Certificate",
        "#   DO NOT PROVIDE THIS FILE TO OTHER USERS nor change its permissions." if secret else "",
        "",
        "metadata",
        "curve",
        f'    public-key = "{pair.public}"',
    ]
    if secret:
        lines.append(f'    secret-key = "{pair.secret}"')
    return ("\n".join(lines) + "\n").encode()


def load(path: str | os.PathLike[str]) -> KeyPair:
    """The key pair (or public key alone) in a certificate file.

    Raises:
        LocalFileError: the file cannot be read, or holds no key.
    """
    try:
        public, secret = zmq.auth.load_certificate(os.fspath(path))
    except (OSError, ValueError) as exc:
        raise LocalFileError(f"cannot read a CurveZMQ key from {path}: {exc}") from None
    if public is None or len(public) != Z85_KEY_LENGTH:
        raise LocalFileError(f"{path} holds no CurveZMQ public key")
    return KeyPair(public.decode("ascii"), (secret or b"").decode("ascii"))


def public_key(value: str) -> str:
    """A public key given as Z85 text, or as the path of a certificate file holding it.

    Raises:
        InvalidRequest: ``value`` is neither.
    """
    value = value.strip()
    if len(value) == Z85_KEY_LENGTH and not os.path.exists(value):
        try:
            zmq.utils.z85.decode(value)
            return value
        except (ValueError, KeyError):
            pass
    if os.path.exists(value):
        return load(value).public
    raise InvalidRequest(f"{value!r} is neither a Z85 public key (40 characters) nor a key file")


def secret_pair(path: str | os.PathLike[str]) -> KeyPair:
    """The key pair in a secret certificate file, checked to hold a secret readable by its owner only.

    Raises:
        LocalFileError: the file cannot be read, holds no secret key, or others may read it.
    """
    pair = load(path)
    if not pair.secret:
        raise LocalFileError(f"{path} holds a public key only; name the {SECRET_SUFFIX} file")
    mode = os.stat(path).st_mode & 0o077
    if mode:
        raise LocalFileError(f"{path} is readable by others (mode {oct(os.stat(path).st_mode & 0o777)}): chmod 600 it")
    return pair
