"""Network listeners: they accept transports and drive the engine's connections.

The rule: a listener only moves bytes. It asks the ``Acceptor`` for a Connection (one
place for admission), feeds it what it reads, writes what its outbox holds, and awaits
the decisions the engine asks for (``settle``); protocol decisions live in the engine.
Adding a transport is one module with a ``bind`` function plus its entry in
``REGISTRY``, keyed by the configuration's listener ``type``.
"""

from __future__ import annotations

from ._base import Acceptor, Bind, Listener, Opener, settle
from .http import bind as bind_http
from .tcp import bind as bind_tcp
from .tls import bind as bind_tls
from .unix import bind as bind_unix
from .ws import bind as bind_ws

#: listener type (the configuration's ``type``) -> how to bind one
REGISTRY: dict[str, Bind] = {
    "tcp": bind_tcp,
    "tls": bind_tls,
    "ws": bind_ws,
    "wss": bind_ws,
    "unix": bind_unix,
    "http": bind_http,
}

__all__ = ["REGISTRY", "Acceptor", "Bind", "Listener", "Opener", "settle"]
