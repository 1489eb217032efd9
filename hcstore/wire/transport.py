"""Client side of the wire: DEALER sockets to agents, replies matched by request id.

Sockets are created lazily, per process and per thread (ZeroMQ sockets are
not thread-safe, and a forked or unpickled client must not touch its parent's
sockets), so every object that holds a :class:`Transport` pickles without
live sockets.

Sockets use ``ZMQ_IMMEDIATE``: a message is queued only to an established
connection, so a send never waits in a queue for a dead agent. When a socket
has no connection, a plain TCP connect tells a stopped agent (refused at
once) from one that is starting or has restarted (a fresh socket connects
within ``connect_timeout``). An agent that refused, or did not answer in
time, is remembered as *unavailable* for a short cool-down, during which
sends to it fail at once, and its socket is replaced so that late replies to
abandoned requests never reach a new request.

With :class:`~hcstore.security.curve.Credentials` that hold a key pair, every socket is a
CurveZMQ client: it presents this process's key and talks only to the holder of the
endpoint's public key, which the owner of the transport states with :meth:`Transport.trust`
(from the cluster map's allow-list, or the controller's key). A handshake the server refuses
(an unknown or revoked key) or cannot complete (a wrong server key) is an
:class:`~hcstore.errors.AuthenticationError`, not a silent time-out.
"""

from __future__ import annotations

import itertools
import os
import socket
import threading
import time
from collections.abc import Iterable, Sequence
from typing import Any

import zmq

from hcstore.errors import AgentUnavailable, AuthenticationError, HCStoreError, ProtocolError
from hcstore.security.curve import INSECURE, Credentials, handshake_failed, secure_client, unwatch, watch_handshakes
from hcstore.wire import protocol
from hcstore.wire.protocol import Reply

COOL_DOWN = 3.0
HANDSHAKE_GRACE = 1.5  # seconds a CurveZMQ handshake may add to connect_timeout
CANCEL_CHECK = 0.1  # seconds between two looks at cancel() while a reply is awaited
CLIENT_HWM = 1024  # messages queued per agent socket and direction (see _ThreadState.socket)


def _accepts_connections(endpoint: str, timeout: float) -> bool:
    """A plain TCP connect to a ``tcp://host:port`` endpoint: a stopped agent refuses at once,
    where ZeroMQ would silently keep retrying. Other transports are assumed reachable."""
    if not endpoint.startswith("tcp://"):
        return True
    host, _, port = endpoint[len("tcp://") :].rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            return True
    except (OSError, ValueError):
        return False


class _ThreadState:
    """The sockets and outstanding requests of one thread of one process."""

    def __init__(self, io_threads: int, credentials: Credentials, server_keys: dict[str, str]) -> None:
        self.pid = os.getpid()
        self.thread = threading.current_thread()
        self.credentials = credentials
        self.server_keys = server_keys  # shared with the transport: endpoint -> public key
        # One context per process, never terminated by garbage collection: a collected context
        # whose sockets are still open would block in zmq_ctx_term forever.
        self.context: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance(io_threads=io_threads)
        self.sockets: dict[str, zmq.Socket[bytes]] = {}
        self.endpoint_of: dict[zmq.Socket[bytes], str] = {}
        self.monitors: dict[str, zmq.Socket[bytes]] = {}  # endpoint -> its socket's handshake failures
        self.poller = zmq.Poller()
        self.pending: dict[int, str] = {}  # request id -> endpoint
        self.established: set[str] = set()  # endpoints whose current socket has sent a request
        self.done: dict[int, Reply | HCStoreError] = {}

    def socket(self, endpoint: str) -> zmq.Socket[bytes]:
        sock = self.sockets.get(endpoint)
        if sock is None:
            server_key = self.server_keys.get(endpoint, "")
            if self.credentials.secure and not server_key:
                raise AuthenticationError(
                    f"no public key is known for {endpoint}: the cluster map's allow-list binds none to it "
                    "(is the node registered with its key?), so this client cannot authenticate it"
                )
            sock = self.context.socket(zmq.DEALER)
            secure_client(sock, self.credentials, server_key)
            if self.credentials.secure:
                self.monitors[endpoint] = watch_handshakes(sock)
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.IMMEDIATE, 1)
            # Queues in messages. A client keeps about `window` (8) chunk writes and a few reads in flight per
            # agent and thread; a send that finds the queue full counts the agent as lost, so the limit sits far
            # above that, while still bounding memory. Replies are matched as they arrive.
            sock.setsockopt(zmq.SNDHWM, CLIENT_HWM)
            sock.setsockopt(zmq.RCVHWM, CLIENT_HWM)
            # Per frame (ZeroMQ checks each part, not their sum; decode_reply checks the sum): a reply's
            # largest frame is a read's chunk, its header at most MAX_HEADER_BYTES. A larger one drops the connection.
            sock.setsockopt(zmq.MAXMSGSIZE, protocol.MAX_REPLY_BYTES)
            sock.setsockopt(zmq.RECONNECT_IVL, 50)
            sock.setsockopt(zmq.RECONNECT_IVL_MAX, 1000)
            try:
                sock.connect(endpoint)
            except zmq.ZMQError as exc:  # an endpoint from the wire (a map, a heartbeat) can be anything
                sock.close(linger=0)
                raise AgentUnavailable(f"cannot connect to agent endpoint {endpoint[:200]!r}: {exc}") from None
            self.sockets[endpoint] = sock
            self.endpoint_of[sock] = endpoint
            self.poller.register(sock, zmq.POLLIN)
        return sock

    def drop(self, endpoint: str, error: HCStoreError) -> None:
        """Close an endpoint's socket and fail its outstanding requests."""
        self.established.discard(endpoint)
        sock = self.sockets.pop(endpoint, None)
        if sock is not None:
            unwatch(sock, self.monitors.pop(endpoint, None))
            self.poller.unregister(sock)
            del self.endpoint_of[sock]
            sock.close(linger=0)
        for request_id, ep in list(self.pending.items()):
            if ep == endpoint:
                del self.pending[request_id]
                self.done[request_id] = error

    def handshake_failed(self, endpoint: str) -> bool:
        """Whether the endpoint's socket reported a failed CurveZMQ handshake."""
        return handshake_failed(self.monitors.get(endpoint))

    def close(self) -> None:
        for endpoint, sock in self.sockets.items():
            unwatch(sock, self.monitors.pop(endpoint, None))
            sock.close(linger=0)
        self.sockets.clear()
        self.endpoint_of.clear()


class Transport:
    """Sends requests to agents and collects their replies."""

    def __init__(
        self,
        *,
        connect_timeout: float = 0.5,
        request_timeout: float = 10.0,
        io_threads: int = 0,
        credentials: Credentials = INSECURE,
        server_keys: dict[str, str] | None = None,
    ) -> None:
        self.connect_timeout = connect_timeout
        self.request_timeout = request_timeout
        self.io_threads = io_threads or min(4, os.cpu_count() or 1)
        self.credentials = credentials
        self.server_keys: dict[str, str] = dict(server_keys or {})
        self._local = threading.local()
        self._states: list[_ThreadState] = []  # every thread's, so that close() can close those of ended threads
        self._states_lock = threading.Lock()
        self._ids = itertools.count(1)
        self._unavailable_until: dict[str, float] = {}
        self._slow_until: dict[str, float] = {}
        self.max_epoch = 0  # highest cluster-map epoch any reply carried
        self._cancelled = threading.Event()

    def __getstate__(self) -> dict[str, Any]:
        return {
            "connect_timeout": self.connect_timeout,
            "request_timeout": self.request_timeout,
            "io_threads": self.io_threads,
            "credentials": self.credentials,
            "server_keys": self.server_keys,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        type(self).__init__(self, **state)

    @property
    def _state(self) -> _ThreadState:
        state: _ThreadState | None = getattr(self._local, "state", None)
        if state is None or state.pid != os.getpid():
            state = self._local.state = _ThreadState(self.io_threads, self.credentials, self.server_keys)
            with self._states_lock:
                self._states = [*self._close_ended(self._states), state]
        return state

    @staticmethod
    def _close_ended(states: list[_ThreadState]) -> list[_ThreadState]:
        """Close the sockets of this process's threads that have ended (no one else can use them now) and
        forget those of a parent process (a fork's copies are not ours to close); the rest, still in use."""
        ours = [state for state in states if state.pid == os.getpid()]
        for state in ours:
            if not state.thread.is_alive():
                state.close()
        return [state for state in ours if state.thread.is_alive()]

    def trust_nodes(self, keys: Iterable[tuple[str, str]]) -> None:
        """:meth:`trust` each ``(endpoint, key)`` pair that has both (a cluster map's nodes)."""
        for endpoint, key in keys:
            if endpoint and key:
                self.trust(endpoint, key)

    def trust(self, endpoint: str, server_key: str) -> None:
        """Talk to ``endpoint`` only if it proves to hold ``server_key`` (its CurveZMQ public key).

        A changed key (a node re-keyed, an endpoint reused by another node) replaces this thread's
        socket; other threads' sockets keep the old key until they fail.
        """
        if self.server_keys.get(endpoint) == server_key:
            return
        self.server_keys[endpoint] = server_key
        state: _ThreadState | None = getattr(self._local, "state", None)
        if state is not None and state.pid == os.getpid() and endpoint in state.sockets:
            state.drop(endpoint, AgentUnavailable(f"agent {endpoint} changed its key"))

    @property
    def handshake_timeout(self) -> float:
        """How long a new connection may take: ``connect_timeout``, plus, with CurveZMQ, time for the
        handshake (a key exchange, and the server's authentication handler, which a busy machine may
        schedule late). An agent that is down is still found at once: it refuses the TCP connection."""
        return self.connect_timeout + (HANDSHAKE_GRACE if self.credentials.secure else 0.0)

    def is_unavailable(self, endpoint: str) -> bool:
        """True while ``endpoint`` is in its cool-down after failing."""
        return self._unavailable_until.get(endpoint, 0.0) > time.monotonic()

    def is_slow(self, endpoint: str) -> bool:
        """True while ``endpoint`` is in its cool-down after answering too slowly."""
        return self._slow_until.get(endpoint, 0.0) > time.monotonic()

    def mark_slow(self, endpoint: str) -> None:
        """Start ``endpoint``'s cool-down after it answered too slowly (see :meth:`is_slow`)."""
        self._slow_until[endpoint] = time.monotonic() + COOL_DOWN

    def forgive(self, endpoints: Iterable[str]) -> None:
        """End the cool-down of these agents (the cluster map says they are back)."""
        for endpoint in endpoints:
            self._unavailable_until.pop(endpoint, None)
            self._slow_until.pop(endpoint, None)

    def mark_unavailable(self, endpoint: str, reason: str) -> None:
        """Start ``endpoint``'s cool-down; this thread's socket to it closes and its requests fail with ``reason``."""
        self._unavailable_until[endpoint] = time.monotonic() + COOL_DOWN
        self._state.drop(endpoint, AgentUnavailable(f"agent {endpoint} {reason}"))

    def send(
        self, endpoint: str, op: str, fields: dict[str, Any], payloads: Sequence[Any] = (), *, epoch: int = 0
    ) -> int:
        """Queue one request; returns its id.

        Raises:
            AgentUnavailable: no connection to the agent could be made in time.
        """
        state = self._state
        sock = state.socket(endpoint)
        if not sock.poll(0, zmq.POLLOUT):
            if self.is_unavailable(endpoint):
                raise AgentUnavailable(f"agent {endpoint} is unavailable (failed recently)")
            if not _accepts_connections(endpoint, self.connect_timeout):
                self.mark_unavailable(endpoint, "refused the connection")
                raise AgentUnavailable(f"agent {endpoint} refused the connection (not running?)")
            if endpoint in state.established:
                # The agent restarted; this socket may be backing off its reconnects. Start afresh.
                state.drop(endpoint, AgentUnavailable(f"agent {endpoint} restarted"))
                sock = state.socket(endpoint)
            if not sock.poll(int(self.handshake_timeout * 1000), zmq.POLLOUT):
                if state.handshake_failed(endpoint):
                    self.mark_unavailable(endpoint, "refused the authentication handshake")
                    raise AuthenticationError(
                        f"{endpoint} refused this client's key, or does not hold the public key "
                        f"{self.server_keys.get(endpoint, '')!r} this client expects: check that the key "
                        f"{self.credentials.public!r} is in the cluster's allow-list (hcstore keys list)"
                    )
                self.mark_unavailable(endpoint, f"accepted no connection within {self.handshake_timeout}s")
                raise AgentUnavailable(f"agent {endpoint} accepted no connection within {self.handshake_timeout}s")
        request_id = next(self._ids)
        try:
            sock.send_multipart(
                protocol.request_frames(op, request_id, epoch, fields, payloads), copy=False, flags=zmq.NOBLOCK
            )
        except zmq.Again:
            self.mark_unavailable(endpoint, "dropped its connection")
            raise AgentUnavailable(f"agent {endpoint} dropped its connection") from None
        self._unavailable_until.pop(endpoint, None)
        state.established.add(endpoint)
        state.pending[request_id] = endpoint
        return request_id

    def _receive(self, timeout: float) -> None:
        state = self._state
        for sock, _ in state.poller.poll(max(0, int(timeout * 1000))):
            while True:
                try:
                    frames = sock.recv_multipart(zmq.NOBLOCK, copy=False)
                except zmq.Again:
                    break
                try:
                    reply = protocol.decode_reply(frames)
                except ProtocolError:
                    continue
                epoch = reply.header.get("epoch", 0)
                if isinstance(epoch, int) and epoch > self.max_epoch:
                    self.max_epoch = epoch
                request_id = reply.header["id"]
                if state.pending.pop(request_id, None) is not None:
                    state.done[request_id] = reply

    def cancel(self) -> None:
        """From any thread: every wait for a reply, now or later, ends at once with AgentUnavailable.

        For a process that is stopping: its threads waiting on agents that will not answer let go.
        """
        self._cancelled.set()

    def poll(self, request_ids: Iterable[int], timeout: float | None = None) -> dict[int, Reply | HCStoreError]:
        """Replies (or errors) for whichever of ``request_ids`` finish first.

        Waits until at least one is done or ``timeout`` (default: the request
        timeout) passes; returns an empty dict on time-out.
        """
        wanted = list(request_ids)
        state = self._state
        deadline = time.monotonic() + (self.request_timeout if timeout is None else timeout)
        while True:
            ready = {i: state.done.pop(i) for i in wanted if i in state.done}
            if ready or not wanted:
                return ready
            if self._cancelled.is_set():
                return {i: AgentUnavailable("not waiting for a reply: this process is stopping") for i in wanted}
            for request_id in wanted:
                if request_id not in state.pending:
                    state.done[request_id] = AgentUnavailable(f"request {request_id} is not outstanding")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return {}
            self._receive(min(remaining, CANCEL_CHECK))

    def expire(self, request_ids: Iterable[int]) -> None:
        """Give up on requests: their agents count as unavailable and the requests fail."""
        state = self._state
        for request_id in list(request_ids):
            endpoint = state.pending.get(request_id)
            if endpoint is not None:
                self.mark_unavailable(endpoint, f"did not answer within {self.request_timeout}s")

    def wait(self, request_ids: Iterable[int], timeout: float | None = None) -> dict[int, Reply | HCStoreError]:
        """Replies (or errors) for all of ``request_ids``; those not done by ``timeout`` are expired."""
        wanted = set(request_ids)
        results: dict[int, Reply | HCStoreError] = {}
        deadline = time.monotonic() + (self.request_timeout if timeout is None else timeout)
        while wanted:
            got = self.poll(wanted, max(0.0, deadline - time.monotonic()))
            if not got:
                self.expire(wanted)
                got = self.poll(wanted, 0)
            results.update(got)
            wanted -= got.keys()
        return results

    def forget(self, request_ids: Iterable[int]) -> None:
        """Stop waiting for requests whose answers no longer matter."""
        state = self._state
        for request_id in request_ids:
            state.pending.pop(request_id, None)
            state.done.pop(request_id, None)

    def request(
        self,
        endpoint: str,
        op: str,
        fields: dict[str, Any],
        payloads: Sequence[Any] = (),
        *,
        timeout: float | None = None,
    ) -> Reply:
        """Send one request and return its successful reply.

        Raises:
            HCStoreError: the agent's error, or AgentUnavailable.
        """
        request_id = self.send(endpoint, op, fields, payloads)
        result = self.wait([request_id], timeout)[request_id]
        if isinstance(result, HCStoreError):
            raise result
        return result.unwrap()

    def broadcast(
        self,
        endpoints: Iterable[str],
        op: str,
        fields: dict[str, Any],
        *,
        timeout: float | None = None,
        **per_endpoint: dict[str, Any],
    ) -> dict[str, Reply | HCStoreError]:
        """Send the same request to many agents; their replies or errors by endpoint.

        ``per_endpoint`` adds a field whose value differs by agent, e.g. ``start_after={endpoint: key}``.
        """
        ids: dict[int, str] = {}
        results: dict[str, Reply | HCStoreError] = {}
        for endpoint in endpoints:
            own = {name: values[endpoint] for name, values in per_endpoint.items()}
            try:
                ids[self.send(endpoint, op, {**fields, **own})] = endpoint
            except HCStoreError as exc:
                results[endpoint] = exc
        for request_id, result in self.wait(ids, timeout).items():
            results[ids[request_id]] = result.error() if isinstance(result, Reply) and not result.ok else result
        return results

    def close(self) -> None:
        """Close the calling thread's sockets and those of threads that have ended (a pool's, shut down);
        forget every thread's sockets and requests."""
        state: _ThreadState | None = getattr(self._local, "state", None)
        with self._states_lock:
            self._close_ended(self._states)
            self._states = []
        if state is not None and state.pid == os.getpid():
            state.close()
        self._local = threading.local()
