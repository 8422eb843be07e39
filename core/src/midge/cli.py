"""The ``midge`` command: parse arguments, configure logging, run the broker.

The rule: this is the only module that writes to stdout/stderr directly or decides the
process exit status (0 clean stop, 1 runtime failure such as a busy port, 2 bad
arguments or configuration).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import logging
import resource
import signal
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import TaskStatus

from ._version import __version__
from .broker import Broker
from .config import ConfigError, Settings, load
from .hooks import PluginError, discover
from .logs import JsonFormatter, RateLimit
from .records import StorageError
from .systemd import Notifier

#: without a config file, this storage plugin is activated when it is installed
DEFAULT_STORAGE = "storage_sqlite"
DEFAULT_STORAGE_PATH = "midge.db"

log = logging.getLogger("midge")

#: the plugin ``--trace`` activates (with its defaults: credentials redacted)
TRACE_PLUGIN = "debug"


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
        "--log-format", choices=("text", "json"), default="text",
        help="log line format (json: one object per line, with client_id, listener and "
        "address fields on lines about a client)",
    )
    parser.add_argument(
        "--trace", action="store_true",
        help="log every MQTT packet in and out (the debug plugin with its defaults: "
        "payloads hidden, passwords and authentication data redacted)",
    )
    parser.add_argument("--version", action=VersionAction, nargs=0,
                        help="show the version of midge and of the installed plugins")
    return parser


class VersionAction(argparse.Action):
    """``--version``: midge's version, then each installed plugin's distribution."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        from .hooks import discover

        lines = [f"midge {__version__}"]
        for name, info in sorted(discover().items()):
            lines.append(f"  plugin {name}: {info.distribution} {info.version}")
        sys.stdout.write("\n".join(lines) + "\n")
        parser.exit()


def configure_logging(verbose: int, quiet: bool, fmt: str) -> RateLimit:
    """Log to stderr; repeated warnings are rate limited (see ``midge.logs``)."""
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
    return RateLimit().attach(handler)


def settings_from(args: argparse.Namespace) -> Settings:
    if args.config:
        settings = load(args.config)
        if args.port is not None:
            settings = settings.with_port(args.port)
        return with_trace(settings) if args.trace else settings
    settings = Settings.default(args.port if args.port is not None else 1883)
    log.warning(
        "no configuration file: listening on 127.0.0.1:%d only, anonymous clients allowed "
        "(use -c FILE to configure listeners and authentication)",
        settings.listeners[0].port,
    )
    if not args.no_storage and DEFAULT_STORAGE in discover():
        # the embedded default: installed, it keeps the state beside the working directory
        settings = replace(settings, plugins={DEFAULT_STORAGE: {"path": DEFAULT_STORAGE_PATH}})
        log.info("keeping the broker's state in %s (storage_sqlite; --no-storage: in memory)",
                 Path(DEFAULT_STORAGE_PATH).resolve())
    return with_trace(settings) if args.trace else settings


def with_trace(settings: Settings) -> Settings:
    """``--trace``: the debug plugin, unless the file configures it already."""
    if TRACE_PLUGIN in settings.plugins:
        return settings
    if TRACE_PLUGIN not in discover():
        raise ConfigError("--trace", "", "needs the debug plugin: pip install midge-debug "
                          "(./plugins/debug from a checkout)")
    return replace(settings, plugins={**settings.plugins, TRACE_PLUGIN: {}})


def raise_fd_limit() -> None:
    """Many idle clients need many descriptors: lift the soft limit to the hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else 1 << 20
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


#: seconds between checks for rate-limited log lines to report
LOG_REPORT_INTERVAL = 5.0


async def serve(broker: Broker, notifier: Notifier | None = None,
                limiter: RateLimit | None = None) -> None:
    """Run the broker until SIGTERM or SIGINT; SIGHUP reloads. With systemd's
    ``$NOTIFY_SOCKET`` set, tell it READY=1 once the listeners are bound and the stored
    state restored, RELOADING=1 and READY=1 around a reload, STOPPING=1 at the end."""
    notifier = notifier or Notifier()
    async with anyio.create_task_group() as tg:

        async def watch_signals() -> None:
            with anyio.open_signal_receiver(
                signal.SIGTERM, signal.SIGINT, signal.SIGHUP
            ) as signals:
                async for signum in signals:
                    log.info("received %s", signal.Signals(signum).name)
                    if signum == signal.SIGHUP:
                        notifier.reloading()
                        await broker.reload()
                        notifier.ready("reloaded")
                        continue
                    notifier.stopping()
                    broker.shutdown()
                    return

        async def run(*, task_status: TaskStatus[Broker] = anyio.TASK_STATUS_IGNORED) -> None:
            await broker.run(task_status=task_status)
            tg.cancel_scope.cancel()  # stopped: the signal watcher goes too

        async def report_suppressed(limiter: RateLimit) -> None:
            while True:
                await anyio.sleep(LOG_REPORT_INTERVAL)
                limiter.tick()

        tg.start_soon(watch_signals)
        if limiter is not None:
            tg.start_soon(report_suppressed, limiter)
        await tg.start(run)  # returns once listeners are bound and restore is done
        addresses = ", ".join(f"{host}:{port}" for host, port in broker.addresses)
        notifier.ready(f"serving on {addresses}")


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
    limiter = configure_logging(args.verbose, args.quiet, args.log_format)
    if args.port is not None and not 0 <= args.port <= 65535:
        parser.error(f"--port {args.port} is not in 0..65535")
    log.info("midge %s starting", __version__)
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
    # the collector's first generation runs every 700 new container objects by default:
    # a broker allocates that many in a fraction of one loop turn's messages (and a
    # storage batch many more), so it collected hundreds of times a second; a server
    # process of ours can afford ten thousand between collections. (Embedded, the
    # host program's own setting is left alone.)
    gc.set_threshold(10_000, 10, 10)
    failures: list[Exception] = []
    try:
        anyio.run(serve, broker, None, limiter, backend_options=_backend_options())
    except* (OSError, StorageError) as group:
        # task groups wrap a bind failure in (nested) exception groups
        failures.extend(_leaves(group))
    except* KeyboardInterrupt:
        pass
    finally:
        limiter.flush_suppressed()
    if failures:
        failure = failures[0]
        # an OSError's text without "[Errno N]": the message already says what failed
        log.error("cannot start: %s", failure.strerror or failure
                  if isinstance(failure, OSError) else failure)
        return 1
    return 0
