"""Helpers for the transport tests: listener settings for each type, paho clients over
TCP, TLS, WebSocket and Unix sockets, and recording hooks."""

from __future__ import annotations

import queue
import socket
import ssl
import threading
import uuid
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as paho
from conftest import Client, Pki, RunningBroker
from paho.mqtt.enums import CallbackAPIVersion

from midge import ListenerSettings, hookimpl


def tls_keys(pki: Pki, mutual: bool = True, **extra: Any) -> dict[str, Any]:
    keys: dict[str, Any] = {"certfile": pki.server_cert, "keyfile": pki.server_key}
    if mutual:
        keys.update(cafile=pki.ca, require_certificate=True)
    keys.update(extra)
    return keys


def listener(kind: str, pki: Pki | None = None, *, path: str = "", mutual: bool = True,
             **extra: Any) -> ListenerSettings:
    """A listener of ``kind`` on a free loopback port (or ``path`` for unix)."""
    if kind == "unix":
        return ListenerSettings(type="unix", path=path, **{"allow_anonymous": True, **extra})
    keys: dict[str, Any] = {"allow_anonymous": True}
    if kind in ("tls", "wss"):
        assert pki is not None
        keys.update(tls_keys(pki, mutual))
    if kind in ("ws", "wss"):
        keys["path"] = "/mqtt"
    keys.update(extra)
    return ListenerSettings(type=kind, host="127.0.0.1", port=0, **keys)


@dataclass
class Endpoint:
    """Where and how a client reaches one listener."""

    kind: str
    host: str = "127.0.0.1"
    port: int = 0
    path: str = ""


def endpoints(broker: RunningBroker) -> list[Endpoint]:
    out = []
    for spec, (host, port) in zip(broker.broker.settings.listeners, broker.broker.addresses,
                                  strict=True):
        out.append(Endpoint(spec.type, host, port, spec.path))
    return out


def client_context(pki: Pki, cert: str | None = None, key: str | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=pki.ca)
    if cert is not None:
        context.load_cert_chain(cert, key)
    return context


def paho_client(endpoint: Endpoint, pki: Pki | None = None, *, cert: str | None = None,
                key: str | None = None, client_id: str | None = None,
                username: str | None = None, password: str | None = None,
                protocol: int = paho.MQTTv311, wait: bool = True) -> Client:
    """A connected paho client over ``endpoint``'s transport (``wait``: CONNACK 0)."""
    transport = {"ws": "websockets", "wss": "websockets", "unix": "unix"}.get(endpoint.kind,
                                                                                "tcp")
    client = paho.Client(CallbackAPIVersion.VERSION2, protocol=protocol, transport=transport,
                         client_id=client_id or f"t-{uuid.uuid4().hex[:8]}")
    record = Client(client)
    client.on_message = lambda c, u, m: record.messages.put(m)
    client.on_connect = lambda c, u, flags, rc, props: record.connack.put((flags, rc, props))
    client.on_disconnect = lambda c, u, flags, rc, props: record.disconnects.put(rc)
    if endpoint.kind in ("ws", "wss"):
        client.ws_set_options(path=endpoint.path or "/mqtt")
    if endpoint.kind in ("tls", "wss"):
        assert pki is not None
        client.tls_set_context(client_context(pki, cert, key))
    if username is not None:
        client.username_pw_set(username, password)
    if endpoint.kind == "unix":
        client.connect(endpoint.path, 1, keepalive=30)  # paho wants a port; unix ignores it
    else:
        client.connect(endpoint.host, endpoint.port, keepalive=30)
    client.loop_start()
    if wait:
        try:
            _flags, rc, _props = record.connack.get(timeout=5)
        except queue.Empty:
            record.close()
            raise AssertionError(f"no CONNACK over {endpoint.kind}") from None
        assert not rc.is_failure, rc
    return record


def tls_handshake(endpoint: Endpoint, pki: Pki, cert: str | None = None,
                  key: str | None = None) -> ssl.SSLSocket:
    """A TLS socket to ``endpoint`` after the handshake (raises what the handshake does)."""
    sock = socket.create_connection((endpoint.host, endpoint.port), timeout=5)
    try:
        return client_context(pki, cert, key).wrap_socket(sock, server_hostname="127.0.0.1")
    except BaseException:
        sock.close()
        raise


def refused_over_tls(endpoint: Endpoint, pki: Pki, cert: str | None = None,
                     key: str | None = None) -> str:
    """Connect with TLS and send CONNECT; the error that shows the broker refused the
    handshake (with TLS 1.3 a client learns of it only when it next reads)."""
    from midge.codec import Connect, encode

    try:
        tls = tls_handshake(endpoint, pki, cert, key)
    except (ssl.SSLError, ConnectionError) as exc:
        return str(exc)
    try:
        tls.sendall(encode(Connect("refused", 4), 4))
        data = tls.recv(100)
    except (ssl.SSLError, ConnectionError) as exc:
        return str(exc)
    finally:
        tls.close()
    assert not data, f"the broker answered over TLS: {data!r}"
    return "closed"


@dataclass
class Seen:
    """What hooks saw of connecting clients: client id -> (username, remote host, port,
    certificate, listener name)."""

    clients: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    changed: threading.Condition = field(default_factory=threading.Condition)

    def wait(self, client_id: str, timeout: float = 5.0) -> tuple[Any, ...]:
        with self.changed:
            assert self.changed.wait_for(lambda: client_id in self.clients, timeout), (
                f"{client_id} never reached on_connect"
            )
            return self.clients[client_id]


class Recorder:
    """Records what ``on_connect`` sees of each client (it decides nothing)."""

    def __init__(self) -> None:
        self.seen = Seen()

    @hookimpl
    def on_connect(self, client: Any, packet: Any) -> None:
        with self.seen.changed:
            self.seen.clients[client.client_id] = (
                client.username, client.remote_host, client.remote_port, client.certificate,
                client.listener.name,
            )
            self.seen.changed.notify_all()
