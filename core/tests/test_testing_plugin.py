"""The midge pytest plugin (midge.testing): its fixtures, run by pytester as a user would."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from importlib.metadata import entry_points

import pytest

pytest_plugins = ["pytester"]

USER_TESTS = '''
from __future__ import annotations

import socket

import pytest

from midge import PluginError, ReasonCode, RejectPublish, hookimpl

STARTED = []


class Gate:
    """Lets user "good" in (abstains otherwise); rejects messages on blocked/#."""

    @hookimpl
    def on_connect_authenticate(self, client, packet):
        return True if packet.username == "good" else None

    @hookimpl
    def on_acl_check(self, client, topic, write):
        return True

    @hookimpl
    def on_publish(self, client, packet):
        if packet.topic.startswith("blocked/"):
            raise RejectPublish(ReasonCode.NOT_AUTHORIZED)
        return packet


@pytest.mark.parametrize("protocol", [3, 4, 5])
def test_default_broker_and_clients(midge_broker, midge_client, protocol):
    STARTED.append(midge_broker)
    sub = midge_client(protocol=protocol)
    assert sub.subscribe("a/+", qos=1) == [1]
    pub = midge_client(midge_broker, protocol=5)
    assert pub.publish("a/b", b"hello", qos=1) == 0
    message = sub.expect()
    assert (message.topic, message.payload, message.qos) == ("a/b", b"hello", 1)
    sub.expect_none(0.2)


def test_brokers_are_stopped_after_the_test():
    assert len(STARTED) == 3 and all(handle.stopped for handle in STARTED)
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", STARTED[-1].port), timeout=1).close()


def test_factory_objects_limits_and_inferred_anonymous(midge_broker_factory, midge_client):
    broker = midge_broker_factory(objects=[Gate()], max_packet_size=512)
    anonymous = midge_client(broker, protocol=5, check=False)
    assert anonymous.reason_code == 0x87
    good = midge_client(broker, protocol=5, username="good", password="x")
    assert good.connack_properties.MaximumPacketSize == 512
    good.subscribe("#")
    assert good.publish("blocked/x", "no", qos=1) == 0x87
    assert good.publish("open/x", "yes", qos=1) == 0
    assert good.expect().topic == "open/x"
    good.expect_none(0.2)


def test_factory_anonymous_can_be_forced(midge_broker_factory, midge_client):
    broker = midge_broker_factory(objects=[("gate", Gate())], allow_anonymous=True)
    assert midge_client(broker).reason_code == 0


def test_refused_client_fails_the_test_by_default(midge_broker_factory, midge_client):
    broker = midge_broker_factory(objects=[Gate()])
    with pytest.raises(AssertionError, match="refused: CONNACK 0x87"):
        midge_client(broker, protocol=5)


def test_entry_point_plugin_tables(midge_broker_factory, midge_client):
    pytest.importorskip("midge_auth_allow")
    broker = midge_broker_factory(plugins={"auth_allow": {}})
    assert broker.broker.settings.listeners[0].allow_anonymous is False
    assert midge_client(broker, username="anyone", password="x").reason_code == 0
    with pytest.raises(PluginError, match="no_such_plugin"):
        midge_broker_factory(plugins={"no_such_plugin": {}})


def test_capture(midge_broker, midge_client, midge_capture):
    capture = midge_capture("c/#")
    midge_broker.publish("c/retained", "r", retain=True)
    midge_client().publish("c/1", "one", qos=1)
    midge_client().publish("elsewhere", "no")
    assert [m.payload for m in capture.wait_for(2)] == [b"r", b"one"]
    late = midge_capture("c/retained", broker=midge_broker)
    assert late.wait_for(1)[0].retain is True
    assert capture.payloads == [b"r", b"one"]


def test_expect_fails_when_nothing_comes(midge_client):
    midge_client().expect(timeout=0.2)


def test_expect_none_fails_when_something_comes(midge_client):
    client = midge_client()
    client.subscribe("n/#")
    client.publish("n/1", "surprise")
    client.expect_none()


def test_wait_for_fails_when_too_few_come(midge_broker, midge_capture):
    capture = midge_capture("w/#")
    midge_broker.publish("w/1", "only one")
    capture.wait_for(2, timeout=0.3)
'''


def test_the_plugin_is_registered_for_pytest() -> None:
    [entry] = [ep for ep in entry_points(group="pytest11") if ep.name == "midge"]
    assert entry.value == "midge.testing"


def test_loading_the_plugin_imports_neither_paho_nor_the_broker() -> None:
    code = (
        "import sys, midge.testing\n"
        "heavy = [m for m in ('paho', 'midge.broker', 'anyio') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_fixtures_as_a_user_runs_them(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_user=USER_TESTS)
    result = pytester.runpytest("-p", "no:cacheprovider", "-p", "no:randomly")
    result.assert_outcomes(passed=9, failed=3)
    result.stdout.fnmatch_lines([
        "*AssertionError: client 'midge-test-*' received no message within 0.2s",
        "*AssertionError: client 'midge-test-*' received an unexpected message on 'n/1': "
        "b'surprise'",
        "*AssertionError: captured 1 of 2 messages on 'w/#' within 0.3s: ?w/1=b'only one'?",
    ])


def test_client_fixture_skips_without_paho(pytester: pytest.Pytester) -> None:
    pytester.makeconftest("import sys\nsys.modules['paho'] = None\n")
    pytester.makepyfile(test_user=textwrap.dedent("""
        def test_needs_paho(midge_client):
            midge_client()

        def test_broker_alone(midge_broker):
            assert midge_broker.port
    """))
    result = pytester.runpytest_subprocess("-rs", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines(["*midge_client needs paho-mqtt*pip install paho-mqtt*"])
