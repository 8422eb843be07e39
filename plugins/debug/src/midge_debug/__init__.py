"""midge-debug: log every MQTT packet a midge broker reads and sends.

The rule: ``DebugPlugin`` is the ``midge.plugins`` entry point and the only public name;
payloads are hidden and credentials redacted unless the config says otherwise.
"""

from __future__ import annotations

from ._plugin import DebugPlugin

__version__ = "0.1.0"
__all__ = ["DebugPlugin", "__version__"]
