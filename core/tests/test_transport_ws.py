"""WebSocket listeners: paho's websocket transport, MQTT.js under node over ws and wss,
and a wsproto client for what libraries will not send (split and packed frames, text
frames, oversized frames, upgrades without the subprotocol, pings, close handshakes)."""

from __future__ import annotations

import json
import logging
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import Pki, RunningBroker
from transport_kit import Endpoint, Recorder, endpoints, listener, paho_client
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Event,
    Ping,
    Pong,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)

from midge.codec import (
    ConnAck,
    Connect,
    Decoder,
    Disconnect,
    Packet,
    Publish,
    Role,
    SubAck,
    Subscribe,
    Subscription,
    encode,
)

JS = Path(__file__).resolve().parent / "js"


class WsClient:
    """A WebSocket client over a loopback socket, one wsproto event at a time."""

    def __init__(self, endpoint: Endpoint, subprotocols: tuple[str, ...] = ("mqtt",),
                 path: str = "/mqtt", headers: list[tuple[bytes, bytes]] | None = None) -> None:
        self.sock = socket.create_connection((endpoint.host, endpoint.port), timeout=5)
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.decoder = Decoder(Role.CLIENT, protocol_level=4)
        self.sock.sendall(self.ws.send(Request(
            host="127.0.0.1", target=path, subprotocols=list(subprotocols),
            extra_headers=headers or [],
        )))
        self.pending: list[Event] = []
        self.eof = False

    def event(self, timeout: float = 3.0) -> Event:
        deadline = time.monotonic() + timeout
        while not self.pending:
            self.pending.extend(self.ws.events())
            if self.pending:
                break
            if self.eof:
                raise AssertionError("connection closed by the broker")
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                raise AssertionError("no WebSocket event in time") from None
            if not data:
                self.eof = True
                self.ws.receive_data(None)
            else:
                self.ws.receive_data(data)
        return self.pending.pop(0)

    def accepted(self) -> AcceptConnection:
        event = self.event()
        assert isinstance(event, AcceptConnection), event
        return event

    def send_frames(self, *frames: bytes) -> None:
        self.sock.sendall(b"".join(self.ws.send(BytesMessage(data=f)) for f in frames))

    def packet(self) -> Packet:
        while (packet := self.decoder.next_packet()) is None:
            event = self.event()
            assert isinstance(event, BytesMessage), event
            self.decoder.feed(bytes(event.data))
        return packet

    def connect(self, client_id: str = "ws-raw") -> None:
        self.accepted()
        self.send_frames(encode(Connect(client_id, 4), 4))
        assert self.packet() == ConnAck(0)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def ws_broker(settings_broker: Callable[..., RunningBroker],
              recorder: Recorder) -> tuple[RunningBroker, Endpoint, Endpoint]:
    broker = settings_broker([listener("ws", max_frame_size=65536, name="web"),
                              listener("tcp")], plugins=[("rec", recorder)],
                             connect_timeout=1)
    ws, tcp = endpoints(broker)
    return broker, ws, tcp


def test_paho_over_websocket(ws_broker: tuple[RunningBroker, Endpoint, Endpoint],
                             recorder: Recorder) -> None:
    _broker, ws, tcp = ws_broker
    web = paho_client(ws, client_id="browser-ish")
    other = paho_client(tcp)
    try:
        web.subscribe("ws/#", 1)
        other.publish("ws/in", b"to the browser", 1)
        assert web.expect().payload == b"to the browser"
        other.subscribe("ws/out", 1)
        web.publish("ws/out", b"x" * 20000, 1)  # larger than one frame of paho's
        assert other.expect().payload == b"x" * 20000
        assert recorder.seen.wait("browser-ish")[4] == "web"
    finally:
        web.close()
        other.close()


def test_a_packet_may_span_frames_and_a_frame_may_hold_several(
    ws_broker: tuple[RunningBroker, Endpoint, Endpoint],
) -> None:
    _broker, ws, _tcp = ws_broker
    client = WsClient(ws)
    try:
        assert client.accepted().subprotocol == "mqtt"
        connect = encode(Connect("spanning", 4), 4)
        client.send_frames(connect[:3], connect[3:7], connect[7:])
        assert client.packet() == ConnAck(0)
        both = (encode(Subscribe(1, [Subscription("span/t", 0)]), 4)
                + encode(Publish("span/t", b"one frame, two packets"), 4))
        client.send_frames(both)
        assert client.packet() == SubAck(1, [0])
        message = client.packet()
        assert isinstance(message, Publish) and message.payload == b"one frame, two packets"
    finally:
        client.close()


def test_mqttv31_subprotocol_is_accepted(
    ws_broker: tuple[RunningBroker, Endpoint, Endpoint],
) -> None:
    client = WsClient(ws_broker[1], subprotocols=("mqttv3.1",))
    try:
        assert client.accepted().subprotocol == "mqttv3.1"
    finally:
        client.close()


def _rejection(client: WsClient) -> tuple[int, bytes]:
    event = client.event()
    assert isinstance(event, RejectConnection), event
    body = b""
    while True:
        data = client.event()
        assert isinstance(data, RejectData)
        body += data.data
        if data.body_finished:
            return event.status_code, body


@pytest.mark.parametrize(("kwargs", "status", "text"), [
    ({"subprotocols": ()}, 400, "without the mqtt subprotocol"),
    ({"subprotocols": ("chat",)}, 400, "without the mqtt subprotocol"),
    ({"path": "/other"}, 404, "is not '/mqtt'"),
])
def test_bad_upgrades_are_refused_with_an_http_status(
    ws_broker: tuple[RunningBroker, Endpoint, Endpoint], kwargs: dict[str, Any], status: int,
    text: str, caplog: pytest.LogCaptureFixture,
) -> None:
    broker, ws, _tcp = ws_broker
    caplog.set_level(logging.WARNING, "midge.listeners")
    client = WsClient(ws, **kwargs)
    try:
        code, body = _rejection(client)
        assert code == status
        assert text in body.decode()
        assert client.sock.recv(10) == b""
    finally:
        client.close()
    assert any(text in r.getMessage() and f"HTTP {status}" in r.getMessage()
               for r in caplog.records)
    paho_client(ws).close()
    assert broker.broker.stats.transport_errors >= 1


def test_not_http_at_all_is_a_400(ws_broker: tuple[RunningBroker, Endpoint, Endpoint]) -> None:
    _broker, ws, _tcp = ws_broker
    with socket.create_connection((ws.host, ws.port), timeout=5) as sock:
        sock.sendall(encode(Connect("plain", 4), 4) + b"\r\n\r\n")
        reply = sock.recv(1000)
        assert reply.startswith(b"HTTP/1.1 400"), reply


def test_allowed_origins(settings_broker: Callable[..., RunningBroker]) -> None:
    broker = settings_broker([listener("ws", allowed_origins=("https://dash.example",))])
    (ws,) = endpoints(broker)
    good = WsClient(ws, headers=[(b"Origin", b"https://dash.example")])
    bad = WsClient(ws, headers=[(b"Origin", b"https://evil.example")])
    none = WsClient(ws)
    try:
        good.connect()
        assert _rejection(bad)[0] == 403
        assert _rejection(none)[0] == 403
    finally:
        for client in (good, bad, none):
            client.close()


def test_text_frames_and_oversized_frames_close_only_that_connection(
    ws_broker: tuple[RunningBroker, Endpoint, Endpoint], caplog: pytest.LogCaptureFixture,
) -> None:
    _broker, ws, tcp = ws_broker
    caplog.set_level(logging.WARNING, "midge.listeners")
    web = paho_client(ws)
    other = paho_client(tcp)
    try:
        web.subscribe("keep/#")
        texty = WsClient(ws)
        texty.connect("texty")
        texty.sock.sendall(texty.ws.send(TextMessage(data="hello")))
        event = texty.event()
        assert isinstance(event, CloseConnection) and event.code == 1003, event
        big = WsClient(ws)
        big.connect("big")
        # a PUBLISH the decoder waits the rest of, in one frame over max_frame_size (65536)
        big.send_frames(encode(Publish("big", b"x" * 70000), 4))
        event = big.event()
        assert isinstance(event, CloseConnection) and event.code == 1009, event
        for client in (texty, big):
            client.sock.settimeout(3)
            assert client.sock.recv(100) == b""
            client.close()
        other.publish("keep/going", b"still here")
        assert web.expect().payload == b"still here"
    finally:
        web.close()
        other.close()
    logged = " ".join(r.getMessage() for r in caplog.records)
    assert "text frame" in logged and "max_frame_size" in logged


def test_ping_is_answered_and_close_is_a_handshake(
    ws_broker: tuple[RunningBroker, Endpoint, Endpoint],
) -> None:
    broker, ws, _tcp = ws_broker
    client = WsClient(ws)
    try:
        client.connect("pinger")
        client.sock.sendall(client.ws.send(Ping(payload=b"are you there")))
        event = client.event()
        assert isinstance(event, Pong) and event.payload == b"are you there"
        client.sock.sendall(client.ws.send(CloseConnection(code=1000)))
        event = client.event()
        assert isinstance(event, CloseConnection) and event.code == 1000
        client.sock.settimeout(3)
        assert client.sock.recv(10) == b""
    finally:
        client.close()
    deadline = time.monotonic() + 3
    while broker.call(broker.broker.client, "pinger") is not None:
        assert time.monotonic() < deadline
        time.sleep(0.02)


def test_a_server_side_close_sends_disconnect_then_a_close_frame(
    ws_broker: tuple[RunningBroker, Endpoint, Endpoint],
) -> None:
    broker, ws, _tcp = ws_broker
    client = WsClient(ws)
    try:
        client.accepted()
        client.send_frames(encode(Connect("kicked", 5), 5))
        client.decoder.protocol_level = 5
        assert isinstance(client.packet(), ConnAck)
        assert broker.call(broker.broker.disconnect, "kicked", 0x98)
        packet = client.packet()
        assert isinstance(packet, Disconnect) and packet.reason_code == 0x98
        event = client.event()
        assert isinstance(event, CloseConnection) and event.code == 1000
        client.sock.sendall(client.ws.send(event.response()))
    finally:
        client.close()


def test_a_stalled_upgrade_is_closed_after_connect_timeout(
    ws_broker: tuple[RunningBroker, Endpoint, Endpoint],
) -> None:
    _broker, ws, _tcp = ws_broker
    with socket.create_connection((ws.host, ws.port), timeout=5) as sock:
        sock.sendall(b"GET /mqtt HTTP/1.1\r\nHost: x\r\n")  # headers never end
        started = time.monotonic()
        assert sock.recv(100) == b""
        assert 0.5 < time.monotonic() - started < 3


@pytest.mark.parametrize("trusted", [True, False])
def test_x_forwarded_for_only_when_trusted(settings_broker: Callable[..., RunningBroker],
                                           recorder: Recorder, trusted: bool) -> None:
    broker = settings_broker([listener("ws", trust_forwarded=trusted)],
                             plugins=[("rec", recorder)])
    (ws,) = endpoints(broker)
    client = WsClient(ws, headers=[(b"X-Forwarded-For", b"203.0.113.7, 10.0.0.1")])
    try:
        client.connect("forwarded")
        host = recorder.seen.wait("forwarded")[1]
        assert host == ("203.0.113.7" if trusted else "127.0.0.1")
    finally:
        client.close()


def test_websocket_over_the_trio_backend(settings_broker: Callable[..., RunningBroker],
                                         pki: Pki) -> None:
    broker = settings_broker([listener("ws"), listener("wss", pki, mutual=False)],
                             backend="trio")
    ws, wss = endpoints(broker)
    a = paho_client(ws)
    b = paho_client(wss, pki)
    b.subscribe("trio/ws", 1)
    a.publish("trio/ws", b"via trio", 1)
    assert b.expect().payload == b"via trio"
    a.close()
    b.close()
    texty = WsClient(ws)
    texty.connect("texty")
    texty.sock.sendall(texty.ws.send(TextMessage(data="hello")))
    event = texty.event()
    assert isinstance(event, CloseConnection) and event.code == 1003
    texty.close()


# -- MQTT.js under node ---------------------------------------------------------------------



def node_available() -> bool:
    return shutil.which("node") is not None and (JS / "node_modules" / "mqtt").is_dir()


needs_node = pytest.mark.skipif(
    not node_available(), reason="node and core/tests/js/node_modules (npm ci) are needed; "
    ".ci/run installs them",
)


@needs_node
@pytest.mark.parametrize("kind", ["ws", "wss"])
def test_mqttjs_over_ws_and_wss_in_node(settings_broker: Callable[..., RunningBroker],
                                        pki: Pki, kind: str) -> None:
    broker = settings_broker([listener(kind, pki, mutual=False)])
    (endpoint,) = endpoints(broker)
    script = JS / "roundtrip.js"
    scheme = "wss" if kind == "wss" else "ws"
    # the server certificate names 127.0.0.1: MQTT.js verifies it
    args = ["node", str(script), f"{scheme}://127.0.0.1:{endpoint.port}/mqtt"]
    if kind == "wss":
        args.append(pki.ca)
    done = subprocess.run(args, capture_output=True, text=True, timeout=20,
                          env={"NODE_PATH": str(JS / "node_modules"), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, (done.stdout, done.stderr)
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {
        "topic": "js/echo", "payload": "hello from MQTT.js"}
