"""The engine fuzzer: random sequences of valid and mutated packets from several clients.

A hypothesis ``RuleBasedStateMachine`` drives engine connections (no sockets, a fake
clock) with CONNECTs, PUBLISHes at every QoS, SUBSCRIBEs (wildcards, shared), acks,
garbage and mutated packets, drops, DISCONNECTs and time passing, and checks after every
step that:

- nothing escaped and nothing was logged at ERROR (an internal error is a bug);
- every input our own decoder calls malformed got its answer: the connection is closing,
  with DISCONNECT >= 0x80 first for a connected v5 client;
- packet ids of unfinished deliveries are unique per client (a new PUBLISH never reuses
  an id still awaiting its acknowledgement);
- inflight windows and session queues stay within their limits;
- the trie holds exactly the subscriptions the sessions record;
- nothing is delivered that the ACL refuses.

Bounded: a fixed number of examples and steps (``FUZZ_EXAMPLES`` in the environment
raises it for a long run).
"""

from __future__ import annotations

import logging
import os
from typing import Any

from engine_harness import Harness, Peer
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from midge import hookimpl
from midge.codec import (
    PROTOCOL_5,
    PROTOCOL_311,
    Connect,
    Decoder,
    Disconnect,
    PingReq,
    PubAck,
    PubComp,
    Publish,
    PubRec,
    PubRel,
    RemoteProtocolError,
    Role,
    Subscribe,
    Subscription,
    Unsubscribe,
    Will,
    encode,
)
from midge.config import ListenerSettings

MAX_INFLIGHT = 3
MAX_QUEUED = 6
#: topics and filters drawn from (repeats make the interesting ones likelier: the ACL's
#: secret/ topics, and "#", which reaches them for clients the ACL refuses them to)
TOPICS = ["a", "a/b", "a/b/c", "secret/x", "secret/x", "s/1", "$SYS/x"]
FILTERS = ["a", "a/#", "a/+", "+/b/#", "#", "#", "+/x", "secret/#", "s/+", "$share/g/a/#",
           "$share/g/s/+", "$share/g/#", "$SYS/#"]
CLIENT_IDS = ["p1", "p2", "n1", "n2", ""]
#: a listener without anonymous access: the Acl plugin's votes decide
CLOSED = ListenerSettings(host="127.0.0.1", port=0)


class Acl:
    """Every client may connect; those whose id starts with "n" may not read ``secret/``
    topics (the fuzzer's listener lets nobody in anonymously, so this plugin decides)."""

    @hookimpl
    def on_connect_authenticate(self, client: Any, packet: Connect) -> bool | None:
        return True

    @hookimpl
    def on_acl_check(self, client: Any, topic: str, write: bool) -> bool | None:
        return write or not (client.client_id.startswith("n") and topic.startswith("secret"))


class Errors(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


class Client:
    """What the fuzzer knows about one connection."""

    def __init__(self, peer: Peer, client_id: str, level: int) -> None:
        self.peer = peer
        self.client_id = client_id
        self.level = level
        self.next_id = 1
        #: packet ids of QoS 1/2 deliveries the broker sent and we did not finish
        self.unfinished: dict[int, int] = {}
        #: QoS 2 deliveries the broker released (PUBREL): PUBCOMP is due
        self.released: set[int] = set()
        #: our QoS 2 PUBLISHes awaiting the broker's PUBREC
        self.ours: set[int] = set()

    def packet_id(self) -> int:
        pid = self.next_id
        self.next_id = pid % 65535 + 1
        return pid


#: a rule's pick among the live connections (modulo how many there are)
PICK = st.integers(0, 7)


class EngineFuzz(RuleBasedStateMachine):

    def __init__(self) -> None:
        super().__init__()
        self.errors = Errors()
        logging.getLogger("midge").addHandler(self.errors)
        self.harness = Harness(
            [("acl", Acl())], max_inflight_messages=MAX_INFLIGHT,
            max_queued_messages=MAX_QUEUED, packets_per_turn=3, max_packet_size=4096,
            topic_alias_maximum=2, receive_maximum=4,
        )
        self.live: list[Client] = []
        #: client id -> how far its session queue may exceed ``max_queued_messages``: the
        #: retained messages a SUBSCRIBE asks for are queued beyond the cap, because the
        #: server must send them [MQTT-3.3.1-9] (at most the retained store's size each)
        self.retained_allowance: dict[str, int] = {}

    @initialize(levels=st.lists(st.sampled_from([PROTOCOL_311, PROTOCOL_5]), min_size=4,
                                max_size=4),
                filters=st.lists(st.sampled_from(FILTERS), min_size=4, max_size=4),
                qos=st.lists(st.integers(0, 2), min_size=4, max_size=4))
    def start_clients(self, levels: list[int], filters: list[str], qos: list[int]) -> None:
        """Four connected clients, each with one subscription, to begin with."""
        for index, client_id in enumerate(CLIENT_IDS[:4]):
            self.connect(client_id, levels[index], True, False, 0)
        for index, client in enumerate(self.live):
            self._feed(client, encode(Subscribe(client.packet_id(),
                                                [Subscription(filters[index], qos[index])]),
                                      client.level))

    def teardown(self) -> None:
        logging.getLogger("midge").removeHandler(self.errors)

    # -- reading what the broker wrote ----------------------------------------------------

    def _read(self, client: Client) -> list[Any]:
        packets = client.peer.received()
        answers: list[Any] = []
        for packet in packets:
            if isinstance(packet, Publish):
                if client.client_id.startswith("n"):
                    assert not packet.topic.startswith("secret"), (
                        f"{client.client_id} got {packet.topic} the ACL refuses")
                if packet.qos:
                    if not packet.dup:
                        assert packet.packet_id not in client.unfinished, (
                            f"packet id {packet.packet_id} reused while unfinished")
                    client.unfinished[packet.packet_id] = packet.qos
            elif isinstance(packet, PubRel):
                client.released.add(packet.packet_id)
            elif isinstance(packet, PubRec):
                client.ours.discard(packet.packet_id)
                answers.append(PubRel(packet.packet_id))
        return answers

    def _feed(self, client: Client, data: bytes) -> None:
        peer = client.peer
        if peer.conn.closing:
            return
        peer.feed_raw(data)
        answers = self._read(client)
        if answers and not peer.conn.closing:
            peer.send(*answers)
            self._read(client)

    # -- rules ----------------------------------------------------------------------------

    @rule(client_id=st.sampled_from(CLIENT_IDS),
          level=st.sampled_from([PROTOCOL_311, PROTOCOL_5]), clean=st.booleans(),
          will=st.booleans(), expiry=st.sampled_from([0, 30, 0xFFFFFFFF]))
    def connect(self, client_id: str, level: int, clean: bool, will: bool,
                expiry: int) -> None:
        peer = self.harness.open(CLOSED, level=level)
        props = {0x11: expiry} if level == PROTOCOL_5 and expiry else {}
        connect = Connect(client_id, level, clean_start=clean or not client_id,
                          will=Will("a/will", b"w", 1) if will else None, properties=props)
        client = Client(peer, client_id, level)
        self._feed(client, encode(connect, level))
        if not client.client_id:
            client.client_id = peer.conn.client_id
        self.live.append(client)

    def _pick(self, index: int) -> Client | None:
        """A live connection (closed ones leave the list after every step)."""
        self.live = [c for c in self.live if not c.peer.conn.closing]
        return self.live[index % len(self.live)] if self.live else None

    @rule(pick=PICK, topic=st.sampled_from(TOPICS), qos=st.integers(0, 2),
          retain=st.booleans(), payload=st.binary(max_size=40), count=st.integers(1, 8))
    def publish(self, pick: int, topic: str, qos: int, retain: bool,
                payload: bytes, count: int) -> None:
        """``count`` PUBLISHes in one read (more than one quantum, at times)."""
        client = self._pick(pick)
        if client is None:
            return
        data = b""
        for _ in range(count):
            pid = client.packet_id() if qos else 0
            if qos == 2:
                client.ours.add(pid)
            data += encode(Publish(topic, payload, qos, retain, packet_id=pid), client.level)
        self._feed(client, data)

    @rule(pick=PICK, filters=st.lists(st.sampled_from(FILTERS), min_size=1, max_size=3),
          qos=st.integers(0, 2))
    def subscribe(self, pick: int, filters: list[str], qos: int) -> None:
        client = self._pick(pick)
        if client is None:
            return
        subs = [Subscription(f, qos) for f in filters]
        self.retained_allowance[client.client_id] = (
            self.retained_allowance.get(client.client_id, 0)
            + len(subs) * len(self.harness.engine.router.retained))
        self._feed(client, encode(Subscribe(client.packet_id(), subs), client.level))

    @rule(pick=PICK, filters=st.lists(st.sampled_from(FILTERS), min_size=1, max_size=2))
    def unsubscribe(self, pick: int, filters: list[str]) -> None:
        client = self._pick(pick)
        if client is None:
            return
        self._feed(client, encode(Unsubscribe(client.packet_id(), filters), client.level))

    @rule(pick=PICK, some=st.booleans())
    def acknowledge(self, pick: int, some: bool) -> None:
        """Finish the broker's deliveries (all, or the first only)."""
        client = self._pick(pick)
        if client is None:
            return
        acks: list[Any] = []
        for pid, qos in list(client.unfinished.items()):
            if qos == 1:
                acks.append(PubAck(pid))
                del client.unfinished[pid]
            elif pid in client.released:
                acks.append(PubComp(pid))
                client.released.discard(pid)
                del client.unfinished[pid]
            else:
                acks.append(PubRec(pid))
            if some:
                break
        if acks:
            self._feed(client, b"".join(encode(a, client.level) for a in acks))

    @rule(pick=PICK, topic=st.sampled_from(TOPICS), position=st.integers(0, 200),
          value=st.integers(0, 255), cut=st.integers(0, 3), noise=st.binary(max_size=64))
    def malformed(self, pick: int, topic: str, position: int, value: int,
                  cut: int, noise: bytes) -> None:
        """Random bytes, or a valid PUBLISH or SUBSCRIBE with one byte changed or cut
        short."""
        client = self._pick(pick)
        if client is None:
            return
        if noise:
            self._malformed(client, noise)
            return
        packet = (Publish(topic, b"payload", 1, packet_id=client.packet_id())
                  if position % 2 else
                  Subscribe(client.packet_id(), [Subscription(topic, 1)]))
        data = bytearray(encode(packet, client.level))
        data[position % len(data)] = value
        if cut:
            del data[-cut:]
        self._malformed(client, bytes(data))

    def _malformed(self, client: Client, data: bytes) -> None:
        conn = client.peer.conn
        if conn.closing:
            return
        verdict: RemoteProtocolError | None = None
        if conn.connected and not conn.decoder.buffered:
            decoder = Decoder(Role.SERVER, protocol_level=client.level, max_packet_size=4096)
            decoder.feed(data)
            try:
                while decoder.next_packet() is not None:
                    pass
            except RemoteProtocolError as exc:
                verdict = exc
        v5 = conn.v5
        conn.feed(data)
        while conn.more_input and not conn.closing:
            conn.feed(b"")
        packets = client.peer.received()
        if verdict is not None:
            assert conn.closing, f"malformed input ({verdict}) was not answered"
            if v5:
                codes = [p.reason_code for p in packets if isinstance(p, Disconnect)]
                assert codes and codes[-1] >= 0x80, (verdict, packets)

    @rule(pick=PICK)
    def ping(self, pick: int) -> None:
        client = self._pick(pick)
        if client is None:
            return
        self._feed(client, encode(PingReq(), client.level))

    @rule(pick=PICK, clean=st.booleans())
    def leave(self, pick: int, clean: bool) -> None:
        client = self._pick(pick)
        if client is None:
            return
        if clean:
            self._feed(client, encode(Disconnect(), client.level))
        client.peer.conn.transport_lost("reset" if not clean else "")

    @rule(seconds=st.sampled_from([0.5, 5, 31, 100]))
    def tick(self, seconds: float) -> None:
        self.harness.tick(seconds)
        for client in self.live:
            self._read(client)

    @rule(pick=PICK, stuck=st.integers(0, 2000))
    def socket_backlog(self, pick: int, stuck: int) -> None:
        client = self._pick(pick)
        if client is None:
            return
        client.peer.conn.outbox.report(stuck, 0)  # what its socket has not taken

    # -- invariants -----------------------------------------------------------------------

    @invariant()
    def nothing_logged_at_error(self) -> None:
        assert not self.errors.records, [r.getMessage() for r in self.errors.records]

    @invariant()
    def windows_and_queues_within_limits(self) -> None:
        for client_id, session in self.harness.engine.sessions.items():
            assert len(session.inflight) <= MAX_INFLIGHT
            assert len(session.pending) <= MAX_QUEUED + self.retained_allowance.get(client_id, 0)
            assert len(session.inbound_qos2) <= 4

    @invariant()
    def trie_equals_the_sessions_records(self) -> None:
        engine = self.harness.engine
        recorded = {(cid, f) for cid, s in engine.sessions.items() for f in s.subscriptions}
        assert _trie_entries(engine.router.subscriptions.trie) == recorded
        assert len(engine.router.subscriptions) == len(recorded)


def _trie_entries(trie: Any) -> set[tuple[str, str]]:
    """Every (client id, filter) held in the trie, walked through its nodes."""
    out: set[tuple[str, str]] = set()

    def walk(node: Any, path: list[str]) -> None:
        for cid in node.subs:
            out.add((cid, "/".join(path)))
        for group in node.shared.values():
            for cid in group.members:
                out.add((cid, f"$share/{group.name}/{group.topic_filter}"))
        for level, child in node.children.items():
            walk(child, [*path, level])

    walk(trie._root, [])
    return out


EngineFuzz.TestCase.settings = settings(
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "60")), stateful_step_count=50,
    deadline=None, suppress_health_check=[HealthCheck.too_slow],
)
test_engine_fuzz = EngineFuzz.TestCase
