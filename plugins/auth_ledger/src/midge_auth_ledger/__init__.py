"""midge-auth-ledger: authentication and ACLs for midge from a ledger of users and rules.

The rule: the public names are ``LedgerPlugin`` (the ``midge.plugins`` entry point),
``hash_password`` and ``main`` (for ``midge passwd``); everything in the underscore
modules is internal. ``LedgerPlugin`` is loaded lazily so that the pure rule, hashing and
Mosquitto-file modules import without the broker.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._cli import main
from ._hashing import hash_password

__version__ = "0.1.0"
__all__ = ["LedgerPlugin", "__version__", "hash_password", "main"]

if TYPE_CHECKING:
    from ._plugin import LedgerPlugin


def __getattr__(name: str) -> Any:
    if name == "LedgerPlugin":
        from ._plugin import LedgerPlugin

        return LedgerPlugin
    raise AttributeError(f"module 'midge_auth_ledger' has no attribute {name!r}")
