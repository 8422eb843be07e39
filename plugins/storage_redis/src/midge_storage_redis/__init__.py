"""midge-storage-redis: the broker's state in Redis, one MULTI/EXEC per group commit.

The rule: a group of ``midge.records`` (sessions, retained messages, the store's own
data, one per persistent session for what it owns) is one Redis hash under ``prefix``;
the set ``prefix + "groups"`` lists the per-session hashes, so a restore reads them
without SCAN. Each Batch is one transaction. Redis that cannot be reached at start stops
startup with a StorageError naming the server (never its password); Redis going away
later makes commits fail, and the broker retries them with backoff while the
acknowledgements that need them wait.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from midge import PluginConfigError, hookimpl
from midge.records import (
    FORMAT_VERSION,
    META,
    RETAINED,
    SESSIONS,
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
__all__ = ["RedisPlugin", "RedisStorage", "__version__"]

log = logging.getLogger("midge.plugins.storage_redis")

_KEYS = {"url", "prefix", "password", "durability", "flush_interval"}
#: seconds to wait for a connection and for one reply
TIMEOUT = 5.0


def _redact(url: str) -> str:
    """The URL without its password, for logs and errors."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    user = f"{parts.username}:***@" if parts.username else "***@"
    return urlunsplit((parts.scheme, user + host, parts.path, parts.query, parts.fragment))


class RedisStorage:
    """A ``midge.records.Storage`` over a Redis server."""

    def __init__(self, url: str, prefix: str = "midge:", password: str | None = None,
                 durability: Durability = "sync", flush_interval: float = 1.0) -> None:
        self.url = url
        self.prefix = prefix.encode()
        self.password = password
        self.name = f"redis:{_redact(url)}"
        self.durability: Durability = durability
        self.flush_interval = flush_interval
        self._client: Any = None

    def _k(self, group: bytes) -> bytes:
        return self.prefix + group

    async def open(self) -> None:
        try:
            client = aioredis.from_url(
                self.url, password=self.password, socket_timeout=TIMEOUT,
                socket_connect_timeout=TIMEOUT, decode_responses=False)
        except (ValueError, RedisError) as exc:
            raise StorageError(f"{self.name}: bad url: {exc}") from None
        try:
            await client.ping()
            stored = await client.hget(self._k(META), b"version")
            if check_version(stored if stored is None or isinstance(stored, bytes)
                             else str(stored).encode(), self.name):
                await client.hset(self._k(META), b"version", str(FORMAT_VERSION).encode())
        except StorageError:
            await client.aclose()
            raise
        except (RedisError, OSError) as exc:
            await client.aclose()
            raise StorageError(f"{self.name}: cannot connect: {exc}") from None
        self._client = client

    async def load(self) -> Snapshot:
        client = self._client
        try:
            groups = [SESSIONS, RETAINED, META]
            groups += sorted(bytes(g) for g in await client.smembers(self._k(b"groups")))
            items: list[tuple[bytes, bytes, bytes]] = []
            for group in groups:
                for name, value in (await client.hgetall(self._k(group))).items():
                    items.append((group, bytes(name), bytes(value)))
        except (RedisError, OSError) as exc:
            raise StorageError(f"{self.name}: cannot read: {exc}") from None
        return snapshot_from_items(items)

    async def commit(self, batch: Batch) -> None:
        client = self._client
        if client is None:
            raise StorageError(f"{self.name}: not open")
        groups, items = batch.items(deliveries=False)
        registry = self._k(b"groups")
        pipe = client.pipeline(transaction=True)
        if groups:
            pipe.delete(*(self._k(g) for g in groups))
            pipe.srem(registry, *groups)
        puts: dict[bytes, dict[bytes, bytes]] = {}
        deletes: dict[bytes, list[bytes]] = {}
        for group, name, value in items:
            if value is None:
                deletes.setdefault(group, []).append(name)
            else:
                puts.setdefault(group, {})[name] = value
        # the deliveries, one per message, the bulk of a batch: a session's hash and
        # lists are looked up once per run of its deliveries
        last: str | None = None
        put: dict[bytes, bytes] = {}
        deleted: list[bytes] = []
        for (cid, order), delivery in batch.deliveries.items():
            if cid != last:
                group = child_group(cid)
                put = puts.setdefault(group, {})
                deleted = deletes.setdefault(group, [])
                last = cid
            if delivery is None:
                deleted.append(delivery_field(order))
            else:
                put[delivery_field(order)] = (delivery if isinstance(delivery, bytes)
                                              else encode_delivery(delivery))
        for group, names in deletes.items():
            if names:
                pipe.hdel(self._k(group), *names)
        children = [g for g, mapping in puts.items() if mapping and g[:1] == b"C"]
        for group, mapping in puts.items():
            if mapping:
                pipe.hset(self._k(group), mapping=mapping)
        if children:
            pipe.sadd(registry, *children)
        try:
            await pipe.execute()
        except (RedisError, OSError) as exc:
            raise StorageError(f"{self.name}: cannot write: {exc}") from None
        finally:
            await pipe.reset()

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()


class RedisPlugin:
    """``[plugins.storage_redis]``: ``url``, ``prefix``, ``password`` (a secret:
    ``{env = ...}`` or ``{file = ...}``), ``durability``, ``flush_interval``."""

    def __init__(self, config: dict[str, Any]) -> None:
        for key in config:
            if key not in _KEYS:
                raise PluginConfigError(key, "unknown key; storage_redis takes "
                                        + ", ".join(sorted(_KEYS)))
        url = config.get("url", "redis://127.0.0.1:6379/0")
        if not isinstance(url, str) or urlsplit(url).scheme not in ("redis", "rediss", "unix"):
            raise PluginConfigError("url", f"{url!r} is not a redis://, rediss:// or unix:// URL")
        prefix = config.get("prefix", "midge:")
        if not isinstance(prefix, str):
            raise PluginConfigError("prefix", f"{prefix!r} is not a string")
        password = config.get("password")
        if password is not None and not isinstance(password, str):
            raise PluginConfigError("password", "is not a string")
        durability, interval = storage_options(config)
        self.storage = RedisStorage(url, prefix, password, durability, interval)

    @hookimpl
    def storage_backend(self) -> RedisStorage:
        return self.storage
