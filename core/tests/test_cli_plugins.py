"""`midge plugins` and `midge passwd`, run as a user would, against the installed plugins."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


def midge(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "midge", *args], input=stdin, capture_output=True, text=True,
        timeout=60,
    )


def test_plugins_lists_every_installed_plugin_with_its_hooks() -> None:
    result = midge("plugins")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for name, dist, hook in [
        ("auth_allow", "midge-auth-allow", "on_connect_authenticate"),
        ("auth_ledger", "midge-auth-ledger", "on_acl_check"),
        ("debug", "midge-debug", "on_packet_read"),
    ]:
        block = out.split(f"{name}\n", 1)[1].split("\n  status:", 1)[0]
        assert f"distribution: {dist} " in block
        assert hook in block
    assert "inactive (no -c FILE given)" in out


def test_plugins_says_which_the_config_activates(tmp_path: Path) -> None:
    config = tmp_path / "midge.toml"
    config.write_text(
        '[[listeners]]\nport = 1883\n\n[plugins.debug]\n\n[plugins.auth_allow]\n'
    )
    result = midge("plugins", "-c", str(config))
    assert result.returncode == 0, result.stderr
    assert "auth_allow\n" in result.stdout
    status = _statuses(result.stdout)
    assert status["debug"] == "active (#1)"
    assert status["auth_allow"] == "active (#2)"
    assert status["auth_ledger"] == "inactive"


def _statuses(text: str) -> dict[str, str]:
    statuses: dict[str, str] = {}
    name = ""
    for line in text.splitlines():
        if not line.startswith(" "):
            name = line.strip()
        elif line.strip().startswith("status:"):
            statuses[name] = line.split("status:", 1)[1].strip()
    return statuses


def test_plugins_reports_a_configured_plugin_that_is_not_installed(tmp_path: Path) -> None:
    config = tmp_path / "midge.toml"
    config.write_text('[[listeners]]\nport = 1883\n\n[plugins.no_such_thing]\n')
    result = midge("plugins", "-c", str(config))
    assert result.returncode == 2
    assert "plugin 'no_such_thing': is not installed" in result.stderr
    assert "no_such_thing\n  status:       configured but NOT installed" in result.stdout


def test_passwd_prints_a_hash_the_ledger_accepts() -> None:
    pytest.importorskip("midge_auth_ledger")
    from midge_auth_ledger._hashing import parse_password

    result = midge("passwd", "--stdin", stdin="s3cret\n")
    assert result.returncode == 0, result.stderr
    hashed = result.stdout.strip()
    assert hashed.startswith("pbkdf2_sha256$")
    stored = parse_password(hashed)
    assert stored.hashed
    assert stored.verify(b"s3cret")
    assert not stored.verify(b"wrong")
