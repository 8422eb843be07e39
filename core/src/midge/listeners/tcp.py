"""TCP listeners (``type = "tcp"``), and the bound-socket listeners every socket
transport shares: asyncio servers on the asyncio backend, anyio listeners elsewhere.

The rule: binding and accepting are the same for every transport; what differs is the
driver a new socket gets. Without layers (plain TCP, a plain Unix socket) it is the
direct driver of ``_drivers``, with no task per connection; with layers (PROXY header,
TLS, WebSocket) a stacked driver of ``_stacked``, whose layers ``make_layers`` builds
afresh for each connection.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import anyio
import sniffio
from anyio.abc import ByteStream, SocketAttribute, TaskGroup

from ..config import ListenerSettings
from ._base import Acceptor, Listener, bind_error
from ._drivers import ACCEPT_BACKLOG, AsyncioDriver, StreamDriver, peer
from ._layers import Layer, Pipeline
from ._stacked import LayerFactory, StackedAsyncioDriver, StackedStreamDriver
from .proxy import ProxyLayer

log = logging.getLogger("midge.listeners")


def proxy_layers(spec: ListenerSettings) -> list[Layer]:
    """The first layers of ``spec``'s stack: a PROXY header reader, when configured."""
    return [ProxyLayer()] if spec.proxy_protocol else []


async def bind(acceptor: Acceptor, spec: ListenerSettings) -> Listener:
    """Bind ``spec``'s address (accepting starts with ``start``)."""
    make = (lambda: proxy_layers(spec)) if spec.proxy_protocol else None
    return await bind_stack(acceptor, spec, make)


async def bind_stack(acceptor: Acceptor, spec: ListenerSettings,
                     make_layers: LayerFactory | None,
                     reload: Callable[[], None] | None = None) -> Listener:
    """Bind ``spec``'s TCP address for connections with ``make_layers``' layers (None:
    plain MQTT); ``reload`` is what SIGHUP does to the listener."""
    try:
        if sniffio.current_async_library() == "asyncio":
            loop = asyncio.get_running_loop()
            holder: list[TaskGroup] = []
            server = await loop.create_server(
                asyncio_factory(acceptor, spec, holder, make_layers), spec.host, spec.port,
                backlog=ACCEPT_BACKLOG, reuse_address=True, start_serving=False,
            )
            addresses = [(str(s.getsockname()[0]), int(s.getsockname()[1]))
                         for s in server.sockets]
            return AsyncioListener(server, holder, addresses, reload)
        multi = await anyio.create_tcp_listener(local_host=spec.host, local_port=spec.port,
                                                backlog=ACCEPT_BACKLOG)
        return StreamListener(acceptor, spec, list(multi.listeners), make_layers, reload)
    except OSError as exc:
        # name the address: with several listeners "address in use" is a riddle
        raise bind_error(exc, spec.host, spec.port) from exc


def asyncio_factory(acceptor: Acceptor, spec: ListenerSettings, holder: list[TaskGroup],
                    make_layers: LayerFactory | None) -> Callable[[], asyncio.Protocol]:
    """The protocol factory of an asyncio server (``holder`` gets the task group)."""
    if make_layers is None:
        return lambda: AsyncioDriver(acceptor, spec, holder[0])
    return lambda: StackedAsyncioDriver(acceptor, spec, holder[0], Pipeline(make_layers()))


# -- asyncio: one Protocol object per connection -------------------------------------------


class AsyncioListener:
    """A bound asyncio server; it serves once ``start`` is called."""

    def __init__(self, server: asyncio.Server, groups: list[TaskGroup],
                 addresses: list[tuple[str, int]],
                 reload: Callable[[], None] | None = None,
                 closed: Callable[[], None] | None = None) -> None:
        self._server = server
        #: the task group drivers start tasks in, once ``start`` has given it
        self._groups = groups
        self.addresses = addresses
        self._reload = reload
        self._closed = closed

    async def start(self, task_group: TaskGroup) -> None:
        self._groups.append(task_group)
        await self._server.start_serving()

    async def aclose(self) -> None:
        self._server.close()
        if self._closed is not None:
            self._closed()
            self._closed = None

    def reload(self) -> None:
        if self._reload is not None:
            self._reload()


# -- anyio streams: a reader task and a writer task per connection -------------------------


class StreamListener:
    """Bound anyio listeners (several sockets for "localhost", say); they accept once
    ``start`` is called."""

    def __init__(self, acceptor: Acceptor, spec: ListenerSettings, listeners: list[Any],
                 make_layers: LayerFactory | None,
                 reload: Callable[[], None] | None = None,
                 closed: Callable[[], None] | None = None,
                 addresses: list[tuple[str, int]] | None = None) -> None:
        self._acceptor = acceptor
        self._spec = spec
        self._listeners = listeners
        self._make_layers = make_layers
        self._reload = reload
        self._closed = closed
        self._scope = anyio.CancelScope()
        self.addresses = addresses if addresses is not None else [
            peer(listener.extra(SocketAttribute.local_address)) for listener in listeners
        ]

    async def start(self, task_group: TaskGroup) -> None:
        # one loop per socket (an IPv4 and an IPv6 one for "localhost", say)
        for listener in self._listeners:
            task_group.start_soon(self._accept_loop, listener, task_group)

    def _driver(self, stream: ByteStream) -> Callable[[], Any]:
        if self._make_layers is None:
            return StreamDriver(self._acceptor, self._spec, stream).run
        return StackedStreamDriver(self._acceptor, self._spec, stream,
                                   Pipeline(self._make_layers())).run

    async def _accept_loop(self, listener: Any, task_group: TaskGroup) -> None:
        with self._scope:
            while True:
                try:
                    stream = await listener.accept()
                except anyio.ClosedResourceError:
                    return  # the listener was closed: shutting down
                except OSError as exc:
                    log.error("accept on %s failed: %s", self._spec.label, exc)
                    await anyio.sleep(0.1)
                    continue
                task_group.start_soon(self._driver(stream))

    async def aclose(self) -> None:
        self._scope.cancel()
        for listener in self._listeners:
            await listener.aclose()
        if self._closed is not None:
            self._closed()
            self._closed = None

    def reload(self) -> None:
        if self._reload is not None:
            self._reload()
