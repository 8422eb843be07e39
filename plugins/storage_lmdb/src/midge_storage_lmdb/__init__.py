"""midge-storage-lmdb: the broker's state in an LMDB environment, committed in groups.

The rule: every LMDB call runs in a worker thread (``anyio.to_thread``), never on the
event loop; each Batch is one write transaction (one sync with ``durability = "sync"``);
keys are ``len(group) + group + field`` in the layout ``midge.records`` defines, so a
session's children are one key range. A path that is not a directory, an environment
that cannot be opened, or a newer format stops startup with a StorageError naming it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import lmdb

from midge import PluginConfigError, hookimpl
from midge.records import (
    FORMAT_VERSION,
    META,
    Batch,
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
__all__ = ["LMDBPlugin", "LMDBStorage", "__version__"]

log = logging.getLogger("midge.plugins.storage_lmdb")

_KEYS = {"path", "map_size", "durability", "flush_interval"}
DEFAULT_MAP_SIZE = 1 << 30


def _key(group: bytes, name: bytes) -> bytes:
    return len(group).to_bytes(2, "big") + group + name


def _split(key: bytes) -> tuple[bytes, bytes]:
    size = int.from_bytes(key[:2], "big")
    return key[2:2 + size], key[2 + size:]


class LMDBStorage:
    """A ``midge.records.Storage`` over one LMDB environment directory."""

    def __init__(self, path: str | Path, map_size: int = DEFAULT_MAP_SIZE,
                 durability: Durability = "sync", flush_interval: float = 1.0) -> None:
        self.path = Path(path)
        self.map_size = map_size
        self.name = f"lmdb:{self.path}"
        self.durability: Durability = durability
        self.flush_interval = flush_interval
        self._env: Any = None

    def _open(self) -> None:
        if self.path.exists() and not self.path.is_dir():
            raise StorageError(f"{self.name}: cannot open: it is not a directory")
        try:
            env = lmdb.open(str(self.path), map_size=self.map_size, subdir=True,
                            sync=self.durability == "sync", metasync=True, max_dbs=0,
                            readahead=False)
        except lmdb.Error as exc:
            raise StorageError(f"{self.name}: cannot open: {exc}") from None
        try:
            with env.begin(write=True) as txn:
                version_key = _key(META, b"version")
                if check_version(txn.get(version_key), self.name):
                    txn.put(version_key, str(FORMAT_VERSION).encode())
        except StorageError:
            env.close()
            raise
        except lmdb.Error as exc:
            env.close()
            raise StorageError(f"{self.name}: cannot use: {exc}") from None
        self._env = env

    async def open(self) -> None:
        await anyio.to_thread.run_sync(self._open)

    def _items(self) -> Iterator[tuple[bytes, bytes, bytes]]:
        with self._env.begin() as txn:
            for key, value in txn.cursor():
                group, name = _split(bytes(key))
                yield group, name, bytes(value)

    def _load(self) -> Snapshot:
        try:
            return snapshot_from_items(self._items())
        except lmdb.Error as exc:
            raise StorageError(f"{self.name}: cannot read: {exc}") from None

    async def load(self) -> Snapshot:
        return await anyio.to_thread.run_sync(self._load)

    def _commit(self, groups: list[bytes], keys: list[bytes], values: list[bytes],
                deletes: list[bytes]) -> None:
        try:
            with self._env.begin(write=True) as txn:
                if groups:
                    cursor = txn.cursor()
                    for group in groups:
                        prefix = len(group).to_bytes(2, "big") + group
                        if cursor.set_range(prefix):
                            while cursor.key()[:len(prefix)] == prefix:
                                if not cursor.delete():
                                    break
                for key in deletes:
                    txn.delete(key)
                if keys:
                    txn.cursor().putmulti(zip(keys, values, strict=True))
        except lmdb.Error as exc:
            raise StorageError(f"{self.name}: cannot write: {exc}") from None

    async def commit(self, batch: Batch) -> None:
        if self._env is None:
            raise StorageError(f"{self.name}: not open")
        # encoded here, on the event loop: the worker thread then runs (almost) only
        # LMDB's C code, which lets go of the GIL, so the loop is never kept waiting;
        # keys and values in two lists, not a list of pairs: thousands of tuples alive
        # through the commit would each be counted by the garbage collector
        groups, items = batch.items(deliveries=False)
        keys: list[bytes] = []
        values: list[bytes] = []
        deletes: list[bytes] = []
        prefixes: dict[bytes, bytes] = {}
        for group, name, value in items:
            prefix = prefixes.get(group)
            if prefix is None:
                prefix = prefixes[group] = len(group).to_bytes(2, "big") + group
            if value is None:
                deletes.append(prefix + name)
            else:
                keys.append(prefix + name)
                values.append(value)
        del items
        # the deliveries, one per message, the bulk of a batch: a session's key prefix
        # is made once
        last: str | None = None
        prefix = b""
        for (cid, order), delivery in batch.deliveries.items():
            if cid != last:
                group = child_group(cid)
                prefix = prefixes.get(group) or prefixes.setdefault(
                    group, len(group).to_bytes(2, "big") + group)
                last = cid
            if delivery is None:
                deletes.append(prefix + delivery_field(order))
            else:
                keys.append(prefix + delivery_field(order))
                values.append(delivery if isinstance(delivery, bytes)
                              else encode_delivery(delivery))
        await anyio.to_thread.run_sync(self._commit, groups, keys, values, deletes)

    async def close(self) -> None:
        env, self._env = self._env, None
        if env is not None:
            await anyio.to_thread.run_sync(env.close)


class LMDBPlugin:
    """``[plugins.storage_lmdb]``: ``path`` (a directory, default ``midge-lmdb``),
    ``map_size`` (bytes), ``durability``, ``flush_interval``."""

    def __init__(self, config: dict[str, Any]) -> None:
        for key in config:
            if key not in _KEYS:
                raise PluginConfigError(key, "unknown key; storage_lmdb takes "
                                        + ", ".join(sorted(_KEYS)))
        path = config.get("path", "midge-lmdb")
        if not isinstance(path, str) or not path:
            raise PluginConfigError("path", f"{path!r} is not a directory name")
        map_size = config.get("map_size", DEFAULT_MAP_SIZE)
        if isinstance(map_size, bool) or not isinstance(map_size, int) or map_size < 1 << 20:
            raise PluginConfigError("map_size", f"{map_size!r} is not a size in bytes of at "
                                    "least 1048576")
        durability, interval = storage_options(config)
        self.storage = LMDBStorage(path, map_size, durability, interval)

    @hookimpl
    def storage_backend(self) -> LMDBStorage:
        return self.storage
