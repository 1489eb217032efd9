"""The put path: an object streamed stripe by stripe into ``k+m`` fragments.

An :class:`ObjectWriter` buffers one stripe (``k × chunk`` bytes), encodes its
``m`` parity chunks, and hands the stripe to its
:class:`~hcstore.client.upload.FragmentUploads`, which sends chunk ``i`` to the
agent holding fragment ``i`` with at most ``window`` stripes unacknowledged, so
memory stays bounded whatever the object's size. Nothing is sent until the first
stripe is full or the writer is closed: a small object whose size was not known
in advance is still replicated rather than coded, and an object of at most one
stripe is stored with one message per fragment.

Fragments, and the spares that stand in for failed targets, stay inside the
key's home set (the first ``n + m`` nodes of its ranking, :mod:`placement.quorum`).

Protection is synchronous: when the last stripe is acknowledged, every
fragment is *prepared* (sealed, fsynced, renamed), and only when at least the
write quorum (``max(k, m) + 1`` fragments, ``k`` when ``m = 0``; every copy of a
replicated object) is prepared are they *committed*. Until a commit, no reader can see the new generation, so a writer
killed at any point before it leaves the previous version readable; after the
first commit the new generation is the object (readers roll forward over
prepared fragments). Finally older generations are retired on the write set.

A fragment whose agent fails while the put runs is dropped, and the put goes
on as long as the quorum can still be met: the result says ``degraded``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ec import Codec, StripeLayout, chunk_size_for, default_codec_name, make_codec, parse_ec, split_stripe
from hcstore.client.access import ClusterAccess
from hcstore.client.headers import VersionLayout
from hcstore.client.upload import FragmentUpload, FragmentUploads, place_in_home_set
from hcstore.errors import InvalidRequest
from hcstore.names import check_bucket, check_key, check_meta

__all__ = ["ObjectWriter", "PutResult"]


@dataclass(frozen=True)
class PutResult:
    """What a put stored.

    Attributes:
        fragments: node id holding each fragment index ("" where none could be stored).
        degraded: fewer than ``k+m`` fragments were committed; the object is
            readable and awaits repair.
        superseded: a newer version (or a delete) of the key committed while this one was being
            committed and retired it: the put took effect and was overwritten at once (last
            writer wins), so no reader will see this generation and ``fragments`` is empty.
    """

    bucket: str
    key: str
    generation: str
    size: int
    codec: str
    k: int
    m: int
    fragments: tuple[str, ...]
    degraded: bool
    superseded: bool = False


class ObjectWriter:
    """A file-like, write-only stream into one new generation of an object.

    Use as a context manager, or call :meth:`close` (commit) / :meth:`abort`.
    """

    def __init__(
        self,
        client: ClusterAccess,
        bucket: str,
        key: str,
        *,
        size: int | None = None,
        ec: str | None = None,
        codec: str | None = None,
        meta: dict[str, str] | None = None,
    ) -> None:
        self.client = client
        self.bucket = check_bucket(bucket)
        self.key = check_key(key)
        if size is not None and size < 0:
            raise InvalidRequest(f"size must be >= 0, got {size}")
        self.size_hint = size
        self.k, self.m = parse_ec(ec or client.config.ec)
        self.codec_name = codec or client.config.codec
        self.meta = check_meta(meta)
        self.generation = client.clock.now()
        self.written = 0
        self.result: PutResult | None = None
        self._codec: Codec | None = None
        self._uploads: FragmentUploads | None = None
        self._chunk = 0
        self._buffer: bytearray | None = None
        self._fill = 0
        self._pool: list[bytearray] = []  # stripe buffers every agent acknowledged
        self._closed = False
        self._stash = bytearray()
        if size is not None:
            self._start(size)

    @property
    def _targets(self) -> list[FragmentUpload | None]:
        """Each fragment index's upload (None where no node took it); empty before the first stripe is sent."""
        uploads = self._uploads
        return uploads.targets if uploads is not None and uploads.opened else []

    # ------------------------------------------------------------------ file-like

    def writable(self) -> bool:
        """Always True: an ObjectWriter is a writable stream."""
        return True

    def write(self, data: Any) -> int:
        """Append bytes; returns how many."""
        if self._closed:
            raise ValueError("write to a closed ObjectWriter")
        view = memoryview(data).cast("B")
        try:
            self.written += len(view)
            if self._codec is None:
                self._stash += view
                if len(self._stash) >= self.k * self.client.config.chunk_size:
                    self._start(None)
            else:
                self._append(view)
        except BaseException:
            self.abort()
            raise
        return len(view)

    def close(self) -> PutResult:
        """Send what is left, prepare and commit; returns the result. Idempotent."""
        if self.result is not None:
            return self.result
        if self._closed:
            raise ValueError("ObjectWriter was aborted")
        try:
            if self._codec is None:
                self._start(len(self._stash))
            uploads = self._uploads
            assert uploads is not None
            if not uploads.opened:
                self._store_whole(uploads)
            else:
                if self._fill:
                    self._flush_buffer()
                self._pool += uploads.drain(0)
            self.result = self._finish(uploads)
        except BaseException:
            self.abort()
            raise
        self._closed = True
        return self.result

    def abort(self) -> None:
        """Discard everything sent; the previous version stays the object."""
        if self._closed:
            return
        self._closed = True
        if self._uploads is not None:
            self._uploads.abort()

    def __enter__(self) -> ObjectWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    # ------------------------------------------------------------------ set-up

    def _start(self, size: int | None) -> None:
        """Choose codec and chunk size, place the fragments, send the stash."""
        config = self.client.config
        k, m = self.k, self.m
        if size is not None and size < config.replicate_below and k > 1:
            name, k = "replica", 1
        else:
            name = self.codec_name or default_codec_name(k, m)
        codec = self._codec = make_codec(name, k, m)
        self._chunk = chunk_size_for(size, k, config.chunk_size)
        expected = None if size is None else -(-size // (k * self._chunk)) * self._chunk
        self._buffer = self._new_buffer()
        placement, quorum = place_in_home_set(
            f"{self.bucket}/{self.key}", self.client.cluster_map, k, m, operation=f"put {self.bucket}/{self.key}"
        )
        self._uploads = FragmentUploads(
            self.client,
            self.bucket,
            self.key,
            self.generation,
            chunk_size=self._chunk,
            fragments=codec.n,
            targets=dict(enumerate(placement.nodes)),
            spares=placement.spares,
            quorum=quorum,
            expected_bytes=expected,
            operation=f"put {self.bucket}/{self.key}",
        )
        stash, self._stash = self._stash, bytearray()
        if stash:
            self._append(memoryview(stash))

    def _stripe_bytes(self) -> int:
        assert self._codec is not None
        return self._codec.k * self._chunk

    def _append(self, view: memoryview) -> None:
        """Send the stripes that ``view`` completes, except one that may be the object's last: it is held
        until more bytes come or the writer closes, so that an object of one stripe is stored in one
        message (:meth:`_store_whole`)."""
        stripe_bytes = self._stripe_bytes()
        while view:
            assert self._buffer is not None
            if self._fill == stripe_bytes:
                self._flush_buffer()  # the held stripe was not the last
            if self._fill == 0 and len(view) >= stripe_bytes and _kept_unchanged(view) and not self._may_end(view):
                self._send_stripe(view[:stripe_bytes])  # zero copy: the stripe is sent after write() returns
                view = view[stripe_bytes:]
                continue
            take = min(len(view), stripe_bytes - self._fill)
            self._buffer[self._fill : self._fill + take] = view[:take]
            self._fill += take
            view = view[take:]

    def _may_end(self, view: memoryview) -> bool:
        """Whether the stripe at the start of ``view`` may be the object's last (nothing after it in
        ``view``, and no more bytes promised by the size given)."""
        more_promised = self.size_hint is not None and self.written < self.size_hint
        return len(view) == self._stripe_bytes() and not more_promised

    def _new_buffer(self) -> bytearray:
        return self._pool.pop() if self._pool else bytearray(self._stripe_bytes())

    # ------------------------------------------------------------------ streaming

    def _flush_buffer(self) -> None:
        assert self._buffer is not None
        buffer, fill = self._buffer, self._fill
        self._send_stripe(memoryview(buffer)[:fill], buffer=buffer)
        self._buffer = self._new_buffer()
        self._fill = 0

    def _encode(self, data: memoryview) -> list[Any]:
        """A stripe's ``k+m`` chunks: ``data`` split into ``k``, then the parity."""
        codec = self._codec
        assert codec is not None
        chunks = split_stripe(data, codec.k, self._chunk)
        return [*chunks, *codec.encode(chunks)]

    def _send_stripe(self, data: memoryview, *, buffer: bytearray | None = None) -> None:
        """Send one stripe; ``buffer`` (ours, holding ``data``) returns to the pool once acknowledged."""
        uploads = self._uploads
        assert uploads is not None
        if not uploads.opened:
            uploads.open()
        uploads.send_stripe(self._encode(data), buffer=buffer)
        self._pool += uploads.drain(self.client.config.window)

    def _store_whole(self, uploads: FragmentUploads) -> None:
        """An object of at most one stripe: each fragment is written and prepared in one message."""
        assert self._codec is not None and self._buffer is not None
        if self.written:
            payloads = [[chunk] for chunk in self._encode(memoryview(self._buffer)[: self._fill])]
        else:
            payloads = [[] for _ in range(self._codec.n)]
        uploads.store(payloads, self._layout())

    # ------------------------------------------------------------------ commit

    def _layout(self) -> VersionLayout:
        """What every fragment header of this version says, for the bytes written so far."""
        codec = self._codec
        assert codec is not None
        return VersionLayout(
            bucket=self.bucket,
            key=self.key,
            generation=self.generation,
            codec=codec.name,
            k=codec.k,
            m=codec.m,
            chunk_size=self._chunk,
            size=self.written,
            stripes=StripeLayout(self.written, codec.k, self._chunk).stripes,
            meta=self.meta,
        )

    def _finish(self, uploads: FragmentUploads) -> PutResult:
        codec = self._codec
        assert codec is not None
        uploads.prepare(self._layout())
        superseded = not uploads.commit()  # retired by a newer generation before it could commit
        if not superseded:
            uploads.retire_older()
        fragments = ("",) * codec.n if superseded else uploads.placement()
        return PutResult(
            self.bucket,
            self.key,
            self.generation,
            self.written,
            codec.name,
            codec.k,
            codec.m,
            fragments,
            degraded=not superseded and sum(bool(f) for f in fragments) < codec.n,
            superseded=superseded,
        )


def _kept_unchanged(view: memoryview) -> bool:
    """Whether ``view``'s bytes may be sent after ``write`` returns: read-only, and owned by an object
    the view keeps alive. A view made over bare memory (``obj`` is None), as ``torch.save`` passes for
    each tensor, may be freed or reused by the caller once ``write`` returns (a GPU tensor's host copy is)."""
    return view.readonly and view.obj is not None
