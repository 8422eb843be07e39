"""A connection's lifecycle as data: its states and the packets allowed in each.

The rule: which packet a client may send is decided here, by table, and nowhere else;
the codec has already refused what no state allows (a second CONNECT, anything before
CONNECT).
"""

from __future__ import annotations

from enum import Enum

from ..codec import (
    Auth,
    Connect,
    Disconnect,
    Packet,
    PingReq,
    PubAck,
    PubComp,
    Publish,
    PubRec,
    PubRel,
    Subscribe,
    Unsubscribe,
)


class State(Enum):
    """Where a connection is in its life."""

    #: accepted; its CONNECT has not been read
    AWAITING_CONNECT = "awaiting CONNECT"
    #: CONNECT read; plugins are deciding, or an AUTH exchange runs (v5 section 4.12)
    CONNECTING = "connecting"
    #: CONNACK 0 sent: the session is live
    CONNECTED = "connected"
    #: the broker or the client ended it; what was written is being flushed
    CLOSING = "closing"
    #: the transport is gone
    CLOSED = "closed"

    # members are singletons: identity is their hash (Enum's own hashes the name in
    # Python, and the table below is looked up for every packet)
    __hash__ = object.__hash__


#: the members as plain names for the per-packet code: on Python 3.11 ``State.X`` goes
#: through ``EnumType.__getattr__``'s hook, about ten times the cost of a global
AWAITING_CONNECT = State.AWAITING_CONNECT
CONNECTING = State.CONNECTING
CONNECTED = State.CONNECTED
CLOSING = State.CLOSING
CLOSED = State.CLOSED

_CONNECTED_PACKETS: frozenset[type[Packet]] = frozenset({
    Publish, PubAck, PubRec, PubRel, PubComp, Subscribe, Unsubscribe, PingReq, Disconnect,
    Auth,
})

#: state -> the packet types a client may send in it
ALLOWED: dict[State, frozenset[type[Packet]]] = {
    State.AWAITING_CONNECT: frozenset({Connect}),
    State.CONNECTING: frozenset({Auth, Disconnect}),
    State.CONNECTED: _CONNECTED_PACKETS,
    State.CLOSING: frozenset(),
    State.CLOSED: frozenset(),
}
