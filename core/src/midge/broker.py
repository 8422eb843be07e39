"""The Broker: the thin async shell around the engine.

The rule: the shell owns time, tasks and awaiting, nothing of the protocol. It binds the
listeners, runs the sweep that tells the engine the time, awaits the decisions and the
deferred ``async def`` hook calls the engine cannot await, gives plugins a task group,
and shuts down in a fixed order, each step bounded by ``shutdown_timeout``: stop
accepting, close the connections, cancel the plugins' tasks, drain the deferred calls,
``on_stopped``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import anyio
import anyio.lowlevel
from anyio.abc import TaskGroup, TaskStatus

from .api import Client
from .codec import Packet, Properties, ReasonCode
from .config import ConfigError, ListenerSettings, Settings
from .engine import Engine
from .hooks import Hooks, activate
from .hooks.builtin import ListenerAccess, SysPublisher
from .inline import Callback, Inline, InlineSubscription
from .listeners import REGISTRY, Acceptor, Listener
from .message import Message
from .observe import Observatory
from .persistence import StorageWriter
from .stats import Stats

log = logging.getLogger("midge.broker")
plugins_log = logging.getLogger("midge.plugins")

#: seconds between the sweeps that tell the engine the time (CONNECT timeouts,
#: keepalive, expiry, will delay)
SWEEP_INTERVAL = 0.5
#: sweeps between two records of the counters in storage (one minute)
COUNTERS_EVERY = 120


class Broker:
    """An MQTT broker. ``await broker.run()`` serves until ``shutdown()``; or use
    ``async with Broker(settings) as broker:`` to run it inside another anyio program.

    ``plugins`` adds plugin objects directly, (name, object) pairs called before the
    ones the settings activate through entry points.
    """

    def __init__(
        self, settings: Settings | None = None, plugins: list[tuple[str, Any]] | None = None
    ) -> None:
        self.settings = settings or Settings.default()
        self.limits = self.settings.broker
        for index, spec in enumerate(self.settings.listeners):
            if spec.type not in REGISTRY:
                raise ConfigError(self.settings.source, f"listeners[{index}].type",
                                  f"{spec.type!r} is not a listener type; allowed: "
                                  + ", ".join(REGISTRY))
        internal: list[tuple[str, Any]] = [("midge.access", ListenerAccess())]
        if self.limits.sys_interval:
            internal.append(("midge.sys", SysPublisher()))
        self.hooks: Hooks = activate(self.settings.plugins, internal=internal,
                                     extra=list(plugins or []))
        self.engine = Engine(self.limits, self.hooks, time.monotonic)
        if any(spec.allow_anonymous for spec in self.settings.listeners):
            self.engine.restore_listener = ListenerSettings(name="restored",
                                                            allow_anonymous=True)
        self.inline = Inline(self.engine)
        #: (host, port) actually bound, per listener, once running
        self.addresses: list[tuple[str, int]] = []
        self._listeners: list[Listener] = []
        #: entered task groups, in order: service (sweeps, deferred calls), plugin
        #: tasks, connections; left in the reverse order
        self._groups: list[TaskGroup] = []
        self._stop: anyio.Event | None = None
        self._stop_early = False
        self._idle: anyio.Event | None = None
        #: workers running each plugin's deferred calls, and an event for when none are
        self._workers: dict[str, int] = {}
        self._drained: anyio.Event | None = None
        #: cancel scopes of plugin tasks and deferred-call workers: shielded, so that only
        #: the shutdown sequence ends them, in its order, whatever cancels the caller
        self._task_scopes: set[anyio.CancelScope] = set()
        self._worker_scopes: set[anyio.CancelScope] = set()
        #: why the broker is not serving (None: it is), for /readyz
        self._not_ready: str | None = "starting"
        #: the broker's figures for observers (the http listener, $SYS)
        self.observatory = Observatory(self.engine, self.hooks, lambda: self._not_ready, self,
                                       lambda: self.storage)
        #: commits to the storage plugin's backend (None: state is kept in memory only)
        self.storage: StorageWriter | None = None

    @property
    def stats(self) -> Stats:
        return self.engine.stats

    # -- running -------------------------------------------------------------------------

    async def __aenter__(self) -> Broker:
        if self._stop is not None:
            raise RuntimeError("this broker is already running")
        self._stop = anyio.Event()
        self._idle = anyio.Event()
        if self._stop_early:
            self._stop.set()
        hooks = self.hooks
        if not hooks.auth_configured and not any(
            spec.allow_anonymous for spec in self.settings.listeners
        ):
            log.warning(
                "no authentication plugin is active: every connection will be refused "
                "(activate one, e.g. [plugins.auth_allow] or [plugins.auth_ledger])"
            )
        try:
            self._not_ready = "restoring stored state"
            await self._restore()
            self._not_ready = "binding listeners"
            await self._bind()
            for _ in range(3):
                group = anyio.create_task_group()
                await group.__aenter__()
                self._groups.append(group)
            service = self._groups[0]
            hooks.wake = self._wake
            if self.storage is not None:
                service.start_soon(self.storage.run)
            service.start_soon(self._sweep_loop)
            if self.limits.sys_interval and hooks.on_sys_info_tick is not None:
                service.start_soon(self._sys_loop)
            await hooks.call_awaiting(hooks.on_started, self)
            for listener in self._listeners:
                await listener.start(self._groups[2])
            self._not_ready = None
        except BaseException:
            await self._unwind()
            raise
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self._shutdown()

    async def run(self, *, task_status: TaskStatus[Broker] = anyio.TASK_STATUS_IGNORED) -> None:
        """Bind every listener, serve until ``shutdown()``, then close gracefully."""
        async with self:
            task_status.started(self)
            assert self._stop is not None
            await self._stop.wait()

    def shutdown(self) -> None:
        """Stop ``run``: stop accepting, tell v5 clients 0x8B, close every connection."""
        if self._stop is None:
            self._stop_early = True
        else:
            self._stop.set()

    async def _bind(self) -> None:
        acceptor = Acceptor(self.engine, self.limits.max_connections,
                            self.limits.max_pending_per_address, self.limits.connect_timeout,
                            self.observatory)
        for spec in self.settings.listeners:
            listener = await REGISTRY[spec.type](acceptor, spec)
            self._listeners.append(listener)
            self.observatory.bound(spec, listener.addresses)
            for host, port in listener.addresses:
                self.addresses.append((host, port))
                where = f"unix:{host}" if spec.type == "unix" else f"{host}:{port}"
                log.info("listening on %s (%s%s%s)", where, spec.type,
                         f" {spec.name}" if spec.name else "",
                         ", anonymous clients allowed" if spec.allow_anonymous else "")

    async def _shutdown(self) -> None:
        # every wait is shielded, so that a caller's cancellation (leaving a
        # ``move_on_after`` around ``async with Broker()``) still gets a graceful stop;
        # the task groups are left outside the shields, in the scopes they were entered
        timeout = self.limits.shutdown_timeout
        self._not_ready = "shutting down"
        await self._close_listeners()
        if self.storage is not None:
            # what waits for a commit is acknowledged before the clients are told 0x8B
            with anyio.CancelScope(shield=True), anyio.move_on_after(timeout):
                await self.storage.flush()
        engine = self.engine
        log.info("shutting down: closing %d connections", len(engine.connections))
        engine.close_all(ReasonCode.SERVER_SHUTTING_DOWN, "server shutting down")
        assert self._idle is not None
        engine.idle = self._idle.set
        if engine.connections:
            with anyio.CancelScope(shield=True), anyio.move_on_after(timeout):
                await self._idle.wait()
            if engine.connections:
                log.warning("%d connections did not close within %s s; dropped",
                            len(engine.connections), timeout)
        # a caller's cancellation arriving meanwhile is held until every step has run
        cancelled = await self._leave(self._groups.pop())  # connections
        cancelled = await self._leave(self._groups.pop(), self._task_scopes) or cancelled
        await self._drain(timeout)
        if self.storage is not None:
            await self.storage.close(timeout)
        cancelled = await self._leave(self._groups.pop(), self._worker_scopes) or cancelled
        self.hooks.wake = None
        await self._stopped(timeout)
        if cancelled is not None:
            raise cancelled

    async def _close_listeners(self) -> None:
        with anyio.CancelScope(shield=True):
            for listener in self._listeners:
                await listener.aclose()

    async def _unwind(self) -> None:
        """Undo a start that failed half way (no hooks run)."""
        while self._groups:
            await self._leave(self._groups.pop())  # the failure being raised says enough
        await self._close_listeners()
        if self.storage is not None:
            storage, self.storage = self.storage, None
            with anyio.CancelScope(shield=True):
                try:
                    await storage.storage.close()
                except Exception:
                    log.exception("storage %s: closing failed", storage.storage.name)
        self.hooks.wake = None
        self.hooks.discard_deferred()
        self._stop = None

    async def _leave(self, group: TaskGroup,
                     shielded: Iterable[anyio.CancelScope] = ()) -> BaseException | None:
        """Cancel a task group (and the shielded scopes of its tasks) and wait for it;
        returns the caller's own cancellation if it arrived meanwhile (the group is left
        all the same)."""
        for scope in list(shielded):
            scope.cancel()
        group.cancel_scope.cancel()
        try:
            await group.__aexit__(None, None, None)
        except anyio.get_cancelled_exc_class() as exc:
            return exc
        except Exception:
            log.exception("a broker task failed while shutting down")
        return None

    async def _stopped(self, timeout: float) -> None:
        with anyio.CancelScope(shield=True), anyio.move_on_after(timeout) as scope:
            await self.hooks.call_awaiting(self.hooks.on_stopped, self)
        if scope.cancelled_caught:
            plugins_log.warning("on_stopped did not finish within %s s", timeout)
        log.info("stopped")

    async def _sweep_loop(self) -> None:
        sweeps = 0
        while True:
            await anyio.sleep(SWEEP_INTERVAL)
            self.engine.tick(time.monotonic())
            sweeps += 1
            if self.storage is not None and sweeps % COUNTERS_EVERY == 0:
                self.engine.save_counters()

    async def _sys_loop(self) -> None:
        while True:
            await anyio.sleep(self.limits.sys_interval)
            if self.hooks.on_sys_info_tick is not None:
                self.hooks.on_sys_info_tick(self, self.sys_info())

    # -- deferred async broadcast calls: up to midge_concurrency workers per plugin ------

    def _wake(self, plugin: str) -> None:
        running = self._workers.get(plugin, 0)
        if running < self.hooks.concurrency.get(plugin, 1) and self._groups:
            self._workers[plugin] = running + 1
            self._groups[0].start_soon(self._work, plugin)

    async def _work(self, plugin: str) -> None:
        # several workers of one plugin share its queue: each takes the oldest call, so
        # calls start in event order; with one worker (the default) they also finish in it
        queue = self.hooks.deferred[plugin]
        with anyio.CancelScope(shield=True) as scope:
            self._worker_scopes.add(scope)
            try:
                while queue:
                    what, awaitable = queue.popleft()
                    try:
                        await awaitable
                    except Exception:
                        plugins_log.exception("plugin %s failed in %s", plugin, what)
            finally:
                self._worker_scopes.discard(scope)
                left = self._workers[plugin] - 1
                if left:
                    self._workers[plugin] = left
                else:
                    del self._workers[plugin]
                if not self._workers and self._drained is not None:
                    self._drained.set()

    async def _drain(self, timeout: float) -> None:
        """Let the deferred calls finish within ``timeout``; count and log the rest."""
        if self._workers:
            self._drained = anyio.Event()
            with anyio.CancelScope(shield=True), anyio.move_on_after(timeout):
                await self._drained.wait()
        running = sum(self._workers.values())
        left = self.hooks.discard_deferred()
        if running or left:
            plugins_log.warning(
                "shutdown: %d deferred hook calls did not run and %d were cut short "
                "after %s s", left, running, timeout,
            )

    # -- the plugins' handle (midge.api.BrokerHandle) ------------------------------------

    def start_task(self, func: Callable[..., Awaitable[Any]], *args: Any,
                   name: str | None = None) -> None:
        """Run ``func(*args)`` in the broker's plugin task group (from ``on_started`` or
        later); it is cancelled after the clients are gone at shutdown. A task that
        fails is logged and does not stop the broker or the other tasks."""
        if len(self._groups) < 2:
            raise RuntimeError("start_task needs a running broker (call it from on_started)")
        label = name or getattr(func, "__qualname__", repr(func))

        async def guarded() -> None:
            with anyio.CancelScope(shield=True) as scope:
                self._task_scopes.add(scope)
                try:
                    await func(*args)
                except Exception:
                    plugins_log.exception("plugin task %s failed", label)
                finally:
                    self._task_scopes.discard(scope)

        self._groups[1].start_soon(guarded, name=label)

    async def publish(self, topic: str, payload: bytes | str = b"", qos: int = 0,
                      retain: bool = False, properties: Properties | None = None) -> int:
        """Publish as the broker itself; returns the number of recipients."""
        return self.inline.publish(topic, payload, qos, retain, properties)

    def subscribe(self, topic_filter: str, qos: int = 2, *, callback: Callback | None = None,
                  buffer: int = 1000) -> InlineSubscription:
        """Receive messages matching ``topic_filter`` (retained ones first).

        Use as an async context manager and iterate it, or give ``callback`` (a function
        or coroutine function called with each Message) and keep the result to
        ``unsubscribe`` later.
        """
        return self.inline.subscribe(topic_filter, qos, callback=callback, buffer=buffer)

    async def unsubscribe(self, target: InlineSubscription | str) -> int:
        """Remove an inline subscription, or every one with the given topic filter."""
        return self.inline.unsubscribe(target)

    async def inject_packet(self, client: Client | str, packet: Packet) -> None:
        """Handle ``packet`` as if the connected ``client`` (or client id) had sent it."""
        await self.inline.inject_packet(client, packet)

    def deliver(self, message: Message, node: str) -> int:
        """Deliver a message published on another node to the local subscribers only
        (marked with ``node``; ``on_published`` does not fire for it)."""
        return self.inline.deliver(message, node)

    def disconnect(
        self, client_id: str, reason_code: int = ReasonCode.ADMINISTRATIVE_ACTION, *,
        reason: str | None = None, server_reference: str | None = None,
    ) -> bool:
        """Disconnect a connected client from plugin or embedding code.

        A v5 client gets DISCONNECT ``reason_code`` (0x80 and above, or 0x00), with
        ``reason`` as its Reason String unless it asked for no problem information, and
        ``server_reference`` as Server Reference with 0x9C (use another server) or 0x9D
        (server moved); a v3 client is just closed. Its will is published as for any
        connection the server closes. Returns False when ``client_id`` is not connected.
        Call it from the broker's event loop (a hook, or ``portal.call``).
        """
        return self.engine.disconnect(client_id, reason_code, reason=reason,
                                      server_reference=server_reference)

    def client(self, client_id: str) -> Client | None:
        """The connected client with this id, or None."""
        return self.engine.clients.get(client_id)

    async def reload(self) -> None:
        """SIGHUP: reload the listeners' certificates, let plugins re-read their files,
        then forget cached ACL decisions; open connections are kept.

        Every ``on_reload`` implementation, ``async def`` ones included, has finished
        before the caches are cleared: cleared earlier, they would refill with the old
        rules' decisions while a reload is still reading its files."""
        log.info("reloading")
        for listener in self._listeners:
            try:
                listener.reload()
            except Exception:
                log.exception("reloading a listener failed")
        await self.hooks.call_awaiting(self.hooks.on_reload, self)
        self.engine.forget_acl_decisions()

    def sys_info(self) -> dict[str, Any]:
        """The counters given to ``on_sys_info_tick``: mochi-mqtt's sys info names
        (``/stats`` shows the same), and the older keys ``sessions``,
        ``connections_total`` and ``retained_messages``."""
        info: dict[str, Any] = self.observatory.sys_info()
        info.update(self.engine.counts())
        return info

    # -- stored state --------------------------------------------------------------------

    async def _restore(self) -> None:
        """Ask storage plugins for the state to continue from, once, in hookspec order."""
        hooks = self.hooks
        if hooks.storage_backend is not None:
            backend = hooks.storage_backend()
            if backend is not None:
                writer = StorageWriter(backend, self.engine)
                self.storage = writer
                await writer.open()
        call = hooks.call_awaiting
        self.engine.restore(
            await call(hooks.stored_clients) or (),
            await call(hooks.stored_subscriptions) or (),
            await call(hooks.stored_inflight_messages) or (),
            await call(hooks.stored_retained_messages) or (),
            await call(hooks.stored_sys_info) or {},
        )
