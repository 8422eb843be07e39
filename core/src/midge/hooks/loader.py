"""Plugin discovery, activation and configuration secrets.

The rule: discovery is not activation. Installed plugins are found through the
``midge.plugins`` entry point group; only plugins named in the configuration are
activated, in file order, and that order is the call order. Secrets in a plugin's table
(``{env = "NAME"}``, ``{file = "path"}``) are resolved here, before the plugin sees it; a
one-key table that only looks like one (``{envv = "NAME"}``) is an error, never passed on.
``preflight`` builds and checks every configured plugin the way a start would, and
reports every problem under the plugin's name instead of stopping at the first.
"""

from __future__ import annotations

import inspect
import os
import traceback
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import PluginConfigError
from .dispatch import Hooks, PluginError, check_plugin
from .specs import RULES

if TYPE_CHECKING:
    from importlib import metadata

#: one-key tables that are most likely a misspelt secret form (compared lower-cased)
_SECRET_LOOKALIKES = {
    "env": {"environ", "environment", "env_var", "envvar", "variable", "var"},
    "file": {"filename", "file_name", "filepath", "file_path", "path", "secret_file"},
}

ENTRY_POINT_GROUP = "midge.plugins"


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
            raise PluginError(self.name, f"cannot load {self.target}: {_described(exc)}") \
                from exc

    def hooks(self) -> list[str]:
        """Names of the hooks the plugin implements (loads it)."""
        return implemented_hooks(self.load())


def discover() -> dict[str, PluginInfo]:
    """Every installed plugin, by name."""
    # imported here: importlib.metadata pulls in email and socket, which the sans-I/O
    # layers must not load
    from importlib import metadata

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


def _lookalike(key: str) -> str | None:
    """The secret form ``key`` is most likely a misspelling of, or None."""
    lowered = key.lower()
    for form, others in _SECRET_LOOKALIKES.items():
        if lowered == form or lowered in others or _one_edit(lowered, form):
            return form
    return None


def _one_edit(a: str, b: str) -> bool:
    """``a`` and ``b`` differ by one inserted, deleted, replaced or swapped character."""
    if a == b or abs(len(a) - len(b)) > 1:
        return False
    if len(a) == len(b):
        diffs = [i for i in range(len(a)) if a[i] != b[i]]
        return len(diffs) == 1 or (
            len(diffs) == 2 and diffs[1] == diffs[0] + 1
            and a[diffs[0]] == b[diffs[1]] and a[diffs[1]] == b[diffs[0]]
        )
    short, long = (a, b) if len(a) < len(b) else (b, a)
    return any(long[:i] + long[i + 1:] == short for i in range(len(long)))


def _secret(value: dict[str, Any], where: str) -> str | None:
    """The secret a ``{env = ...}`` / ``{file = ...}`` table names, or None when
    ``value`` is an ordinary table."""
    if len(value) != 1:
        return None
    [(form, target)] = value.items()
    if form not in ("env", "file"):
        guess = _lookalike(form) if isinstance(target, str) else None
        if guess is not None:
            example = '{ env = "NAME" }' if guess == "env" else '{ file = "/path" }'
            raise PluginConfigError(
                where, f"{{ {form} = ... }} is not a secret form; did you mean {example}? "
                "(a secret is { env = \"NAME\" } or { file = \"/path\" })"
            )
        return None
    if not isinstance(target, str) or not target:
        what = "an environment variable" if form == "env" else "a file"
        raise PluginConfigError(
            f"{where}.{form}", f"must be the name of {what} (a non-empty string), not "
            f"{target!r}"
        )
    if form == "env":
        if target not in os.environ:
            raise PluginConfigError(where, f"environment variable {target!r} is not set")
        return os.environ[target]
    try:
        return Path(target).read_text().rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise PluginConfigError(
            where, f"cannot read secret file {target!r}: {why}"
        ) from None


def resolve_secrets(table: dict[str, Any], where: str) -> dict[str, Any]:
    """Replace ``{env = "NAME"}`` and ``{file = "path"}`` values by the secret they name."""
    out: dict[str, Any] = {}
    for key, value in table.items():
        if isinstance(value, dict):
            secret = _secret(value, f"{where}.{key}")
            out[key] = (resolve_secrets(value, f"{where}.{key}") if secret is None
                        else secret)
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
        raise PluginError(name, f"failed to start: {_described(exc)}") from exc


def _described(exc: BaseException) -> str:
    """``Type: message (raised at file:line)``, the line being the innermost frame."""
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    frames = traceback.extract_tb(exc.__traceback__)
    if frames:
        text += f" (raised at {frames[-1].filename}:{frames[-1].lineno})"
    return text


@dataclass(slots=True)
class Check:
    """What ``preflight`` found for one configured plugin."""

    name: str
    #: its place in the call order (1 for the first ``[plugins.NAME]`` table)
    position: int
    info: PluginInfo | None
    hooks: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def preflight(tables: dict[str, dict[str, Any]],
              available: dict[str, PluginInfo] | None = None) -> list[Check]:
    """Build and check every configured plugin as a start would (load it, make it with
    its table, secrets resolved, and register its hooks), without running anything;
    one ``Check`` per table, in call order, every problem found listed."""
    found = discover() if available is None else available
    checks = []
    for position, (name, table) in enumerate(tables.items(), 1):
        info = found.get(name)
        check = Check(name, position, info)
        checks.append(check)
        if info is None:
            known = ", ".join(sorted(found)) or "none installed"
            check.errors.append(f"is not installed (installed plugins: {known})")
            continue
        try:
            target = info.load()
            check.hooks = implemented_hooks(target)
            plugin = instantiate(name, target, table)
        except PluginError as exc:
            check.errors.extend(exc.problems)
            continue
        check.errors, check.warnings = check_plugin(plugin)
        if not check.errors:
            try:  # what a start does with it; pluggy may still find something
                Hooks([(name, plugin)], warn=False)
            except PluginError as exc:
                check.errors.extend(exc.problems)
    return checks


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
