"""midge-storage-sqlite: the broker's state in one SQLite file, committed in groups.

The rule: one table of (group, field, value) rows in the layout ``midge.records`` defines;
each Batch is one transaction (one WAL sync with ``durability = "sync"``); a file that
cannot be opened, is not a database, or was written by a newer format stops startup with
a StorageError naming the file. Deleted rows' pages are reused, so the file does not grow
while a stream of messages passes through a persistent session.
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path
from typing import Any

import aiosqlite

from midge import PluginConfigError, hookimpl
from midge.records import (
    FORMAT_VERSION,
    META,
    Batch,
    Durability,
    Snapshot,
    StorageError,
    check_version,
    snapshot_from_items,
    storage_options,
)

__version__ = "0.1.0"
__all__ = ["SQLitePlugin", "SQLiteStorage", "__version__"]

log = logging.getLogger("midge.plugins.storage_sqlite")

_KEYS = {"path", "durability", "flush_interval"}
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS kv (g BLOB NOT NULL, f BLOB NOT NULL, v BLOB NOT NULL, "
    "PRIMARY KEY (g, f)) WITHOUT ROWID"
)


class SQLiteStorage:
    """A ``midge.records.Storage`` over one SQLite database file."""

    def __init__(self, path: str | Path, durability: Durability = "sync",
                 flush_interval: float = 1.0) -> None:
        self.path = Path(path)
        self.name = f"sqlite:{self.path}"
        self.durability: Durability = durability
        self.flush_interval = flush_interval
        self._db: aiosqlite.Connection | None = None

    def _fail(self, what: str, exc: BaseException) -> StorageError:
        return StorageError(f"{self.name}: {what}: {exc}")

    async def open(self) -> None:
        if self.path.is_dir():
            raise StorageError(f"{self.name}: cannot open: it is a directory")
        try:
            db = await aiosqlite.connect(self.path, isolation_level=None)
        except (sqlite3.Error, OSError) as exc:
            raise self._fail("cannot open", exc) from None
        try:
            sync = "FULL" if self.durability == "sync" else "NORMAL"
            await db.execute("PRAGMA journal_mode=WAL")
            await db.execute(f"PRAGMA synchronous={sync}")
            await db.execute(_SCHEMA)
            async with db.execute("SELECT v FROM kv WHERE g = ? AND f = ?",
                                  (META, b"version")) as cursor:
                row = await cursor.fetchone()
            if check_version(None if row is None else bytes(row[0]), self.name):
                await db.execute("INSERT INTO kv VALUES (?, ?, ?)",
                                 (META, b"version", str(FORMAT_VERSION).encode()))
        except StorageError:
            await db.close()
            raise
        except (sqlite3.Error, OSError) as exc:
            await db.close()
            raise self._fail("cannot use", exc) from None
        self._db = db

    def _conn(self) -> aiosqlite.Connection:
        if self._db is None:
            raise StorageError(f"{self.name}: not open")
        return self._db

    async def load(self) -> Snapshot:
        db = self._conn()
        try:
            async with db.execute("SELECT g, f, v FROM kv") as cursor:
                rows = await cursor.fetchall()
        except sqlite3.Error as exc:
            raise self._fail("cannot read", exc) from None
        return snapshot_from_items((bytes(g), bytes(f), bytes(v)) for g, f, v in rows)

    async def commit(self, batch: Batch) -> None:
        db = self._conn()
        groups, items = batch.items()
        puts = [(g, f, v) for g, f, v in items if v is not None]
        deletes = [(g, f) for g, f, v in items if v is None]
        try:
            await db.execute("BEGIN")
            try:
                if groups:
                    await db.executemany("DELETE FROM kv WHERE g = ?",
                                         [(g,) for g in groups])
                if deletes:
                    await db.executemany("DELETE FROM kv WHERE g = ? AND f = ?", deletes)
                if puts:
                    await db.executemany("INSERT OR REPLACE INTO kv VALUES (?, ?, ?)", puts)
            except BaseException:
                await db.execute("ROLLBACK")
                raise
            await db.execute("COMMIT")
        except sqlite3.Error as exc:
            raise self._fail("cannot write", exc) from None

    async def close(self) -> None:
        db, self._db = self._db, None
        if db is not None:
            await db.close()


class SQLitePlugin:
    """``[plugins.storage_sqlite]``: ``path`` (default ``midge.db``), ``durability``
    ("sync" or "periodic"), ``flush_interval`` (seconds, periodic mode)."""

    def __init__(self, config: dict[str, Any]) -> None:
        for key in config:
            if key not in _KEYS:
                raise PluginConfigError(key, "unknown key; storage_sqlite takes "
                                        + ", ".join(sorted(_KEYS)))
        path = config.get("path", "midge.db")
        if not isinstance(path, str) or not path:
            raise PluginConfigError("path", f"{path!r} is not a file name")
        durability, interval = storage_options(config)
        self.storage = SQLiteStorage(path, durability, interval)

    @hookimpl
    def storage_backend(self) -> SQLiteStorage:
        return self.storage
