"""Test data for the ledger tests: plain client objects with the attributes midge gives
hooks, and helpers that call the plugin's hook methods the way the broker does."""

from __future__ import annotations

from dataclasses import dataclass, field

import anyio
from midge_auth_ledger import LedgerPlugin

from midge.codec import Connect


@dataclass
class Listener:
    name: str = "default"
    label: str = "tcp 127.0.0.1:1883"


@dataclass
class Client:
    client_id: str = "c1"
    username: str | None = None
    remote: str = "192.0.2.7:50000"
    listener: Listener = field(default_factory=Listener)
    closing: bool = False

    @property
    def remote_host(self) -> str:
        return self.remote.rsplit(":", 1)[0]


def connect(plugin: LedgerPlugin, username: str | None = None, password: str | None = None,
            client_id: str = "c1", remote: str = "192.0.2.7:50000") -> bool:
    """Run ``on_connect_authenticate`` as the broker would, in an event loop."""
    client = Client(client_id=client_id, username=username, remote=remote)
    packet = Connect(client_id=client_id, username=username,
                     password=None if password is None else password.encode())

    async def call() -> bool:
        return await plugin.on_connect_authenticate(client, packet)

    return anyio.run(call)


def acl(plugin: LedgerPlugin, topic: str, write: bool, username: str | None = None,
        client_id: str = "c1", remote: str = "192.0.2.7:50000") -> bool:
    client = Client(client_id=client_id, username=username, remote=remote)
    return plugin.on_acl_check(client, topic, write)


def can(plugin: LedgerPlugin, topic: str, username: str | None = None,
        client_id: str = "c1", remote: str = "192.0.2.7:50000") -> str:
    """Access as a mochi-style digit: 0 none, 1 read, 2 write, 3 both."""
    read = acl(plugin, topic, False, username, client_id, remote)
    write = acl(plugin, topic, True, username, client_id, remote)
    return str(int(read) + 2 * int(write))
