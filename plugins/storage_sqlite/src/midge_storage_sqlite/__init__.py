"""midge-storage-sqlite: the broker's state in one SQLite file, committed in groups.

The rule: the state is a table of (group, field, value) rows in the layout
``midge.records`` defines, plus a log: each Batch is appended to the log as one row, in
one transaction (one WAL sync with ``durability = "sync"``), so a commit costs one insert
however many messages it holds. The plugin keeps the log's net effect in memory and
checkpoints it into the table once the log passes ``CHECKPOINT_BYTES``, and at close; a
restart reads the table and replays the log. A delivery created and finished between
two checkpoints (the batch says which deliveries are new) cancels out of the net, so a
checkpoint writes only what is still queued, not every message that passed through.
Deleted rows' pages are reused, so the file does not grow while a stream of messages
passes through a persistent session. A file that cannot be opened, is not a database,
or was written by a newer format stops startup with a StorageError naming the file.
"""

from __future__ import annotations

import logging
import sqlite3
import struct
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiosqlite

from midge import PluginConfigError, hookimpl
from midge.records import (
    FORMAT_VERSION,
    META,
    Batch,
    DeliveryRecord,
    Durability,
    Snapshot,
    StorageError,
    check_version,
    child_group,
    delivery_field,
    encode_delivery,
    snapshot_from_items,
    storage_options,
)

__version__ = "0.1.0"
__all__ = ["SQLitePlugin", "SQLiteStorage", "__version__"]

log = logging.getLogger("midge.plugins.storage_sqlite")

_KEYS = {"path", "durability", "flush_interval"}
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS kv (g BLOB NOT NULL, f BLOB NOT NULL, v BLOB NOT NULL, "
    "PRIMARY KEY (g, f)) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS log (seq INTEGER PRIMARY KEY, data BLOB NOT NULL)",
)
#: log bytes after which the log is checkpointed into the table
CHECKPOINT_BYTES = 4 << 20
#: the WAL file is cut back to this after SQLite's own checkpoints
WAL_LIMIT = 8 << 20

_CLEAR, _PUT, _DELETE = 0, 1, 2
#: a delivery's field: b"d" and its 8-byte order
_FIELD_SIZE = len(delivery_field(0))


_HEAD = struct.Struct(">BIII")


def _entries(data: bytes) -> Iterator[tuple[int, bytes, bytes, bytes]]:
    """The (kind, group, field, value) entries of one log row."""
    pos, end = 0, len(data)
    head = _HEAD.size
    while pos < end:
        if pos + head > end:
            raise StorageError("a log entry is truncated")
        kind, gsize, fsize, vsize = _HEAD.unpack_from(data, pos)
        pos += head
        group = data[pos:pos + gsize]
        pos += gsize
        name = data[pos:pos + fsize]
        pos += fsize
        value = data[pos:pos + vsize]
        pos += vsize
        if pos > end:
            raise StorageError("a log entry is truncated")
        yield kind, group, name, value


def _split(key: bytes) -> tuple[bytes, bytes]:
    """A row's key (group + field) as its group and field: the groups of the layout are
    prefix-free (one letter, or b"C" with the length of the client id that follows)."""
    size = 3 + int.from_bytes(key[1:3], "big") if key[:1] == b"C" else 1
    return key[:size], key[size:]


class _Net:
    """The net effect of the log on the table: groups cleared, then puts and deletes.

    Rows are keyed by group + field, one bytes object: a tuple per row would be a
    container the garbage collector counts and visits, for every queued message."""

    def __init__(self) -> None:
        self.cleared: set[bytes] = set()
        self.rows: dict[bytes, bytes | None] = {}
        #: rows put since the last checkpoint that the table does not hold (deliveries
        #: the broker created meanwhile): deleted again, they leave the net
        self.fresh: set[bytes] = set()

    def clear(self, group: bytes) -> None:
        self.cleared.add(group)
        for key in [key for key in self.rows if key.startswith(group)]:
            del self.rows[key]
            self.fresh.discard(key)

    def apply(self, kind: int, group: bytes, name: bytes, value: bytes) -> None:
        if kind == _CLEAR:
            self.clear(group)
        else:
            self.rows[group + name] = value if kind == _PUT else None

    def __bool__(self) -> bool:
        return bool(self.cleared or self.rows)


class SQLiteStorage:
    """A ``midge.records.Storage`` over one SQLite database file."""

    def __init__(self, path: str | Path, durability: Durability = "sync",
                 flush_interval: float = 1.0) -> None:
        self.path = Path(path)
        self.name = f"sqlite:{self.path}"
        self.durability: Durability = durability
        self.flush_interval = flush_interval
        self._db: aiosqlite.Connection | None = None
        self._net = _Net()
        self._log_bytes = 0
        #: the next log row
        self._seq = 1

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
            await db.execute(f"PRAGMA journal_size_limit={WAL_LIMIT}")
            for statement in _SCHEMA:
                await db.execute(statement)
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
            async with db.execute("SELECT seq, data FROM log ORDER BY seq") as cursor:
                log_rows = await cursor.fetchall()
        except sqlite3.Error as exc:
            raise self._fail("cannot read", exc) from None
        table: dict[tuple[bytes, bytes], bytes] = {
            (bytes(g), bytes(f)): bytes(v) for g, f, v in rows}
        net = self._net
        for seq, data in log_rows:
            self._seq = seq + 1
            self._log_bytes += len(data)
            for kind, group, name, value in _entries(bytes(data)):
                net.apply(kind, group, name, value)
        for group in net.cleared:
            for key in [key for key in table if key[0] == group]:
                del table[key]
        for key, change in net.rows.items():
            if change is None:
                table.pop(_split(key), None)
            else:
                table[_split(key)] = change
        return snapshot_from_items((g, f, v) for (g, f), v in table.items())

    async def commit(self, batch: Batch) -> None:
        db = self._conn()
        groups, items = batch.items(deliveries=False)
        net = self._net
        pack = _HEAD.pack
        frames: list[bytes] = []
        add = frames.append
        for group in groups:
            add(pack(_CLEAR, len(group), 0, 0))
            add(group)
            net.clear(group)
        rows = net.rows
        if batch.deliveries:
            self._deliveries(batch, add)
        for group, name, value in items:
            if value is None:
                add(pack(_DELETE, len(group), len(name), 0))
                add(group)
                add(name)
            else:
                add(pack(_PUT, len(group), len(name), len(value)))
                add(group)
                add(name)
                add(value)
            rows[group + name] = value
        data = b"".join(frames)
        # what was made for this batch goes before the wait, not after it
        del groups, items, frames, add
        try:
            # one statement outside a transaction is one transaction: one sync
            await db.execute("INSERT INTO log VALUES (?, ?)", (self._seq, data))
        except sqlite3.Error as exc:
            raise self._fail("cannot write", exc) from None
        self._seq += 1
        self._log_bytes += len(data)
        if self._log_bytes >= CHECKPOINT_BYTES:
            try:
                await self.checkpoint()
            except StorageError as exc:
                # the batch is in the log: it is committed; the checkpoint is retried
                # after the next commit
                log.warning("%s", exc)

    def _deliveries(self, batch: Batch, add: Callable[[bytes], None]) -> None:
        """Log the batch's deliveries (one per message, the bulk of a batch: a group's
        key and delete entry are made once, a field is the fixed 9 bytes)."""
        net = self._net
        rows = net.rows
        fresh = net.fresh
        created = batch.created
        pack = _HEAD.pack
        groups: dict[str, tuple[bytes, int, bytes]] = {}
        last: str | None = None
        group = deleted = b""
        size = 0
        for pair, value in batch.deliveries.items():
            cid, order = pair
            if cid != last:
                known = groups.get(cid)
                if known is None:
                    raw = child_group(cid)
                    known = groups[cid] = (raw, len(raw),
                                           pack(_DELETE, len(raw), _FIELD_SIZE, 0))
                group, size, deleted = known
                last = cid
            key = group + delivery_field(order)
            if value is None:
                add(deleted)
                add(key)
                if key in fresh:
                    fresh.discard(key)
                    del rows[key]
                else:
                    rows[key] = None
                continue
            if isinstance(value, DeliveryRecord):
                value = encode_delivery(value)
            # a new one the log already names (deleted there by the process before a
            # restart, which used the same order) may still be in the table
            if pair in created and key not in rows:
                fresh.add(key)
            add(pack(_PUT, size, _FIELD_SIZE, len(value)))
            add(key)
            add(value)
            rows[key] = value

    async def checkpoint(self) -> None:
        """Apply the log's net effect to the table and empty the log, in one
        transaction."""
        db = self._conn()
        net = self._net
        puts = [(*_split(key), v) for key, v in net.rows.items() if v is not None]
        deletes = [_split(key) for key, v in net.rows.items() if v is None]
        try:
            await db.execute("BEGIN")
            try:
                if net.cleared:
                    await db.executemany("DELETE FROM kv WHERE g = ?",
                                         [(g,) for g in net.cleared])
                if deletes:
                    await db.executemany("DELETE FROM kv WHERE g = ? AND f = ?", deletes)
                if puts:
                    await db.executemany("INSERT OR REPLACE INTO kv VALUES (?, ?, ?)", puts)
                await db.execute("DELETE FROM log")
            except BaseException:
                await db.execute("ROLLBACK")
                raise
            await db.execute("COMMIT")
        except sqlite3.Error as exc:
            raise self._fail("cannot checkpoint", exc) from None
        self._net = _Net()
        self._log_bytes = 0

    async def close(self) -> None:
        db = self._db
        if db is None:
            return
        try:
            if self._net or self._log_bytes:
                await self.checkpoint()
        finally:
            self._db = None
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
