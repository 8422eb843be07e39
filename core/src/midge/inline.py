"""The inline client: publish, subscribe and inject packets from the embedding program.

The rule: inline publishes bypass ACL (they are the operator's own) and may use
``$``-topics; what they deliver to clients is still checked against the recipients'
ACL. Inline subscribers are sinks of the engine's router and never slow routing: each
has a bounded buffer, and a message that does not fit is dropped and counted.
"""

from __future__ import annotations

import inspect
import itertools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from types import TracebackType
from typing import TYPE_CHECKING

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from .codec import PROTOCOL_5, Packet, Properties, check_topic_filter, check_topic_name
from .listeners import settle
from .message import Message

if TYPE_CHECKING:
    from .api import Client
    from .engine import Engine

log = logging.getLogger("midge.inline")

Callback = Callable[[Message], Awaitable[None] | None]


class InlineSubscription:
    """Messages matching one topic filter, as an async iterator or through a callback.

    ``async with broker.subscribe("a/#") as messages: async for m in messages: ...``
    """

    def __init__(self, inline: Inline, key: str, topic_filter: str, qos: int,
                 callback: Callback | None, buffer: int) -> None:
        self._inline = inline
        self.key = key
        self.topic_filter = topic_filter
        self.qos = qos
        self.callback = callback
        #: messages that did not fit in the buffer
        self.dropped = 0
        self._send: MemoryObjectSendStream[Message] | None = None
        self._receive: MemoryObjectReceiveStream[Message] | None = None
        if callback is None:
            self._send, self._receive = anyio.create_memory_object_stream[Message](buffer)

    def put(self, message: Message) -> None:
        if self.callback is not None:
            try:
                result = self.callback(message)
            except Exception:
                log.exception("inline callback for %s failed", self.topic_filter)
                return
            if inspect.isawaitable(result):
                self._inline.engine.hooks.defer("inline", "inline callback", result)
            return
        assert self._send is not None
        try:
            self._send.send_nowait(message)
        except anyio.WouldBlock:
            self.dropped += 1
            self._inline.engine.stats.dropped("inline subscriber buffer full")
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            pass

    def close(self) -> None:
        self._inline.remove(self)
        if self._send is not None:
            self._send.close()

    async def __aenter__(self) -> InlineSubscription:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()
        if self._receive is not None:
            await self._receive.aclose()

    def __aiter__(self) -> AsyncIterator[Message]:
        if self._receive is None:
            raise TypeError("a callback subscription has no messages to iterate")
        return self._receive.__aiter__()

    async def get(self) -> Message:
        """The next message."""
        if self._receive is None:
            raise TypeError("a callback subscription has no messages to receive")
        return await self._receive.receive()


class Inline:
    """Inline publishing, subscribing and packet injection over an engine."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        #: inline subscriptions by key
        self.subscriptions: dict[str, InlineSubscription] = {}
        self._ids = itertools.count(1)

    def publish(self, topic: str, payload: bytes | str = b"", qos: int = 0,
                retain: bool = False, properties: Properties | None = None) -> int:
        """Publish as the broker itself; returns the number of recipients."""
        check_topic_name(topic)
        if qos not in (0, 1, 2):
            raise ValueError(f"qos must be 0, 1 or 2, not {qos!r}")
        data = payload.encode() if isinstance(payload, str) else bytes(payload)
        engine = self.engine
        message = Message(topic, data, qos, retain, properties, "", engine.clock())
        delivered = engine.route(message)
        hooks = engine.hooks
        if hooks.on_published is not None:
            hooks.on_published(None, message.publish(PROTOCOL_5, qos, retain))
        return delivered

    def deliver(self, message: Message, node: str) -> int:
        """Deliver a message published on another node to local subscribers only."""
        message.node = node
        return self.engine.route(message)

    def subscribe(self, topic_filter: str, qos: int = 2, *,
                  callback: Callback | None = None, buffer: int = 1000) -> InlineSubscription:
        check_topic_filter(topic_filter)
        key = f"inline:{next(self._ids)}"
        sub = InlineSubscription(self, key, topic_filter, qos, callback, buffer)
        self.subscriptions[key] = sub
        router = self.engine.router
        router.add_sink(key, topic_filter, sub.put)
        for message in router.retained.match(topic_filter):
            sub.put(message)
        return sub

    def unsubscribe(self, target: InlineSubscription | str) -> int:
        subs = [target] if isinstance(target, InlineSubscription) else [
            sub for sub in self.subscriptions.values() if sub.topic_filter == target
        ]
        for sub in subs:
            sub.close()
        return len(subs)

    def remove(self, sub: InlineSubscription) -> None:
        if self.subscriptions.pop(sub.key, None) is not None:
            self.engine.router.remove_sink(sub.key, sub.topic_filter)

    async def inject_packet(self, client: Client | str, packet: Packet) -> None:
        """Handle ``packet`` as if the connected ``client`` (or client id) had sent it."""
        cid = client if isinstance(client, str) else client.client_id
        conn = self.engine.clients.get(cid)
        if conn is None:
            raise LookupError(f"no connected client {cid!r}")
        await settle(conn, self.engine.inject(conn, packet))
