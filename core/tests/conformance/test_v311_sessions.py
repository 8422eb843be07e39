"""MQTT 3.1.1 conformance: Clean Session, stored session state and wills
(sections 3.1.2.4 to 3.1.2.7, 3.14, 4.1, 4.5).

Over real loopback sockets against a real broker; each test names the normative
statements it checks with ``mqtt311``.
"""

from __future__ import annotations

import pytest

from midge.codec import ConnAck, Disconnect, Publish, Will

try:
    from v311_helpers import (
        V31,
        V311,
        Factory,
        assert_rejected,
        expect,
        nothing,
        online,
        publish_qos,
        publishes,
        reconnect,
        subscribe,
    )
except ImportError:  # pragma: no cover - core/tests/conformance made a package
    from conformance.v311_helpers import (  # type: ignore[no-redef]
        V31,
        V311,
        Factory,
        assert_rejected,
        expect,
        nothing,
        online,
        publish_qos,
        publishes,
        reconnect,
        subscribe,
    )

LEVELS = pytest.mark.parametrize("level", [V311, V31], ids=["3.1.1", "3.1"])


# -- Clean Session 0: the session outlives the connection ---------------------------------


@pytest.mark.mqtt311("MQTT-3.1.2-4", "MQTT-3.1.2-5", "MQTT-4.1.0-1", "MQTT-4.5.0-1", "MQTT-3.1.4-3")
@LEVELS
def test_session_resume_with_clean_session_0(raw_factory: Factory, level: int) -> None:
    sub = online(raw_factory, client_id="keeper", level=level, clean=False)
    subscribe(sub, ("keep/#", 2))
    sub.send(Disconnect())
    assert sub.closed()
    pub = online(raw_factory, client_id="keeppub")
    publish_qos(pub, "keep/q1", b"one", 1, packet_id=1)
    publish_qos(pub, "keep/q2", b"two", 2, packet_id=2)
    back = reconnect(raw_factory, "keeper", level)
    # the QoS 1 and 2 messages were kept for the offline session, once each
    got = publishes(back, 2)
    assert [(p.topic, p.qos) for p in got] == [("keep/q1", 1), ("keep/q2", 2)]
    nothing(back)
    # the subscription itself was resumed: no new SUBSCRIBE is needed
    publish_qos(pub, "keep/again", b"live", 1, packet_id=3)
    assert publishes(back, 1)[0].payload == b"live"


@pytest.mark.mqtt311("MQTT-3.1.2-4", "MQTT-3.2.2-3")
def test_clean_session_0_without_a_session_creates_one(raw_factory: Factory) -> None:
    raw = raw_factory()
    assert raw.connect("fresh0", V311, clean_start=False) == ConnAck(0, False)
    subscribe(raw, ("fresh/t", 1))
    raw.close()
    back = reconnect(raw_factory, "fresh0")
    pub = online(raw_factory, client_id="freshpub")
    publish_qos(pub, "fresh/t", b"kept", 1)
    assert publishes(back, 1)[0].payload == b"kept"


@pytest.mark.mqtt311("MQTT-3.1.3-2")
def test_the_client_id_identifies_the_session(raw_factory: Factory) -> None:
    for cid, topic in (("idA", "ida/t"), ("idB", "idb/t")):
        raw = online(raw_factory, client_id=cid, clean=False)
        subscribe(raw, (topic, 1))
        raw.close()
    pub = online(raw_factory, client_id="idpub")
    publish_qos(pub, "ida/t", b"for A", 1, packet_id=1)
    publish_qos(pub, "idb/t", b"for B", 1, packet_id=2)
    a = reconnect(raw_factory, "idA")
    assert [p.payload for p in publishes(a, 1)] == [b"for A"]
    nothing(a)
    b = reconnect(raw_factory, "idB")
    assert [p.payload for p in publishes(b, 1)] == [b"for B"]


# -- Clean Session 1: a new session, never reused ------------------------------------------


@pytest.mark.mqtt311("MQTT-3.1.2-6", "MQTT-3.1.4-3")
@LEVELS
def test_clean_session_1_discards_the_previous_session(raw_factory: Factory, level: int) -> None:
    sub = online(raw_factory, client_id="wiped", level=level, clean=False)
    subscribe(sub, ("wipe/t", 1))
    sub.close()
    pub = online(raw_factory, client_id="wipepub")
    publish_qos(pub, "wipe/t", b"queued", 1)  # queued in the old session
    clean = raw_factory(level=level)
    assert clean.connect("wiped", level, clean_start=True) == ConnAck(0, False)
    nothing(clean)  # neither the queued message ...
    publish_qos(pub, "wipe/t", b"live", 1, packet_id=2)
    nothing(clean)  # ... nor the old subscription
    clean.close()
    # the clean session's state is not reused by a later Clean Session 0 connection
    later = raw_factory(level=level)
    assert later.connect("wiped", level, clean_start=False) == ConnAck(0, False)
    nothing(later)


@pytest.mark.mqtt311("MQTT-4.1.0-2")
def test_a_clean_session_lasts_as_long_as_its_connection(raw_factory: Factory) -> None:
    sub = online(raw_factory, client_id="lasting")
    subscribe(sub, ("last/t", 1))
    pub = online(raw_factory, client_id="lastpub")
    for index in range(3):  # other clients come and go meanwhile
        other = online(raw_factory, client_id=f"passer{index}")
        other.close()
        publish_qos(pub, "last/t", b"%d" % index, 1, packet_id=index + 1)
    assert [p.payload for p in publishes(sub, 3)] == [b"0", b"1", b"2"]


@pytest.mark.mqtt311("MQTT-3.1.2-7")
def test_retained_messages_survive_the_end_of_a_session(raw_factory: Factory) -> None:
    pub = online(raw_factory, client_id="shortlived")
    publish_qos(pub, "survive/t", b"still here", 1, retain=True)
    pub.send(Disconnect())
    assert pub.closed()
    late = online(raw_factory, client_id="survivelate")
    subscribe(late, ("survive/t", 1))
    assert publishes(late, 1)[0].payload == b"still here"


# -- wills --------------------------------------------------------------------------------


@pytest.mark.mqtt311("MQTT-3.1.2-8", "MQTT-3.1.2-10", "MQTT-3.1.2-16")
@LEVELS
def test_will_on_abnormal_close_only(raw_factory: Factory, level: int) -> None:
    watch = online(raw_factory, client_id="watcher")
    subscribe(watch, ("will/#", 2))
    polite = online(raw_factory, client_id="polite", level=level,
                    will=Will("will/polite", b"never", 1))
    polite.send(Disconnect())
    assert polite.closed()
    rude = online(raw_factory, client_id="rude", level=level,
                  will=Will("will/rude", b"gone", 2))
    rude.close()  # no DISCONNECT
    [will] = publishes(watch, 1)
    assert (will.topic, will.payload, will.qos, will.retain) == ("will/rude", b"gone", 2, False)
    nothing(watch)  # not the polite one, and the rude one only once
    late = online(raw_factory, client_id="latewatch")
    subscribe(late, ("will/#", 2))
    nothing(late)  # a will with Will Retain 0 is not retained


@pytest.mark.mqtt311("MQTT-3.1.2-8")
def test_the_will_is_published_when_the_server_closes_on_a_protocol_error(
    raw_factory: Factory
) -> None:
    watch = online(raw_factory, client_id="watcher")
    subscribe(watch, ("will/#", 1))
    bad = online(raw_factory, client_id="bad", will=Will("will/bad", b"broke the rules", 1))
    assert_rejected(bad, b"\x30\x02\x00\x00")  # PUBLISH with an empty topic
    assert publishes(watch, 1)[0].payload == b"broke the rules"


@pytest.mark.mqtt311("MQTT-3.14.4-3", "MQTT-3.1.2-10")
def test_disconnect_discards_the_will(raw_factory: Factory) -> None:
    watch = online(raw_factory, client_id="watcher")
    subscribe(watch, ("will/#", 1))
    raw = online(raw_factory, client_id="leaver", will=Will("will/leaver", b"no", 1))
    raw.send(Disconnect())
    assert raw.closed()
    nothing(watch, 0.5)


@pytest.mark.mqtt311("MQTT-3.1.2-12")
def test_no_will_flag_no_will(raw_factory: Factory) -> None:
    watch = online(raw_factory, client_id="watcher")
    subscribe(watch, ("#", 1))
    raw = online(raw_factory, client_id="nowill")
    subscribe(raw, ("nowill/t", 1))
    raw.close()
    nothing(watch, 0.5)


@pytest.mark.mqtt311("MQTT-3.1.2-17")
@LEVELS
def test_a_will_with_will_retain_1_is_retained(raw_factory: Factory, level: int) -> None:
    watch = online(raw_factory, client_id="watcher")
    subscribe(watch, ("will/#", 1))
    raw = online(raw_factory, client_id="retwill", level=level,
                 will=Will("will/kept", b"remember me", 1, retain=True))
    raw.close()
    live = expect(watch, Publish)
    assert (live.payload, live.retain) == (b"remember me", False)  # a live delivery
    late = online(raw_factory, client_id="latewatch")
    subscribe(late, ("will/#", 1))
    [kept] = publishes(late, 1)
    assert (kept.topic, kept.payload, kept.retain) == ("will/kept", b"remember me", True)


@pytest.mark.mqtt311("MQTT-3.14.1-1", "MQTT-3.1.2-8")
@pytest.mark.parametrize("byte0", [0xE1, 0xE2, 0xE8])
def test_a_disconnect_with_reserved_bits_set_is_not_a_disconnect(
    raw_factory: Factory, byte0: int
) -> None:
    watch = online(raw_factory, client_id="watcher")
    subscribe(watch, ("will/#", 1))
    raw = online(raw_factory, client_id="baddisc", will=Will("will/baddisc", b"sent", 1))
    assert assert_rejected(raw, bytes((byte0, 0))) == []
    # closed for a malformed packet, which is no DISCONNECT: the will goes out
    assert publishes(watch, 1)[0].payload == b"sent"
