"""Log lines that clients cannot forge or inflate: escaping, capping and throttling.

The rule: every client-controlled value (client id, user name, topic, reason string) is
passed through ``safe`` before it reaches a log record, so a ``\\n`` in a client id
cannot start a forged line and a 65,535-byte one costs a few hundred bytes of log; and
every warning a client can cause (refusals, protocol errors, malformed packets, bad
publishes and subscriptions, transport failures) goes through the engine's ``Repeats``,
so a flood of bad clients writes a few lines per message template and a count, not a
line per client. Sans-I/O: the clock is given.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping

#: characters of a client-controlled field kept in a log line; the rest is summarised
FIELD_LIMIT = 128

#: templates a ``Repeats`` tracks at once (they are constants of the code: a few dozen)
MAX_TEMPLATES = 1000

#: where the lines a ``Repeats`` holds back go: per-client events, shown with ``-v``
held_log = logging.getLogger("midge.clients")

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


class _Window:
    __slots__ = ("args", "extra", "passed", "start", "suppressed")

    def __init__(self, start: float) -> None:
        self.start = start
        self.passed = 0
        self.suppressed = 0
        #: the last line held back, for the summary
        self.args: tuple[object, ...] = ()
        self.extra: Mapping[str, object] | None = None


class Repeats:
    """Warnings any client can cause, limited per message template: each template (the
    logger and the format string: "client %s: protocol error: %s" from a thousand
    clients is one) is written ``burst`` times per ``window`` seconds. The lines held
    back go to ``midge.clients`` at INFO (shown with ``-v``) and are counted; when a
    template's window ends (seen by its next line or by ``tick``) one WARNING says
    ``N similar messages suppressed in the last W s; the last: ...``. ``msg`` must be a
    constant of the code, never built from client data (that goes in ``args``).
    """

    __slots__ = ("_clock", "_seen", "burst", "window")

    def __init__(self, clock: Callable[[], float], burst: int = 10,
                 window: float = 60.0) -> None:
        self._clock = clock
        self.burst = burst
        self.window = window
        self._seen: dict[tuple[logging.Logger, str], _Window] = {}

    def warning(self, logger: logging.Logger, msg: str, *args: object,
                extra: Mapping[str, object] | None = None, stacklevel: int = 2) -> None:
        """``logger.warning(msg, *args, extra=extra)`` within the template's budget
        (``stacklevel``: the caller the record names, as ``logging`` counts)."""
        now = self._clock()
        key = (logger, msg)
        seen = self._seen.get(key)
        if seen is not None and now - seen.start >= self.window:
            self._report(key, self._seen.pop(key))
            seen = None
        if seen is None:
            if len(self._seen) >= MAX_TEMPLATES:  # only a misuse gets here: stay bounded
                self.flush()
            seen = self._seen[key] = _Window(now)
        if seen.passed < self.burst:
            seen.passed += 1
            logger.warning(msg, *args, extra=extra, stacklevel=stacklevel)
            return
        seen.suppressed += 1
        seen.args = args
        seen.extra = extra
        held_log.info(msg, *args, extra=extra, stacklevel=stacklevel)

    def tick(self) -> None:
        """Write the summaries of the windows that have ended (called with the engine's
        other deadlines, so a count does not wait for the template's next line)."""
        now = self._clock()
        for key in [key for key, seen in self._seen.items() if now - seen.start >= self.window]:
            self._report(key, self._seen.pop(key))

    def flush(self) -> None:
        """Write every pending summary now, whether its window has ended or not."""
        pending, self._seen = self._seen, {}
        for key, seen in pending.items():
            self._report(key, seen)

    def _report(self, key: tuple[logging.Logger, str], seen: _Window) -> None:
        if not seen.suppressed:
            return
        logger, msg = key
        extra = dict(seen.extra or {})
        extra["suppressed"] = seen.suppressed  # the CLI's rate limit lets it through
        logger.warning("%d similar messages suppressed in the last %d s; the last: %s",
                       seen.suppressed, round(self.window), msg % seen.args, extra=extra)
