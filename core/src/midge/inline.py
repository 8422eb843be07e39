"""The inline client: publish, subscribe and inject packets from the embedding program.

The rule: inline publishes bypass ACL (they are the operator's own) and may use
``$``-topics; what they deliver to clients is still checked against the recipients'
ACL. Inline subscribers never slow routing: each has a bounded buffer, and a message
that does not fit is dropped and counted.
"""

from __future__ import annotations

import inspect
import itertools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from .codec import Connect, Packet, Properties, Subscription, check_topic_filter, check_topic_name
from .message import Message
from .topics import SubscriptionTrie

if TYPE_CHECKING:
    from .broker import Broker
    from .connection import Connection
    from .plugins import Hooks
    from .stats import Stats
    from .topics import RetainedIndex

log = logging.getLogger("midge.inline")

Callback = Callable[[Message], Awaitable[None] | None]


class InlineSubscription:
    """Messages matching one topic filter, as an async iterator or through a callback.

    ``async with broker.subscribe("a/#") as messages: async for m in messages: ...``
    """

    def __init__(self, broker: Broker, key: str, topic_filter: str, qos: int,
                 callback: Callback | None, buffer: int) -> None:
        self.broker = broker
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
                self.broker.hooks.defer_awaitable("inline callback", result)
            return
        assert self._send is not None
        try:
            self._send.send_nowait(message)
        except anyio.WouldBlock:
            self.dropped += 1
            self.broker.stats.messages_dropped += 1
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            pass

    def close(self) -> None:
        self.broker.remove_inline(self)
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


class InlineMixin:
    """Inline publishing and subscribing for ``Broker`` (a mixin; ``self`` is the broker)."""

    if TYPE_CHECKING:
        retained: RetainedIndex[Message]
        clients: dict[str, Connection]
        handlers: dict[type[Any], Any]
        hooks: Hooks
        stats: Stats

        def route(self, message: Message, publisher: Connection | None = None) -> int: ...

    def __init__(self) -> None:
        self.inline_subscribers: dict[str, InlineSubscription] = {}
        self._inline_trie = SubscriptionTrie()
        self._inline_ids = itertools.count(1)

    async def publish(self, topic: str, payload: bytes | str = b"", qos: int = 0,
                      retain: bool = False, properties: Properties | None = None) -> int:
        """Publish as the broker itself; returns the number of recipients."""
        check_topic_name(topic)
        if qos not in (0, 1, 2):
            raise ValueError(f"qos must be 0, 1 or 2, not {qos!r}")
        data = payload.encode() if isinstance(payload, str) else bytes(payload)
        return self.route(Message(topic, data, qos, retain, properties))

    def subscribe(self, topic_filter: str, qos: int = 2, *,
                  callback: Callback | None = None, buffer: int = 1000) -> InlineSubscription:
        """Receive messages matching ``topic_filter`` (retained ones first).

        Use as an async context manager and iterate it, or give ``callback`` (a function
        or coroutine function called with each Message) and keep the result to
        ``unsubscribe`` later.
        """
        check_topic_filter(topic_filter)
        key = f"inline:{next(self._inline_ids)}"
        sub = InlineSubscription(
            self, key, topic_filter, qos, callback, buffer  # type: ignore[arg-type]
        )
        self.inline_subscribers[key] = sub
        self._inline_trie.add(key, Subscription(topic_filter, qos))
        for message in self.retained.match(topic_filter):
            sub.put(message)
        return sub

    async def unsubscribe(self, target: InlineSubscription | str) -> int:
        """Remove an inline subscription, or every one with the given topic filter."""
        subs = [target] if isinstance(target, InlineSubscription) else [
            sub for sub in self.inline_subscribers.values() if sub.topic_filter == target
        ]
        for sub in subs:
            sub.close()
        return len(subs)

    def remove_inline(self, sub: InlineSubscription) -> None:
        if self.inline_subscribers.pop(sub.key, None) is not None:
            self._inline_trie.remove(sub.key, sub.topic_filter)

    def deliver_inline(self, message: Message) -> int:
        count = 0
        for route in self._inline_trie.match(message.topic):
            sub = self.inline_subscribers.get(route.client_id)
            if sub is not None:
                sub.put(message)
                count += 1
        return count

    async def inject_packet(self, client: Connection | str, packet: Packet) -> None:
        """Handle ``packet`` as if the connected ``client`` (or client id) had sent it."""
        conn = self.clients.get(client) if isinstance(client, str) else client
        if conn is None or not conn.connected:
            raise LookupError(f"no connected client {client!r}")
        if isinstance(packet, Connect):
            raise ValueError("a CONNECT cannot be injected into a connected client")
        handler: Any = self.handlers.get(type(packet))
        if handler is None:
            raise ValueError(f"a client does not send {type(packet).__name__}")
        pending = handler(conn, packet)
        if pending is not None:
            await pending
