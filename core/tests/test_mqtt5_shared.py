"""Shared subscriptions ``$share/{group}/{filter}``: one member of each group gets each
message, round-robin over connected members; no retained messages on a shared subscribe;
a client's own normal subscription still gets its copy; bad share names get SUBACK 0x8F."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from midge import hookimpl
from midge.codec import (
    ConnAck,
    Disconnect,
    Property,
    PubAck,
    Publish,
    SubAck,
    Subscribe,
    Subscription,
    UnsubAck,
    Unsubscribe,
)

Factory = Callable[..., Any]


def _client(raw_factory: Factory, cid: str, level: int = 5, port: int | None = None,
            clean: bool = True, expiry: int = 0) -> Any:
    raw = raw_factory(port=port, level=level)
    props = {Property.SESSION_EXPIRY_INTERVAL: expiry} if expiry and level == 5 else {}
    connack = raw.connect(cid, level, clean_start=clean, properties=props)
    assert isinstance(connack, ConnAck) and connack.reason_code == 0
    raw.connack = connack
    return raw


def _subscribe(raw: Any, *filters: str, qos: int = 0) -> list[int]:
    raw.send(Subscribe(1, [Subscription(f, qos) for f in filters]))
    suback = raw.recv()
    assert isinstance(suback, SubAck)
    return suback.reason_codes


def _drain(raw: Any, wait: float = 0.3) -> list[Publish]:
    """Every PUBLISH that arrives until the connection is quiet for ``wait`` seconds;
    fails if the broker closes the connection meanwhile."""
    out: list[Publish] = []
    while True:
        try:
            packet = raw.recv(timeout=wait)
        except AssertionError as exc:
            if "closed" in str(exc):
                raise AssertionError(f"the broker closed the connection after {out}") from None
            return out
        if isinstance(packet, Publish):
            out.append(packet)
            if packet.qos == 1:
                raw.send(PubAck(packet.packet_id))


def _publish(raw_factory: Factory, topic: str, payloads: list[bytes], qos: int = 0,
             retain: bool = False, port: int | None = None) -> None:
    pub = _client(raw_factory, "publisher", port=port)
    for index, payload in enumerate(payloads, 1):
        pub.send(Publish(topic, payload, qos, retain, packet_id=index if qos else 0))
        if qos:
            assert isinstance(pub.recv(), PubAck)
    pub.send(Disconnect())
    pub.packets_until_close()


def test_connack_says_shared_subscriptions_are_available(raw_factory: Factory) -> None:
    raw = _client(raw_factory, "avail")
    assert raw.connack.properties[Property.SHARED_SUBSCRIPTION_AVAILABLE] == 1


def test_each_message_goes_to_one_member_round_robin(raw_factory: Factory) -> None:
    members = [_client(raw_factory, f"m{i}") for i in range(3)]
    for raw in members:
        assert _subscribe(raw, "$share/g/sh/#") == [0]
    payloads = [str(i).encode() for i in range(9)]
    _publish(raw_factory, "sh/t", payloads)
    received = [_drain(raw) for raw in members]
    got = [[p.payload for p in each] for each in received]
    assert sorted(payload for each in got for payload in each) == sorted(payloads)
    assert [len(g) for g in got] == [3, 3, 3]
    assert all(p.topic == "sh/t" for each in received for p in each)


def test_every_group_gets_each_message_once(raw_factory: Factory) -> None:
    a1, a2, b1, c1 = (_client(raw_factory, cid) for cid in ("a1", "a2", "b1", "c1"))
    _subscribe(a1, "$share/a/grp/t")
    _subscribe(a2, "$share/a/grp/t")
    _subscribe(b1, "$share/b/grp/t")
    # the same share name with another filter is another shared subscription (MQTT 5 4.8.2)
    _subscribe(c1, "$share/a/grp/+")
    _publish(raw_factory, "grp/t", [b"1", b"2"])
    group_a = _drain(a1) + _drain(a2)
    assert sorted(p.payload for p in group_a) == [b"1", b"2"]
    assert [p.payload for p in _drain(b1)] == [b"1", b"2"]
    assert [p.payload for p in _drain(c1)] == [b"1", b"2"]


def test_shared_and_normal_subscription_each_get_a_copy(raw_factory: Factory) -> None:
    both = _client(raw_factory, "both")
    assert _subscribe(both, "$share/g/cp/t", "cp/t", qos=1) == [1, 1]
    _publish(raw_factory, "cp/t", [b"x"], qos=1)
    assert [p.payload for p in _drain(both)] == [b"x", b"x"]


def test_no_retained_messages_on_a_shared_subscribe(raw_factory: Factory) -> None:
    _publish(raw_factory, "ret/t", [b"kept"], retain=True)
    shared = _client(raw_factory, "shared")
    assert _subscribe(shared, "$share/g/ret/#") == [0]
    assert _drain(shared) == []
    normal = _client(raw_factory, "normal")
    assert _subscribe(normal, "ret/#") == [0]
    assert [p.payload for p in _drain(normal)] == [b"kept"]
    # the shared subscription is live: it was granted and takes new messages
    _publish(raw_factory, "ret/t", [b"live"])
    assert [p.payload for p in _drain(shared)] == [b"live"]


def test_unsubscribe_leaves_the_group(raw_factory: Factory, broker: Any) -> None:
    stays, leaves = _client(raw_factory, "stays"), _client(raw_factory, "leaves")
    _subscribe(stays, "$share/g/un/t")
    _subscribe(leaves, "$share/g/un/t")
    leaves.send(Unsubscribe(2, ["$share/g/un/t"]))
    unsuback = leaves.recv()
    assert isinstance(unsuback, UnsubAck) and unsuback.reason_codes == [0]
    _publish(raw_factory, "un/t", [b"1", b"2", b"3"])
    assert len(_drain(stays)) == 3
    assert _drain(leaves, 0.1) == []
    stays.send(Unsubscribe(3, ["$share/g/un/t"]))
    stays.recv()
    assert broker.call(lambda: broker.broker.engine.router.subscriptions.trie.shared_count) == 0


def test_offline_member_is_not_chosen_while_one_is_connected(raw_factory: Factory) -> None:
    away = _client(raw_factory, "away", expiry=300)
    _subscribe(away, "$share/g/off/t", qos=1)
    away.send(Disconnect())
    away.packets_until_close()
    here = _client(raw_factory, "here")
    _subscribe(here, "$share/g/off/t", qos=1)
    _publish(raw_factory, "off/t", [b"1", b"2", b"3", b"4"], qos=1)
    assert [p.payload for p in _drain(here)] == [b"1", b"2", b"3", b"4"]
    back = _client(raw_factory, "away", clean=False, expiry=300)
    assert back.connack.session_present
    assert _drain(back) == []


def test_message_waits_for_an_offline_member_when_none_is_connected(
    raw_factory: Factory,
) -> None:
    away = _client(raw_factory, "only", expiry=300)
    _subscribe(away, "$share/g/wait/t", qos=1)
    away.send(Disconnect())
    away.packets_until_close()
    _publish(raw_factory, "wait/t", [b"queued"], qos=1)
    back = _client(raw_factory, "only", clean=False, expiry=300)
    assert [p.payload for p in _drain(back)] == [b"queued"]


@pytest.mark.parametrize(("level", "refused"), [(5, 0x8F), (4, 0x80)], ids=["v5", "v311"])
@pytest.mark.parametrize("bad", ["$share/+x/a", "$share/g", "$share//a", "$share/g/",
                                 "$share/#/a"])
def test_invalid_share_names_are_refused_in_the_suback(
    raw_factory: Factory, level: int, refused: int, bad: str
) -> None:
    raw = _client(raw_factory, "bad-share", level=level)
    assert _subscribe(raw, bad, "fine/t") == [refused, 0]
    raw.send(Publish("fine/t", b"still here"))
    assert [p.payload for p in _drain(raw)] == [b"still here"]


def test_v311_clients_can_share(raw_factory: Factory) -> None:
    v3 = _client(raw_factory, "v3", level=4)
    v5 = _client(raw_factory, "v5")
    _subscribe(v3, "$share/mix/mx/t")
    _subscribe(v5, "$share/mix/mx/t")
    _publish(raw_factory, "mx/t", [b"1", b"2"])
    assert len(_drain(v3)) == 1 and len(_drain(v5)) == 1


def test_on_select_subscribers_sees_the_chosen_member(
    broker_factory: Factory, raw_factory: Factory, broker: Any
) -> None:
    seen: list[list[str]] = []

    class Watch:
        @hookimpl
        def on_select_subscribers(self, message: Any, subscribers: list[Any]) -> list[Any]:
            seen.append(sorted(route.client_id for route in subscribers))
            return subscribers

    running = broker_factory(plugins=[("watch", Watch())])
    one, two = (_client(raw_factory, cid, port=running.port) for cid in ("one", "two"))
    _subscribe(one, "$share/g/hk/t")
    _subscribe(two, "$share/g/hk/t", "hk/t")
    _publish(raw_factory, "hk/t", [b"1", b"2"], port=running.port)
    assert Counter(tuple(s) for s in seen) == Counter([("one", "two"), ("two", "two")])
