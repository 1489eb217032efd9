"""Byte streams of checkpoint files: a writer that counts and blake3-hashes, and block copies.

The digest is computed while a file is written, never by reading it back, so a
checkpoint costs one pass over its bytes; the same writer checks downloads and
durable copies as they stream.
"""

from __future__ import annotations

import io
import shutil
from collections.abc import Callable
from typing import Any, BinaryIO, Protocol

import blake3

from hcstore.checkpoints.rules import FileEntry

_COPY_BLOCK = 8 << 20


class _Readable(Protocol):
    """A binary stream that can be read from, such as a local or an fsspec file."""

    def read(self, size: int = -1, /) -> bytes: ...


class _Writable(Protocol):
    """A binary stream that can be written to, such as a file or a :class:`_HashingWriter`."""

    def write(self, data: bytes, /) -> object: ...


class _HashingWriter(io.RawIOBase):
    """A binary write stream that counts and (optionally) blake3-hashes what passes through it.

    On a clean close it closes the stream below, sets :attr:`entry` and calls
    ``on_close(entry)``; closed after an error (:meth:`abort`) it closes the stream
    and calls ``on_abort`` instead.
    """

    def __init__(
        self,
        raw: BinaryIO,
        name: str,
        *,
        checksum: bool,
        on_close: Callable[[FileEntry], None] = lambda entry: None,
        on_abort: Callable[[], None] = lambda: None,
    ) -> None:
        super().__init__()
        self._raw = raw
        self._name = name
        self._hash = blake3.blake3(max_threads=blake3.blake3.AUTO) if checksum else None
        self._size = 0
        self._on_close = on_close
        self._on_abort = on_abort
        self.entry: FileEntry | None = None  # what was written, once closed cleanly

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        if self._hash is not None:
            self._hash.update(view)
        self._raw.write(view)
        self._size += view.nbytes
        return view.nbytes

    def tell(self) -> int:
        return self._size

    def flush(self) -> None:
        if not self.closed:
            self._raw.flush()

    def close(self) -> None:
        if self.closed:
            return
        super().close()
        self._raw.close()
        self.entry = FileEntry(self._name, self._size, self._hash.hexdigest() if self._hash else None)
        self._on_close(self.entry)

    def abort(self, exc_type: Any = None, exc: BaseException | None = None, tb: Any = None) -> None:
        """Close after a failed write: the file is not recorded (and is removed by ``on_abort``).

        The stream below is exited with the exception, so one that can discard a write
        (an ``hcstore://`` file) does so instead of committing it.
        """
        if self.closed:
            return
        super().close()
        try:
            self._raw.__exit__(exc_type or RuntimeError, exc, tb)
        finally:
            self._on_abort()

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort(exc_type, exc, tb)


def _copy_stream(src: _Readable, dst: _Writable) -> None:
    """Copy ``src`` to ``dst`` until end of file, in blocks of :data:`_COPY_BLOCK` bytes."""
    shutil.copyfileobj(src, dst, _COPY_BLOCK)
