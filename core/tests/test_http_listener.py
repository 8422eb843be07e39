"""The http listener over real sockets: health, readiness, Prometheus metrics checked against
traffic the test made, /stats, /api/clients, and bad input (404, 405, 408, 413, 431, 401)
that never disturbs MQTT traffic."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import http.client
import json
import os
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import anyio.from_thread
import paho.mqtt.client as paho
import pytest
from conftest import Client, RunningBroker
from prometheus_client.parser import text_string_to_metric_families

import midge
from midge import Broker, BrokerSettings, ListenerSettings, Settings
from midge.config import ConfigError, HttpAuth, parse
from midge.hooks.specs import hookimpl
from midge.listeners import http as http_listener


class Observed(RunningBroker):
    http_port: int
    future: Any

    def stop(self) -> None:
        """Shut the broker down now (the fixture's own shutdown then does nothing)."""
        self.call(self.broker.shutdown)
        self.future.result(timeout=15)


@pytest.fixture
def observed_factory() -> Iterator[Callable[..., Observed]]:
    running: list[tuple[Any, Any, Any]] = []

    def start(plugins: list[tuple[str, Any]] | None = None, auth: HttpAuth | None = None,
              tables: dict[str, dict[str, Any]] | None = None,
              http: ListenerSettings | None = None, **limits: Any) -> Observed:
        """A broker with a tcp and an http listener (``http``: its settings); ``tables``
        activates installed plugins as a configuration file's [plugins.NAME] would."""
        settings = Settings(
            broker=BrokerSettings(**limits),
            listeners=(
                ListenerSettings(host="127.0.0.1", port=0, allow_anonymous=True),
                http or ListenerSettings(type="http", host="127.0.0.1", port=0, auth=auth),
            ),
            plugins=tables or {},
        )
        broker = Broker(settings, plugins=plugins)
        cm = anyio.from_thread.start_blocking_portal("asyncio")
        portal = cm.__enter__()
        future, _ = portal.start_task(broker.run)
        running.append((cm, portal, (broker, future)))
        result = Observed(broker, broker.addresses[0][1], portal)
        result.http_port = broker.addresses[1][1]
        result.future = future
        return result

    yield start
    for cm, portal, (broker, future) in running:
        portal.call(broker.shutdown)
        future.result(timeout=15)
        cm.__exit__(None, None, None)


@pytest.fixture
def broker(observed_factory: Callable[..., Observed]) -> Observed:
    """The conftest's clients connect to this broker (it has an http listener too)."""
    return observed_factory()


def get(port: int, path: str, method: str = "GET",
        headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request(method, path, headers=headers or {})
        answer = conn.getresponse()
        return answer.status, {k.lower(): v for k, v in answer.getheaders()}, answer.read()
    finally:
        conn.close()


def get_json(port: int, path: str, **kwargs: Any) -> Any:
    status, headers, body = get(port, path, **kwargs)
    assert status == 200, (status, body)
    assert headers["content-type"] == "application/json"
    return json.loads(body)


def metrics(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """name and labels -> value, parsed with prometheus-client's own parser."""
    status, headers, body = get(port, "/metrics")
    assert status == 200
    assert headers["content-type"].startswith("text/plain; version=")
    values = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            values[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return values


def value(table: dict[Any, float], name: str, **labels: str) -> float:
    return table.get((name, tuple(sorted(labels.items()))), 0.0)


def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


def test_healthz_and_readyz(broker: Observed) -> None:
    assert get_json(broker.http_port, "/healthz") == {"status": "ok"}
    assert get_json(broker.http_port, "/readyz") == {"status": "ready"}
    status, headers, body = get(broker.http_port, "/healthz", method="HEAD")
    assert status == 200 and body == b"" and int(headers["content-length"]) > 0


def test_metrics_move_with_the_traffic_the_test_makes(
    broker: Observed, client_factory: Callable[..., Client]
) -> None:
    before = metrics(broker.http_port)
    listener = f"tcp://127.0.0.1:{broker.port}"  # the bound address names it
    subscriber = client_factory("sub-1")
    subscriber.subscribe("m/#", qos=1)
    publisher = client_factory("pub-1")
    count = 25
    for index in range(count):
        publisher.publish("m/x", f"payload-{index:03d}", qos=1)  # 11 bytes each
    for _ in range(count):
        subscriber.expect()
    for _ in range(7):
        publisher.publish("m/zero", b"0123", qos=0)
    for _ in range(7):
        subscriber.expect()
    after = metrics(broker.http_port)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("midge_messages_received_total", qos="1") == count
    assert moved("midge_messages_received_total", qos="0") == 7
    assert moved("midge_messages_sent_total", qos="1") == count
    assert moved("midge_messages_sent_total", qos="0") == 7
    assert moved("midge_publish_bytes_received_total", qos="1") == count * 11
    assert moved("midge_publish_bytes_received_total", qos="0") == 7 * 4
    assert moved("midge_packets_received_total", type="PUBLISH") == count + 7
    assert moved("midge_packets_received_total", type="PUBACK") == count
    assert moved("midge_packets_sent_total", type="PUBACK") == count
    assert moved("midge_packets_sent_total", type="PUBLISH") == count + 7
    assert moved("midge_packets_received_total", type="CONNECT") == 2
    assert moved("midge_packets_sent_total", type="SUBACK") == 1
    assert moved("midge_bytes_received_total") > count * 11
    assert moved("midge_bytes_sent_total") > count * 11
    assert moved("midge_connections_total", listener=listener) == 2
    assert value(after, "midge_connections", listener=listener) == 2
    assert value(after, "midge_clients_connected") == 2
    assert value(after, "midge_subscriptions") == 1
    assert value(after, "midge_sessions") == 2
    assert value(after, "midge_inflight_messages") == 0
    assert value(after, "midge_build_info", version=midge.__version__) == 1
    assert value(after, "process_resident_memory_bytes") > 1_000_000
    assert value(after, "process_open_fds") > 3
    assert value(after, "process_cpu_seconds_total") > 0


def test_refusals_and_drops_are_counted_by_reason(
    observed_factory: Callable[..., Observed],
) -> None:
    class Gate:
        @hookimpl
        def on_connect_authenticate(self, client: Any, packet: Any) -> bool | None:
            return False if client.client_id.startswith("bad") else None

    running = observed_factory(plugins=[("gate", Gate())], max_queued_messages=2)
    for index in range(3):
        bad = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"bad-{index}")
        assert bad.connect("127.0.0.1", running.port) == 0
        bad.loop(timeout=1)
        bad.loop(timeout=0.2)
        bad.disconnect()
    wait_for(lambda: value(metrics(running.http_port), "midge_connects_refused_total",
                           reason="not_authorized") == 3)
    # a persistent subscriber goes away; its queue holds 2, the rest are dropped
    sub = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="away", clean_session=False)
    sub.connect("127.0.0.1", running.port)
    sub.loop_start()
    wait_for(lambda: get_json(running.http_port, "/stats")["clients_connected"] == 1)
    sub.subscribe("d/#", 1)
    wait_for(lambda: get_json(running.http_port, "/stats")["subscriptions"] == 1)
    sub.disconnect()
    sub.loop_stop()
    wait_for(lambda: get_json(running.http_port, "/stats")["clients_connected"] == 0)
    pub = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="pub")
    pub.connect("127.0.0.1", running.port)
    pub.loop_start()
    for _ in range(5):
        pub.publish("d/1", b"x", qos=1).wait_for_publish(3)
    pub.disconnect()
    pub.loop_stop()
    table = metrics(running.http_port)
    assert value(table, "midge_messages_dropped_total", reason="session queue full") == 3
    assert value(table, "midge_session_queue_depth") == 2
    assert value(table, "midge_session_queue_depth_max") == 2
    stats = get_json(running.http_port, "/stats")
    assert stats["messages_dropped"] == 3
    assert stats["clients_disconnected"] == 1


MOCHI_NAMES = (
    "version", "started", "time", "uptime", "bytes_received", "bytes_sent",
    "clients_connected", "clients_disconnected", "clients_maximum", "clients_total",
    "messages_received", "messages_sent", "messages_dropped", "retained", "inflight",
    "inflight_dropped", "subscriptions", "packets_received", "packets_sent",
    "memory_alloc", "threads",
)


def test_stats_has_mochi_names_and_counts_the_traffic(
    broker: Observed, client_factory: Callable[..., Client]
) -> None:
    before = get_json(broker.http_port, "/stats")
    assert set(MOCHI_NAMES) <= set(before)
    subscriber = client_factory("s-stats")
    subscriber.subscribe("s/#")
    publisher = client_factory("p-stats")
    for _ in range(10):
        publisher.publish("s/1", b"abc", qos=0)
    for _ in range(10):
        subscriber.expect()
    publisher.publish("s/retained", b"keep", retain=True)
    subscriber.expect()
    after = get_json(broker.http_port, "/stats")
    assert after["messages_received"] - before["messages_received"] == 11
    assert after["messages_sent"] - before["messages_sent"] == 11
    assert after["clients_connected"] == 2
    assert after["clients_maximum"] >= 2
    assert after["clients_total"] == 2
    assert after["subscriptions"] == 1
    assert after["retained"] - before["retained"] == 1
    assert after["packets_received"] - before["packets_received"] >= 14
    assert after["bytes_received"] > before["bytes_received"]
    assert after["memory_alloc"] > 1_000_000
    assert after["threads"] >= 1
    assert abs(after["time"] - time.time()) < 5
    assert after["uptime"] == after["time"] - after["started"]
    assert after["version"] == midge.__version__
    names = [listener["type"] for listener in after["listeners"]]
    assert names == ["tcp", "http"]
    assert after["listeners"][0]["connections"] == 2


def test_api_clients_paged_filtered_and_one_client(
    broker: Observed, client_factory: Callable[..., Client]
) -> None:
    port = broker.http_port
    for index in range(5):
        client_factory(f"sensor-{index}")
    other = client_factory("gateway", protocol=paho.MQTTv5)
    props = paho.SubscribeOptions(qos=1, noLocal=True, retainAsPublished=True,
                                  retainHandling=2)
    done: list[Any] = []
    other.paho.on_subscribe = lambda *args: done.append(args)
    other.paho.subscribe("g/+/temp", options=props)
    wait_for(lambda: bool(done))
    page = get_json(port, "/api/clients?prefix=sensor-&limit=2&offset=1")
    assert page["total"] == 5
    assert [c["id"] for c in page["clients"]] == ["sensor-1", "sensor-2"]
    first = page["clients"][0]
    assert first["protocol_level"] == 4
    assert first["listener"] == f"tcp://127.0.0.1:{broker.port}"  # as bound, port 0 resolved
    assert first["address"].startswith("127.0.0.1:")
    assert abs(first["connected_since"] - time.time()) < 30
    assert {"username", "subscriptions", "queue_depth", "inflight"} <= set(first)
    everyone = get_json(port, "/api/clients")
    assert everyone["total"] == 6
    one = get_json(port, "/api/clients/gateway")
    assert one["protocol_level"] == 5
    assert one["subscriptions"] == [{
        "topic_filter": "g/+/temp", "qos": 1, "no_local": True, "retain_as_published": True,
        "retain_handling": 2, "subscription_id": None,
    }]
    status, _, body = get(port, "/api/clients/nobody")
    assert status == 404 and json.loads(body) == {"error": "no client or session 'nobody'"}
    for bad, message in (
        ("limit=0", "limit must be in 1..1000, offset at least 0"),
        ("limit=x", "limit and offset must be integers"),
        ("offset=-1", "limit must be in 1..1000, offset at least 0"),
        ("colour=red", "unknown parameter 'colour'; allowed: prefix, state, limit, offset"),
        ("state=asleep", "state must be one of all, connected, offline"),
    ):
        status, _, body = get(port, f"/api/clients?{bad}")
        assert status == 400, bad
        assert json.loads(body) == {"error": message}, bad


def test_api_clients_lists_offline_sessions_with_their_queues(
    broker: Observed, client_factory: Callable[..., Client]
) -> None:
    port = broker.http_port
    # two persistent sessions that go away (one v5 with an expiry), one clean client that
    # goes away (no session is left), and two that stay
    away = [client_factory("away-1", clean=False),
            client_factory("away-2", protocol=paho.MQTTv5, clean=False,
                           properties=_expiry(3600))]
    for index, client in enumerate(away):
        client.subscribe("queue/#", qos=1)
        if index:
            client.subscribe("other/#", qos=0)
    gone = client_factory("gone", clean=True)
    gone.subscribe("queue/#", qos=1)
    publisher = client_factory("publisher")
    client_factory("watcher")
    wait_for(lambda: get_json(port, "/stats")["subscriptions"] == 4)
    for name in ("away-1", "away-2", "gone"):
        assert get_json(port, f"/api/clients/{name}")["state"] == "connected"
    went = time.time()
    for client in (*away, gone):
        client.close()
    wait_for(lambda: get_json(port, "/stats")["clients_connected"] == 2)
    for index in range(3):
        publisher.paho.publish("queue/x", f"m{index}", qos=1).wait_for_publish(3)

    everyone = get_json(port, "/api/clients")
    assert everyone["total"] == 4
    assert [(c["id"], c["state"]) for c in everyone["clients"]] == [
        ("away-1", "offline"), ("away-2", "offline"), ("publisher", "connected"),
        ("watcher", "connected")]
    offline = get_json(port, "/api/clients?state=offline")["clients"]
    assert [c["id"] for c in offline] == ["away-1", "away-2"]
    first, second = offline
    assert first["queue_depth"] == 3 and second["queue_depth"] == 3
    assert first["subscriptions"] == 1 and second["subscriptions"] == 2
    assert first["protocol_level"] == 4 and second["protocol_level"] == 5
    assert first["inflight"] == 0
    for entry in offline:
        assert went - 1 < entry["offline_since"] < time.time() + 1
        assert entry["connected_since"] is None and entry["address"] is None
        assert entry["listener"] is None and entry["keepalive"] is None
        # the same keys as a connected client's
        assert set(entry) == set(everyone["clients"][2])
    assert first["expires_at"] is None  # v3.1.1 clean session 0: kept until it returns
    assert second["expires_at"] == pytest.approx(second["offline_since"] + 3600, abs=0.01)
    connected = get_json(port, "/api/clients?state=connected")
    assert [c["id"] for c in connected["clients"]] == ["publisher", "watcher"]
    assert all(c["offline_since"] is None for c in connected["clients"])
    # paging and the prefix apply to the whole list
    page = get_json(port, "/api/clients?prefix=away-&limit=1&offset=1")
    assert page["total"] == 2 and [c["id"] for c in page["clients"]] == ["away-2"]
    assert get_json(port, "/api/clients?prefix=w&state=offline")["total"] == 0
    assert get_json(port, "/api/clients?prefix=w&state=all")["total"] == 1
    # one offline session, with its subscriptions and their options
    one = get_json(port, "/api/clients/away-2")
    assert one["state"] == "offline" and one["queue_depth"] == 3
    assert one["subscriptions"] == [
        {"topic_filter": "other/#", "qos": 0, "no_local": False, "retain_as_published": False,
         "retain_handling": 0, "subscription_id": None},
        {"topic_filter": "queue/#", "qos": 1, "no_local": False, "retain_as_published": False,
         "retain_handling": 0, "subscription_id": None},
    ]
    status, _, body = get(port, "/api/clients/gone")
    assert status == 404 and json.loads(body) == {"error": "no client or session 'gone'"}
    # back again: connected, and its queue is delivered
    back = client_factory("away-1", clean=False)
    assert sorted(back.expect().payload for _ in range(3)) == [b"m0", b"m1", b"m2"]
    wait_for(lambda: get_json(port, "/api/clients/away-1")["queue_depth"] == 0)
    again = get_json(port, "/api/clients/away-1")
    assert again["state"] == "connected" and again["offline_since"] is None
    assert [c["id"] for c in get_json(port, "/api/clients?state=offline")["clients"]] == [
        "away-2"]


def _expiry(seconds: int) -> Any:
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = seconds
    return props


def test_a_client_id_with_a_slash_or_space_is_found(
    broker: Observed, client_factory: Callable[..., Client]
) -> None:
    client_factory("a b/c")
    assert get_json(broker.http_port, "/api/clients/a%20b%2Fc")["id"] == "a b/c"


class NotReady:
    def __init__(self) -> None:
        self.reason: str | None = "storage unreachable: connection refused"

    @hookimpl
    async def on_ready_check(self, broker: Any) -> str | None:
        return self.reason


def test_readyz_is_503_while_a_plugin_reports_not_ready(
    observed_factory: Callable[..., Observed],
) -> None:
    plugin = NotReady()
    running = observed_factory(plugins=[("storage", plugin)])
    status, _, body = get(running.http_port, "/readyz")
    assert status == 503
    assert json.loads(body) == {"status": "not ready",
                                "reason": "storage unreachable: connection refused"}
    # liveness is not readiness: the loop runs
    assert get(running.http_port, "/healthz")[0] == 200
    running.call(setattr, plugin, "reason", None)
    assert get(running.http_port, "/readyz")[0] == 200


# -- bad input ------------------------------------------------------------------------------


def raw_request(port: int, data: bytes, timeout: float = 5.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)


def test_unknown_path_404_and_wrong_method_405(broker: Observed) -> None:
    status, _, body = get(broker.http_port, "/nope")
    assert status == 404 and json.loads(body) == {"error": "no such path: /nope"}
    for method in ("POST", "PUT", "DELETE"):
        status, headers, _ = get(broker.http_port, "/stats", method=method)
        assert status == 405
        assert headers["allow"] == "GET, HEAD"


def test_oversized_headers_431(broker: Observed) -> None:
    answer = raw_request(broker.http_port, b"GET /stats HTTP/1.1\r\nHost: x\r\nX-Big: "
                         + b"a" * 40_000 + b"\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 431 ")


def test_garbage_400_and_big_body_413(broker: Observed) -> None:
    assert raw_request(broker.http_port, b"HELLO THERE\r\n\r\n").startswith(b"HTTP/1.1 400 ")
    body = b"x" * (http_listener.MAX_BODY_BYTES + 10)
    answer = raw_request(broker.http_port, b"GET /stats HTTP/1.1\r\nHost: x\r\n"
                         b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    assert answer.startswith(b"HTTP/1.1 413 ")


def test_a_slow_client_is_closed_after_the_timeout(
    broker: Observed, client_factory: Callable[..., Client], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(http_listener, "REQUEST_TIMEOUT", 0.5)
    subscriber = client_factory("steady")
    subscriber.subscribe("t/#")
    publisher = client_factory("talker")
    with socket.create_connection(("127.0.0.1", broker.http_port), timeout=5) as sock:
        started = time.monotonic()
        sock.sendall(b"GET /stats HTTP/1.1\r\nHost: x\r\n")  # and never the blank line
        # MQTT traffic goes on meanwhile
        publisher.publish("t/1", b"during")
        assert subscriber.expect().payload == b"during"
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
        elapsed = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert 0.4 < elapsed < 3


def test_keep_alive_serves_several_requests_on_one_connection(broker: Observed) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", broker.http_port, timeout=5)
    for path in ("/healthz", "/stats", "/metrics", "/"):
        conn.request("GET", path)
        answer = conn.getresponse()
        assert answer.status == 200
        answer.read()
    conn.close()


def pbkdf2_hash(password: str) -> str:
    salt = os.urandom(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, 1000)
    return "$".join(("pbkdf2_sha256", "1000", b64(salt), b64(digest)))


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def test_basic_auth_401_for_a_wrong_password(
    observed_factory: Callable[..., Observed], client_factory: Callable[..., Client]
) -> None:
    running = observed_factory(auth=HttpAuth(username="ops", password_hash=pbkdf2_hash("s3cret")))
    port = running.http_port
    status, headers, _ = get(port, "/stats")
    assert status == 401 and headers["www-authenticate"].startswith("Basic ")
    assert get(port, "/stats", headers=basic("ops", "wrong"))[0] == 401
    assert get(port, "/stats", headers=basic("root", "s3cret"))[0] == 401
    assert get(port, "/metrics", headers={"Authorization": "Basic %%%"})[0] == 401
    for _ in range(3):  # verified once, then remembered
        assert get(port, "/stats", headers=basic("ops", "s3cret"))[0] == 200
    # probes need no credentials
    assert get(port, "/healthz")[0] == 200
    assert get(port, "/readyz")[0] == 200


def test_bearer_token(observed_factory: Callable[..., Observed]) -> None:
    running = observed_factory(auth=HttpAuth(token="t0ken"))
    port = running.http_port
    assert get(port, "/metrics")[0] == 401
    assert get(port, "/metrics", headers={"Authorization": "Bearer nope"})[0] == 401
    assert get(port, "/metrics", headers={"Authorization": "Bearer t0ken"})[0] == 200


def test_scrypt_hash_verifies() -> None:
    salt = b"0123456789abcdef"
    digest = hashlib.scrypt(b"pw", salt=salt, n=2**10, r=8, p=1, dklen=32)
    stored = "$".join(("scrypt", "1024", "8", "1", b64(salt), b64(digest)))
    assert http_listener.verify_password(stored, b"pw")
    assert not http_listener.verify_password(stored, b"pW")
    assert not http_listener.verify_password("pbkdf2_sha256$x$y$z", b"pw")


# -- configuration --------------------------------------------------------------------------


def test_config_http_listener_keys() -> None:
    settings = parse({"listeners": [{"type": "http"}]})
    assert settings.listeners[0].port == 8080 and settings.listeners[0].host == "127.0.0.1"
    with pytest.raises(ConfigError, match=r"listeners\[0\]\.host: an http listener on 0\.0\.0\.0"):
        parse({"listeners": [{"type": "http", "host": "0.0.0.0"}]})
    public = parse({"listeners": [{"type": "http", "host": "0.0.0.0", "public": True}]})
    assert public.listeners[0].public
    with pytest.raises(ConfigError,
                       match=r"listeners\[0\]\.public: not a key of a tcp listener"):
        parse({"listeners": [{"type": "tcp", "public": True}]})
    with pytest.raises(ConfigError,
                       match=r"listeners\[0\]\.auth: not a key of a tcp listener"):
        parse({"listeners": [{"type": "tcp", "auth": {"token": "x"}}]})
    with pytest.raises(ConfigError, match="username and password_hash go together"):
        parse({"listeners": [{"type": "http", "auth": {"username": "ops"}}]})
    with pytest.raises(ConfigError, match=r"auth\.password_hash: not a password hash"):
        parse({"listeners": [{"type": "http",
                              "auth": {"username": "ops", "password_hash": "hunter2"}}]})
    with pytest.raises(ConfigError, match=r"auth\.colour: unknown key"):
        parse({"listeners": [{"type": "http", "auth": {"colour": "red"}}]})


def test_config_auth_token_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MIDGE_TEST_TOKEN", "abc")
    settings = parse({"listeners": [{"type": "http", "host": "0.0.0.0",
                                     "auth": {"token": {"env": "MIDGE_TEST_TOKEN"}}}]})
    assert settings.listeners[0].auth == HttpAuth(token="abc")
    with pytest.raises(ConfigError, match="MIDGE_TEST_NOPE"):
        parse({"listeners": [{"type": "http", "auth": {"token": {"env": "MIDGE_TEST_NOPE"}}}]})


@pytest.mark.parametrize("scheme", ["pbkdf2_sha256", "pbkdf2_sha512", "scrypt"])
def test_hashes_made_by_midge_passwd_verify(scheme: str) -> None:
    hashing = pytest.importorskip("midge_auth_ledger._hashing")
    fast = {"pbkdf2_sha256": {"iterations": 1000}, "pbkdf2_sha512": {"iterations": 1000},
            "scrypt": {"n": 1024, "r": 8, "p": 1}}[scheme]
    stored = hashing.hash_password("correct horse", scheme, **fast)
    assert http_listener.verify_password(stored, b"correct horse")
    assert not http_listener.verify_password(stored, b"wrong horse")
    parse({"listeners": [{"type": "http", "auth": {"username": "u", "password_hash": stored}}]})


def test_the_example_configuration_loads() -> None:
    from pathlib import Path

    from midge.config import load

    settings = load(Path(__file__).resolve().parents[2] / "examples" / "observability.toml")
    assert [spec.type for spec in settings.listeners] == ["tcp", "http"]
    assert settings.listeners[1].port == 8080 and settings.listeners[1].auth is None


def test_a_publish_refused_as_a_protocol_error_is_a_packet_not_a_message(
    observed_factory: Callable[..., Observed],
) -> None:
    from midge.codec import Connect, Publish, encode

    running = observed_factory(maximum_qos=1)
    before = metrics(running.http_port)
    with socket.create_connection(("127.0.0.1", running.port), timeout=5) as sock:
        sock.sendall(encode(Connect("too-high", 4), 4)
                     + encode(Publish("q/2", b"x", 2, packet_id=1), 4))
        while sock.recv(65536):  # CONNACK, then the close
            pass
    wait_for(lambda: value(metrics(running.http_port), "midge_packets_received_total",
                           type="PUBLISH") == 1)
    after = metrics(running.http_port)
    assert value(after, "midge_messages_received_total", qos="2") == 0
    assert value(before, "midge_packets_received_total", type="CONNECT") == 0
    assert value(after, "midge_packets_received_total", type="CONNECT") == 1


def test_an_idle_connection_is_closed_without_an_answer(
    broker: Observed, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(http_listener, "REQUEST_TIMEOUT", 0.3)
    with socket.create_connection(("127.0.0.1", broker.http_port), timeout=5) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = b""
        while b'{"status":"ok"}' not in answer:
            answer += sock.recv(65536)
        # kept alive, then idle past the timeout: closed, no 408 for a request never begun
        rest = b""
        while chunk := sock.recv(65536):
            rest += chunk
    assert answer.startswith(b"HTTP/1.1 200 OK")
    assert rest == b""


def test_max_connections_refusals_are_counted(
    observed_factory: Callable[..., Observed],
) -> None:
    running = observed_factory(max_connections=1)
    with socket.create_connection(("127.0.0.1", running.port), timeout=5):
        wait_for(lambda: value(metrics(running.http_port), "midge_connections",
                               listener=f"tcp://127.0.0.1:{running.port}") == 1)
        with (socket.create_connection(("127.0.0.1", running.port), timeout=5) as second,
              contextlib.suppress(ConnectionResetError)):
            assert second.recv(1) == b""  # closed at once
        wait_for(lambda: value(metrics(running.http_port), "midge_connects_refused_total",
                               reason="max_connections") == 1)
        # the http listener's own connections are not MQTT connections: it still answers
        assert get(running.http_port, "/healthz")[0] == 200
