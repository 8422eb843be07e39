"""Log lines that clients cannot forge or inflate: escaping, capping and throttling.

The rule: every client-controlled value (client id, user name, topic, reason string) is
passed through ``safe`` before it reaches a log record, so a ``\\n`` in a client id
cannot start a forged line and a 65,535-byte one costs a few hundred bytes of log; and
log lines a stranger can cause before logging in (refusals, protocol errors) go through
a ``Throttle``, so a flood of bad attempts cannot flood the log. Sans-I/O: the clock is
given.
"""

from __future__ import annotations

import json
from collections.abc import Callable

#: characters of a client-controlled field kept in a log line; the rest is summarised
FIELD_LIMIT = 128

_ESCAPES = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(char: str) -> str:
    if char in _ESCAPES:
        return _ESCAPES[char]
    if char.isprintable():
        return char
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def quoted(client_id: str, limit: int = FIELD_LIMIT) -> str:
    """A client id for a log line: in double quotes (an id may hold spaces, or be a word
    like "client"), with quotes and control characters escaped and the length capped, so
    that no id reads as part of the sentence or forges a line."""
    if len(client_id) <= limit:
        return json.dumps(client_id, ensure_ascii=False)
    return f"{json.dumps(client_id[:limit], ensure_ascii=False)}...({len(client_id)} characters)"


def safe(value: object, limit: int = FIELD_LIMIT) -> str:
    """``value`` as text fit for one log line: control and other non-printable
    characters (``\\n``, ``\\r``, ESC, U+2028 ...) escaped, a backslash doubled, and
    at most ``limit`` characters of it kept, the cut said with the full length."""
    text = value if isinstance(value, str) else str(value)
    if len(text) <= limit and text.isprintable() and "\\" not in text:
        return text  # the common case: nothing to do
    cut = len(text) > limit
    escaped = "".join(_escape(char) for char in (text[:limit] if cut else text))
    if cut:
        return f"{escaped}...({len(text)} characters)"
    return escaped


class Throttle:
    """At most ``burst`` log lines per ``period`` seconds; the ones held back are
    counted, and the next line let through says how many there were."""

    __slots__ = ("_burst", "_clock", "_count", "_period", "_start", "suppressed")

    def __init__(self, clock: Callable[[], float], burst: int = 20,
                 period: float = 10.0) -> None:
        self._clock = clock
        self._burst = burst
        self._period = period
        self._start = clock()
        self._count = 0
        #: lines held back since the last one let through
        self.suppressed = 0

    def allow(self) -> bool:
        """True when a line may be written now (read ``take_suppressed`` for it)."""
        now = self._clock()
        if now - self._start >= self._period:
            self._start = now
            self._count = 0
        if self._count < self._burst:
            self._count += 1
            return True
        self.suppressed += 1
        return False

    def take_suppressed(self) -> str:
        """A note for the line let through, like ``" (12 similar lines suppressed)"``
        (empty when none were), and reset the count."""
        count, self.suppressed = self.suppressed, 0
        return f" ({count} similar lines suppressed)" if count else ""
