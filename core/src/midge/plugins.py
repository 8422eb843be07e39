"""Plugin discovery, activation and hook dispatch.

The rule: discovery is not activation. Installed plugins are found through the
``midge.plugins`` entry point group; only plugins named in the configuration are
activated, in file order, and that order is the call order. The dispatcher applies the
combination rules of ``midge.hookspecs`` itself and exposes one attribute per hook that
is None when no active plugin implements it, so an unused hook costs one attribute test.
"""

from __future__ import annotations

import inspect
import logging
import os
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import anyio
import pluggy

from . import hookspecs
from .errors import DropPacket, PluginConfigError, Refuse, RejectPublish
from .hookspecs import BROADCAST, PIPELINE, RULES, STOP_ON_EXCEPTION, VOTE

log = logging.getLogger("midge.plugins")

ENTRY_POINT_GROUP = "midge.plugins"
#: exceptions a plugin raises on purpose; they are part of the contract, not failures
_CONTRACT = (DropPacket, RejectPublish, Refuse)


class PluginError(Exception):
    """A plugin cannot be activated (unknown, fails to load, bad table, bad hooks)."""

    def __init__(self, plugin: str, message: str) -> None:
        super().__init__(f"plugin {plugin!r}: {message}")
        self.plugin = plugin


@dataclass(frozen=True, slots=True)
class PluginInfo:
    """An installed plugin, found through its entry point."""

    name: str
    distribution: str
    version: str
    target: str
    entry_point: metadata.EntryPoint | None = None

    def load(self) -> Any:
        if self.entry_point is None:
            raise PluginError(self.name, "has no entry point")
        try:
            return self.entry_point.load()
        except Exception as exc:
            raise PluginError(self.name, f"cannot load {self.target}: {exc}") from exc

    def hooks(self) -> list[str]:
        """Names of the hooks the plugin implements (loads it)."""
        return implemented_hooks(self.load())


def discover() -> dict[str, PluginInfo]:
    """Every installed plugin, by name."""
    found: dict[str, PluginInfo] = {}
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = ep.dist
        found[ep.name] = PluginInfo(
            ep.name,
            dist.metadata["Name"] if dist is not None else "?",
            dist.version if dist is not None else "?",
            ep.value,
            ep,
        )
    return found


def implemented_hooks(target: Any) -> list[str]:
    """Hook names that ``target`` (a class, instance or module) marks with ``hookimpl``."""
    names = []
    for name in dir(target):
        if name in RULES and getattr(getattr(target, name, None), "midge_impl", None) is not None:
            names.append(name)
    return sorted(names)


def resolve_secrets(table: dict[str, Any], where: str) -> dict[str, Any]:
    """Replace ``{env = "NAME"}`` and ``{file = "path"}`` values by the secret they name."""
    out: dict[str, Any] = {}
    for key, value in table.items():
        if isinstance(value, dict) and len(value) == 1 and ("env" in value or "file" in value):
            if "env" in value:
                name = value["env"]
                if name not in os.environ:
                    raise PluginConfigError(
                        f"{where}.{key}", f"environment variable {name!r} is not set"
                    )
                out[key] = os.environ[name]
            else:
                try:
                    out[key] = Path(value["file"]).read_text().rstrip("\r\n")
                except OSError as exc:
                    raise PluginConfigError(
                        f"{where}.{key}", f"cannot read secret file {value['file']!r}: "
                        f"{exc.strerror}"
                    ) from None
        elif isinstance(value, dict):
            out[key] = resolve_secrets(value, f"{where}.{key}")
        elif isinstance(value, list):
            out[key] = [
                resolve_secrets(item, f"{where}.{key}[{index}]") if isinstance(item, dict)
                else item
                for index, item in enumerate(value)
            ]
        else:
            out[key] = value
    return out


def instantiate(name: str, target: Any, table: dict[str, Any]) -> Any:
    """Make the plugin object from its entry point target and its config table."""
    if inspect.ismodule(target):
        if table:
            raise PluginError(name, "takes no configuration (it is a module of hooks)")
        return target
    try:
        return target(resolve_secrets(table, f"plugins.{name}"))
    except PluginConfigError as exc:
        raise PluginError(name, f"configuration: plugins.{name}.{exc.key}: {exc.message}"
                          if not exc.key.startswith("plugins.") else
                          f"configuration: {exc.key}: {exc.message}") from exc
    except Exception as exc:
        raise PluginError(name, f"failed to start: {exc}") from exc


class _Impl:
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


class HookCaller:
    """Calls one hook's implementations under its combination rule."""

    __slots__ = ("_hooks", "impls", "is_async", "name", "rule")

    def __init__(self, name: str, rule: str, impls: list[_Impl], hooks: Hooks) -> None:
        self.name = name
        self.rule = rule
        self.impls = impls
        #: the result must be awaited (some implementation is ``async def``)
        self.is_async = any(impl.is_async for impl in impls) and rule != BROADCAST
        self._hooks = hooks

    def __call__(self, *args: Any) -> Any:
        rule = self.rule
        if rule == BROADCAST:
            return self._broadcast(args)
        if self.is_async:
            return self._call_async(args)
        if rule == PIPELINE:
            return self._pipeline(args)
        if rule == VOTE:
            return self._vote(args)
        if rule == STOP_ON_EXCEPTION:
            return self._stop_on_exception(args)
        return self._first_non_empty(args)

    def _failed(self, impl: _Impl) -> None:
        # only ever called from an except block: the traceback is the current exception
        log.error(
            "plugin %s failed in %s", impl.plugin, self.name,
            exc_info=True,  # noqa: LOG014 - always called from an except block
        )

    def _broadcast(self, args: tuple[Any, ...]) -> None:
        for impl in self.impls:
            try:
                result = impl.call(args)
            except Exception:
                self._failed(impl)
                continue
            if impl.is_async:
                self._hooks.defer(self, impl, result)

    def _pipeline(self, args: tuple[Any, ...]) -> Any:
        value = args[-1]
        head = args[:-1]
        for impl in self.impls:
            try:
                result = impl.call((*head, value))
            except _CONTRACT:
                raise
            except Exception:
                self._failed(impl)
                continue
            if result is not None:
                value = result
        return value

    def _vote(self, args: tuple[Any, ...]) -> bool | None:
        for impl in self.impls:
            try:
                result = impl.call(args)
            except Exception:
                log.exception("plugin %s failed in %s; counted as a denial", impl.plugin,
                              self.name)
                return False
            if result is True or result is False:
                return result
        return None

    def _stop_on_exception(self, args: tuple[Any, ...]) -> int | None:
        for impl in self.impls:
            try:
                result = impl.call(args)
            except Refuse as exc:
                return int(exc.reason_code)
            except Exception:
                log.exception("plugin %s failed in %s; refusing", impl.plugin, self.name)
                return 0x80
            if result is not None and int(result) >= 0x80:
                return int(result)
        return None

    def _first_non_empty(self, args: tuple[Any, ...]) -> Any:
        for impl in self.impls:
            try:
                result = impl.call(args)
            except Exception:
                self._failed(impl)
                continue
            if result:
                return result
        return None

    async def _call_async(self, args: tuple[Any, ...]) -> Any:
        rule = self.rule
        value = args[-1] if args else None  # stored_* hooks take no arguments
        for impl in self.impls:
            call_args = (*args[:-1], value) if rule == PIPELINE else args
            try:
                result = impl.call(call_args)
                if inspect.isawaitable(result):
                    result = await result
            except Exception as exc:
                # as in the plain versions: a vote counts any exception as a denial, and
                # on_connect refuses with 0x80 for anything but Refuse
                if rule == STOP_ON_EXCEPTION and isinstance(exc, Refuse):
                    return int(exc.reason_code)
                if isinstance(exc, _CONTRACT) and rule not in (VOTE, STOP_ON_EXCEPTION):
                    raise
                if rule == VOTE:
                    log.exception("plugin %s failed in %s; counted as a denial",
                                  impl.plugin, self.name)
                    return False
                if rule == STOP_ON_EXCEPTION:
                    log.exception("plugin %s failed in %s; refusing", impl.plugin, self.name)
                    return 0x80
                self._failed(impl)
                continue
            if rule == PIPELINE:
                if result is not None:
                    value = result
            elif rule == VOTE:
                if result is True or result is False:
                    return result
            elif rule == STOP_ON_EXCEPTION:
                if result is not None and int(result) >= 0x80:
                    return int(result)
            elif result:
                return result
        return value if rule == PIPELINE else None


class Hooks:
    """The active plugins' hooks; ``hooks.<name>`` is a HookCaller or None."""

    def __init__(self, plugins: Iterable[tuple[str, Any]] = ()) -> None:
        self.manager = pluggy.PluginManager("midge")
        self.manager.add_hookspecs(hookspecs)
        #: active plugin objects by name, in call order
        self.plugins: dict[str, Any] = {}
        self._deferred: deque[tuple[HookCaller, _Impl, Awaitable[Any]]] = deque()
        self._wake: anyio.Event | None = None
        #: the worker has stopped but the broker is still closing connections: keep
        #: deferred implementations for the final ``drain()`` instead of skipping them
        self._stopping = False
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
            caller = getattr(self.manager.hook, hook_name)
            impls = []
            spec_args = caller.spec.argnames if caller.spec else ()
            for hookimpl in reversed(caller.get_hookimpls()):
                func = hookimpl.function
                is_async = inspect.iscoroutinefunction(func)
                if is_async and not may_be_async:
                    raise PluginError(
                        hookimpl.plugin_name, f"{hook_name} must not be async def"
                    )
                names = tuple(hookimpl.argnames)
                picks = None if names == tuple(spec_args) else tuple(
                    spec_args.index(n) for n in names
                )
                impls.append(_Impl(hookimpl.plugin_name, func, picks, is_async))
            setattr(self, hook_name, HookCaller(hook_name, rule, impls, self) if impls else None)
        #: an on_packet_encode or on_packet_sent implementation exists: PUBLISHes are
        #: built as packet objects for them instead of taking the pre-encoded fast path
        self.packet_hooks = (
            self.on_packet_encode is not None
            or self.on_packet_sent is not None
        )
        #: a configured (not built-in) plugin authenticates connections
        self.auth_configured = False

    async def call_awaiting(self, name: str, *args: Any) -> Any:
        """Call a hook and await its result, ``async def`` broadcast implementations
        included (for lifecycle hooks that must finish before the broker goes on)."""
        caller: HookCaller | None = getattr(self, name)
        if caller is None:
            return None
        if caller.rule != BROADCAST:
            result = caller(*args)
            return await result if inspect.isawaitable(result) else result
        for impl in caller.impls:
            try:
                result = impl.call(args)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                caller._failed(impl)
        return None

    def __getattr__(self, name: str) -> Any:
        # only reached for hooks when __init__ failed half way; keeps type checkers quiet
        if name in RULES:
            return None
        raise AttributeError(name)

    def implemented(self) -> list[str]:
        return [name for name in RULES if getattr(self, name) is not None]

    # -- async broadcast implementations run in order, off the event's path ------------

    def defer(self, caller: HookCaller, impl: _Impl, awaitable: Awaitable[Any]) -> None:
        if self._wake is None and not self._stopping:
            # no worker (the broker is not running): run nothing, but say so
            if isinstance(awaitable, Coroutine):
                awaitable.close()
            log.warning("plugin %s: %s called outside a running broker; skipped",
                        impl.plugin, caller.name)
            return
        self._deferred.append((caller, impl, awaitable))
        if self._wake is not None:
            self._wake.set()

    def defer_awaitable(self, what: str, awaitable: Awaitable[Any]) -> None:
        """Await something for the broker's code (an inline callback) on the worker."""
        caller = HookCaller(what, BROADCAST, [], self)
        self.defer(caller, _Impl(what, lambda: None, None, True), awaitable)

    async def run_deferred(self) -> None:
        """The worker that awaits ``async def`` broadcast implementations, in order."""
        self._wake = anyio.Event()
        try:
            while True:
                await self._wake.wait()
                self._wake = anyio.Event()
                await self.drain()
        finally:
            self._wake = None
            self._stopping = True

    async def drain(self) -> None:
        """Await every deferred implementation now (used at shutdown)."""
        while self._deferred:
            caller, impl, awaitable = self._deferred.popleft()
            try:
                await awaitable
            except Exception:
                log.exception("plugin %s failed in %s", impl.plugin, caller.name)
        if self._wake is None:
            self._stopping = False  # the final drain at shutdown: nothing runs later


def activate(
    tables: dict[str, dict[str, Any]],
    internal: Iterable[tuple[str, Any]] = (),
    extra: Iterable[tuple[str, Any]] = (),
    available: dict[str, PluginInfo] | None = None,
) -> Hooks:
    """Hooks for ``extra`` plugin objects, then the configured plugins (loaded through
    their entry points, in table order), then ``internal`` ones, in that call order."""
    plugins: list[tuple[str, Any]] = list(extra)
    if tables:
        found = discover() if available is None else available
        for name, table in tables.items():
            info = found.get(name)
            if info is None:
                known = ", ".join(sorted(found)) or "none installed"
                raise PluginError(name, f"is not installed (installed plugins: {known})")
            plugins.append((name, instantiate(name, info.load(), table)))
    internal = list(internal)
    hooks = Hooks([*plugins, *internal])
    hooks.auth_configured = any(
        "on_connect_authenticate" in implemented_hooks(plugin) for _, plugin in plugins
    )
    return hooks
