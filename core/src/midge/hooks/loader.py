"""Plugin discovery, activation and configuration secrets.

The rule: discovery is not activation. Installed plugins are found through the
``midge.plugins`` entry point group; only plugins named in the configuration are
activated, in file order, and that order is the call order. Secrets in a plugin's table
(``{env = "NAME"}``, ``{file = "path"}``) are resolved here, before the plugin sees it.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import PluginConfigError
from .dispatch import Hooks, PluginError
from .specs import RULES

if TYPE_CHECKING:
    from importlib import metadata

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
            raise PluginError(self.name, f"cannot load {self.target}: {exc}") from exc

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
