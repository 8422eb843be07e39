"""Mosquitto migration: password files made by the real mosquitto_passwd, ACL files."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from ledger_fakes import acl, can, connect
from midge_auth_ledger import LedgerPlugin

from midge import PluginConfigError

needs_mosquitto_passwd = pytest.mark.skipif(
    shutil.which("mosquitto_passwd") is None, reason="mosquitto_passwd is not installed")

ACL_FILE = """\
# lines before any user apply to anonymous clients
topic read public/#

user alice
topic readwrite alice/#
topic deny alice/secret
topic write   shared/in
\ttopic read shared/out

user bob
topic bob/#
topic read spaced name/x

pattern read clients/%c/#
pattern readwrite users/%u/inbox
pattern write pair/%c/%u
"""


def mosquitto_passwd(path: Path, user: str, password: str, option: str = "sha512-pbkdf2",
                     create: bool = False) -> None:
    command = ["mosquitto_passwd", "-H", option, *(["-c"] if create else []), "-b",
               str(path), user, password]
    subprocess.run(command, check=True, capture_output=True)


@pytest.fixture
def password_file(tmp_path: Path) -> Path:
    if shutil.which("mosquitto_passwd") is None:
        pytest.skip("mosquitto_passwd is not installed")
    path = tmp_path / "passwd"
    mosquitto_passwd(path, "alice", "wonder", create=True)             # $7$ (Mosquitto 2)
    mosquitto_passwd(path, "bob", "builder", option="sha512")          # $6$ (Mosquitto 1.x)
    return path


@pytest.fixture
def acl_file(tmp_path: Path) -> Path:
    path = tmp_path / "acl"
    path.write_text(ACL_FILE)
    return path


def test_password_file_from_mosquitto_passwd(password_file: Path) -> None:
    lines = password_file.read_text().splitlines()
    assert lines[0].startswith("alice:$7$") and lines[1].startswith("bob:$6$")
    p = LedgerPlugin({"mosquitto_password_file": str(password_file)})
    assert connect(p, "alice", "wonder") is True
    assert connect(p, "bob", "builder") is True
    assert connect(p, "alice", "builder") is False
    assert connect(p, "bob", None) is False
    assert connect(p, "carol", "x") is False


def test_password_file_comments_and_blank_lines(password_file: Path) -> None:
    password_file.write_text("# users\n\n" + password_file.read_text() + "\n")
    p = LedgerPlugin({"mosquitto_password_file": str(password_file)})
    assert connect(p, "alice", "wonder") is True


def test_ledger_password_wins_and_missing_ones_are_filled(password_file: Path) -> None:
    p = LedgerPlugin({
        "mosquitto_password_file": str(password_file),
        "users": {"alice": {"password": "ledger-pw"}, "bob": {"acl": {"b/#": 3}}},
    })
    assert connect(p, "alice", "ledger-pw") is True
    assert connect(p, "alice", "wonder") is False
    assert connect(p, "bob", "builder") is True
    assert can(p, "b/1", username="bob") == "3"


@needs_mosquitto_passwd
def test_password_file_reload(password_file: Path) -> None:
    p = LedgerPlugin({"mosquitto_password_file": str(password_file)})
    mosquitto_passwd(password_file, "alice", "changed")
    assert connect(p, "alice", "wonder") is True
    p.on_reload(None)
    assert connect(p, "alice", "changed") is True
    assert connect(p, "alice", "wonder") is False


@pytest.mark.parametrize(("text", "message"), [
    ("alice:plaintext\n", ":1: the password of 'alice' is not a $7$ or $6$ hash"),
    ("# c\nnocolon\n", ":2: expected 'user:hash'"),
    (":$6$YWJj$ZGVm\n", ":1: expected 'user:hash'"),
    ("a:$7$x$YWJj$ZGVm\n", ":1: password hash iterations must be an integer"),
])
def test_password_file_errors(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "passwd"
    path.write_text(text)
    with pytest.raises(PluginConfigError) as exc:
        LedgerPlugin({"mosquitto_password_file": str(path)})
    assert exc.value.key == "mosquitto_password_file"
    assert f"{path}{message}" in exc.value.message
    assert "plaintext" not in exc.value.message


def test_acl_anonymous_lines(acl_file: Path) -> None:
    p = LedgerPlugin({"mosquitto_acl_file": str(acl_file)})
    assert can(p, "public/news") == "1"
    assert can(p, "public/news", username="alice") == "0"   # not for clients with a name
    assert can(p, "alice/x") == "0"


def test_acl_user_sections(acl_file: Path) -> None:
    p = LedgerPlugin({"mosquitto_acl_file": str(acl_file)})
    assert can(p, "alice/x", username="alice") == "3"
    assert can(p, "alice/secret", username="alice") == "0"  # deny wins
    assert can(p, "shared/in", username="alice") == "2"
    assert can(p, "shared/out", username="alice") == "1"
    assert can(p, "alice/x", username="bob") == "0"
    assert can(p, "bob/x", username="bob") == "3"           # access defaults to readwrite
    assert can(p, "spaced name/x", username="bob") == "1"   # the rest of the line is the topic
    assert can(p, "bob/x", username="carol") == "0"


def test_acl_patterns(acl_file: Path) -> None:
    p = LedgerPlugin({"mosquitto_acl_file": str(acl_file)})
    assert can(p, "clients/dev1/status", client_id="dev1") == "1"
    assert can(p, "clients/dev2/status", client_id="dev1") == "0"
    assert can(p, "clients/dev1/status", client_id="dev1", username="alice") == "1"
    assert can(p, "users/alice/inbox", username="alice") == "3"
    assert can(p, "users/bob/inbox", username="alice") == "0"
    assert can(p, "pair/dev1/alice", client_id="dev1", username="alice") == "2"
    assert acl(p, "clients/dev1/#", write=False, client_id="dev1") is True
    assert acl(p, "clients/+/#", write=False, client_id="dev1") is False


def test_acl_patterns_are_skipped_for_unsafe_or_missing_values(acl_file: Path) -> None:
    p = LedgerPlugin({"mosquitto_acl_file": str(acl_file)})
    assert can(p, "users//inbox") == "0"                         # anonymous: no %u
    assert can(p, "clients/dev1/x/y", client_id="dev1/x") == "0"   # '/' in the client id
    assert can(p, "clients/+/y", client_id="+") == "0"
    assert acl(p, "clients/#", write=False, client_id="#") is False
    assert can(p, "users/a/b/inbox", username="a/b") == "0"


def test_acl_file_combines_with_ledger_rules(acl_file: Path) -> None:
    p = LedgerPlugin({"mosquitto_acl_file": str(acl_file),
                      "users": {"alice": {"acl": {"extra/#": 1}}},
                      "acl": [{"username": "ops", "filters": {"#": 3}}]})
    assert can(p, "extra/1", username="alice") == "1"
    assert can(p, "alice/1", username="alice") == "3"
    assert can(p, "anything", username="ops") == "3"
    assert can(p, "clients/c1/x", username="ops", client_id="c1") == "3"  # ledger rule first


def test_acl_file_reload_keeps_old_rules_on_error(acl_file: Path) -> None:
    p = LedgerPlugin({"mosquitto_acl_file": str(acl_file)})
    acl_file.write_text("user alice\ntopic read only/#\n")
    p.on_reload(None)
    assert can(p, "only/x", username="alice") == "1"
    assert can(p, "alice/x", username="alice") == "0"
    acl_file.write_text("user alice\ntopik read x\n")
    p.on_reload(None)
    assert can(p, "only/x", username="alice") == "1"


@pytest.mark.parametrize(("text", "message"), [
    ("topik read a\n", ":1: unknown line 'topik'; allowed: user, topic, pattern"),
    ("# comment\nuser\n", ":2: 'user' needs a user name"),
    ("topic read\n", ":1: 'topic' needs a topic filter"),
    ("user a\ntopic read a/#/b\n", ":2: 'a/#/b': not a valid MQTT topic filter"),
    ("pattern write x+\n", ":1: 'x+': not a valid MQTT topic filter"),
])
def test_acl_file_errors(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "acl"
    path.write_text(text)
    with pytest.raises(PluginConfigError) as exc:
        LedgerPlugin({"mosquitto_acl_file": str(path)})
    assert exc.value.key == "mosquitto_acl_file"
    assert f"{path}{message}" in exc.value.message
