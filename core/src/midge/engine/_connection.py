"""One client connection's protocol side: decode, check by state, dispatch, close.

The rule (after h11): this module does no I/O. A listener's driver feeds it the bytes it
reads (``feed``), takes what to write from its outbox (``take_output``) when asked to
flush, tells it the answers to what it asked (``answer``), and reports the end of the
transport (``transport_lost``). Which packet is allowed when is the state table's
business (``_state``); what a packet does is the engine's (``Owner.handle``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from ..codec import (
    PROTOCOL_5,
    PROTOCOL_311,
    ConnAck,
    Decoder,
    Disconnect,
    Packet,
    Property,
    ProtocolViolation,
    Publish,
    ReasonCode,
    RemoteProtocolError,
    Role,
    UnsupportedProtocolVersion,
    connack_code_v3,
)
from ..errors import DropPacket
from ..logsafe import Repeats, quoted, safe
from ._outbox import Driver, Outbox
from ._state import ALLOWED, AWAITING_CONNECT, CLOSED, CLOSING, CONNECTED, State

if TYPE_CHECKING:
    from ..api import PeerCertificate
    from ..codec import Will
    from ..config import ListenerSettings
    from ..hooks import Hooks
    from ..session import Session
    from ..stats import Stats
    from ._ask import Ask
    from ._journal import Journal

log = logging.getLogger("midge.connection")


class Owner(Protocol):
    """What a connection needs from the engine that made it."""

    @property
    def handlers(self) -> Mapping[type[Packet], Callable[[Connection, Any], Ask | None]]:
        """Packet type -> what it does; an Ask when a decision must be awaited first."""

    def ended(self, conn: Connection, connected: bool) -> None:
        """The connection stopped handling input (once, however it ends); ``connected``:
        it had been sent CONNACK 0."""

    def released(self, conn: Connection) -> None:
        """The connection's transport is gone."""

    @property
    def warnings(self) -> Repeats:
        """The per-template limit of the warnings clients cause (``warn``)."""

    def contended(self) -> bool:
        """Since the last call, did a delivery have to wait (a subscriber's inflight
        window or socket was full)? Then a connection that spent its quantum yields."""

    def hold(self, conn: Connection) -> float:
        """Seconds the ``throttled`` connection must wait before more of its input is
        handled (0: go on, and it is no longer throttled)."""


class Connection:
    """A client's network connection, from accept to close (``midge.Client`` to hooks)."""

    __slots__ = (
        "_clock", "_ended", "_owner", "_stats", "acl_cache", "aliases_in", "auth_method",
        "certificate", "clean_disconnect", "client_id", "close_reason", "decoder", "hooks",
        "id_assigned", "identity", "input_delay", "journal", "keepalive", "last_seen",
        "listener", "mark", "more_input", "on_input_ready", "opened", "outbox",
        "problem_info", "quantum", "reauthenticating", "remote", "remote_host",
        "remote_port", "session", "state", "throttled", "username", "will",
    )

    def __init__(
        self, owner: Owner, driver: Driver, listener: ListenerSettings, host: str, port: int,
        *, hooks: Hooks, clock: Callable[[], float], max_packet_size: int, stats: Stats,
        certificate: PeerCertificate | None = None, identity: str | None = None,
        journal: Journal | None = None, quantum: int = 0,
    ) -> None:
        self._owner = owner
        self._clock = clock
        self._stats = stats
        self.hooks = hooks
        self.listener = listener
        self.remote_host = host
        self.remote_port = port
        self.remote = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self.state = AWAITING_CONNECT
        self.outbox = Outbox(driver, hooks, self, stats)
        self.decoder = Decoder(Role.SERVER, max_packet_size=max_packet_size)
        #: (topic, write) -> ACL decision, kept until a reload
        self.acl_cache: dict[tuple[str, bool], bool] = {}
        self.client_id = ""
        #: the broker assigned ``client_id`` (CONNECT had an empty one)
        self.id_assigned = False
        self.username: str | None = None
        #: the verified TLS client certificate (the listener extracted it)
        self.certificate = certificate
        #: a username the transport established (a certificate's identity); the CONNECT
        #: flow prefers it to the packet's
        self.identity = identity
        self.session: Session | None = None
        self.keepalive = 0
        self.opened = self.last_seen = clock()
        self.will: Will | None = None
        self.clean_disconnect = False
        self.close_reason = ""
        #: v5 Request Problem Information: reason strings allowed on non-CONNACK packets
        self.problem_info = True
        #: v5 topic aliases the client set, alias -> topic (this connection only)
        self.aliases_in: dict[int, str] = {}
        #: the v5 Authentication Method of CONNECT (None: no enhanced authentication)
        self.auth_method: str | None = None
        #: a re-authentication exchange is in progress (AUTH 0x18 expected)
        self.reauthenticating = False
        #: most packets one ``feed`` handles (0: all it can); what is left waits in the
        #: decoder so one flooding connection cannot make a loop turn long for everyone
        self.quantum = quantum
        #: ``feed`` stopped at the quantum with packets still buffered: the driver stops
        #: reading and calls ``feed(b"")`` again on a later loop turn
        self.more_input = False
        #: with ``more_input``: seconds to wait before feeding again (0: next turn);
        #: the connection is held (backpressure, the inbound rate)
        self.input_delay = 0.0
        #: the engine holds this connection's input now and then: ask ``Owner.hold``
        self.throttled = False
        #: the driver's callback to feed again at once: what held the input is over
        self.on_input_ready: Callable[[], None] | None = None
        self._ended = False
        #: the engine's journal of durable changes (None: no storage)
        self.journal = journal
        #: the journal's change count when the packet being handled was read
        self.mark = 0

    def __repr__(self) -> str:
        return f"<Connection {self.client_id or '?'} from {self.remote} {self.state.value}>"

    @property
    def name(self) -> str:
        """The client id once known, quoted (an id may hold spaces, or be a word like
        "client"), else the remote address, for log lines."""
        if self.client_id:
            return quoted(self.client_id)
        return f"<{self.remote}>"

    @property
    def log_fields(self) -> dict[str, str]:
        """The client's id, listener and address as log record fields (``extra=``), which
        ``--log-format json`` writes as fields of their own."""
        return {"client_id": self.client_id, "listener": self.listener.label,
                "address": self.remote}

    def warn(self, logger: logging.Logger, msg: str, *args: object) -> None:
        """A WARNING about this client that a flood of clients could repeat: the first
        few per template carry the client's name and fields, the rest are counted
        (``logsafe.Repeats``)."""
        self._owner.warnings.warning(logger, msg, *args, extra=self.log_fields, stacklevel=3)

    @property
    def protocol_level(self) -> int:
        return self.outbox.level

    @property
    def connected(self) -> bool:
        return self.state is CONNECTED

    @property
    def closing(self) -> bool:
        state = self.state
        return state is CLOSING or state is CLOSED

    @property
    def v5(self) -> bool:
        return self.outbox.level == PROTOCOL_5

    def send(self, packet: Packet) -> None:
        self.outbox.send(packet)

    def durable(self) -> None:
        """The acknowledgement about to be sent depends on what this packet changed:
        with a storage, it (and what follows it) waits for that change's commit."""
        journal = self.journal
        if journal is not None and journal.enabled:
            journal.hold(self.outbox, self.mark, self.session)

    def wake_input(self) -> None:
        """What held this connection's input is over: the driver feeds again now."""
        if self.on_input_ready is not None and not self.closing:
            self.on_input_ready()

    def take_output(self) -> tuple[bytes, int]:
        """What to write now, as one buffer, and how many frames it holds."""
        taken = self.outbox.take()
        self._stats.bytes_sent += len(taken[0])
        return taken

    # -- ending ----------------------------------------------------------------------------

    def close(self, reason_code: int | None, why: str, *, reason: str = "",
              server_reference: str | None = None) -> None:
        """End the connection from the broker's side: a connected v5 client is told
        DISCONNECT ``reason_code`` first (with ``reason`` as Reason String when it allows
        one, and a Server Reference for 0x9C/0x9D); what was written is flushed, then
        the transport closes. ``why`` is for logs and ``on_disconnect``."""
        if self.closing:
            return
        # acknowledgements still waiting for a commit are never sent now: the client
        # repeats what they answer when it comes back
        self.outbox.drop_held()
        if reason_code is not None and self.state is State.CONNECTED and self.v5:
            props: dict[int, Any] = {}
            if reason and self.problem_info:
                props[Property.REASON_STRING] = reason
            if server_reference is not None and reason_code in (
                ReasonCode.USE_ANOTHER_SERVER, ReasonCode.SERVER_MOVED
            ):
                props[Property.SERVER_REFERENCE] = server_reference
            self.send(Disconnect(reason_code, props))
        if not self.close_reason:
            self.close_reason = why
        self._end(CLOSING)
        self.outbox.sealed = True
        self.outbox.flush_soon()

    def transport_lost(self, error: str = "") -> None:
        """The driver's transport is gone (closed by the peer, reset, or closed by us)."""
        if not self.closing:
            if self.decoder.buffered:
                # a truncated packet is bad input like any other: one WARNING
                self.warn(log, "client %s: connection closed in the middle of a packet "
                          "(%d bytes of it received)", self.name, self.decoder.buffered)
                self.close_reason = "connection closed in the middle of a packet"
            else:
                self.close_reason = self.close_reason or (
                    f"connection lost: {error}" if error else "connection closed by the client"
                )
        self.outbox.sealed = True
        self._end(CLOSED)
        self._owner.released(self)

    def _end(self, state: State) -> None:
        connected = self.state is CONNECTED
        self.state = state
        if self._ended:
            return
        self._ended = True
        try:
            self._owner.ended(self, connected)
        except Exception:
            log.exception("client %s: internal error while closing", self.name)

    # -- input -----------------------------------------------------------------------------

    def feed(self, data: bytes) -> Ask | None:
        """Handle received bytes (up to ``quantum`` packets; ``more_input`` then says
        packets are left, for a later ``feed(b"")``). Returns an Ask when a plugin's
        decision must be awaited; the driver awaits it, calls ``answer``, and feeds
        nothing meanwhile."""
        self.more_input = False
        if self.closing:
            return None
        self.last_seen = self._clock()
        if data:
            self._stats.bytes_received += len(data)
            self.decoder.feed(data)
        return self._process()

    def answer(self, pending: Ask, value: Any, error: BaseException | None) -> Ask | None:
        """The awaited decision of ``pending``: continue its flow, then the packets that
        arrived meanwhile. Returns the next Ask, if any."""
        self.more_input = False
        try:
            more = pending.tell(value, error)
            if more is not None:
                more.packet = pending.packet
                return more
            if pending.packet is not None:
                self._processed(pending.packet)
        except RemoteProtocolError as exc:
            self.protocol_error(exc)
            return None
        except Exception:
            self._internal_error()
            return None
        if self.closing:
            return None
        return self._process()

    def _process(self) -> Ask | None:
        hooks = self.hooks
        decoder = self.decoder
        handlers = self._owner.handlers
        received = self._stats.packets_received
        journal = self.journal
        budget = self.quantum or -1
        try:
            while budget:
                if self.throttled and (wait := self._owner.hold(self)):
                    # held: what is buffered waits, and nothing more is read meanwhile
                    self.more_input = True
                    self.input_delay = wait
                    return None
                packet = decoder.next_packet()
                if packet is None:
                    return None
                budget -= 1
                if type(packet) is not Publish:  # PUBLISHes are counted by QoS, in the flow
                    received[type(packet)] += 1
                if journal is not None:
                    self.mark = journal.changes
                if hooks.on_packet_read is not None:
                    try:
                        packet = hooks.on_packet_read(self, packet)
                    except DropPacket:
                        continue
                if type(packet) not in ALLOWED[self.state]:
                    raise ProtocolViolation(
                        f"{type(packet).__name__} while {self.state.value}"
                        if self.state is not State.CONNECTING
                        else f"{type(packet).__name__} before CONNACK"
                    )
                pending = handlers[type(packet)](self, packet)
                if pending is not None:
                    pending.packet = packet
                    return pending
                state = self.state
                if state is CONNECTED:
                    if hooks.on_packet_processed is not None:
                        hooks.on_packet_processed(self, packet, None)
                elif state is CLOSING or state is CLOSED:
                    return None
                if not budget and not self._owner.contended():
                    # nobody waits for what this connection sends: no reason to yield
                    budget = self.quantum
            # the quantum is spent while deliveries wait for a subscriber: the rest
            # waits for a later turn (that subscriber's acknowledgements come first), if
            # a whole packet (or the start of one) is buffered
            self.more_input = decoder.buffered > 0
            self.input_delay = 0.0
        except RemoteProtocolError as exc:
            self.protocol_error(exc)
        except Exception:
            self._internal_error()
        return None

    def _processed(self, packet: Packet) -> None:
        if self.state is CONNECTED and self.hooks.on_packet_processed is not None:
            self.hooks.on_packet_processed(self, packet, None)

    def _internal_error(self) -> None:
        log.error(
            "client %s: internal error; closing its connection", self.name,
            exc_info=True,  # noqa: LOG014 - always called from an except block
            extra=self.log_fields,
        )
        self.close(ReasonCode.IMPLEMENTATION_SPECIFIC_ERROR, "internal error")

    def protocol_error(self, exc: RemoteProtocolError) -> None:
        """Answer a protocol violation as the specification says, then close."""
        self.warn(log, "client %s: protocol error: %s", self.name, safe(exc, 256))
        self.close_reason = f"protocol error: {exc.message}"
        if self.state is not State.CONNECTED:
            if isinstance(exc, UnsupportedProtocolVersion):
                # the client's level is unknown to us: answer in the 3.1.1 form
                # [MQTT-3.1.2-2]
                self.outbox.level = PROTOCOL_311
                self.send(ConnAck(connack_code_v3(exc.reason_code)))
            elif self.decoder.protocol_level == PROTOCOL_5:
                self.outbox.level = PROTOCOL_5
                self.send(ConnAck(exc.reason_code))
        self.close(exc.reason_code, self.close_reason)
