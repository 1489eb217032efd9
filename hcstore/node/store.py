"""The local store of one agent: fragments on several mountpaths.

Write path, crash-atomic at every step:

1. ``open_upload``: pick a mountpath by HRW over mountpath ids (falling back
   down the ranking when one is full), check the high watermark for the
   fragment's expected size *before* writing anything, create
   ``tmp/<upload>.part`` with the fragment preamble.
2. ``write_chunk``: append chunk ``stripe`` (stripes arrive in order).
3. ``prepare``: append the trailer and footer, fsync (durability policy),
   rename to ``frags/.../<name>.prep``, fsync the directory, then index it.
4. ``commit``: rename ``.prep`` to ``.frag`` and mark it committed.

A crash before 3 leaves a ``.part`` file that startup discards; a crash
between a rename and the index update leaves a file that startup
reconciliation puts back into the index. Reads never see a ``.part`` file.
Older generations are removed by ``retire`` once the writer knows the newer
one is committed everywhere it could be.

Limits: each peer (client) may hold only so many open uploads and so many
bytes reserved ahead of its writes (:mod:`hcstore.node.peers`); an upload that
has written nothing within :data:`IDLE_UPLOAD_TTL` is reclaimed, one that has
stalled later after the agent's ``upload_ttl``.

Failures: an ``OSError`` is a disk fault, which takes the mountpath out of
service, only when it is one. Running out of file descriptors or memory
(``EMFILE``, ``ENFILE``, ``ENOMEM``, ...) is overload: the request fails with
the retryable :class:`~hcstore.errors.AgentBusy` and the mountpath stays in
service; a file system that is full (``ENOSPC``, ``EDQUOT``) is
:class:`~hcstore.errors.StoreFull`. A fragment file that is truncated or whose
trailer does not describe the file is :class:`FragmentFileDamaged`.

Thread safety: the store may be used from many threads at once. A short lock
guards the shared tables (open uploads, reservations, disabled mountpaths) and
another the header cache; neither is held across file I/O. Each upload has its
own lock, held while its chunks are hashed and written and while it is sealed,
so uploads proceed in parallel; changes to one object's fragment files (commit,
drop, quarantine, retire, tombstone) are serialised by a lock chosen by the
object's name. Reads take only the header cache's lock, so they never wait for
a write or an fsync; each thread reads the index through its own SQLite
connection (see :class:`~hcstore.node.index.FragmentIndex`).
"""

from __future__ import annotations

import builtins
import errno
import logging
import os
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import blake3
import msgpack

from ec import (
    DATA_OFFSET,
    FOOTER_SIZE,
    FormatVersionError,
    FragmentFormatError,
    FragmentHeader,
    check_preamble,
    chunk_digest,
    chunk_offset,
    encode_preamble,
    encode_trailer,
    header_from_dict,
    header_to_dict,
    parse_footer,
    parse_trailer,
)
from hcstore.config import AgentConfig
from hcstore.errors import (
    AgentBusy,
    CorruptFragment,
    DiskError,
    HCStoreError,
    InvalidRequest,
    MessageTooLarge,
    ObjectNotFound,
    StoreFull,
    UploadNotFound,
)
from hcstore.files import fsync_directory
from hcstore.generation import is_generation
from hcstore.names import check_bucket, check_key
from hcstore.node.index import IndexEntry
from hcstore.node.mountpath import Mountpath
from hcstore.node.peers import PeerLimits
from hcstore.wire.server import UNKNOWN_PEER
from placement import choose_mountpaths

log = logging.getLogger(__name__)

STATE_SUFFIX = {"prepared": "prep", "committed": "frag", "tombstone": "tomb"}
SUFFIX_STATE = {"prep": "prepared", "frag": "committed", "tomb": "committed"}
_HEADER_CACHE_SIZE = 4096
_OBJECT_LOCKS = 64
IDLE_UPLOAD_TTL = 30.0
"""Seconds an upload may stay open before its first chunk arrives (``upload_ttl`` applies once it has one)."""
_OVERLOAD = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS, errno.EAGAIN})
_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})


class FragmentFileDamaged(CorruptFragment):
    """A fragment file is truncated, or its trailer does not describe the file: its bytes cannot be trusted,
    and the agent takes it out of service (it crosses the wire as :class:`~hcstore.errors.CorruptFragment`)."""


def key_hash(bucket: str, key: str) -> str:
    """Hex name of a key on disk (keys never become file names themselves)."""
    return blake3.blake3(f"{bucket}\x00{key}".encode("utf-8", "surrogatepass")).hexdigest()[:32]


def fragment_name(bucket: str, key: str, gen: str, idx: int, suffix: str) -> str:
    """The file name of a fragment inside a mountpath's ``frags/`` (keys never become file names)."""
    digest = key_hash(bucket, key)
    return f"{digest[:2]}/{digest}.{gen}.{idx}.{suffix}"


def _info_of(header: FragmentHeader) -> bytes:
    summary = header_to_dict(header)
    summary.pop("digests", None)
    return msgpack.packb(summary, use_bin_type=True)


@dataclass
class Upload:
    """A fragment being written to a temporary file."""

    id: str
    mountpath: Mountpath
    path: Path
    fd: int
    bucket: str
    key: str
    gen: str
    idx: int
    chunk_size: int
    reserved: int
    peer: str = UNKNOWN_PEER
    next_stripe: int = 0
    digests: list[bytes] = field(default_factory=list)
    opened: float = field(default_factory=time.monotonic)
    touched: float = field(default_factory=time.monotonic)  # when it was opened or its last chunk was written
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)  # held while writing or sealing
    closed: bool = False  # sealed or discarded: no further chunks

    @property
    def ahead(self) -> int:
        """Bytes reserved beyond what the chunks written so far take (with the file's framing)."""
        return max(0, self.reserved - (DATA_OFFSET + self.next_stripe * self.chunk_size + FOOTER_SIZE))


class LocalStore:
    """All fragments of one agent, over its mountpaths.

    Args:
        config: the agent's settings.
        peer_limits: what one peer's open uploads may hold (:mod:`hcstore.node.peers`).
        idle_upload_ttl: seconds an upload may stay open without its first chunk.
    """

    def __init__(
        self, config: AgentConfig, *, peer_limits: PeerLimits | None = None, idle_upload_ttl: float = IDLE_UPLOAD_TTL
    ) -> None:
        if not config.mountpaths:
            raise InvalidRequest("an agent needs at least one mountpath")
        self.config = config
        self.mountpaths = [
            Mountpath(p, capacity_bytes=config.capacity_bytes, high_watermark=config.high_watermark)
            for p in config.mountpaths
        ]
        ids = [mp.id for mp in self.mountpaths]
        if len(set(ids)) != len(ids):
            raise InvalidRequest(f"two mountpaths share one id (copied directory?): {config.mountpaths}")
        self._by_id = {mp.id: mp for mp in self.mountpaths}
        self.disabled: dict[str, str] = {}  # mountpath id -> the I/O error that disabled it
        self.uploads: dict[str, Upload] = {}
        self.peer_limits = peer_limits or PeerLimits()
        self.idle_upload_ttl = idle_upload_ttl
        self._peer_uploads: dict[str, dict[str, Upload]] = {}  # peer -> its open uploads by id
        self._headers: OrderedDict[str, tuple[tuple[int, int, int], FragmentHeader]] = OrderedDict()
        self._lock = threading.Lock()  # uploads, reservations, disabled; never held across I/O
        self._headers_lock = threading.Lock()  # the header cache alone, so reads never wait for writers
        self._object_locks = [threading.Lock() for _ in range(_OBJECT_LOCKS)]
        for mp in self.mountpaths:
            self._reconcile(mp)

    @property
    def serving(self) -> list[Mountpath]:
        """Mountpaths in service (an I/O error takes one out until the agent restarts)."""
        return [mp for mp in self.mountpaths if mp.id not in self.disabled]

    def _disable(self, mp: Mountpath, exc: OSError) -> None:
        """Take a failing mountpath out of service: its fragments count as lost and repair rebuilds them."""
        with self._lock:
            mp.io_errors += 1
            if mp.id in self.disabled:
                return
            self.disabled[mp.id] = f"{type(exc).__name__}: {exc.strerror or exc}"
        log.error(
            "mountpath %s disabled after an I/O error (%s); its fragments will be rebuilt elsewhere",
            mp.path,
            self.disabled[mp.id],
        )

    def _failure(self, mp: Mountpath, exc: OSError, what: str) -> HCStoreError:
        """The error for an ``OSError`` met while doing ``what`` on ``mp``: :class:`AgentBusy` when the process
        is short of file descriptors or memory, :class:`StoreFull` when the file system is full, and otherwise a
        :class:`DiskError` that takes the mountpath out of service (only a disk fault does)."""
        reason = exc.strerror or str(exc)
        code = errno.errorcode.get(exc.errno or 0, "")
        if exc.errno in _OVERLOAD:
            return AgentBusy(
                f"node {self.config.node_id} is overloaded: {what} failed: {reason} ({code}); "
                f"mountpath {mp.path} stays in service, send again later"
            )
        if exc.errno in _FULL:
            return StoreFull(f"node {self.config.node_id}: {what} failed: {reason} ({code}) on mountpath {mp.path}")
        self._disable(mp, exc)
        return DiskError(f"{what} failed: {reason}")

    def _object_lock(self, bucket: str, key: str) -> threading.Lock:
        """The lock that serialises changes to the fragment files of one object."""
        return self._object_locks[int(key_hash(bucket, key)[:8], 16) % _OBJECT_LOCKS]

    def _forget_header(self, path: Path) -> None:
        with self._headers_lock:
            self._headers.pop(str(path), None)

    # ------------------------------------------------------------------ startup

    def _reconcile(self, mp: Mountpath) -> None:
        """Discard unfinished uploads and make the index agree with the files."""
        for part in mp.tmp_dir.glob("*.part"):
            part.unlink(missing_ok=True)
        try:
            healthy = mp.index.check()
        except Exception:  # noqa: BLE001 - any failure to read the index means: rebuild it from the files
            healthy = False
        if not healthy:
            log.warning("index of mountpath %s is damaged; rebuilding from fragment files", mp.path)
            mp.index.reset()
        on_disk = {str(p.relative_to(mp.frag_dir)) for p in mp.frag_dir.glob("*/*.*")}
        indexed = mp.index.names()
        for name in indexed - on_disk:
            mp.index.remove_name(name)
        for name in sorted(on_disk - indexed):
            self._index_file(mp, name)

    def _index_file(self, mp: Mountpath, name: str) -> None:
        path = mp.fragment_path(name)
        suffix = name.rsplit(".", 1)[-1]
        if suffix not in SUFFIX_STATE:
            return
        try:
            header = self._load_header(path)
        except (FragmentFormatError, OSError) as exc:
            log.warning("ignoring unreadable fragment file %s: %s", path, exc)
            return
        mp.index.put(self._entry(header, SUFFIX_STATE[suffix], name, path.stat().st_size))

    @staticmethod
    def _entry(header: FragmentHeader, state: str, name: str, file_bytes: int) -> IndexEntry:
        return IndexEntry(
            header.bucket,
            header.key,
            header.generation,
            header.index,
            state,
            header.kind,
            header.size,
            file_bytes,
            name,
            _info_of(header),
        )

    # ------------------------------------------------------------------ write path

    def open_upload(
        self,
        bucket: str,
        key: str,
        gen: str,
        idx: int,
        chunk_size: int,
        expected_bytes: int | None,
        *,
        peer: str = UNKNOWN_PEER,
        reserve_ahead: bool = True,
    ) -> str:
        """Start writing one fragment; refuses with StoreFull before writing anything.

        Args:
            bucket: The object's bucket.
            key: The object's key.
            gen: The object's generation.
            idx: The fragment's index.
            chunk_size: Bytes per chunk.
            expected_bytes: The fragment's data size when known: a node that cannot take it refuses now.
            peer: Who opens it (:func:`hcstore.wire.server.peer_of`), for the limits kept per peer.
            reserve_ahead: False when the chunks come with the request (``store``): nothing is then
                reserved ahead of data, and the peer's share of reservations does not apply.

        Raises:
            StoreFull: no mountpath can take the fragment.
            PeerLimitReached: the peer holds its whole share of open uploads or of reservations.
            AgentBusy: the node is short of file descriptors or memory.
        """
        _check_fragment_id(bucket, key, gen)
        data_bytes = expected_bytes or chunk_size
        need = DATA_OFFSET + FOOTER_SIZE + data_bytes
        least = DATA_OFFSET + FOOTER_SIZE + min(data_bytes, chunk_size)
        upload_id = uuid.uuid4().hex
        with self._lock:
            mp = self._mountpath_with_room(bucket, key, need)
            held = self._peer_uploads.get(peer, {})
            self.peer_limits.admit(peer, len(held), node=self.config.node_id)
            reserved = need
            if reserve_ahead:
                ahead = sum(u.ahead for u in held.values())
                reserved = self.peer_limits.grant(
                    peer, ahead=ahead, want=need, least=least, room=self._room(), node=self.config.node_id
                )
            path = mp.tmp_dir / f"{upload_id}.part"
            upload = Upload(upload_id, mp, path, -1, bucket, key, gen, idx, chunk_size, reserved, peer)
            mp.reserved += reserved
            self.uploads[upload_id] = upload  # counted from now on, so that parallel opens of one peer see each other
            self._peer_uploads.setdefault(peer, {})[upload_id] = upload
        with upload.lock:
            try:
                upload.fd = os.open(upload.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                os.write(upload.fd, encode_preamble())
            except OSError as exc:
                self._discard(upload)
                raise self._failure(mp, exc, f"creating {upload.path} on mountpath {mp.id}") from None
        return upload_id

    def _room(self) -> int:
        """Bytes that the serving mountpaths may still take, reservations deducted, counting each device once
        (call under ``_lock``)."""
        return sum(self._free_by_device().values())

    def _free_by_device(self) -> dict[int, int]:
        """Free bytes under the watermark of each device holding a serving mountpath."""
        free: dict[int, int] = {}
        for mp in self.serving:
            device = -len(free) - 1 if mp.capacity_bytes else mp.device
            free[device] = max(free.get(device, 0), mp.usage().free)
        return free

    def _mountpath_with_room(self, bucket: str, key: str, nbytes: int) -> Mountpath:
        """The first mountpath in ``bucket/key``'s ranking that can take ``nbytes`` (call under ``_lock``)."""
        for mp_id in choose_mountpaths(f"{bucket}/{key}", [mp.id for mp in self.serving]):
            mp = self._by_id[mp_id]
            if mp.can_fit(nbytes):
                return mp
        usage = [f"{mp.path}: {mp.usage().used}/{mp.usage().limit} bytes" for mp in self.serving]
        raise StoreFull(
            f"node {self.config.node_id}: no mountpath can take {nbytes} more bytes under the "
            f"{self.config.high_watermark:.0%} high watermark ({'; '.join(usage)}); free space or add mountpaths"
        )

    def _upload(self, upload_id: str) -> Upload:
        with self._lock:
            upload = self.uploads.get(upload_id)
        if upload is None:
            raise UploadNotFound(f"no open upload {upload_id!r} on node {self.config.node_id} (expired or aborted)")
        return upload

    def _check_open(self, upload: Upload) -> None:
        """Refuse an upload that was sealed or discarded while the caller waited for its lock."""
        if upload.closed:
            raise UploadNotFound(f"no open upload {upload.id!r} on node {self.config.node_id} (expired or aborted)")

    def write_chunk(self, upload_id: str, stripe: int, data: Any) -> None:
        """Append chunk ``stripe`` of an upload."""
        upload = self._upload(upload_id)
        with upload.lock:
            self._check_open(upload)
            if stripe != upload.next_stripe:
                raise InvalidRequest(f"upload {upload_id}: got stripe {stripe}, expected {upload.next_stripe}")
            if len(data) != upload.chunk_size:
                raise InvalidRequest(f"upload {upload_id}: chunk of {len(data)} bytes, expected {upload.chunk_size}")
            written = DATA_OFFSET + (stripe + 1) * upload.chunk_size + FOOTER_SIZE
            if written > upload.reserved and not self._grow(upload, written - upload.reserved):
                self._discard(upload)
                raise StoreFull(
                    f"node {self.config.node_id}: mountpath {upload.mountpath.path} reached its "
                    f"high watermark while writing {upload.bucket}/{upload.key}; upload aborted"
                )
            digest = chunk_digest(data)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(upload.fd, view) :]
                if self.config.durability == "always":
                    os.fdatasync(upload.fd)
            except OSError as exc:
                self._discard(upload)
                raise self._failure(upload.mountpath, exc, f"writing to {upload.path}") from None
            upload.digests.append(digest)
            upload.next_stripe += 1
            upload.touched = time.monotonic()

    def _grow(self, upload: Upload, nbytes: int) -> bool:
        """Reserve ``nbytes`` more for an upload; False when its mountpath cannot take them."""
        with self._lock:
            if not upload.mountpath.can_fit(nbytes):
                return False
            upload.mountpath.reserved += nbytes
            upload.reserved += nbytes
            return True

    def prepare(self, upload_id: str, header_fields: dict[str, Any]) -> None:
        """Seal an upload with its trailer and rename it into place as *prepared*.

        The chunk digests in the trailer are the ones this agent computed over
        the bytes it received and wrote; ``header_fields`` carries everything else.
        """
        upload = self._upload(upload_id)
        with upload.lock:
            self._check_open(upload)
            try:
                header = header_from_dict({**header_fields, "digests": b"".join(upload.digests)})
            except (FragmentFormatError, TypeError, ValueError, KeyError) as exc:
                raise InvalidRequest(f"prepare {upload_id}: bad fragment header: {exc}") from None
            expected = (upload.bucket, upload.key, upload.gen, upload.idx, upload.chunk_size, upload.next_stripe)
            got = (header.bucket, header.key, header.generation, header.index, header.chunk_size, header.stripes)
            if expected != got or header.kind != "data":
                raise InvalidRequest(f"prepare {upload_id}: header {got} does not match the upload {expected}")
            trailer = encode_trailer(header, DATA_OFFSET + upload.next_stripe * upload.chunk_size)
            name = fragment_name(upload.bucket, upload.key, upload.gen, upload.idx, "prep")
            try:
                os.write(upload.fd, trailer)
                if self.config.durability != "none":
                    os.fsync(upload.fd)
                os.close(upload.fd)
                upload.fd = -1
                self._rename_into_place(upload.mountpath, upload.path, name)
                file_bytes = upload.mountpath.fragment_path(name).stat().st_size
            except OSError as exc:
                self._discard(upload)
                raise self._failure(upload.mountpath, exc, f"sealing {upload.path}") from None
            upload.mountpath.index.put(self._entry(header, "prepared", name, file_bytes))
            upload.closed = True
            self._forget(upload)  # after the index counts the file, so the mountpath never looks emptier than it is

    def _rename_into_place(self, mp: Mountpath, source: Path, name: str) -> None:
        target = mp.fragment_path(name)
        try:
            target.parent.mkdir()
        except FileExistsError:
            pass
        else:
            if self.config.durability != "none":
                fsync_directory(mp.frag_dir)  # the new directory itself, or a power cut can take it all
        os.replace(source, target)
        if self.config.durability != "none":
            dir_fd = os.open(target.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)

    def commit(self, bucket: str, key: str, gen: str, idx: int) -> None:
        """Make a prepared fragment visible (idempotent)."""
        _check_fragment_id(bucket, key, gen)
        with self._object_lock(bucket, key):
            mp, entry = self._find(bucket, key, gen, idx)
            if entry.state == "committed":
                return
            name = committed_name(entry.name)
            try:
                self._rename_into_place(mp, mp.fragment_path(entry.name), name)
            except OSError as exc:
                raise self._failure(mp, exc, f"commit of {bucket}/{key} fragment {idx}") from None
            self._forget_header(mp.fragment_path(entry.name))
            mp.index.put(IndexEntry(**{**entry.__dict__, "state": "committed", "name": name}))

    def abort(self, upload_id: str) -> None:
        """Discard an open upload (idempotent); waits for a chunk being written to it."""
        with self._lock:
            upload = self.uploads.get(upload_id)
        if upload is None:
            return
        with upload.lock:
            self._discard(upload)

    def _discard(self, upload: Upload) -> None:
        """Close and delete an upload's file and release its room (the caller holds ``upload.lock``)."""
        if upload.closed:
            return
        upload.closed = True
        self._forget(upload)
        if upload.fd >= 0:
            os.close(upload.fd)
            upload.fd = -1
        try:
            upload.path.unlink(missing_ok=True)
        except OSError as exc:  # the disk that failed the upload may fail this too; the error at hand is reported
            log.warning("could not remove %s: %s", upload.path, exc)

    def _forget(self, upload: Upload) -> None:
        """Drop a sealed or discarded upload from the tables and release its room."""
        with self._lock:
            self.uploads.pop(upload.id, None)
            held = self._peer_uploads.get(upload.peer)
            if held is not None:
                held.pop(upload.id, None)
                if not held:
                    del self._peer_uploads[upload.peer]
            upload.mountpath.reserved -= upload.reserved

    def peer_usage(self) -> dict[str, tuple[int, int]]:
        """Each peer with open uploads here: how many, and the bytes they hold reserved ahead of their writes."""
        with self._lock:
            return {peer: (len(held), sum(u.ahead for u in held.values())) for peer, held in self._peer_uploads.items()}

    def _expired(self, upload: Upload, now: float) -> bool:
        """An upload that wrote nothing for ``upload_ttl``, or that has not written its first chunk within
        :attr:`idle_upload_ttl` of being opened (so a peer cannot hold reservations by opening alone)."""
        if upload.next_stripe == 0 and now - upload.opened > min(self.idle_upload_ttl, self.config.upload_ttl):
            return True
        return now - upload.touched > self.config.upload_ttl

    def expire_uploads(self, now: float | None = None) -> int:
        """Abort uploads idle for longer than their TTL (see :meth:`_expired`); returns how many.

        An upload whose chunk is being written or which is being sealed is not idle, and is left alone.
        """
        now = time.monotonic() if now is None else now
        with self._lock:
            stale = [u for u in self.uploads.values() if self._expired(u, now)]
        expired = 0
        for upload in stale:
            if upload.lock.acquire(blocking=False):
                try:
                    if not upload.closed and self._expired(upload, now):
                        self._discard(upload)
                        expired += 1
                finally:
                    upload.lock.release()
        return expired

    def tombstone(self, header_fields: dict[str, Any]) -> None:
        """Write a committed tombstone generation and retire everything older."""
        try:
            header = header_from_dict(header_fields)
        except (FragmentFormatError, TypeError, ValueError, KeyError) as exc:
            raise InvalidRequest(f"tombstone: bad header: {exc}") from None
        if header.kind != "tombstone":
            raise InvalidRequest(f"tombstone: header kind is {header.kind!r}")
        _check_fragment_id(header.bucket, header.key, header.generation)
        with self._lock:
            mp = self._mountpath_with_room(header.bucket, header.key, 4096)
        name = fragment_name(header.bucket, header.key, header.generation, header.index, "tomb")
        tmp = mp.tmp_dir / f"{uuid.uuid4().hex}.part"
        with self._object_lock(header.bucket, header.key):
            try:
                with open(tmp, "wb") as f:
                    f.write(encode_preamble())
                    f.write(encode_trailer(header, DATA_OFFSET))
                    if self.config.durability != "none":
                        f.flush()
                        os.fsync(f.fileno())
                self._rename_into_place(mp, tmp, name)
                file_bytes = mp.fragment_path(name).stat().st_size
            except OSError as exc:
                tmp.unlink(missing_ok=True)
                raise self._failure(mp, exc, f"tombstone of {header.bucket}/{header.key}") from None
            mp.index.put(self._entry(header, "committed", name, file_bytes))
            self._retire(header.bucket, header.key, header.generation)

    def retire(self, bucket: str, key: str, gen: str) -> int:
        """Delete this node's fragments of ``bucket/key`` older than ``gen``, a committed generation; returns how many.

        Prepared ones go too: an older generation can never become visible behind ``gen``, and a
        writer still committing one is told it was superseded (its commit finds no fragment).
        """
        _check_fragment_id(bucket, key, gen)
        with self._object_lock(bucket, key):
            return self._retire(bucket, key, gen)

    def _retire(self, bucket: str, key: str, gen: str) -> int:
        removed = 0
        for mp in self.serving:
            for entry in mp.index.entries(bucket, key):
                if entry.gen < gen:
                    path = mp.fragment_path(entry.name)
                    path.unlink(missing_ok=True)
                    self._forget_header(path)
                    mp.index.remove(bucket, key, entry.gen, entry.idx)
                    removed += 1
        return removed

    def drop(self, bucket: str, key: str, gen: str, idx: int) -> None:
        """Delete one fragment that now lives elsewhere (rebalance); idempotent."""
        _check_fragment_id(bucket, key, gen)
        with self._object_lock(bucket, key):
            for mp in self.serving:
                entry = mp.index.get(bucket, key, gen, idx)
                if entry is not None:
                    path = mp.fragment_path(entry.name)
                    path.unlink(missing_ok=True)
                    self._forget_header(path)
                    mp.index.remove(bucket, key, gen, idx)

    def quarantine(self, bucket: str, key: str, gen: str, idx: int) -> None:
        """Move a corrupt fragment out of service into ``quarantine/`` (kept for inspection); it then
        counts as lost and is rebuilt by repair. Idempotent."""
        _check_fragment_id(bucket, key, gen)
        with self._object_lock(bucket, key):
            for mp in self.serving:
                entry = mp.index.get(bucket, key, gen, idx)
                if entry is None:
                    continue
                path = mp.fragment_path(entry.name)
                target = mp.path / "quarantine" / path.name
                target.parent.mkdir(exist_ok=True)
                os.replace(path, target)
                self._forget_header(path)
                mp.index.remove(bucket, key, gen, idx)
                log.warning("quarantined corrupt fragment %d of %s/%s (%s)", idx, bucket, key, target)

    # ------------------------------------------------------------------ read path

    def _find(self, bucket: str, key: str, gen: str, idx: int) -> tuple[Mountpath, IndexEntry]:
        for mp in self.serving:
            entry = mp.index.get(bucket, key, gen, idx)
            if entry is not None:
                return mp, entry
        raise ObjectNotFound(f"node {self.config.node_id} holds no fragment {idx} of {bucket}/{key} generation {gen}")

    def header(self, bucket: str, key: str, gen: str, idx: int) -> tuple[Path, FragmentHeader]:
        """The file and header of a fragment here (the header from a cache after its first read)."""
        with self._open_fragment(bucket, key, gen, idx) as (_, path, _, header):
            return path, header

    @contextmanager
    def _open_fragment(
        self, bucket: str, key: str, gen: str, idx: int
    ) -> Iterator[tuple[Mountpath, Path, BinaryIO, FragmentHeader]]:
        """The mountpath, path, open file and header of a fragment here.

        A prepared fragment may be renamed by a commit running at the same time, before the index
        learns its new name: then the file is found under its committed name.
        """
        mp, entry = self._find(bucket, key, gen, idx)
        for path in _paths_of(mp, entry):
            try:  # not `with open(...)`: only the open's own FileNotFoundError means "try the next name"
                f = open(path, "rb")
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise self._failure(mp, exc, f"opening {path}") from None
            with f:
                yield mp, path, f, self._header_of(mp, path, f, f"fragment {idx} of {bucket}/{key}")
            return
        raise ObjectNotFound(f"fragment {idx} of {bucket}/{key} generation {gen} was removed")

    def _header_of(self, mp: Mountpath, path: Path, f: BinaryIO, what: str) -> FragmentHeader:
        """The header of an open fragment file, cached by path and checked against the file's identity."""
        try:
            st = os.fstat(f.fileno())
            identity = (st.st_ino, st.st_size, st.st_mtime_ns)
            with self._headers_lock:
                cached = self._headers.get(str(path))
                if cached is not None and cached[0] == identity:
                    self._headers.move_to_end(str(path))
                    return cached[1]
            header = _read_header(f, path)
        except FormatVersionError as exc:  # written by a newer version: not damaged, just not readable here
            raise CorruptFragment(f"{what} on node {self.config.node_id}: {exc}") from None
        except FragmentFormatError as exc:
            raise FragmentFileDamaged(f"{what} on node {self.config.node_id}: {exc}") from None
        except OSError as exc:
            raise self._failure(mp, exc, f"reading the trailer of {path}") from None
        with self._headers_lock:
            self._headers[str(path)] = (identity, header)
            self._headers.move_to_end(str(path))
            if len(self._headers) > _HEADER_CACHE_SIZE:
                self._headers.popitem(last=False)
        return header

    @staticmethod
    def _load_header(path: Path) -> FragmentHeader:
        with open(path, "rb") as f:
            return _read_header(f, path)

    def read_chunks(
        self, bucket: str, key: str, gen: str, idx: int, first: int, count: int, max_bytes: int
    ) -> tuple[list[bytes], list[memoryview]]:
        """Chunks ``first..first+count-1`` of a fragment and their recorded digests.

        The chunks are read with one ``pread`` into memory of this process, not sent from a mapping of
        the file: a file cut while its reply was still being sent would make the socket's I/O thread read
        past the end of a mapping and abort the agent. The agent never truncates a fragment file; one found
        shorter than its trailer says (truncated behind the agent's back) is :class:`FragmentFileDamaged`.
        """
        _check_fragment_id(bucket, key, gen)
        with self._open_fragment(bucket, key, gen, idx) as (mp, path, f, header):
            if count * header.chunk_size > max_bytes:
                raise MessageTooLarge(f"read of {count} chunks of {header.chunk_size} bytes exceeds {max_bytes} bytes")
            if first + count > header.stripes:
                raise InvalidRequest(
                    f"read of stripes {first}..{first + count - 1} but {bucket}/{key} "
                    f"fragment {idx} has {header.stripes}"
                )
            chunk = header.chunk_size
            start, end = chunk_offset(first, chunk), chunk_offset(first + count, chunk)
            try:
                buffer = memoryview(os.pread(f.fileno(), end - start, start))
                complete = len(buffer) == end - start
            except OSError as exc:
                raise self._failure(mp, exc, f"read of {path}") from None
            if not complete:
                raise FragmentFileDamaged(
                    f"fragment {idx} of {bucket}/{key} on node {self.config.node_id} is truncated: it ends before "
                    f"byte {end}, where its trailer says stripe {first + count - 1} ends"
                )
        data = [
            buffer[chunk_offset(s, chunk) - start : chunk_offset(s + 1, chunk) - start]
            for s in range(first, first + count)
        ]
        return [header.digest(s) for s in range(first, first + count)], data

    def locate(self, bucket: str, key: str) -> list[dict[str, Any]]:
        """Every generation and fragment of a key here, with header summaries."""
        check_bucket(bucket)
        check_key(key)
        return [
            {
                "gen": e.gen,
                "idx": e.idx,
                "state": e.state,
                "kind": e.kind,
                "size": e.size,
                "info": msgpack.unpackb(e.info, raw=False),
            }
            for mp in self.serving
            for e in mp.index.entries(bucket, key)
        ]

    def list(self, bucket: str, prefix: str, start_after: str, limit: int) -> builtins.list[tuple[str, str, str, int]]:
        """Newest committed ``(key, gen, kind, size)`` per key under ``prefix``, merged over mountpaths."""
        check_bucket(bucket)
        newest: dict[str, tuple[str, str, str, int]] = {}
        for mp in self.serving:
            for row in mp.index.newest_per_key(bucket, prefix, start_after, limit):
                if row[0] not in newest or row[1] > newest[row[0]][1]:
                    newest[row[0]] = row
        return [newest[k] for k in sorted(newest)[:limit]]

    def buckets(self) -> builtins.list[str]:
        """Buckets with at least one fragment on this node."""
        return sorted({b for mp in self.serving for b in mp.index.buckets()})

    def stats(self) -> dict[str, Any]:
        """Per mountpath and in total: fragment bytes stored, room left under the watermark, fragment count.

        Each mountpath's ``state`` is ``enabled``, ``full`` (at its high watermark: it takes no
        new fragments) or ``disabled`` (taken out of service by an I/O error); ``used`` and
        ``limit`` are the bytes its watermark counts and the most it may hold, ``io_errors`` the
        I/O errors it has had since the agent started. Mountpaths on one file system share its
        free space, so the total counts each device once.
        """
        mountpaths = []
        free_by_device: dict[int, int] = {}
        for mp in self.mountpaths:
            if mp.id in self.disabled:
                mountpaths.append(
                    {
                        "id": mp.id,
                        "path": str(mp.path),
                        "capacity": 0,
                        "stored": 0,
                        "free": 0,
                        "fragments": 0,
                        "disabled": self.disabled[mp.id],
                        "state": "disabled",
                        "used": 0,
                        "limit": 0,
                        "io_errors": mp.io_errors,
                    }
                )
                continue
            usage = mp.usage()
            stored = mp.index.total_bytes()
            mountpaths.append(
                {
                    "id": mp.id,
                    "path": str(mp.path),
                    "capacity": usage.capacity,
                    "stored": stored,
                    "free": usage.free,
                    "fragments": mp.index.count(),
                    "disabled": self.disabled.get(mp.id, ""),
                    "state": "full" if usage.free == 0 else "enabled",
                    "used": usage.used,
                    "limit": usage.limit,
                    "io_errors": mp.io_errors,
                }
            )
            device = -len(free_by_device) - 1 if mp.capacity_bytes else os.stat(mp.path).st_dev
            free_by_device[device] = max(free_by_device.get(device, 0), usage.free)
        return {
            "mountpaths": mountpaths,
            "used": sum(m["stored"] for m in mountpaths),
            "free": sum(free_by_device.values()),
            "fragments": sum(m["fragments"] for m in mountpaths),
            "data_fragments": sum(mp.index.count("data") for mp in self.serving),
            "uploads": len(self.uploads),
        }

    def close(self) -> None:
        """Abort open uploads and close every mountpath's index."""
        for upload_id in list(self.uploads):
            self.abort(upload_id)
        for mp in self.mountpaths:
            mp.close()


def committed_name(prepared: str) -> str:
    """The file name a prepared fragment takes when it is committed."""
    return prepared[: -len(STATE_SUFFIX["prepared"])] + STATE_SUFFIX["committed"]


def _paths_of(mp: Mountpath, entry: IndexEntry) -> list[Path]:
    """Where the file of an index entry is: its name, then, for a prepared fragment, the name a
    commit running at the same time renames it to (the index learns the new name just after)."""
    path = mp.fragment_path(entry.name)
    if entry.state == "prepared":
        return [path, mp.fragment_path(committed_name(entry.name))]
    return [path]


def _read_header(f: BinaryIO, path: Path) -> FragmentHeader:
    """The header in the trailer of an open fragment file."""
    f.seek(0)
    check_preamble(f.read(DATA_OFFSET))
    end = f.seek(0, os.SEEK_END)
    if end < DATA_OFFSET + FOOTER_SIZE:
        raise FragmentFormatError(f"{path}: {end} bytes is too short for a fragment file")
    f.seek(end - FOOTER_SIZE)
    try:
        offset, length, digest = parse_footer(f.read(FOOTER_SIZE), file_size=end)
        f.seek(offset)
        # the trailer must describe the file it ends: its stripes of chunk_size bytes end where it begins
        return parse_trailer(f.read(length), digest, trailer_offset=offset)
    except FragmentFormatError as exc:
        raise type(exc)(f"{path}: {exc}") from None


def _check_fragment_id(bucket: str, key: str, gen: str) -> None:
    check_bucket(bucket)
    check_key(key)
    if not is_generation(gen):
        raise InvalidRequest(f"invalid generation {gen!r}")
