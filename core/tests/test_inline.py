"""The inline client and embedding: ``async with Broker()``, publish, subscribe (iterator and
callback), unsubscribe and inject_packet, all inside one anyio program, with real MQTT
clients on loopback sockets. Also: a fan-out encodes each distinct wire form once.
"""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from midge import Broker, BrokerSettings, ListenerSettings, Message, Settings, hookimpl
from midge.codec import (
    ConnAck,
    Connect,
    Decoder,
    Packet,
    Publish,
    Role,
    SubAck,
    Subscribe,
    Subscription,
    encode,
)

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def settings() -> Settings:
    listener = ListenerSettings(host="127.0.0.1", port=0, allow_anonymous=True)
    return Settings(broker=BrokerSettings(sys_interval=0), listeners=(listener,))


class NoSecrets:
    """Nobody may publish anything; nobody may read secret/#."""

    @hookimpl
    def on_acl_check(self, client: Any, topic: str, write: bool) -> bool | None:
        if write or topic.startswith("secret/"):
            return False
        return None


class Raw:
    """An MQTT 3.1.1 client on an anyio TCP stream."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.decoder = Decoder(Role.CLIENT, protocol_level=4)

    @classmethod
    async def connect(cls, broker: Broker, client_id: str, topic_filter: str = "") -> Raw:
        stream = await anyio.connect_tcp("127.0.0.1", broker.addresses[0][1])
        raw = cls(stream)
        await raw.send(Connect(client_id))
        assert isinstance(await raw.recv(), ConnAck)
        if topic_filter:
            await raw.send(Subscribe(1, [Subscription(topic_filter, 0)]))
            assert await raw.recv() == SubAck(1, [0])
        return raw

    async def send(self, packet: Packet) -> None:
        await self.stream.send(encode(packet, 4))

    async def recv(self, timeout: float = 3) -> Packet:
        with anyio.fail_after(timeout):
            while (packet := self.decoder.next_packet()) is None:
                self.decoder.feed(await self.stream.receive())
            return packet

    async def nothing(self, wait: float = 0.3) -> None:
        with anyio.move_on_after(wait):
            packet = await self.recv(wait + 1)
            raise AssertionError(f"unexpected {packet!r}")


async def test_inline_publish_bypasses_acl_and_recipients_acl_applies() -> None:
    async with Broker(settings(), plugins=[("acl", NoSecrets())]) as broker:
        reader = await Raw.connect(broker, "reader", "#")
        assert await broker.publish("secret/x", b"hidden") == 1  # routed, then refused
        assert await broker.publish("open/x", "visible", qos=1) == 1
        got = await reader.recv()
        assert isinstance(got, Publish) and (got.topic, got.payload) == ("open/x", b"visible")
        await reader.nothing()
        # a client may not publish (the ACL says so), the inline client may
        writer = await Raw.connect(broker, "writer")
        await writer.send(Publish("open/y", b"from a client"))
        await reader.nothing()


async def test_inline_subscribe_iterates_sys_and_retained_messages() -> None:
    async with Broker(settings()) as broker:
        await broker.publish("$SYS/custom/state", b"retained", retain=True)
        async with broker.subscribe("$SYS/custom/#") as messages:
            first = await messages.get()
            assert (first.topic, first.payload, first.retain) == (
                "$SYS/custom/state", b"retained", True)
            await broker.publish("$SYS/custom/live", b"now")
            with anyio.fail_after(3):
                async for message in messages:
                    assert (message.topic, message.payload) == ("$SYS/custom/live", b"now")
                    break
        assert await broker.publish("$SYS/custom/live", b"later") == 0  # unsubscribed


async def test_callback_subscription_and_unsubscribe() -> None:
    async with Broker(settings()) as broker:
        seen: list[bytes] = []
        arrived = anyio.Event()

        async def callback(message: Message) -> None:
            seen.append(message.payload)
            arrived.set()

        sub = broker.subscribe("cb/+", callback=callback)
        await broker.publish("cb/1", b"one")
        with anyio.fail_after(3):
            await arrived.wait()
        assert await broker.unsubscribe(sub) == 1
        assert await broker.publish("cb/2", b"two") == 0
        assert seen == [b"one"]
        with pytest.raises(TypeError):
            sub.__aiter__()


async def test_inject_packet_runs_as_if_the_client_sent_it() -> None:
    async with Broker(settings()) as broker:
        reader = await Raw.connect(broker, "reader", "inj/#")
        await Raw.connect(broker, "puppet")
        await broker.inject_packet("puppet", Publish("inj/t", b"injected"))
        got = await reader.recv()
        assert isinstance(got, Publish) and got.payload == b"injected"
        with pytest.raises(LookupError):
            await broker.inject_packet("nobody", Publish("inj/t", b"x"))
        with pytest.raises(ValueError):
            await broker.inject_packet("puppet", Connect("again"))


async def test_a_fan_out_encodes_each_wire_form_once() -> None:
    async with Broker(settings()) as broker:
        readers = [await Raw.connect(broker, f"r{n}", "fan/#") for n in range(20)]
        message = Message("fan/t", b"x" * 100)
        assert broker.engine.route(message) == 20
        for reader in readers:
            got = await reader.recv()
            assert isinstance(got, Publish) and got.payload == b"x" * 100
        # twenty 3.1.1 subscribers at QoS 0 share one wire form, encoded once
        assert len(message._wire) == 1
