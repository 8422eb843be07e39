"""What a plugin's "no" may carry, and the secret forms of a plugin's table.

``Refuse`` and ``RejectPublish`` refuse, when made, a code that would tell the client it
succeeded (below 0x80) or is no reason code at all; ``RejectPublish`` also one a PUBACK
cannot carry. Over real sockets: the code and ``reason`` reach a v5 sender, a denied v3
CONNECT gets return code 4 or 5. ``{env = ...}`` / ``{file = ...}`` are resolved, and a
one-key table that looks like one but is not is an error naming the key.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from midge import PluginConfigError, ReasonCode, Refuse, RejectPublish, hookimpl
from midge.codec import ConnAck, Property, PubAck, Publish
from midge.hooks.loader import resolve_secrets

Factory = Callable[..., Any]


@pytest.mark.parametrize(("code", "message"), [
    (0, "RejectPublish(0 = 0x00): a refusal needs an error code, 0x80..0xFF (codes below "
        "0x80 mean success to the client)"),
    (0x10, "RejectPublish(16 = 0x10): a refusal needs an error code"),
    (300, "RejectPublish(300 = 0x12c): a refusal needs an error code, 0x80..0xFF (a reason "
          "code is one byte)"),
    (-1, "RejectPublish(-1 = -0x1): a refusal needs an error code"),
    (0xA5, "RejectPublish(0xa5): not an MQTT 5 reason code"),
    (ReasonCode.SERVER_SHUTTING_DOWN, "RejectPublish(0x8b): SERVER_SHUTTING_DOWN cannot go in "
                                      "a PUBACK/PUBREC; allowed: 0x80, 0x83, 0x87, 0x90, "
                                      "0x97, 0x99"),
])
def test_reject_publish_refuses_a_code_a_puback_cannot_carry(code: int, message: str) -> None:
    with pytest.raises(ValueError) as raised:
        RejectPublish(code)
    assert str(raised.value).startswith(message)


@pytest.mark.parametrize("code", [0, 0x10, 0x7F, 0x100, 300, 0xA5])
def test_refuse_needs_an_error_code(code: int) -> None:
    with pytest.raises(ValueError, match=r"^Refuse\("):
        Refuse(code)


@pytest.mark.parametrize("bad", [True, "0x87", 0x87 + 0.0])
def test_a_reason_code_must_be_an_integer(bad: Any) -> None:
    with pytest.raises(TypeError, match="takes an integer reason code"):
        RejectPublish(bad)


def test_valid_codes_are_kept() -> None:
    rejected = RejectPublish(0x97, "over quota")
    assert rejected.reason_code is ReasonCode.QUOTA_EXCEEDED and rejected.reason == "over quota"
    assert RejectPublish().reason_code == ReasonCode.NOT_AUTHORIZED
    assert Refuse(0x8A).reason_code is ReasonCode.BANNED
    assert Refuse(0x9C).reason_code is ReasonCode.USE_ANOTHER_SERVER


class Quota:
    @hookimpl
    def on_publish(self, client: Any, packet: Publish) -> None:
        if packet.topic == "full":
            raise RejectPublish(ReasonCode.QUOTA_EXCEEDED, "over quota")
        if packet.topic == "buggy":
            raise RejectPublish(0)


def test_the_code_and_reason_reach_a_v5_sender_and_a_bad_code_is_logged(
    broker_factory: Factory, raw_factory: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    running = broker_factory(plugins=[("quota", Quota())])
    writer = raw_factory(port=running.port, level=5)
    assert isinstance(writer.connect("writer", 5), ConnAck)
    writer.send(Publish("full", b"x", 1, packet_id=1))
    assert writer.recv() == PubAck(1, 0x97, {Property.REASON_STRING: "over quota"})
    with caplog.at_level(logging.ERROR, logger="midge.plugins"):
        writer.send(Publish("buggy", b"x", 1, packet_id=2))
        ack = writer.recv()
    # a failing on_publish is skipped (docs/hooks.md, pipeline); its error says why
    assert isinstance(ack, PubAck) and ack.reason_code == 0x10
    [record] = [r for r in caplog.records if r.getMessage() == "plugin quota failed in on_publish"]
    assert record.exc_info is not None
    assert "RejectPublish(0 = 0x00): a refusal needs an error code" in str(record.exc_info[1])


class Abstains:
    @hookimpl
    def on_connect_authenticate(self, client: Any, packet: Any) -> None:
        return None


@pytest.mark.parametrize(("level", "username", "code"), [
    (4, "alice", 4), (4, None, 5), (3, "alice", 4), (5, "alice", 0x86), (5, None, 0x87),
])
def test_no_decision_is_connack_0x86_or_0x87_and_return_code_4_or_5_for_v3(
    broker_factory: Factory, raw_factory: Factory, level: int, username: str | None, code: int
) -> None:
    running = broker_factory(allow_anonymous=False, plugins=[("abstains", Abstains())])
    raw = raw_factory(port=running.port, level=level)
    kwargs: dict[str, Any] = {"username": username, "password": b"pw"} if username else {}
    connack = raw.connect("c", level, **kwargs)
    assert isinstance(connack, ConnAck) and connack.reason_code == code


# -- secrets -------------------------------------------------------------------------------


def test_secret_forms_are_resolved_in_nested_tables_and_arrays(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MIDGE_T_SECRET", "from-env")
    secret = tmp_path / "token"
    secret.write_text("from-file\n")
    table = {"a": {"env": "MIDGE_T_SECRET"}, "nested": {"b": {"file": str(secret)}},
             "servers": [{"password": {"env": "MIDGE_T_SECRET"}, "host": "h"}],
             "plain": {"level": "info"}, "two": {"env": "X", "other": 1}}
    assert resolve_secrets(table, "plugins.p") == {
        "a": "from-env", "nested": {"b": "from-file"},
        "servers": [{"password": "from-env", "host": "h"}],
        "plain": {"level": "info"}, "two": {"env": "X", "other": 1},
    }


@pytest.mark.parametrize(("value", "key", "message"), [
    ({"envv": "X"}, "plugins.p.password",
     '{ envv = ... } is not a secret form; did you mean { env = "NAME" }?'),
    ({"ENV": "X"}, "plugins.p.password", "{ ENV = ... } is not a secret form"),
    ({"environment": "X"}, "plugins.p.password", "did you mean { env = \"NAME\" }?"),
    ({"fiel": "/x"}, "plugins.p.password", 'did you mean { file = "/path" }?'),
    ({"files": "/x"}, "plugins.p.password", 'did you mean { file = "/path" }?'),
    ({"path": "/x"}, "plugins.p.password", 'did you mean { file = "/path" }?'),
    ({"env": 5}, "plugins.p.password.env",
     "must be the name of an environment variable (a non-empty string), not 5"),
    ({"file": ""}, "plugins.p.password.file", "must be the name of a file"),
    ({"env": "MIDGE_T_UNSET"}, "plugins.p.password",
     "environment variable 'MIDGE_T_UNSET' is not set"),
    ({"file": "/nonexistent/midge"}, "plugins.p.password",
     "cannot read secret file '/nonexistent/midge': No such file or directory"),
])
def test_a_bad_or_misspelt_secret_form_is_an_error_naming_the_key(
    value: dict[str, Any], key: str, message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MIDGE_T_UNSET", raising=False)
    with pytest.raises(PluginConfigError) as raised:
        resolve_secrets({"password": value}, "plugins.p")
    assert raised.value.key == key
    assert message in raised.value.message


def test_a_one_key_table_that_is_no_secret_lookalike_is_passed_on() -> None:
    table = {"log": {"level": "debug"}, "limits": {"envelope": 3}, "x": {"fil": 1}}
    assert resolve_secrets(table, "plugins.p") == table


# -- midge.testing, as its docs say ----------------------------------------------------------


@pytest.mark.parametrize(("protocol", "username", "code"), [
    (4, "u", 0x86), (4, None, 0x87), (3, "u", 0x86), (5, "u", 0x86), (5, None, 0x87),
])
def test_testing_reason_code_is_pahos_v5_style_code_for_v3_clients(
    midge_broker_factory: Factory, midge_client: Factory, protocol: int,
    username: str | None, code: int
) -> None:
    broker = midge_broker_factory(objects=[Abstains()])
    client = midge_client(broker, protocol=protocol, username=username,
                          password="p" if username else None, check=False)
    assert client.reason_code == code


def test_testing_stop_waits_for_on_stopped(midge_broker_factory: Factory) -> None:
    import anyio

    done: list[str] = []

    class SlowStop:
        @hookimpl
        async def on_stopped(self) -> None:
            await anyio.sleep(0.3)
            done.append("stopped")

    broker = midge_broker_factory(objects=[SlowStop()])
    broker.stop()
    assert done == ["stopped"]
    assert broker.stopped
