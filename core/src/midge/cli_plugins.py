"""``midge plugins`` and ``midge passwd``: the plugin-related commands.

The rule: listing never activates anything; it loads each plugin only to read which
hooks it implements, and reports a plugin that fails to load instead of crashing.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from .config import ConfigError, load
from .hooks import PluginError, discover


def list_plugins(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="midge plugins", description="List installed midge plugins."
    )
    parser.add_argument("-c", "--config", metavar="FILE",
                        help="show whether this configuration activates each plugin")
    args = parser.parse_args(argv)
    active: dict[str, int] = {}
    if args.config:
        try:
            settings = load(args.config)
        except ConfigError as exc:
            sys.stderr.write(f"midge: configuration error: {exc}\n")
            return 2
        active = {name: index for index, name in enumerate(settings.plugins, 1)}
    found = discover()
    if not found:
        sys.stdout.write("no midge plugins are installed\n")
    for name, info in sorted(found.items()):
        try:
            hooks = ", ".join(info.hooks()) or "(none)"
        except PluginError as exc:
            hooks = f"cannot load: {exc}"
        if args.config:
            state = f"active (#{active[name]})" if name in active else "inactive"
        else:
            state = "inactive (no -c FILE given)"
        sys.stdout.write(
            f"{name}\n  distribution: {info.distribution} {info.version}\n"
            f"  entry point:  {info.target}\n  hooks:        {hooks}\n  status:       {state}\n"
        )
    missing = sorted(set(active) - set(found))
    for name in missing:
        sys.stdout.write(f"{name}\n  status:       configured but NOT installed\n")
    return 1 if missing else 0


def passwd(argv: Sequence[str]) -> int:
    """Delegate to the auth_ledger plugin, which owns the hash formats."""
    try:
        ledger = importlib.import_module("midge_auth_ledger")
    except ImportError:
        sys.stderr.write(
            "midge passwd needs the auth_ledger plugin: pip install midge-auth-ledger\n"
        )
        return 2
    result: int = ledger.main(list(argv))
    return result
