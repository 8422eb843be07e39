"""Log output for operators: one JSON object per line, and a limit on repeated warnings.

The rule: a flood of misbehaving clients must not flood the log. Records that repeat the
same message template (the same logger, level and format string: "client %s: protocol
error: %s" from a thousand clients is one template) pass ``burst`` times per ``window``
seconds; the rest are counted, and when the window ends (noticed by the next record or by
``tick``) a line says how many similar messages were suppressed, quoting the last one.
Errors and anything above pass always. Structured fields a record carries (``client_id``,
``listener``, ``address``, from ``extra=``) become JSON fields of their own.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

#: record attributes written as JSON fields when a log call gave them (``extra=``)
FIELDS = ("client_id", "listener", "address")


class JsonFormatter(logging.Formatter):
    """One JSON object per log line: time, level, logger, message, and the client's
    id, listener and address when the line is about a client."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                entry[name] = value
        suppressed = getattr(record, "suppressed", None)
        if suppressed is not None:
            entry["suppressed"] = suppressed
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


class _Seen:
    __slots__ = ("last", "passed", "start", "suppressed")

    def __init__(self, start: float) -> None:
        self.start = start
        self.passed = 0
        self.suppressed = 0
        self.last: logging.LogRecord | None = None


class RateLimit(logging.Filter):
    """Let each WARNING template through ``burst`` times per ``window`` seconds; count
    the rest and report them on the next line after the window. Other levels pass: what
    ``-v`` and ``--trace`` ask for (every client's events, every packet) is shown whole,
    and errors always are.

    Attach it to a handler (``handler.addFilter(RateLimit())``): it sees every record
    that reaches that handler, whichever logger made it. ``flush_suppressed`` writes the
    pending reports (at shutdown).
    """

    def __init__(self, burst: int = 10, window: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.burst = burst
        self.window = window
        self._clock = clock
        self._seen: dict[tuple[str, int, str], _Seen] = {}
        #: where reports go (set by ``attach``)
        self._handler: logging.Handler | None = None
        # records may come from several threads (an embedding program's, a portal's)
        self._lock = threading.Lock()

    def attach(self, handler: logging.Handler) -> RateLimit:
        handler.addFilter(self)
        self._handler = handler
        return self

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.WARNING or getattr(record, "suppressed", None) is not None:
            return True
        now = self._clock()
        self.tick(now)
        key = (record.name, record.levelno, str(record.msg))
        with self._lock:
            seen = self._seen.get(key)
            if seen is None:
                if len(self._seen) > 10_000:  # bounded: forget the oldest templates
                    for old in list(self._seen)[:5000]:
                        self._seen.pop(old)
                seen = self._seen[key] = _Seen(now)
            if seen.passed < self.burst:
                seen.passed += 1
                return True
            seen.suppressed += 1
            seen.last = record
            return False

    def tick(self, now: float | None = None) -> None:
        """Report the windows that ended by ``now`` (the CLI calls this every few
        seconds, so a report does not wait for the next log line)."""
        now = self._clock() if now is None else now
        with self._lock:
            expired = [key for key, seen in self._seen.items()
                       if now - seen.start >= self.window]
            ended = [self._seen.pop(key) for key in expired]
        for seen in ended:
            if seen.suppressed:
                self._report(seen)

    def _report(self, seen: _Seen) -> None:
        last = seen.last
        if last is None or self._handler is None:
            return
        report = logging.LogRecord(
            last.name, last.levelno, last.pathname, last.lineno,
            "%d similar messages suppressed in the last %d s; the last: %s",
            (seen.suppressed, round(self.window), last.getMessage()), None,
        )
        report.suppressed = seen.suppressed
        for name in FIELDS:
            if hasattr(last, name):
                setattr(report, name, getattr(last, name))
        self._handler.handle(report)

    def flush_suppressed(self) -> None:
        """Report every count still pending (the process is stopping)."""
        with self._lock:
            seen_all, self._seen = self._seen, {}
        for seen in seen_all.values():
            if seen.suppressed:
                self._report(seen)
