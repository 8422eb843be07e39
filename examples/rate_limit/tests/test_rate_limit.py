"""The rate limit plugin on a real broker with real clients, through midge.testing only.

A burst of 3 with a rate of one message per 1000 seconds makes the 4th message in quick
succession the first rejected one, whatever the machine's speed.
"""

from __future__ import annotations

from typing import Any

import pytest
from midge_rate_limit import RateLimit

from midge import PluginConfigError, PluginError, ReasonCode

SLOW = {"messages_per_second": 0.001, "burst": 3}
QUOTA_EXCEEDED = int(ReasonCode.QUOTA_EXCEEDED)
OK, QUOTA = "accepted", "quota exceeded"


def outcome(code: int) -> str:
    """What a PUBACK reason code says (0x10, no matching subscribers, is a success)."""
    if code == QUOTA_EXCEEDED:
        return QUOTA
    return OK if code < 0x80 else f"0x{code:02X}"


@pytest.fixture
def broker(midge_broker_factory: Any) -> Any:
    """A broker with the plugin activated through its entry point, as a config would."""
    return midge_broker_factory(plugins={"rate_limit": SLOW})


def test_v5_sender_gets_quota_exceeded_and_the_message_is_not_delivered(
    broker: Any, midge_client: Any
) -> None:
    subscriber = midge_client(broker)
    subscriber.subscribe("rate/#", qos=1)
    sender = midge_client(broker, protocol=5)
    codes = [sender.publish("rate/t", f"m{i}", qos=1) for i in range(4)]
    assert codes == [0, 0, 0, QUOTA_EXCEEDED]
    assert [subscriber.expect().payload for _ in range(3)] == [b"m0", b"m1", b"m2"]
    subscriber.expect_none()


def test_v5_qos2_message_over_the_rate_is_not_delivered(
    broker: Any, midge_client: Any, midge_capture: Any
) -> None:
    # paho ignores PUBREC reason codes, so only the delivery is checked here
    capture = midge_capture("rate/#", broker=broker)
    sender = midge_client(broker, protocol=5)
    for i in range(4):
        sender.publish("rate/t", f"m{i}", qos=2)
    assert [m.payload for m in capture.wait_for(3)] == [b"m0", b"m1", b"m2"]
    assert outcome(sender.publish("rate/t", "after", qos=1)) == QUOTA
    assert capture.payloads == [b"m0", b"m1", b"m2"]


@pytest.mark.parametrize("qos", [0, 1])
def test_v3_sender_gets_a_plain_ack_and_the_message_is_not_delivered(
    broker: Any, midge_client: Any, qos: int
) -> None:
    subscriber = midge_client(broker, protocol=5)
    subscriber.subscribe("rate/#", qos=1)
    sender = midge_client(broker, protocol=4)
    codes = [sender.publish("rate/t", f"m{i}", qos=qos) for i in range(4)]
    assert codes == [0, 0, 0, 0]
    assert [subscriber.expect().payload for _ in range(3)] == [b"m0", b"m1", b"m2"]
    subscriber.expect_none()


def test_each_client_has_its_own_bucket(broker: Any, midge_client: Any) -> None:
    first = midge_client(broker, protocol=5)
    second = midge_client(broker, protocol=5)
    codes = [first.publish("rate/a", "x", qos=1) for _ in range(4)]
    assert [outcome(c) for c in codes] == [OK, OK, OK, QUOTA]
    codes = [second.publish("rate/b", "x", qos=1) for _ in range(3)]
    assert [outcome(c) for c in codes] == [OK, OK, OK]


def test_reconnecting_does_not_refill_the_bucket(broker: Any, midge_client: Any) -> None:
    sender = midge_client(broker, protocol=5, client_id="greedy")
    codes = [sender.publish("rate/t", "x", qos=1) for _ in range(3)]
    assert [outcome(c) for c in codes] == [OK, OK, OK]
    sender.disconnect()
    again = midge_client(broker, protocol=5, client_id="greedy")
    assert outcome(again.publish("rate/t", "x", qos=1)) == QUOTA


def test_a_rejected_retained_message_is_not_retained(
    broker: Any, midge_client: Any, midge_capture: Any
) -> None:
    sender = midge_client(broker, protocol=5)
    codes = [sender.publish("rate/r", f"m{i}", qos=1, retain=True) for i in range(4)]
    assert [outcome(c) for c in codes] == [OK, OK, OK, QUOTA]
    [retained] = midge_capture("rate/r", broker=broker).wait_for(1)
    assert retained.payload == b"m2"


def test_tokens_come_back_at_the_configured_rate(
    midge_broker_factory: Any, midge_client: Any
) -> None:
    now = [1000.0]
    plugin = RateLimit({"messages_per_second": 2, "burst": 1}, clock=lambda: now[0])
    broker = midge_broker_factory(objects=[("rate_limit", plugin)])
    sender = midge_client(broker, protocol=5)

    def send() -> str:
        return outcome(sender.publish("rate/t", "x", qos=1))

    assert [send(), send()] == [OK, QUOTA]
    now[0] += 0.4  # 0.8 of a token
    assert send() == QUOTA
    now[0] += 0.1  # 0.8 + 0.2 = 1 token (the rejected attempt took none)
    assert send() == OK
    now[0] += 60  # never more than burst
    assert [send(), send()] == [OK, QUOTA]
    assert plugin.rejected == 3


def test_inline_publishes_are_not_limited(broker: Any, midge_capture: Any) -> None:
    capture = midge_capture("rate/#", broker=broker)
    for i in range(5):
        broker.publish("rate/t", f"m{i}")
    assert len(capture.wait_for(5)) == 5


@pytest.mark.parametrize(
    ("config", "key"),
    [
        ({"messages_per_second": 0}, "messages_per_second"),
        ({"messages_per_second": "fast"}, "messages_per_second"),
        ({"messages_per_second": True}, "messages_per_second"),
        ({"burst": 0}, "burst"),
        ({"burst": 2.5}, "burst"),
        ({"bursts": 3}, "bursts"),
    ],
)
def test_bad_configuration_is_refused_naming_the_key(
    midge_broker_factory: Any, config: dict[str, Any], key: str
) -> None:
    with pytest.raises(PluginConfigError) as direct:
        RateLimit(config)
    assert direct.value.key == key
    with pytest.raises(PluginError, match=rf"plugins\.rate_limit\.{key}\b"):
        midge_broker_factory(plugins={"rate_limit": config})


def test_defaults_are_valid() -> None:
    plugin = RateLimit({})
    assert (plugin.rate, plugin.burst) == (10.0, 10)
