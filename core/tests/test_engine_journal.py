"""The journal and held output, without sockets: what a batch holds, what cancels out,
and that held output keeps its order and waits for exactly its commit."""

from __future__ import annotations

from typing import Any

from midge.codec import Property
from midge.engine._journal import Journal
from midge.engine._outbox import Outbox
from midge.hooks import Hooks
from midge.message import Message
from midge.records import DeliveryRecord, decode_delivery, encode_delivery
from midge.session import Outbound, Session
from midge.stats import Stats


class Driver:
    backlog = 0

    def __init__(self) -> None:
        self.flushes = 0

    def schedule_flush(self) -> None:
        self.flushes += 1


def _journal() -> Journal:
    journal = Journal(lambda: 100.0)
    journal.enable(1_000_000.0, True)
    return journal


def test_held_output_keeps_its_order_and_waits_for_its_commit() -> None:
    journal = _journal()
    outbox = Outbox(Driver(), Hooks(), None, Stats())  # type: ignore[arg-type]
    outbox.write(b"a")
    assert outbox.hold(1)
    outbox.write(b"b")
    assert not outbox.hold(2)
    outbox.write(b"c")
    journal.holding.add(outbox)
    assert outbox.take() == (b"a", 1)
    journal.committed_upto(1)
    assert outbox.take() == (b"b", 1)
    assert outbox in journal.holding
    journal.committed_upto(2)
    assert outbox.take() == (b"c", 1)
    assert outbox not in journal.holding
    outbox.write(b"d")  # nothing held any more: straight through
    assert outbox.take() == (b"d", 1)


def test_a_delivery_finished_in_its_own_batch_is_never_written() -> None:
    journal = _journal()
    session = Session("s")
    session.expiry_interval = 60
    journal.track(session, None)
    first = journal.take()
    assert first is not None and list(first.sessions) == ["s"]
    session.online = True
    out = Outbound(Message("t", b"x", 1, created=99.0), 1, False)
    session.enqueue(out)
    assert session.puback(out.packet_id) is out
    batch = journal.take()
    assert batch is not None and len(batch) == 0  # cancelled out, but still a commit
    kept = Outbound(Message("t", b"y", 1, created=99.0), 1, False)
    session.enqueue(kept)
    batch = journal.take()
    assert batch is not None
    [(key, value)] = batch.deliveries.items()
    assert isinstance(value, bytes)  # encoded when the batch was taken
    assert batch.created == {key}
    record = decode_delivery(*key, value)
    assert record.message.payload == b"y"
    assert record.message.created == 1_000_000.0 - 1.0  # wall clock
    assert record.packet_id == kept.packet_id
    session.puback(kept.packet_id)
    batch = journal.take()
    assert batch is not None and list(batch.deliveries.values()) == [None]


def test_a_clean_session_records_nothing() -> None:
    journal = _journal()
    session = Session("clean")
    session.expiry_interval = 0
    journal.track(session, None)
    session.online = True
    session.enqueue(Outbound(Message("t", b"x", 1), 1, False))
    assert journal.take() is None
    assert session.journal is None


def test_a_session_gone_takes_what_its_batch_held() -> None:
    journal = _journal()
    session = Session("g")
    session.expiry_interval = 60
    journal.track(session, None)
    session.enqueue(Outbound(Message("t", b"x", 1), 1, False))
    session.receive_qos2(7)
    journal.session_gone(session)
    batch = journal.take()
    assert batch is not None
    assert batch.cleared == {"g"} and not batch.sessions
    assert not batch.deliveries and not batch.inbound


def test_the_journal_encodes_a_delivery_as_its_record_would_be() -> None:
    # the journal encodes straight from the engine's objects: byte for byte what the
    # record of the same delivery encodes to, in every variant of its fields
    journal = _journal()
    session = Session("e", max_inflight=10)
    session.expiry_interval = 60
    journal.track(session, None)
    session.online = True
    props: dict[int, Any] = {Property.USER_PROPERTY: [("k", "v"), ("k", "v")],
                             Property.MESSAGE_EXPIRY_INTERVAL: 30, Property.CONTENT_TYPE: "b"}
    outs = [
        Outbound(Message("t/1", b"\x00\xff", 1, False, created=99.0), 1, False),
        Outbound(Message("t/2", b"", 2, True, props, "pub", created=98.5), 2, True, (7, 1)),
        Outbound(Message("t/3", b"x" * 300, 1, False, None, "p\u00e9", created=97.0), 1, True),
        Outbound(Message("t/4", b"q", 2, False, created=96.0), 2, False),
    ]
    for out in outs:
        session.enqueue(out)
    for out in outs[1], outs[3]:
        session.pubrec(out.packet_id)  # QoS 2 released: the phase is stored too
    batch = journal.take()
    assert batch is not None
    for out in outs:
        message = out.message
        record = DeliveryRecord("e", out.order, journal.message(message), out.qos,
                                out.retain, out.subscription_ids, out.packet_id,
                                out.released)
        assert batch.deliveries[("e", out.order)] == encode_delivery(record)
    assert outs[1].released and outs[3].released
