"""Configuration of clients, agents and the controller: one typed dataclass each, one loader.

Every setting is a field of a frozen dataclass (:class:`ClientConfig`, :class:`AgentConfig`,
:class:`ControllerConfig`), and the field's default is the one place that default is written.
All three load the same way. Precedence, lowest first:

1. the field's default;
2. a TOML file, ``AgentConfig.load("agent.toml")``, whose keys are the field names;
3. ``HCSTORE_<FIELD>`` environment variables, e.g. ``HCSTORE_DURABILITY=none``;
4. explicit arguments that are not None, ``AgentConfig.load("agent.toml", port=7000)``.

``from_env(**arguments)`` is ``load(None, **arguments)``: the same without a file. Building a
dataclass directly (``AgentConfig(port=7000)``) checks its values the same way but reads no
file and no environment.

Values are read as the field's type. In a file: TOML strings, integers, floats and booleans;
a list of strings as an array, a set of labels as a table::

    node_id = "n1"
    mountpaths = ["/nvme0/hcstore", "/nvme1/hcstore"]
    controller = "tcp://10.0.0.1:7000"
    durability = "commit"
    labels = {zone = "a", rack = "r1"}

In the environment: ``HCSTORE_MOUNTPATHS=/nvme0,/nvme1`` (comma-separated),
``HCSTORE_LABELS=zone=a,rack=r1``, ``HCSTORE_PORT=7000``, booleans as ``true``/``false``, and an
empty value for a setting that may be unset (``HCSTORE_CODEC=``). A variable is read by every
config class that has the field (``HCSTORE_HEARTBEAT`` by the agent and the controller).

An unknown key in a file, a value of the wrong type and a value out of range each raise
:class:`~hcstore.errors.InvalidRequest`, whose message names the setting and where the value
came from: the file's path or the environment variable. :meth:`_Settings.write` writes a config
as a TOML file that :meth:`_Settings.load` reads back to an equal config.
"""

from __future__ import annotations

import dataclasses
import difflib
import numbers
import os
import tomllib
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Self, TypeVar

from hcstore.control.membership import MAX_MAINTENANCE_SECONDS, Intervals
from hcstore.errors import InvalidRequest
from hcstore.files import write_bytes_atomic

DURABILITY_POLICIES = ("none", "commit", "always")
LOG_FORMATS = ("text", "json")
LOOPBACK = "127.0.0.1"
ENV_PREFIX = "HCSTORE_"

# The kinds of field a config may have, keyed by the field's annotation.
_KINDS: dict[Any, str] = {
    str: "str",
    int: "int",
    float: "float",
    bool: "bool",
    str | None: "optional str",
    tuple[str, ...]: "strings",
    tuple[tuple[str, str], ...]: "labels",
}
_EXPECTED = {
    "str": "a string",
    "optional str": "a string",
    "int": "an integer",
    "float": "a number",
    "bool": "true or false",
    "strings": "a list of strings",
    "labels": "string labels",
}
_TOML_EXAMPLES = {"strings": '["/nvme0", "/nvme1"]', "labels": '{zone = "a", rack = "r1"}'}
_ENV_EXAMPLES = {"labels": "zone=a,rack=r1", "bool": "true"}
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


class BadSetting(InvalidRequest):
    """A setting has a value of the wrong type or out of range.

    Attributes:
        names: the settings involved (one, or several for a rule between settings).
    """

    def __init__(self, names: tuple[str, ...], message: str) -> None:
        super().__init__(message)
        self.names = names


@dataclass(frozen=True)
class _Origin:
    """Where a raw value came from: a TOML file, an environment variable, or an argument."""

    kind: str  # "file", "env" or "argument"
    where: str = ""


class _Settings:
    """The loader, writer and checks shared by the config classes."""

    def __post_init__(self) -> None:
        for name, kind in _kinds(type(self)).items():
            object.__setattr__(self, name, _typed(kind, name, getattr(self, name), _Origin("argument")))
        self._validate()

    def _validate(self) -> None:
        """Check values beyond their types; raise :class:`BadSetting`."""

    @classmethod
    def default(cls) -> Self:
        """The config with every setting at its default."""
        return cls()

    @classmethod
    def load(
        cls, path: str | os.PathLike[str] | None = None, *, environ: Mapping[str, str] | None = None, **arguments: Any
    ) -> Self:
        """The config from a TOML file, then ``HCSTORE_*`` variables, then non-None ``arguments``.

        Args:
            path: a TOML file of settings (None: none).
            environ: where ``HCSTORE_*`` variables are read (default ``os.environ``; ``{}`` for none).
            **arguments: settings that beat the file and the environment; None means "not given".

        Raises:
            InvalidRequest: the file is missing or not TOML, it names an unknown setting, or a
                value has the wrong type or is out of range; the message says which setting and
                where its value came from.
        """
        return _load(cls, None if path is None else Path(path), os.environ if environ is None else environ, arguments)

    @classmethod
    def from_env(cls, **arguments: Any) -> Self:
        """Non-None ``arguments``, then ``HCSTORE_*`` variables, then defaults (no file)."""
        return cls.load(None, **arguments)

    def replace(self, **changes: Any) -> Self:
        """A copy with ``changes`` applied (and checked)."""
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]

    def to_dict(self, *, changed_only: bool = False) -> dict[str, Any]:
        """The settings as plain values (lists, a dict for labels); unset (None) ones left out.

        Args:
            changed_only: only the settings that differ from their defaults.
        """
        plain = {name: _plain(kind, getattr(self, name)) for name, kind in _kinds(type(self)).items()}
        defaults = _defaults(type(self)) if changed_only else {}
        return {
            name: value
            for name, value in plain.items()
            if value is not None and (not changed_only or value != defaults.get(name))
        }

    def write(self, path: str | os.PathLike[str], *, include: Iterable[str] = ()) -> None:
        """Write the settings that differ from the defaults, and those named in ``include``, as TOML.

        The file is replaced crash-safely; :meth:`load` reads it back to an equal config.
        """
        import tomli_w

        plain = self.to_dict()
        changed = self.to_dict(changed_only=True)
        keep = set(include)
        data = {name: value for name, value in plain.items() if name in changed or name in keep}
        header = f"# hcstore {type(self).__name__}: settings that differ from the defaults (see hcstore.config)\n"
        write_bytes_atomic(Path(path), (header + tomli_w.dumps(data)).encode())

    def _require(self, ok: bool, name: str, rule: str) -> None:
        if not ok:
            raise BadSetting((name,), f"setting {name}={getattr(self, name)!r} {rule}")


@dataclass(frozen=True)
class ClientConfig(_Settings):
    """How a client writes and reads.

    Attributes:
        ec: erasure-coding scheme ``"K+M"`` for new objects.
        chunk_size: largest chunk of a stripe, in bytes.
        replicate_below: objects smaller than this are replicated ``M+1`` times instead of coded.
        codec: codec for new coded objects (``None``: the fastest installed).
        window: stripes in flight per put (bounds a put's memory to about ``window*(K+M)*chunk_size``).
        read_batch: stripes fetched per read request.
        read_ahead: read requests (batches) in flight per get.
        read_streams: threads that read one large object at once, each a contiguous part of it over its
            own connections (verifying and copying in parallel: blake3 and the copies release the GIL).
        io_threads: ZeroMQ I/O threads per client process (0: up to 4, one per core).
        request_timeout: seconds to wait for an agent's reply.
        connect_timeout: seconds to wait for a connection before an agent counts as unavailable.
        hedge_after: seconds after which a read that has not answered is also asked of another fragment.
        local_node: the node this client runs on, read first.
        key: this client's secret key file (``hcstore keys create``; "": the cluster directory's, if any).
        controller_key: the controller's public key, Z85 text or a key file ("": the cluster directory's).
        insecure: talk plain ZeroMQ to a cluster that runs without authentication.
    """

    ec: str = "4+2"
    chunk_size: int = 1 << 20
    replicate_below: int = 64 << 10
    codec: str | None = None
    window: int = 8
    read_batch: int = 4
    read_ahead: int = 4
    read_streams: int = 4
    io_threads: int = 0
    request_timeout: float = 10.0
    connect_timeout: float = 0.5
    hedge_after: float = 0.5
    local_node: str | None = None
    key: str = ""
    controller_key: str = ""
    insecure: bool = False

    def _validate(self) -> None:
        _check_ec(self, "ec")
        for name in (
            "chunk_size",
            "window",
            "read_batch",
            "read_ahead",
            "read_streams",
            "request_timeout",
            "connect_timeout",
            "hedge_after",
        ):
            self._require(getattr(self, name) > 0, name, "must be > 0")
        self._require(self.io_threads >= 0, "io_threads", "must be >= 0")
        self._require(self.replicate_below >= 0, "replicate_below", "must be >= 0")
        self._require(
            self.chunk_size <= 64 << 20 and self.chunk_size % 64 == 0,
            "chunk_size",
            "must be a multiple of 64 up to 64 MiB",
        )


@dataclass(frozen=True)
class AgentConfig(_Settings):
    """How an agent stores fragments, and how its process runs.

    Attributes:
        node_id: this node's id in the cluster map.
        mountpaths: directories, one per SSD.
        host: address to bind.
        port: port to bind (0: any free port).
        durability: ``"none"`` (no fsync), ``"commit"`` (fsync each fragment before it is
            prepared, and its directory on rename), ``"always"`` (also fsync every chunk).
        high_watermark: fraction of a mountpath's capacity above which writes fail with StoreFull.
        capacity_bytes: capacity of each mountpath (0: the file system's size, from psutil).
        upload_ttl: seconds after which an idle, unfinished upload is discarded.
        controller: the controller's endpoint ("" for none: the agent then serves with no map).
        labels: failure-domain labels of this node, e.g. (("zone", "a"), ("rack", "r1")).
        weight: capacity weight of this node in placement.
        heartbeat: seconds between heartbeats to the controller.
        state_dir: where the agent persists the latest cluster map it has seen ("": its first mountpath).
        repair_rate: bytes per second that background repair and rebalance may write (0: unlimited). It is
            taken before each stripe is read, so reads keep its pace (a rebuild reads ``k`` chunks per chunk
            it writes).
        repair_workers: objects one agent checks, copies or rebuilds at once.
        background_nice: how many steps below the agent's CPU priority its background work runs: repair,
            rebalance and scrub, and the reads other agents' repairs ask of it, which have a pool of
            ``read_workers`` threads of their own (0: the same priority as client work).
        scan_interval: seconds between scans of this node's objects for repair (also after every map change).
        scrub_interval: seconds between scrubs (re-verification of every local chunk at ``repair_rate``).
        ready_file: file the agent writes ``{"endpoint", "pid", "node_id"}`` to once it serves ("": none).
        log_file: file the agent's process logs to ("": standard error).
        log_format: how log lines look: ``"text"``, or ``"json"`` (one JSON object per line).
        metrics_host: address of the HTTP endpoint for ``/metrics``, ``/healthz`` and ``/readyz``
            ("": the same as ``host``).
        metrics_port: its port (0: any free port, written to the ready file; -1: no endpoint, nothing counted).
        io_workers: threads that do the agent's disk work (hashing, writes, fsync, renames, deletes).
        read_workers: threads that read fragment chunks for clients (a pool of their own: reads never wait
            behind writes and fsyncs).
        io_queue: requests of disk work admitted and not finished, at most; beyond, the agent answers
            ``AgentBusy`` (retryable).
        io_queue_bytes: payload bytes those requests may hold, at most (one larger request is admitted
            alone): the agent's memory bound for chunks received and not yet written.
        key: this agent's secret key file (``hcstore keys create``); required unless ``insecure``.
        controller_key: the controller's public key, Z85 text or a key file; required with a
            ``controller`` unless ``insecure``.
        insecure: serve plain ZeroMQ without authentication (behind a trusted network only).
    """

    node_id: str = "n1"
    mountpaths: tuple[str, ...] = ()
    host: str = LOOPBACK
    port: int = 0
    durability: str = "commit"
    high_watermark: float = 0.9
    capacity_bytes: int = 0
    upload_ttl: float = 600.0
    controller: str = ""
    labels: tuple[tuple[str, str], ...] = ()
    weight: float = 1.0
    heartbeat: float = Intervals.heartbeat
    state_dir: str = ""
    repair_rate: float = 256e6
    repair_workers: int = 8
    background_nice: int = 10
    scan_interval: float = 30.0
    scrub_interval: float = 86400.0
    ready_file: str = ""
    log_file: str = ""
    log_format: str = "text"
    metrics_host: str = ""
    metrics_port: int = 0
    io_workers: int = 4
    read_workers: int = 4
    io_queue: int = 4096
    io_queue_bytes: int = 1 << 30
    key: str = ""
    controller_key: str = ""
    insecure: bool = False

    def _validate(self) -> None:
        self._require(bool(self.node_id), "node_id", "must not be empty")
        self._require(
            self.durability in DURABILITY_POLICIES, "durability", f"must be one of {', '.join(DURABILITY_POLICIES)}"
        )
        self._require(0 < self.high_watermark <= 1, "high_watermark", "must be in (0, 1]")
        self._require(self.capacity_bytes >= 0, "capacity_bytes", "must be >= 0")
        _check_port(self)
        for name in (
            "upload_ttl",
            "heartbeat",
            "scan_interval",
            "repair_workers",
            "scrub_interval",
            "io_workers",
            "read_workers",
            "io_queue",
            "io_queue_bytes",
        ):
            self._require(getattr(self, name) > 0, name, "must be > 0")
        for name in ("weight", "repair_rate"):
            self._require(getattr(self, name) >= 0, name, "must be >= 0")
        self._require(0 <= self.background_nice <= 19, "background_nice", "must be in 0..19")


@dataclass(frozen=True)
class ControllerConfig(_Settings):
    """How the controller serves the cluster map and detects failures, and how its process runs.

    Attributes:
        host: address to bind.
        port: port to bind (0: any free port).
        ec: the cluster's default erasure coding ``"K+M"``, told to clients ("": none, clients choose).
        heartbeat: seconds between an agent's heartbeats (the controller's clock ticks twice as often).
        suspect_after: seconds without a heartbeat after which a node is *suspect*.
        down_after: seconds without a heartbeat after which a node is *down* (read around).
        out_after: seconds without a heartbeat after which a node is *out* (its fragments are rebuilt).
        ready_file: file the controller writes ``{"endpoint", "pid"}`` to once it serves ("": none).
        log_file: file the controller's process logs to ("": standard error).
        log_format: how log lines look: ``"text"``, or ``"json"`` (one JSON object per line).
        metrics_host: address of the HTTP endpoint for ``/metrics``, ``/healthz`` and ``/readyz``
            ("": the same as ``host``).
        metrics_port: its port (0: any free port, written to the ready file; -1: no endpoint, nothing counted).
        key: the controller's secret key file (``hcstore keys create``); required unless ``insecure``.
        keys_file: the cluster's allow-list, a JSON file of public keys with their roles; the
            controller reads it at start and rewrites it (crash-safely) when keys are added or revoked.
        insecure: serve plain ZeroMQ without authentication (behind a trusted network only).
        secret_file: file holding the cluster secret, read at start ("": none; the ``cluster_secret``
            operation then answers an error). See :mod:`hcstore.secret`.
        maintenance_limit: the longest planned outage ``hcstore node maintenance enter`` may ask for,
            in seconds; when a maintenance's own duration passes, normal failure handling resumes.
    """

    host: str = LOOPBACK
    port: int = 0
    ec: str = ""
    heartbeat: float = Intervals.heartbeat
    suspect_after: float = Intervals.suspect_after
    down_after: float = Intervals.down_after
    out_after: float = Intervals.out_after
    ready_file: str = ""
    log_file: str = ""
    log_format: str = "text"
    metrics_host: str = ""
    metrics_port: int = 0
    key: str = ""
    keys_file: str = ""
    insecure: bool = False
    secret_file: str = ""
    maintenance_limit: float = 86400.0

    @property
    def intervals(self) -> Intervals:
        """The failure-detection timing these settings describe."""
        return Intervals(self.heartbeat, self.suspect_after, self.down_after, self.out_after)

    def _validate(self) -> None:
        _check_port(self)
        self._require(
            0 < self.maintenance_limit <= MAX_MAINTENANCE_SECONDS,
            "maintenance_limit",
            f"must be in (0, {MAX_MAINTENANCE_SECONDS}] seconds",
        )
        if self.ec:
            _check_ec(self, "ec")
        names = tuple(f.name for f in fields(Intervals))
        try:
            Intervals(**{name: getattr(self, name) for name in names})
        except ValueError:
            got = ", ".join(f"{name}={getattr(self, name)!r}" for name in names)
            raise BadSetting(names, f"settings {got} must satisfy 0 < {' < '.join(names)}") from None


# ---------------------------------------------------------------------- checks shared by the classes


def _check_ec(config: _Settings, name: str) -> None:
    from ec import parse_ec

    try:
        parse_ec(getattr(config, name))
    except ValueError as exc:
        raise BadSetting((name,), f"setting {name}={getattr(config, name)!r}: {exc}") from None


def _check_port(config: Any) -> None:
    config._require(0 <= config.port < 65536, "port", "must be in [0, 65535]")
    config._require(-1 <= config.metrics_port < 65536, "metrics_port", "must be in [-1, 65535] (-1: no endpoint)")
    config._require(config.log_format in LOG_FORMATS, "log_format", f"must be one of {', '.join(LOG_FORMATS)}")


# ---------------------------------------------------------------------- the loader

S = TypeVar("S", bound=_Settings)

_kinds_of: dict[type, dict[str, str]] = {}
_defaults_of: dict[type, dict[str, Any]] = {}


def _kinds(cls: type) -> dict[str, str]:
    """Field name -> kind of value, from the dataclass's annotations."""
    if cls not in _kinds_of:
        hints = typing.get_type_hints(cls)
        unknown = [f"{cls.__name__}.{f.name}: {hints[f.name]}" for f in fields(cls) if hints[f.name] not in _KINDS]
        if unknown:
            raise TypeError(f"no loader for settings of these types: {', '.join(unknown)}")
        _kinds_of[cls] = {f.name: _KINDS[hints[f.name]] for f in fields(cls)}
    return _kinds_of[cls]


def _defaults(cls: type[_Settings]) -> dict[str, Any]:
    if cls not in _defaults_of:
        _defaults_of[cls] = cls().to_dict()
    return _defaults_of[cls]


def _load(cls: type[S], path: Path | None, environ: Mapping[str, str], arguments: dict[str, Any]) -> S:
    kinds = _kinds(cls)
    unknown = sorted(set(arguments) - set(kinds))
    if unknown:
        raise InvalidRequest(f"unknown {cls.__name__} setting(s): {', '.join(unknown)}")
    raw: dict[str, tuple[Any, _Origin]] = {}
    if path is not None:
        raw.update((name, (value, _Origin("file", str(path)))) for name, value in _read_toml(cls, path).items())
    for name in kinds:
        variable = ENV_PREFIX + name.upper()
        if variable in environ:
            raw[name] = (environ[variable], _Origin("env", variable))
    raw.update((name, (value, _Origin("argument"))) for name, value in arguments.items() if value is not None)
    try:
        values = {
            name: (
                _parsed(kinds[name], name, value) if origin.kind == "env" else _typed(kinds[name], name, value, origin)
            )
            for name, (value, origin) in raw.items()
        }
        return cls(**values)
    except BadSetting as exc:
        where = list(dict.fromkeys(raw[n][1].where for n in exc.names if n in raw and raw[n][1].where))
        raise InvalidRequest(f"{', '.join(where)}: {exc}" if where else str(exc)) from None


def _read_toml(cls: type, path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise InvalidRequest(f"{path}: no such config file") from None
    except OSError as exc:
        raise InvalidRequest(f"{path}: cannot read the config file: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InvalidRequest(f"{path}: not a valid TOML file: {exc}") from None
    known = _kinds(cls)
    for key in data:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise InvalidRequest(
                f"{path}: unknown setting {key!r} for {cls.__name__}; {hint}known settings: {', '.join(known)}"
            )
    return data


_WRONG = object()  # what _convert_typed returns for a value of the wrong type


def _typed(kind: str, name: str, value: Any, origin: _Origin) -> Any:
    """A typed value (from TOML or Python) as the field's kind; raises BadSetting."""
    converted = _convert_typed(kind, value)
    if converted is _WRONG:
        expected = _EXPECTED[kind]
        if origin.kind == "file" and kind in _TOML_EXAMPLES:
            expected += f", e.g. {name} = {_TOML_EXAMPLES[kind]}"
        raise BadSetting((name,), f"setting {name}={value!r} must be {expected}")
    return converted


def _convert_typed(kind: str, value: Any) -> Any:
    if kind == "bool":
        return value if isinstance(value, bool) else _WRONG
    if isinstance(value, bool):
        return _WRONG
    if kind == "int":
        return int(value) if isinstance(value, numbers.Integral) else _WRONG
    if kind == "float":
        return float(value) if isinstance(value, numbers.Real) else _WRONG
    if kind in ("str", "optional str"):
        return value if isinstance(value, str) or (value is None and kind == "optional str") else _WRONG
    if kind == "strings":
        if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
            return _WRONG
        items = tuple(os.fspath(v) if isinstance(v, os.PathLike) else v for v in value)
        return items if all(isinstance(v, str) for v in items) else _WRONG
    if kind == "labels":
        if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
            return _WRONG
        pairs = tuple(
            tuple(p) if isinstance(p, (tuple, list)) else p
            for p in (value.items() if isinstance(value, Mapping) else value)
        )
        ok = all(isinstance(p, tuple) and len(p) == 2 and all(isinstance(s, str) for s in p) for p in pairs)
        return pairs if ok else _WRONG
    raise AssertionError(kind)


def _parsed(kind: str, name: str, text: str) -> Any:
    """An environment variable's text as the field's kind; raises BadSetting."""
    try:
        if kind == "int":
            return int(text, 0)
        if kind == "float":
            return float(text)
        if kind == "bool" and text.strip().lower() in _TRUE + _FALSE:
            return text.strip().lower() in _TRUE
        if kind == "str":
            return text
        if kind == "optional str":
            return text or None
        if kind == "strings":
            return tuple(item.strip() for item in text.split(",") if item.strip())
        if kind == "labels":
            pairs = [item.strip().split("=", 1) for item in text.split(",") if item.strip()]
            if all(len(p) == 2 and p[0] for p in pairs):
                return tuple((k.strip(), v.strip()) for k, v in pairs)
    except ValueError:
        pass
    example = f", e.g. {ENV_PREFIX}{name.upper()}={_ENV_EXAMPLES[kind]}" if kind in _ENV_EXAMPLES else ""
    expected = "comma-separated KEY=VALUE pairs" if kind == "labels" else _EXPECTED[kind]
    raise BadSetting((name,), f"setting {name}={text!r} must be {expected}{example}")


def _plain(kind: str, value: Any) -> Any:
    if kind == "strings":
        return list(value)
    if kind == "labels":
        return dict(value)
    return value
