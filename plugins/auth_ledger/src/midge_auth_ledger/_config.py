"""The plugin's config table, and building a ``Ledger`` from it and the files it names.

The rule: ``parse_config`` validates the table once (inline rules are parsed there, file
paths made absolute); ``load_ledger`` reads every named file afresh and returns a new
``Ledger`` or raises ``LedgerError``, so a reload is ``load_ledger`` again. Sources are
merged in a fixed order: the ledger's ``users`` (from ``file`` or inline), then users from
the Mosquitto password file (filling only users that have no password), then the
Mosquitto ACL file's user sections (appended to those users' ``acl``); ACL rules are the
ledger's ``acl`` rules, then the Mosquitto anonymous lines, then its patterns.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped]

from ._mosquitto import ACL_KEY, PASSWORD_KEY, parse_acl_file, parse_password_file
from ._parse import SECTIONS, parse_sections
from ._rules import AclRule, AuthRule, Ledger, LedgerError, Match, User

#: the login-flood defences: key -> (default, lowest, highest, meaning)
GUARD_KEYS: dict[str, tuple[float, float, float, str]] = {
    "hash_workers": (2, 1, 256, "password hashes computed at once"),
    "hash_per_address": (1, 1, 256, "password hashes computed at once for one address"),
    "hash_queue_timeout": (3.0, 0.01, 3600, "seconds an attempt may wait for a hash slot"),
    "hash_queue_max": (1000, 1, 10_000_000, "attempts waiting for a hash slot"),
    "failure_delay": (0.5, 0, 60, "seconds a failed login is answered late, doubled "
                      "with each recent failure from the address (at most 16 times)"),
    "ban_after": (10, 0, 1_000_000, "failed logins from one address that ban it (0: never)"),
    "ban_window": (60.0, 1, 86400, "seconds in which ban_after failures count"),
    "ban_seconds": (60.0, 1, 86400 * 30, "seconds an address stays banned"),
}
CONFIG_KEYS = ("file", *SECTIONS, "acl_default", PASSWORD_KEY, ACL_KEY,
               "use_username_as_clientid", *GUARD_KEYS)
ACL_DEFAULTS = {"deny": False, "allow": True}
FILE_TYPES = (".yaml", ".yml", ".json", ".toml")


@dataclass(frozen=True, slots=True)
class LedgerConfig:
    file: Path | None = None
    users: Mapping[str, User] | None = None
    auth: tuple[AuthRule, ...] = ()
    acl: tuple[AclRule, ...] = ()
    acl_default: bool = False
    password_file: Path | None = None
    acl_file: Path | None = None
    #: the client id is replaced by the user name (Mosquitto's and EMQX's option)
    use_username_as_clientid: bool = False
    #: GUARD_KEYS' values
    guard: Mapping[str, float] = field(default_factory=dict)

    def files(self) -> list[Path]:
        return [p for p in (self.file, self.password_file, self.acl_file) if p is not None]


def parse_config(table: Mapping[str, Any]) -> LedgerConfig:
    for key in table:
        if key not in CONFIG_KEYS:
            raise LedgerError(key, f"unknown key; allowed: {', '.join(CONFIG_KEYS)}")
    inline = [key for key in SECTIONS if key in table]
    if "file" in table and inline:
        raise LedgerError("file", f"give either 'file' or the rules inline "
                          f"({', '.join(SECTIONS)}), not both")
    if not inline and not any(k in table for k in ("file", PASSWORD_KEY, ACL_KEY)):
        raise LedgerError("", f"needs a ledger: 'file', inline {', '.join(SECTIONS)}, "
                          f"or '{PASSWORD_KEY}' / '{ACL_KEY}'")
    default = table.get("acl_default", "deny")
    if default not in ACL_DEFAULTS:
        raise LedgerError("acl_default", f"must be 'deny' or 'allow', not {default!r}")
    users, auth, acl = parse_sections(table)
    as_client_id = table.get("use_username_as_clientid", False)
    if not isinstance(as_client_id, bool):
        raise LedgerError("use_username_as_clientid",
                          f"must be true or false, not {as_client_id!r}")
    return LedgerConfig(
        use_username_as_clientid=as_client_id,
        guard=_guard(table),
        file=_path(table, "file", FILE_TYPES),
        users=users, auth=auth, acl=acl,
        acl_default=ACL_DEFAULTS[default],
        password_file=_path(table, PASSWORD_KEY),
        acl_file=_path(table, ACL_KEY),
    )


def _guard(table: Mapping[str, Any]) -> dict[str, float]:
    values: dict[str, float] = {}
    for key, (default, low, high, _meaning) in GUARD_KEYS.items():
        value = table.get(key, default)
        whole = isinstance(default, int)
        if isinstance(value, bool) or not isinstance(value, int if whole else (int, float)):
            kind = "an integer" if whole else "a number"
            raise LedgerError(key, f"must be {kind}, not {value!r}")
        if not low <= value <= high:
            raise LedgerError(key, f"{value} is out of range; allowed: {low:g}..{high:g}")
        values[key] = value
    return values


def load_ledger(config: LedgerConfig) -> Ledger:
    users: dict[str, User] = dict(config.users or {})
    auth, acl = config.auth, config.acl
    if config.file is not None:
        data = read_ledger_file(config.file)
        try:
            users, auth, acl = parse_sections(data)
        except LedgerError as exc:
            raise LedgerError("file", f"{config.file}: {exc.key}: {exc.message}") from None
    if config.password_file is not None:
        text = _read(config.password_file, PASSWORD_KEY)
        for name, stored in parse_password_file(text, str(config.password_file)).items():
            user = users.get(name)
            if user is None or user.password is None:
                users[name] = replace(user or User(), password=stored)
    if config.acl_file is not None:
        mosquitto = parse_acl_file(_read(config.acl_file, ACL_KEY), str(config.acl_file))
        for name, filters in mosquitto.users.items():
            user = users.get(name) or User()
            users[name] = replace(user, acl=user.acl + tuple(filters))
        extra = []
        if mosquitto.anonymous:
            extra.append(AclRule(Match(), tuple(mosquitto.anonymous), anonymous_only=True))
        if mosquitto.patterns:
            extra.append(AclRule(Match(), tuple(mosquitto.patterns), templated=True))
        acl = acl + tuple(extra)
    return Ledger(users=users, auth=auth, acl=acl, acl_default=config.acl_default)


def read_ledger_file(path: Path) -> dict[str, Any]:
    """Read a YAML, JSON or TOML ledger file (by extension) into its top-level table."""
    text = _read(path, "file")
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(text)
        elif path.suffix.lower() == ".toml":
            data = tomllib.loads(text)
        else:
            data = yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise LedgerError("file", f"{path}: not valid {path.suffix[1:].upper()}: "
                          f"{_syntax_error(exc)}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise LedgerError("file", f"{path}: must hold a table with keys "
                          f"{', '.join(SECTIONS)}")
    for key in data:
        if key not in SECTIONS:
            raise LedgerError("file", f"{path}: {key}: unknown key; allowed: "
                              f"{', '.join(SECTIONS)}")
    return data


def _syntax_error(exc: Exception) -> str:
    """The parser's complaint and position, on one line and without quoting the file
    (the offending line may hold a password)."""
    mark = getattr(exc, "problem_mark", None)
    if isinstance(exc, yaml.YAMLError) and mark is not None:
        problem = getattr(exc, "problem", None) or "syntax error"
        return f"{problem} at line {mark.line + 1}, column {mark.column + 1}"
    if isinstance(exc, yaml.YAMLError):
        return "syntax error"
    return str(exc).splitlines()[0] if str(exc) else "syntax error"


def _path(table: Mapping[str, Any], key: str, suffixes: tuple[str, ...] = ()) -> Path | None:
    if key not in table:
        return None
    value = table[key]
    if not isinstance(value, str) or not value:
        raise LedgerError(key, "must be a file path (a non-empty string)")
    path = Path(value).expanduser().absolute()
    if suffixes and path.suffix.lower() not in suffixes:
        raise LedgerError(key, f"file type must be one of {', '.join(suffixes)} "
                          "(YAML, JSON or TOML)")
    return path


def _read(path: Path, key: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise LedgerError(key, f"cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise LedgerError(key, f"{path}: not UTF-8 text") from None
