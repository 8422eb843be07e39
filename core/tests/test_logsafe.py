"""midge.logsafe: client-controlled fields made fit for one log line, and the per-template
limit on the warnings clients cause."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from midge.logsafe import FIELD_LIMIT, MAX_TEMPLATES, Repeats, safe


def test_plain_text_is_left_alone() -> None:
    assert safe("sensor-17/temp") == "sensor-17/temp"
    assert safe("température") == "température"


def test_control_and_separator_characters_are_escaped() -> None:
    assert safe("a\nb\rc\td") == "a\\nb\\rc\\td"
    assert safe("\x1b[31mred") == "\\x1b[31mred"
    assert safe("line\u2028break\x85") == "line\\u2028break\\x85"
    assert "\n" not in safe("x\n2026-12-01 INFO forged")


def test_a_backslash_is_doubled_so_escapes_cannot_be_faked() -> None:
    assert safe("a\\nb") == "a\\\\nb"
    assert safe("a\\nb") != safe("a\nb")


def test_long_values_are_cut_and_say_their_length() -> None:
    text = safe("c" * 65_535)
    assert text.startswith("c" * FIELD_LIMIT) and text.endswith("...(65535 characters)")
    assert len(text) < FIELD_LIMIT + 32
    assert safe("\n" * 1000, 10) == "\\n" * 10 + "...(1000 characters)"


def test_non_strings_are_converted() -> None:
    assert safe(ValueError("bad\nthing")) == "bad\\nthing"
    assert safe(None) == "None"


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def collect() -> Iterator[Collect]:
    handler = Collect()
    logger = logging.getLogger("midge")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def test_repeats_lets_a_burst_per_template_through_then_counts(collect: Collect) -> None:
    now = [0.0]
    repeats = Repeats(lambda: now[0], burst=3, window=10)
    log = logging.getLogger("midge.test-repeats")
    for n in range(5):
        repeats.warning(log, "client %s: protocol error: %s", f'"c{n}"', "bad",
                        extra={"client_id": f"c{n}"})
    repeats.warning(log, "another template %d", 1)
    shown = [(r.name, r.levelname, r.getMessage()) for r in collect.records]
    assert shown == [
        ("midge.test-repeats", "WARNING", 'client "c0": protocol error: bad'),
        ("midge.test-repeats", "WARNING", 'client "c1": protocol error: bad'),
        ("midge.test-repeats", "WARNING", 'client "c2": protocol error: bad'),
        # held back: per-client events, shown with -v
        ("midge.clients", "INFO", 'client "c3": protocol error: bad'),
        ("midge.clients", "INFO", 'client "c4": protocol error: bad'),
        ("midge.test-repeats", "WARNING", "another template 1"),
    ]
    assert collect.records[0].funcName == (
        "test_repeats_lets_a_burst_per_template_through_then_counts")  # the caller, named
    now[0] = 9.9
    repeats.tick()
    assert len(collect.records) == 6
    now[0] = 10.0
    repeats.tick()
    summary = collect.records[-1]
    assert (summary.name, summary.levelname) == ("midge.test-repeats", "WARNING")
    assert summary.getMessage() == ('2 similar messages suppressed in the last 10 s; the last: '
                                    'client "c4": protocol error: bad')
    assert summary.suppressed == 2  # type: ignore[attr-defined]
    assert summary.client_id == "c4"  # type: ignore[attr-defined]
    assert len(collect.records) == 7  # "another template" held nothing back: no summary
    repeats.warning(log, "client %s: protocol error: %s", '"again"', "bad")
    assert collect.records[-1].levelname == "WARNING"


def test_repeats_reports_a_window_at_the_templates_next_line(collect: Collect) -> None:
    now = [0.0]
    repeats = Repeats(lambda: now[0], burst=1, window=60)
    log = logging.getLogger("midge.test-repeats")
    for n in range(4):
        repeats.warning(log, "lost %d", n)
    now[0] = 61.0
    repeats.warning(log, "lost %d", 99)
    assert [r.getMessage() for r in collect.records if r.levelno == logging.WARNING] == [
        "lost 0", "3 similar messages suppressed in the last 60 s; the last: lost 3", "lost 99"]


def test_repeats_flush_reports_what_is_pending(collect: Collect) -> None:
    repeats = Repeats(lambda: 0.0, burst=0)
    log = logging.getLogger("midge.test-repeats")
    repeats.warning(log, "a %s", "x")
    repeats.warning(log, "b %s", "y")
    repeats.flush()
    repeats.flush()
    assert [r.getMessage() for r in collect.records if r.levelno == logging.WARNING] == [
        "1 similar messages suppressed in the last 60 s; the last: a x",
        "1 similar messages suppressed in the last 60 s; the last: b y"]


def test_repeats_stays_bounded_when_misused(collect: Collect) -> None:
    repeats = Repeats(lambda: 0.0, burst=1)
    log = logging.getLogger("midge.test-repeats")
    for n in range(MAX_TEMPLATES * 3):
        repeats.warning(log, f"built from data {n}")  # not a constant template
    assert len(repeats._seen) <= MAX_TEMPLATES
