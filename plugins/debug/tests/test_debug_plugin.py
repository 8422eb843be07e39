"""The debug plugin logs one line per packet with the client id, hides payloads by
default and never shows the CONNECT password unless told to."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

import pytest
from midge_debug import DebugPlugin

from midge import PluginConfigError
from midge.codec import (
    PROTOCOL_5,
    ConnAck,
    Connect,
    Disconnect,
    PingReq,
    PingResp,
    Property,
    PubAck,
    Publish,
    SubAck,
    Subscribe,
    Subscription,
    Will,
)

LOGGER = "midge.plugins.debug"


@dataclass
class Client:
    client_id: str = "dev-7"
    username: str | None = "sensor"
    remote: str = "192.0.2.1:4000"
    remote_host: str = "192.0.2.1"
    protocol_level: int = 5


def lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER]


def read(plugin: DebugPlugin, packet: Any, client: Client | None = None) -> Any:
    return plugin.on_packet_read(client or Client(), packet)


@pytest.fixture(autouse=True)
def _capture(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)


def test_packets_in_and_out_one_line_each(caplog: pytest.LogCaptureFixture) -> None:
    plugin = DebugPlugin({})
    publish = Publish(topic="a/b", payload=b"hello", qos=1, packet_id=3)
    assert read(plugin, publish) is publish
    plugin.on_packet_sent(Client(), PubAck(packet_id=3), b"\x40\x02\x00\x03")
    assert lines(caplog) == [
        "\"dev-7\" <- PUBLISH topic='a/b' payload=<5 bytes> qos=1 retain=False dup=False "
        "packet_id=3",
        "\"dev-7\" -> PUBACK packet_id=3 reason_code=0x00 (4 bytes)",
    ]
    assert all("\n" not in line for line in lines(caplog))
    assert {r.levelno for r in caplog.records} == {logging.INFO}


def test_payload_hidden_by_default(caplog: pytest.LogCaptureFixture) -> None:
    plugin = DebugPlugin({})
    read(plugin, Publish(topic="t", payload=b"top secret reading"))
    plugin.on_packet_sent(Client(), Publish(topic="t", payload=b"top secret reading"), b"x")
    assert "top secret" not in caplog.text
    assert all("<18 bytes>" in line for line in lines(caplog))


def test_payload_shown_and_truncated_when_enabled(caplog: pytest.LogCaptureFixture) -> None:
    plugin = DebugPlugin({"show_payloads": True})
    read(plugin, Publish(topic="t", payload=b"short"))
    read(plugin, Publish(topic="t", payload=b"x" * 64))
    read(plugin, Publish(topic="t", payload=b"0123456789" * 10))
    short, exact, long = lines(caplog)
    assert "payload=b'short'" in short
    assert f"payload=b'{'x' * 64}' " in exact
    assert f"payload=b'{('0123456789' * 10)[:64]}'... <100 bytes>" in long


def test_connect_password_never_shown(caplog: pytest.LogCaptureFixture) -> None:
    plugin = DebugPlugin({"show_payloads": True})
    packet = Connect(client_id="dev-7", username="sensor", password=b"hunter2",
                     protocol_level=PROTOCOL_5,
                     properties={Property.AUTHENTICATION_METHOD: "SCRAM-SHA-1",
                                 Property.AUTHENTICATION_DATA: b"proof-bytes"})
    assert read(plugin, packet, Client(client_id="")) is packet
    (line,) = lines(caplog)
    assert line.startswith("\"dev-7\" <- CONNECT client_id='dev-7' protocol=MQTT/5 clean_start")
    assert "username='sensor'" in line
    assert "password=<redacted>" in line
    assert "authentication_method='SCRAM-SHA-1'" in line
    assert "authentication_data=<redacted>" in line
    assert "hunter2" not in caplog.text and "proof-bytes" not in caplog.text


def test_password_shown_only_when_redaction_is_off(caplog: pytest.LogCaptureFixture) -> None:
    read(DebugPlugin({"redact_credentials": False}),
         Connect(client_id="c", username="u", password=b"hunter2"))
    assert "password=b'hunter2'" in caplog.text


def test_will_payload_follows_show_payloads(caplog: pytest.LogCaptureFixture) -> None:
    will = Will(topic="status", payload=b"offline", qos=1, retain=True)
    read(DebugPlugin({}), Connect(client_id="c", will=will))
    read(DebugPlugin({"show_payloads": True}), Connect(client_id="c", will=will))
    hidden, shown = lines(caplog)
    assert "will=(topic='status' qos=1 retain=True payload=<7 bytes>)" in hidden
    assert "payload=b'offline'" in shown


def test_client_named_by_address_before_connect(caplog: pytest.LogCaptureFixture) -> None:
    read(DebugPlugin({}), Connect(client_id=""), Client(client_id=""))
    assert lines(caplog)[0].startswith("<192.0.2.1:4000> <- CONNECT")


def test_control_characters_cannot_forge_lines(caplog: pytest.LogCaptureFixture) -> None:
    read(DebugPlugin({"show_payloads": True}),
         Publish(topic="a\nINFO fake", payload=b"\n\r"), Client(client_id="x\ny"))
    (line,) = lines(caplog)
    assert "\n" not in line and "\r" not in line
    assert line.startswith("'x\\ny' <- PUBLISH topic='a\\nINFO fake'")


def test_subscribe_and_suback(caplog: pytest.LogCaptureFixture) -> None:
    plugin = DebugPlugin({})
    read(plugin, Subscribe(packet_id=5, subscriptions=[
        Subscription("a/#", qos=1), Subscription("b", qos=0, no_local=True, retain_handling=2)]))
    plugin.on_packet_sent(Client(), SubAck(packet_id=5, reason_codes=[1, 0]), b"12345")
    sub, ack = lines(caplog)
    assert sub == ("\"dev-7\" <- SUBSCRIBE packet_id=5 subscriptions=['a/#' qos=1, "
                   "'b' qos=0 no_local retain_handling=2]")
    assert ack == "\"dev-7\" -> SUBACK packet_id=5 reason_codes=[0x01, 0x00] (5 bytes)"


def test_connack_and_disconnect(caplog: pytest.LogCaptureFixture) -> None:
    plugin = DebugPlugin({})
    plugin.on_packet_sent(Client(), ConnAck(reason_code=0, session_present=True,
                                           properties={Property.RECEIVE_MAXIMUM: 20}), b"x")
    read(plugin, Disconnect(reason_code=4))
    connack, disconnect = lines(caplog)
    assert connack == ("\"dev-7\" -> CONNACK reason_code=0x00 session_present=True "
                       "properties={receive_maximum=20} (1 bytes)")
    assert disconnect == "\"dev-7\" <- DISCONNECT reason_code=0x04"


def test_pings_hidden_by_default(caplog: pytest.LogCaptureFixture) -> None:
    quiet = DebugPlugin({})
    assert read(quiet, PingReq()) == PingReq()
    quiet.on_packet_sent(Client(), PingResp(), b"\xd0\x00")
    assert lines(caplog) == []
    loud = DebugPlugin({"show_pings": True})
    read(loud, PingReq())
    loud.on_packet_sent(Client(), PingResp(), b"\xd0\x00")
    assert lines(caplog) == ["\"dev-7\" <- PINGREQ", "\"dev-7\" -> PINGRESP (2 bytes)"]


def test_level_debug(caplog: pytest.LogCaptureFixture) -> None:
    read(DebugPlugin({"level": "debug"}), Publish(topic="t"))
    assert [r.levelno for r in caplog.records] == [logging.DEBUG]


def test_nothing_is_formatted_when_the_level_is_off(caplog: pytest.LogCaptureFixture,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    calls: list[object] = []

    def spy(*args: object) -> str:
        calls.append(args)
        return ""

    monkeypatch.setattr("midge_debug._plugin.describe", spy)
    packet = Publish(topic="t")
    assert read(DebugPlugin({"level": "debug"}), packet) is packet
    assert calls == [] and lines(caplog) == []


@pytest.mark.parametrize(("table", "key", "message"), [
    ({"show_payload": True}, "show_payload",
     "allowed: show_payloads, show_pings, redact_credentials, level"),
    ({"show_payloads": "yes"}, "show_payloads", "true or false"),
    ({"show_pings": 1}, "show_pings", "true or false"),
    ({"redact_credentials": None}, "redact_credentials", "true or false"),
    ({"level": "warning"}, "level", "debug, info"),
])
def test_config_errors_name_the_key(table: dict[str, Any], key: str, message: str) -> None:
    with pytest.raises(PluginConfigError) as exc:
        DebugPlugin(table)
    assert exc.value.key == key
    assert message in exc.value.message


def test_entry_point() -> None:
    (ep,) = [ep for ep in entry_points(group="midge.plugins") if ep.name == "debug"]
    assert ep.load() is DebugPlugin


def test_v3_packets_show_only_v3_fields(caplog: pytest.LogCaptureFixture) -> None:
    plugin = DebugPlugin({})
    v3 = Client(client_id="old", protocol_level=4)
    plugin.on_packet_sent(v3, ConnAck(reason_code=5), b"\x20\x02\x00\x05")
    plugin.on_packet_sent(v3, PubAck(packet_id=9), b"\x40\x02\x00\x09")
    plugin.on_packet_sent(v3, SubAck(packet_id=2, reason_codes=[1, 0x80]), b"12345")
    read(plugin, Disconnect(), v3)
    assert lines(caplog) == [
        '"old" -> CONNACK return_code=5 session_present=False (4 bytes)',
        '"old" -> PUBACK packet_id=9 (4 bytes)',
        '"old" -> SUBACK packet_id=2 return_codes=[0x01, 0x80] (5 bytes)',
        '"old" <- DISCONNECT',
    ]


def test_reason_codes_read_one_way_enum_or_int(caplog: pytest.LogCaptureFixture) -> None:
    from midge.codec import ReasonCode

    plugin = DebugPlugin({})
    plugin.on_packet_sent(Client(), PubAck(3, ReasonCode.NOT_AUTHORIZED), b"x")
    plugin.on_packet_sent(Client(), PubAck(4, 0x87), b"x")
    first, second = lines(caplog)
    assert "reason_code=0x87" in first and "reason_code=0x87" in second
    assert "ReasonCode" not in first


def test_qos0_publish_has_no_packet_id(caplog: pytest.LogCaptureFixture) -> None:
    plugin = DebugPlugin({})
    read(plugin, Publish(topic="t", payload=b"x", qos=0))
    assert lines(caplog) == ['"dev-7" <- PUBLISH topic=\'t\' payload=<1 bytes> qos=0 '
                             'retain=False dup=False']
