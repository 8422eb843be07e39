"""The ``auth_ledger`` plugin: midge hooks that consult the current ``Ledger``.

The rule: the plugin holds one immutable ledger and replaces it whole on a successful
reload; a failed reload logs why and keeps the previous one. Password hashing runs in a
worker thread so that it never blocks the event loop; ACL checks are plain calls.
Credentials are never logged (user names are, as identifiers).
"""

from __future__ import annotations

import logging
from typing import Any

import anyio.to_thread

from midge import PluginConfigError, hookimpl

from ._config import LedgerConfig, load_ledger, parse_config
from ._rules import Identity, Ledger, LedgerError

log = logging.getLogger("midge.plugins.auth_ledger")


class LedgerPlugin:
    """Authenticate and authorise clients from a ledger of users and rules."""

    def __init__(self, config: dict[str, Any]) -> None:
        try:
            self._config: LedgerConfig = parse_config(config)
            ledger = load_ledger(self._config)
        except LedgerError as exc:
            raise PluginConfigError(exc.key, exc.message) from None
        self._install(ledger)

    @property
    def ledger(self) -> Ledger:
        return self._ledger

    def _install(self, ledger: Ledger) -> None:
        self._ledger = ledger
        self._threaded = ledger.hashed
        log.info("auth ledger: %d users, %d auth rules, %d ACL rules, ACL default %s",
                 len(ledger.users), len(ledger.auth), len(ledger.acl),
                 "allow" if ledger.acl_default else "deny")

    @hookimpl
    async def on_connect_authenticate(self, client: Any, packet: Any) -> bool:
        ledger, threaded = self._ledger, self._threaded
        who = Identity(client.client_id, packet.username, client.remote, client.remote_host)
        if threaded:
            allowed, why = await anyio.to_thread.run_sync(
                ledger.authenticate, who, packet.password)
        else:
            allowed, why = ledger.authenticate(who, packet.password)
        if allowed:
            log.debug("ledger allows client %s (user %r) from %s: %s",
                      who.client_id, who.username, who.remote, why)
        else:
            log.info("ledger refuses client %s (user %r) from %s: %s",
                     who.client_id, who.username, who.remote, why)
        return allowed

    @hookimpl
    def on_acl_check(self, client: Any, topic: str, write: bool) -> bool:
        who = Identity(client.client_id, client.username, client.remote, client.remote_host)
        allowed = self._ledger.check_acl(who, topic, write)
        if not allowed:
            log.debug("ledger denies client %s (user %r) %s %r", who.client_id, who.username,
                      "write to" if write else "read of", topic)
        return allowed

    @hookimpl
    def on_reload(self, broker: Any) -> None:
        try:
            ledger = load_ledger(self._config)
        except LedgerError as exc:
            log.error("auth ledger reload failed, keeping the previous ledger: %s", exc)
            return
        self._install(ledger)
