"""A connection's outbox: what the broker has to say to one client, framed for it.

The rule: the outbox never blocks and never does I/O. Everything sent to a client goes
through it: it frames deliveries for the client's protocol level, assigns outbound topic
aliases, withholds what exceeds the client's Maximum Packet Size, and counts what waits
for the socket; the listener's driver takes the bytes once per event-loop turn.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from typing import TYPE_CHECKING, Protocol

from ..codec import (
    MAX_VARINT,
    PROTOCOL_311,
    Property,
    PubAck,
    PubComp,
    Publish,
    PubRec,
    PubRel,
    encode,
    plain_ack,
)

if TYPE_CHECKING:
    from ..api import Client
    from ..codec import Packet
    from ..hooks import Hooks
    from ..message import Message
    from ..stats import Stats

#: why a delivery was withheld: larger than the client said it accepts
TOO_LARGE = "larger than the client's maximum"
#: properties a packet may lose rather than exceed the client's Maximum Packet Size
_DIAGNOSTICS = (Property.REASON_STRING, Property.USER_PROPERTY)
#: the largest packet the protocol can carry: a 5-byte fixed header and the largest body
_PROTOCOL_MAXIMUM = MAX_VARINT + 5


class Driver(Protocol):
    """What a listener provides to move one connection's bytes. After each write to its
    transport it tells the outbox what the transport has not sent yet (``report``)."""

    def schedule_flush(self) -> None:
        """Take the outbox's bytes soon (once per event-loop turn at most); when the
        connection is closing, close the transport after writing them."""


class Outbox:
    """The bytes waiting to be written to one client, and how to frame them."""

    __slots__ = (
        "_bytes", "_count", "_driver", "_hooks", "_out", "_owner", "_sent", "_sent_bytes",
        "alias_max", "aliases", "held", "level", "max_packet", "sealed", "stuck", "waiting",
    )

    def __init__(self, driver: Driver, hooks: Hooks, owner: Client, stats: Stats) -> None:
        self._driver = driver
        #: packets sent by class (the broker's counters)
        self._sent = stats.packets_sent
        #: PUBLISH frame bytes sent, by QoS (the broker's counters)
        self._sent_bytes = stats.sent_bytes_by_qos
        self._hooks = hooks
        self._owner = owner
        self._out: list[bytes] = []
        self._count = 0
        self._bytes = 0
        #: frames the transport has not been able to send: what really waits for a slow
        #: client (what this loop turn wrote is not counted: it goes out at the turn's end,
        #: however much one read or one SUBSCRIBE produced); told by the driver
        self.stuck = 0
        #: bytes waiting for the client: written this turn, or stuck in the transport
        self.waiting = 0
        #: the protocol level packets are encoded for (set from CONNECT)
        self.level = 0
        #: the client's Maximum Packet Size (v5); deliveries above it are not sent
        self.max_packet = _PROTOCOL_MAXIMUM
        #: topic aliases assigned towards the client, topic -> alias
        self.aliases: dict[str, int] = {}
        #: the client's Topic Alias Maximum (0: it allowed none)
        self.alias_max = 0
        #: nothing more is accepted (the connection is closing)
        self.sealed = False
        #: output waiting for storage commits: [commit sequence, frames] in order; while
        #: anything waits, everything written joins the last entry
        self.held: deque[tuple[int, list[bytes]]] | None = None

    def report(self, stuck_frames: int, stuck_bytes: int) -> None:
        """The driver wrote to its transport: what the transport still holds."""
        self.stuck = stuck_frames
        self.waiting = stuck_bytes + self._bytes

    def write(self, data: bytes) -> None:
        """Queue encoded bytes; never blocks."""
        if self.sealed:
            return
        if self.held:
            self.held[-1][1].append(data)
            return
        self._out.append(data)
        self._count += 1
        self._bytes += len(data)
        self.waiting += len(data)
        if self._count == 1:
            self._driver.schedule_flush()

    def take(self) -> tuple[bytes, int]:
        """Everything written since the last call, as one buffer, and how many frames."""
        count = self._count
        if not count:
            return b"", 0
        out = self._out
        self._out = []
        self._count = 0
        self._bytes = 0
        return (out[0] if count == 1 else b"".join(out)), count

    def hold(self, seq: int) -> bool:
        """What is written from now on waits until commit ``seq`` is done; True when
        this outbox was holding nothing before."""
        held = self.held
        if held is None:
            held = self.held = deque()
        first = not held
        if first or held[-1][0] < seq:
            held.append((seq, []))
        return first

    def release(self, committed: int) -> bool:
        """Commit ``committed`` is done: queue what waited for it; True when nothing
        waits any more."""
        held = self.held
        if not held:
            return True
        if self.sealed:
            held.clear()
            return True
        moved = 0
        size = 0
        out = self._out
        while held and held[0][0] <= committed:
            frames = held.popleft()[1]
            out.extend(frames)
            moved += len(frames)
            size += sum(len(frame) for frame in frames)
        if moved:
            self._count += moved
            self._bytes += size
            self.waiting += size
            self._driver.schedule_flush()
        return not held

    def drop_held(self) -> None:
        if self.held:
            self.held.clear()

    def flush_soon(self) -> None:
        self._driver.schedule_flush()

    def send(self, packet: Packet) -> None:
        """Encode and queue a packet, through the packet hooks when plugins have them."""
        hooks = self._hooks
        if hooks.on_packet_encode is not None:
            packet = hooks.on_packet_encode(self._owner, packet)
        data = encode(packet, self.level or PROTOCOL_311)
        if len(data) > self.max_packet:
            data, packet = self._trimmed(packet, data)
        self.write(data)
        if type(packet) is not Publish:  # PUBLISHes are counted by QoS, by the router
            self._sent[type(packet)] += 1
        if hooks.on_packet_sent is not None:
            hooks.on_packet_sent(self._owner, packet, data)

    def ack(self, kind: type[PubAck | PubRec | PubRel | PubComp], packet_id: int) -> None:
        """Queue an acknowledgement with reason 0 and no properties: the packet is built
        only when plugins see packets (one is sent for nearly every QoS 1/2 message)."""
        if self._hooks.packet_hooks:
            self.send(kind(packet_id))
            return
        self.write(plain_ack(kind, packet_id))
        self._sent[kind] += 1

    def _trimmed(self, packet: Packet, data: bytes) -> tuple[bytes, Packet]:
        """A packet over the client's maximum without its Reason String and User
        Properties, which the server must leave out rather than exceed it (MQTT 5
        3.4.2.2.2 and the like, [MQTT-3.4.2-2] [MQTT-3.4.2-3])."""
        props = getattr(packet, "properties", None)
        if not props or isinstance(packet, Publish):
            return data, packet
        kept = {k: v for k, v in props.items() if k not in _DIAGNOSTICS}
        if len(kept) == len(props):
            return data, packet
        slim = dataclasses.replace(packet, properties=kept)  # type: ignore[arg-type, type-var]
        return encode(slim, self.level or PROTOCOL_311), slim

    def publish(self, message: Message, qos: int, retain: bool, packet_id: int = 0,
                subscription_ids: tuple[int, ...] = (), dup: bool = False,
                now: float | None = None) -> str | None:
        """Frame and queue one delivery; returns why it was withheld, or None. ``now``
        is the engine's time, for a message with an expiry interval."""
        level = self.level
        if self.alias_max:
            frame, alias, known = self._frame_aliased(message, qos, retain, packet_id,
                                                      subscription_ids, dup, now)
        else:
            frame = message.frame(level, qos, retain, packet_id, subscription_ids, dup, 0,
                                  False, now)
            alias = 0
            known = False
        if len(frame) > self.max_packet:
            return TOO_LARGE
        size = len(frame)
        self._sent_bytes[qos] += size
        if self._hooks.packet_hooks:
            self.send(message.publish(level, qos, retain, packet_id, subscription_ids, dup,
                                      alias, known, now))
        elif self.held:
            self.write(frame)  # waits behind an acknowledgement held for a commit
        elif not self.sealed:
            # write() inlined: this is the delivery hot path
            self._out.append(frame)
            self._count += 1
            self._bytes += size
            self.waiting += size
            if self._count == 1:
                self._driver.schedule_flush()
        return None

    def _frame_aliased(
        self, message: Message, qos: int, retain: bool, packet_id: int,
        subscription_ids: tuple[int, ...], dup: bool, now: float | None,
    ) -> tuple[bytes, int, bool]:
        """Frame a delivery to a client that accepts topic aliases: (frame, alias, known).

        The first delivery on a topic carries the topic and a new alias, later ones only
        the alias. An alias is taken only when its frame fits the client's maximum, so
        the client has seen every alias it is later sent without a topic.
        """
        level = self.level
        aliases = self.aliases
        alias = aliases.get(message.topic)
        if alias is not None:
            frame = message.frame(level, qos, retain, packet_id, subscription_ids, dup,
                                  alias, True, now)
            return frame, alias, True
        if len(aliases) >= self.alias_max:
            # all taken: topics beyond the client's maximum travel by name
            frame = message.frame(level, qos, retain, packet_id, subscription_ids, dup, now=now)
            return frame, 0, False
        alias = len(aliases) + 1
        frame = message.frame(level, qos, retain, packet_id, subscription_ids, dup, alias,
                              now=now)
        if len(frame) <= self.max_packet:
            aliases[message.topic] = alias
        return frame, alias, False
