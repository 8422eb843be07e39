"""The auth_ledger plugin end to end: a real midge broker, real paho clients.

Each test starts a broker with the plugin loaded from its entry point
(``midge_broker_factory``) and checks one behaviour on the wire: CONNACK, SUBACK and
PUBACK codes, and which messages the clients receive. paho maps a v3.1.1 CONNACK return
code onto a v5 reason code, so the exact v3.1.1 return code is read from a raw socket.
"""

from __future__ import annotations

import copy
import logging
import shutil
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from midge_auth_ledger import hash_password

from midge.testing import MessageCapture, RunningBroker, TestClient

BrokerFactory = Callable[..., RunningBroker]
ClientFactory = Callable[..., TestClient]
CaptureFactory = Callable[..., MessageCapture]

BAD_CREDENTIALS = {5: 0x86, 4: 4}  # v5 reason code / v3.1.1 return code
NOT_AUTHORIZED = {5: 0x87, 4: 5}
SUBACK_REFUSED = {5: 0x87, 4: 0x80}

#: admin may do anything; alice may read and write a/# except a/secret, and nothing in b/#
LEDGER: dict[str, Any] = {
    "users": {
        "admin": {"password": "admin-pw", "acl": {"#": 3}},
        "alice": {"password": "alice-pw", "acl": {"a/#": 3, "a/secret": 0, "b/#": 0}},
    },
}

MOSQUITTO_ACL = """\
# a Mosquitto ACL file, as Mosquitto reads it
user alice
topic read sensors/#
topic alice/#

pattern readwrite devices/%c/#
"""

needs_mosquitto_passwd = pytest.mark.skipif(
    shutil.which("mosquitto_passwd") is None, reason="mosquitto_passwd is not installed")
both_protocols = pytest.mark.parametrize("protocol", [4, 5], ids=["v311", "v5"])


def ledger(**sections: Any) -> dict[str, Any]:
    """``LEDGER`` with ``users`` entries added and other sections set."""
    table = copy.deepcopy(LEDGER)
    table["users"].update(sections.pop("users", {}))
    table.update(sections)
    return table


def _string(text: str) -> bytes:
    data = text.encode()
    return len(data).to_bytes(2, "big") + data


def _remaining_length(n: int) -> bytes:
    out = bytearray()
    while True:
        n, digit = divmod(n, 128)
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


def connack_v311(broker: RunningBroker, username: str | None = None,
                 password: str | None = None) -> int:
    """Send a raw MQTT 3.1.1 CONNECT and return the CONNACK's return code."""
    flags = 0x02 | (0x80 if username is not None else 0) | (0x40 if password is not None else 0)
    payload = _string("raw-v311")
    payload += _string(username) if username is not None else b""
    payload += _string(password) if password is not None else b""
    body = _string("MQTT") + bytes([4, flags]) + (60).to_bytes(2, "big") + payload
    with socket.create_connection((broker.host, broker.port), timeout=5) as sock:
        sock.sendall(b"\x10" + _remaining_length(len(body)) + body)
        answer = b""
        while len(answer) < 4:
            chunk = sock.recv(4 - len(answer))
            if not chunk:
                break
            answer += chunk
    assert answer[:2] == b"\x20\x02", f"not a v3.1.1 CONNACK: {answer!r}"
    return answer[3]


def connack_code(broker: RunningBroker, midge_client: ClientFactory, protocol: int,
                 username: str | None = None, password: str | None = None) -> int:
    """The CONNACK code a client gets: a paho v5 client's reason code, or the v3.1.1
    return code from the wire."""
    if protocol == 4:
        return connack_v311(broker, username, password)
    client = midge_client(broker, protocol=protocol, username=username, password=password,
                          check=False)
    assert client.reason_code is not None
    return client.reason_code


def expect_topics(client: TestClient, *topics: str) -> None:
    """``client`` receives messages on exactly ``topics``, in that order, and no more."""
    got = [client.expect().topic for _ in topics]
    assert got == list(topics)
    client.expect_none()


# -- authentication --------------------------------------------------------------------


@both_protocols
def test_correct_password_connects(midge_broker_factory: BrokerFactory,
                                   midge_client: ClientFactory, protocol: int) -> None:
    broker = midge_broker_factory(plugins={"auth_ledger": ledger()})
    client = midge_client(broker, protocol=protocol, username="alice", password="alice-pw",
                          check=False)
    assert client.reason_code == 0


@both_protocols
def test_wrong_password_is_refused_as_bad_credentials(
        midge_broker_factory: BrokerFactory, midge_client: ClientFactory,
        protocol: int) -> None:
    broker = midge_broker_factory(plugins={"auth_ledger": ledger()})
    code = connack_code(broker, midge_client, protocol, "alice", "wrong")
    assert code == BAD_CREDENTIALS[protocol]


@both_protocols
def test_no_credentials_is_refused_as_not_authorized(
        midge_broker_factory: BrokerFactory, midge_client: ClientFactory,
        protocol: int) -> None:
    broker = midge_broker_factory(plugins={"auth_ledger": ledger()})
    assert connack_code(broker, midge_client, protocol) == NOT_AUTHORIZED[protocol]


def test_disallowed_user_is_refused_with_its_own_password(
        midge_broker_factory: BrokerFactory, midge_client: ClientFactory) -> None:
    # both the user's password and an auth rule would let mallory in: disallow wins
    table = ledger(users={"mallory": {"password": "mallory-pw", "disallow": True}},
                   auth=[{"username": "mallory", "allow": True}])
    broker = midge_broker_factory(plugins={"auth_ledger": table})
    refused = midge_client(broker, protocol=5, username="mallory", password="mallory-pw",
                           check=False)
    assert refused.reason_code == 0x86


def test_auth_rule_with_a_wildcard_user_name_matches(
        midge_broker_factory: BrokerFactory, midge_client: ClientFactory) -> None:
    table = ledger(auth=[{"username": "sensor-*", "password": "shared-pw", "allow": True}])
    broker = midge_broker_factory(plugins={"auth_ledger": table})
    sensor = midge_client(broker, protocol=5, username="sensor-42", password="shared-pw",
                          check=False)
    outsider = midge_client(broker, protocol=5, username="sensors", password="shared-pw",
                            check=False)
    assert (sensor.reason_code, outsider.reason_code) == (0, 0x86)


def test_pbkdf2_hashed_password_connects(
        midge_broker_factory: BrokerFactory, midge_client: ClientFactory) -> None:
    stored = hash_password("carol-pw", "pbkdf2_sha256", iterations=10_000)
    assert stored.startswith("pbkdf2_sha256$10000$")
    broker = midge_broker_factory(
        plugins={"auth_ledger": ledger(users={"carol": {"password": stored}})})
    good = midge_client(broker, protocol=5, username="carol", password="carol-pw",
                        check=False)
    bad = midge_client(broker, protocol=5, username="carol", password=stored, check=False)
    assert (good.reason_code, bad.reason_code) == (0, 0x86)


@needs_mosquitto_passwd
def test_mosquitto_password_file_connects(
        midge_broker_factory: BrokerFactory, midge_client: ClientFactory,
        tmp_path: Path) -> None:
    path = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-c", "-b", str(path), "bob", "bob-pw"],
                   check=True, capture_output=True, timeout=60)
    if not path.read_text().startswith("bob:$7$"):
        pytest.skip("this mosquitto_passwd does not write $7$ hashes")
    broker = midge_broker_factory(plugins={"auth_ledger": {"mosquitto_password_file": str(path)}})
    good = midge_client(broker, protocol=5, username="bob", password="bob-pw", check=False)
    bad = midge_client(broker, protocol=5, username="bob", password="bob-pw2", check=False)
    assert (good.reason_code, bad.reason_code) == (0, 0x86)


# -- ACL -------------------------------------------------------------------------------


@both_protocols
def test_denied_publish_is_not_delivered(
        midge_broker_factory: BrokerFactory, midge_client: ClientFactory,
        protocol: int) -> None:
    broker = midge_broker_factory(plugins={"auth_ledger": ledger()})
    admin = midge_client(broker, protocol=5, username="admin", password="admin-pw")
    admin.subscribe("#", qos=1)
    alice = midge_client(broker, protocol=protocol, username="alice", password="alice-pw")
    denied = alice.publish("a/secret", b"leak", qos=1)
    allowed = alice.publish("a/open", b"fine", qos=1)
    # v5 says so in the PUBACK; v3.1.1 has no reason code, the message is just dropped
    assert (denied, allowed) == (0x87 if protocol == 5 else 0, 0)
    expect_topics(admin, "a/open")


@both_protocols
def test_denied_subscription_is_refused_in_suback(
        midge_broker_factory: BrokerFactory, midge_client: ClientFactory,
        protocol: int) -> None:
    broker = midge_broker_factory(plugins={"auth_ledger": ledger()})
    alice = midge_client(broker, protocol=protocol, username="alice", password="alice-pw")
    assert alice.subscribe("b/#", qos=1, check=False) == [SUBACK_REFUSED[protocol]]
    assert alice.subscribe("a/#", qos=1, check=False) == [1]
    admin = midge_client(broker, protocol=5, username="admin", password="admin-pw")
    assert admin.publish("b/1", b"x", qos=1) < 0x80
    alice.expect_none()


@pytest.mark.parametrize("qos", [0, 1])
def test_message_denied_at_delivery_is_not_sent(
        midge_broker_factory: BrokerFactory, midge_client: ClientFactory, qos: int) -> None:
    broker = midge_broker_factory(plugins={"auth_ledger": ledger()})
    alice = midge_client(broker, protocol=5, username="alice", password="alice-pw")
    assert alice.subscribe("a/#", qos=qos) == [qos]  # allowed next to the denied a/secret
    admin = midge_client(broker, protocol=5, username="admin", password="admin-pw")
    assert admin.publish("a/secret", b"hidden", qos=qos) < 0x80
    assert admin.publish("a/open", b"visible", qos=qos) < 0x80
    message = alice.expect()
    assert (message.topic, message.payload) == ("a/open", b"visible")
    alice.expect_none()


def test_denied_retained_message_is_not_sent_on_subscribe(
        midge_broker_factory: BrokerFactory, midge_client: ClientFactory,
        midge_capture: CaptureFactory) -> None:
    broker = midge_broker_factory(plugins={"auth_ledger": ledger()})
    admin = midge_client(broker, protocol=5, username="admin", password="admin-pw")
    assert admin.publish("a/secret", b"hidden", qos=1, retain=True) < 0x80
    assert admin.publish("a/open", b"visible", qos=1, retain=True) < 0x80
    retained = midge_capture("a/#", broker=broker).wait_for(2)  # both are retained
    assert sorted(m.topic for m in retained) == ["a/open", "a/secret"]
    alice = midge_client(broker, protocol=5, username="alice", password="alice-pw")
    alice.subscribe("a/#", qos=1)
    message = alice.expect()
    assert (message.topic, message.payload, message.retain) == ("a/open", b"visible", True)
    alice.expect_none()


def test_shared_subscription_member_does_not_get_denied_topic(
        midge_broker_factory: BrokerFactory, midge_client: ClientFactory) -> None:
    broker = midge_broker_factory(plugins={"auth_ledger": ledger()})
    alice = midge_client(broker, protocol=5, username="alice", password="alice-pw")
    assert alice.subscribe("$share/g/a/#", qos=1) == [1]
    admin = midge_client(broker, protocol=5, username="admin", password="admin-pw")
    assert admin.publish("a/secret", b"hidden", qos=1) < 0x80
    assert admin.publish("a/open", b"visible", qos=1) < 0x80
    expect_topics(alice, "a/open")


@both_protocols
def test_shared_subscription_to_denied_filter_is_refused(
        midge_broker_factory: BrokerFactory, midge_client: ClientFactory,
        protocol: int) -> None:
    broker = midge_broker_factory(plugins={"auth_ledger": ledger()})
    alice = midge_client(broker, protocol=protocol, username="alice", password="alice-pw")
    codes = alice.subscribe("$share/g/b/#", qos=1, check=False)
    assert codes == [SUBACK_REFUSED[protocol]]
    admin = midge_client(broker, protocol=5, username="admin", password="admin-pw")
    assert admin.publish("b/1", b"x", qos=1) < 0x80
    alice.expect_none()


# -- Mosquitto ACL file ----------------------------------------------------------------


@pytest.fixture
def mosquitto_acl_broker(midge_broker_factory: BrokerFactory, tmp_path: Path) -> RunningBroker:
    path = tmp_path / "acl"
    path.write_text(MOSQUITTO_ACL)
    table = {
        "users": {"admin": {"password": "admin-pw", "acl": {"#": 3}},
                  "alice": {"password": "alice-pw"}, "dave": {"password": "dave-pw"}},
        "mosquitto_acl_file": str(path),
    }
    return midge_broker_factory(plugins={"auth_ledger": table})


def test_mosquitto_acl_user_section_is_enforced(
        mosquitto_acl_broker: RunningBroker, midge_client: ClientFactory) -> None:
    broker = mosquitto_acl_broker
    admin = midge_client(broker, protocol=5, username="admin", password="admin-pw")
    admin.subscribe("#", qos=1)
    alice = midge_client(broker, protocol=5, username="alice", password="alice-pw")
    assert alice.subscribe("sensors/#", qos=1, check=False) == [1]  # topic read
    assert alice.subscribe("other/#", qos=1, check=False) == [0x87]  # no line: denied
    assert alice.publish("sensors/1", b"fake", qos=1) == 0x87  # read only
    assert alice.publish("alice/lamp", b"on", qos=1) == 0  # readwrite by default
    expect_topics(admin, "alice/lamp")
    assert admin.publish("sensors/1", b"21.5", qos=1) < 0x80
    assert alice.expect().topic == "sensors/1"


def test_mosquitto_acl_pattern_is_enforced_per_client_id(
        mosquitto_acl_broker: RunningBroker, midge_client: ClientFactory) -> None:
    broker = mosquitto_acl_broker
    admin = midge_client(broker, protocol=5, username="admin", password="admin-pw")
    admin.subscribe("#", qos=1)
    dave = midge_client(broker, protocol=5, client_id="dev1", username="dave",
                        password="dave-pw")
    assert dave.publish("devices/dev1/temp", b"20", qos=1) == 0
    assert dave.publish("devices/dev2/temp", b"99", qos=1) == 0x87
    assert dave.subscribe("devices/dev2/#", qos=1, check=False) == [0x87]
    assert dave.subscribe("devices/dev1/#", qos=1, check=False) == [1]
    expect_topics(admin, "devices/dev1/temp")


# -- reload ----------------------------------------------------------------------------


def _ledger_yaml(password: str, access: int = 3) -> str:
    return (f"users:\n  alice:\n    password: {password}\n"
            f"    acl:\n      \"a/#\": {access}\n"
            "  admin:\n    password: admin-pw\n    acl:\n      \"#\": 3\n")


@pytest.fixture
def ledger_file(tmp_path: Path) -> Path:
    path = tmp_path / "ledger.yaml"
    path.write_text(_ledger_yaml("old-pw"))
    return path


def test_reload_replaces_a_changed_password(
        midge_broker_factory: BrokerFactory, midge_client: ClientFactory,
        ledger_file: Path) -> None:
    broker = midge_broker_factory(plugins={"auth_ledger": {"file": str(ledger_file)}})
    assert midge_client(broker, username="alice", password="old-pw").reason_code == 0
    ledger_file.write_text(_ledger_yaml("new-pw"))
    broker.call(broker.broker.reload)
    old = midge_client(broker, protocol=5, username="alice", password="old-pw", check=False)
    new = midge_client(broker, protocol=5, username="alice", password="new-pw", check=False)
    assert (old.reason_code, new.reason_code) == (0x86, 0)


def test_reload_applies_changed_acl_to_connected_client(
        midge_broker_factory: BrokerFactory, midge_client: ClientFactory,
        ledger_file: Path) -> None:
    broker = midge_broker_factory(plugins={"auth_ledger": {"file": str(ledger_file)}})
    alice = midge_client(broker, protocol=5, username="alice", password="old-pw")
    alice.subscribe("a/#", qos=1)
    admin = midge_client(broker, protocol=5, username="admin", password="admin-pw")
    assert admin.publish("a/1", b"before", qos=1) < 0x80
    assert alice.expect().payload == b"before"  # the decision is cached now
    ledger_file.write_text(_ledger_yaml("old-pw", access=0))
    broker.call(broker.broker.reload)
    assert admin.publish("a/1", b"after", qos=1) < 0x80
    alice.expect_none()


@pytest.mark.parametrize("broken", [
    "users:\n  alice: {password: new-pw\n",  # not YAML
    "users:\n  alice:\n    password: new-pw\n    acl: {\"a/#\": 7}\n",  # bad access
], ids=["syntax", "value"])
def test_reload_of_a_broken_file_keeps_the_old_ledger(
        midge_broker_factory: BrokerFactory, midge_client: ClientFactory,
        ledger_file: Path, caplog: pytest.LogCaptureFixture, broken: str) -> None:
    broker = midge_broker_factory(plugins={"auth_ledger": {"file": str(ledger_file)}})
    ledger_file.write_text(broken)
    with caplog.at_level(logging.ERROR, logger="midge.plugins.auth_ledger"):
        broker.call(broker.broker.reload)
    assert "reload failed" in caplog.text
    old = midge_client(broker, protocol=5, username="alice", password="old-pw", check=False)
    new = midge_client(broker, protocol=5, username="alice", password="new-pw", check=False)
    assert (old.reason_code, new.reason_code) == (0, 0x86)
