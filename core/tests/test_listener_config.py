"""Listener configuration: each type's keys, their defaults, and a ConfigError naming
the key for everything wrong."""

from __future__ import annotations

from typing import Any

import pytest

from midge.config import ConfigError, ListenerSettings, parse


def one(**table: Any) -> ListenerSettings:
    return parse({"listeners": [table]}, "test.toml").listeners[0]


TLS = {"certfile": "server.pem", "keyfile": "server.key"}


def test_each_type_with_its_defaults() -> None:
    assert one(type="tcp", port=1883).proxy_protocol is False
    tls = one(type="tls", port=8883, **TLS)
    assert (tls.min_version, tls.require_certificate, tls.identity_field) == (
        "TLSv1.2", False, "CN")
    ws = one(type="ws", port=8080)
    assert (ws.path, ws.max_frame_size, ws.allowed_origins) == ("/mqtt", 1024 * 1024, ())
    wss = one(type="wss", port=8081, path="/ws", allowed_origins=["https://a.example"], **TLS)
    assert (wss.path, wss.allowed_origins) == ("/ws", ("https://a.example",))
    unix = one(type="unix", path="/run/midge.sock", mode=0o600)
    assert (unix.mode, unix.label) == (0o600, "unix:/run/midge.sock")
    assert one(type="unix", path="/x.sock").mode == 0o660
    named = one(type="tcp", name="edge", max_connections=10)
    assert (named.label, named.max_connections) == ("edge", 10)


def test_mutual_tls_with_identity() -> None:
    spec = one(type="tls", cafile="ca.pem", require_certificate=True,
               use_identity_as_username=True, identity_field="emailAddress", **TLS)
    assert spec.use_identity_as_username and spec.identity_field == "emailAddress"


@pytest.mark.parametrize(("table", "key", "message"), [
    ({"type": "quic"}, "type", "'quic' is not a listener type; allowed: tcp, tls, ws, wss, unix"),
    ({"type": "tls"}, "certfile", "a tls listener needs certfile"),
    ({"type": "wss", "certfile": "c"}, "keyfile", "a wss listener needs keyfile"),
    ({"type": "tcp", "certfile": "c"}, "certfile", "not a key of a tcp listener"),
    ({"type": "ws", "require_certificate": True}, "require_certificate",
     "not a key of a ws listener"),
    ({"type": "tcp", "path": "/mqtt"}, "path", "not a key of a tcp listener"),
    ({"type": "tls", "max_frame_size": 10, **TLS}, "max_frame_size", "only of: ws, wss"),
    ({"type": "unix", "proxy_protocol": True, "path": "/s"}, "proxy_protocol",
     "not a key of a unix listener"),
    ({"type": "unix"}, "path", "needs the path of its socket file"),
    ({"type": "unix", "path": "/s", "port": 1}, "port", "not a key of a unix listener"),
    ({"type": "tcp", "mode": 0o600}, "mode", "not a key of a tcp listener"),
    ({"type": "unix", "path": "/s", "mode": 0o1777}, "mode", "out of range"),
    ({"type": "ws", "path": "mqtt"}, "path", "is not a URL path"),
    ({"type": "ws", "max_frame_size": 1}, "max_frame_size", "out of range"),
    ({"type": "ws", "allowed_origins": "https://a"}, "allowed_origins",
     "must be an array of strings"),
    ({"type": "ws", "allowed_origins": [1]}, "allowed_origins", "must be an array of strings"),
    ({"type": "ws", "trust_forwarded": "yes"}, "trust_forwarded", "must be true or false"),
    ({"type": "tls", "min_version": "TLSv1.1", **TLS}, "min_version",
     "'TLSv1.1' is not allowed; allowed: TLSv1.2, TLSv1.3"),
    ({"type": "tls", "identity_field": "shoe_size", **TLS}, "identity_field",
     "'shoe_size' is not allowed"),
    ({"type": "tls", "require_certificate": True, **TLS}, "require_certificate",
     "needs cafile or capath"),
    ({"type": "tls", "use_identity_as_username": True, "cafile": "ca", **TLS},
     "use_identity_as_username", "needs require_certificate = true"),
    ({"type": "tcp", "max_connections": 0}, "max_connections", "out of range"),
    ({"type": "tcp", "proxy_protocol": 1}, "proxy_protocol", "must be true or false"),
    ({"type": "tcp", "ciphers": "HIGH"}, "ciphers", "not a key of a tcp listener"),
    ({"type": "tls", "sni": "x", **TLS}, "sni", "unknown key"),
])
def test_wrong_listener_keys_are_named(table: dict[str, Any], key: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        one(**table)
    assert caught.value.key == f"listeners[0].{key}"
    assert message in str(caught.value), str(caught.value)


def test_one_socket_file_twice_is_an_error() -> None:
    with pytest.raises(ConfigError, match="unix:/s is used twice"):
        parse({"listeners": [{"type": "unix", "path": "/s"}, {"type": "unix", "path": "/s"}]})


def test_several_listeners_of_one_type() -> None:
    settings = parse({"listeners": [{"type": "ws", "port": 1}, {"type": "ws", "port": 2}]})
    assert [spec.port for spec in settings.listeners] == [1, 2]
