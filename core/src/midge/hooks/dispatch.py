"""The dispatcher: each hook's implementations called under its combination rule.

The rule: each combination rule of ``midge.hooks.specs`` is written once, in a sync form
(``HookCaller.__call__``) and, for hooks that may be ``async def``, one awaiting form
(``HookCaller.acall``); a hook no active plugin implements is None on ``Hooks``, so an
unused hook costs one attribute test. ``async def`` broadcast implementations are not
awaited here: they wait in a bounded queue per plugin that the broker's shell drains, so
one slow plugin never stalls another; how many of one plugin's deferred calls may run at
once is the plugin's ``midge_concurrency`` (default 1: one at a time, in event order).
Every plugin is checked before it is registered (``check_plugin``), and every problem is
reported under the plugin's name, never as a pluggy traceback. This module does no I/O and
imports no event loop.
"""

from __future__ import annotations

import difflib
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


#: the plugin attribute that sets how many deferred calls of it may run at once
CONCURRENCY_ATTRIBUTE = "midge_concurrency"


class PluginError(Exception):
    """A plugin cannot be activated (unknown, fails to load, bad table, bad hooks).

    ``plugin`` is the plugin's name (its entry point's, or the one an embedding program
    gave); ``problems`` lists every problem found, each a sentence naming what is wrong.
    """

    def __init__(self, plugin: str, message: str, problems: Iterable[str] = ()) -> None:
        super().__init__(f"plugin {plugin!r}: {message}")
        self.plugin = plugin
        self.problems: list[str] = list(problems) or [message]

    @classmethod
    def of(cls, plugin: str, problems: list[str]) -> PluginError:
        """One error for all of a plugin's problems."""
        if len(problems) == 1:
            return cls(plugin, problems[0], problems)
        return cls(plugin, f"{len(problems)} problems: " + "; ".join(problems), problems)


def _required_args(func: Callable[..., Any]) -> tuple[str, ...]:
    """The argument names pluggy passes to an implementation: its positional parameters
    without a default, ``self`` excluded (pluggy's own reading of a signature)."""
    try:
        sig = inspect.signature(func)
    except (TypeError, ValueError):
        return ()
    names = tuple(
        name for name, param in sig.parameters.items()
        if param.kind in (param.POSITIONAL_ONLY, param.POSITIONAL_OR_KEYWORD)
        and param.default is param.empty
    )
    if names[:1] == ("self",) and "." in getattr(func, "__qualname__", ""):
        names = names[1:]
    return names


def _spec_args(hook: str) -> tuple[str, ...]:
    return tuple(inspect.signature(getattr(specs, hook)).parameters)


def check_plugin(plugin: Any) -> tuple[list[str], list[str]]:
    """Every problem (errors) and every likely mistake (warnings) in a plugin object's
    hook implementations, without registering it.

    Errors: an ``@hookimpl`` whose name is no hook, an argument the hook does not have,
    ``async def`` where the hook must be a plain function, a hook wrapper, a bad
    ``midge_concurrency``. Warnings: a method named after a hook but not marked
    ``@hookimpl`` (it would never be called), a plugin that implements no hook.
    """
    errors: list[str] = []
    warnings: list[str] = []
    if inspect.isclass(plugin):
        return [f"is the class {plugin.__qualname__}, not an instance of it: pass "
                f"{plugin.__qualname__}(config)"], []
    implemented = 0
    for attr in sorted(dir(plugin)):
        if attr.startswith("__"):
            continue
        try:
            value = getattr(plugin, attr)
        except Exception:  # a property that fails is not a hook implementation
            continue
        if not inspect.isroutine(value):
            continue
        opts = getattr(value, "midge_impl", None)
        if not isinstance(opts, dict):
            if attr in RULES:
                warnings.append(f"{attr} is not marked @hookimpl, so it is never called")
            continue
        hook = opts.get("specname") or attr
        if hook not in RULES:
            if opts.get("optionalhook"):
                continue
            close = difflib.get_close_matches(hook, list(RULES), n=1)
            errors.append(f"unknown hook {hook!r}"
                          + (f" (did you mean {close[0]!r}?)" if close else ""))
            continue
        implemented += 1
        if opts.get("wrapper") or opts.get("hookwrapper"):
            errors.append(f"{hook}: hook wrappers are not supported (midge combines "
                          "implementations by the hook's rule, see docs/hooks.md)")
            continue
        _rule, may_be_async = RULES[hook]
        if not may_be_async and (inspect.iscoroutinefunction(value)
                                 or inspect.isasyncgenfunction(value)):
            errors.append(f"{hook} must be a plain function, not async def "
                          "(the broker calls it on the hot path and cannot await it)")
        spec_args = _spec_args(hook)
        names = _required_args(value)
        unknown = [name for name in names if name not in spec_args]
        if unknown:
            which = ", ".join(repr(name) for name in unknown)
            errors.append(
                f"{hook}({', '.join(names)}): {'arguments' if len(unknown) > 1 else 'argument'}"
                f" {which} {'are' if len(unknown) > 1 else 'is'} not among the hook's "
                f"arguments ({', '.join(spec_args) or 'none'}); take any of them, by name"
            )
    concurrency = getattr(plugin, CONCURRENCY_ATTRIBUTE, 1)
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        errors.append(f"{CONCURRENCY_ATTRIBUTE} must be an integer of at least 1, "
                      f"not {concurrency!r}")
    if not implemented and not errors:
        warnings.append("implements no hook (no method is marked @hookimpl)")
    return errors, warnings


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
            if isinstance(exc, Refuse) and self.name == "on_connect_authenticate":
                raise exc  # a refusal with its own reason code (0x89 Server busy, say)
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
    on_ready_check: HookCaller[[BrokerHandle], str | None] | None
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

    def __init__(self, plugins: Iterable[tuple[str, Any]] = (), *, warn: bool = True) -> None:
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
        #: how many deferred calls of each plugin may run at once (``midge_concurrency``)
        self.concurrency: dict[str, int] = {}
        #: likely mistakes found in each plugin (logged; ``midge plugins -c`` shows them)
        self.warnings: dict[str, list[str]] = {}
        ordered = list(plugins)
        for name, plugin in ordered:
            errors, warnings = check_plugin(plugin)
            if errors:
                raise PluginError.of(name, errors)
            for warning in warnings if warn else ():
                log.warning("plugin %s: %s", name, warning)
            if warnings:
                self.warnings[name] = warnings
            self.concurrency[name] = getattr(plugin, CONCURRENCY_ATTRIBUTE, 1)
        # pluggy calls the last registered first: register backwards so that the
        # configuration's order is the call order
        for name, plugin in reversed(ordered):
            try:
                self.manager.register(plugin, name=name)
            except ValueError as exc:
                raise PluginError(name, str(exc)) from exc
            except pluggy.PluginValidationError as exc:
                # check_plugin found nothing, but pluggy did: still name the plugin
                raise PluginError(name, " ".join(str(exc).split())) from exc
        try:
            self.manager.check_pending()
        except pluggy.PluginValidationError as exc:
            plugin_name = self.manager.get_name(exc.plugin) or "?"
            raise PluginError(plugin_name, " ".join(str(exc).split())) from exc
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
        # the shell starts a worker unless the plugin has its limit of them running
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
