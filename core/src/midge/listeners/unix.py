"""Unix socket listeners (``type = "unix"``): local services connect through a file.

The rule: the socket file is the broker's while it runs. At bind a stale file (left by a
broker that died) is replaced, but a live one (a broker answering on it) or a path that
is not a socket is an error; the file gets ``mode``; at shutdown it is removed, unless
another process has replaced it meanwhile. Connections use the plain driver: a Unix
socket has no PROXY header or TLS to strip.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import socket
import stat
from collections.abc import Callable

import anyio
import sniffio
from anyio.abc import TaskGroup

from ..config import ListenerSettings
from ._base import Acceptor, Listener
from ._drivers import ACCEPT_BACKLOG
from .tcp import AsyncioListener, StreamListener, asyncio_factory

log = logging.getLogger("midge.listeners")


def clear_stale(path: str) -> None:
    """Remove ``path`` if it is a socket nobody answers on; raise OSError if it is in
    use or not a socket."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(info.st_mode):
        raise OSError(errno.EEXIST, f"{path} exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(1.0)
        probe.connect(path)
    except (ConnectionRefusedError, FileNotFoundError):
        log.info("removing the stale socket file %s", path)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        return
    except OSError as exc:
        raise OSError(exc.errno, f"{path}: cannot check whether it is in use: "
                                 f"{exc.strerror}") from None
    finally:
        probe.close()
    raise OSError(errno.EADDRINUSE, f"{path} is in use by a running process")


def _remover(path: str, inode: int) -> Callable[[], None]:
    def remove() -> None:
        with contextlib.suppress(OSError):
            if os.lstat(path).st_ino == inode:
                os.unlink(path)
    return remove


async def bind(acceptor: Acceptor, spec: ListenerSettings) -> Listener:
    """Bind the socket file ``spec.path`` (accepting starts with ``start``)."""
    path = spec.path
    try:
        clear_stale(path)
        if sniffio.current_async_library() == "asyncio":
            loop = asyncio.get_running_loop()
            holder: list[TaskGroup] = []
            server = await loop.create_unix_server(
                asyncio_factory(acceptor, spec, holder, None), path,
                backlog=ACCEPT_BACKLOG, start_serving=False,
            )
            os.chmod(path, spec.mode)
            remove = _remover(path, os.lstat(path).st_ino)
            return AsyncioListener(server, holder, [(path, 0)], closed=remove)
        listener = await anyio.create_unix_listener(path, mode=spec.mode,
                                                    backlog=ACCEPT_BACKLOG)
        remove = _remover(path, os.lstat(path).st_ino)
        return StreamListener(acceptor, spec, [listener], None, closed=remove,
                              addresses=[(path, 0)])
    except OSError as exc:
        raise OSError(exc.errno, f"cannot listen on unix:{path}: {exc.strerror}") from exc
