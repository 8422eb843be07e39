"""Combination rules with two plugins, in configuration order, over a real broker:
vote, pipeline, broadcast, first non-empty and first-exception-stops, sync and async."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import Any

import anyio
import pytest
from conftest import Events

from midge import Broker, Message, Refuse, hookimpl
from midge.codec import ConnAck, Connect, PubAck, Publish, ReasonCode, SubAck, Subscribe
from midge.codec import Subscription as Sub

Factory = Callable[..., Any]


def _failures(caplog: pytest.LogCaptureFixture, plugin: str, hook: str) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "midge.plugins" and r.levelno >= logging.ERROR
            and f"plugin {plugin} " in r.getMessage() and hook in r.getMessage()]


# -- vote ----------------------------------------------------------------------------------


class _Decider:
    def __init__(self, name: str, events: Events, vote: bool | Exception | None) -> None:
        self.name = name
        self.events = events
        self.vote = vote

    def _decide(self) -> bool | None:
        self.events.add("vote", self.name)
        if isinstance(self.vote, Exception):
            raise self.vote
        return self.vote


class Voter(_Decider):
    @hookimpl
    def on_connect_authenticate(self, client: Any, packet: Connect) -> bool | None:
        return self._decide()


class AclVoter(_Decider):
    @hookimpl
    def on_acl_check(self, client: Any, topic: str, write: bool) -> bool | None:
        return self._decide()


class AsyncVoter(Voter):
    @hookimpl
    async def on_connect_authenticate(  # type: ignore[override]
        self, client: Any, packet: Connect
    ) -> bool | None:
        await anyio.sleep(0)
        return self._decide()


def _connect_code(broker_factory: Factory, raw_factory: Factory, *voters: Voter) -> int:
    running = broker_factory(allow_anonymous=False,
                             plugins=[(voter.name, voter) for voter in voters])
    raw = raw_factory(port=running.port, level=5)
    connack = raw.connect("voter", 5, username="u", password=b"p")
    assert isinstance(connack, ConnAck)
    return connack.reason_code


@pytest.mark.parametrize("voter", [Voter, AsyncVoter], ids=["sync", "async"])
@pytest.mark.parametrize(("first", "second", "code", "asked"), [
    (True, False, 0, ["one"]),            # the first decision wins ...
    (False, True, 0x86, ["one"]),         # ... in configuration order
    (None, True, 0, ["one", "two"]),      # abstaining passes the question on
    (None, False, 0x86, ["one", "two"]),
    (None, None, 0x86, ["one", "two"]),   # no decision denies
])
def test_vote_on_connect_authenticate(
    broker_factory: Factory, raw_factory: Factory, voter: type[Voter],
    first: bool | None, second: bool | None, code: int, asked: list[str]
) -> None:
    events = Events()
    one, two = voter("one", events, first), voter("two", events, second)
    assert _connect_code(broker_factory, raw_factory, one, two) == code
    assert [name for (name,) in events.of("vote")][:len(asked) + 1] == asked


@pytest.mark.parametrize("voter", [Voter, AsyncVoter], ids=["sync", "async"])
def test_vote_exception_counts_as_denial_and_is_logged(
    broker_factory: Factory, raw_factory: Factory, caplog: pytest.LogCaptureFixture,
    voter: type[Voter]
) -> None:
    events = Events()
    one = voter("crashing", events, RuntimeError("database down"))
    two = voter("lenient", events, True)
    with caplog.at_level(logging.ERROR, logger="midge.plugins"):
        assert _connect_code(broker_factory, raw_factory, one, two) == 0x86
    assert [name for (name,) in events.of("vote")] == ["crashing"]
    assert _failures(caplog, "crashing", "on_connect_authenticate")


@pytest.mark.parametrize("code", [0x89, 0x8A])
@pytest.mark.parametrize("voter", [Voter, AsyncVoter], ids=["sync", "async"])
def test_refuse_in_on_connect_authenticate_refuses_with_its_code(
    broker_factory: Factory, raw_factory: Factory, caplog: pytest.LogCaptureFixture,
    voter: type[Voter], code: int
) -> None:
    # a plugin that cannot decide now (0x89 Server busy) or bans (0x8A) says so; it
    # is a refusal of the contract, not a plugin failure
    events = Events()
    one = voter("busy", events, Refuse(code))
    two = voter("lenient", events, True)
    with caplog.at_level(logging.ERROR, logger="midge.plugins"):
        assert _connect_code(broker_factory, raw_factory, one, two) == code
    assert [name for (name,) in events.of("vote")] == ["busy"]
    assert not _failures(caplog, "busy", "on_connect_authenticate")


def test_vote_on_acl_check_first_decision_wins(
    broker_factory: Factory, raw_factory: Factory
) -> None:
    events = Events()
    running = broker_factory(plugins=[("deny", AclVoter("deny", events, False)),
                                      ("allow", AclVoter("allow", events, True))])
    raw = raw_factory(port=running.port, level=5)
    assert raw.connect("acl", 5).reason_code == 0
    raw.send(Publish("t", b"x", 1, packet_id=1))
    assert raw.recv() == PubAck(1, 0x87)
    raw.send(Subscribe(2, [Sub("t", 1)]))
    assert raw.recv() == SubAck(2, [0x87])
    assert [name for (name,) in events.of("vote")] == ["deny", "deny"]


# -- pipeline ------------------------------------------------------------------------------


class Appender:
    def __init__(self, suffix: bytes, events: Events, fail: bool = False) -> None:
        self.suffix = suffix
        self.events = events
        self.fail = fail

    def _apply(self, packet: Publish) -> Publish:
        self.events.add("pipeline", self.suffix, packet.payload)
        if self.fail:
            raise ValueError("bad plugin")
        return dataclasses.replace(packet, payload=packet.payload + self.suffix)

    @hookimpl
    def on_publish(self, client: Any, packet: Publish) -> Publish:
        return self._apply(packet)


class AsyncAppender(Appender):
    @hookimpl
    async def on_publish(self, client: Any, packet: Publish) -> Publish:  # type: ignore[override]
        await anyio.sleep(0)
        return self._apply(packet)


def _routed_payload(broker_factory: Factory, raw_factory: Factory,
                    plugins: list[tuple[str, Any]]) -> bytes:
    running = broker_factory(plugins=plugins)
    reader = raw_factory(port=running.port)
    reader.connect("reader")
    reader.send(Subscribe(1, [Sub("p/#", 0)]))
    assert reader.recv() == SubAck(1, [0])
    writer = raw_factory(port=running.port)
    writer.connect("writer")
    writer.send(Publish("p/t", b"m", 1, packet_id=1))
    assert writer.recv() == PubAck(1)
    delivered = reader.recv()
    assert isinstance(delivered, Publish)
    return delivered.payload


@pytest.mark.parametrize("kinds", [(Appender, Appender), (AsyncAppender, Appender),
                                   (Appender, AsyncAppender)],
                         ids=["sync", "async-first", "async-second"])
def test_pipeline_second_plugin_sees_the_first_ones_result(
    broker_factory: Factory, raw_factory: Factory, kinds: tuple[type[Appender], ...]
) -> None:
    events = Events()
    first, second = kinds[0](b"1", events), kinds[1](b"2", events)
    payload = _routed_payload(broker_factory, raw_factory, [("a", first), ("b", second)])
    assert payload == b"m12"
    assert events.of("pipeline") == [(b"1", b"m"), (b"2", b"m1")]


@pytest.mark.parametrize("kind", [Appender, AsyncAppender], ids=["sync", "async"])
def test_pipeline_exception_is_logged_and_the_other_plugin_still_applies(
    broker_factory: Factory, raw_factory: Factory, caplog: pytest.LogCaptureFixture,
    kind: type[Appender]
) -> None:
    events = Events()
    broken, working = kind(b"X", events, fail=True), kind(b"2", events)
    with caplog.at_level(logging.ERROR, logger="midge.plugins"):
        payload = _routed_payload(broker_factory, raw_factory,
                                  [("broken", broken), ("working", working)])
    assert payload == b"m2"
    assert events.of("pipeline") == [(b"X", b"m"), (b"2", b"m")]
    assert _failures(caplog, "broken", "on_publish")
    assert not _failures(caplog, "working", "on_publish")


def test_pipeline_returning_none_keeps_the_value(
    broker_factory: Factory, raw_factory: Factory
) -> None:
    events = Events()

    class Observer:
        @hookimpl
        def on_select_subscribers(self, message: Message, subscribers: list[Any]) -> None:
            events.add("observed", [route.client_id for route in subscribers])

    class Filter:
        @hookimpl
        def on_select_subscribers(self, message: Message, subscribers: list[Any]) -> list[Any]:
            events.add("filtered", [route.client_id for route in subscribers])
            return []

    running = broker_factory(plugins=[("observer", Observer()), ("filter", Filter())])
    reader = raw_factory(port=running.port)
    reader.connect("reader")
    reader.send(Subscribe(1, [Sub("s/#", 1)]))
    assert reader.recv() == SubAck(1, [1])
    reader.send(Publish("s/t", b"x", 1, packet_id=2))
    assert reader.recv() == PubAck(2)  # no PUBLISH first: the second plugin removed it
    assert events.of("observed") == events.of("filtered") == [(["reader"],)]


# -- broadcast -----------------------------------------------------------------------------


class Listener:
    def __init__(self, name: str, events: Events, fail: bool = False) -> None:
        self.name = name
        self.events = events
        self.fail = fail

    @hookimpl
    def on_subscribed(self, client: Any, packet: Subscribe, reason_codes: list[int]) -> None:
        self.events.add("on_subscribed", self.name)
        if self.fail:
            raise RuntimeError("listener broke")


class AsyncListener(Listener):
    @hookimpl
    async def on_subscribed(  # type: ignore[override]
        self, client: Any, packet: Subscribe, reason_codes: list[int]
    ) -> None:
        await anyio.sleep(0)
        Listener.on_subscribed(self, client, packet, reason_codes)


@pytest.mark.parametrize("kind", [Listener, AsyncListener], ids=["sync", "async"])
def test_broadcast_runs_every_plugin_even_if_the_first_raises(
    broker_factory: Factory, raw_factory: Factory, caplog: pytest.LogCaptureFixture,
    kind: type[Listener]
) -> None:
    events = Events()
    running = broker_factory(plugins=[("first", kind("first", events, fail=True)),
                                      ("second", kind("second", events))])
    raw = raw_factory(port=running.port)
    raw.connect("sub")
    with caplog.at_level(logging.ERROR, logger="midge.plugins"):
        raw.send(Subscribe(1, [Sub("b/#", 0)]))
        assert raw.recv() == SubAck(1, [0])  # the broker carried on
        assert events.wait("on_subscribed", count=2) == [("first",), ("second",)]
    assert _failures(caplog, "first", "on_subscribed")


# -- first non-empty -----------------------------------------------------------------------


class Store:
    def __init__(self, name: str, events: Events, messages: list[Message] | Exception) -> None:
        self.name = name
        self.events = events
        self.messages = messages

    @hookimpl
    def stored_retained_messages(self) -> list[Message]:
        self.events.add("stored_retained_messages", self.name)
        if isinstance(self.messages, Exception):
            raise self.messages
        return self.messages


def _retained_topics(broker_factory: Factory, raw_factory: Factory, *stores: Store) -> list[str]:
    running = broker_factory(plugins=[(store.name, store) for store in stores])
    retained = running.broker.engine.router.retained
    return sorted(running.call(lambda: [m.topic for m in retained.match("#")]))


def test_first_non_empty_result_wins_in_configuration_order(
    broker_factory: Factory, raw_factory: Factory
) -> None:
    events = Events()
    empty = Store("empty", events, [])
    first = Store("first", events, [Message("from/first", b"1", 0, True)])
    second = Store("second", events, [Message("from/second", b"2", 0, True)])
    assert _retained_topics(broker_factory, raw_factory, empty, first, second) == ["from/first"]
    assert events.of("stored_retained_messages") == [("empty",), ("first",)]


def test_first_non_empty_skips_a_failing_plugin_and_logs_it(
    broker_factory: Factory, raw_factory: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    events = Events()
    broken = Store("broken", events, OSError("disk gone"))
    backup = Store("backup", events, [Message("from/backup", b"2", 0, True)])
    with caplog.at_level(logging.ERROR, logger="midge.plugins"):
        topics = _retained_topics(broker_factory, raw_factory, broken, backup)
    assert topics == ["from/backup"]
    assert _failures(caplog, "broken", "stored_retained_messages")


# -- first exception stops (on_connect) ----------------------------------------------------


class Gate:
    def __init__(self, name: str, events: Events, refuse: int | None = None,
                 returns: int | None = None) -> None:
        self.name = name
        self.events = events
        self.refuse = refuse
        self.returns = returns

    @hookimpl
    def on_connect(self, client: Any, packet: Connect) -> int | None:
        self.events.add("on_connect", self.name)
        if self.refuse is not None:
            raise Refuse(self.refuse)
        return self.returns


@pytest.mark.parametrize(("gates", "code", "asked"), [
    ([("a", None, None), ("b", None, None)], 0, ["a", "b"]),
    ([("a", ReasonCode.BANNED, None), ("b", ReasonCode.SERVER_BUSY, None)], 0x8A, ["a"]),
    ([("a", None, None), ("b", ReasonCode.SERVER_BUSY, None)], 0x89, ["a", "b"]),
    ([("a", None, ReasonCode.QUOTA_EXCEEDED), ("b", ReasonCode.BANNED, None)], 0x97, ["a"]),
    ([("a", None, 0x00), ("b", None, ReasonCode.BANNED)], 0x8A, ["a", "b"]),
])
def test_on_connect_first_refusal_stops_the_others(
    broker_factory: Factory, raw_factory: Factory,
    gates: list[tuple[str, int | None, int | None]], code: int, asked: list[str]
) -> None:
    events = Events()
    running = broker_factory(plugins=[(name, Gate(name, events, refuse, returns))
                                      for name, refuse, returns in gates])
    raw = raw_factory(port=running.port, level=5)
    assert raw.connect("gated", 5).reason_code == code
    assert [name for (name,) in events.of("on_connect")] == asked


def test_lifecycle_broadcast_awaits_plugins_in_configuration_order(
    broker_factory: Factory,
) -> None:
    events = Events()

    class Slow:
        @hookimpl
        async def on_started(self, broker: Broker) -> None:
            await anyio.sleep(0.1)
            events.add("on_started", "slow")

    class Fast:
        @hookimpl
        def on_started(self, broker: Broker) -> None:
            events.add("on_started", "fast")

    broker_factory(plugins=[("slow", Slow()), ("fast", Fast())])
    assert events.wait("on_started", count=2) == [("slow",), ("fast",)]
