"""Validate the ledger structure (``users``, ``auth``, ``acl``) and build its rules.

The rule: input is plain data as YAML, JSON or TOML produce it, and every unknown key or
bad value raises ``LedgerError`` whose key is the dotted path to it (``acl.2.filters``)
and whose message says what is allowed. Nothing is coerced silently except integer
mapping keys (YAML reads ``123:`` as a number), which become strings.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ._hashing import StoredPassword, parse_password
from ._rules import Access, AclRule, AuthRule, Filters, LedgerError, Match, User

SECTIONS = ("users", "auth", "acl")
ACCESS_NAMES = {"deny": Access.DENY, "read": Access.READ, "write": Access.WRITE,
                "readwrite": Access.READWRITE}


def parse_sections(data: Mapping[str, Any], prefix: str = "") -> tuple[
        dict[str, User], tuple[AuthRule, ...], tuple[AclRule, ...]]:
    """Parse the ``users``, ``auth`` and ``acl`` entries of ``data`` (each optional)."""
    users = parse_users(data.get("users", {}), f"{prefix}users")
    auth = parse_auth(data.get("auth", []), f"{prefix}auth")
    acl = parse_acl(data.get("acl", []), f"{prefix}acl")
    return users, auth, acl


def parse_users(value: Any, key: str) -> dict[str, User]:
    users: dict[str, User] = {}
    for name, entry in _mapping(value, key, "a table of user name -> user entry").items():
        where = f"{key}.{name}"
        fields = _fields(entry, where, {"password", "acl", "disallow", "username"})
        if "username" in fields and fields["username"] != name:
            raise LedgerError(f"{where}.username", f"must be {name!r} (the entry's key) "
                              "or left out")
        password = fields.get("password")
        users[name] = User(
            password=None if password is None else _password(password, f"{where}.password"),
            acl=parse_filters(fields.get("acl", {}), f"{where}.acl"),
            disallow=_bool(fields.get("disallow", False), f"{where}.disallow"),
        )
    return users


def parse_auth(value: Any, key: str) -> tuple[AuthRule, ...]:
    rules = []
    for index, entry in enumerate(_list(value, key, "a list of auth rules")):
        where = f"{key}.{index}"
        fields = _fields(entry, where, {"client", "username", "remote", "password", "allow"})
        password = fields.get("password")
        rules.append(AuthRule(
            match=_match(fields, where),
            password=None if password in (None, "*") else _password(password,
                                                                    f"{where}.password"),
            allow=_bool(fields.get("allow", False), f"{where}.allow"),
        ))
    return tuple(rules)


def parse_acl(value: Any, key: str) -> tuple[AclRule, ...]:
    rules = []
    for index, entry in enumerate(_list(value, key, "a list of ACL rules")):
        where = f"{key}.{index}"
        fields = _fields(entry, where, {"client", "username", "remote", "filters"})
        filters: Filters | None = None
        if "filters" in fields:
            filters = parse_filters(fields["filters"], f"{where}.filters")
            if not filters:
                raise LedgerError(f"{where}.filters", "must not be empty (leave it out to "
                                  "allow every topic to the matching clients)")
        rules.append(AclRule(match=_match(fields, where), filters=filters))
    return tuple(rules)


def parse_filters(value: Any, key: str) -> Filters:
    table = _mapping(value, key, "a table of topic filter -> access")
    return tuple((check_filter(f, f"{key}.{f}"), parse_access(a, f"{key}.{f}"))
                 for f, a in table.items())


def parse_access(value: Any, key: str) -> Access:
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 3:
        return Access(value)
    if isinstance(value, str) and value in ACCESS_NAMES:
        return ACCESS_NAMES[value]
    raise LedgerError(key, f"access must be 0 (deny), 1 (read), 2 (write), 3 (read and "
                      f"write) or one of {', '.join(ACCESS_NAMES)}; got {value!r}")


def check_filter(value: str, key: str) -> str:
    """Return ``value`` if it is a valid MQTT topic filter, else raise."""
    levels = value.split("/")
    ok = bool(value) and "\0" not in value and all(
        (level == "#" and i == len(levels) - 1) or level == "+"
        or ("+" not in level and "#" not in level)
        for i, level in enumerate(levels)
    )
    if not ok:
        raise LedgerError(key, "not a valid MQTT topic filter ('+' and '#' must fill a "
                          "level, '#' only last)")
    return value


def _match(fields: Mapping[str, Any], where: str) -> Match:
    return Match(**{name: _str(fields[name], f"{where}.{name}")
                    for name in ("client", "username", "remote") if name in fields})


def _password(value: Any, key: str) -> StoredPassword:
    text = _str(value, key)
    if not text:
        raise LedgerError(key, "must not be empty")
    try:
        return parse_password(text)
    except ValueError as exc:
        raise LedgerError(key, str(exc)) from None


def _fields(value: Any, key: str, allowed: set[str]) -> dict[str, Any]:
    table = _mapping(value, key, f"a table with keys {', '.join(sorted(allowed))}")
    for name in table:
        if name not in allowed:
            raise LedgerError(f"{key}.{name}", f"unknown key; allowed: "
                              f"{', '.join(sorted(allowed))}")
    return table


def _mapping(value: Any, key: str, what: str) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise LedgerError(key, f"must be {what}, not {type(value).__name__}")
    out: dict[str, Any] = {}
    for name, item in value.items():
        if isinstance(name, int) and not isinstance(name, bool):
            name = str(name)
        if not isinstance(name, str):
            raise LedgerError(f"{key}.{name}", "keys must be strings")
        out[name] = item
    return out


def _list(value: Any, key: str, what: str) -> list[Any]:
    if not isinstance(value, list):
        raise LedgerError(key, f"must be {what}, not {type(value).__name__}")
    return value


def _str(value: Any, key: str) -> str:
    if not isinstance(value, str):
        raise LedgerError(key, f"must be a string (quote it), not {type(value).__name__}")
    return value


def _bool(value: Any, key: str) -> bool:
    if not isinstance(value, bool):
        raise LedgerError(key, f"must be true or false, not {value!r}")
    return value
