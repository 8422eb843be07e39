"""The http listener over TLS (HTTPS) with certificates made by trustme and real HTTPS
clients (ssl + http.client): the endpoints over https, plain HTTP to the HTTPS port
answered 400 without a traceback, mutual TLS refusing a client without a certificate,
certificate reload on SIGHUP, and the configuration keys."""

from __future__ import annotations

import http.client
import json
import logging
import shutil
import socket
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import Pki
from prometheus_client.parser import text_string_to_metric_families
from test_http_listener import Observed, observed_factory  # noqa: F401 - a fixture

from midge import ListenerSettings
from midge.config import ConfigError, parse


def https(pki: Pki, **keys: Any) -> ListenerSettings:
    keys.setdefault("certfile", pki.server_cert)
    keys.setdefault("keyfile", pki.server_key)
    return ListenerSettings(type="http", host="127.0.0.1", port=0, **keys)


def client_context(pki: Pki, cert: str | None = None, key: str | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=pki.ca)
    if cert is not None:
        context.load_cert_chain(cert, key)
    return context


def fetch(port: int, path: str, context: ssl.SSLContext) -> tuple[int, bytes]:
    conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=5, context=context)
    try:
        conn.request("GET", path)
        answer = conn.getresponse()
        return answer.status, answer.read()
    finally:
        conn.close()


def no_tracebacks(caplog: pytest.LogCaptureFixture) -> None:
    assert not [r for r in caplog.records if r.exc_info], caplog.text
    assert "Traceback" not in caplog.text


def test_the_endpoints_over_https(observed_factory: Callable[..., Observed],  # noqa: F811
                                  pki: Pki) -> None:
    running = observed_factory(http=https(pki))
    context = client_context(pki)
    assert fetch(running.http_port, "/healthz", context) == (200, b'{"status":"ok"}')
    # several requests on one TLS connection, a large answer among them
    conn = http.client.HTTPSConnection("127.0.0.1", running.http_port, timeout=5,
                                       context=context)
    for path in ("/readyz", "/metrics", "/stats", "/"):
        conn.request("GET", path)
        answer = conn.getresponse()
        body = answer.read()
        assert answer.status == 200, path
        if path == "/metrics":
            names = {family.name for family in text_string_to_metric_families(body.decode())}
            assert "midge_messages_received" in names
    assert conn.sock is not None
    assert conn.sock.version() in ("TLSv1.2", "TLSv1.3")
    conn.close()
    info = json.loads(fetch(running.http_port, "/stats", context)[1])
    assert [listener["type"] for listener in info["listeners"]] == ["tcp", "http"]


def test_plain_http_to_the_https_port_is_refused_cleanly(
    observed_factory: Callable[..., Observed], pki: Pki,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "midge")
    running = observed_factory(http=https(pki))
    plain = http.client.HTTPConnection("127.0.0.1", running.http_port, timeout=5)
    plain.request("GET", "/healthz")
    answer = plain.getresponse()
    assert answer.status == 400
    assert json.loads(answer.read()) == {"error": "this is an HTTPS listener: use https://"}
    assert answer.getheader("connection") == "close"
    plain.close()
    # bytes that are neither TLS nor HTTP: closed with an alert, nothing answered in clear
    with socket.create_connection(("127.0.0.1", running.http_port), timeout=5) as sock:
        sock.sendall(b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c")
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    assert not received.startswith(b"HTTP")
    # the listener serves https as before
    assert fetch(running.http_port, "/healthz", client_context(pki))[0] == 200
    lines = [r.getMessage() for r in caplog.records if r.name == "midge.http"]
    assert any("sent plain HTTP to an HTTPS listener; answered 400" in line for line in lines)
    assert any("TLS handshake failed: not TLS" in line for line in lines), lines
    no_tracebacks(caplog)


def test_require_certificate_refuses_a_client_without_one(
    observed_factory: Callable[..., Observed], pki: Pki,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "midge")
    running = observed_factory(http=https(pki, cafile=pki.ca, require_certificate=True))
    with pytest.raises(ssl.SSLError) as refused:
        fetch(running.http_port, "/healthz", client_context(pki))
    # TLS 1.3: the client learns it from the server's alert
    assert "certificate required" in str(refused.value)
    with pytest.raises(ssl.SSLError) as untrusted:
        fetch(running.http_port, "/healthz",
              client_context(pki, pki.untrusted_cert, pki.untrusted_key))
    assert "unknown ca" in str(untrusted.value)
    status, body = fetch(running.http_port, "/healthz",
                         client_context(pki, pki.client_cert, pki.client_key))
    assert (status, body) == (200, b'{"status":"ok"}')
    lines = [r.getMessage() for r in caplog.records if r.name == "midge.http"]
    assert any("TLS handshake failed: peer did not return a certificate" in line
               for line in lines), lines
    no_tracebacks(caplog)


def test_reload_swaps_the_certificate(observed_factory: Callable[..., Observed],  # noqa: F811
                                      pki: Pki, tmp_path: Path,
                                      caplog: pytest.LogCaptureFixture) -> None:
    cert, key = tmp_path / "server.pem", tmp_path / "server.key"
    shutil.copy(pki.server_cert, cert)
    shutil.copy(pki.server_key, key)
    running = observed_factory(http=https(pki, certfile=str(cert), keyfile=str(key)))

    def server_cn() -> str:
        with socket.create_connection(("127.0.0.1", running.http_port), timeout=5) as sock, \
                client_context(pki).wrap_socket(sock, server_hostname="127.0.0.1") as wrapped:
            peer = wrapped.getpeercert()
        return str(dict(x[0] for x in peer["subject"])["commonName"])

    assert server_cn() == "midge-server"
    shutil.copy(pki.other_server_cert, cert)
    shutil.copy(pki.other_server_key, key)
    caplog.set_level(logging.INFO, "midge.listeners")
    running.call(running.broker.reload)
    assert server_cn() == "midge-server-2"
    # a broken file: the certificate in use stays, and the log says why
    key.write_text("not a key\n")
    running.call(running.broker.reload)
    assert any("keeping the current certificates" in r.getMessage()
               and r.levelno == logging.ERROR for r in caplog.records)
    assert server_cn() == "midge-server-2"


def test_config_https_keys(pki: Pki) -> None:
    settings = parse({"listeners": [{"type": "http", "certfile": pki.server_cert,
                                     "keyfile": pki.server_key, "cafile": pki.ca,
                                     "require_certificate": True, "min_version": "TLSv1.3",
                                     "ciphers": "ECDHE+AESGCM"}]})
    spec = settings.listeners[0]
    assert spec.tls and spec.require_certificate and spec.min_version == "TLSv1.3"
    assert not parse({"listeners": [{"type": "http"}]}).listeners[0].tls
    for raw, key, message in (
        ({"cafile": pki.ca}, "cafile",
         "an http listener takes the TLS keys only with certfile and keyfile (it then "
         "serves HTTPS)"),
        ({"certfile": pki.server_cert}, "keyfile", "an https listener needs keyfile (PEM file)"),
        ({"certfile": pki.server_cert, "keyfile": pki.server_key,
          "require_certificate": True}, "require_certificate",
         "needs cafile or capath: the CAs client certificates must be signed by"),
        ({"certfile": pki.server_cert, "keyfile": pki.server_key, "min_version": "SSLv3"},
         "min_version", "'SSLv3' is not allowed; allowed: TLSv1.2, TLSv1.3"),
        ({"use_identity_as_username": True}, "use_identity_as_username",
         "not a key of a http listener (only of: tls, wss)"),
    ):
        with pytest.raises(ConfigError) as caught:
            parse({"listeners": [{"type": "http", **raw}]})
        assert str(caught.value) == f"<config>: listeners[0].{key}: {message}", raw


def test_an_unusable_certificate_stops_startup_naming_it(pki: Pki) -> None:
    import anyio

    from midge import Broker, Settings

    spec = https(pki, keyfile="/nonexistent/key.pem", name="status")

    async def start() -> None:
        async with Broker(Settings(listeners=(spec,))):
            pass

    with pytest.raises(OSError) as caught:
        anyio.run(start)
    assert str(caught.value).startswith(
        "status: certfile '" + pki.server_cert + "' / keyfile '/nonexistent/key.pem' cannot "
        "be used")
