"""``python -m midge_auth_ledger``: the password hasher (``midge passwd``) until the
``midge`` command grows a subcommand for it."""

from __future__ import annotations

import sys

from ._cli import main

sys.exit(main())
