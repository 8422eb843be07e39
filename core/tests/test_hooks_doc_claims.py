"""Claims docs/hooks.md makes about on_published and on_acl_check, checked as behaviour.

``on_published`` fires for a client's accepted PUBLISH, a will (with the client that left
it) and an inline ``broker.publish`` (client None), not for ``broker.deliver`` nor for a
rejected PUBLISH. The ``on_acl_check`` example of docs/hooks.md, run as written, gives a
user named ``+`` nothing while ``alice`` gets her own topics.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

from midge import (
    Broker,
    BrokerSettings,
    ListenerSettings,
    Message,
    RejectPublish,
    Settings,
    hookimpl,
)
from midge.codec import (
    ConnAck,
    Connect,
    Decoder,
    Publish,
    Role,
    SubAck,
    Subscribe,
    Subscription,
    Will,
    encode,
)

ROOT = Path(__file__).resolve().parents[2]
Factory = Callable[..., Any]


class Published:
    def __init__(self) -> None:
        self.seen: list[tuple[str | None, str]] = []

    @hookimpl
    def on_publish(self, client: Any, packet: Publish) -> None:
        if packet.topic == "rejected":
            raise RejectPublish()

    @hookimpl
    def on_published(self, client: Any, packet: Publish) -> None:
        self.seen.append((None if client is None else client.client_id, packet.topic))


async def _client(port: int, client_id: str, will: Will | None = None) -> Any:
    stream = await anyio.connect_tcp("127.0.0.1", port)
    decoder = Decoder(Role.CLIENT, protocol_level=4)
    await stream.send(encode(Connect(client_id, will=will), 4))
    with anyio.fail_after(3):
        while (packet := decoder.next_packet()) is None:
            decoder.feed(await stream.receive())
    assert isinstance(packet, ConnAck) and packet.reason_code == 0
    return stream


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_on_published_fires_for_clients_wills_and_inline_publishes_only() -> None:
    plugin = Published()
    settings = Settings(broker=BrokerSettings(sys_interval=0),
                        listeners=(ListenerSettings(port=0, allow_anonymous=True),))
    async with Broker(settings, plugins=[("published", plugin)]) as broker:
        port = broker.addresses[0][1]
        writer = await _client(port, "writer")
        await writer.send(encode(Publish("from/client", b"x"), 4))
        await writer.send(encode(Publish("rejected", b"x"), 4))
        leaver = await _client(port, "leaver", Will("will/topic", b"gone", 0, False))
        await leaver.aclose()  # no DISCONNECT: the will is published
        await broker.publish("from/inline", b"x")
        broker.deliver(Message("from/elsewhere", b"x", 0, False), "node-2")
        with anyio.fail_after(3):
            while len(plugin.seen) < 3:
                await anyio.sleep(0.01)
        await anyio.sleep(0.1)
        await writer.aclose()
    assert sorted(plugin.seen, key=str) == sorted(
        [("writer", "from/client"), ("leaver", "will/topic"), (None, "from/inline")], key=str
    )


def acl_example() -> type:
    """The on_acl_check example of docs/hooks.md, as a plugin class."""
    text = (ROOT / "docs" / "hooks.md").read_text(encoding="utf-8")
    section = text.split("\n## on_acl_check\n", 1)[1].split("\n## ", 1)[0]
    [code] = [block for block in re.findall(r"```python\n(.*?)```", section, re.DOTALL)
              if "@hookimpl" in block]
    namespace: dict[str, Any] = {"hookimpl": hookimpl}
    exec("class Example:\n" + textwrap.indent(code, "    "), namespace)
    return namespace["Example"]  # type: ignore[no-any-return]


class Everyone:
    @hookimpl
    def on_connect_authenticate(self) -> bool:
        return True


@pytest.mark.parametrize(("username", "topic_filter", "granted"), [
    ("alice", "users/alice/#", True),
    ("alice", "users/bob/#", False),
    ("+", "users/+/#", False),
    ("a/b", "users/a/b/#", False),
])
def test_the_acl_example_gives_wildcard_user_names_nothing(
    broker_factory: Factory, raw_factory: Factory, username: str, topic_filter: str,
    granted: bool
) -> None:
    running = broker_factory(allow_anonymous=False,
                             plugins=[("example", acl_example()()), ("all", Everyone())])
    raw = raw_factory(port=running.port)
    assert raw.connect("c", username=username, password=b"pw") == ConnAck(0)
    raw.send(Subscribe(1, [Subscription(topic_filter, 0)]))
    assert raw.recv() == SubAck(1, [0 if granted else 0x80])
