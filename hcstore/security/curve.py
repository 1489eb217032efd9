"""CurveZMQ on hcstore's sockets: both ends authenticated, every byte encrypted.

The server side (an agent's or the controller's ROUTER socket) is a :class:`Gate`: it runs
ZeroMQ's authentication handler (ZAP, :class:`zmq.auth.thread.ThreadAuthenticator`) on the
daemon's own context, admits a connection only when the client's public key is in the
allow-list it is given (read afresh at every handshake, so a key added or revoked in the
cluster map takes effect without a restart), and tells the role of the key that sent each
message (ZeroMQ stamps it with the client's key as its ``User-Id``, which
:func:`hcstore.wire.server.peer_of` reads), so a key revoked while connected is refused from
its next message on.

The client side is :func:`secure_client`: a DEALER socket that presents this process's key
pair and expects the server's public key, so a client cannot be fooled by a server without
the secret key (ironhouse). :class:`Credentials` is what a process knows of its own key.

A cluster run ``insecure`` has no keys: plain ZeroMQ, every peer has every role. It must be
asked for by name (``insecure = true``) and ``hcstore status`` says so.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import zmq
from zmq.auth.thread import ThreadAuthenticator

from hcstore.errors import Forbidden
from hcstore.security.keys import KeyPair
from hcstore.security.roles import permits

log = logging.getLogger(__name__)
HANDSHAKE_FAILURES = (
    zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
)
_monitor_ids = itertools.count()


@dataclass(frozen=True)
class Credentials:
    """This process's key pair on the wire (``pair`` None: insecure, plain ZeroMQ)."""

    pair: KeyPair | None = None

    @property
    def secure(self) -> bool:
        """Whether sockets use CurveZMQ."""
        return self.pair is not None

    @property
    def public(self) -> str:
        """This process's public key ("" when insecure)."""
        return self.pair.public if self.pair else ""


INSECURE = Credentials()


def secure_client(sock: zmq.Socket[Any], credentials: Credentials, server_key: str) -> None:
    """Make ``sock`` (not yet connected) a CurveZMQ client that only talks to the holder of ``server_key``."""
    if credentials.pair is None:
        return
    sock.curve_secretkey = credentials.pair.secret.encode("ascii")
    sock.curve_publickey = credentials.pair.public.encode("ascii")
    sock.curve_serverkey = server_key.encode("ascii")


def watch_handshakes(sock: zmq.Socket[Any]) -> zmq.Socket[Any]:
    """A monitor socket that receives an event whenever ``sock``'s handshake fails (refused key,
    wrong server key, a peer without CURVE). Close it with :func:`unwatch`."""
    address = f"inproc://hcstore-handshakes-{next(_monitor_ids)}"
    sock.monitor(address, HANDSHAKE_FAILURES)
    monitor = sock.context.socket(zmq.PAIR)
    monitor.setsockopt(zmq.LINGER, 0)
    monitor.connect(address)
    return monitor


def handshake_failed(monitor: zmq.Socket[Any] | None) -> bool:
    """Whether a handshake failure was reported on ``monitor`` (drains it)."""
    failed = False
    while monitor is not None and monitor.poll(0):
        monitor.recv_multipart()
        failed = True
    return failed


def unwatch(sock: zmq.Socket[Any], monitor: zmq.Socket[Any] | None) -> None:
    """Stop monitoring ``sock`` and close the monitor socket."""
    if monitor is None:
        return
    try:
        sock.disable_monitor()
    except zmq.ZMQError:
        pass
    monitor.close(linger=0)


class _AllowList:
    """ZAP callback: a key is admitted when ``role_of`` knows it."""

    def __init__(self, role_of: Callable[[str], str | None]) -> None:
        self.role_of = role_of

    def callback(self, domain: str, key: bytes) -> bool:
        allowed = self.role_of(key.decode("ascii", "replace")) is not None
        if not allowed:
            log.warning(
                "refused a connection: key %s is not in the cluster's allow-list", key.decode("ascii", "replace")
            )
        return allowed


class Gate:
    """CurveZMQ on a server socket, and the role of whoever sent each message.

    Args:
        context: the daemon's own context (ZeroMQ runs one authentication handler per context).
        sock: the ROUTER socket, not yet bound.
        credentials: the daemon's key pair (insecure: no CURVE, every peer is ``admin``).
        role_of: the role of a public key, None when the key is not allowed; called at every
            handshake and every message, so it must be cheap and answer from current state.
    """

    def __init__(
        self,
        context: zmq.Context[Any],
        sock: zmq.Socket[Any],
        credentials: Credentials,
        role_of: Callable[[str], str | None],
    ) -> None:
        self.secure = credentials.secure
        self.role_of = role_of
        self._authenticator: ThreadAuthenticator | None = None
        if credentials.pair is None:
            return
        self._authenticator = ThreadAuthenticator(context, log=logging.getLogger("hcstore.security.zap"))
        self._authenticator.start()
        self._authenticator.configure_curve_callback("*", credentials_provider=_AllowList(role_of))
        sock.curve_server = True
        sock.curve_secretkey = credentials.pair.secret.encode("ascii")
        sock.curve_publickey = credentials.pair.public.encode("ascii")

    def role(self, sender: str) -> str | None:
        """The role of ``sender`` (:func:`hcstore.wire.server.peer_of` of a received message: with CurveZMQ,
        the public key that sent it); None: not allowed now. Without CurveZMQ every peer is ``admin``."""
        return self.role_of(sender) if self.secure else "admin"

    def require(self, sender: str, needed: str, what: str) -> None:
        """Refuse (:class:`~hcstore.errors.Forbidden`) ``what`` (a request, for the message) unless
        ``sender`` has at least role ``needed``."""
        role = self.role(sender)
        if not permits(role, needed):
            held = f"of role {role}" if role else "not in the allow-list (revoked?)"
            raise Forbidden(f"{what} needs a key of role {needed}; this one is {held}")

    def close(self) -> None:
        """Stop the authentication handler."""
        if self._authenticator is not None:
            self._authenticator.stop()
            self._authenticator = None
