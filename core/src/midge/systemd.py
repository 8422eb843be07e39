"""systemd's notify protocol: tell the service manager when midge is ready, reloading or
stopping (``Type=notify``), by a datagram on ``$NOTIFY_SOCKET``.

The rule: without ``$NOTIFY_SOCKET`` this does nothing, and a socket that cannot be
reached is logged once and never stops the broker. Only the CLI uses it: an embedding
program owns its own service state.
"""

from __future__ import annotations

import logging
import os
import socket
import time

log = logging.getLogger("midge")


class Notifier:
    """Sends ``READY=1``, ``RELOADING=1``, ``STOPPING=1`` and ``STATUS=...`` lines."""

    def __init__(self, address: str | None = None) -> None:
        address = os.environ.get("NOTIFY_SOCKET") if address is None else address
        self.address: str | None = address or None
        if self.address is not None and self.address.startswith("@"):
            # an abstract socket: its name starts with a NUL byte
            self.address = "\0" + self.address[1:]
        self._failed = False

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, *lines: str) -> bool:
        """Send one notification (several ``KEY=value`` lines); False when it failed."""
        if self.address is None:
            return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.sendto("\n".join(lines).encode(), self.address)
        except OSError as exc:
            if not self._failed:
                self._failed = True
                log.warning("cannot notify systemd on %s: %s",
                            os.environ.get("NOTIFY_SOCKET"), exc.strerror or exc)
            return False
        return True

    def ready(self, status: str = "") -> bool:
        return self.send("READY=1", *([f"STATUS={status}"] if status else []))

    def reloading(self) -> bool:
        # MONOTONIC_USEC lets systemd (253 and later) match the reload to its READY=1
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.send("RELOADING=1", f"MONOTONIC_USEC={usec}")

    def stopping(self) -> bool:
        return self.send("STOPPING=1")
