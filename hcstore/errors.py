"""The hcstore error family.

Every error an hcstore user can meet is an :class:`HCStoreError`; where a built-in
exception already means the same thing it is a base too, so ``except
FileNotFoundError`` works on a missing object just as it does for fsspec.

Errors cross the wire as stable *codes*, never as message text: an agent replies
``{"ok": False, "code": "E_STORE_FULL", "detail": ...}`` and the client raises
the class registered for that code with :func:`error_for_code`. A code, once
shipped, never changes meaning; new failures get new codes. The base class
itself (``E_INTERNAL``) stands only for a bug: a user's mistake is an
:class:`InvalidRequest` (or a more precise class), a wait that ran out is a
:class:`Timeout`.

:class:`Retryable` errors are retried by one policy (:mod:`hcstore.client.retry`);
the others are final.

*Corrupt* is kept apart from *missing* (as tahoe-lafs keeps ``BadHashError``
apart from ``NotEnoughHashesError``): a corrupt fragment is reported and read
around; too few good fragments is :class:`NotEnoughFragments`.
"""

from __future__ import annotations


class HCStoreError(Exception):
    """Base class of every hcstore error. ``code`` is its stable wire code."""

    code = "E_INTERNAL"


class InvalidRequest(HCStoreError, ValueError):
    """A request named something invalid: a bad bucket or key, range or field."""

    code = "E_BAD_FIELD"


class UnsupportedValue(InvalidRequest, TypeError):
    """A Python value of a type that is not stored without pickle, and pickle was not asked for."""

    code = "E_VALUE_TYPE"


class UntrustedValue(InvalidRequest):
    """A stored value that would run code when read (a pickle) and is not allowed or not proven authentic.

    A pickle is read only when the reader asks for it and its metadata carries a MAC that verifies
    under the cluster secret (see :mod:`ray_integration.values`); anything else raises this.
    """

    code = "E_UNTRUSTED_VALUE"


class ProtocolError(HCStoreError, ValueError):
    """A message did not follow the wire protocol (frames, header, version)."""

    code = "E_MALFORMED"


class ProtocolVersionError(ProtocolError):
    """A message carried a protocol version this side does not speak."""

    code = "E_VERSION"


class UnknownOperation(ProtocolError):
    """A message named an operation the agent does not know."""

    code = "E_UNKNOWN_OP"


class MessageTooLarge(ProtocolError):
    """A message, frame or declared size exceeded the protocol's limits."""

    code = "E_TOO_LARGE"


class ObjectNotFound(HCStoreError, FileNotFoundError):
    """The object (or the fragment asked for) does not exist, or was deleted."""

    code = "E_NOT_FOUND"


class StoreFull(HCStoreError, OSError):
    """A write would cross the high watermark of every usable mountpath."""

    code = "E_STORE_FULL"


class CorruptFragment(HCStoreError):
    """A fragment's bytes do not match their recorded blake3 digest."""

    code = "E_CORRUPT"


class NotEnoughFragments(HCStoreError):
    """Fewer than ``k`` good fragments of an object could be read."""

    code = "E_NOT_ENOUGH_FRAGMENTS"


class NotEnoughNodes(HCStoreError):
    """A put could not reach its write quorum of distinct nodes; nothing was made visible."""

    code = "E_NOT_ENOUGH_NODES"


class Retryable(HCStoreError):
    """A transient failure: the same request may succeed if sent again."""

    code = "E_RETRYABLE"


class AgentUnavailable(Retryable, ConnectionError):
    """An agent did not accept or did not answer a request in time."""

    code = "E_UNAVAILABLE"


class ObjectChanged(Retryable):
    """The object was overwritten or deleted while it was being read."""

    code = "E_CHANGED"


class AgentBusy(Retryable):
    """An agent's queue of disk work is full; the request was not started and may be sent again."""

    code = "E_BUSY"


class PeerLimitReached(AgentBusy):
    """One client (peer) holds its whole share of an agent: as many open uploads, or as many bytes
    reserved ahead of its writes, as one peer may. The request was not started; it may be sent again
    once that peer's earlier uploads finish or expire. Other peers are not affected."""

    code = "E_PEER_LIMIT"


class NotProven(Retryable, ConnectionError):
    """Nodes that did not answer could hold a newer version (or a key a listing lacks): the answer is unproven.

    A read says "not found", or returns an older generation, only when the nodes that answered
    rule out anything newer (``docs/architecture.md``, "Reads that tell the truth"); otherwise it
    raises this, naming the nodes it could not ask in ``unreached``. Asking again once they are
    back, or later, answers.
    """

    code = "E_NOT_PROVEN"

    def __init__(self, message: str = "", unreached: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.unreached = tuple(unreached)

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (str(self), self.unreached))


class UploadNotFound(HCStoreError):
    """An agent holds no open upload by that id (expired, aborted or never opened)."""

    code = "E_NO_UPLOAD"


class DiskError(HCStoreError, OSError):
    """An agent's disk failed an I/O operation."""

    code = "E_IO"


class ClusterNotFound(HCStoreError, FileNotFoundError):
    """No cluster where one was looked for: a directory with no cluster, an endpoint where no
    controller answers, or none named at all (no argument, ``HCSTORE_CLUSTER`` or pointer)."""

    code = "E_NO_CLUSTER"


class Timeout(Retryable, TimeoutError):
    """Something awaited did not happen within the time allowed (it may still happen later)."""

    code = "E_TIMEOUT"


class ControllerUnavailable(AgentUnavailable):
    """The cluster's controller is not running, or did not answer in time."""

    code = "E_NO_CONTROLLER"


class NodeNotFound(HCStoreError, LookupError):
    """A node id that the cluster does not have."""

    code = "E_NO_NODE"


class ClusterExists(HCStoreError, FileExistsError):
    """A new cluster was asked for in a directory that already holds one."""

    code = "E_CLUSTER_EXISTS"


class StartFailed(HCStoreError):
    """A daemon (an agent or the controller) could not start, or exited while it was starting."""

    code = "E_START_FAILED"


class UnknownCodec(InvalidRequest):
    """A codec name that is unknown, or whose library is not installed here."""

    code = "E_CODEC"


class LocalFileError(HCStoreError, OSError):
    """A local file named by the user could not be read or written."""

    code = "E_LOCAL_FILE"


class NotInstalled(HCStoreError, ImportError):
    """An optional part of hcstore (such as Ray support) is not installed."""

    code = "E_NOT_INSTALLED"


class Forbidden(HCStoreError, PermissionError):
    """The key that sent a request is not allowed to run it (its role is too low, or it was revoked)."""

    code = "E_FORBIDDEN"


class AuthenticationError(HCStoreError, PermissionError):
    """This process cannot prove who it is, or the peer could not: no key, an unreadable key file,
    a server whose public key is unknown, or a handshake the peer refused."""

    code = "E_AUTH"


_BY_CODE: dict[str, type[HCStoreError]] = {}


def _register(*classes: type[HCStoreError]) -> None:
    for cls in classes:
        if cls.code in _BY_CODE:
            raise RuntimeError(f"error code {cls.code} registered twice")
        _BY_CODE[cls.code] = cls


_register(
    HCStoreError,
    InvalidRequest,
    UnsupportedValue,
    UntrustedValue,
    ProtocolError,
    ProtocolVersionError,
    UnknownOperation,
    MessageTooLarge,
    ObjectNotFound,
    StoreFull,
    CorruptFragment,
    NotEnoughFragments,
    NotEnoughNodes,
    Retryable,
    AgentUnavailable,
    ObjectChanged,
    AgentBusy,
    PeerLimitReached,
    NotProven,
    UploadNotFound,
    DiskError,
    ClusterNotFound,
    Timeout,
    ControllerUnavailable,
    NodeNotFound,
    ClusterExists,
    StartFailed,
    UnknownCodec,
    LocalFileError,
    NotInstalled,
    Forbidden,
    AuthenticationError,
)


def error_for_code(code: str, detail: str = "") -> HCStoreError:
    """Build the exception registered for a wire ``code`` (unknown codes give the base class)."""
    cls = _BY_CODE.get(code, HCStoreError)
    return cls(detail or code)


def error_codes() -> dict[str, type[HCStoreError]]:
    """All registered wire codes and their classes (a copy)."""
    return dict(_BY_CODE)
