"""The ledger: users, authentication rules and ACL rules, and how they decide.

The rule: a ``Ledger`` is immutable and decides from its own data only, so a reload
swaps one object for another and a check never sees half of each. ``authenticate``
checks the client's ``users`` entry, then the ``auth`` rules in order (the first match
decides, no match denies). ``check_acl`` checks the client's ``users`` entry ACL, then
the ``acl`` rules in order (the first rule that matches the client and has a filter
covering the topic decides; a matching rule without filters allows everything), then
falls back to ``acl_default``. Within one filter table a matching deny (0) wins over
any grant, so tables can carve exceptions out of wider grants.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import IntFlag

from ._hashing import StoredPassword, dummy_like
from ._patterns import covers, wildcard_match

_TOKEN = re.compile("%[cu]")
_UNSAFE = re.compile("[/+#]")


class LedgerError(Exception):
    """A ledger source is invalid; ``key`` names where (``users.alice.password``)."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}" if key else message)
        self.key = key
        self.message = message


class Access(IntFlag):
    DENY = 0
    READ = 1
    WRITE = 2
    READWRITE = 3


#: A filter table: (topic filter, access) pairs in the order written.
Filters = tuple[tuple[str, Access], ...]


@dataclass(frozen=True, slots=True)
class Identity:
    """Who is asking: the parts of a client the rules look at."""

    client_id: str
    username: str | None
    remote: str
    remote_host: str


@dataclass(frozen=True, slots=True)
class User:
    password: StoredPassword | None = None
    acl: Filters = ()
    disallow: bool = False


@dataclass(frozen=True, slots=True)
class Match:
    """Which clients a rule applies to; None matches anything, strings are ``*`` patterns.

    ``username`` is matched against ``""`` for a client without a user name; ``remote``
    matches when it matches either ``ip:port`` or the bare ``ip``.
    """

    client: str | None = None
    username: str | None = None
    remote: str | None = None

    def matches(self, who: Identity) -> bool:
        return (
            (self.client is None or wildcard_match(self.client, who.client_id))
            and (self.username is None or wildcard_match(self.username, who.username or ""))
            and (self.remote is None or wildcard_match(self.remote, who.remote)
                 or wildcard_match(self.remote, who.remote_host))
        )


@dataclass(frozen=True, slots=True)
class AuthRule:
    match: Match
    password: StoredPassword | None = None  # None: any password, or none
    allow: bool = False

    def matches(self, who: Identity, password: bytes | None) -> bool:
        if not self.match.matches(who):
            return False
        if self.password is None:
            return True
        return password is not None and self.password.verify(password)


@dataclass(frozen=True, slots=True)
class AclRule:
    match: Match
    filters: Filters | None = None  # None: every topic, read and write
    anonymous_only: bool = False  # Mosquitto ACL lines before any ``user`` line
    templated: bool = False  # Mosquitto ``pattern`` lines: %c and %u substituted


@dataclass(frozen=True, slots=True)
class Ledger:
    users: Mapping[str, User] = field(default_factory=dict)
    auth: tuple[AuthRule, ...] = ()
    acl: tuple[AclRule, ...] = ()
    acl_default: bool = False
    #: what an unknown user's password is checked against, so that answering one
    #: costs what answering a known user costs (no user enumeration by timing)
    dummy: StoredPassword | None = field(default=None, init=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "dummy", dummy_like(
            [u.password for u in self.users.values() if u.password is not None]))

    @property
    def plain_text(self) -> list[str]:
        """Where passwords are stored in plain text: ``users.NAME`` and ``auth[N]``."""
        where = [f"users.{name}" for name, user in self.users.items()
                 if user.password is not None and not user.password.hashed]
        where += [f"auth[{index}]" for index, rule in enumerate(self.auth)
                  if rule.password is not None and not rule.password.hashed]
        return where

    @property
    def hashed(self) -> bool:
        """True when a password check may run a (slow) hash function."""
        stored = [u.password for u in self.users.values()] + [r.password for r in self.auth]
        return any(p is not None and p.hashed for p in stored)

    def authenticate(self, who: Identity, password: bytes | None) -> tuple[bool, str]:
        """Decide a connection: (allowed, why) where why names the deciding entry."""
        user = self.users.get(who.username) if who.username is not None else None
        if user is not None and user.password is not None and not user.disallow:
            if password is not None and user.password.verify(password):
                return True, "user password"
        elif who.username is not None and password is not None and self.dummy is not None:
            # an unknown, disallowed or password-less user: the same hash as a known
            # one, its answer thrown away
            self.dummy.verify(password)
        if user is not None and user.disallow:
            return False, "user is disallowed"
        for index, rule in enumerate(self.auth):
            if rule.matches(who, password):
                return rule.allow, f"auth rule {index}"
        return False, "no auth rule matched"

    def check_acl(self, who: Identity, topic: str, write: bool) -> bool:
        """May ``who`` publish to (write) or receive/subscribe (read) ``topic``?"""
        need = Access.WRITE if write else Access.READ
        user = self.users.get(who.username) if who.username is not None else None
        if user is not None and user.acl:
            decided = _decide(user.acl, topic, need)
            if decided is not None:
                return decided
        for rule in self.acl:
            if rule.anonymous_only and who.username is not None:
                continue
            if not rule.match.matches(who):
                continue
            if rule.filters is None:
                return True
            filters = _substitute(rule.filters, who) if rule.templated else rule.filters
            decided = _decide(filters, topic, need)
            if decided is not None:
                return decided
        return self.acl_default


def _decide(filters: Filters, topic: str, need: Access) -> bool | None:
    """None when no filter covers the topic; else False if a covering one denies or
    none grants ``need``, True otherwise."""
    covered = granted = False
    for acl_filter, access in filters:
        if covers(acl_filter, topic):
            if access == Access.DENY:
                return False
            covered = True
            granted = granted or bool(access & need)
    return granted if covered else None


def _substitute(filters: Filters, who: Identity) -> Filters:
    """Mosquitto pattern substitution in one pass; a filter whose value is missing, empty
    or contains a topic separator or wildcard (``/``, ``+``, ``#``) is left out."""
    values = {"%c": who.client_id, "%u": who.username}
    out = []
    for acl_filter, access in filters:
        used = {values[token] for token in _TOKEN.findall(acl_filter)}
        if all(v and not _UNSAFE.search(v) for v in used):
            out.append((_TOKEN.sub(lambda m: values[m.group()] or "", acl_filter), access))
    return tuple(out)
