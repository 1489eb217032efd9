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

A field too large for a header (the cluster map of a large fleet, the controller's per-node
reports) travels as a *bulk frame* (:mod:`hcstore.wire.bulk`): compressed, one payload frame per
field, the header's ``bulk`` list naming them in order (:func:`with_bulk`). The controller sends
them to a requester that says it takes them (``framed``), and takes a heartbeat's map as one; the
decoders put them back among the header's fields before anything else looks at them.

Nothing on the wire is trusted before it is checked. A request is decoded once
(:func:`decode_header`, then :func:`check_request`; :func:`decode_request` does both):

1. the header frame is at most :data:`MAX_HEADER_BYTES` and is decoded with msgpack
   limits sized to what the protocol needs (:data:`MAX_ARRAY_ITEMS`,
   :data:`MAX_MAP_ENTRIES`, :data:`MAX_CONTAINERS`; no extension types), so a
   hostile header costs milliseconds, not seconds;
2. the whole message is at most :data:`MAX_MESSAGE_BYTES`, and each operation
   takes the payload frames :data:`PAYLOADS` allows (none for most);
3. every field of the operation, nested ones included (a fragment header, a
   heartbeat's cluster map, labels and report), is checked against its declared
   type and bounds in :data:`OPERATIONS` / :data:`CONTROLLER_OPERATIONS`: integers
   within their range (64-bit at most), floats finite, strings, lists and maps
   within their size.

A malformed, truncated, oversized or unknown message thus becomes an error reply
with a stable code (see :mod:`hcstore.errors`) naming the field, and an error
reply itself never fails to encode (:func:`error_frames`). The limits below are
part of the protocol version.
"""

from __future__ import annotations

import functools
import hashlib
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import msgpack

from ec.codec import MAX_K, MAX_M
from ec.fragment import MAX_CHUNK_SIZE, MAX_META_BYTES, MAX_NAME_BYTES
from hcstore.control.membership import MAX_MAINTENANCE_SECONDS
from hcstore.errors import (
    HCStoreError,
    InvalidRequest,
    MessageTooLarge,
    ProtocolError,
    ProtocolVersionError,
    UnknownOperation,
    error_for_code,
)
from hcstore.wire import bulk

PROTOCOL_VERSION = 1
MAX_HEADER_BYTES = 1 << 20  # a header with a fragment trailer of a 64 GiB object fits
MAX_CHUNK_BYTES = 64 << 20  # largest chunk (one frame) of a fragment
MAX_READ_BYTES = 256 << 20  # largest reply to one read request
MAX_MESSAGE_BYTES = MAX_CHUNK_BYTES + MAX_HEADER_BYTES + 4096  # a whole request, header and payloads together
MAX_REPLY_BYTES = MAX_READ_BYTES + MAX_HEADER_BYTES  # a whole reply: a read's chunks and its header
MAX_STORE_CHUNKS = 64  # payload frames of one `store` (a small fragment written in one message)
MAX_STRIPES = 1 << 32
MAX_LIST_LIMIT = 10_000
MAX_LOCATE_MANY = 64  # keys of one `locate_many`: the agent answers it inline, in about a millisecond
MAX_EPOCH = (1 << 63) - 1  # of a cluster map, in any message
# The highest epoch the controller moves up to because a peer says so: counting on from there, 2**62 changes
# stay below MAX_EPOCH. (An epoch it gave out itself it always takes back.)
MAX_ADOPTED_EPOCH = 1 << 62
MAX_MAP_NODES = 16384  # nodes in a cluster map; the controller registers no more
MAX_HEADER_MAP_NODES = 4096  # nodes of a map carried in a header; a larger one travels as a bulk frame
MAX_LABELS = 64  # failure-domain labels of one node
MAX_LABEL_BYTES = 256  # UTF-8 bytes of a label's name or value
MAX_WEIGHT = 1e6  # a node's capacity weight in placement
MAX_COUNT = (1 << 63) // MAX_MAP_NODES - 1  # a count in a heartbeat report: summed over every node, still 63 bits
MAX_REPORT_VALUES = 1024  # values in the free-form parts of one request (a heartbeat's report), nested ones included
MAX_REPORT_DEPTH = 4  # nesting of those values
MAX_DETAIL_CHARS = 2000  # of an error reply's detail

# msgpack limits of a request header: sized to the largest legitimate request, not to the frame.
MAX_ARRAY_ITEMS = MAX_HEADER_MAP_NODES  # the longest array: the nodes of a heartbeat's cluster map
MAX_MAP_ENTRIES = 1 << 16  # the largest map: a fragment's user metadata (MAX_META_BYTES, one entry per byte at most)
MAX_CONTAINERS = 3 * MAX_HEADER_MAP_NODES + 1024  # maps and arrays in one header: a cluster map has two per node,
# and its allow-list one per key

# What may travel as a bulk frame (hcstore.wire.bulk) instead of in the header: a cluster map, and the controller's
# heartbeat ages and reports of every node. Their limits: a map's nodes and keys, one entry per node.
BULK_FIELDS = frozenset({"map", "ages", "stats"})
MAX_BULK_CONTAINERS = 16 * MAX_MAP_NODES  # a map has three per node, a node's report a few more

_INT64 = (0, (1 << 63) - 1)
_UINT64_MAX = (1 << 64) - 1

REPAIR_READ = "repair"
READ_PATHS = ("local", "remote", "degraded", "hedged", REPAIR_READ)
"""How a client read a fragment, told in a read's optional ``path`` field and counted by the agent:
from its own node, from another node, from a parity fragment read because a data fragment could
not be (the stripe is decoded), as a hedge for a fragment that answered too slowly, or for a
repair, rebalance or drain (background work: the agent serves it after the reads of clients)."""


@dataclass(frozen=True)
class Field:
    """One header field: its type, whether it is required, and its bounds.

    Attributes:
        kind: the Python type(s) of the value (a ``bool`` is never an ``int`` here); ``object``: any plain
            value (None, bool, 64-bit integer, finite float, string, bytes, list, map), at most
            :data:`MAX_REPORT_DEPTH` deep and :data:`MAX_REPORT_VALUES` values per request.
        required: whether the field must be present.
        bounds: inclusive range of an integer or a float (floats must also be finite).
        size: the most UTF-8 bytes of a string, bytes of a bin, items of a list or entries of a map.
        fields: a map's known keys and their fields; a key not named here needs ``items``.
        items: the field of every item of a list, and of every value of a map whose key is not in ``fields``.
        key_size: the most UTF-8 bytes of a map's keys (always strings).
        keys: a pattern every key of a map must match in full.
    """

    kind: type | tuple[type, ...]
    required: bool = True
    bounds: tuple[float, float] | None = None
    size: int | None = None
    fields: Mapping[str, Field] | None = None
    items: Field | None = None
    key_size: int = MAX_NAME_BYTES
    keys: re.Pattern[str] | None = None


_NONE = type(None)
_KEY_BYTES = 40  # a CurveZMQ public key, Z85 text
_STR = Field(str, size=MAX_NAME_BYTES)
_INT = Field(int, bounds=_INT64)
_OBJ = {"bucket": _STR, "key": _STR}
_FRAG = {**_OBJ, "gen": _STR, "idx": Field(int, bounds=(0, 255))}

# What `store`, `prepare` and `tombstone` carry in `header`: the trailer fields of ec.fragment.FragmentHeader
# (which checks what they mean: stripes against size, placement against k + m, and so on).
_FRAGMENT_HEADER = Field(
    dict,
    fields={
        "bucket": _STR,
        "key": _STR,
        "generation": _STR,
        "kind": Field(str, size=32),
        "codec": Field(str, size=32),
        "k": Field(int, bounds=(1, MAX_K)),
        "m": Field(int, bounds=(0, MAX_M)),
        "chunk_size": Field(int, bounds=(1, MAX_CHUNK_SIZE)),
        "size": _INT,
        "index": Field(int, bounds=(0, MAX_K + MAX_M - 1)),
        "stripes": _INT,
        # A data fragment's digests are the agent's own (it hashes the chunks it receives); a tombstone's are empty.
        "digests": Field(bytes, required=False, size=MAX_HEADER_BYTES),
        "placement": Field(list, size=MAX_K + MAX_M, items=_STR),
        "created_ns": Field(int, bounds=(0, _UINT64_MAX)),
        "meta": Field(
            dict, required=False, size=MAX_MAP_ENTRIES, items=Field(str, size=MAX_META_BYTES), key_size=MAX_META_BYTES
        ),
    },
)

_LABELS = Field(dict, size=MAX_LABELS, items=Field(str, size=MAX_LABEL_BYTES), key_size=MAX_LABEL_BYTES)
_WEIGHT = Field((int, float), bounds=(0, MAX_WEIGHT))


def _records(fields: dict[str, Field]) -> Field:
    """An optional list of up to MAX_MAP_NODES maps, each with ``fields``."""
    return Field(list, required=False, size=MAX_MAP_NODES, items=Field(dict, fields=fields))


# A cluster map as placement.ClusterMap.to_dict writes it (ClusterMap.from_dict checks what it means).
_CLUSTER_MAP = Field(
    dict,
    required=False,
    fields={
        "epoch": Field(int, bounds=(0, MAX_EPOCH)),
        "nodes": _records(
            {
                "id": _STR,
                "endpoint": Field(str, required=False, size=MAX_NAME_BYTES),
                "weight": Field((int, float), required=False, bounds=(0, MAX_WEIGHT)),
                "labels": replace(_LABELS, required=False),
                "state": Field(str, required=False, size=32),
                "key": Field(str, required=False, size=_KEY_BYTES),
            }
        ),
        # The allow-list (placement.Grant): one entry per node key, plus clients and admins.
        "keys": _records(
            {
                "key": Field(str, size=_KEY_BYTES),
                "role": Field(str, size=16),
                "name": Field(str, required=False, size=MAX_NAME_BYTES),
            }
        ),
    },
)
# A heartbeat's report: free-form (shown by `status`), except what the controller adds up over nodes.
_ANY = Field(object)
_COUNT = Field(int, required=False, bounds=(0, MAX_COUNT))
_BY_LEVEL = Field(
    (dict, _NONE),
    required=False,
    size=256,
    items=Field(int, bounds=(0, MAX_COUNT)),
    key_size=32,
    keys=re.compile(r"[a-z0-9_]+"),
)
_REPORT = Field(
    dict,
    required=False,
    size=256,
    items=_ANY,
    fields={
        "data_fragments": _COUNT,
        "repair": Field(
            (dict, _NONE),
            required=False,
            size=256,
            items=_ANY,
            fields={
                "bytes_awaiting_repair": _COUNT,
                "bytes_missing": _COUNT,
                "bytes_repaired": _COUNT,
                "repaired": _COUNT,
                "failed": _COUNT,
                "levels": _BY_LEVEL,
                "level_bytes": _BY_LEVEL,
                "scrub": Field((dict, _NONE), required=False, size=256, items=_ANY, fields={"corrupt": _COUNT}),
            },
        ),
    },
)

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
    "store": {**_FRAG, "chunk_size": Field(int, bounds=(1, MAX_CHUNK_BYTES)), "header": _FRAGMENT_HEADER},
    # Append chunk `stripe` (one payload frame) to an open upload; stripes arrive in order.
    "write": {"upload": _STR, "stripe": Field(int, bounds=(0, MAX_STRIPES))},
    # Finish an upload: append the trailer, fsync, rename into place as *prepared*.
    "prepare": {"upload": _STR, "header": _FRAGMENT_HEADER},
    # Make a prepared fragment visible.
    "commit": dict(_FRAG),
    "abort": {"upload": _STR},
    # Delete this node's fragments of a key with a generation older than `gen`.
    "retire": {**_OBJ, "gen": _STR},
    # Write a committed tombstone fragment and retire older generations.
    "tombstone": {"header": _FRAGMENT_HEADER},
    # Read `count` whole chunks starting at stripe `first` of one fragment.
    # `path`: how the client reads this fragment (one of READ_PATHS), for the agent's metrics.
    "read": {
        **_FRAG,
        "first": Field(int, bounds=(0, MAX_STRIPES)),
        "count": Field(int, bounds=(1, MAX_STRIPES)),
        "path": Field(str, required=False, size=MAX_NAME_BYTES),
    },
    # Delete one fragment that has been rebuilt on its new owner (rebalance, drain).
    "drop": dict(_FRAG),
    # Take a corrupt fragment out of service (scrub found a bad chunk); repair rebuilds it.
    "quarantine": dict(_FRAG),
    # Run background work now: "repair" (a scan of this node's objects) or "scrub".
    "maintain": {"job": _STR},
    # All generations and fragments of a key on this node.
    "locate": dict(_OBJ),
    # What `locate` answers, for each of several keys (a repair scan's batch); `entries` holds one list per key.
    "locate_many": {"objects": Field(list, size=MAX_LOCATE_MANY, items=Field(dict, fields=_OBJ))},
    # Newest entry per key under a prefix, in key order, after `start_after`.
    "list": {
        "bucket": _STR,
        "prefix": Field(str, required=False, size=MAX_NAME_BYTES),
        "start_after": Field(str, required=False, size=MAX_NAME_BYTES),
        "limit": Field(int, required=False, bounds=(1, MAX_LIST_LIMIT)),
    },
    # All buckets that hold at least one fragment on this node.
    "buckets": {},
}


# The controller's operations (a separate socket and process; same framing and rules). A request with `framed`
# takes the large fields of its reply (BULK_FIELDS) as bulk frames; without it, all in the header.
_FRAMED = Field(bool, required=False)
CONTROLLER_OPERATIONS: dict[str, dict[str, Field]] = {
    # An agent's periodic report; the first one registers it. The reply carries the map when newer: the
    # changes since the agent's epoch (`delta`, with the new map's `digest`) when the agent takes them
    # (`deltas`) and the controller remembers them, else the whole map (`map`).
    "heartbeat": {
        "node": _STR,
        "endpoint": _STR,
        "labels": _LABELS,
        "weight": _WEIGHT,
        "map": _CLUSTER_MAP,
        "stats": _REPORT,
        "deltas": Field(bool, required=False),
        "framed": _FRAMED,
    },
    # The map: whole, or (`deltas`) the changes since the request's epoch with the new map's digest, as heartbeats;
    # `fresh`: with the changes heartbeats made since the last tick published first (for a waiter, not a poller).
    "get_map": {"framed": _FRAMED, "deltas": Field(bool, required=False), "fresh": Field(bool, required=False)},
    # drain | resume | remove (remove refuses while the node still holds fragments, unless force)
    "node_admin": {
        "node": _STR,
        "action": _STR,
        "force": Field(bool, required=False),
        "seconds": Field((int, float), required=False, bounds=(0, MAX_MAINTENANCE_SECONDS)),
        "framed": _FRAMED,
    },
    "status": {"framed": _FRAMED},
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

PAYLOADS: dict[str, tuple[int, int]] = {"write": (1, 1), "store": (0, MAX_STORE_CHUNKS)}
"""The payload frames an operation takes, as (fewest, most); an operation not named here takes none."""


@dataclass
class Request:
    """A decoded, validated request."""

    op: str
    id: int
    epoch: int
    fields: dict[str, Any]
    payloads: list[Any]
    sender: str = ""  # who sent it, set by the server (wire.server.peer_of): the public key with CurveZMQ


@dataclass(frozen=True)
class Packed:
    """A header value encoded already, spliced into a header as it is: a value many replies carry (the cluster
    map) is encoded once, not once per reply."""

    data: bytes

    @classmethod
    def of(cls, value: Any) -> Packed:
        """``value`` encoded as :func:`pack` encodes header values."""
        return cls(msgpack.packb(value, use_bin_type=True))

    @functools.cached_property
    def compressed(self) -> bytes:
        """The value as a bulk frame (:mod:`hcstore.wire.bulk`), compressed once."""
        return bulk.compress(self.data)


def with_bulk(fields: dict[str, Any], *, framed: bool) -> tuple[dict[str, Any], list[bytes]]:
    """The header fields and payload frames that carry ``fields``.

    Args:
        fields: a message's fields; values may be :class:`Packed`.
        framed: the receiver takes bulk frames: the fields of :data:`BULK_FIELDS` go compressed, one frame each,
            named in the header's ``bulk``. Otherwise every field goes in the header.

    Returns:
        The header's fields, and the frames to send before any other payload.
    """
    names = [name for name in fields if framed and name in BULK_FIELDS]
    if not names:
        return fields, []
    header = {name: value for name, value in fields.items() if name not in names}
    header["bulk"] = names
    values = (fields[name] if isinstance(fields[name], Packed) else Packed.of(fields[name]) for name in names)
    return header, [value.compressed for value in values]


def encode_map(wire_map: dict[str, Any]) -> tuple[Packed, bool]:
    """A cluster map to send (``ClusterMap.to_dict``), encoded, and whether it must go as a bulk frame: it lists
    more nodes or keys than a header's arrays hold (:data:`MAX_HEADER_MAP_NODES`), or takes half a header."""
    packed = Packed.of(wire_map)
    items = max(len(wire_map.get("nodes", ())), len(wire_map.get("keys", ())))
    return packed, items > MAX_HEADER_MAP_NODES or len(packed.data) > MAX_HEADER_BYTES // 2


def _take_bulk(header: dict[str, Any], payloads: list[Any]) -> list[Any]:
    """Decode the bulk frames the header names into its fields; the payloads that follow them."""
    names = header.pop("bulk", None)
    if names is None:
        return payloads
    if (
        not isinstance(names, list)
        or len(names) > len(payloads)
        or not all(isinstance(name, str) and name in BULK_FIELDS for name in names)
        or len(set(names)) != len(names)
    ):
        raise ProtocolError(
            f"bulk must name distinct fields of {sorted(BULK_FIELDS)}, one per payload frame; got {_plain_repr(names)}"
        )
    for name, frame in zip(names, payloads, strict=False):
        if name in header:
            raise ProtocolError(f"field {name!r} is both in the header and in a bulk frame")
        header[name] = bulk.decompress(frame, name, max_items=MAX_MAP_NODES, max_containers=MAX_BULK_CONTAINERS)
    return payloads[len(names) :]


def pack(header: dict[str, Any]) -> bytes:
    """Serialise a header map (values that are :class:`Packed` as they are)."""
    try:
        packed: bytes = msgpack.packb(header, use_bin_type=True)
        return packed
    except TypeError:  # msgpack does not know Packed: splice; the data path's headers never get here
        if not any(isinstance(value, Packed) for value in header.values()):
            raise
    packer = msgpack.Packer(use_bin_type=True)
    parts = [packer.pack_map_header(len(header))]
    for name, value in header.items():
        parts += (packer.pack(name), value.data if isinstance(value, Packed) else packer.pack(value))
    return b"".join(parts)


def map_digest(packed_map: bytes) -> bytes:
    """A digest of a cluster map's wire form (``ClusterMap.to_dict`` encoded; canonical: nodes, labels and keys
    sorted), by which a node that applied a map delta checks it now holds the sender's map."""
    return hashlib.blake2b(packed_map, digest_size=16).digest()


def has_digest(cluster_map: Any, digest: object) -> bool:
    """True when ``cluster_map`` (a :class:`placement.ClusterMap`) is the map whose :func:`map_digest` is
    ``digest``: how a node or client that applied a map delta checks it holds the controller's map."""
    return map_digest(Packed.of(cluster_map.to_dict()).data) == digest


class _TooManyContainers(Exception):
    """Raised inside msgpack's hooks to stop decoding a header with too many maps and arrays."""


def _frame_data(frame: Any) -> Any:
    size = len(frame)
    if size > MAX_HEADER_BYTES:
        raise MessageTooLarge(f"header of {size} bytes exceeds the limit of {MAX_HEADER_BYTES}")
    return frame.buffer if hasattr(frame, "buffer") else frame  # a zmq.Frame: no copy


def _unpack(frame: Any) -> dict[str, Any]:
    """Decode a reply's header frame into a map."""
    try:
        header = msgpack.unpackb(_frame_data(frame), raw=False, strict_map_key=True)
    except HCStoreError:
        raise
    except Exception as exc:  # noqa: BLE001 - msgpack raises several unrelated types for bad input
        raise ProtocolError(f"header is not valid msgpack: {type(exc).__name__}") from None
    if not isinstance(header, dict):
        raise ProtocolError(f"header must be a map, got {type(header).__name__}")
    return header


def _unpack_request(frame: Any, into: dict[Any, Any]) -> dict[str, Any]:
    """Decode a request's header frame into ``into``, within the request limits, one top-level field at a time:
    when a field breaks a limit, the fields before it (the envelope: version, op, id) are in ``into`` already."""
    data = _frame_data(frame)
    containers = 0

    def count(value: Any) -> Any:
        nonlocal containers
        containers += 1
        if containers > MAX_CONTAINERS:
            raise _TooManyContainers
        return value

    unpacker = msgpack.Unpacker(
        raw=False,
        strict_map_key=True,
        max_buffer_size=MAX_HEADER_BYTES,
        max_str_len=MAX_HEADER_BYTES,
        max_bin_len=MAX_HEADER_BYTES,
        max_array_len=MAX_ARRAY_ITEMS,
        max_map_len=MAX_MAP_ENTRIES,
        max_ext_len=0,  # the protocol has no extension types
        list_hook=count,
        object_hook=count,
    )
    try:
        unpacker.feed(data)
        try:
            entries = unpacker.read_map_header()
        except ValueError:
            raise ProtocolError("header must be a msgpack map") from None
        if entries > MAX_MAP_ENTRIES:
            raise MessageTooLarge(f"header of {entries} fields exceeds the limit of {MAX_MAP_ENTRIES}")
        for _ in range(entries):
            key = unpacker.unpack()
            if not isinstance(key, (str, bytes)):
                raise ProtocolError(f"header has a key of type {type(key).__name__}; keys are strings")
            into[key] = unpacker.unpack()
        if unpacker.tell() != len(data):
            raise ProtocolError(f"header has {len(data) - unpacker.tell()} bytes after its map")
    except HCStoreError:
        raise
    except _TooManyContainers:
        raise MessageTooLarge(f"header holds more than {MAX_CONTAINERS} maps and arrays") from None
    except Exception as exc:  # noqa: BLE001 - msgpack raises several unrelated types for bad input
        if isinstance(exc, ValueError) and "exceeds max_" in str(exc):  # one of the limits above
            raise MessageTooLarge(f"header: {exc}") from None
        raise ProtocolError(f"header is not valid msgpack: {type(exc).__name__}") from None
    return into


def request_frames(
    op: str, request_id: int, epoch: int, fields: dict[str, Any], payloads: Sequence[Any] = ()
) -> list[Any]:
    """The frames of a request (header first, then payloads as given)."""
    header = {"v": PROTOCOL_VERSION, "op": op, "id": request_id, "epoch": epoch, **fields}
    return [pack(header), *payloads]


def reply_frames(
    request_id: int, epoch: int, fields: dict[str, Any] | None = None, payloads: Sequence[Any] = ()
) -> list[Any]:
    """The frames of a success reply.

    Raises:
        MessageTooLarge: the header exceeds :data:`MAX_HEADER_BYTES` (send large fields with :func:`with_bulk`).
        Exception: a field cannot be encoded (a bug); the caller answers :func:`error_frames` instead.
    """
    header = pack({"v": PROTOCOL_VERSION, "id": request_id, "ok": True, "epoch": epoch, **(fields or {})})
    if len(header) > MAX_HEADER_BYTES:
        raise MessageTooLarge(
            f"the reply's header of {len(header)} bytes exceeds the limit of {MAX_HEADER_BYTES}: its large fields "
            "travel as bulk frames to a requester that takes them (`framed`); upgrade the requester"
        )
    return [header, *payloads]


def error_frames(request_id: int, epoch: int, error: BaseException) -> list[Any]:
    """The frames of an error reply: the stable code plus a human-readable detail. Never raises.

    Whatever the arguments, the reply encodes: an id or epoch that is not a 64-bit unsigned
    integer goes as 0, a code that is not a short ASCII string as ``E_INTERNAL``, and a detail
    that cannot be had as text as a fixed sentence.
    """
    header = {
        "v": PROTOCOL_VERSION,
        "id": _int64_or_zero(request_id),  # an id the client cannot have sent is of no use to it
        "ok": False,
        "epoch": _int64_or_zero(epoch),
        "code": HCStoreError.code,
        "detail": "the error reply could not be encoded in full",
    }
    try:
        code = getattr(error, "code", HCStoreError.code)
        if type(code) is str and code.isascii() and 0 < len(code) <= 64:
            header["code"] = code
        detail = str(error)[:MAX_DETAIL_CHARS].encode("utf-8", "backslashreplace").decode("utf-8")
        return [pack({**header, "detail": detail})]
    except Exception:  # noqa: BLE001 - an error reply must go out whatever went wrong in building it
        return [pack(header)]  # plain values only: this always encodes


def _int64_or_zero(value: object) -> int:
    return value if type(value) is int and 0 <= value <= _INT64[1] else 0


def decode_header(frames: Sequence[Any], into: dict[Any, Any] | None = None) -> dict[str, Any]:
    """Decode a request's header frame (routing id already removed), within the request limits.

    Args:
        frames: the message.
        into: the map to decode into (default: a new one). A server passes its own, so that when
            decoding fails it still has the fields decoded before the failure: the request id of
            its error reply (:func:`request_id_of`), without decoding anything twice.

    Returns:
        The header map (``into``).

    Raises:
        ProtocolError: (or a subclass) no frames, a header that is not a msgpack map, or one over a limit.
    """
    if not frames:
        raise ProtocolError("empty message: expected [header, payload...]")
    return _unpack_request(frames[0], {} if into is None else into)


def request_id_of(header: Mapping[str, Any]) -> int:
    """The request id a decoded header names; 0 when it names none that is valid (the error reply's id)."""
    return _int64_or_zero(header.get("id"))


def peek_request_id(frames: Sequence[Any]) -> int:
    """Best-effort request id of a message that failed validation (0 when unknown).

    A server that already decoded the header uses :func:`request_id_of` instead of decoding it twice.
    """
    try:
        return request_id_of(decode_header(frames))
    except Exception:  # noqa: BLE001 - best effort: anything unreadable has no id
        return 0


def _kind_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join("nil" if k is _NONE else k.__name__ for k in kinds)


def _utf8_size(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


def _shown(key: str) -> str:
    return key if len(key) <= 40 else key[:37] + "..."


class _Check:
    """Checks the fields of one request, sharing one budget of free-form values."""

    def __init__(self, op: str) -> None:
        self.op = op
        self.free = MAX_REPORT_VALUES

    def fail(self, where: str, why: str, error: type[HCStoreError] = InvalidRequest) -> HCStoreError:
        return error(f"{self.op}: field {where!r} {why}")

    def field(self, where: str, spec: Field, value: Any) -> None:
        kind = spec.kind
        if kind is object:
            self.plain(where, value, 0)
            return
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if (isinstance(value, bool) and bool not in kinds) or not isinstance(value, kind):
            raise self.fail(where, f"must be {_kind_name(kind)}, got {type(value).__name__}")
        if isinstance(value, float) and not math.isfinite(value):
            raise self.fail(where, f"must be a finite number, got {value}")
        if isinstance(value, (int, float)) and not isinstance(value, bool) and spec.bounds is not None:
            low, high = spec.bounds
            if not low <= value <= high:
                error = MessageTooLarge if value > high else InvalidRequest
                raise self.fail(where, f"= {value} is outside [{_number(low)}, {_number(high)}]", error)
        elif isinstance(value, (str, bytes, list, dict)) and spec.size is not None:
            size = _utf8_size(value) if isinstance(value, str) else len(value)
            if size > spec.size:
                unit = "bytes" if isinstance(value, (str, bytes)) else "items"
                raise self.fail(where, f"holds {size} {unit}, more than {spec.size}", MessageTooLarge)
        if isinstance(value, list) and spec.items is not None:
            for index, item in enumerate(value):
                self.field(f"{where}[{index}]", spec.items, item)
        elif isinstance(value, dict):
            self.map(where, spec, value)

    def map(self, where: str, spec: Field, value: dict[Any, Any]) -> None:
        if spec.fields is None and spec.items is None:
            return
        for key, item in value.items():
            if not isinstance(key, str):
                raise self.fail(where, f"has a key of type {type(key).__name__}; keys are strings")
            if _utf8_size(key) > spec.key_size:
                raise self.fail(where, f"has a key longer than {spec.key_size} bytes", MessageTooLarge)
            if spec.keys is not None and not spec.keys.fullmatch(key):
                raise self.fail(where, f"has a key {_shown(key)!r} that is not {spec.keys.pattern!r}")
            sub = spec.fields.get(key) if spec.fields is not None else None
            if sub is None:
                sub = spec.items
            if sub is None:
                raise self.fail(where, f"has an unknown field {_shown(key)!r}")
            self.field(f"{where}.{_shown(key)}", sub, item)
        for name, sub in (spec.fields or {}).items():
            if sub.required and name not in value:
                raise InvalidRequest(f"{self.op}: missing field {where + '.' + name!r}")

    def plain(self, where: str, value: Any, depth: int) -> None:
        """A free-form value: plain types only, bounded in size, nesting and number of values."""
        self.free -= 1
        if self.free < 0:
            raise self.fail(where, f"is past the limit of {MAX_REPORT_VALUES} free-form values", MessageTooLarge)
        if value is None or isinstance(value, bool):
            return
        if isinstance(value, int):
            if not -(1 << 63) <= value <= _INT64[1]:
                raise self.fail(where, f"= {value} is not a 64-bit signed integer", MessageTooLarge)
        elif isinstance(value, float):
            if not math.isfinite(value):
                raise self.fail(where, f"must be a finite number, got {value}")
        elif isinstance(value, (str, bytes)):
            size = _utf8_size(value) if isinstance(value, str) else len(value)
            if size > MAX_NAME_BYTES:
                raise self.fail(where, f"holds {size} bytes, more than {MAX_NAME_BYTES}", MessageTooLarge)
        elif isinstance(value, (list, dict)):
            if depth >= MAX_REPORT_DEPTH:
                raise self.fail(where, f"nests deeper than {MAX_REPORT_DEPTH} levels")
            if isinstance(value, list):
                for index, item in enumerate(value):
                    self.plain(f"{where}[{index}]", item, depth + 1)
            else:
                for key, item in value.items():
                    if not isinstance(key, str) or _utf8_size(key) > MAX_NAME_BYTES:
                        raise self.fail(where, f"has a key that is not a string of at most {MAX_NAME_BYTES} bytes")
                    self.plain(f"{where}.{_shown(key)}", item, depth + 1)
        else:
            raise self.fail(where, f"has a value of type {type(value).__name__}")


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() and abs(value) < 2**64 else str(value)


def check_request(
    header: dict[str, Any], frames: Sequence[Any], operations: dict[str, dict[str, Field]] | None = None
) -> Request:
    """Validate a decoded request header (:func:`decode_header`) and the message's frames.

    Args:
        header: the decoded header.
        frames: the whole message, header frame first (routing id already removed).
        operations: the operations this server takes (default: an agent's, :data:`OPERATIONS`).

    Raises:
        ProtocolError: (or a subclass) the message is malformed, of another
            version, of an unknown operation, or too large.
        InvalidRequest: a field has the wrong type or is out of bounds.
    """
    version = header.get("v")
    if type(version) is not int or version != PROTOCOL_VERSION:
        raise ProtocolVersionError(
            f"protocol version {_plain_repr(version)} is not supported (this agent speaks {PROTOCOL_VERSION})"
        )
    op = header.get("op")
    request_id = header.get("id")
    epoch = header.get("epoch", 0)
    if type(request_id) is not int or not 0 <= request_id <= _INT64[1]:
        raise ProtocolError(f"request id must be an integer in [0, {_INT64[1]}], got {_plain_repr(request_id)}")
    if type(epoch) is not int or not 0 <= epoch <= MAX_EPOCH:
        raise ProtocolError(f"epoch must be an integer in [0, {MAX_EPOCH}], got {_plain_repr(epoch)}")
    operations = OPERATIONS if operations is None else operations
    if not isinstance(op, str) or op not in operations:
        raise UnknownOperation(f"unknown operation {_plain_repr(op)}")
    total = sum(len(frame) for frame in frames)
    if total > MAX_MESSAGE_BYTES:
        raise MessageTooLarge(f"{op}: message of {total} bytes exceeds the limit of {MAX_MESSAGE_BYTES}")
    payloads = list(frames[1:])
    if "bulk" in header and BULK_FIELDS & operations[op].keys():  # elsewhere, bulk frames are payloads (refused)
        payloads = _take_bulk(header, payloads)
    fewest, most = PAYLOADS.get(op, (0, 0))
    if not fewest <= len(payloads) <= most:
        expected = str(most) if fewest == most else f"{fewest} to {most}"
        raise ProtocolError(f"{op} carries {len(payloads)} payload frames, expected {expected}")
    for payload in payloads:
        if len(payload) > MAX_CHUNK_BYTES:
            raise MessageTooLarge(f"{op}: payload frame of {len(payload)} bytes exceeds {MAX_CHUNK_BYTES}")
    check = _Check(op)
    fields = {}
    for name, field_spec in operations[op].items():
        if name not in header:
            if field_spec.required:
                raise InvalidRequest(f"{op}: missing field {name!r}")
            continue
        check.field(name, field_spec, header[name])
        fields[name] = header[name]
    return Request(op, request_id, epoch, fields, payloads)


def _plain_repr(value: object) -> str:
    """A short description of a value from the wire, safe for any value (deep, huge or odd)."""
    if value is None or isinstance(value, (bool, int, float)):
        return repr(value)
    if isinstance(value, str):
        return repr(_shown(value))
    return f"a {type(value).__name__}"


def decode_request(frames: Sequence[Any], operations: dict[str, dict[str, Field]] | None = None) -> Request:
    """Decode and validate a request's frames (routing id already removed): :func:`decode_header`, then
    :func:`check_request`.

    Raises:
        ProtocolError: (or a subclass) the message is malformed, of another
            version, of an unknown operation, or too large.
        InvalidRequest: a field has the wrong type or is out of bounds.
    """
    return check_request(decode_header(frames), frames, operations)


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
        ProtocolError: the reply is malformed, of another version, or larger than :data:`MAX_REPLY_BYTES`.
    """
    if not frames:
        raise ProtocolError("empty reply")
    total = sum(len(frame) for frame in frames)
    if total > MAX_REPLY_BYTES:
        raise MessageTooLarge(f"reply of {total} bytes exceeds the limit of {MAX_REPLY_BYTES}")
    header = _unpack(frames[0])
    if header.get("v") != PROTOCOL_VERSION:
        raise ProtocolVersionError(
            f"reply of protocol version {_plain_repr(header.get('v'))}, expected {PROTOCOL_VERSION}"
        )
    if not isinstance(header.get("id"), int):
        raise ProtocolError("reply without a request id")
    return Reply(header, _take_bulk(header, list(frames[1:])))
