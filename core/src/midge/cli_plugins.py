"""``midge plugins`` and ``midge passwd``: the plugin-related commands.

The rule: listing never starts anything. Without ``-c`` it loads each plugin only to read
which hooks it implements; with ``-c FILE`` it is the pre-flight check of that file: every
plugin the file activates is built with its table and its hooks registered, as a start
would, and every problem is reported under the plugin's name (exit status 2). A plugin
that fails to load is reported, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from .config import ConfigError, load
from .hooks import Check, PluginError, discover, preflight


def list_plugins(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="midge plugins",
        description="List installed midge plugins; with -c FILE, check every plugin the "
        "file activates (exit status 2 when one cannot start).",
    )
    parser.add_argument("-c", "--config", metavar="FILE",
                        help="build and check the plugins this configuration activates")
    args = parser.parse_args(argv)
    checks: dict[str, Check] = {}
    source = args.config
    if args.config:
        try:
            settings = load(args.config)
        except ConfigError as exc:
            sys.stderr.write(f"midge: configuration error: {exc}\n")
            return 2
        checks = {check.name: check for check in preflight(settings.plugins)}
    found = discover()
    if not found:
        sys.stdout.write("no midge plugins are installed\n")
    for name, info in sorted(found.items()):
        check = checks.get(name)
        if check is not None:
            hooks = ", ".join(check.hooks) or "(none)"
        else:
            try:
                hooks = ", ".join(info.hooks()) or "(none)"
            except PluginError as exc:
                hooks = f"cannot load: {exc}"
        if check is not None:
            state = f"active (#{check.position})" + (", CANNOT START" if check.errors else "")
        elif args.config:
            state = "inactive"
        else:
            state = "inactive (no -c FILE given)"
        sys.stdout.write(
            f"{name}\n  distribution: {info.distribution} {info.version}\n"
            f"  entry point:  {info.target}\n  hooks:        {hooks}\n  status:       {state}\n"
        )
        if check is not None:
            _problems(check)
    for check in checks.values():
        if check.info is None:
            sys.stdout.write(f"{check.name}\n  status:       configured but NOT installed\n")
    failed = [check for check in checks.values() if check.errors]
    for check in failed:
        for error in check.errors:
            sys.stderr.write(f"midge: {source}: plugin {check.name!r}: {error}\n")
    if args.config:
        if not any("on_connect_authenticate" in check.hooks for check in checks.values()):
            sys.stdout.write(
                "note: no active plugin authenticates (on_connect_authenticate): with this "
                "file every connection will be refused\n"
            )
        if failed:
            sys.stderr.write(f"midge: {source}: {len(failed)} of {len(checks)} configured "
                             "plugins cannot start\n")
            return 2
        sys.stdout.write(f"{source}: {len(checks)} configured plugins ready\n")
    return 0


def _problems(check: Check) -> None:
    for error in check.errors:
        sys.stdout.write(f"  error:        {error}\n")
    for warning in check.warnings:
        sys.stdout.write(f"  warning:      {warning}\n")


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
