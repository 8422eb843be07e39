"""The plugin contract: one pluggy hookspec per broker event.

The rule: every hook here is documented (when it fires, its arguments, what its return
value means, whether it may be ``async def``, how several implementations combine) and
tested. The combination rules are applied by ``midge.hooks.dispatch.Hooks``, not by
pluggy, because pluggy never awaits. ``client`` arguments are ``midge.Client`` objects (a
read-only view of the connection, see ``midge.api``; do not keep it past
``on_disconnect``); ``broker`` arguments are ``midge.api.BrokerHandle``.

Combination rules:

broadcast
    every implementation runs; return values are ignored; an exception is logged with
    the plugin's name and the hook, and the others still run. ``async def``
    implementations are awaited after the event by the plugin's worker, one call at a
    time in event order (up to ``midge_concurrency`` at once if the plugin sets it).
vote
    implementations run in order until one returns True (allow) or False (deny); None
    abstains. No decision is a denial. An exception counts as a denial.
pipeline
    each implementation receives the previous one's result in the last argument and
    returns the value to pass on (None keeps the value unchanged). An exception other
    than the documented rejection is logged and that plugin is skipped.
first non-empty
    implementations run in order; the first non-empty result is used.
first exception stops
    implementations run in order until one raises or returns a refusal code (0x80 and
    above); ``Refuse`` gives its code, any other exception refuses with 0x80.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from ..api import BrokerHandle, Client
    from ..codec import Auth, Connect, Packet, Publish, Subscribe, Unsubscribe, Will
    from ..message import Message
    from ..records import Storage
    from ..topics import Route

hookspec = pluggy.HookspecMarker("midge")
hookimpl = pluggy.HookimplMarker("midge")

BROADCAST = "broadcast"
VOTE = "vote"
PIPELINE = "pipeline"
FIRST_NON_EMPTY = "first non-empty"
STOP_ON_EXCEPTION = "first exception stops"

#: hook name -> (combination rule, may an implementation be ``async def``)
RULES: dict[str, tuple[str, bool]] = {}


def _rule(rule: str, may_be_async: bool) -> Any:
    def mark(func: Any) -> Any:
        RULES[func.__name__] = (rule, may_be_async)
        return hookspec(func)

    return mark


# -- lifecycle -----------------------------------------------------------------------------


@_rule(BROADCAST, True)
def on_started(broker: BrokerHandle) -> None:
    """The broker has restored its stored state and bound its listeners.

    Fires once, before the first client is accepted: ``async def`` implementations are
    awaited first. Start background tasks here with ``broker.start_task(func)``; they run
    in a task group the broker owns and are cancelled after the clients are gone at
    shutdown. Return value ignored.
    """


@_rule(BROADCAST, True)
def on_stopped(broker: BrokerHandle) -> None:
    """The broker has closed every connection and is about to return from ``run``.

    Fires once, at the very end of every shutdown, after the background tasks were
    cancelled and the deferred ``async def`` broadcast calls drained (within
    ``shutdown_timeout``); ``async def`` implementations are awaited, within the same
    deadline (flush storage here). Return value ignored.
    """


@_rule(BROADCAST, True)
def on_reload(broker: BrokerHandle) -> None:
    """The operator asked for a reload (SIGHUP): re-read files such as a ledger.

    A midge addition to mochi-mqtt's list. Keep the old state when the new one is
    invalid, and log why. Return value ignored. ``async def`` implementations are awaited:
    cached ACL decisions are cleared only once every implementation has finished.
    """


@_rule(BROADCAST, True)
def on_sys_info_tick(broker: BrokerHandle, info: dict[str, Any]) -> None:
    """Every ``sys_interval`` seconds, with the broker's counters.

    ``info`` maps mochi-mqtt's sys info names (``clients_connected``,
    ``messages_received``, ``messages_sent``, ``messages_dropped``, ``bytes_received``,
    ``uptime`` ... the same as an http listener's ``/stats``) to numbers, ``version`` to
    a string and ``listeners`` to a list of dicts. Return value ignored.
    """


@_rule(FIRST_NON_EMPTY, True)
def on_ready_check(broker: BrokerHandle) -> str | None:
    """The broker is asked whether it is ready to serve (an http listener's ``/readyz``).

    Return a short reason why it is not (``"storage unreachable: connection refused"``),
    or None when this plugin has nothing against serving; the first reason wins and
    ``/readyz`` answers 503 with it. Called only once the broker has restored its state
    and bound its listeners, on every probe: keep it cheap (check a connection you
    hold, not a new one each time). May be ``async def``; an answer that takes longer
    than two seconds counts as not ready.
    """


# -- connections ---------------------------------------------------------------------------


@_rule(STOP_ON_EXCEPTION, True)
def on_connect(client: Client, packet: Connect) -> int | None:
    """A CONNECT arrived, before authentication.

    Raise ``midge.Refuse(reason_code)`` or return a ``ReasonCode`` of 0x80 or above to
    refuse the connection with that CONNACK code; the first refusal stops the others.
    Any other exception refuses with 0x80 (and is logged). May be ``async def``: the
    broker awaits it before it answers CONNACK.
    """


@_rule(VOTE, True)
def on_connect_authenticate(client: Client, packet: Connect) -> bool | None:
    """May this client connect with these credentials?

    Vote: True allows, False denies, None abstains; no decision denies (CONNACK 0x86,
    v3 return code 4, when the client gave a user name; 0x87, v3 return code 5,
    otherwise). ``packet.username`` and
    ``packet.password`` hold the credentials. May be ``async def`` (run slow password
    hashing in a thread with ``anyio.to_thread.run_sync``). Raise ``midge.Refuse(code)``
    to refuse with another reason code than a denial's, for example 0x89 Server busy
    when the attempt waited too long for a hashing slot, or 0x8A Banned.
    """


@_rule(VOTE, False)
def on_acl_check(client: Client, topic: str, write: bool) -> bool | None:
    """May this client publish to (``write``) or receive from ``topic``?

    Called when the client publishes (``write=True``, topic name), subscribes
    (``write=False``, the topic filter) and for every delivery to it (``write=False``,
    topic name; cached per client and topic until a reload). Vote; no decision denies.
    Must be a plain function: it is on the hot path.
    """


@_rule(BROADCAST, True)
def on_session_establish(client: Client, packet: Connect) -> None:
    """The client was accepted; its session is about to be created or resumed."""


@_rule(BROADCAST, True)
def on_session_established(client: Client, packet: Connect) -> None:
    """CONNACK has been queued and the session is live (resent messages follow)."""


@_rule(BROADCAST, True)
def on_disconnect(client: Client, error: str | None, expire: bool) -> None:
    """A connected client's connection ended.

    ``error`` is None after a normal DISCONNECT, else why the connection ended;
    ``expire`` is True when the session ends with the connection (expiry 0).
    """


@_rule(PIPELINE, True)
def on_auth_packet(client: Client, packet: Auth) -> Auth:
    """A step of MQTT 5 enhanced authentication (section 4.12).

    For a CONNECT with an Authentication Method the broker builds
    ``Auth(0x18, {AUTHENTICATION_METHOD, AUTHENTICATION_DATA})`` from it; each AUTH
    0x18 the client sends in reply, and an AUTH 0x19 (re-authentication after
    CONNACK), is passed as it arrived. Pipeline: return the answer, an ``Auth`` with
    reason 0x18 (a challenge, sent to the client; its reply comes back here) or 0x00
    (success: CONNACK 0, or AUTH 0x00 for a re-authentication, carrying the answer's
    data). Raise ``midge.Refuse(code)`` to fail: CONNACK with that code, or DISCONNECT
    after CONNACK. Return None for a method you do not know; when nobody answers,
    CONNACK 0x8C (or DISCONNECT 0x8C). The ``on_connect_authenticate`` vote still
    decides after a successful exchange. May be ``async def``.
    """


# -- packets -------------------------------------------------------------------------------


@_rule(PIPELINE, False)
def on_packet_read(client: Client, packet: Packet) -> Packet:
    """A packet was decoded from the client, before the broker handles it.

    Pipeline: return the packet to handle (possibly changed). Raise
    ``midge.DropPacket`` to ignore it without disconnecting the client. CONNECT is
    included. Must be a plain function (hot path).
    """


@_rule(PIPELINE, False)
def on_packet_encode(client: Client, packet: Packet) -> Packet:
    """A packet is about to be encoded for the client. Pipeline: return the packet."""


@_rule(BROADCAST, True)
def on_packet_sent(client: Client, packet: Packet, data: bytes) -> None:
    """A packet was encoded and queued for the client's socket (``data`` are its bytes)."""


@_rule(BROADCAST, True)
def on_packet_processed(client: Client, packet: Packet, error: str | None) -> None:
    """The broker finished handling a packet from the client (``error`` if it failed)."""


# -- subscriptions -------------------------------------------------------------------------


@_rule(PIPELINE, False)
def on_subscribe(client: Client, packet: Subscribe) -> Subscribe:
    """A SUBSCRIBE arrived, before the ACL check of its filters. Pipeline: return the
    packet to apply (the ACL then checks the filters it holds)."""


@_rule(BROADCAST, True)
def on_subscribed(client: Client, packet: Subscribe, reason_codes: list[int]) -> None:
    """The subscriptions of ``packet`` were applied; ``reason_codes`` went in SUBACK."""


@_rule(PIPELINE, False)
def on_select_subscribers(message: Message, subscribers: list[Route]) -> list[Route]:
    """The recipients of a message were matched. Pipeline over the list of routes:
    return the routes to deliver to (remove, add or reorder)."""


@_rule(PIPELINE, False)
def on_unsubscribe(client: Client, packet: Unsubscribe) -> Unsubscribe:
    """An UNSUBSCRIBE arrived. Pipeline: return the packet to apply."""


@_rule(BROADCAST, True)
def on_unsubscribed(client: Client, packet: Unsubscribe) -> None:
    """The filters of ``packet`` were removed."""


# -- messages ------------------------------------------------------------------------------


@_rule(PIPELINE, True)
def on_publish(client: Client, packet: Publish) -> Publish:
    """A PUBLISH arrived (after the ACL check), before it is retained and routed.

    Pipeline: return the packet to route (possibly changed). Raise
    ``midge.RejectPublish(reason_code)`` to drop it; the sender still gets its
    PUBACK/PUBREC (with the reason code for v5). May be ``async def``: the broker awaits
    it before it routes and acknowledges.
    """


@_rule(BROADCAST, True)
def on_published(client: Client | None, packet: Publish) -> None:
    """A message was published and routed: a client's PUBLISH (after ``on_publish``
    accepted it), a will (``client`` is the connection that left it), or an inline
    ``broker.publish`` (``client`` is None). Not fired for ``broker.deliver`` (messages
    published elsewhere, on another node)."""


@_rule(BROADCAST, True)
def on_publish_dropped(client: Client | None, message: Message, reason: str) -> None:
    """A delivery to ``client`` was dropped (queue full, too large for the client, ACL)."""


@_rule(BROADCAST, True)
def on_retain_message(client: Client | None, message: Message, stored: bool) -> None:
    """The retained message of ``message.topic`` was set (``stored``) or cleared."""


@_rule(BROADCAST, True)
def on_retain_published(client: Client, message: Message) -> None:
    """A retained message was sent to ``client`` because it subscribed."""


@_rule(BROADCAST, True)
def on_qos_publish(client: Client, message: Message, packet_id: int, dup: bool) -> None:
    """A QoS 1/2 delivery to ``client`` was sent (``dup``: it is a resend)."""


@_rule(BROADCAST, True)
def on_qos_complete(client: Client, packet_id: int) -> None:
    """A QoS 1/2 delivery to ``client`` was acknowledged (PUBACK or PUBCOMP)."""


@_rule(BROADCAST, True)
def on_qos_dropped(client: Client, packet_id: int, reason: str) -> None:
    """An inflight QoS 1/2 delivery to ``client`` was abandoned."""


@_rule(BROADCAST, True)
def on_packet_id_exhausted(client: Client, message: Message) -> None:
    """All 65535 packet ids of ``client`` are in use; ``message`` waits in its queue."""


@_rule(PIPELINE, False)
def on_will(client: Client, will: Will) -> Will:
    """The client's will is about to be published. Pipeline: return the will to send."""


@_rule(BROADCAST, True)
def on_will_sent(client: Client, will: Will) -> None:
    """The client's will was published."""


@_rule(BROADCAST, True)
def on_client_expired(client_id: str) -> None:
    """The session of ``client_id`` expired and was removed."""


@_rule(BROADCAST, True)
def on_retained_expired(topic: str) -> None:
    """The retained message of ``topic`` expired and was removed."""


# -- stored state, read once at start ------------------------------------------------------


@_rule(FIRST_NON_EMPTY, False)
def storage_backend() -> Storage | None:
    """The storage that keeps the broker's state (a ``midge.records.Storage``).

    Called once at start, before anything is restored. The broker opens the first one
    returned (a failure stops startup, naming the storage), restores its Snapshot, and
    from then on commits the durable changes to it in group commits: with
    ``durability = "sync"`` every PUBACK/PUBREC/PUBREL/PUBCOMP, SUBACK/UNSUBACK and the
    CONNACK of a persistent session waits for the commit of the change it acknowledges.
    Return None to pass on. Must be a plain ``def``.
    """


@_rule(FIRST_NON_EMPTY, True)
def stored_clients() -> list[dict[str, Any]]:
    """Sessions to restore: ``{"client_id": str, "expiry_interval": int | None,
    "owner": str | None}`` each (``owner``, optional: the user name that owns the
    session, None for a client without one; only that user may resume it; without the
    key, the first client to connect with the id claims the session)."""


@_rule(FIRST_NON_EMPTY, True)
def stored_subscriptions() -> list[dict[str, Any]]:
    """Subscriptions to restore: ``{"client_id", "subscription": Subscription,
    "identifier": int}`` each; their sessions come from ``stored_clients``."""


@_rule(FIRST_NON_EMPTY, True)
def stored_inflight_messages() -> list[dict[str, Any]]:
    """Queued QoS 1/2 deliveries to restore: ``{"client_id", "message": Message,
    "qos": int, "retain": bool}`` each, in delivery order."""


@_rule(FIRST_NON_EMPTY, True)
def stored_retained_messages() -> list[Message]:
    """Retained messages to restore."""


@_rule(FIRST_NON_EMPTY, True)
def stored_sys_info() -> dict[str, Any]:
    """Counters to continue from (keys of ``on_sys_info_tick``'s ``info``)."""
