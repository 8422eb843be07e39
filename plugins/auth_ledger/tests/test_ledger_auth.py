"""Authentication semantics: users first, then the first matching auth rule, else deny."""

from __future__ import annotations

import logging
import shutil
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest
from ledger_fakes import connect
from midge_auth_ledger import LedgerPlugin, hash_password
from midge_auth_ledger._hashing import StoredPassword


def plugin(**table: Any) -> LedgerPlugin:
    return LedgerPlugin(table)


def test_user_with_the_right_password_is_allowed() -> None:
    p = plugin(users={"alice": {"password": "wonder"}})
    assert connect(p, "alice", "wonder") is True
    assert connect(p, "alice", "wander") is False
    assert connect(p, "alice", None) is False
    assert connect(p, "bob", "wonder") is False
    assert connect(p, None, None) is False


@pytest.mark.parametrize("scheme", ["pbkdf2_sha256", "pbkdf2_sha512", "scrypt"])
def test_hashed_user_passwords(scheme: str) -> None:
    cost: dict[str, int] = {"n": 1024} if scheme == "scrypt" else {"iterations": 1000}
    p = plugin(users={"alice": {"password": hash_password("wonder", scheme, **cost)}})
    assert connect(p, "alice", "wonder") is True
    assert connect(p, "alice", "Wonder") is False


@pytest.mark.skipif(shutil.which("mosquitto_passwd") is None, reason="needs mosquitto_passwd")
@pytest.mark.parametrize("option", ["sha512-pbkdf2", "sha512"])
def test_mosquitto_hashes_in_the_ledger(tmp_path: Path, option: str) -> None:
    path = tmp_path / "pw"
    subprocess.run(["mosquitto_passwd", "-H", option, "-c", "-b", str(path), "alice", "wonder"],
                   check=True, capture_output=True)
    stored = path.read_text().strip().partition(":")[2]
    p = plugin(users={"alice": {"password": stored}})
    assert connect(p, "alice", "wonder") is True
    assert connect(p, "alice", "wonde") is False


def test_disallowed_user_is_refused_whatever_the_password() -> None:
    p = plugin(users={"mallory": {"password": "pw", "disallow": True}},
               auth=[{"allow": True}])
    assert connect(p, "mallory", "pw") is False
    assert connect(p, "mallory", "other") is False
    assert connect(p, "someone", "x") is True


def test_wrong_password_falls_through_to_the_auth_rules() -> None:
    p = plugin(users={"alice": {"password": "wonder"}},
               auth=[{"username": "alice", "remote": "127.0.0.1", "allow": True}])
    assert connect(p, "alice", "nope", remote="127.0.0.1:4000") is True
    assert connect(p, "alice", "nope", remote="10.0.0.1:4000") is False


def test_user_without_password_goes_to_the_rules() -> None:
    p = plugin(users={"alice": {"acl": {"a/#": 3}}},
               auth=[{"username": "alice", "password": "pw", "allow": True}])
    assert connect(p, "alice", "pw") is True
    assert connect(p, "alice", "px") is False


def test_first_matching_auth_rule_wins() -> None:
    rules = [{"username": "bad*", "allow": False}, {"username": "*", "allow": True}]
    p = plugin(auth=rules)
    assert connect(p, "badger", "x") is False
    assert connect(p, "good", "x") is True
    reversed_rules = plugin(auth=list(reversed(rules)))
    assert connect(reversed_rules, "badger", "x") is True


def test_no_matching_rule_denies() -> None:
    p = plugin(auth=[{"username": "alice", "allow": True}])
    assert connect(p, "bob", "x") is False
    assert connect(p, None, None) is False


def test_auth_rule_fields_all_have_to_match() -> None:
    p = plugin(auth=[{"client": "dev-*", "username": "sensor", "remote": "10.0.*",
                      "password": "pw", "allow": True}])
    ok: dict[str, Any] = {"username": "sensor", "password": "pw", "client_id": "dev-1",
          "remote": "10.0.0.9:1234"}
    assert connect(p, **ok) is True
    assert connect(p, **{**ok, "client_id": "prod-1"}) is False
    assert connect(p, **{**ok, "username": "sensors"}) is False
    assert connect(p, **{**ok, "remote": "10.1.0.9:1234"}) is False
    assert connect(p, **{**ok, "password": "px"}) is False
    assert connect(p, **{**ok, "password": None}) is False


def test_remote_patterns_match_address_or_host() -> None:
    for pattern in ("127.0.0.1", "127.0.0.1:*", "127.*", "*:1883", "*"):
        p = plugin(auth=[{"remote": pattern, "allow": True}])
        assert connect(p, remote="127.0.0.1:1883") is True, pattern
    p = plugin(auth=[{"remote": "127.0.0.1:5000", "allow": True}])
    assert connect(p, remote="127.0.0.1:5001") is False


def test_rule_password_omitted_or_star_matches_any_or_none() -> None:
    for rule in ({"allow": True}, {"password": "*", "allow": True}):
        p = plugin(auth=[rule])
        assert connect(p, "u", "anything") is True
        assert connect(p, "u", None) is True
        assert connect(p, None, None) is True


def test_rule_password_is_not_a_pattern() -> None:
    p = plugin(auth=[{"password": "pass*", "allow": True}])
    assert connect(p, "u", "pass*") is True
    assert connect(p, "u", "password") is False


def test_hashed_rule_password() -> None:
    p = plugin(auth=[{"username": "svc-*", "password": hash_password("k", iterations=1000),
                      "allow": True}])
    assert connect(p, "svc-a", "k") is True
    assert connect(p, "svc-a", "j") is False


def test_username_patterns_and_anonymous_clients() -> None:
    anonymous_only = plugin(auth=[{"username": "", "allow": True}])
    assert connect(anonymous_only, None, None) is True
    assert connect(anonymous_only, "bob", None) is False
    star = plugin(auth=[{"username": "*", "allow": True}])
    assert connect(star, None, None) is True
    assert connect(star, "bob", "x") is True


def test_hashing_runs_in_a_worker_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[threading.Thread] = []
    original = StoredPassword.verify

    def spy(self: StoredPassword, password: bytes) -> bool:
        seen.append(threading.current_thread())
        return original(self, password)

    monkeypatch.setattr(StoredPassword, "verify", spy)
    p = plugin(users={"alice": {"password": hash_password("pw", iterations=1000)}})
    assert connect(p, "alice", "pw") is True
    assert seen and seen[0] is not threading.main_thread()


def test_refusals_are_logged_without_the_password(caplog: pytest.LogCaptureFixture) -> None:
    p = plugin(users={"alice": {"password": "wonder"}})
    with caplog.at_level(logging.DEBUG, logger="midge.plugins.auth_ledger"):
        assert connect(p, "alice", "hunter2-secret", client_id="dev-9") is False
        assert connect(p, "alice", "wonder", client_id="dev-9") is True
    text = caplog.text
    assert "dev-9" in text and "alice" in text
    assert "hunter2-secret" not in text and "wonder" not in text
    refusal = [r for r in caplog.records if "refuses" in r.getMessage()]
    assert refusal and refusal[0].levelno == logging.INFO
