"""The ``midge`` command: parse arguments, configure logging, run the broker.

The rule: this is the only module that writes to stdout/stderr directly or decides the
process exit status (0 clean stop, 1 runtime failure such as a busy port, 2 bad
arguments or configuration).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import resource
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio

from ._version import __version__
from .broker import Broker
from .config import ConfigError, Settings, load
from .hooks import PluginError
from .hooks.loader import discover
from .records import StorageError

#: without a config file, this storage plugin is activated when it is installed
DEFAULT_STORAGE = "storage_sqlite"
DEFAULT_STORAGE_PATH = "midge.db"

log = logging.getLogger("midge")


class JsonFormatter(logging.Formatter):
    """One JSON object per log line."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="midge", description="midge: an MQTT 5.0 / 3.1.1 / 3.1 broker.",
        epilog="other commands: 'midge plugins [-c FILE]' lists installed plugins; "
        "'midge passwd' prints a password hash for the auth_ledger plugin",
    )
    parser.add_argument("-c", "--config", metavar="FILE", help="TOML configuration file")
    parser.add_argument(
        "-p", "--port", type=int, metavar="N",
        help="TCP port (without -c: listen on 127.0.0.1:N; with -c: replaces the port of "
        "the first tcp listener)",
    )
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="more logging (-v info, -vv debug)"
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="log warnings and errors only")
    parser.add_argument(
        "--no-storage", action="store_true",
        help="without -c: keep the state in memory even when midge-storage-sqlite is installed",
    )
    parser.add_argument(
        "--log-format", choices=("text", "json"), default="text", help="log line format"
    )
    parser.add_argument("--version", action="version", version=f"midge {__version__}")
    return parser


def configure_logging(verbose: int, quiet: bool, fmt: str) -> None:
    level = logging.WARNING if quiet else logging.DEBUG if verbose >= 2 else logging.INFO
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # per-client lines are for -v; the default keeps the broker's lifecycle and warnings
    logging.getLogger("midge.clients").setLevel(
        logging.NOTSET if verbose or quiet else logging.WARNING
    )


def settings_from(args: argparse.Namespace) -> Settings:
    if args.config:
        settings = load(args.config)
        if args.port is not None:
            settings = settings.with_port(args.port)
        return settings
    settings = Settings.default(args.port if args.port is not None else 1883)
    log.warning(
        "no configuration file: listening on 127.0.0.1:%d only, anonymous clients allowed "
        "(use -c FILE to configure listeners and authentication)",
        settings.listeners[0].port,
    )
    if not args.no_storage and DEFAULT_STORAGE in discover():
        # the embedded default: installed, it keeps the state beside the working directory
        settings = dataclasses.replace(
            settings, plugins={DEFAULT_STORAGE: {"path": DEFAULT_STORAGE_PATH}})
        log.info("keeping the broker's state in %s (storage_sqlite; --no-storage: in memory)",
                 Path(DEFAULT_STORAGE_PATH).resolve())
    return settings


def raise_fd_limit() -> None:
    """Many idle clients need many descriptors: lift the soft limit to the hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else 1 << 20
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


async def serve(broker: Broker) -> None:
    async with anyio.create_task_group() as tg:

        async def watch_signals() -> None:
            with anyio.open_signal_receiver(
                signal.SIGTERM, signal.SIGINT, signal.SIGHUP
            ) as signals:
                async for signum in signals:
                    log.info("received %s", signal.Signals(signum).name)
                    if signum == signal.SIGHUP:
                        broker.reload()
                        continue
                    broker.shutdown()
                    return

        tg.start_soon(watch_signals)
        await broker.run()
        tg.cancel_scope.cancel()


def _backend_options() -> dict[str, Any]:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return {}
    return {"use_uvloop": True}


def _leaves(group: BaseExceptionGroup[Any]) -> list[Exception]:
    found: list[Exception] = []
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            found.extend(_leaves(exc))
        elif isinstance(exc, Exception):
            found.append(exc)
    return found


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["plugins"]:
        from .cli_plugins import list_plugins

        return list_plugins(argv[1:])
    if argv[:1] == ["passwd"]:
        from .cli_plugins import passwd

        return passwd(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(args.verbose, args.quiet, args.log_format)
    if args.port is not None and not 0 <= args.port <= 65535:
        parser.error(f"--port {args.port} is not in 0..65535")
    try:
        settings = settings_from(args)
    except ConfigError as exc:
        sys.stderr.write(f"midge: configuration error: {exc}\n")
        return 2
    try:
        broker = Broker(settings)
    except PluginError as exc:
        sys.stderr.write(f"midge: {settings.source}: {exc}\n")
        return 2
    raise_fd_limit()
    log.info("midge %s starting", __version__)
    failures: list[Exception] = []
    try:
        anyio.run(serve, broker, backend_options=_backend_options())
    except* (OSError, StorageError) as group:
        # task groups wrap a bind failure in (nested) exception groups
        failures.extend(_leaves(group))
    except* KeyboardInterrupt:
        pass
    if failures:
        log.error("cannot start: %s", failures[0])
        return 1
    return 0
