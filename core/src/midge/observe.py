"""The broker's figures as an observer reads them: /stats, /metrics, /api and $SYS.

The rule: everything here is computed when asked, from the engine's state, the
counters it keeps anyway and the storage writer's per-commit figures; nothing is tracked
per message for the observer's sake. The ``Observatory`` implements
``midge.api.Observer``, the read-only port listeners get, so the http listener never
holds the Broker, the Engine or the storage writer.
"""

from __future__ import annotations

import heapq
import os
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import anyio

from ._version import __version__
from .api import CLIENT_STATES
from .persistence import COMMIT_BUCKETS
from .stats import Stats

if TYPE_CHECKING:
    from .api import BrokerHandle
    from .config import ListenerSettings
    from .engine import Connection, Engine
    from .hooks import Hooks
    from .persistence import StorageWriter
    from .session import Session

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
#: seconds a plugin's readiness check may take before it counts as "not ready"
READY_CHECK_TIMEOUT = 2.0


def rss_bytes() -> int:
    """The process's resident memory, in bytes (0 where /proc is missing)."""
    try:
        with open("/proc/self/statm", "rb") as handle:
            return int(handle.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return 0


class Observatory:
    """Read-only views of one broker, for observers (``midge.api.Observer``)."""

    def __init__(self, engine: Engine, hooks: Hooks, state: Callable[[], str | None],
                 handle: BrokerHandle,
                 storage: Callable[[], StorageWriter | None]) -> None:
        self._engine = engine
        #: the writer committing to the storage plugin's backend (None: none is active)
        self._storage = storage
        #: what ``on_ready_check`` implementations are given
        self._handle = handle
        self._hooks = hooks
        #: the shell's own readiness: why it is not (yet) serving, or None
        self._state = state
        #: (listener settings, bound addresses), in configuration order
        self._listeners: list[tuple[ListenerSettings, list[tuple[str, int]]]] = []
        #: a listener's configured label -> the name observers see (port 0 resolved)
        self._names: dict[str, str] = {}

    @property
    def stats(self) -> Stats:
        return self._engine.stats

    def bound(self, spec: ListenerSettings, addresses: list[tuple[str, int]]) -> None:
        """The shell bound a listener."""
        self._listeners.append((spec, addresses))
        # a configured name, else the address actually bound
        self._names[spec.label] = (spec.name or f"{spec.type}://{_address(*addresses[0])}"
                                   if addresses else spec.label)

    # -- figures ---------------------------------------------------------------------------

    def figures(self) -> dict[str, Any]:
        engine = self._engine
        queued = queued_max = inflight = 0
        for session in engine.sessions.values():
            depth = len(session.pending)
            queued += depth
            if depth > queued_max:
                queued_max = depth
            inflight += len(session.inflight)
        return {
            "sessions": len(engine.sessions),
            "clients_connected": len(engine.clients),
            "subscriptions": len(engine.router.subscriptions),
            "retained": len(engine.router.retained),
            "queued": queued,
            "queued_max": queued_max,
            "inflight": inflight,
            "listeners": self.listeners_info(),
        }

    def sys_info(self) -> dict[str, Any]:
        stats = self.stats
        figures = self.figures()
        now = time.time()
        connected = figures["clients_connected"]
        info: dict[str, Any] = {
            "version": __version__,
            "started": int(stats.started),
            "time": int(now),
            "uptime": int(now - stats.started),
            "bytes_received": stats.bytes_received,
            "bytes_sent": stats.bytes_sent,
            "clients_connected": connected,
            "clients_disconnected": max(0, figures["sessions"] - connected),
            "clients_maximum": stats.clients_maximum,
            "clients_total": figures["sessions"],
            "messages_received": stats.messages_received,
            "messages_sent": stats.messages_sent,
            "messages_dropped": stats.messages_dropped,
            "retained": figures["retained"],
            "inflight": figures["inflight"],
            "inflight_dropped": stats.inflight_dropped,
            "subscriptions": figures["subscriptions"],
            "packets_received": stats.packets_received_total,
            "packets_sent": stats.packets_sent_total,
            "memory_alloc": rss_bytes(),
            "threads": threading.active_count(),
            # midge's own, beyond mochi-mqtt's set
            "connections_total": stats.connections_total,
            "transport_errors": stats.transport_errors,
            "queued": figures["queued"],
            "queued_max": figures["queued_max"],
            "listeners": figures["listeners"],
        }
        storage = self.storage_info()
        if storage is not None:
            info["storage"] = storage
        return info

    def storage_info(self) -> dict[str, Any] | None:
        writer = self._storage()
        if writer is None:
            return None
        cumulative = 0
        buckets: dict[str, int] = {}
        for bound, count in zip((*map(str, COMMIT_BUCKETS), "+Inf"), writer.commit_buckets,
                                strict=True):
            cumulative += count
            buckets[bound] = cumulative
        return {
            "backend": writer.storage.name,
            "durability": writer.storage.durability,
            "reachable": not writer.failing,
            "commits": writer.commits,
            "commit_failures": writer.failures,
            "commit_seconds": writer.commit_seconds,
            "commit_seconds_buckets": buckets,
            "items_committed": writer.changes,
            "pending_items": writer.pending_items,
        }

    def listeners_info(self) -> list[dict[str, Any]]:
        now: dict[str, int] = {}
        for conn in self._engine.connections:
            label = conn.listener.label
            now[label] = now.get(label, 0) + 1
        totals = self.stats.connections_by_listener
        return [
            {
                "name": self._names.get(spec.label, spec.label),
                "type": spec.type,
                "address": ", ".join(_address(host, port) for host, port in addresses),
                "connections": now.get(spec.label, 0),
                "connections_total": totals.get(spec.label, 0),
            }
            for spec, addresses in self._listeners
        ]

    # -- clients ---------------------------------------------------------------------------

    def clients_info(self, prefix: str = "", state: str = "all", offset: int = 0,
                     limit: int | None = None) -> tuple[int, list[dict[str, Any]]]:
        if state not in CLIENT_STATES:
            raise ValueError(f"state {state!r}: allowed: {', '.join(CLIENT_STATES)}")
        engine = self._engine
        clients = engine.clients
        sessions = engine.sessions
        if state == "connected":
            ids = [cid for cid in clients if cid.startswith(prefix)]
        elif state == "offline":
            ids = [cid for cid in sessions if cid not in clients and cid.startswith(prefix)]
        else:
            # a connected client holds a session; any that does not is listed too
            ids = [cid for cid in sessions if cid.startswith(prefix)]
            ids += [cid for cid in clients if cid not in sessions and cid.startswith(prefix)]
        # only the page is sorted out and described: with many offline sessions, the
        # whole list would stall the event loop
        end = len(ids) if limit is None else offset + limit
        page = heapq.nsmallest(end, ids)[offset:]
        return len(ids), [self._client(clients[cid]) if cid in clients
                          else self._offline(sessions[cid]) for cid in page]

    def client_info(self, client_id: str) -> dict[str, Any] | None:
        engine = self._engine
        conn = engine.clients.get(client_id)
        session: Session | None
        if conn is not None:
            info = self._client(conn)
            session = conn.session
        else:
            session = engine.sessions.get(client_id)
            if session is None:
                return None
            info = self._offline(session)
        subs = []
        if session is not None:
            for topic_filter, (sub, subscription_id) in sorted(session.subscriptions.items()):
                subs.append({
                    "topic_filter": topic_filter,
                    "qos": sub.qos,
                    "no_local": sub.no_local,
                    "retain_as_published": sub.retain_as_published,
                    "retain_handling": sub.retain_handling,
                    "subscription_id": subscription_id or None,
                })
        info["subscriptions"] = subs
        return info

    def _client(self, conn: Connection) -> dict[str, Any]:
        session = conn.session
        return {
            "id": conn.client_id,
            "state": "connected",
            "username": conn.username,
            "listener": self._names.get(conn.listener.label, conn.listener.label),
            "address": conn.remote,
            "protocol_level": conn.protocol_level,
            "connected_since": self._wall(conn.opened),
            "offline_since": None,
            "expires_at": None,
            "keepalive": conn.keepalive,
            "subscriptions": len(session.subscriptions) if session is not None else 0,
            "queue_depth": len(session.pending) if session is not None else 0,
            "inflight": len(session.inflight) if session is not None else 0,
        }

    def _offline(self, session: Session) -> dict[str, Any]:
        """A persistent session whose client is away: the same keys as a connected
        client's, the connection's ones None."""
        since = session.offline_since
        expires = session.expires_at
        return {
            "id": session.client_id,
            "state": "offline",
            "username": session.username,
            "listener": None,
            "address": None,
            "protocol_level": session.protocol_level,
            "connected_since": None,
            "offline_since": None if since is None else self._wall(since),
            # None: the session never expires
            "expires_at": None if expires is None else self._wall(expires),
            "keepalive": None,
            "subscriptions": len(session.subscriptions),
            "queue_depth": len(session.pending),
            # sent before the client went away, not acknowledged: sent again on resume
            "inflight": len(session.inflight),
        }

    def _wall(self, engine_time: float) -> float:
        """An engine-clock time as Unix time, to the millisecond."""
        return round(time.time() - (self._engine.clock() - engine_time), 3)

    # -- readiness -------------------------------------------------------------------------

    async def not_ready(self) -> str | None:
        reason = self._state()
        if reason is not None:
            return reason
        writer = self._storage()
        if writer is not None and writer.failing:
            return f"storage {writer.storage.name}: commits are failing"
        caller = self._hooks.on_ready_check
        if caller is None:
            return None
        with anyio.move_on_after(READY_CHECK_TIMEOUT):
            answer = await caller.acall(self._handle)
            return str(answer) if answer else None
        return f"a readiness check took longer than {READY_CHECK_TIMEOUT} s"


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
