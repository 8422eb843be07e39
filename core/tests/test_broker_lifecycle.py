"""The shell's lifecycle: plugin background tasks, on_started before the first client,
shutdown a plugin can trust (deadlines, per-plugin queues, on_stopped always), a failed
``async with Broker()`` that leaves the caller's cancel scopes intact, and on_published
for every kind of published message. Real sockets, asyncio and trio.
"""

from __future__ import annotations

import logging
import socket
import time
import warnings
from typing import Any

import anyio
import pytest

from midge import Broker, BrokerSettings, ListenerSettings, Settings, hookimpl
from midge.codec import ConnAck, Connect, Decoder, Disconnect, Publish, Role, Will, encode

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def settings(port: int = 0, **limits: Any) -> Settings:
    listener = ListenerSettings(host="127.0.0.1", port=port, allow_anonymous=True)
    return Settings(broker=BrokerSettings(sys_interval=0, **limits), listeners=(listener,))


async def connect(broker: Broker, client_id: str, will: Will | None = None) -> Any:
    stream = await anyio.connect_tcp("127.0.0.1", broker.addresses[0][1])
    await stream.send(encode(Connect(client_id, 4, will=will), 4))
    decoder = Decoder(Role.CLIENT, protocol_level=4)
    with anyio.fail_after(3):
        while (packet := decoder.next_packet()) is None:
            decoder.feed(await stream.receive())
    assert isinstance(packet, ConnAck) and packet.reason_code == 0
    return stream


class Lifespan:
    """Starts a background task from on_started and records the order of events."""

    def __init__(self) -> None:
        self.events: list[str] = []
        self.ticks = 0

    @hookimpl
    async def on_started(self, broker: Any) -> None:
        broker.start_task(self.ticker, name="ticker")
        await anyio.sleep(0.2)  # clients must wait for this
        self.events.append("started")

    async def ticker(self) -> None:
        try:
            while True:
                self.ticks += 1
                await anyio.sleep(0.01)
        finally:
            self.events.append("task cancelled")

    @hookimpl
    def on_session_established(self, client: Any, packet: Any) -> None:
        self.events.append(f"client {client.client_id}")

    @hookimpl
    def on_disconnect(self, client: Any, error: str | None, expire: bool) -> None:
        self.events.append(f"gone {client.client_id}")

    @hookimpl
    def on_stopped(self, broker: Any) -> None:
        self.events.append("stopped")


async def test_plugin_tasks_run_between_on_started_and_the_end_of_the_clients() -> None:
    plugin = Lifespan()
    async with Broker(settings(), plugins=[("lifespan", plugin)]) as broker:
        assert plugin.events == ["started"]  # awaited before `async with` gives the broker
        stream = await connect(broker, "one")
        await anyio.sleep(0.1)
        assert plugin.ticks > 1
    await stream.aclose()
    assert plugin.events == ["started", "client one", "gone one", "task cancelled", "stopped"]


async def test_a_failing_plugin_task_is_logged_and_stops_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def boom() -> None:
        raise RuntimeError("kaput")

    class Starter:
        @hookimpl
        def on_started(self, broker: Any) -> None:
            broker.start_task(boom, name="boom")

    async with Broker(settings(), plugins=[("starter", Starter())]) as broker:
        await anyio.sleep(0.05)
        stream = await connect(broker, "still-serving")
        await stream.aclose()
    assert any("plugin task boom failed" in r.getMessage() for r in caplog.records)


def test_start_task_outside_a_running_broker_says_so() -> None:
    broker = Broker(settings())
    with pytest.raises(RuntimeError, match="running broker"):
        broker.start_task(anyio.sleep, 1)


class SlowPublished:
    """An async broadcast hook that takes 0.2 s a call."""

    def __init__(self) -> None:
        self.done = 0
        self.stopped = False

    @hookimpl
    async def on_retain_message(self, client: Any, message: Any, stored: bool) -> None:
        await anyio.sleep(0.2)
        self.done += 1

    @hookimpl
    def on_stopped(self, broker: Any) -> None:
        self.stopped = True


class Quick:
    """Another plugin's async hook, which must not wait behind the slow one."""

    def __init__(self) -> None:
        self.seen = 0

    @hookimpl
    async def on_retain_message(self, client: Any, message: Any, stored: bool) -> None:
        self.seen += 1


async def test_shutdown_with_a_backlog_is_bounded_and_on_stopped_still_runs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    slow, quick = SlowPublished(), Quick()
    caplog.set_level(logging.WARNING, logger="midge.plugins")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "coroutine ... was never awaited" fails the test
        started = time.monotonic()
        async with Broker(settings(shutdown_timeout=1),
                          plugins=[("slow", slow), ("quick", quick)]) as broker:
            for n in range(30):
                await broker.publish(f"r/{n}", b"x", retain=True)
            await anyio.sleep(0.05)
            assert quick.seen == 30  # one slow plugin does not stall another
        elapsed = time.monotonic() - started
    assert elapsed < 2.5, elapsed
    assert slow.stopped
    assert 4 <= slow.done < 30  # about 1 s of 0.2 s calls ran; the one in progress finished
    assert any("deferred hook calls did not run" in r.getMessage() for r in caplog.records)


async def test_a_port_in_use_raises_oserror_plainly_and_keeps_the_callers_scopes() -> None:
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen()
    port = blocker.getsockname()[1]
    try:
        with anyio.move_on_after(5) as outer:
            with pytest.raises(OSError, match=f"cannot listen on 127.0.0.1:{port}"):
                async with Broker(settings(port)):
                    pytest.fail("the broker must not start")
            await anyio.sleep(0)  # the caller's scope still works
        assert not outer.cancelled_caught
    finally:
        blocker.close()


async def test_leaving_a_move_on_after_shuts_the_broker_down_gracefully() -> None:
    plugin = Lifespan()
    with anyio.move_on_after(0.5):
        async with Broker(settings(), plugins=[("lifespan", plugin)]) as broker:
            stream = await connect(broker, "cut")
            await anyio.sleep(10)
    await stream.aclose()
    # the outer cancellation does not reorder the shutdown: clients, tasks, on_stopped
    assert plugin.events == ["started", "client cut", "gone cut", "task cancelled", "stopped"]


class Published:
    def __init__(self) -> None:
        self.seen: list[tuple[str | None, str]] = []

    @hookimpl
    def on_published(self, client: Any, packet: Publish) -> None:
        self.seen.append((client.client_id if client is not None else None, packet.topic))


async def test_on_published_fires_for_client_will_and_inline_messages() -> None:
    plugin = Published()
    async with Broker(settings(), plugins=[("published", plugin)]) as broker:
        stream = await connect(broker, "pub", will=Will("wills/pub", b"bye"))
        await stream.send(encode(Publish("from/client", b"1"), 4))
        await anyio.sleep(0.1)
        await broker.publish("from/inline", b"2")
        await anyio.sleep(0.1)
        await stream.aclose()  # no DISCONNECT: the will goes out
        await anyio.sleep(0.1)
    assert plugin.seen == [("pub", "from/client"), (None, "from/inline"), ("pub", "wills/pub")]


async def test_v5_clients_are_told_0x8b_at_shutdown() -> None:
    async with Broker(settings()) as broker:
        stream = await anyio.connect_tcp("127.0.0.1", broker.addresses[0][1])
        await stream.send(encode(Connect("v5", 5), 5))
        await anyio.sleep(0.1)
    decoder = Decoder(Role.CLIENT, protocol_level=5)
    packets = []
    with anyio.fail_after(3):
        try:
            while True:
                decoder.feed(await stream.receive())
                while (packet := decoder.next_packet()) is not None:
                    packets.append(packet)
        except (anyio.EndOfStream, anyio.BrokenResourceError):
            pass
    assert isinstance(packets[-1], Disconnect) and packets[-1].reason_code == 0x8B


async def test_no_client_is_accepted_before_on_started_has_finished() -> None:
    plugin = Lifespan()
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    port = blocker.getsockname()[1]
    blocker.close()

    async def eager() -> None:
        # keep trying from before the broker starts; the first CONNECT that gets through
        # must come after on_started
        with anyio.fail_after(5):
            while True:
                try:
                    stream = await anyio.connect_tcp("127.0.0.1", port)
                except OSError:
                    await anyio.sleep(0.01)
                    continue
                await stream.send(encode(Connect("eager", 4), 4))
                await anyio.sleep(0.5)
                await stream.aclose()
                return

    async with anyio.create_task_group() as tg:
        tg.start_soon(eager)
        await anyio.sleep(0.05)
        async with Broker(settings(port), plugins=[("lifespan", plugin)]):
            await anyio.sleep(0.6)
    assert plugin.events.index("started") < plugin.events.index("client eager")


def test_deferred_calls_are_bounded_per_plugin(caplog: pytest.LogCaptureFixture) -> None:
    from midge.hooks import Hooks
    from midge.hooks.dispatch import DEFER_LIMIT

    woken: list[str] = []
    hooks = Hooks()
    hooks.wake = woken.append

    async def call() -> None: ...

    for _ in range(DEFER_LIMIT + 5):
        hooks.defer("greedy", "on_published", call())
    hooks.defer("other", "on_published", call())
    assert len(hooks.deferred["greedy"]) == DEFER_LIMIT
    assert hooks.overflow["greedy"] == 5
    assert len(hooks.deferred["other"]) == 1
    assert set(woken) == {"greedy", "other"}  # the shell decides how many workers run
    assert "greedy is 10000 calls behind" in caplog.text
    assert hooks.discard_deferred() == DEFER_LIMIT + 1
