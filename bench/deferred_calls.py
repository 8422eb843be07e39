"""How a slow ``async def`` broadcast hook's backlog drains, by ``midge_concurrency``.

The rule: figures for the docs and for comparing versions; never asserted. 100 inline
publishes reach a plugin whose ``async def on_published`` takes 0.2 s; printed per
concurrency: how many calls finished within 1 s, when the last one finished, and the
median QoS 0 round trip of a real client on another topic meanwhile (the broker itself
must stay unaffected). Run: ``python bench/deferred_calls.py`` (about 25 s).
"""

from __future__ import annotations

import statistics
import sys
import time
from typing import Any

import anyio

from midge import Broker, BrokerSettings, ListenerSettings, Settings, hookimpl
from midge.codec import Connect, Decoder, Publish, Role, Subscribe, Subscription, encode

EVENTS = 100
CALL = 0.2


class Slow:
    def __init__(self, concurrency: int) -> None:
        self.midge_concurrency = concurrency
        self.finished: list[float] = []

    @hookimpl
    async def on_published(self, packet: Publish) -> None:
        if packet.topic == "load":
            await anyio.sleep(CALL)
            self.finished.append(time.monotonic())


async def round_trip_ms(port: int, count: int = 50) -> float:
    """Median PUBLISH -> delivery time of a v3.1.1 client subscribed to its own topic."""
    stream = await anyio.connect_tcp("127.0.0.1", port)
    decoder = Decoder(Role.CLIENT, protocol_level=4)

    async def recv() -> Any:
        while (packet := decoder.next_packet()) is None:
            decoder.feed(await stream.receive())
        return packet

    await stream.send(encode(Connect("rtt"), 4))
    await recv()
    await stream.send(encode(Subscribe(1, [Subscription("ping", 0)]), 4))
    await recv()
    times = []
    for _ in range(count):
        start = time.perf_counter()
        await stream.send(encode(Publish("ping", b"x"), 4))
        await recv()
        times.append((time.perf_counter() - start) * 1000)
    await stream.aclose()
    return statistics.median(times)


async def measure(concurrency: int) -> str:
    plugin = Slow(concurrency)
    settings = Settings(broker=BrokerSettings(sys_interval=0),
                        listeners=(ListenerSettings(port=0, allow_anonymous=True),))
    async with Broker(settings, plugins=[("slow", plugin)]) as broker:
        start = time.monotonic()
        for _ in range(EVENTS):
            await broker.publish("load", b"x")
        rtt = await round_trip_ms(broker.addresses[0][1])
        await anyio.sleep(max(0.0, 1 - (time.monotonic() - start)))
        within = len(plugin.finished)
        while len(plugin.finished) < EVENTS:
            await anyio.sleep(0.05)
        last = plugin.finished[-1] - start
    return (f"midge_concurrency={concurrency:<3} {within:3} of {EVENTS} done after 1 s, "
            f"last at {last:5.1f} s; QoS 0 round trip meanwhile: median {rtt:.2f} ms")


def main() -> None:
    for concurrency in (1, 10, 50):
        sys.stdout.write(anyio.run(measure, concurrency) + "\n")


if __name__ == "__main__":
    main()
