"""Ray Data over hcstore: read every object under a prefix, write a dataset's rows as objects.

Example::

    ds = ray_integration.read_hcstore(store, "images/")                 # rows: key, bytes
    ds = ray_integration.read_hcstore(store, "images/", decoder=decode_jpeg)
    ds.write_datasink(ray_integration.HCStoreDatasink(store, "out/", value_column="bytes"))

Each read task fetches its share of keys with its own client, straight from the
agents; nothing passes through the driver but the key listing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import pyarrow as pa
import ray
from ray.data.block import Block, BlockAccessor, BlockMetadata
from ray.data.datasource import Datasink, Datasource, ReadTask

from ray_integration.handle import HCStore

Decoder = Callable[[str, bytearray], Mapping[str, Any]]
Encoder = Callable[[Mapping[str, Any]], bytes]


class HCStoreDatasource(Datasource):
    """Objects under ``prefix`` of the handle's bucket, one row each.

    Rows are ``{"key": ..., "bytes": ...}``, or what ``decoder(key, data)`` returns (``data``: a ``bytearray``).
    """

    def __init__(self, store: HCStore, prefix: str = "", *, decoder: Decoder | None = None) -> None:
        super().__init__()
        self.store, self.prefix, self.decoder = store, prefix, decoder
        self.objects = [(info.key, info.size) for info in store.list(prefix)]

    def estimate_inmemory_data_size(self) -> int:
        """The total size of the objects, in bytes: what the dataset holds once read."""
        return sum(size for _, size in self.objects)

    def get_read_tasks(
        self, parallelism: int, per_task_row_limit: int | None = None, data_context: Any = None
    ) -> list[ReadTask]:
        """One read task per share of the objects, at most ``parallelism``, each reading its keys with its own client.

        Args:
            parallelism: the number of tasks Ray Data asks for (fewer when there are fewer objects).
            per_task_row_limit: the most rows a task may return, passed on to each :class:`ReadTask`.
            data_context: Ray Data's context (unused).
        """
        shares = _split(self.objects, max(1, parallelism))
        return [
            ReadTask(
                _reader(self.store, [key for key, _ in share], self.decoder),
                BlockMetadata(
                    num_rows=len(share), size_bytes=sum(size for _, size in share), input_files=None, exec_stats=None
                ),
                per_task_row_limit=per_task_row_limit,
            )
            for share in shares
        ]


def read_hcstore(
    store: HCStore, prefix: str = "", *, decoder: Decoder | None = None, **read_args: Any
) -> ray.data.Dataset:
    """A dataset of the objects under ``prefix`` (see :class:`HCStoreDatasource`)."""
    return ray.data.read_datasource(HCStoreDatasource(store, prefix, decoder=decoder), **read_args)


class HCStoreDatasink(Datasink[int]):
    """Writes each row as one object.

    The object's key is ``prefix`` + the row's ``key_column`` when the dataset has one, else
    ``prefix`` + ``<write task>-<row>``; its bytes are the row's ``value_column``, or
    ``encoder(row)``.
    """

    def __init__(
        self,
        store: HCStore,
        prefix: str = "",
        *,
        key_column: str = "key",
        value_column: str = "bytes",
        encoder: Encoder | None = None,
    ) -> None:
        self.store, self.prefix = store, prefix
        self.key_column, self.value_column, self.encoder = key_column, value_column, encoder

    def write(self, blocks: Iterable[Block], ctx: Any) -> int:
        """Put every row of ``blocks`` as one object; returns the number of objects written.

        Args:
            blocks: the write task's blocks.
            ctx: Ray Data's task context (its ``task_idx`` names rows that have no key column).
        """
        client, written = self.store.client, 0
        row: Mapping[str, Any]  # public_row_format=True: each row is a mapping of column to value
        for block in blocks:
            for row in BlockAccessor.for_block(block).iter_rows(public_row_format=True):
                key = self.prefix + (
                    str(row[self.key_column]) if self.key_column in row else f"{ctx.task_idx:05d}-{written:08d}"
                )
                client.put(self.store.bucket, key, self._value(row))
                written += 1
        return written

    def _value(self, row: Mapping[str, Any]) -> bytes:
        if self.encoder is not None:
            return self.encoder(row)
        if self.value_column not in row:
            raise KeyError(
                f"HCStoreDatasink: row has no column {self.value_column!r} "
                f"(columns: {', '.join(row)}); pass value_column= or encoder="
            )
        value = row[self.value_column]
        return value if isinstance(value, bytes) else bytes(value)


def _reader(store: HCStore, keys: list[str], decoder: Decoder | None) -> Callable[[], Iterable[Block]]:
    def read() -> Iterable[Block]:
        client = store.client
        rows = []
        for key in keys:
            data = client.get(store.bucket, key)
            rows.append(dict(decoder(key, data)) if decoder else {"key": key, "bytes": data})
        yield pa.Table.from_pylist(rows)

    return read


def _split(items: list[Any], parts: int) -> list[list[Any]]:
    """``items`` in at most ``parts`` contiguous, nearly equal, non-empty shares."""
    parts = min(parts, len(items))
    size, extra = divmod(len(items), parts) if parts else (0, 0)
    shares, start = [], 0
    for i in range(parts):
        end = start + size + (1 if i < extra else 0)
        shares.append(items[start:end])
        start = end
    return shares
