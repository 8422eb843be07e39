"""midge.logsafe: client-controlled fields made fit for one log line, and throttling."""

from __future__ import annotations

from midge.logsafe import FIELD_LIMIT, Throttle, safe


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


def test_the_throttle_lets_a_burst_through_then_counts() -> None:
    now = [0.0]
    throttle = Throttle(lambda: now[0], burst=3, period=10)
    assert [throttle.allow() for _ in range(5)] == [True, True, True, False, False]
    assert throttle.suppressed == 2
    now[0] = 10.0
    assert throttle.allow()
    assert throttle.take_suppressed() == " (2 similar lines suppressed)"
    assert throttle.take_suppressed() == ""
