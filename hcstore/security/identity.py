"""Whose keys a process uses: a daemon's from its config, a client's from its config or its cluster.

A daemon (agent or controller) names its secret key file in its config (``key``) and runs
without one only when told ``insecure = true``. A client finds, in this order: its config
(``key``/``controller_key``, or ``HCSTORE_KEY``/``HCSTORE_CONTROLLER_KEY``), then the cluster
directory's ``keys/`` (a local cluster made by ``hcstore up``, whose owner holds its admin key).
"""

from __future__ import annotations

from pathlib import Path

from hcstore.cluster import directory as cluster_directory
from hcstore.config import AgentConfig, BadSetting, ClientConfig, ControllerConfig
from hcstore.errors import AuthenticationError, LocalFileError
from hcstore.security.curve import INSECURE, Credentials
from hcstore.security.keys import public_key, secret_pair

INSECURE_WARNING = "INSECURE: no authentication, no encryption; anyone who reaches its port can do anything"


def daemon_credentials(config: AgentConfig | ControllerConfig, daemon: str) -> Credentials:
    """The key pair ``daemon`` ("agent n1", "controller") serves with, or INSECURE when its config asks.

    Raises:
        BadSetting: no key file is named and ``insecure`` is not set.
        LocalFileError: the key file cannot be read, holds no secret, or others may read it.
    """
    if config.insecure:
        return INSECURE
    if not config.key:
        raise BadSetting(
            ("key", "insecure"),
            f"{daemon}: setting key is empty: name its secret key file (make one with `hcstore keys create "
            "--dir DIR NAME`), or set insecure = true to run without authentication on a trusted network",
        )
    return Credentials(secret_pair(config.key))


def client_credentials(config: ClientConfig, directory: Path | None) -> tuple[Credentials, str]:
    """A client's credentials and the controller's public key ("" when unknown).

    Args:
        config: the client's settings (``key``, ``controller_key``, ``insecure``).
        directory: the local cluster directory the client uses, if any.

    Raises:
        AuthenticationError: no key is named and the cluster has none to offer.
        LocalFileError: a key file cannot be read.
    """
    if config.insecure or (directory is not None and cluster_directory.is_insecure(directory)):
        return INSECURE, ""
    key_file = config.key
    controller_key = config.controller_key
    if directory is not None:
        key_file = key_file or str(cluster_directory.admin_key_file(directory))
        controller_key = controller_key or str(cluster_directory.controller_key_file(directory))
    if not key_file:
        raise AuthenticationError(
            "no client key: a cluster reached by its controller's endpoint needs one (unless it runs "
            "insecure): set HCSTORE_KEY (or the key setting) to your secret key file (`hcstore keys create "
            "--dir DIR NAME` makes one; an admin adds its public key with `hcstore keys add`) and "
            "HCSTORE_CONTROLLER_KEY to the controller's public key; or set HCSTORE_INSECURE=true for a "
            "cluster that runs without authentication"
        )
    try:
        credentials = Credentials(secret_pair(key_file))
    except LocalFileError as exc:
        raise AuthenticationError(f"cannot use the client key: {exc}") from None
    return credentials, public_key(controller_key) if controller_key else ""
