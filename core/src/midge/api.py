"""The narrow ports: what a hook sees of a client, and what a plugin may ask of the broker.

The rule: plugins and listeners are typed against these protocols, never against the
engine's or the shell's classes, so the broker can change inside without breaking them.
Both are read-mostly views: a plugin reads a client's attributes, and acts on the broker
only through the handle's methods.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from .codec import Properties
from .config import ListenerSettings, Settings
from .message import Message
from .stats import Stats


@dataclass(frozen=True, slots=True)
class PeerCertificate:
    """The certificate a TLS client presented (and the listener's CAs verified).

    ``subject`` holds the subject's attributes by their short names (``CN``, ``O``,
    ``OU``, ``emailAddress``, ...), each with its values in certificate order.
    """

    #: the subject as an RFC 4514 string, e.g. ``CN=sensor-1,O=Acme``
    dn: str
    subject: dict[str, tuple[str, ...]]
    issuer: str
    #: SHA-256 of the DER certificate, lower-case hex
    fingerprint: str
    serial_number: str
    not_before: str
    not_after: str

    @property
    def common_name(self) -> str | None:
        """The subject's (first) CN, or None."""
        names = self.subject.get("CN")
        return names[0] if names else None

    def field(self, name: str) -> str | None:
        """``DN``, ``fingerprint``, or a subject attribute's first value (None: absent)."""
        if name == "DN":
            return self.dn
        if name == "fingerprint":
            return self.fingerprint
        values = self.subject.get(name)
        return values[0] if values else None


class Client(Protocol):
    """A client connection as hooks see it (``midge.Client``). Read its attributes; do
    not keep it past ``on_disconnect``."""

    @property
    def client_id(self) -> str:
        """The client identifier (assigned by the broker for an empty v5 one); "" before
        CONNECT has been read."""

    @property
    def username(self) -> str | None:
        """The user name of CONNECT, or the TLS certificate's identity on a listener with
        ``use_identity_as_username``; None without one."""

    @property
    def remote(self) -> str:
        """The peer's address and port, for log lines (``host:port``); the address a
        PROXY protocol header carried, where the listener reads one."""

    @property
    def remote_host(self) -> str:
        """The peer's address without the port."""

    @property
    def remote_port(self) -> int:
        """The peer's port (0 where the transport has none)."""

    @property
    def listener(self) -> ListenerSettings:
        """The listener the client connected through (``client.listener.name`` names it)."""

    @property
    def certificate(self) -> PeerCertificate | None:
        """The verified TLS client certificate, None without TLS or without one."""

    @property
    def protocol_level(self) -> int:
        """3 (MQTT 3.1), 4 (3.1.1) or 5; 0 before CONNECT."""

    @property
    def keepalive(self) -> int:
        """The keepalive in force, in seconds (0: none)."""

    @property
    def connected(self) -> bool:
        """CONNACK 0 was sent and the connection is not closing."""

    @property
    def closing(self) -> bool:
        """The connection is being closed (no more packets are handled)."""

    @property
    def clean_disconnect(self) -> bool:
        """The client ended the connection with a normal DISCONNECT (its will is dropped)."""

    @property
    def close_reason(self) -> str:
        """Why the connection ended ("" while it is open)."""


class MessageStream(Protocol):
    """An inline subscription (``broker.subscribe``): an async context manager and an
    async iterator of messages, or a callback target."""

    topic_filter: str
    dropped: int

    def __aiter__(self) -> AsyncIterator[Message]: ...

    async def get(self) -> Message: ...

    def close(self) -> None: ...


class BrokerHandle(Protocol):
    """What plugins may do with the broker (the ``broker`` argument of lifecycle hooks).

    Call these from the broker's event loop: a hook, a background task started with
    ``start_task``, or ``portal.call`` from another thread.
    """

    @property
    def settings(self) -> Settings: ...

    @property
    def stats(self) -> Stats: ...

    async def publish(self, topic: str, payload: bytes | str = b"", qos: int = 0,
                      retain: bool = False, properties: Properties | None = None) -> int:
        """Publish as the broker itself (no ACL on the sender); returns the recipients."""

    def subscribe(self, topic_filter: str, qos: int = 2, *,
                  callback: Callable[[Message], Awaitable[None] | None] | None = None,
                  buffer: int = 1000) -> MessageStream:
        """Receive the messages matching ``topic_filter`` inline (retained ones first)."""

    def deliver(self, message: Message, node: str) -> int:
        """Deliver a message that was published elsewhere (another node of a cluster) to
        the local subscribers only; it is marked with ``node`` and not reported by
        ``on_published``, so it is never forwarded again. Returns the recipients."""

    def disconnect(self, client_id: str, reason_code: int = 0x98, *,
                   reason: str | None = None, server_reference: str | None = None) -> bool:
        """Disconnect a connected client (v5: DISCONNECT ``reason_code``)."""

    def client(self, client_id: str) -> Client | None:
        """The connected client with this id, or None."""

    def sys_info(self) -> dict[str, Any]:
        """The counters given to ``on_sys_info_tick``."""

    def start_task(self, func: Callable[..., Awaitable[Any]], *args: Any,
                   name: str | None = None) -> None:
        """Run ``func(*args)`` in the broker's plugin task group: it starts at once
        (call it from ``on_started``, which runs after restore and before the first
        client is accepted) and is cancelled after the clients are gone at shutdown."""


#: what ``Observer.clients_info`` selects by ``state``: both, connected clients, or the
#: persistent sessions whose client is away
CLIENT_STATES = ("all", "connected", "offline")


class Observer(Protocol):
    """What the http listener may read of the broker (``Acceptor.observer``): figures
    and views computed when asked, never a handle to change anything."""

    @property
    def stats(self) -> Stats:
        """The broker's counters (read them; never change them)."""

    def sys_info(self) -> dict[str, Any]:
        """The broker's figures under mochi-mqtt's names (``/stats``, ``$SYS``)."""

    def figures(self) -> dict[str, Any]:
        """What ``/metrics`` exposes beyond the counters: ``sessions``,
        ``subscriptions``, ``retained``, ``queued`` and ``queued_max`` (session queue
        depth), ``inflight``, and ``listeners`` (see ``listeners_info``)."""

    def listeners_info(self) -> list[dict[str, Any]]:
        """Each listener: ``name``, ``type``, ``address``, ``connections`` (now) and
        ``connections_total``."""

    def storage_info(self) -> dict[str, Any] | None:
        """The storage writer's figures (None: no storage plugin is active):
        ``backend``, ``durability``, ``reachable`` (the last commit attempt succeeded),
        ``commits``, ``commit_failures`` (failed attempts), ``commit_seconds`` (their
        sum), ``commit_seconds_buckets`` (upper bound -> commits that took at most that
        long, cumulative, ending with ``+Inf``), ``items_committed`` (changes, summed
        over the commits) and ``pending_items`` (taken for a commit, not stored yet)."""

    def clients_info(self, prefix: str = "", state: str = "all", offset: int = 0,
                     limit: int | None = None) -> tuple[int, list[dict[str, Any]]]:
        """How many clients have an id that starts with ``prefix``, and ``limit`` of them
        (None: all) from ``offset`` on, sorted by id: connected ones (``state``
        "connected"), the persistent sessions whose client is away ("offline"), or both
        ("all"); each has a ``state``."""

    def client_info(self, client_id: str) -> dict[str, Any] | None:
        """One client, connected or an offline session, with its subscriptions and their
        options, or None."""

    async def not_ready(self) -> str | None:
        """Why the broker is not ready to serve (None: it is)."""
