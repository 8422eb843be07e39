"""midge.hooks: the plugin contract (specs), its dispatcher, the loader, built-in plugins.

The rule: the engine calls hooks through ``Hooks`` only, and nothing here does I/O or
imports an event loop; the broker's shell runs what must be awaited.
"""

from __future__ import annotations

from .dispatch import HookCaller, Hooks, PluginError, check_plugin
from .loader import (
    ENTRY_POINT_GROUP,
    Check,
    PluginInfo,
    activate,
    discover,
    implemented_hooks,
    preflight,
)
from .specs import RULES, hookimpl, hookspec

__all__ = [
    "ENTRY_POINT_GROUP", "RULES", "Check", "HookCaller", "Hooks", "PluginError", "PluginInfo",
    "activate", "check_plugin", "discover", "hookimpl", "hookspec", "implemented_hooks",
    "preflight",
]
