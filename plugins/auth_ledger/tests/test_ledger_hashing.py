"""Stored-password formats, ``hash_password`` and the ``midge passwd`` command."""

from __future__ import annotations

import base64
import hashlib
import io
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from midge_auth_ledger import hash_password, main
from midge_auth_ledger._hashing import parse_password

needs_mosquitto_passwd = pytest.mark.skipif(
    shutil.which("mosquitto_passwd") is None, reason="mosquitto_passwd is not installed")

FAST: dict[str, dict[str, Any]] = {
    "pbkdf2_sha256": {"iterations": 1000},
    "pbkdf2_sha512": {"iterations": 1000},
    "scrypt": {"n": 1024, "r": 4, "p": 1},
}


@pytest.mark.parametrize("scheme", ["pbkdf2_sha256", "pbkdf2_sha512", "scrypt"])
def test_hash_round_trip(scheme: str) -> None:
    stored = hash_password("s3cret", scheme, **FAST[scheme])
    assert stored.startswith(scheme + "$")
    parsed = parse_password(stored)
    assert parsed.hashed
    assert parsed.verify(b"s3cret")
    assert not parsed.verify(b"s3cret ")
    assert not parsed.verify(b"")


def test_hashes_are_salted() -> None:
    assert hash_password("x", iterations=1000) != hash_password("x", iterations=1000)


def test_default_costs() -> None:
    assert hash_password("x").startswith("pbkdf2_sha256$600000$")
    assert hash_password("x", "scrypt").startswith("scrypt$16384$8$1$")


def test_known_pbkdf2_vector() -> None:
    salt = b"0123456789abcdef"
    digest = hashlib.pbkdf2_hmac("sha256", b"pw", salt, 5)
    stored = f"pbkdf2_sha256$5${base64.b64encode(salt).decode()}$" \
             f"{base64.b64encode(digest).decode().rstrip('=')}"   # padding is optional
    assert parse_password(stored).verify(b"pw")


def test_non_ascii_password() -> None:
    stored = hash_password("pässwörd", "pbkdf2_sha512", iterations=1000)
    assert parse_password(stored).verify("pässwörd".encode())


@pytest.mark.parametrize(("text", "password"), [
    ("hunter2", b"hunter2"),
    ("plain$a$b", b"a$b"),
    ("plain$", b""),
    ("with space$", b"with space$"),      # no scheme prefix: plain text
    ("UPPER$x", b"UPPER$x"),
])
def test_plain_text(text: str, password: bytes) -> None:
    parsed = parse_password(text)
    assert not parsed.hashed
    assert parsed.verify(password)
    assert not parsed.verify(password + b"x")


@pytest.mark.parametrize(("text", "message"), [
    ("bcrypt$abc", "unknown scheme"),
    ("$2b$12$abcdefghijk", "unknown scheme"),
    ("pbkdf2_sha256$x$c2FsdA==$aGFzaA==", "iterations must be an integer"),
    ("pbkdf2_sha256$0$c2FsdA==$aGFzaA==", "iterations must be an integer from 1"),
    ("pbkdf2_sha256$10$c2FsdA==", "expected ITERATIONS$SALT$HASH"),
    ("pbkdf2_sha256$10$!!!$aGFzaA==", "salt is not valid base64"),
    ("pbkdf2_sha256$10$c2FsdA==$", "hash is empty"),
    ("scrypt$1000$8$1$c2FsdA==$aGFzaA==", "power of 2"),
    ("scrypt$1073741824$8$1$c2FsdA==$aGFzaA==", "1 GiB"),
    ("scrypt$1024$8$c2FsdA==$aGFzaA==", "expected N$R$P$SALT$HASH"),
    ("$7$101$c2FsdA==", "expected ITERATIONS$SALT$HASH"),
    ("$6$c2FsdA==", "expected SALT$HASH"),
])
def test_malformed_hashes(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("$", r"\$")):
        parse_password(text)


def test_hash_password_rejects_wrong_parameters() -> None:
    with pytest.raises(ValueError, match="unknown scheme"):
        hash_password("x", "md5")
    with pytest.raises(ValueError, match="takes iterations"):
        hash_password("x", "pbkdf2_sha256", n=1024)
    with pytest.raises(ValueError, match="takes n, r and p"):
        hash_password("x", "scrypt", iterations=10)
    with pytest.raises(ValueError, match="power of 2"):
        hash_password("x", "scrypt", n=1000)


@needs_mosquitto_passwd
@pytest.mark.parametrize(("option", "prefix"), [("sha512-pbkdf2", "$7$"), ("sha512", "$6$")])
def test_mosquitto_hashes(tmp_path: Path, option: str, prefix: str) -> None:
    path = tmp_path / "pw"
    subprocess.run(["mosquitto_passwd", "-H", option, "-c", "-b", str(path), "bob", "pa:ss"],
                   check=True, capture_output=True)
    stored = path.read_text().strip().partition(":")[2]
    assert stored.startswith(prefix)
    parsed = parse_password(stored)
    assert parsed.verify(b"pa:ss")
    assert not parsed.verify(b"pa:sS")


def test_cli_stdin(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("s3cret\n"))
    assert main(["--stdin", "--scheme", "pbkdf2_sha512", "--iterations", "1000"]) == 0
    out, err = capsys.readouterr()
    assert "s3cret" not in out + err
    stored = out.strip()
    assert stored.startswith("pbkdf2_sha512$1000$")
    assert parse_password(stored).verify(b"s3cret")


def test_cli_prompt(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    answers = iter(["pw", "pw"])
    monkeypatch.setattr("getpass.getpass", lambda prompt="": next(answers))
    assert main(["--scheme", "scrypt"]) == 0
    assert parse_password(capsys.readouterr().out.strip()).verify(b"pw")


def test_cli_prompt_mismatch(monkeypatch: pytest.MonkeyPatch,
                             capsys: pytest.CaptureFixture[str]) -> None:
    answers = iter(["pw", "px"])
    monkeypatch.setattr("getpass.getpass", lambda prompt="": next(answers))
    assert main([]) == 1
    out, err = capsys.readouterr()
    assert out == "" and "differ" in err


def test_cli_empty_password(monkeypatch: pytest.MonkeyPatch,
                            capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("\n"))
    assert main(["--stdin"]) == 1
    assert "empty" in capsys.readouterr().err


def test_cli_rejects_iterations_for_scrypt(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--scheme", "scrypt", "--iterations", "5", "--stdin"])
    assert exc.value.code == 2
