"""TLS listeners with real paho clients and certificates made by the tests: mutual TLS,
the certificate as hooks see it, use_identity_as_username, refusals (no, untrusted and
expired certificates, plain MQTT, stalled handshakes) that leave other clients alone,
and certificate reload."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import re
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from conftest import Pki, RunningBroker
from transport_kit import Endpoint, Recorder, endpoints, listener, paho_client, refused_over_tls

from midge import hookimpl
from midge.codec import Connect, encode


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def mtls(settings_broker: Callable[..., RunningBroker], pki: Pki,
         recorder: Recorder) -> tuple[RunningBroker, Endpoint, Endpoint]:
    """A broker with a mutual-TLS listener and a plain TCP one."""
    broker = settings_broker([listener("tls", pki, name="devices"), listener("tcp")],
                             plugins=[("recorder", recorder)], connect_timeout=1)
    tls, tcp = endpoints(broker)
    return broker, tls, tcp


def round_trip(a: Any, b: Any, topic: str) -> None:
    b.subscribe(topic, 1)
    a.publish(topic, b"over tls", 1)
    message = b.expect()
    assert (message.topic, message.payload) == (topic, b"over tls")


def test_a_client_certificate_connects_and_hooks_see_it(
    mtls: tuple[RunningBroker, Endpoint, Endpoint], pki: Pki, recorder: Recorder
) -> None:
    _broker, tls, tcp = mtls
    device = paho_client(tls, pki, cert=pki.client_cert, key=pki.client_key,
                         client_id="sensor-a")
    watcher = paho_client(tcp)
    try:
        round_trip(device, watcher, "tls/a")
        username, host, _port, certificate, listener_name = recorder.seen.wait("sensor-a")
        assert username is None  # no use_identity_as_username here
        assert host == "127.0.0.1"
        assert listener_name == "devices"
        assert certificate is not None
        assert certificate.common_name == "sensor-1"
        assert certificate.subject["O"] == ("Acme",)
        pem = Path(pki.client_cert).read_text()
        # the same RFC 4514 string OpenSSL prints (trustme adds a random OU)
        openssl = subprocess.run(
            ["openssl", "x509", "-noout", "-subject", "-nameopt", "RFC2253"],
            input=pem, capture_output=True, text=True, check=True,
        ).stdout.strip().removeprefix("subject=")
        assert certificate.dn == openssl
        assert certificate.field("DN") == openssl
        expected = hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem)).hexdigest()
        assert certificate.fingerprint == expected
        assert certificate.field("fingerprint") == expected
        assert "midge test CA" in certificate.issuer
    finally:
        device.close()
        watcher.close()


def test_without_a_certificate_the_mutual_listener_refuses(
    mtls: tuple[RunningBroker, Endpoint, Endpoint], pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    broker, tls, tcp = mtls
    caplog.set_level(logging.WARNING, "midge.listeners")
    before = broker.broker.stats.transport_errors
    refused_over_tls(tls, pki)
    deadline = time.monotonic() + 3
    while broker.broker.stats.transport_errors == before and time.monotonic() < deadline:
        time.sleep(0.02)
    assert broker.broker.stats.transport_errors == before + 1
    lines = [r.getMessage() for r in caplog.records if "TLS handshake failed" in r.getMessage()]
    assert len(lines) == 1, lines
    assert "devices" in lines[0]
    # the broker is fine: a client with a certificate still gets through
    paho_client(tls, pki, cert=pki.client_cert, key=pki.client_key).close()
    paho_client(tcp).close()


@pytest.mark.parametrize("which", ["untrusted", "expired"])
def test_untrusted_and_expired_certificates_are_refused(
    mtls: tuple[RunningBroker, Endpoint, Endpoint], pki: Pki, which: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    _broker, tls, _tcp = mtls
    caplog.set_level(logging.WARNING, "midge.listeners")
    cert, key = getattr(pki, f"{which}_cert"), getattr(pki, f"{which}_key")
    refused_over_tls(tls, pki, cert, key)
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline and not any(
        "TLS handshake failed" in r.getMessage() for r in caplog.records
    ):
        time.sleep(0.02)
    line = next(r.getMessage() for r in caplog.records if "TLS handshake failed" in r.getMessage())
    reason = "expired" if which == "expired" else "unknown ca|unable to get|self.signed|verify"
    assert re.search(reason, line, re.IGNORECASE), line


def test_an_optional_certificate_listener_takes_clients_with_and_without(
    settings_broker: Callable[..., RunningBroker], pki: Pki, recorder: Recorder
) -> None:
    broker = settings_broker(
        [listener("tls", pki, mutual=False, cafile=pki.ca)], plugins=[("rec", recorder)]
    )
    (tls,) = endpoints(broker)
    anonymous = paho_client(tls, pki, client_id="no-cert")
    signed = paho_client(tls, pki, cert=pki.client_cert, key=pki.client_key, client_id="cert")
    try:
        round_trip(anonymous, signed, "optional/x")
        assert recorder.seen.wait("no-cert")[3] is None
        assert recorder.seen.wait("cert")[3].common_name == "sensor-1"
    finally:
        anonymous.close()
        signed.close()


class IdentityAuth:
    """An auth plugin that admits the username "sensor-1" only."""

    def __init__(self) -> None:
        self.usernames: list[str | None] = []

    @hookimpl
    def on_connect_authenticate(self, client: Any, packet: Any) -> bool:
        self.usernames.append(client.username)
        return bool(client.username == "sensor-1")


def test_use_identity_as_username_is_what_the_auth_plugin_sees(
    settings_broker: Callable[..., RunningBroker], pki: Pki
) -> None:
    auth = IdentityAuth()
    spec = listener("tls", pki, use_identity_as_username=True, allow_anonymous=False)
    broker = settings_broker([spec], plugins=[("identity", auth)])
    (tls,) = endpoints(broker)
    # the CONNECT's own username is ignored: the certificate decides
    client = paho_client(tls, pki, cert=pki.client_cert, key=pki.client_key,
                         username="someone-else", password="x")
    client.close()
    assert auth.usernames == ["sensor-1"]


def test_use_identity_with_another_field(
    settings_broker: Callable[..., RunningBroker], pki: Pki, recorder: Recorder
) -> None:
    spec = listener("tls", pki, use_identity_as_username=True, identity_field="O")
    broker = settings_broker([spec], plugins=[("rec", recorder)])
    (tls,) = endpoints(broker)
    paho_client(tls, pki, cert=pki.client_cert, key=pki.client_key, client_id="org").close()
    assert recorder.seen.wait("org")[0] == "Acme"


def test_a_stalled_handshake_is_bounded_and_does_not_delay_others(
    settings_broker: Callable[..., RunningBroker], pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    broker = settings_broker([listener("tls", pki), listener("tcp")], connect_timeout=2)
    tls, tcp = endpoints(broker)
    caplog.set_level(logging.WARNING, "midge.listeners")
    silent = socket.create_connection((tls.host, tls.port), timeout=5)
    half = socket.create_connection((tls.host, tls.port), timeout=5)
    half.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")  # a ClientHello cut short
    try:
        started = time.monotonic()
        # meanwhile, other clients connect and exchange messages at once
        a = paho_client(tls, pki, cert=pki.client_cert, key=pki.client_key)
        b = paho_client(tcp)
        round_trip(a, b, "stalled/others")
        a.close()
        b.close()
        # ... before the stalled ones are dropped: they are still open
        for sock in (silent, half):
            sock.settimeout(0)
            with pytest.raises(BlockingIOError):
                sock.recv(100)
        for sock in (silent, half):
            sock.settimeout(5)
            assert sock.recv(100) == b""  # closed by the broker after connect_timeout
        assert 1.5 < time.monotonic() - started < 5
    finally:
        silent.close()
        half.close()
    stalled = [r for r in caplog.records if "handshake not finished within 2 s" in r.getMessage()]
    assert len(stalled) == 2
    assert broker.broker.stats.transport_errors == 2


def test_plain_mqtt_sent_to_the_tls_port_closes_only_that_connection(
    mtls: tuple[RunningBroker, Endpoint, Endpoint], pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    _broker, tls, tcp = mtls
    caplog.set_level(logging.WARNING, "midge.listeners")
    a = paho_client(tls, pki, cert=pki.client_cert, key=pki.client_key)
    b = paho_client(tcp)
    try:
        plain = socket.create_connection((tls.host, tls.port), timeout=5)
        plain.sendall(encode(Connect("plain", 4), 4))
        data = plain.recv(100)
        # no CONNACK: at most a TLS alert record (content type 21), then the close
        assert not data or data[0] == 0x15, data
        plain.close()
        round_trip(a, b, "plain/others")
    finally:
        a.close()
        b.close()
    assert any("TLS handshake failed" in r.getMessage() for r in caplog.records)


def test_reload_swaps_certificates_and_keeps_connections(
    settings_broker: Callable[..., RunningBroker], pki: Pki, tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    cert, key = tmp_path / "server.pem", tmp_path / "server.key"
    shutil.copy(pki.server_cert, cert)
    shutil.copy(pki.server_key, key)
    spec = listener("tls", pki, mutual=False)
    spec = dataclasses.replace(spec, certfile=str(cert), keyfile=str(key))
    broker = settings_broker([spec])
    (tls,) = endpoints(broker)

    def server_cn() -> str:
        context = ssl.create_default_context(cafile=pki.ca)
        with socket.create_connection((tls.host, tls.port), timeout=5) as sock, \
                context.wrap_socket(sock, server_hostname="127.0.0.1") as wrapped:
            peer = wrapped.getpeercert()
        return dict(x[0] for x in peer["subject"])["commonName"]

    assert server_cn() == "midge-server"
    a = paho_client(tls, pki)
    b = paho_client(tls, pki)
    shutil.copy(pki.other_server_cert, cert)
    shutil.copy(pki.other_server_key, key)
    caplog.set_level(logging.INFO, "midge.listeners")
    broker.call(broker.broker.reload)
    assert server_cn() == "midge-server-2"
    round_trip(a, b, "reload/kept")  # the connections made before are still open

    # a broken new file: the current certificates stay, and the log says why
    key.write_text("not a key\n")
    broker.call(broker.broker.reload)
    assert any("keeping the current certificates" in r.getMessage()
               and r.levelno == logging.ERROR for r in caplog.records)
    assert server_cn() == "midge-server-2"
    c = paho_client(tls, pki)
    round_trip(a, c, "reload/after-bad")
    for client in (a, b, c):
        client.close()


def test_tls_over_the_trio_backend(settings_broker: Callable[..., RunningBroker],
                                   pki: Pki) -> None:
    broker = settings_broker([listener("tls", pki)], backend="trio", connect_timeout=1)
    (tls,) = endpoints(broker)
    a = paho_client(tls, pki, cert=pki.client_cert, key=pki.client_key)
    b = paho_client(tls, pki, cert=pki.client_cert, key=pki.client_key,
                    protocol=paho.MQTTv5)
    round_trip(a, b, "trio/tls")
    a.close()
    b.close()
    refused_over_tls(tls, pki)
    paho_client(tls, pki, cert=pki.client_cert, key=pki.client_key).close()


class SlowAuth:
    """An ``async def`` auth hook: the stacked driver must pause reading while it waits."""

    def __init__(self) -> None:
        self.seen: list[tuple[str | None, str | None]] = []

    @hookimpl
    async def on_connect_authenticate(self, client: Any, packet: Any) -> bool:
        import anyio

        await anyio.sleep(0.05)
        cert = client.certificate
        self.seen.append((client.username, cert.common_name if cert else None))
        return cert is not None

    @hookimpl
    def on_acl_check(self, client: Any, topic: str, write: bool) -> bool:
        return True


def test_an_async_auth_hook_decides_on_the_certificate(
    settings_broker: Callable[..., RunningBroker], pki: Pki
) -> None:
    auth = SlowAuth()
    spec = listener("tls", pki, mutual=False, cafile=pki.ca, allow_anonymous=False)
    broker = settings_broker([spec], plugins=[("slow", auth)])
    (tls,) = endpoints(broker)
    a = paho_client(tls, pki, cert=pki.client_cert, key=pki.client_key, username="u")
    b = paho_client(tls, pki, cert=pki.client_cert, key=pki.client_key, username="v")
    round_trip(a, b, "async/auth")
    a.close()
    b.close()
    refused = paho_client(tls, pki, wait=False)
    _flags, rc, _props = refused.connack.get(timeout=5)
    assert rc.is_failure
    refused.close()
    assert sorted(auth.seen, key=str) == sorted(
        [("u", "sensor-1"), ("v", "sensor-1"), (None, None)], key=str)


def test_a_certificate_without_the_identity_field_is_refused(
    settings_broker: Callable[..., RunningBroker], pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "midge.listeners")
    spec = listener("tls", pki, use_identity_as_username=True, identity_field="emailAddress")
    broker = settings_broker([spec])
    (tls,) = endpoints(broker)
    refused_over_tls(tls, pki, pki.client_cert, pki.client_key)
    deadline = time.monotonic() + 3
    while not any("has no emailAddress" in r.getMessage() for r in caplog.records):
        assert time.monotonic() < deadline, [r.getMessage() for r in caplog.records]
        time.sleep(0.02)
    assert broker.broker.stats.transport_errors == 1


@pytest.mark.parametrize(("change", "message"), [
    ({"keyfile": "/nonexistent/key.pem"}, "keyfile '/nonexistent/key.pem' cannot be used"),
    ({"certfile": "/etc/hostname"}, "not a PEM certificate chain with its matching private key"),
    ({"cafile": "/nonexistent/ca.pem"}, "cafile '/nonexistent/ca.pem' cannot be used"),
    ({"ciphers": "NO-SUCH-CIPHER"}, "ciphers 'NO-SUCH-CIPHER' selects no cipher"),
])
def test_unusable_tls_settings_name_the_key(pki: Pki, change: dict[str, Any],
                                            message: str) -> None:
    from midge.listeners.tls import build_context

    spec = dataclasses.replace(listener("tls", pki, name="edge"), **change)
    with pytest.raises(OSError) as caught:
        build_context(spec)
    assert message in str(caught.value) and str(caught.value).startswith("edge: ")


def test_ciphers_and_min_version(settings_broker: Callable[..., RunningBroker],
                                 pki: Pki) -> None:
    broker = settings_broker([
        listener("tls", pki, mutual=False, ciphers="ECDHE+AESGCM"),
        listener("tls", pki, mutual=False, min_version="TLSv1.3"),
    ])
    twelve, thirteen = endpoints(broker)
    context = ssl.create_default_context(cafile=pki.ca)
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    with socket.create_connection((twelve.host, twelve.port), timeout=5) as sock, \
            context.wrap_socket(sock, server_hostname="127.0.0.1") as wrapped:
        assert wrapped.version() == "TLSv1.2"
        assert "GCM" in wrapped.cipher()[0]
    with socket.create_connection((thirteen.host, thirteen.port), timeout=5) as sock, \
            pytest.raises(ssl.SSLError):
        context.wrap_socket(sock, server_hostname="127.0.0.1")
    paho_client(thirteen, pki).close()  # a TLS 1.3 client is fine


def test_plugin_authors_get_tls_listeners_from_the_testing_fixture(
    midge_broker_factory: Callable[..., Any], pki: Pki
) -> None:
    auth = IdentityAuth()
    broker = midge_broker_factory(
        objects=[auth],
        listeners=[listener("tls", pki, use_identity_as_username=True,
                            allow_anonymous=False)],
    )
    assert len(broker.addresses) == 2 and broker.addresses[0] == (broker.host, broker.port)
    host, port = broker.addresses[1]
    paho_client(Endpoint("tls", host, port), pki, cert=pki.client_cert,
                key=pki.client_key).close()
    assert auth.usernames == ["sensor-1"]
