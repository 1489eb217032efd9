"""``hcstore://bucket/key``: hcstore as an fsspec filesystem.

One implementation serves every tool that speaks fsspec: Ray Train
(``storage_filesystem``), Ray Data, ``torch.distributed.checkpoint``'s
``FsspecWriter``/``FsspecReader``, pandas and pyarrow.

Paths are ``bucket/key``; the bucket is the first component and must be a valid
bucket name. Directories are key prefixes, as on S3: a directory exists while
some object lies under it, ``mkdir``/``makedirs`` only validate the bucket
name, and there are no empty directories. The root lists the buckets.

Invariants:

- **No live sockets cross a process boundary.** The filesystem keeps its
  constructor arguments (fsspec's ``_Cached`` metaclass rebuilds instances
  from them) and makes its :class:`~hcstore.client.client.Client` on first use in
  each process. A filesystem made without ``cluster`` records the cluster it
  found (``HCSTORE_CLUSTER`` or ``hcstore up``'s pointer), so a copy pickled
  into another process talks to the same cluster.
- **One open file reads one version.** Opening for reading resolves the
  object's newest generation once; every range of that file comes from it. If
  that generation is overwritten and retired while the file is open, a read
  fails with :class:`~hcstore.errors.ObjectChanged` rather than mix versions.
- **Answers are proven.** "No such file", an object's version, and a listing
  stand only when the nodes that answered rule out anything newer or missing
  (``docs/architecture.md``, "Reads that tell the truth"); otherwise ``info``,
  ``exists``, ``isdir``, ``ls``, ``find``, ``cat`` and ``open`` raise the retryable
  :class:`~hcstore.errors.NotProven`, naming the nodes that did not answer.
  ``ls``/``find`` take ``partial=True`` to get what the others hold instead,
  marked ``complete=False``.
- **Writes are all or nothing.** A file opened ``"wb"`` streams into an
  :class:`~hcstore.client.writer.ObjectWriter`; the new version appears whole when the
  file is closed, and an exception inside ``with fs.open(path, "wb")``, or a
  file dropped without ``close()``, aborts it, leaving the previous version.
  ``fsspec.open()`` and text mode close their file on any exit, so use
  ``with fs.transaction:`` to discard on error there.

Example::

    fs = fsspec.filesystem("hcstore", cluster="tcp://head:7480", chunk_size=4 << 20)
    with fs.open("hcstore://ckpt/step-100/model.pt", "wb") as f:
        torch.save(state, f)
"""

from __future__ import annotations

import dataclasses
import io
import logging
import os
import threading
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

from fsspec.callbacks import DEFAULT_CALLBACK, Callback
from fsspec.spec import AbstractBufferedFile, AbstractFileSystem, make_instance
from fsspec.utils import isfilelike, tokenize

from hcstore.client.client import Client, Listing
from hcstore.client.reader import iter_range, read_bytes, read_range, retry_pinned
from hcstore.client.retry import retrying
from hcstore.client.versions import ObjectVersion, resolve
from hcstore.client.writer import ObjectWriter
from hcstore.cluster.source import ClusterSource
from hcstore.config import ClientConfig
from hcstore.errors import ClusterNotFound, InvalidRequest, ObjectChanged
from hcstore.generation import Generation
from hcstore.names import check_bucket, check_key

log = logging.getLogger(__name__)
T = TypeVar("T")

PROTOCOL = "hcstore"
_COPY_BLOCK = 8 << 20  # bytes per read when streaming a local file in
_FSSPEC_OPTIONS = frozenset({"use_listings_cache", "listings_expiry_time", "max_paths", "asynchronous", "loop"})
_CLIENT_SETTINGS = frozenset(f.name for f in dataclasses.fields(ClientConfig))


class HCStoreFileSystem(AbstractFileSystem):
    """fsspec filesystem over an hcstore cluster.

    Args:
        cluster: a local cluster directory or a controller endpoint (``"tcp://host:port"``);
            None finds the running cluster (``HCSTORE_CLUSTER``, or ``hcstore up``'s pointer).
        **options: :class:`~hcstore.config.ClientConfig` settings (``chunk_size``, ``ec``,
            ``request_timeout``, ...), ``credentials`` (a key pair and the controller's public key
            in memory, as :class:`~hcstore.client.client.Client` takes them), plus fsspec's own
            ``use_listings_cache``-style options, which are accepted and ignored (listings are never cached).

    Raises:
        InvalidRequest: an option is neither a ClientConfig setting nor an fsspec option, a
            setting has a bad value, or ``cluster`` is a malformed endpoint (also ValueErrors).
    """

    protocol = PROTOCOL
    root_marker = ""

    def __init__(self, cluster: str | os.PathLike[str] | None = None, **options: Any) -> None:
        super().__init__(**{k: v for k, v in options.items() if k in _FSSPEC_OPTIONS})
        unknown = set(options) - _FSSPEC_OPTIONS - _CLIENT_SETTINGS - {"credentials"}
        if unknown:
            raise InvalidRequest(
                f"unknown hcstore storage option(s): {', '.join(sorted(unknown))}; "
                f"valid: cluster, {', '.join(sorted(_CLIENT_SETTINGS))}"
            )
        self.settings = {k: v for k, v in options.items() if k in _CLIENT_SETTINGS}
        self.credentials = options.get("credentials")
        ClientConfig.from_env(**self.settings)  # a bad setting fails here, naming itself
        self.cluster = _locate_cluster(cluster)
        self._client: Client | None = None
        self._client_pid = 0
        self._client_lock = threading.Lock()

    def __reduce__(self) -> tuple[Any, ...]:
        return make_instance, (type(self), (), {**self.storage_options, "cluster": self.cluster})

    # ------------------------------------------------------------------ client

    @property
    def client(self) -> Client:
        """This process's client of the cluster, made on first use (and again after a fork)."""
        if self._client is None or self._client_pid != os.getpid():
            with self._client_lock:
                if self._client is None or self._client_pid != os.getpid():
                    self._client = Client(self.cluster, credentials=self.credentials, **self.settings)
                    self._client_pid = os.getpid()
        return self._client

    def close(self) -> None:
        """Close this process's client sockets; the next operation opens new ones."""
        with self._client_lock:
            if self._client is not None and self._client_pid == os.getpid():
                self._client.close()
            self._client = None

    # ------------------------------------------------------------------ paths

    @classmethod
    def _strip_protocol(cls, path: Any) -> Any:
        if isinstance(path, list):
            return [cls._strip_protocol(p) for p in path]
        return super()._strip_protocol(path).lstrip("/")

    def _split(self, path: str) -> tuple[str, str]:
        """``(bucket, key)`` of a path; key is "" for a bucket itself.

        Raises:
            ValueError: the bucket name is invalid (the message gives the rule).
        """
        bucket, _, key = self._strip_protocol(path).partition("/")
        return check_bucket(bucket), key

    def _object(self, path: str) -> tuple[str, str]:
        """``(bucket, key)`` of a path that must name an object.

        Raises:
            IsADirectoryError: the path is a bucket.
            ValueError: the bucket name or the key is invalid.
        """
        bucket, key = self._split(path)
        if not key:
            raise IsADirectoryError(f"{PROTOCOL}://{bucket} is a bucket, not an object")
        return bucket, check_key(key)

    # ------------------------------------------------------------------ directories

    def mkdir(self, path: str, create_parents: bool = True, **kwargs: Any) -> None:
        """Validate the bucket name; directories are implicit, so nothing is made."""
        if self._strip_protocol(path):
            self._split(path)

    def makedirs(self, path: str, exist_ok: bool = False) -> None:
        """Validate the bucket name; directories are implicit, so nothing is made."""
        self.mkdir(path)

    def rmdir(self, path: str) -> None:
        """Nothing to do: a directory disappears with the last object under it."""
        self.mkdir(path)

    def ls(self, path: str, detail: bool = True, *, partial: bool = False, **kwargs: Any) -> Listing[Any]:
        """Entries directly under ``path``: buckets at the root, else objects and sub-prefixes.

        Listing an object gives that object alone. The result is a :class:`~hcstore.client.client.Listing`:
        complete, unless ``partial`` was asked for and nodes that did not answer could hold more
        (then ``complete`` is False and ``unreached`` names them).

        Raises:
            FileNotFoundError: nothing exists at or under ``path`` (proven).
            NotProven: nodes that did not answer could hold entries, and ``partial`` is False.
        """
        path = self._strip_protocol(path)
        if not path:
            names = self.client.buckets(partial=partial)
            entries = _like(names, [_dir_info(bucket) for bucket in names])
        else:
            found = self._under(path, partial=partial)
            entries = _like(found, self._children(path, found) or self._childless(path, found, partial))
        return entries if detail else _like(entries, [e["name"] for e in entries])

    def _children(self, path: str, found: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
        """Objects and sub-prefixes one level under a bucket or prefix, by name, from its listing."""
        files: dict[str, dict[str, Any]] = {}
        dirs: dict[str, dict[str, Any]] = {}
        for name, info in found:
            child, _, rest = name[len(path) + 1 :].partition("/")
            if rest:
                dirs.setdefault(child, _dir_info(f"{path}/{child}"))
            else:
                files[child] = info
        return sorted([*files.values(), *dirs.values()], key=lambda entry: entry["name"])

    def _childless(self, path: str, found: Listing[Any], partial: bool) -> list[dict[str, Any]]:
        """``ls`` of a path with nothing under it: an object lists itself, a known bucket is empty.

        When the listing is partial, nothing seen is not proof of nothing there: the answer is empty.
        """
        bucket, key = self._split(path)
        if key:
            try:
                return [self._file_info(path)]
            except FileNotFoundError:
                if found.complete:
                    raise
                return []
        names = self.client.buckets(partial=partial)
        if bucket in names or not (found.complete and names.complete):
            return []
        raise FileNotFoundError(path)

    def _under(self, path: str, *, partial: bool = False) -> Listing[tuple[str, dict[str, Any]]]:
        """``(name, info)`` of every object strictly under a bucket or prefix, in key order.

        Keys with an empty component (``a//b``, ``a/``) have no path form and are left out.

        Raises:
            NotProven: nodes that did not answer could hold objects under it, and ``partial`` is False.
        """
        bucket, key = self._split(path)
        prefix = f"{key}/" if key else ""
        objects = self.client.list(bucket, prefix, partial=partial)
        return _like(
            objects,
            [
                (f"{bucket}/{obj.key}", _object_info(obj.bucket, obj.key, obj.size, obj.generation))
                for obj in objects
                if "" not in obj.key[len(prefix) :].split("/")
            ],
        )

    # ------------------------------------------------------------------ metadata

    def info(self, path: str, **kwargs: Any) -> dict[str, Any]:
        """``name``, ``size``, ``type`` ("file" or "directory") and, for files, ``generation``.

        Raises:
            FileNotFoundError: no object and no directory at ``path``.
        """
        path = self._strip_protocol(path)
        if not path:
            return _dir_info("")
        if self._split(path)[1]:
            try:
                return self._file_info(path)
            except FileNotFoundError:
                pass
        if self.isdir(path):
            return _dir_info(path)
        raise FileNotFoundError(path)

    def _file_info(self, path: str) -> dict[str, Any]:
        bucket, key = self._object(path)
        stat = self.client.stat(bucket, key)
        return _object_info(bucket, key, stat.size, stat.generation)

    def exists(self, path: str, **kwargs: Any) -> bool:
        """True for an object or a non-empty directory; other errors (bad name, unreachable cluster) raise."""
        try:
            self.info(path)
            return True
        except FileNotFoundError:
            return False

    def isdir(self, path: str) -> bool:
        """True for the root, a known bucket, or a prefix with objects under it.

        Raises:
            NotProven: nothing was seen under it, and nodes that did not answer could hold something.
        """
        path = self._strip_protocol(path)
        if not path:
            return True
        bucket, key = self._split(path)
        if not key:
            return bucket in self.client.buckets(partial=True) or bucket in self.client.buckets()
        return bool(self._under(path, partial=True) or self._under(path))

    def isfile(self, path: str) -> bool:
        """True for an object; False for a directory or nothing (proven; see :meth:`info`)."""
        try:
            self._file_info(path)
            return True
        except (FileNotFoundError, IsADirectoryError):
            return False

    def checksum(self, path: str) -> int:
        """An integer that changes with every new version of the object (from its generation)."""
        return int(tokenize(self.ukey(path)), 16)

    def ukey(self, path: str) -> str:
        """The object's generation: unique per version."""
        return self.info(path)["generation"]

    def modified(self, path: str) -> datetime:
        """When the current version of the object was written (from its generation's clock)."""
        wall_ns = Generation.parse(self.info(path)["generation"]).wall_ns
        return datetime.fromtimestamp(wall_ns / 1e9, tz=UTC)

    def find(
        self,
        path: str,
        maxdepth: int | None = None,
        withdirs: bool = False,
        detail: bool = False,
        *,
        partial: bool = False,
        **kwargs: Any,
    ) -> Any:
        """Every object under ``path`` (and its sub-directories with ``withdirs``), from one listing.

        The names come as a :class:`~hcstore.client.client.Listing` (with ``detail``, a
        :class:`DetailListing`): complete, unless ``partial`` was asked for and nodes that did
        not answer could hold more.

        Raises:
            NotProven: nodes that did not answer could hold objects under it, and ``partial`` is False.
        """
        path = self._strip_protocol(path)
        if not path:
            return super().find(path, maxdepth=maxdepth, withdirs=withdirs, detail=detail, partial=partial, **kwargs)
        if maxdepth is not None and maxdepth < 1:
            raise InvalidRequest(f"maxdepth must be at least 1, got {maxdepth}")
        listing = self._under(path, partial=partial)
        found: dict[str, dict[str, Any]] = {}
        for name, info in listing:
            parts = name[len(path) + 1 :].split("/")
            deepest_dir = len(parts) - 1 if maxdepth is None else min(len(parts) - 1, maxdepth)
            for level in range(1, deepest_dir + 1 if withdirs else 1):
                directory = f"{path}/{'/'.join(parts[:level])}"
                found.setdefault(directory, _dir_info(directory))
            if maxdepth is None or len(parts) <= maxdepth:
                found[name] = info
        if found and withdirs:
            found[path] = _dir_info(path)
        elif not found and self._split(path)[1]:
            try:
                found[path] = self._file_info(path)  # find() of an object gives the object
            except FileNotFoundError:
                pass
        names = sorted(found)
        if detail:
            return DetailListing(
                {name: found[name] for name in names}, unreached=listing.unreached, complete=listing.complete
            )
        return _like(listing, names)

    def du(
        self, path: str, total: bool = True, maxdepth: int | None = None, withdirs: bool = False, **kwargs: Any
    ) -> Any:
        """Bytes of the objects under ``path`` (directories count 0), from one listing (``partial`` as :meth:`find`)."""
        found = self.find(path, maxdepth=maxdepth, withdirs=withdirs, detail=True, **kwargs)
        sizes = {name: info["size"] for name, info in found.items()}
        return sum(sizes.values()) if total else sizes

    # ------------------------------------------------------------------ reads

    def _open(
        self,
        path: str,
        mode: str = "rb",
        block_size: int | None = None,
        autocommit: bool = True,
        cache_options: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> HCStoreFile:
        """Open an object: ``"rb"`` (seekable, one version), ``"wb"`` or ``"xb"`` (committed on close).

        Raises:
            FileNotFoundError: reading an object that does not exist.
            FileExistsError: ``"xb"`` on an existing object (checked at open, not atomically).
            NotImplementedError: ``"ab"``: objects are immutable, there is no append.
        """
        if mode == "ab":
            raise NotImplementedError("hcstore objects are immutable: append ('ab') is not supported")
        if mode == "xb":
            self._check_create(path, "create")
        return HCStoreFile(
            self,
            path,
            mode,
            block_size=block_size or self.blocksize,
            autocommit=autocommit,
            cache_options=cache_options,
            **kwargs,
        )

    def cat_file(self, path: str, start: int | None = None, end: int | None = None, **kwargs: Any) -> bytearray:
        """The object's bytes, or ``[start:end]`` of them (negative values count from the end)."""
        bucket, key = self._object(path)
        if start is None and end is None:
            return self.client.get(bucket, key)
        return retrying(
            self.client,
            lambda: self._read_version(resolve(self.client, bucket, key, fewest=True), start, end),
            what=f"cat_file {PROTOCOL}://{bucket}/{key}",
        )

    def _read_version(self, version: ObjectVersion, start: int | None, end: int | None) -> bytearray:
        """``[start:end]`` of one version, with Python slice semantics.

        Raises:
            ObjectChanged: the version was overwritten and retired while it was read.
        """
        lo, hi, _ = slice(start, end).indices(version.size)
        return read_bytes(self.client, version, lo, max(0, hi - lo))

    def get_file(
        self,
        rpath: str,
        lpath: Any,
        callback: Callback = DEFAULT_CALLBACK,
        outfile: BinaryIO | None = None,
        **kwargs: Any,
    ) -> None:
        """Stream an object to a local file (written under a temporary name, then renamed) or ``outfile``.

        A directory gives a local directory.
        """
        version = self._version_or_none(rpath)
        if version is None:
            os.makedirs(lpath, exist_ok=True)
            return
        if outfile is None and isfilelike(lpath):
            outfile = lpath
        callback.set_size(version.size)
        if outfile is not None:
            self._copy_out(version, outfile, callback)
            return
        target = Path(lpath)
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.hcstore-part")
        try:
            with open(partial, "wb") as f:
                self._copy_out(version, f, callback)
            os.replace(partial, target)
        finally:
            partial.unlink(missing_ok=True)

    def _version_or_none(self, path: str) -> ObjectVersion | None:
        """The object's version, or None where ``path`` is a directory.

        Raises:
            FileNotFoundError: neither an object nor a directory.
        """
        bucket, key = self._split(path)
        if key:
            try:
                return self.client.resolve(bucket, key)
            except FileNotFoundError:
                if not self.isdir(path):
                    raise
        elif not self.isdir(path):
            raise FileNotFoundError(path)
        return None

    def _copy_out(self, version: ObjectVersion, out: Any, callback: Callback) -> None:
        for piece in iter_range(self.client, version, 0, version.size):
            out.write(piece)
            callback.relative_update(len(piece))

    # ------------------------------------------------------------------ writes

    def pipe_file(self, path: str, value: bytes, mode: str = "overwrite", **kwargs: Any) -> None:
        """Store ``value`` as the object's new version (``mode="create"``: fail if it exists, not atomically)."""
        bucket, key = self._object(path)
        self._check_create(path, mode)
        self.client.put(bucket, key, value)

    def put_file(
        self, lpath: Any, rpath: str, callback: Callback = DEFAULT_CALLBACK, mode: str = "overwrite", **kwargs: Any
    ) -> None:
        """Stream a local file into an object; a local directory needs nothing (directories are implicit)."""
        if os.path.isdir(lpath):
            self.mkdir(rpath)
            return
        bucket, key = self._object(rpath)
        self._check_create(rpath, mode)
        with open(lpath, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            callback.set_size(size)
            self.client.put(bucket, key, _blocks(f, callback), size=size)

    def cp_file(self, path1: str, path2: str, **kwargs: Any) -> None:
        """Copy one object to another (streamed through this client); a directory needs nothing."""
        version = self._version_or_none(path1)
        if version is None:
            return
        bucket, key = self._object(path2)
        self.client.put(bucket, key, iter_range(self.client, version, 0, version.size), size=version.size)

    def _check_create(self, path: str, mode: str) -> None:
        """For ``mode="create"``: raise FileExistsError if the object exists (a check, not an atomic guard)."""
        if mode == "create" and self.isfile(path):
            raise FileExistsError(f"{PROTOCOL}://{self._strip_protocol(path)} exists")

    def rm_file(self, path: str) -> None:
        """Delete one object.

        Raises:
            FileNotFoundError: no such object.
        """
        self.client.delete(*self._object(path))

    def _rm(self, path: str) -> None:
        """fsspec's older name for :meth:`rm_file`."""
        self.rm_file(path)

    def rm(self, path: Any, recursive: bool = False, maxdepth: int | None = None) -> None:
        """Delete objects; with ``recursive``, everything under directories too.

        Raises:
            FileNotFoundError: a path named is neither an object nor a directory.
            IsADirectoryError: a path is a directory and ``recursive`` is False.
        """
        paths = self.expand_path(path, recursive=recursive, maxdepth=maxdepth)
        parents = {p.rsplit("/", 1)[0] for p in paths if "/" in p}
        for p in reversed(paths):
            try:
                self.rm_file(p)
            except (FileNotFoundError, IsADirectoryError):
                if p in parents:
                    continue  # a directory of this expansion: implicit, nothing to delete
                if not self.isdir(p):
                    raise
                if not recursive:
                    raise IsADirectoryError(f"{PROTOCOL}://{p} is a directory: use recursive=True") from None


class HCStoreFile(AbstractBufferedFile):
    """A file of an :class:`HCStoreFileSystem`: reads one version, or writes a new one.

    Reading resolves the object's version once and fetches ranges of it with
    ``read_range``/``iter_range``; reads of ``block_size`` or more skip the cache
    and land in the caller's buffer. Writing streams straight into an
    :class:`~hcstore.client.writer.ObjectWriter` (which buffers one stripe), committed
    by ``close()`` (or by ``commit()`` inside a transaction) and aborted by an
    exception in the ``with`` block, by ``discard()``, or by garbage collection.

    ``open(path, "rb", generation=g)`` opens only that version: if the object is
    now another one, it raises :class:`~hcstore.errors.ObjectChanged`. A pickled
    read file reopens this way, so it goes on reading the version it started with.
    """

    def __init__(
        self, fs: HCStoreFileSystem, path: str, mode: str = "rb", *, generation: str | None = None, **kwargs: Any
    ) -> None:
        self.bucket, self.key = fs._object(path)
        self.version: ObjectVersion | None = None
        self._writer: ObjectWriter | None = None
        self._discarded = False
        if mode == "rb":
            self.version = self._resolve(fs, generation)
            kwargs["size"] = self.version.size
        super().__init__(fs, fs._strip_protocol(path), mode, **kwargs)
        if self.version is not None:
            self.details = _object_info(self.bucket, self.key, self.version.size, self.version.generation)
            self.kwargs["generation"] = self.version.generation  # what a pickled copy reopens

    def _resolve(self, fs: HCStoreFileSystem, generation: str | None) -> ObjectVersion:
        version = fs.client.resolve(self.bucket, self.key, fewest=True)
        if generation is not None and version.generation != generation:
            raise ObjectChanged(
                f"{PROTOCOL}://{self.bucket}/{self.key} is now generation {version.generation}, "
                f"not {generation}; open it again without generation= to read the new version"
            )
        return version

    # ------------------------------------------------------------------ reading

    def _fetch_range(self, start: int, end: int) -> bytes:
        version = self.version
        assert version is not None
        return retry_pinned(self.fs.client, version, lambda: self.fs._read_version(version, start, end))

    def read(self, length: int = -1) -> bytes:
        """Up to ``length`` bytes (all that is left if negative); big reads bypass the cache."""
        if self.mode != "rb" or self.closed:
            return super().read(length)  # raises the right error
        length = self.size - self.loc if length is None or length < 0 else int(length)
        if length >= self.blocksize:
            data = self._fetch_range(self.loc, min(self.size, self.loc + length))
            self.loc += len(data)
            return data
        return super().read(length)

    def readinto(self, b: Any) -> int:
        """Read into a writable buffer; one of ``block_size`` or more is filled with no extra copy."""
        view = memoryview(b).cast("B")
        if self.mode != "rb" or self.closed or len(view) < self.blocksize:
            return super().readinto(view)
        version = self.version
        assert version is not None
        count = max(0, min(len(view), self.size - self.loc))
        retry_pinned(self.fs.client, version, lambda: read_range(self.fs.client, version, self.loc, count, view))
        self.loc += count
        return count

    # ------------------------------------------------------------------ writing

    def _stream(self) -> ObjectWriter:
        if self._writer is None:
            self._writer = self.fs.client.writer(self.bucket, self.key)
        return self._writer

    def write(self, data: Any) -> int:
        """Send bytes on to the object's writer; nothing is visible before ``close()``."""
        if not self.writable():
            raise ValueError("File not in write mode")
        if self.forced:
            raise ValueError("This file has been force-flushed, can only close")
        written = self._stream().write(data)
        self.loc += written
        return written

    def _initiate_upload(self) -> None:
        self._stream()

    def _upload_chunk(self, final: bool = False) -> bool:
        if final and self.autocommit:
            self.commit()
        return True

    def commit(self) -> None:
        """Make the written bytes the object's new version (nothing, if it was discarded)."""
        if not self._discarded:
            self._stream().close()

    def discard(self) -> None:
        """Abort the write: the previous version stays the object."""
        self._discarded = True
        if self._writer is not None:
            self._writer.abort()

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        if exc_type is not None and self.writable():
            self.discard()
            self.closed = True
        else:
            self.close()

    def __del__(self) -> None:
        if not self.closed and self.writable():
            log.warning("%s://%s/%s was never closed: its write is discarded", PROTOCOL, self.bucket, self.key)
            self.discard()
            self.closed = True
        elif not self.closed:
            self.close()


def _locate_cluster(cluster: str | os.PathLike[str] | None) -> str | None:
    """The cluster argument as a string; for None, the cluster the environment names now (or None).

    A cluster that cannot be found yet is left for the client to report at first use, with
    what it tried and how to start or name one.
    """
    try:
        return ClusterSource.find(cluster).location
    except ClusterNotFound:
        return None if cluster is None else os.fspath(cluster)


class DetailListing(dict[str, dict[str, Any]]):
    """``find(..., detail=True)``'s answer: info by name, and whether every object is there.

    Attributes:
        complete: Every object is there (see :class:`~hcstore.client.client.Listing`).
        unreached: The nodes that did not answer.
    """

    def __init__(
        self, entries: dict[str, dict[str, Any]], *, unreached: tuple[str, ...] = (), complete: bool = True
    ) -> None:
        super().__init__(entries)
        self.complete = complete
        self.unreached = unreached


def _like(listing: Listing[Any], entries: Iterable[T]) -> Listing[T]:
    """``entries`` as a listing exactly as complete as ``listing``."""
    return Listing(entries, unreached=listing.unreached, complete=listing.complete)


def _object_info(bucket: str, key: str, size: int, generation: str) -> dict[str, Any]:
    return {"name": f"{bucket}/{key}", "size": size, "type": "file", "generation": generation}


def _dir_info(name: str) -> dict[str, Any]:
    return {"name": name, "size": 0, "type": "directory"}


def _blocks(f: io.BufferedReader, callback: Callback) -> Iterator[bytes]:
    while block := f.read(_COPY_BLOCK):
        yield block
        callback.relative_update(len(block))
