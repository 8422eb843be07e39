"""A flood of bad clients writes a bounded log: a few WARNING lines per message template
and a count of the rest, whatever the number of clients. A real broker, real sockets;
the limiter's clock is the test's, so the end of a window needs no waiting."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator

import pytest
from conftest import RawClient, RunningBroker

from midge.codec import ConnAck, PubAck, Publish, encode
from midge.codec import Connect as ConnectPacket
from midge.logsafe import Repeats

#: bad clients of each kind
EACH = 125
BURST = 10


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def warnings(self) -> list[logging.LogRecord]:
        return [r for r in self.records if r.levelno == logging.WARNING]


@pytest.fixture
def collect() -> Iterator[Collect]:
    handler = Collect()
    logger = logging.getLogger("midge")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def protocol_error_after_connect(port: int, n: int) -> None:
    raw = RawClient(port)
    assert raw.connect(f"bad-{n}") == ConnAck(0)
    raw.send(b"\x00\x00")  # packet type 0 is reserved
    assert raw.closed()
    raw.close()


def no_connect_first(port: int, n: int) -> None:
    raw = RawClient(port)
    raw.send(Publish("a/b", b"x", 0), 4)
    assert raw.closed()
    raw.close()


def publish_to_sys(port: int, n: int) -> None:
    raw = RawClient(port)
    assert raw.connect(f"sys-{n}") == ConnAck(0)
    raw.send(Publish("$SYS/forged", b"x", 1, packet_id=1))
    assert raw.recv() == PubAck(1)  # 3.1.1 has no refusal code: acknowledged, dropped
    raw.close()


def cut_mid_packet(port: int, n: int) -> None:
    raw = RawClient(port)
    assert raw.connect(f"cut-{n}") == ConnAck(0)
    raw.send(encode(Publish("a/b", b"x" * 100, 0), 4)[:20])
    raw.close()


KINDS: list[Callable[[int, int], None]] = [
    protocol_error_after_connect, no_connect_first, publish_to_sys, cut_mid_packet,
]


def wait_for(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the broker did not log every bad client"
        time.sleep(0.02)


def test_a_flood_of_bad_clients_writes_a_few_lines_and_counts(
        broker_factory: Callable[..., RunningBroker], collect: Collect) -> None:
    running = broker_factory()
    clock = Clock()
    limiter = Repeats(clock, burst=BURST, window=60)
    running.call(setattr, running.broker.engine, "warnings", limiter)
    for kind in KINDS:
        for n in range(EACH):
            kind(running.port, n)
    flood = EACH * len(KINDS)

    def held() -> list[logging.LogRecord]:
        # the warnings held back: at INFO on midge.clients, with the same templates
        templates = {w.msg for w in collect.warnings()}
        return [r for r in collect.records if r.name == "midge.clients"
                and r.levelno == logging.INFO and r.msg in templates]

    wait_for(lambda: len(collect.warnings()) + len(held()) >= flood)
    warnings = collect.warnings()
    # three templates: protocol error (two kinds), publish to $SYS, cut mid-packet
    assert len(warnings) == 3 * BURST, [w.getMessage() for w in warnings]
    assert len(held()) == flood - 3 * BURST

    # the first occurrences name the client, by id or by address, with its fields
    messages = [w.getMessage() for w in warnings]
    assert messages[0].startswith('client "bad-0": protocol error: packet type 0 is reserved')
    assert warnings[0].client_id == "bad-0"  # type: ignore[attr-defined]
    assert 'client "sys-0" may not publish to $SYS/forged; dropped' in messages
    assert any(m.startswith('client "cut-0": connection closed in the middle of a packet')
               for m in messages)
    # -v shows the ones held back, each with its client
    assert any(r.getMessage().startswith("client <127.0.0.1:") for r in held())
    assert f'client "sys-{EACH - 1}" may not publish to $SYS/forged; dropped' in [
        r.getMessage() for r in held()]

    clock.now = 59.0
    running.call(limiter.tick)
    assert len(collect.warnings()) == 3 * BURST  # the window has not ended
    clock.now = 60.0
    running.call(limiter.tick)
    summaries = collect.warnings()[3 * BURST:]
    by_count = sorted((getattr(s, "suppressed", None), s.getMessage()) for s in summaries)
    assert [count for count, _ in by_count] == [EACH - BURST, EACH - BURST,
                                                2 * EACH - BURST]
    sys_line = next(m for _, m in by_count if "$SYS" in m)
    assert sys_line == (f"{EACH - BURST} similar messages suppressed in the last 60 s; "
                        f'the last: client "sys-{EACH - 1}" may not publish to $SYS/forged; '
                        "dropped")
    protocol_line = by_count[-1][1]
    assert protocol_line.startswith(f"{2 * EACH - BURST} similar messages suppressed in the "
                                    "last 60 s; the last: client <127.0.0.1:")
    assert "the first packet must be CONNECT, not PUBLISH" in protocol_line

    # a new window: the template is written again, and nothing is left to report
    protocol_error_after_connect(running.port, 1000)
    wait_for(lambda: len(collect.warnings()) == 3 * BURST + 4)
    assert collect.warnings()[-1].getMessage().startswith('client "bad-1000": protocol error')
    running.call(limiter.flush)
    assert len(collect.warnings()) == 3 * BURST + 4


def test_the_engine_writes_the_counts_with_its_deadlines(
        broker_factory: Callable[..., RunningBroker], collect: Collect) -> None:
    running = broker_factory()
    clock = Clock()
    running.call(setattr, running.broker.engine, "warnings", Repeats(clock, burst=2))
    for n in range(5):
        publish_to_sys(running.port, n)
    wait_for(lambda: len([r for r in collect.records if "$SYS" in r.getMessage()]) == 5)
    clock.now = 61.0
    # the broker's own sweep calls engine.tick every second or so
    wait_for(lambda: any(getattr(r, "suppressed", None) == 3 for r in collect.records))
    summary = next(r for r in collect.records if getattr(r, "suppressed", None) == 3)
    assert summary.levelno == logging.WARNING
    assert summary.getMessage() == (
        '3 similar messages suppressed in the last 60 s; the last: client "sys-4" may not '
        "publish to $SYS/forged; dropped")
    assert summary.client_id == "sys-4"  # type: ignore[attr-defined]


def test_bad_connects_are_refused_with_a_bounded_log(
        broker_factory: Callable[..., RunningBroker], collect: Collect) -> None:
    running = broker_factory(allow_anonymous=False)
    clock = Clock()
    running.call(setattr, running.broker.engine, "warnings", Repeats(clock, burst=BURST))
    for n in range(60):
        raw = RawClient(running.port)
        raw.send(ConnectPacket(f"nobody-{n}", 4), 4)
        assert raw.recv() == ConnAck(5)
        raw.close()

    def refused() -> list[logging.LogRecord]:
        return [r for r in collect.records if r.getMessage().startswith('client "nobody-')]

    wait_for(lambda: len(refused()) >= 60)
    refusals = [r.getMessage() for r in refused() if r.levelno == logging.WARNING]
    assert len(refusals) == BURST
    assert refusals[0].startswith('client "nobody-0" from 127.0.0.1:')
    assert refusals[0].endswith(" refused: not authorized (CONNACK return code 5)")
    clock.now = 60.0
    running.call(running.broker.engine.warnings.tick)
    assert collect.warnings()[-1].getMessage().startswith(
        f"{60 - BURST} similar messages suppressed in the last 60 s; the last: "
        'client "nobody-59" from 127.0.0.1:')
