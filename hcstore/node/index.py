"""The fragment index of one mountpath: a small SQLite database.

The index answers "which generations and fragments of this key are here" and
"which keys under this prefix" without opening fragment files. It is a cache
of what the fragment files say: every row can be rebuilt from a fragment's
trailer and file name (:meth:`FragmentIndex.rebuild_from` via the store), and
it is updated only *after* a file is renamed into place, so a crash leaves at
worst a file the index does not know yet, which startup reconciliation adds.

Each thread uses its own connection: in WAL mode readers never wait for a
writer (nor for the checkpoint a commit may run), and writers take turns under
one lock, so none of them meets ``SQLITE_BUSY``.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS fragments (
    bucket TEXT NOT NULL, key TEXT NOT NULL, gen TEXT NOT NULL, idx INTEGER NOT NULL,
    state TEXT NOT NULL, kind TEXT NOT NULL, size INTEGER NOT NULL, file_bytes INTEGER NOT NULL,
    name TEXT NOT NULL, info BLOB NOT NULL,
    PRIMARY KEY (bucket, key, gen, idx)
);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
log = logging.getLogger(__name__)
_COLUMNS = "bucket, key, gen, idx, state, kind, size, file_bytes, name, info"


@dataclass(frozen=True)
class IndexEntry:
    """One fragment file as the index knows it.

    ``info`` is the msgpack'd fragment header without its digests.
    """

    bucket: str
    key: str
    gen: str
    idx: int
    state: str  # "prepared", "committed"
    kind: str  # "data", "tombstone"
    size: int  # object size
    file_bytes: int  # size of the fragment file
    name: str  # file name relative to the mountpath's frags/ directory
    info: bytes


class FragmentIndex:
    """SQLite-backed index of the fragment files of one mountpath."""

    rebuilt = False

    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = threading.local()
        self._write_lock = threading.Lock()
        self._connections: list[sqlite3.Connection] = []
        self._connections_lock = threading.Lock()
        try:
            self._adopt(self._connect())
        except sqlite3.DatabaseError as exc:
            # Not a database any more (torn write, disk trouble): keep it for inspection and start
            # empty; the store rebuilds every row from the fragment files.
            aside = path.with_name(f"{path.name}.damaged-{int(time.time())}")
            log.warning("index %s is unreadable (%s); moved to %s and rebuilding", path, exc, aside)
            for suffix in ("", "-wal", "-shm"):
                damaged = path.with_name(path.name + suffix)
                if damaged.exists():
                    os.replace(damaged, aside.with_name(aside.name + suffix))
            self._adopt(self._connect())
            self.rebuilt = True

    def _adopt(self, db: sqlite3.Connection) -> sqlite3.Connection:
        """Make ``db`` this thread's connection (all are closed by :meth:`close`)."""
        self._local.db = db
        with self._connections_lock:
            self._connections.append(db)
        return db

    @property
    def _db(self) -> sqlite3.Connection:
        """This thread's connection, opened on first use."""
        db = getattr(self._local, "db", None)
        if db is None:
            db = self._adopt(self._open())
        return db

    def _open(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30.0)
        db.execute("PRAGMA synchronous=NORMAL")
        return db

    def _connect(self) -> sqlite3.Connection:
        """The first connection: sets WAL mode and creates or checks the schema."""
        db = self._open()
        db.execute("PRAGMA journal_mode=WAL")
        db.executescript(_SCHEMA)
        row = db.execute("SELECT value FROM meta WHERE name='schema'").fetchone()
        if row is None:
            db.execute("INSERT INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
        elif int(row[0]) != SCHEMA_VERSION:
            raise sqlite3.DatabaseError(f"index schema {row[0]} is not {SCHEMA_VERSION}")
        return db

    def check(self) -> bool:
        """True when SQLite's quick integrity check passes."""
        return self._db.execute("PRAGMA quick_check").fetchone()[0] == "ok"

    def _write(self, sql: str, parameters: tuple[object, ...] = ()) -> None:
        with self._write_lock:
            self._db.execute(sql, parameters)

    def reset(self) -> None:
        """Drop every row (before a rebuild)."""
        self._write("DELETE FROM fragments")

    def put(self, entry: IndexEntry) -> None:
        """Add or replace the row of one fragment."""
        self._write(
            f"INSERT OR REPLACE INTO fragments ({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?)",
            (
                entry.bucket,
                entry.key,
                entry.gen,
                entry.idx,
                entry.state,
                entry.kind,
                entry.size,
                entry.file_bytes,
                entry.name,
                entry.info,
            ),
        )

    def remove(self, bucket: str, key: str, gen: str, idx: int) -> None:
        """Delete the row of one fragment."""
        self._write("DELETE FROM fragments WHERE bucket=? AND key=? AND gen=? AND idx=?", (bucket, key, gen, idx))

    def get(self, bucket: str, key: str, gen: str, idx: int) -> IndexEntry | None:
        """The entry of one fragment, or None."""
        row = self._db.execute(
            f"SELECT {_COLUMNS} FROM fragments WHERE bucket=? AND key=? AND gen=? AND idx=?", (bucket, key, gen, idx)
        ).fetchone()
        return IndexEntry(*row) if row else None

    def entries(self, bucket: str, key: str) -> list[IndexEntry]:
        """Every fragment of a key, any generation."""
        rows = self._db.execute(f"SELECT {_COLUMNS} FROM fragments WHERE bucket=? AND key=?", (bucket, key))
        return [IndexEntry(*row) for row in rows]

    def newest_per_key(self, bucket: str, prefix: str, start_after: str, limit: int) -> list[tuple[str, str, str, int]]:
        """``(key, gen, kind, size)`` of the newest committed generation of each key, in key order."""
        rows = self._db.execute(
            "SELECT key, MAX(gen), kind, size FROM fragments "
            "WHERE bucket=? AND state='committed' AND key>=? AND substr(key, 1, ?)=? AND key>? "
            "GROUP BY key ORDER BY key LIMIT ?",
            (bucket, prefix, len(prefix), prefix, start_after, limit),
        )
        return [tuple(row) for row in rows]  # type: ignore[misc]

    @staticmethod
    def newest_objects(path: Path) -> list[tuple[str, str, str, bytes]]:
        """``(bucket, key, gen, info)`` of the newest committed data generation of every key, read through
        a separate read-only connection (safe from a background thread)."""
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            rows = db.execute(
                "SELECT bucket, key, MAX(gen), info, kind FROM fragments WHERE state='committed' GROUP BY bucket, key"
            ).fetchall()
        finally:
            db.close()
        return [(b, k, g, info) for b, k, g, info, kind in rows if kind == "data"]

    @staticmethod
    def untidy_keys(path: Path) -> set[tuple[str, str]]:
        """``(bucket, key)`` of every key with more than one generation here, or a prepared fragment:
        leftovers of puts that died, or that are still running (read-only connection)."""
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            rows = db.execute(
                "SELECT bucket, key FROM fragments GROUP BY bucket, key "
                "HAVING COUNT(DISTINCT gen) > 1 OR SUM(state != 'committed') > 0"
            ).fetchall()
        finally:
            db.close()
        return {(bucket, key) for bucket, key in rows}

    @staticmethod
    def fragment_files(path: Path) -> list[tuple[str, str, str, str, int]]:
        """``(name, bucket, key, gen, idx)`` of every data fragment file, through a read-only connection."""
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            return db.execute("SELECT name, bucket, key, gen, idx FROM fragments WHERE kind='data'").fetchall()
        finally:
            db.close()

    def buckets(self) -> list[str]:
        """Buckets with at least one fragment here."""
        return [row[0] for row in self._db.execute("SELECT DISTINCT bucket FROM fragments")]

    def names(self) -> set[str]:
        """File names of every indexed fragment."""
        return {row[0] for row in self._db.execute("SELECT name FROM fragments")}

    def remove_name(self, name: str) -> None:
        """Delete the row of the fragment file called ``name``."""
        self._write("DELETE FROM fragments WHERE name=?", (name,))

    def all(self) -> Iterator[IndexEntry]:
        """Every entry, in no particular order."""
        for row in self._db.execute(f"SELECT {_COLUMNS} FROM fragments"):
            yield IndexEntry(*row)

    def total_bytes(self) -> int:
        """Bytes of all indexed fragment files."""
        return int(self._db.execute("SELECT COALESCE(SUM(file_bytes), 0) FROM fragments").fetchone()[0])

    def count(self, kind: str | None = None) -> int:
        """Fragments indexed here (of one ``kind`` when given)."""
        if kind is None:
            return int(self._db.execute("SELECT COUNT(*) FROM fragments").fetchone()[0])
        return int(self._db.execute("SELECT COUNT(*) FROM fragments WHERE kind=?", (kind,)).fetchone()[0])

    def close(self) -> None:
        """Close every thread's connection."""
        with self._connections_lock:
            connections, self._connections = self._connections, []
        for db in connections:
            db.close()
        self._local = threading.local()
