"""midge.engine: the sans-I/O broker, one public façade over small private modules.

The rule: the engine never imports an event loop, a socket, the shell (``broker``),
``listeners`` or ``inline``; it is told bytes (``Connection.feed``), time
(``Engine.tick``) and the answers to what it asked (``Connection.answer``), and it
answers with bytes in each connection's outbox. Its pieces: ``_state`` (the lifecycle
table), ``_outbox`` (framing per client), ``_connection`` (decode and dispatch),
``_ask`` (decisions to await), ``_access`` (ACL and topic limits), ``_router``
(subscriptions, retained messages, delivery), ``_sessions`` (the registry, wills,
expiry), ``_connect``, ``_publish`` and ``_subscribe`` (the packet flows), ``_engine``
(the wiring).
"""

from __future__ import annotations

from ._ask import Ask, wait_for
from ._connection import Connection
from ._engine import KEEPALIVE_GRACE, Engine
from ._outbox import Driver, Outbox
from ._router import Sink
from ._state import ALLOWED, State

__all__ = [
    "ALLOWED", "KEEPALIVE_GRACE", "Ask", "Connection", "Driver", "Engine", "Outbox", "Sink",
    "State", "wait_for",
]
