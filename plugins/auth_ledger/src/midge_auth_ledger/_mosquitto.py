"""Read Mosquitto password and ACL files, for migrating users to the ledger.

The rule: these functions parse text only and raise ``LedgerError`` naming the config key,
the file and the line; merging the result into a ledger is ``_config``'s job.

Password file: one ``user:hash`` per line, the hash being ``$7$`` (PBKDF2-SHA512,
Mosquitto 2) or ``$6$`` (salted SHA-512, Mosquitto 1.x); blank lines and lines starting
with ``#`` are skipped. ACL file: ``user NAME`` starts a user's section; ``topic [read|
write|readwrite|deny] FILTER`` grants within the current section (before any ``user``
line: to anonymous clients); ``pattern [access] FILTER`` applies to every client with
``%c`` (client id) and ``%u`` (user name) substituted. The access defaults to readwrite.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ._hashing import StoredPassword, parse_password
from ._parse import ACCESS_NAMES, check_filter
from ._rules import Access, LedgerError

PASSWORD_KEY = "mosquitto_password_file"
ACL_KEY = "mosquitto_acl_file"


@dataclass
class MosquittoAcl:
    users: dict[str, list[tuple[str, Access]]] = field(default_factory=dict)
    anonymous: list[tuple[str, Access]] = field(default_factory=list)
    patterns: list[tuple[str, Access]] = field(default_factory=list)


def parse_password_file(text: str, path: str) -> dict[str, StoredPassword]:
    users: dict[str, StoredPassword] = {}
    for number, line in _lines(text):
        name, sep, stored = line.partition(":")
        if not sep or not name:
            raise LedgerError(PASSWORD_KEY, f"{path}:{number}: expected 'user:hash'")
        if not stored.startswith(("$6$", "$7$")):
            raise LedgerError(PASSWORD_KEY, f"{path}:{number}: the password of {name!r} is "
                              "not a $7$ or $6$ hash (run mosquitto_passwd -U on the file)")
        try:
            users[name] = parse_password(stored)
        except ValueError as exc:
            raise LedgerError(PASSWORD_KEY, f"{path}:{number}: {exc}") from None
    return users


def parse_acl_file(text: str, path: str) -> MosquittoAcl:
    acl = MosquittoAcl()
    section: list[tuple[str, Access]] = acl.anonymous
    for number, line in _lines(text):
        keyword, rest = _word(line)
        where = f"{path}:{number}"
        if keyword == "user":
            if not rest:
                raise LedgerError(ACL_KEY, f"{where}: 'user' needs a user name")
            section = acl.users.setdefault(rest, [])
        elif keyword in ("topic", "pattern"):
            first, remainder = _word(rest)
            access = ACCESS_NAMES.get(first)
            topic = remainder if access is not None else rest
            if not topic:
                raise LedgerError(ACL_KEY, f"{where}: '{keyword}' needs a topic filter")
            try:
                check_filter(topic, "")
            except LedgerError as exc:
                raise LedgerError(ACL_KEY, f"{where}: {topic!r}: {exc.message}") from None
            entry = (topic, Access.READWRITE if access is None else access)
            (acl.patterns if keyword == "pattern" else section).append(entry)
        else:
            raise LedgerError(ACL_KEY, f"{where}: unknown line {keyword!r}; allowed: user, "
                              "topic, pattern and # comments")
    return acl


def _lines(text: str) -> list[tuple[int, str]]:
    out = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if line and not line.startswith("#"):
            out.append((number, line))
    return out


def _word(text: str) -> tuple[str, str]:
    """Split off the first whitespace-separated word; the rest is stripped."""
    parts = text.split(None, 1)
    return (parts[0] if parts else ""), (parts[1].strip() if len(parts) > 1 else "")
