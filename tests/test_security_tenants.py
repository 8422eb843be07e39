"""Tenants stay apart on a shared broker: wills, session ownership, shared groups,
reloads, quotas. A real broker with auth_ledger (alice and bob, each with their own
tree, a shared read-only tree), real sockets and paho clients.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from security_wire import TENANTS, Raw, write_ledger

from midge import hookimpl
from midge.codec import ConnAck, Disconnect, Publish, SubAck, Subscribe, Subscription, Will
from midge.testing import RunningBroker, TestClient

BrokerFactory = Callable[..., RunningBroker]
ClientFactory = Callable[..., TestClient]


@pytest.fixture
def ledger_file(tmp_path: Path) -> Path:
    return write_ledger(tmp_path / "ledger.json", copy.deepcopy(TENANTS))


@pytest.fixture
def tenants(midge_broker_factory: BrokerFactory, ledger_file: Path) -> RunningBroker:
    return midge_broker_factory(plugins={"auth_ledger": {"file": str(ledger_file)}})


def creds(user: str) -> dict[str, Any]:
    return {"username": user, "password": f"{user}-pw".encode()}


def reload(broker: RunningBroker) -> None:
    broker.call(broker.broker.reload)


# -- 1. wills pass the ACL and the $ rule ------------------------------------------------


@pytest.mark.parametrize(("level", "code"), [(5, 0x87), (4, 5)], ids=["v5", "v311"])
@pytest.mark.parametrize("topic", ["bob/cmd", "$SYS/broker/maintenance", "bob/config"])
def test_a_will_on_a_forbidden_topic_is_refused_at_connect(
        tenants: RunningBroker, midge_client: ClientFactory, level: int, code: int,
        topic: str) -> None:
    bob = midge_client(tenants, protocol=5, username="bob", password="bob-pw")
    bob.subscribe("bob/#")
    raw = Raw(tenants.port, level)
    answer = raw.connect("alice-1", **creds("alice"),
                         will=Will(topic, b"FORGED" if topic != "bob/config" else b"",
                                   1, True))
    assert isinstance(answer, ConnAck) and answer.reason_code == code
    assert raw.closed()
    bob.expect_none()
    assert tenants.broker.engine.router.retained.get(topic) is None


def test_a_will_on_the_clients_own_tree_is_published(
        tenants: RunningBroker, midge_client: ClientFactory) -> None:
    watcher = midge_client(tenants, protocol=5, username="alice", password="alice-pw")
    watcher.subscribe("alice/#")
    raw = Raw(tenants.port)
    answer = raw.connect("alice-1", **creds("alice"), will=Will("alice/status", b"gone"))
    assert isinstance(answer, ConnAck) and answer.reason_code == 0
    raw.drop()
    assert watcher.expect().payload == b"gone"


def test_a_will_is_checked_again_when_it_is_published(
        tenants: RunningBroker, midge_client: ClientFactory, ledger_file: Path) -> None:
    # allowed at CONNECT; the write grant is revoked before the connection drops
    watcher = midge_client(tenants, protocol=5, username="bob", password="bob-pw")
    watcher.subscribe("shared/#")
    ledger = copy.deepcopy(TENANTS)
    ledger["users"]["alice"]["acl"]["shared/alice"] = 3
    write_ledger(ledger_file, ledger)
    reload(tenants)
    raw = Raw(tenants.port)
    answer = raw.connect("alice-1", **creds("alice"),
                         will=Will("shared/alice", b"late", 0, True))
    assert isinstance(answer, ConnAck) and answer.reason_code == 0
    write_ledger(ledger_file, copy.deepcopy(TENANTS))
    reload(tenants)
    raw.drop()
    watcher.expect_none(1.0)
    assert tenants.broker.engine.router.retained.get("shared/alice") is None


# -- 2. a client id belongs to its user ------------------------------------------------


@pytest.mark.parametrize(("level", "code"), [(5, 0x87), (4, 5)], ids=["v5", "v311"])
def test_another_user_cannot_take_a_session(
        tenants: RunningBroker, midge_client: ClientFactory, level: int, code: int) -> None:
    alice = midge_client(tenants, client_id="alice-phone", protocol=5, username="alice",
                         password="alice-pw", clean=False,
                         properties=_expiry(3600))
    alice.subscribe("alice/#", qos=1)
    raw = Raw(tenants.port, level)
    answer = raw.connect("alice-phone", **creds("bob"), clean_start=False)
    assert isinstance(answer, ConnAck)
    assert answer.reason_code == code and not answer.session_present
    # alice is still connected and still gets her messages
    assert alice.disconnects.empty()
    tenants.publish("alice/x", b"still mine", qos=1)
    assert alice.expect().payload == b"still mine"


def test_the_same_user_may_resume_its_session(
        tenants: RunningBroker, midge_client: ClientFactory) -> None:
    first = midge_client(tenants, client_id="alice-phone", protocol=5, username="alice",
                         password="alice-pw", clean=False, properties=_expiry(3600))
    first.subscribe("alice/#", qos=1)
    first.disconnect()
    again = midge_client(tenants, client_id="alice-phone", protocol=5, username="alice",
                         password="alice-pw", clean=False, properties=_expiry(3600))
    assert again.session_present


def test_the_foreign_session_code_is_configurable(
        midge_broker_factory: BrokerFactory, ledger_file: Path) -> None:
    broker = midge_broker_factory(plugins={"auth_ledger": {"file": str(ledger_file)}},
                                  foreign_session_code=0x85)
    alice = Raw(broker.port)
    assert alice.connect("shared-id", **creds("alice")).reason_code == 0
    bob = Raw(broker.port)
    assert bob.connect("shared-id", **creds("bob")).reason_code == 0x85


def test_use_username_as_clientid(midge_broker_factory: BrokerFactory,
                                  ledger_file: Path) -> None:
    broker = midge_broker_factory(plugins={"auth_ledger": {
        "file": str(ledger_file), "use_username_as_clientid": True}})
    raw = Raw(broker.port)
    assert raw.connect("anything", **creds("bob")).reason_code == 0
    assert broker.broker.client("bob") is not None
    assert broker.broker.client("anything") is None


# -- 7. shared groups choose among members allowed to read --------------------------------


def test_a_shared_group_member_whose_read_was_revoked_gets_nothing_and_nothing_is_lost(
        tenants: RunningBroker, midge_client: ClientFactory, ledger_file: Path) -> None:
    alice = midge_client(tenants, protocol=5, username="alice", password="alice-pw")
    bob = midge_client(tenants, protocol=5, username="bob", password="bob-pw")
    alice.subscribe("$share/workers/jobs/#", qos=1)
    bob.subscribe("$share/workers/jobs/#", qos=1)
    ledger = copy.deepcopy(TENANTS)
    del ledger["users"]["alice"]["acl"]["jobs/#"]
    write_ledger(ledger_file, ledger)
    reload(tenants)
    for n in range(10):
        tenants.publish(f"jobs/{n}", str(n), qos=1)
    got = sorted(int(bob.expect().payload) for _ in range(10))
    assert got == list(range(10))
    alice.expect_none()


# -- 8. an async on_reload finishes before the ACL cache is cleared ----------------------


class SlowReloadAcl:
    """Allows everything until an ``async def`` reload, which takes a while, denies."""

    def __init__(self) -> None:
        self.allowed = True

    @hookimpl
    def on_connect_authenticate(self) -> bool:
        return True

    @hookimpl
    def on_acl_check(self) -> bool:
        return self.allowed

    @hookimpl
    async def on_reload(self) -> None:
        import anyio

        await anyio.sleep(0.3)
        self.allowed = False


def test_an_async_on_reload_finishes_before_the_acl_cache_is_cleared(
        midge_broker_factory: BrokerFactory, midge_client: ClientFactory) -> None:
    plugin = SlowReloadAcl()
    broker = midge_broker_factory(objects=[("slow", plugin)])
    client = midge_client(broker, protocol=5)
    client.subscribe("t/#")
    broker.publish("t/1", b"before")
    assert client.expect().payload == b"before"
    reload(broker)
    assert plugin.allowed is False  # the reload had finished when reload() returned
    broker.publish("t/1", b"after")
    client.expect_none()


# -- 9. quotas ---------------------------------------------------------------------------


def test_connections_per_user(midge_broker_factory: BrokerFactory, ledger_file: Path) -> None:
    broker = midge_broker_factory(plugins={"auth_ledger": {"file": str(ledger_file)}},
                                  max_connections_per_user=2)
    first, second, third = Raw(broker.port), Raw(broker.port), Raw(broker.port)
    assert first.connect("a1", **creds("alice")).reason_code == 0
    assert second.connect("a2", **creds("alice")).reason_code == 0
    assert third.connect("a3", **creds("alice")).reason_code == 0x97
    # bob is another user; alice taking over her own id adds no connection
    assert Raw(broker.port).connect("b1", **creds("bob")).reason_code == 0
    assert Raw(broker.port).connect("a1", **creds("alice")).reason_code == 0
    second.close()
    _eventually(lambda: Raw(broker.port).connect("a4", **creds("alice")).reason_code == 0)


def test_connections_per_address(midge_broker_factory: BrokerFactory,
                                 ledger_file: Path) -> None:
    broker = midge_broker_factory(plugins={"auth_ledger": {"file": str(ledger_file)}},
                                  max_connections_per_address=1)
    here = Raw(broker.port)
    assert here.connect("a1", **creds("alice")).reason_code == 0
    assert Raw(broker.port).connect("b1", **creds("bob")).reason_code == 0x97
    there = Raw(broker.port, source="127.0.0.2")
    assert there.connect("b1", **creds("bob")).reason_code == 0


def test_sessions_per_user(midge_broker_factory: BrokerFactory, ledger_file: Path) -> None:
    broker = midge_broker_factory(plugins={"auth_ledger": {"file": str(ledger_file)}},
                                  max_sessions_per_user=2)
    props = {"properties": {0x11: 3600}, "clean_start": False}
    for cid in ("s1", "s2"):
        raw = Raw(broker.port)
        assert raw.connect(cid, **creds("alice"), **props).reason_code == 0
        raw.send(Disconnect())
        assert raw.closed()
    assert Raw(broker.port).connect("s3", **creds("alice"), **props).reason_code == 0x97
    # resuming one of them is not a new session
    assert Raw(broker.port).connect("s1", **creds("alice"), **props).reason_code == 0


def test_subscriptions_per_client_and_filters_per_subscribe(
        midge_broker_factory: BrokerFactory, ledger_file: Path) -> None:
    broker = midge_broker_factory(plugins={"auth_ledger": {"file": str(ledger_file)}},
                                  max_subscriptions_per_client=3, max_filters_per_subscribe=4)
    raw = Raw(broker.port)
    assert raw.connect("a1", **creds("alice")).reason_code == 0
    filters = [Subscription(f"alice/{n}") for n in range(6)]
    raw.send(Subscribe(1, filters))
    answer = raw.recv()
    assert isinstance(answer, SubAck)
    # three fit the session; the fourth is over that quota; the last two are beyond
    # max_filters_per_subscribe
    assert answer.reason_codes == [0, 0, 0, 0x97, 0x97, 0x97]
    # re-subscribing to one it has is a replacement, not a new subscription
    raw.send(Subscribe(2, [Subscription("alice/0", 1)]))
    assert raw.recv().reason_codes == [1]


def test_sixty_thousand_filters_cost_no_acl_votes(
        midge_broker_factory: BrokerFactory, ledger_file: Path) -> None:
    broker = midge_broker_factory(plugins={"auth_ledger": {"file": str(ledger_file)}})
    raw = Raw(broker.port)
    assert raw.connect("a1", **creds("alice")).reason_code == 0
    raw.send(Subscribe(1, [Subscription(f"alice/{n}") for n in range(60_000)]))
    answer = raw.recv(10)
    assert isinstance(answer, SubAck)
    assert answer.reason_codes[:1000] == [0] * 1000
    assert set(answer.reason_codes[1000:]) == {0x97}
    assert len(broker.broker.engine.router.subscriptions) == 1000


def test_retained_message_count_and_bytes(midge_broker_factory: BrokerFactory,
                                          midge_client: ClientFactory,
                                          ledger_file: Path) -> None:
    broker = midge_broker_factory(plugins={"auth_ledger": {"file": str(ledger_file)}},
                                  max_retained_messages=3, max_retained_bytes=1000)
    alice = midge_client(broker, protocol=5, username="alice", password="alice-pw")
    assert alice.publish("alice/1", b"x" * 400, qos=1, retain=True) == 0x10
    assert alice.publish("alice/2", b"x" * 400, qos=1, retain=True) == 0x10
    assert alice.publish("alice/3", b"x" * 400, qos=1, retain=True) == 0x97  # bytes
    assert alice.publish("alice/2", b"x" * 500, qos=1, retain=True) == 0x10  # replaces
    assert alice.publish("alice/3", b"x", qos=1, retain=True) == 0x10
    assert alice.publish("alice/4", b"x", qos=1, retain=True) == 0x97  # count
    assert alice.publish("alice/1", b"", qos=1, retain=True) == 0x10  # clears
    assert alice.publish("alice/4", b"x", qos=1, retain=True) == 0x10
    router = broker.broker.engine.router
    assert sorted(router.retained.match("alice/#"), key=lambda m: m.topic)[0].topic == "alice/2"
    assert router.retained_bytes == 502


@pytest.mark.parametrize("where", ["publish", "will"])
def test_a_response_topic_with_wildcards_is_refused(
        tenants: RunningBroker, where: str) -> None:
    raw = Raw(tenants.port)
    props = {0x08: "alice/replies/#"}
    if where == "will":
        answer = raw.connect("a1", **creds("alice"),
                             will=Will("alice/w", b"x", properties=props))
        assert isinstance(answer, ConnAck) and answer.reason_code == 0x82
        return
    assert raw.connect("a1", **creds("alice")).reason_code == 0
    raw.send(Publish("alice/req", b"?", properties=props))
    answer = raw.recv()
    assert isinstance(answer, Disconnect) and answer.reason_code == 0x82
    assert raw.closed()


def test_users_removed_on_reload_are_disconnected(
        tenants: RunningBroker, midge_client: ClientFactory, ledger_file: Path) -> None:
    alice = midge_client(tenants, protocol=5, username="alice", password="alice-pw")
    bob = midge_client(tenants, protocol=5, username="bob", password="bob-pw")
    ledger = copy.deepcopy(TENANTS)
    del ledger["users"]["alice"]
    write_ledger(ledger_file, ledger)
    reload(tenants)
    assert alice.disconnects.get(timeout=3) == 0x87
    assert bob.disconnects.empty()
    assert tenants.broker.client(bob.client_id) is not None


def test_plain_text_passwords_are_warned_about_at_startup(
        midge_broker_factory: BrokerFactory, ledger_file: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="midge.plugins.auth_ledger"):
        midge_broker_factory(plugins={"auth_ledger": {"file": str(ledger_file)}})
    warnings = [r.getMessage() for r in caplog.records if "plain text" in r.getMessage()]
    assert warnings and "users.alice, users.bob" in warnings[0]
    assert "alice-pw" not in warnings[0]


# -- helpers -----------------------------------------------------------------------------


def _expiry(seconds: int) -> Properties:
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = seconds
    return props


def _eventually(check: Callable[[], bool], timeout: float = 3.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


class Storage:
    """Restores one session, with or without its owner."""

    def __init__(self, entry: dict[str, Any]) -> None:
        self.entry = entry

    @hookimpl
    def stored_clients(self) -> list[dict[str, Any]]:
        return [self.entry]


@pytest.mark.parametrize("owner", ["alice", None], ids=["owned", "no-owner-key"])
def test_a_restored_session_keeps_or_finds_its_owner(
        midge_broker_factory: BrokerFactory, ledger_file: Path, owner: str | None) -> None:
    # with no owner key (a store that does not know owners) the first user to connect
    # claims the session; either way another user is refused afterwards
    entry: dict[str, Any] = {"client_id": "alice-phone", "expiry_interval": 3600}
    if owner is not None:
        entry["owner"] = owner
    broker = midge_broker_factory(objects=[("store", Storage(entry))],
                                  plugins={"auth_ledger": {"file": str(ledger_file)}})
    props = {"properties": {0x11: 3600}, "clean_start": False}
    answer = Raw(broker.port).connect("alice-phone", **creds("alice"), **props)
    assert answer.reason_code == 0 and answer.session_present
    assert Raw(broker.port).connect("alice-phone", **creds("bob"), **props).reason_code == 0x87
