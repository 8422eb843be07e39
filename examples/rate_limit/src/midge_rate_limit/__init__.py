"""midge-example-rate-limit: a per-client token bucket on published messages.

The rule: every client id has a bucket of ``burst`` tokens that refills at
``messages_per_second``; each PUBLISH a client sends takes one token, and a PUBLISH that
finds the bucket empty is rejected with reason code 0x97 (Quota exceeded). The broker then
does not route it; a v5 sender gets the reason code in its PUBACK/PUBREC, a v3 sender a
plain acknowledgement (v3 has no way to say no). Inline publishes are not limited.

This package is an example of a third-party plugin: it uses only the public ``midge``
API, and its tests only the ``midge.testing`` fixtures.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from midge import PluginConfigError, ReasonCode, RejectPublish, hookimpl

__version__ = "0.1.0"
__all__ = ["RateLimit", "__version__"]

log = logging.getLogger("midge.plugins.rate_limit")

DEFAULTS: dict[str, float] = {"messages_per_second": 10.0, "burst": 10}


class RateLimit:
    """Reject a client's messages beyond ``burst`` in a row and ``messages_per_second``
    on average.

    ``clock`` (seconds, monotonic) is for tests that need to control time.
    """

    def __init__(self, config: dict[str, Any],
                 clock: Callable[[], float] = time.monotonic) -> None:
        for key in config:
            if key not in DEFAULTS:
                raise PluginConfigError(
                    key, f"unknown key; allowed: {', '.join(sorted(DEFAULTS))}"
                )
        rate = config.get("messages_per_second", DEFAULTS["messages_per_second"])
        if isinstance(rate, bool) or not isinstance(rate, int | float) or not rate > 0:
            raise PluginConfigError("messages_per_second",
                                    f"must be a number greater than 0, not {rate!r}")
        burst = config.get("burst", DEFAULTS["burst"])
        if isinstance(burst, bool) or not isinstance(burst, int) or burst < 1:
            raise PluginConfigError("burst", f"must be an integer of at least 1, not {burst!r}")
        self.rate = float(rate)
        self.burst = burst
        self.clock = clock
        #: messages rejected so far
        self.rejected = 0
        #: client id -> [tokens, time of the last refill]
        self._buckets: dict[str, list[float]] = {}
        self._sweep_at = 1024

    def _take(self, client_id: str) -> bool:
        now = self.clock()
        bucket = self._buckets.get(client_id)
        if bucket is None:
            if len(self._buckets) >= self._sweep_at:
                self._sweep(now)
            bucket = self._buckets[client_id] = [float(self.burst), now]
        else:
            bucket[0] = min(float(self.burst), bucket[0] + (now - bucket[1]) * self.rate)
            bucket[1] = now
        if bucket[0] >= 1.0:
            bucket[0] -= 1.0
            return True
        return False

    def _sweep(self, now: float) -> None:
        """Forget buckets that have refilled (a full bucket is the same as none)."""
        full_after = self.burst / self.rate
        self._buckets = {
            cid: bucket for cid, bucket in self._buckets.items()
            if now - bucket[1] < full_after
        }
        self._sweep_at = max(1024, 2 * len(self._buckets))

    @hookimpl
    def on_publish(self, client: Any, packet: Any) -> Any:
        if not self._take(client.client_id):
            self.rejected += 1
            log.debug("client %s is over its rate: message on %s rejected",
                      client.client_id, packet.topic)
            raise RejectPublish(ReasonCode.QUOTA_EXCEEDED, "rate limit exceeded")
        return packet
