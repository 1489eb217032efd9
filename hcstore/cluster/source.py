"""Where a cluster is reached: a local cluster directory or a controller endpoint.

A :class:`ClusterSource` is a plain value (it pickles, it holds no socket),
found once from, in this order:

1. an explicit argument (``Client(...)``, ``--cluster``, a filesystem's ``cluster=``);
2. the ``HCSTORE_CLUSTER`` environment variable;
3. the pointer ``~/.hcstore/current`` that ``hcstore up`` leaves.

Each names either a local cluster directory (see :mod:`hcstore.cluster.directory`)
or a controller endpoint ``tcp://HOST:PORT`` (as ``hcstore ray deploy`` prints).
The source answers the controller's endpoint, the cluster map (from the
controller; for a local cluster whose controller is not running, from the
directory's files) and the cluster's default erasure coding.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from hcstore.cluster.directory import (
    controller_endpoint,
    map_stamp,
    read_cluster_ec,
    read_cluster_map,
)
from hcstore.config import ClientConfig
from hcstore.control.client import ControllerClient, MapReply
from hcstore.errors import ClusterNotFound, ControllerUnavailable, InvalidRequest
from hcstore.files import write_bytes_atomic
from hcstore.security.curve import Credentials
from hcstore.security.identity import client_credentials
from hcstore.wire.transport import Transport
from placement import ClusterMap

POINTER = Path.home() / ".hcstore" / "current"
ENVIRONMENT = "HCSTORE_CLUSTER"
_ENDPOINT = re.compile(r"tcp://(?P<host>\[[0-9a-fA-F:.]+\]|[^\s/:\[\]]+):(?P<port>\d{1,5})")
_HOW_TO_NAME = "pass --cluster DIR or --cluster tcp://HOST:PORT, or set HCSTORE_CLUSTER"


@dataclass(frozen=True)
class ClusterSource:
    """A local cluster directory or a controller endpoint, and where it was named.

    Attributes:
        location: the directory (absolute) or the controller endpoint ``tcp://HOST:PORT``.
        origin: where it was named: ``"the cluster argument"``, ``"HCSTORE_CLUSTER"`` or the pointer.
    """

    location: str
    origin: str = "the cluster argument"

    # ------------------------------------------------------------------ finding

    @classmethod
    def find(cls, cluster: str | os.PathLike[str] | ClusterSource | None = None) -> ClusterSource:
        """The cluster named by ``cluster``, else ``HCSTORE_CLUSTER``, else ``hcstore up``'s pointer.

        Raises:
            ClusterNotFound: nothing names a cluster, or the directory named holds none.
            InvalidRequest: a ``tcp://`` endpoint or another URL that is malformed.
        """
        if isinstance(cluster, ClusterSource):
            return cluster
        if cluster is not None and os.fspath(cluster):
            return cls.named(os.fspath(cluster))
        if os.environ.get(ENVIRONMENT):
            return cls.named(os.environ[ENVIRONMENT], ENVIRONMENT)
        pointed = _read_pointer()
        if pointed:
            return cls.named(pointed, f"the pointer {POINTER} that `hcstore up` left")
        raise ClusterNotFound(
            f"no hcstore cluster named: no --cluster argument, {ENVIRONMENT} is not set and "
            f"there is no pointer {POINTER}; run `hcstore up` to start a local cluster, or "
            f"{_HOW_TO_NAME}"
        )

    @classmethod
    def named(cls, name: str | os.PathLike[str], origin: str = "the cluster argument") -> ClusterSource:
        """The source ``name`` denotes: a controller endpoint, or a directory that holds a cluster.

        Raises:
            ClusterNotFound: a directory that holds no cluster.
            InvalidRequest: a malformed ``tcp://`` endpoint, or a URL of another scheme.
        """
        text = os.fspath(name)
        if "://" in text:
            return cls(check_endpoint(text, origin), origin)
        path = Path(text).expanduser().resolve()
        if not (path / "cluster.json").is_file():
            problem = "does not exist" if not path.exists() else "holds no hcstore cluster (no cluster.json)"
            raise ClusterNotFound(
                f"{path} (named by {origin}) {problem}: start a cluster there with "
                f"`hcstore up --data-dir {path}`, or {_HOW_TO_NAME}"
            )
        return cls(str(path), origin)

    @classmethod
    def local(cls, directory: str | os.PathLike[str]) -> ClusterSource:
        """The local cluster at ``directory`` (checked to hold one)."""
        return cls.named(Path(directory))

    # ------------------------------------------------------------------ what it is

    @property
    def is_local(self) -> bool:
        """True for a local cluster directory, False for a controller endpoint."""
        return not self.location.startswith("tcp://")

    @property
    def directory(self) -> Path | None:
        """The local cluster directory (None for a controller endpoint)."""
        return Path(self.location) if self.is_local else None

    def describe(self) -> str:
        """``"the local cluster at DIR"`` or ``"the controller at tcp://..."``, for messages."""
        return f"the local cluster at {self.location}" if self.is_local else f"the controller at {self.location}"

    def require_local(self, verb: str) -> Path:
        """The local cluster directory, for verbs that only a local cluster has.

        Raises:
            InvalidRequest: the source is a controller endpoint.
        """
        if self.directory is None:
            raise InvalidRequest(
                f"{verb} works on a local cluster directory, and {self.location} (named by "
                f"{self.origin}) is a controller endpoint: name the directory with --cluster DIR "
                "(a Ray deployment is stopped with `hcstore ray down`)"
            )
        return self.directory

    # ------------------------------------------------------------------ the controller

    def controller_endpoint(self) -> str:
        """The controller's endpoint; "" for a local cluster whose controller is not running."""
        return controller_endpoint(self.location) if self.is_local else self.location

    def require_controller(self) -> str:
        """The controller's endpoint.

        Raises:
            ControllerUnavailable: the local cluster's controller is not running.
        """
        endpoint = self.controller_endpoint()
        if not endpoint:
            raise ControllerUnavailable(
                f"the controller of the local cluster at {self.location} is not running: "
                f"start the cluster with `hcstore up --data-dir {self.location}`"
            )
        return endpoint

    def credentials(self, config: ClientConfig | None = None) -> tuple[Credentials, str]:
        """This process's keys for this cluster, and the controller's public key (see
        :func:`hcstore.security.identity.client_credentials`; ``config`` None: ``HCSTORE_*`` and defaults)."""
        return client_credentials(config or ClientConfig.from_env(), self.directory)

    def controller(
        self, *, transport: Transport | None = None, timeout: float = 5.0, config: ClientConfig | None = None
    ) -> ControllerClient:
        """A client of this cluster's controller (see :class:`ControllerClient` for the arguments),
        authenticated with the keys :meth:`credentials` finds.

        Raises:
            ControllerUnavailable: the local cluster's controller is not running.
            AuthenticationError: the cluster needs a key and none is named.
        """
        endpoint = self.require_controller()
        credentials, server_key = self.credentials(config)
        return ControllerClient(
            endpoint, transport=transport, timeout=timeout, credentials=credentials, server_key=server_key
        )

    # ------------------------------------------------------------------ the map and the EC

    def directory_map(self) -> ClusterMap:
        """The map a local cluster's files describe (agents without a ready file are down).

        Raises:
            InvalidRequest: the source is a controller endpoint.
        """
        return read_cluster_map(self.require_local("reading the cluster map from files"))

    def map_stamp(self) -> tuple[float, ...]:
        """Changes whenever the files :meth:`directory_map` reads change (() for an endpoint)."""
        return map_stamp(self.location) if self.is_local else ()

    def cluster_map(self, controller: ControllerClient | None = None) -> ClusterMap:
        """The current map (see :meth:`view`)."""
        return self.view(controller).cluster_map

    def default_ec(self, controller: ControllerClient | None = None) -> str:
        """The cluster's default erasure coding ("" when a controller tells none).

        A local cluster's is read from its directory; a controller endpoint's is asked of it.

        Raises:
            ClusterNotFound: no controller answers at the endpoint.
        """
        return read_cluster_ec(self.location) if self.is_local else self.view(controller).ec

    def view(self, controller: ControllerClient | None = None) -> MapReply:
        """The current map and default EC: the controller's, else (a local cluster whose controller
        is not running or not answering) those the directory's files describe.

        Args:
            controller: a client of this source's controller to ask (None: one made for this call).

        Raises:
            ClusterNotFound: no controller answers at the endpoint.
        """
        endpoint = self.controller_endpoint()
        if endpoint:
            asked = controller or self.controller()
            try:
                return asked.get_map()
            except ControllerUnavailable as exc:
                if not self.is_local:
                    raise ClusterNotFound(
                        f"{exc}; check the endpoint (named by {self.origin}): `hcstore ray status` prints it"
                    ) from None
            finally:
                if controller is None:
                    asked.close()
        return MapReply(self.directory_map(), read_cluster_ec(self.location))

    def __str__(self) -> str:
        return self.location


def check_endpoint(endpoint: str, origin: str = "the cluster argument") -> str:
    """Return ``endpoint`` if it is a controller endpoint ``tcp://HOST:PORT``.

    Raises:
        InvalidRequest: it is not, with the form expected.
    """
    match = _ENDPOINT.fullmatch(endpoint)
    if match is None or not 0 < int(match["port"]) < 65536:
        raise InvalidRequest(
            f"{endpoint!r} (named by {origin}) is not a controller endpoint: use tcp://HOST:PORT "
            "with a port in 1..65535, or a local cluster directory"
        )
    return endpoint


def point_at(directory: str | os.PathLike[str]) -> None:
    """Make ``directory`` the cluster that commands find when none is named (``hcstore up`` does)."""
    POINTER.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(POINTER, str(Path(directory).resolve()).encode())


def unpoint(directory: str | os.PathLike[str]) -> None:
    """Remove the pointer if it names ``directory`` (``hcstore down`` does)."""
    pointed = _read_pointer()
    if pointed and Path(pointed).resolve() == Path(directory).resolve():
        POINTER.unlink(missing_ok=True)


def _read_pointer() -> str:
    """The directory the pointer names ("" when there is no pointer, or it is empty)."""
    try:
        return POINTER.read_text().strip()
    except FileNotFoundError:
        return ""
