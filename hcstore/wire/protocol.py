"""The hcstore wire protocol, version 1.

Every message is a list of ZeroMQ frames ``[header, payload...]``. The header is
a msgpack map; payloads are raw bytes frames that are sent without copies and
never pickled. A ROUTER socket sees the peer's routing id as an extra first
frame, which this module never touches.

Request header::

    {"v": 1, "op": "<operation>", "id": <request id, int>, "epoch": <map epoch, int>, ...fields}

Reply header::

    {"v": 1, "id": <request id>, "ok": True, "epoch": <agent's map epoch>, ...fields}
    {"v": 1, "id": <request id>, "ok": False, "code": "E_...", "detail": "<for humans>"}

Every field of every operation is declared in :data:`OPERATIONS` with its type
and bounds, and :func:`decode_request` checks all of them before an agent acts,
so a malformed, truncated, oversized or unknown message becomes an error reply
with a stable code (see :mod:`hcstore.errors`) and the agent keeps serving.
The limits below are part of the protocol version.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgpack

from hcstore.errors import (
    HCStoreError,
    InvalidRequest,
    MessageTooLarge,
    ProtocolError,
    ProtocolVersionError,
    UnknownOperation,
    error_for_code,
)

PROTOCOL_VERSION = 1
MAX_HEADER_BYTES = 1 << 20  # a header with a fragment trailer of a 64 GiB object fits
MAX_CHUNK_BYTES = 64 << 20  # largest chunk (one frame) of a fragment
MAX_READ_BYTES = 256 << 20  # largest reply to one read request
MAX_MESSAGE_BYTES = MAX_CHUNK_BYTES + MAX_HEADER_BYTES + 4096  # enforced by the socket too
MAX_STRIPES = 1 << 32
MAX_LIST_LIMIT = 10_000

_INT64 = (0, (1 << 63) - 1)

READ_PATHS = ("local", "remote", "degraded", "hedged")
"""How a client read a fragment, told in a read's optional ``path`` field and counted by the agent:
from its own node, from another node, from a parity fragment read because a data fragment could
not be (the stripe is decoded), or as a hedge for a fragment that answered too slowly."""


@dataclass(frozen=True)
class Field:
    """One header field: its Python type, whether required, and integer bounds."""

    kind: type | tuple[type, ...]
    required: bool = True
    bounds: tuple[int, int] | None = None


_STR = Field(str)
_INT = Field(int, bounds=_INT64)
_OBJ = {"bucket": _STR, "key": _STR}
_FRAG = {**_OBJ, "gen": _STR, "idx": Field(int, bounds=(0, 255))}

OPERATIONS: dict[str, dict[str, Field]] = {
    "ping": {},
    "node_stats": {},
    # Start a fragment upload; the agent checks capacity before anything is written.
    "open": {
        **_FRAG,
        "expected_bytes": Field(int, required=False, bounds=_INT64),
        "chunk_size": Field(int, bounds=(1, MAX_CHUNK_BYTES)),
    },
    # Write a whole fragment (its chunks as payload frames) and prepare it: open + write + prepare in one.
    "store": {**_FRAG, "chunk_size": Field(int, bounds=(1, MAX_CHUNK_BYTES)), "header": Field(dict)},
    # Append chunk `stripe` (one payload frame) to an open upload; stripes arrive in order.
    "write": {"upload": _STR, "stripe": Field(int, bounds=(0, MAX_STRIPES))},
    # Finish an upload: append the trailer, fsync, rename into place as *prepared*.
    "prepare": {"upload": _STR, "header": Field(dict)},
    # Make a prepared fragment visible.
    "commit": dict(_FRAG),
    "abort": {"upload": _STR},
    # Delete this node's fragments of a key with a generation older than `gen`.
    "retire": {**_OBJ, "gen": _STR},
    # Write a committed tombstone fragment and retire older generations.
    "tombstone": {"header": Field(dict)},
    # Read `count` whole chunks starting at stripe `first` of one fragment.
    # `path`: how the client reads this fragment (one of READ_PATHS), for the agent's metrics.
    "read": {
        **_FRAG,
        "first": Field(int, bounds=(0, MAX_STRIPES)),
        "count": Field(int, bounds=(1, MAX_STRIPES)),
        "path": Field(str, required=False),
    },
    # Delete one fragment that has been rebuilt on its new owner (rebalance, drain).
    "drop": dict(_FRAG),
    # Take a corrupt fragment out of service (scrub found a bad chunk); repair rebuilds it.
    "quarantine": dict(_FRAG),
    # Run background work now: "repair" (a scan of this node's objects) or "scrub".
    "maintain": {"job": _STR},
    # All generations and fragments of a key on this node.
    "locate": dict(_OBJ),
    # Newest entry per key under a prefix, in key order, after `start_after`.
    "list": {
        "bucket": _STR,
        "prefix": Field(str, required=False),
        "start_after": Field(str, required=False),
        "limit": Field(int, required=False, bounds=(1, MAX_LIST_LIMIT)),
    },
    # All buckets that hold at least one fragment on this node.
    "buckets": {},
}


# The controller's operations (a separate socket and process; same framing and rules).
CONTROLLER_OPERATIONS: dict[str, dict[str, Field]] = {
    # An agent's periodic report; the first one registers it. The reply carries the map when newer.
    "heartbeat": {
        "node": _STR,
        "endpoint": _STR,
        "labels": Field(dict),
        "weight": Field((int, float)),
        "map": Field(dict, required=False),
        "stats": Field(dict, required=False),
    },
    "get_map": {},
    # drain | resume | remove (remove refuses while the node still holds fragments, unless force)
    "node_admin": {"node": _STR, "action": _STR, "force": Field(bool, required=False)},
    "status": {},
    # The allow-list: list | add (key, role, name) | revoke (key).
    "keys": {
        "action": _STR,
        "key": Field(str, required=False),
        "role": Field(str, required=False),
        "name": Field(str, required=False),
    },
    # The cluster secret, for writers that sign values (hcstore.secret); an error when the controller has none.
    "cluster_secret": {},
}


@dataclass
class Request:
    """A decoded, validated request."""

    op: str
    id: int
    epoch: int
    fields: dict[str, Any]
    payloads: list[Any]
    sender: str = ""  # the public key that sent it, set by an authenticating server ("" when insecure)


def pack(header: dict[str, Any]) -> bytes:
    """Serialise a header map."""
    packed: bytes = msgpack.packb(header, use_bin_type=True)
    return packed


def _unpack(frame: Any) -> dict[str, Any]:
    raw = frame.bytes if hasattr(frame, "bytes") else bytes(frame)
    if len(raw) > MAX_HEADER_BYTES:
        raise MessageTooLarge(f"header of {len(raw)} bytes exceeds the limit of {MAX_HEADER_BYTES}")
    try:
        header = msgpack.unpackb(raw, raw=False, strict_map_key=True)
    except Exception as exc:  # noqa: BLE001 - msgpack raises several unrelated types for bad input
        raise ProtocolError(f"header is not valid msgpack: {type(exc).__name__}") from None
    if not isinstance(header, dict):
        raise ProtocolError(f"header must be a map, got {type(header).__name__}")
    return header


def request_frames(
    op: str, request_id: int, epoch: int, fields: dict[str, Any], payloads: Sequence[Any] = ()
) -> list[Any]:
    """The frames of a request (header first, then payloads as given)."""
    header = {"v": PROTOCOL_VERSION, "op": op, "id": request_id, "epoch": epoch, **fields}
    return [pack(header), *payloads]


def reply_frames(
    request_id: int, epoch: int, fields: dict[str, Any] | None = None, payloads: Sequence[Any] = ()
) -> list[Any]:
    """The frames of a success reply."""
    header = {"v": PROTOCOL_VERSION, "id": request_id, "ok": True, "epoch": epoch, **(fields or {})}
    return [pack(header), *payloads]


def error_frames(request_id: int, epoch: int, error: HCStoreError) -> list[Any]:
    """The frames of an error reply: the stable code plus a human-readable detail."""
    header = {
        "v": PROTOCOL_VERSION,
        "id": request_id,
        "ok": False,
        "epoch": epoch,
        "code": error.code,
        "detail": str(error)[:2000],
    }
    return [pack(header)]


def peek_request_id(frames: Sequence[Any]) -> int:
    """Best-effort request id of a message that failed validation (0 when unknown)."""
    try:
        request_id = _unpack(frames[0]).get("id", 0)
    except (HCStoreError, IndexError):
        return 0
    return request_id if isinstance(request_id, int) and 0 <= request_id < (1 << 63) else 0


def _check_field(op: str, name: str, spec: Field, value: Any) -> None:
    if (isinstance(value, bool) and spec.kind is not bool) or not isinstance(value, spec.kind):
        raise InvalidRequest(f"{op}: field {name!r} must be {_kind_name(spec.kind)}, got {type(value).__name__}")
    if spec.bounds is not None and isinstance(value, int):  # bounds are declared on integer fields only
        low, high = spec.bounds
        if not low <= value <= high:
            raise (MessageTooLarge if value > high else InvalidRequest)(
                f"{op}: field {name!r}={value} is outside [{low}, {high}]"
            )


def _kind_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(k.__name__ for k in kinds)


def decode_request(frames: Sequence[Any], operations: dict[str, dict[str, Field]] | None = None) -> Request:
    """Decode and validate a request's frames (routing id already removed).

    Raises:
        ProtocolError: (or a subclass) the message is malformed, of another
            version, of an unknown operation, or too large.
        InvalidRequest: a field has the wrong type or is out of bounds.
    """
    if not frames:
        raise ProtocolError("empty message: expected [header, payload...]")
    header = _unpack(frames[0])
    version = header.get("v")
    if version != PROTOCOL_VERSION:
        raise ProtocolVersionError(
            f"protocol version {version!r} is not supported (this agent speaks {PROTOCOL_VERSION})"
        )
    op = header.get("op")
    request_id = header.get("id")
    epoch = header.get("epoch", 0)
    if not isinstance(request_id, int) or isinstance(request_id, bool) or not 0 <= request_id < (1 << 63):
        raise ProtocolError(f"request id must be a non-negative integer, got {request_id!r}")
    if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 0:
        raise ProtocolError(f"epoch must be a non-negative integer, got {epoch!r}")
    operations = OPERATIONS if operations is None else operations
    if not isinstance(op, str) or op not in operations:
        raise UnknownOperation(f"unknown operation {op!r}")
    spec = operations[op]
    fields = {}
    for name, field_spec in spec.items():
        if name not in header:
            if field_spec.required:
                raise InvalidRequest(f"{op}: missing field {name!r}")
            continue
        _check_field(op, name, field_spec, header[name])
        fields[name] = header[name]
    payloads = list(frames[1:])
    for payload in payloads:
        if len(payload) > MAX_CHUNK_BYTES:
            raise MessageTooLarge(f"{op}: payload frame of {len(payload)} bytes exceeds {MAX_CHUNK_BYTES}")
    return Request(op, request_id, epoch, fields, payloads)


@dataclass
class Reply:
    """A decoded reply: its header map and payload frames."""

    header: dict[str, Any]
    payloads: list[Any]

    @property
    def ok(self) -> bool:
        """Whether the request succeeded (an error reply carries a code and a detail instead)."""
        return bool(self.header.get("ok"))

    def error(self) -> HCStoreError:
        """The exception this error reply stands for; its message ends with the request id, as the daemon logs it."""
        detail = str(self.header.get("detail", "")) or str(self.header.get("code", "E_INTERNAL"))
        return error_for_code(str(self.header.get("code", "E_INTERNAL")), f"{detail} (request {self.header.get('id')})")

    def unwrap(self) -> Reply:
        """Return self, or raise the reply's error."""
        if not self.ok:
            raise self.error()
        return self


def decode_reply(frames: Sequence[Any]) -> Reply:
    """Decode a reply's frames.

    Raises:
        ProtocolError: the reply is malformed or of another version.
    """
    if not frames:
        raise ProtocolError("empty reply")
    header = _unpack(frames[0])
    if header.get("v") != PROTOCOL_VERSION:
        raise ProtocolVersionError(f"reply of protocol version {header.get('v')!r}, expected {PROTOCOL_VERSION}")
    if not isinstance(header.get("id"), int):
        raise ProtocolError("reply without a request id")
    return Reply(header, list(frames[1:]))
