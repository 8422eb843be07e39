"""The config table and ledger files: formats, validation errors naming the key, reload."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
from ledger_fakes import can, connect
from midge_auth_ledger import LedgerPlugin

from midge import PluginConfigError

LEDGER_YAML = """\
users:
  alice:
    password: wonder
    acl:
      "alice/#": 3
auth:
  - username: "sensor-*"
    password: "plain$shared"
    allow: true
acl:
  - username: "sensor-*"
    filters:
      "sensors/#": 2
"""

LEDGER_TOML = """\
[users.alice]
password = "wonder"
[users.alice.acl]
"alice/#" = 3

[[auth]]
username = "sensor-*"
password = "plain$shared"
allow = true

[[acl]]
username = "sensor-*"
[acl.filters]
"sensors/#" = 2
"""

LEDGER_DATA: dict[str, Any] = {
    "users": {"alice": {"password": "wonder", "acl": {"alice/#": 3}}},
    "auth": [{"username": "sensor-*", "password": "plain$shared", "allow": True}],
    "acl": [{"username": "sensor-*", "filters": {"sensors/#": 2}}],
}


def check_example(p: LedgerPlugin) -> None:
    assert connect(p, "alice", "wonder") is True
    assert connect(p, "alice", "x") is False
    assert connect(p, "sensor-1", "shared") is True
    assert connect(p, "sensor-1", "x") is False
    assert can(p, "alice/1", username="alice") == "3"
    assert can(p, "sensors/t", username="sensor-1") == "2"
    assert can(p, "alice/1", username="sensor-1") == "0"


@pytest.mark.parametrize(("name", "text"), [
    ("ledger.yaml", LEDGER_YAML), ("ledger.yml", LEDGER_YAML),
    ("ledger.json", json.dumps(LEDGER_DATA)), ("ledger.toml", LEDGER_TOML),
])
def test_file_formats(tmp_path: Path, name: str, text: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    check_example(LedgerPlugin({"file": str(path)}))


def test_inline_ledger() -> None:
    check_example(LedgerPlugin(LEDGER_DATA))


def test_relative_file_path_is_fixed_at_start(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "ledger.yaml").write_text(LEDGER_YAML)
    monkeypatch.chdir(tmp_path)
    p = LedgerPlugin({"file": "ledger.yaml"})
    monkeypatch.chdir("/")
    p.on_reload(None)
    check_example(p)


def test_mochi_style_yaml_loads(tmp_path: Path) -> None:
    path = tmp_path / "mochi.yaml"
    path.write_text("""\
auth:
  - username: peach
    password: password1
    allow: true
  - remote: 127.0.0.1:*
    allow: true
acl:
  - remote: 127.0.0.1:*
  - username: melon
    filters:
      melon/#: 3
      updates/#: 2
users:
  melon:
    username: melon
    password: melon1
""")
    p = LedgerPlugin({"file": str(path)})
    assert connect(p, "peach", "password1") is True
    assert connect(p, "melon", "melon1") is True
    assert connect(p, "anyone", remote="127.0.0.1:3") is True
    assert can(p, "melon/x", username="melon") == "3"
    assert can(p, "updates/x", username="melon") == "2"
    assert can(p, "x", remote="127.0.0.1:3") == "3"


def config_error(table: dict[str, Any]) -> PluginConfigError:
    with pytest.raises(PluginConfigError) as exc:
        LedgerPlugin(table)
    return exc.value


@pytest.mark.parametrize(("table", "key", "message"), [
    ({"bogus": 1, "acl": []}, "bogus", "allowed: file, users, auth, acl, acl_default"),
    ({}, "", "needs a ledger"),
    ({"acl": [], "acl_default": "maybe"}, "acl_default", "'deny' or 'allow'"),
    ({"file": "x.yaml", "users": {}}, "file", "not both"),
    ({"file": 3}, "file", "file path"),
    ({"file": "ledger.ini"}, "file", ".yaml, .yml, .json, .toml"),
    ({"users": []}, "users", "table of user name"),
    ({"users": {"alice": "pw"}}, "users.alice", "a table with keys"),
    ({"users": {"alice": {"pass": "x"}}}, "users.alice.pass",
     "allowed: acl, disallow, password, username"),
    ({"users": {"alice": {"password": 1234}}}, "users.alice.password", "string (quote it)"),
    ({"users": {"alice": {"password": ""}}}, "users.alice.password", "must not be empty"),
    ({"users": {"alice": {"password": "bcrypt$x"}}}, "users.alice.password",
     "unknown scheme"),
    ({"users": {"alice": {"disallow": "yes"}}}, "users.alice.disallow", "true or false"),
    ({"users": {"alice": {"username": "bob"}}}, "users.alice.username", "'alice'"),
    ({"users": {"alice": {"acl": {"a/#": 4}}}}, "users.alice.acl.a/#",
     "0 (deny), 1 (read), 2 (write), 3"),
    ({"users": {"alice": {"acl": {"a/#": True}}}}, "users.alice.acl.a/#", "access must be"),
    ({"users": {"alice": {"acl": {"a/#/b": 1}}}}, "users.alice.acl.a/#/b",
     "not a valid MQTT topic filter"),
    ({"auth": {"allow": True}}, "auth", "list of auth rules"),
    ({"auth": [{"allow": "yes"}]}, "auth.0.allow", "true or false"),
    ({"auth": [{"allow": True}, {"user": "x"}]}, "auth.1.user",
     "allowed: allow, client, password, remote, username"),
    ({"auth": [{"remote": 127}]}, "auth.0.remote", "string"),
    ({"acl": [{"filters": {}}]}, "acl.0.filters", "must not be empty"),
    ({"acl": [{"filters": {"a+": 1}}]}, "acl.0.filters.a+", "'+' and '#' must fill a level"),
    ({"acl": [{"filters": {"": 1}}]}, "acl.0.filters.", "not a valid MQTT topic filter"),
    ({"acl": [{"allow": True}]}, "acl.0.allow", "allowed: client, filters, remote, username"),
])
def test_config_errors_name_the_key(table: dict[str, Any], key: str, message: str) -> None:
    error = config_error(table)
    assert error.key == key
    assert message in error.message


def test_missing_file(tmp_path: Path) -> None:
    error = config_error({"file": str(tmp_path / "nope.yaml")})
    assert error.key == "file"
    assert "cannot read" in error.message and "nope.yaml" in error.message


@pytest.mark.parametrize(("name", "text", "message"), [
    ("l.yaml", "users: [", "not valid YAML"),
    ("l.json", "{", "not valid JSON"),
    ("l.toml", "users = ", "not valid TOML"),
    ("l.yaml", "- a\n- b\n", "must hold a table"),
    ("l.yaml", "groups: {}\n", "groups: unknown key; allowed: users, auth, acl"),
    ("l.yaml", "users:\n  bob:\n    disallow: maybe\n", "users.bob.disallow: must be true"),
    ("l.json", '{"acl": [{"filters": {"#": 9}}]}', "acl.0.filters.#: access must be"),
])
def test_bad_file_contents_name_file_and_path(tmp_path: Path, name: str, text: str,
                                              message: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    error = config_error({"file": str(path)})
    assert error.key == "file"
    assert str(path) in error.message
    assert message in error.message


@pytest.mark.parametrize(("name", "text"), [
    ("l.yaml", "users:\n  alice:\n    password: [sekrit\n"),
    ("l.json", '{"users": {"alice": {"password": sekrit}}}'),
    ("l.toml", '[users.alice]\npassword = sekrit\n'),
])
def test_syntax_errors_do_not_quote_the_file(tmp_path: Path, name: str, text: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    error = config_error({"file": str(path)})
    assert "line" in error.message
    assert "sekrit" not in error.message
    assert "\n" not in error.message


def test_empty_yaml_file_is_an_empty_ledger(tmp_path: Path) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("")
    p = LedgerPlugin({"file": str(path)})
    assert connect(p, "alice", "x") is False
    assert can(p, "a") == "0"


def test_integer_keys_from_yaml_become_strings(tmp_path: Path) -> None:
    path = tmp_path / "l.yaml"
    path.write_text("users:\n  1234:\n    password: pw\n    acl:\n      42: 3\n")
    p = LedgerPlugin({"file": str(path)})
    assert connect(p, "1234", "pw") is True
    assert can(p, "42", username="1234") == "3"


def test_reload_reads_the_file_again(tmp_path: Path) -> None:
    path = tmp_path / "ledger.yaml"
    path.write_text("users:\n  alice:\n    password: one\n")
    p = LedgerPlugin({"file": str(path)})
    assert connect(p, "alice", "one") is True
    path.write_text("users:\n  alice:\n    password: two\n  bob:\n    password: b\n")
    p.on_reload(None)
    assert connect(p, "alice", "one") is False
    assert connect(p, "alice", "two") is True
    assert connect(p, "bob", "b") is True


@pytest.mark.parametrize("breakage", ["invalid", "missing"])
def test_reload_keeps_the_old_ledger_on_error(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                              breakage: str) -> None:
    path = tmp_path / "ledger.yaml"
    path.write_text("users:\n  alice:\n    password: one\n    acl:\n      'a/#': 3\n")
    p = LedgerPlugin({"file": str(path)})
    if breakage == "invalid":
        path.write_text("users:\n  alice:\n    password: [two]\n")
    else:
        path.unlink()
    with caplog.at_level(logging.ERROR, logger="midge.plugins.auth_ledger"):
        p.on_reload(None)
    assert connect(p, "alice", "one") is True
    assert can(p, "a/b", username="alice") == "3"
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "keeping the previous ledger" in errors[0].getMessage()
    assert str(path) in errors[0].getMessage()
    assert "one" not in errors[0].getMessage().replace(str(path), "")


def test_reload_without_files_keeps_inline_rules() -> None:
    p = LedgerPlugin(LEDGER_DATA)
    p.on_reload(None)
    check_example(p)


def test_entry_point() -> None:
    from importlib.metadata import entry_points

    (ep,) = [ep for ep in entry_points(group="midge.plugins") if ep.name == "auth_ledger"]
    assert ep.load() is LedgerPlugin
