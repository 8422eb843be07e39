"""PROXY protocol on tcp, tls and ws listeners: headers written by the test, the
address they carry checked through a hook; connections without a valid header closed,
alone."""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable

import pytest
from conftest import Pki, RawClient, RunningBroker
from test_proxy_header import v2, v2_tcp4, v2_tcp6
from transport_kit import Recorder, client_context, endpoints, listener, paho_client
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, BytesMessage, Request

from midge.codec import ConnAck, Connect, Decoder, Role, encode


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


def connect_through(sock: socket.socket, client_id: str) -> None:
    raw = RawClient(0, sock=sock)
    assert raw.connect(client_id) == ConnAck(0)


HEADERS = {
    "v1": b"PROXY TCP4 203.0.113.7 192.0.2.1 56324 1883\r\n",
    "v2": v2_tcp4("203.0.113.7", 56324, "192.0.2.1", 1883),
}


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_tcp_with_proxy_protocol_reports_the_carried_address(
    settings_broker: Callable[..., RunningBroker], recorder: Recorder, version: str
) -> None:
    broker = settings_broker([listener("tcp", proxy_protocol=True)],
                             plugins=[("rec", recorder)])
    (tcp,) = endpoints(broker)
    with socket.create_connection((tcp.host, tcp.port), timeout=5) as sock:
        # the header and the CONNECT in one segment, as a balancer sends them
        sock.sendall(HEADERS[version] + encode(Connect(f"proxied-{version}", 4), 4))
        raw = RawClient(0, sock=sock)
        assert raw.recv() == ConnAck(0)
        _user, host, port, _cert, _name = recorder.seen.wait(f"proxied-{version}")
        assert (host, port) == ("203.0.113.7", 56324)
        client = broker.call(broker.broker.client, f"proxied-{version}")
        assert client.remote == "203.0.113.7:56324"


def test_v2_ipv6_and_local(settings_broker: Callable[..., RunningBroker],
                           recorder: Recorder) -> None:
    broker = settings_broker([listener("tcp", proxy_protocol=True)],
                             plugins=[("rec", recorder)])
    (tcp,) = endpoints(broker)
    with socket.create_connection((tcp.host, tcp.port), timeout=5) as sock:
        sock.sendall(v2_tcp6("2001:db8::7", 4242, "2001:db8::1", 1883))
        connect_through(sock, "six")
    assert recorder.seen.wait("six")[1:3] == ("2001:db8::7", 4242)
    with socket.create_connection((tcp.host, tcp.port), timeout=5) as sock:
        sock.sendall(v2(0, 0x00, b""))  # LOCAL: a health check; the socket address stands
        connect_through(sock, "local")
    assert recorder.seen.wait("local")[1] == "127.0.0.1"


def test_tls_behind_a_proxy(settings_broker: Callable[..., RunningBroker], pki: Pki,
                            recorder: Recorder) -> None:
    broker = settings_broker([listener("tls", pki, proxy_protocol=True)],
                             plugins=[("rec", recorder)])
    (tls,) = endpoints(broker)
    sock = socket.create_connection((tls.host, tls.port), timeout=5)
    sock.sendall(HEADERS["v2"])  # the PROXY header comes before the TLS handshake
    wrapped = client_context(pki, pki.client_cert, pki.client_key).wrap_socket(
        sock, server_hostname="127.0.0.1")
    with wrapped:
        connect_through(wrapped, "tls-proxied")
    _user, host, port, cert, _name = recorder.seen.wait("tls-proxied")
    assert (host, port) == ("203.0.113.7", 56324)
    assert cert is not None and cert.common_name == "sensor-1"


def test_websocket_behind_a_proxy(settings_broker: Callable[..., RunningBroker],
                                  recorder: Recorder) -> None:
    broker = settings_broker([listener("ws", proxy_protocol=True)],
                             plugins=[("rec", recorder)])
    (ws_end,) = endpoints(broker)
    ws = WSConnection(ConnectionType.CLIENT)
    with socket.create_connection((ws_end.host, ws_end.port), timeout=5) as sock:
        sock.sendall(HEADERS["v1"] + ws.send(Request(host="x", target="/mqtt",
                                                     subprotocols=["mqtt"])))
        decoder = Decoder(Role.CLIENT, protocol_level=4)
        events: list[object] = []
        while not any(isinstance(e, AcceptConnection) for e in events):
            ws.receive_data(sock.recv(65536))
            events.extend(ws.events())
        sock.sendall(ws.send(BytesMessage(data=encode(Connect("ws-proxied", 4), 4))))
        while (packet := decoder.next_packet()) is None:
            ws.receive_data(sock.recv(65536))
            for event in ws.events():
                assert isinstance(event, BytesMessage)
                decoder.feed(bytes(event.data))
        assert packet == ConnAck(0)
    assert recorder.seen.wait("ws-proxied")[1:3] == ("203.0.113.7", 56324)


@pytest.mark.parametrize(("data", "logged"), [
    (encode(Connect("no-header", 4), 4), "no PROXY protocol header"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 99999 1\r\n", "port '99999'"),
    (b"PROXY TCP4 not-an-address 5.6.7.8 1 1\r\n", "is not an IP address"),
    (v2(1, 0x11, b"\x00" * 4), "IPv4 addresses need 12 bytes"),
])
def test_a_missing_or_malformed_header_closes_only_that_connection(
    settings_broker: Callable[..., RunningBroker], data: bytes, logged: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    broker = settings_broker([listener("tcp", proxy_protocol=True), listener("tcp")])
    proxied, plain = endpoints(broker)
    caplog.set_level(logging.WARNING, "midge.listeners")
    a = paho_client(plain)
    b = paho_client(plain)
    a.subscribe("still/#")
    with socket.create_connection((proxied.host, proxied.port), timeout=5) as sock:
        sock.sendall(data)
        assert sock.recv(100) == b""  # closed, and nothing said in MQTT
    b.publish("still/here", b"yes")
    assert a.expect().payload == b"yes"
    a.close()
    b.close()
    lines = [r.getMessage() for r in caplog.records if logged in r.getMessage()]
    assert len(lines) == 1, [r.getMessage() for r in caplog.records]
    assert broker.broker.stats.transport_errors == 1


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_a_header_that_never_ends_is_closed_after_connect_timeout(
    settings_broker: Callable[..., RunningBroker], backend: str,
) -> None:
    broker = settings_broker([listener("tcp", proxy_protocol=True)], connect_timeout=1,
                             backend=backend)
    (tcp,) = endpoints(broker)
    with socket.create_connection((tcp.host, tcp.port), timeout=5) as sock:
        sock.sendall(b"PROXY TCP4 1.2.3.4")
        started = time.monotonic()
        assert sock.recv(100) == b""
        assert 0.5 < time.monotonic() - started < 3


def test_proxy_header_on_trio(settings_broker: Callable[..., RunningBroker],
                              recorder: Recorder) -> None:
    broker = settings_broker([listener("tcp", proxy_protocol=True)],
                             plugins=[("rec", recorder)], backend="trio")
    (tcp,) = endpoints(broker)
    with socket.create_connection((tcp.host, tcp.port), timeout=5) as sock:
        sock.sendall(HEADERS["v2"] + encode(Connect("trio-proxied", 4), 4))
        assert RawClient(0, sock=sock).recv() == ConnAck(0)
    assert recorder.seen.wait("trio-proxied")[1:3] == ("203.0.113.7", 56324)
    with socket.create_connection((tcp.host, tcp.port), timeout=5) as sock:
        sock.sendall(b"garbage\r\n")
        assert sock.recv(100) == b""


def test_transport_errors_are_published_in_sys(
    settings_broker: Callable[..., RunningBroker],
) -> None:
    broker = settings_broker([listener("tcp", proxy_protocol=True), listener("tcp")],
                             sys_interval=1)
    proxied, plain = endpoints(broker)
    for _ in range(2):
        with socket.create_connection((proxied.host, proxied.port), timeout=5) as sock:
            sock.sendall(b"not a header\r\n")
            assert sock.recv(10) == b""
    watcher = paho_client(plain)
    watcher.subscribe("$SYS/broker/connections/transport errors")
    deadline = time.monotonic() + 5
    while True:
        message = watcher.expect(timeout=3)
        if message.payload == b"2":
            break
        assert time.monotonic() < deadline, message.payload
    watcher.close()
