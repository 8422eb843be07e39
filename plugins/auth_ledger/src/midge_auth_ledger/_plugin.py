"""The ``auth_ledger`` plugin: midge hooks that consult the current ``Ledger``.

The rule: the plugin holds one immutable ledger and replaces it whole on a successful
reload; a failed reload logs why and keeps the previous one. Password hashing runs in a
worker thread, through the ``HashGate`` (bounded, fair by address, skipped for
connections that went away) and behind the per-address ban, so it never blocks the
event loop and a login flood cannot lock legitimate users out; ACL checks are plain
calls. Credentials are never logged (user names are, as identifiers, escaped).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from midge import PluginConfigError, Refuse, hookimpl
from midge.codec import Connect, ReasonCode
from midge.logsafe import safe

from ._config import LedgerConfig, load_ledger, parse_config
from ._guard import Busy, Failures, HashGate
from ._rules import Identity, Ledger, LedgerError

log = logging.getLogger("midge.plugins.auth_ledger")

#: where the plugin's counters are published, under $SYS, every sys_interval
SYS_PREFIX = "$SYS/broker/plugins/auth_ledger/"


class LedgerPlugin:
    """Authenticate and authorise clients from a ledger of users and rules."""

    def __new__(cls, config: dict[str, Any]) -> LedgerPlugin:
        # the client-id rewrite needs on_packet_read, a hook on every packet: only the
        # plugins configured for it implement it
        if cls is LedgerPlugin and config.get("use_username_as_clientid") is True:
            cls = UsernameClientIdPlugin
        return super().__new__(cls)

    def __init__(self, config: dict[str, Any]) -> None:
        try:
            self._config: LedgerConfig = parse_config(config)
            ledger = load_ledger(self._config)
        except LedgerError as exc:
            raise PluginConfigError(exc.key, exc.message) from None
        guard = self._config.guard
        self.failures = Failures(int(guard["ban_after"]), float(guard["ban_window"]),
                                 float(guard["ban_seconds"]), float(guard["failure_delay"]))
        self.gate = HashGate(int(guard["hash_workers"]), int(guard["hash_per_address"]),
                             float(guard["hash_queue_timeout"]), int(guard["hash_queue_max"]),
                             self.failures.recent)
        #: connected clients this plugin let in under a ``users`` entry: id -> user
        self._clients: dict[str, str] = {}
        self._install(ledger)

    @property
    def ledger(self) -> Ledger:
        return self._ledger

    def counters(self) -> dict[str, int]:
        """The login defences' counters (also published under ``SYS_PREFIX``)."""
        return {
            "login_failures": self.failures.failures,
            "bans": self.failures.bans,
            "banned_refusals": self.failures.refused,
            "busy_refusals": self.gate.busy,
            "hashes_skipped": self.gate.skipped,
            "hashes_waiting": self.gate.waiting,
        }

    def _install(self, ledger: Ledger) -> None:
        self._ledger = ledger
        self._threaded = ledger.hashed
        log.info("auth ledger: %d users, %d auth rules, %d ACL rules, ACL default %s",
                 len(ledger.users), len(ledger.auth), len(ledger.acl),
                 "allow" if ledger.acl_default else "deny")
        plain = ledger.plain_text
        if plain:
            shown = ", ".join(safe(where) for where in plain[:10])
            log.warning(
                "auth ledger: %d passwords are stored in plain text (%s%s); store hashes "
                "instead (python -m midge_auth_ledger makes them)", len(plain), shown,
                ", ..." if len(plain) > 10 else "")

    @hookimpl
    async def on_connect_authenticate(self, client: Any, packet: Any) -> bool:
        ledger, threaded = self._ledger, self._threaded
        who = Identity(client.client_id, packet.username, client.remote, client.remote_host)
        address = client.remote_host
        if self.failures.banned(address):
            log.debug("ledger refuses client %s from %s: the address is banned",
                      safe(who.client_id), who.remote)
            raise Refuse(ReasonCode.BANNED, "too many failed logins from this address")
        if threaded:
            try:
                ran, answer = await self.gate.run(
                    address, lambda: bool(client.closing), ledger.authenticate, who,
                    packet.password, hold=lambda result: self._failed(address, result))
            except Busy as exc:
                log.debug("ledger answers client %s from %s busy: %s",
                          safe(who.client_id), who.remote, exc)
                raise Refuse(ReasonCode.SERVER_BUSY, "server busy") from None
            if not ran:
                return False  # the connection went away while waiting: nothing hashed
            allowed, why = bool(answer[0]), str(answer[1])
        else:
            allowed, why = ledger.authenticate(who, packet.password)
            self._failed(address, (allowed, why))
        if allowed:
            log.debug("ledger allows client %s (user %s) from %s: %s",
                      safe(who.client_id), safe(who.username), who.remote, why)
        else:
            log.info("ledger refuses client %s (user %s) from %s: %s",
                     safe(who.client_id), safe(who.username), who.remote, why)
        return allowed

    def _failed(self, address: str, result: tuple[bool, str]) -> float:
        """Count a failed login; how long the address's turn is held (0: success)."""
        if result[0]:
            return 0.0
        delay = self.failures.delay(address)
        if self.failures.failed(address):
            log.warning("auth ledger: address %s banned for %g s after %d failed logins",
                        address, self.failures.ban_seconds, self.failures.max_failures)
        return delay

    @hookimpl
    def on_acl_check(self, client: Any, topic: str, write: bool) -> bool:
        who = Identity(client.client_id, client.username, client.remote, client.remote_host)
        allowed = self._ledger.check_acl(who, topic, write)
        if not allowed:
            log.debug("ledger denies client %s (user %s) %s %s", safe(who.client_id),
                      safe(who.username), "write to" if write else "read of", safe(topic))
        return allowed

    @hookimpl
    def on_session_established(self, client: Any) -> None:
        user = client.username
        if user is not None and user in self._ledger.users:
            self._clients[client.client_id] = user

    @hookimpl
    def on_disconnect(self, client: Any) -> None:
        # a takeover ends the old connection before the new one is established, so
        # the id is recorded again right after
        self._clients.pop(client.client_id, None)

    @hookimpl
    def on_reload(self, broker: Any) -> None:
        try:
            ledger = load_ledger(self._config)
        except LedgerError as exc:
            log.error("auth ledger reload failed, keeping the previous ledger: %s", exc)
            return
        self._install(ledger)
        if broker is not None:
            self._disconnect_removed(broker, ledger)

    def _disconnect_removed(self, broker: Any, ledger: Ledger) -> None:
        """Clients logged in as a user the new ledger no longer has (or disallows)
        are disconnected (v5: DISCONNECT 0x87)."""
        for client_id, user in list(self._clients.items()):
            entry = ledger.users.get(user)
            if entry is not None and not entry.disallow:
                continue
            del self._clients[client_id]
            client = broker.client(client_id)
            if client is None or client.username != user:
                continue
            log.info("auth ledger: disconnecting client %s: user %s was removed from "
                     "the ledger", safe(client_id), safe(user))
            broker.disconnect(client_id, ReasonCode.NOT_AUTHORIZED,
                              reason="user removed from the ledger")

    @hookimpl
    def on_stopped(self) -> None:
        self.gate.close()

    @hookimpl
    async def on_sys_info_tick(self, broker: Any) -> None:
        for name, value in self.counters().items():
            await broker.publish(SYS_PREFIX + name, str(value), 0, True)


class UsernameClientIdPlugin(LedgerPlugin):
    """``use_username_as_clientid = true``: a client with a user name gets the user name
    as its client id, whatever it sent, so one user holds one session and cannot take
    anyone else's."""

    @hookimpl
    def on_packet_read(self, client: Any, packet: Any) -> Any:
        if type(packet) is Connect and packet.username:
            return dataclasses.replace(packet, client_id=packet.username)
        return packet
