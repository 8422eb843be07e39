"""midge-auth-allow: a plugin that allows every connection and every topic.

The rule: it votes True on every ``on_connect_authenticate`` and ``on_acl_check``, so any
plugin named before it in the config still decides first. It takes no settings and says
loudly at start that the broker is open; installing it opens nothing until the broker's
config names it (``[plugins.auth_allow]``).
"""

from __future__ import annotations

import logging
from typing import Any

from midge import PluginConfigError, hookimpl

__version__ = "0.1.0"
__all__ = ["AllowPlugin", "__version__"]

log = logging.getLogger("midge.plugins.auth_allow")


class AllowPlugin:
    """Allow every client to connect, publish and subscribe."""

    def __init__(self, config: dict[str, Any]) -> None:
        for key in config:
            raise PluginConfigError(key, "unknown key; auth_allow takes no settings")
        log.warning("auth_allow is active: every client may connect and use every topic")

    @hookimpl
    def on_connect_authenticate(self, client: Any, packet: Any) -> bool:
        return True

    @hookimpl
    def on_acl_check(self, client: Any, topic: str, write: bool) -> bool:
        return True
