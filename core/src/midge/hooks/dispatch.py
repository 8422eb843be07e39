"""The dispatcher: each hook's implementations called under its combination rule.

The rule: each combination rule of ``midge.hooks.specs`` is written once, in a sync form
(``HookCaller.__call__``) and, for hooks that may be ``async def``, one awaiting form
(``HookCaller.acall``); a hook no active plugin implements is None on ``Hooks``, so an
unused hook costs one attribute test. ``async def`` broadcast implementations are not
awaited here: they wait in a bounded queue per plugin that the broker's shell drains, so
one slow plugin never stalls another. This module does no I/O and imports no event loop.
"""

from __future__ import annotations

import inspect
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar

import pluggy

from ..errors import DropPacket, Refuse, RejectPublish
from . import specs
from .specs import BROADCAST, PIPELINE, RULES, STOP_ON_EXCEPTION, VOTE

if TYPE_CHECKING:
    from ..api import BrokerHandle, Client
    from ..codec import Auth, Connect, Packet, Publish, Subscribe, Unsubscribe, Will
    from ..message import Message
    from ..records import Storage
    from ..topics import Route

log = logging.getLogger("midge.plugins")

#: exceptions a plugin raises on purpose; they are part of the contract, not failures
CONTRACT = (DropPacket, RejectPublish, Refuse)
#: deferred ``async def`` broadcast calls queued per plugin before new ones are dropped
DEFER_LIMIT = 10_000
#: the reason code an ``on_connect`` failure refuses with (0x80 Unspecified error)
_UNSPECIFIED = 0x80

P = ParamSpec("P")
R = TypeVar("R")


class PluginError(Exception):
    """A plugin cannot be activated (unknown, fails to load, bad table, bad hooks)."""

    def __init__(self, plugin: str, message: str) -> None:
        super().__init__(f"plugin {plugin!r}: {message}")
        self.plugin = plugin


class Impl:
    """One plugin's implementation of one hook."""

    __slots__ = ("func", "is_async", "picks", "plugin")

    def __init__(self, plugin: str, func: Callable[..., Any], picks: tuple[int, ...] | None,
                 is_async: bool) -> None:
        self.plugin = plugin
        self.func = func
        #: positions of the spec's arguments this implementation takes (None: all of them)
        self.picks = picks
        self.is_async = is_async

    def call(self, args: tuple[Any, ...]) -> Any:
        picks = self.picks
        if picks is None:
            return self.func(*args)
        return self.func(*[args[i] for i in picks])


class HookCaller(Generic[P, R]):
    """Calls one hook's implementations under its combination rule."""

    __slots__ = ("_hooks", "impls", "is_async", "name", "rule")

    def __init__(self, name: str, rule: str, impls: list[Impl], hooks: Hooks) -> None:
        self.name = name
        self.rule = rule
        self.impls = impls
        #: the decision must be awaited: call ``acall`` (some implementation is async)
        self.is_async = any(impl.is_async for impl in impls) and rule != BROADCAST
        self._hooks = hooks

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """The combined result, for a hook with no ``async def`` decision to await."""
        rule = self.rule
        result: Any
        if rule == BROADCAST:
            self._broadcast(args)
            result = None
        elif rule == PIPELINE:
            result = self._pipeline(args)
        elif rule == VOTE:
            result = self._vote(args)
        elif rule == STOP_ON_EXCEPTION:
            result = self._stop_on_exception(args)
        else:
            result = self._first_non_empty(args)
        return result  # type: ignore[no-any-return]

    async def acall(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """The combined result, awaiting ``async def`` implementations in turn."""
        rule = self.rule
        value: Any = args[-1] if args else None  # stored_* hooks take no arguments
        for impl in self.impls:
            call_args = (*args[:-1], value) if rule == PIPELINE else args
            try:
                result = impl.call(call_args)
                if inspect.isawaitable(result):
                    result = await result
            except Exception as exc:
                outcome = self._failure(impl, exc)
                if outcome is _SKIP:
                    continue
                return outcome  # type: ignore[no-any-return]
            decided, value = self._step(value, result)
            if decided:
                return value  # type: ignore[no-any-return]
        return (value if rule == PIPELINE else None)  # type: ignore[return-value]

    # -- the rules, one step at a time ---------------------------------------------------

    def _step(self, value: Any, result: Any) -> tuple[bool, Any]:
        """Fold one implementation's result: (decided, value so far)."""
        rule = self.rule
        if rule == PIPELINE:
            return False, value if result is None else result
        if rule == VOTE:
            return (True, result) if result is True or result is False else (False, None)
        if rule == STOP_ON_EXCEPTION:
            if result is not None and int(result) >= _UNSPECIFIED:
                return True, int(result)
            return False, None
        return (True, result) if result else (False, None)

    def _failure(self, impl: Impl, exc: Exception) -> Any:
        """What an implementation's exception means under this rule (``_SKIP``: go on)."""
        rule = self.rule
        if rule == VOTE:
            log.error("plugin %s failed in %s; counted as a denial", impl.plugin, self.name,
                      exc_info=exc)
            return False
        if rule == STOP_ON_EXCEPTION:
            if isinstance(exc, Refuse):
                return int(exc.reason_code)
            log.error("plugin %s failed in %s; refusing", impl.plugin, self.name, exc_info=exc)
            return _UNSPECIFIED
        if isinstance(exc, CONTRACT):
            raise exc
        log.error("plugin %s failed in %s", impl.plugin, self.name, exc_info=exc)
        return _SKIP

    def _broadcast(self, args: tuple[Any, ...]) -> None:
        for impl in self.impls:
            try:
                result = impl.call(args)
            except Exception as exc:
                log.error("plugin %s failed in %s", impl.plugin, self.name, exc_info=exc)
                continue
            if impl.is_async:
                self._hooks.defer(impl.plugin, self.name, result)

    def _pipeline(self, args: tuple[Any, ...]) -> Any:
        value = args[-1]
        head = args[:-1]
        for impl in self.impls:
            try:
                result = impl.call((*head, value))
            except Exception as exc:
                self._failure(impl, exc)
                continue
            if result is not None:
                value = result
        return value

    def _vote(self, args: tuple[Any, ...]) -> bool | None:
        for impl in self.impls:
            try:
                result = impl.call(args)
            except Exception as exc:
                return self._failure(impl, exc)  # type: ignore[no-any-return]
            if result is True or result is False:
                return result
        return None

    def _stop_on_exception(self, args: tuple[Any, ...]) -> int | None:
        for impl in self.impls:
            try:
                result = impl.call(args)
            except Exception as exc:
                return self._failure(impl, exc)  # type: ignore[no-any-return]
            if result is not None and int(result) >= _UNSPECIFIED:
                return int(result)
        return None

    def _first_non_empty(self, args: tuple[Any, ...]) -> Any:
        for impl in self.impls:
            try:
                result = impl.call(args)
            except Exception as exc:
                self._failure(impl, exc)
                continue
            if result:
                return result
        return None


_SKIP = object()


class Hooks:
    """The active plugins' hooks; ``hooks.<name>`` is a HookCaller or None."""

    on_started: HookCaller[[BrokerHandle], None] | None
    on_stopped: HookCaller[[BrokerHandle], None] | None
    on_reload: HookCaller[[BrokerHandle], None] | None
    on_sys_info_tick: HookCaller[[BrokerHandle, dict[str, Any]], None] | None
    on_connect: HookCaller[[Client, Connect], int | None] | None
    on_connect_authenticate: HookCaller[[Client, Connect], bool | None] | None
    on_acl_check: HookCaller[[Client, str, bool], bool | None] | None
    on_session_establish: HookCaller[[Client, Connect], None] | None
    on_session_established: HookCaller[[Client, Connect], None] | None
    on_disconnect: HookCaller[[Client, str | None, bool], None] | None
    on_auth_packet: HookCaller[[Client, Auth], Auth] | None
    on_packet_read: HookCaller[[Client, Packet], Packet] | None
    on_packet_encode: HookCaller[[Client, Packet], Packet] | None
    on_packet_sent: HookCaller[[Client, Packet, bytes], None] | None
    on_packet_processed: HookCaller[[Client, Packet, str | None], None] | None
    on_subscribe: HookCaller[[Client, Subscribe], Subscribe] | None
    on_subscribed: HookCaller[[Client, Subscribe, list[int]], None] | None
    on_select_subscribers: HookCaller[[Message, list[Route]], list[Route]] | None
    on_unsubscribe: HookCaller[[Client, Unsubscribe], Unsubscribe] | None
    on_unsubscribed: HookCaller[[Client, Unsubscribe], None] | None
    on_publish: HookCaller[[Client, Publish], Publish] | None
    on_published: HookCaller[[Client | None, Publish], None] | None
    on_publish_dropped: HookCaller[[Client | None, Message, str], None] | None
    on_retain_message: HookCaller[[Client | None, Message, bool], None] | None
    on_retain_published: HookCaller[[Client, Message], None] | None
    on_qos_publish: HookCaller[[Client, Message, int, bool], None] | None
    on_qos_complete: HookCaller[[Client, int], None] | None
    on_qos_dropped: HookCaller[[Client, int, str], None] | None
    on_packet_id_exhausted: HookCaller[[Client, Message], None] | None
    on_will: HookCaller[[Client, Will], Will] | None
    on_will_sent: HookCaller[[Client, Will], None] | None
    on_client_expired: HookCaller[[str], None] | None
    on_retained_expired: HookCaller[[str], None] | None
    storage_backend: HookCaller[[], Storage | None] | None
    stored_clients: HookCaller[[], list[dict[str, Any]]] | None
    stored_subscriptions: HookCaller[[], list[dict[str, Any]]] | None
    stored_inflight_messages: HookCaller[[], list[dict[str, Any]]] | None
    stored_retained_messages: HookCaller[[], list[Message]] | None
    stored_sys_info: HookCaller[[], dict[str, Any]] | None

    def __init__(self, plugins: Iterable[tuple[str, Any]] = ()) -> None:
        self.manager = pluggy.PluginManager("midge")
        self.manager.add_hookspecs(specs)
        #: active plugin objects by name, in call order
        self.plugins: dict[str, Any] = {}
        #: deferred ``async def`` broadcast calls, per plugin: (hook name, awaitable)
        self.deferred: dict[str, deque[tuple[str, Awaitable[Any]]]] = {}
        #: deferred calls dropped because their plugin's queue was full, per plugin
        self.overflow: dict[str, int] = {}
        #: called with a plugin's name when it has deferred calls to run (set by the
        #: shell that runs them; None: nothing runs them, so they are skipped)
        self.wake: Callable[[str], None] | None = None
        ordered = list(plugins)
        # pluggy calls the last registered first: register backwards so that the
        # configuration's order is the call order
        for name, plugin in reversed(ordered):
            try:
                self.manager.register(plugin, name=name)
            except ValueError as exc:
                raise PluginError(name, str(exc)) from exc
        try:
            self.manager.check_pending()
        except pluggy.PluginValidationError as exc:
            raise PluginError(getattr(exc, "plugin_name", "?"), str(exc)) from exc
        for name, plugin in ordered:
            self.plugins[name] = plugin
        for hook_name, (rule, may_be_async) in RULES.items():
            setattr(self, hook_name, self._caller(hook_name, rule, may_be_async))
        #: an on_packet_encode or on_packet_sent implementation exists: PUBLISHes are
        #: built as packet objects for them instead of taking the pre-encoded fast path
        self.packet_hooks = self.on_packet_encode is not None or self.on_packet_sent is not None
        #: a configured (not built-in) plugin authenticates connections
        self.auth_configured = False

    def _caller(self, hook_name: str, rule: str, may_be_async: bool) -> HookCaller[..., Any] | None:
        caller = getattr(self.manager.hook, hook_name)
        spec_args = tuple(caller.spec.argnames) if caller.spec else ()
        impls = []
        for hookimpl in reversed(caller.get_hookimpls()):
            func = hookimpl.function
            is_async = inspect.iscoroutinefunction(func)
            if is_async and not may_be_async:
                raise PluginError(hookimpl.plugin_name, f"{hook_name} must not be async def")
            names = tuple(hookimpl.argnames)
            picks = None if names == spec_args else tuple(spec_args.index(n) for n in names)
            impls.append(Impl(hookimpl.plugin_name, func, picks, is_async))
        return HookCaller(hook_name, rule, impls, self) if impls else None

    async def call_awaiting(self, caller: HookCaller[P, Any] | None, *args: Any) -> Any:
        """Call a hook and await its result, ``async def`` broadcast implementations
        included (for lifecycle hooks that must finish before the broker goes on)."""
        if caller is None:
            return None
        if caller.rule != BROADCAST:
            return await caller.acall(*args)  # type: ignore[arg-type, call-arg]
        for impl in caller.impls:
            try:
                result = impl.call(args)
                if inspect.isawaitable(result):
                    await result
            except Exception as exc:
                log.error("plugin %s failed in %s", impl.plugin, caller.name, exc_info=exc)
        return None

    # -- async broadcast implementations run later, in order per plugin -----------------

    def defer(self, plugin: str, what: str, awaitable: Awaitable[Any]) -> None:
        """Queue an awaitable for ``plugin``'s worker (an ``async def`` broadcast call, or
        an inline callback)."""
        wake = self.wake
        if wake is None:
            _discard(awaitable)
            log.warning("plugin %s: %s called outside a running broker; skipped", plugin, what)
            return
        queue = self.deferred.get(plugin)
        if queue is None:
            queue = self.deferred[plugin] = deque()
        if len(queue) >= DEFER_LIMIT:
            _discard(awaitable)
            dropped = self.overflow[plugin] = self.overflow.get(plugin, 0) + 1
            if dropped == 1 or dropped % 1000 == 0:
                log.warning("plugin %s is %d calls behind: %d deferred %s calls dropped so far",
                            plugin, DEFER_LIMIT, dropped, what)
            return
        queue.append((what, awaitable))
        if len(queue) == 1:
            wake(plugin)

    def discard_deferred(self) -> int:
        """Forget every deferred call that has not started; returns how many there were."""
        count = 0
        for queue in self.deferred.values():
            for _what, awaitable in queue:
                _discard(awaitable)
                count += 1
            queue.clear()
        return count


def _discard(awaitable: Awaitable[Any]) -> None:
    # a coroutine that will never run is closed, or Python warns it was never awaited
    if isinstance(awaitable, Coroutine):
        awaitable.close()
