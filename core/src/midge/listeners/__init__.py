"""Network listeners: they accept connections and drive ``Connection`` objects.

The rule: a listener only moves bytes. It feeds what it reads to ``Connection.feed`` and
writes what ``Connection.take_output`` returns; protocol decisions live elsewhere.
"""

from __future__ import annotations

from .tcp import bind_tcp

__all__ = ["bind_tcp"]
