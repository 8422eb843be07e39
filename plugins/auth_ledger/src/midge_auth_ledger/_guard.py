"""Password hashing that strangers cannot turn against the broker: a fair, bounded gate
and a short ban for addresses that keep failing.

The rule: a slow hash runs only through ``HashGate.run``. At most ``workers`` hashes run
at once, at most ``per_address`` of them for one source address, and one worker (of two
or more) only for unsuspicious addresses (no recent failed logins, no more attempts
under way than their share), whose hashes also run at normal priority while the
suspicious ones' run at a lower one; waiting attempts
are served by address: first the addresses with the fewest recent failed logins, then
the ones with the fewest attempts waiting, and among equals round-robin, so a thousand
attempts from failing addresses cost a legitimate client from elsewhere its own hash's
time, not a thousand hashes. An attempt that waits longer than ``queue_timeout``
(or finds ``max_waiting`` attempts already waiting) is ``Busy``; one whose connection
closed while it waited is never hashed. ``Failures`` counts failed logins per address in
a sliding window: each one makes the address's next attempt wait longer (the answer to a
failure is delayed while the address keeps its turn), and ``max_failures`` of them ban
the address for ``ban_seconds``; its table is bounded.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import anyio
import anyio.from_thread
import anyio.lowlevel
import anyio.to_thread

#: the nice value of the threads that hash for addresses with recent failures: the
#: CPU goes to legitimate logins and to the event loop first
LOW_PRIORITY = 10


def _lower_priority() -> None:
    # Linux schedules threads as tasks: this lowers one thread, not the process (on
    # other systems the call could name another process, so it is not made)
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), LOW_PRIORITY)


class Busy(Exception):
    """The attempt could not get a hashing slot in time (answered 0x89 Server busy)."""


class _Waiter:
    __slots__ = ("event", "granted")

    def __init__(self) -> None:
        self.event = anyio.Event()
        self.granted = False


class HashGate:
    """Runs slow functions in worker threads, fairly across source addresses."""

    def __init__(self, workers: int, per_address: int, queue_timeout: float,
                 max_waiting: int, standing: Callable[[str], int] = lambda _: 0) -> None:
        self.workers = workers
        #: an address's recent failures: fewer go first
        self._standing = standing
        self.per_address = per_address
        self.queue_timeout = queue_timeout
        self.max_waiting = max_waiting
        self._free = workers
        #: workers kept for addresses without recent failures: a legitimate login never
        #: waits for an attacker's hash to finish
        self._reserve = 1 if workers > 1 else 0
        self._running: dict[str, int] = {}
        #: address -> its waiting attempts; the dict's order is the round-robin order
        self._waiting: OrderedDict[str, deque[_Waiter]] = OrderedDict()
        self._count = 0
        self._limiter = anyio.CapacityLimiter(workers)
        #: threads for addresses with recent failures, at a lower CPU priority
        self._low = ThreadPoolExecutor(max_workers=workers, initializer=_lower_priority,
                                       thread_name_prefix="midge-auth-ledger-hash")
        #: attempts not hashed because their connection had gone
        self.skipped = 0
        #: attempts answered Busy
        self.busy = 0

    @property
    def waiting(self) -> int:
        return self._count

    async def run(self, address: str, gone: Callable[[], bool],
                  func: Callable[..., Any], *args: Any,
                  hold: Callable[[Any], float] | None = None) -> tuple[bool, Any]:
        """``(True, func(*args))`` run in a worker thread once a slot is free, or
        ``(False, None)`` when the connection went away first. Raises ``Busy``.

        ``hold(result)`` is how many seconds the address keeps its turn after the
        worker is free again (a failed login's delay): its next attempt waits that
        long, while other addresses use the worker."""
        if not self._startable(address) or self._waiting:
            await self._wait(address)
        else:
            self._take(address)
        worker = True
        try:
            if gone():
                self.skipped += 1
                return False, None
            if self._suspect(address, 0):
                result = await self._run_low(func, *args)
            else:
                result = await anyio.to_thread.run_sync(func, *args, limiter=self._limiter)
            delay = hold(result) if hold is not None else 0.0
            if delay > 0:
                worker = False
                self._free += 1
                self._dispatch()
                await anyio.sleep(delay)
            return True, result
        finally:
            self._release(address, worker)

    async def _run_low(self, func: Callable[..., Any], *args: Any) -> Any:
        """``func(*args)`` in a low-priority thread, awaited without blocking the loop."""
        token = anyio.lowlevel.current_token()
        loop_thread = threading.get_ident()
        done = anyio.Event()

        def finished(_: Future[Any]) -> None:
            if threading.get_ident() == loop_thread:
                done.set()
                return
            with contextlib.suppress(RuntimeError):  # the loop is gone: nobody waits
                anyio.from_thread.run_sync(done.set, token=token)

        future = self._low.submit(func, *args)
        future.add_done_callback(finished)
        await done.wait()
        return future.result()

    def close(self) -> None:
        """Stop the low-priority threads once their work is done."""
        self._low.shutdown(wait=False, cancel_futures=True)

    def _suspect(self, address: str, waiting: int) -> bool:
        """An address with recent failures, or more attempts under way than its share
        (``waiting`` of them queued): the reserved worker and normal priority are not
        for it."""
        queue = self._waiting.get(address)
        under_way = self._running.get(address, 0) + (len(queue) if queue else 0) + waiting
        return bool(self._standing(address)) or under_way > self.per_address

    def _startable(self, address: str) -> bool:
        free = self._free - (self._reserve if self._suspect(address, 1) else 0)
        return free > 0 and self._running.get(address, 0) < self.per_address

    def _take(self, address: str) -> None:
        self._free -= 1
        self._running[address] = self._running.get(address, 0) + 1

    async def _wait(self, address: str) -> None:
        if self._count >= self.max_waiting:
            self.busy += 1
            raise Busy(f"{self._count} login attempts are already waiting to be hashed")
        waiter = _Waiter()
        queue = self._waiting.get(address)
        if queue is None:
            queue = self._waiting[address] = deque()
        queue.append(waiter)
        self._count += 1
        self._dispatch()
        with anyio.move_on_after(self.queue_timeout):
            await waiter.event.wait()
        if waiter.granted:
            return  # the slot is ours, even if the deadline struck at the same moment
        queue.remove(waiter)
        self._count -= 1
        if not queue and self._waiting.get(address) is queue:
            del self._waiting[address]
        self.busy += 1
        raise Busy(f"no hashing slot within {self.queue_timeout} s")

    def _release(self, address: str, worker: bool = True) -> None:
        if worker:
            self._free += 1
        left = self._running.get(address, 0) - 1
        if left > 0:
            self._running[address] = left
        else:
            self._running.pop(address, None)
        self._dispatch()

    def _dispatch(self) -> None:
        """Give free slots to waiting attempts: the address with the fewest recent
        failures first, equals in turn."""
        standing = self._standing
        while self._free > 0 and self._waiting:
            best: tuple[tuple[int, int], str, deque[_Waiter]] | None = None
            for address, queue in self._waiting.items():
                if self._running.get(address, 0) >= self.per_address:
                    continue
                # fewest recent failures first; among those the address asking least
                rank = (standing(address), len(queue))
                if best is None or rank < best[0]:
                    best = (rank, address, queue)
                    if rank == (0, 1):
                        break  # none can do better; the first in turn
            if best is None:
                return  # every waiting address already has its share running
            _, address, queue = best
            if self._free <= self._reserve and self._suspect(address, 0):
                return  # the last worker is kept for an address without failures
            waiter = queue.popleft()
            self._count -= 1
            del self._waiting[address]
            if queue:
                self._waiting[address] = queue  # to the back of the round
            self._take(address)
            waiter.granted = True
            waiter.event.set()


class Failures:
    """Failed logins per source address, and the addresses banned for them."""

    def __init__(self, max_failures: int, window: float, ban_seconds: float,
                 base_delay: float = 0.0, clock: Callable[[], float] = time.monotonic,
                 max_addresses: int = 100_000) -> None:
        self.max_failures = max_failures
        self.base_delay = base_delay
        self.window = window
        self.ban_seconds = ban_seconds
        self._clock = clock
        self._max_addresses = max_addresses
        #: address -> times of its recent failures (oldest first)
        self._recent: OrderedDict[str, deque[float]] = OrderedDict()
        #: address -> when its ban ends
        self._banned: dict[str, float] = {}
        #: counters for metrics
        self.failures = 0
        self.bans = 0
        self.refused = 0

    def delay(self, address: str) -> float:
        """How long a failed login from ``address`` is answered late: ``base_delay``
        doubled with each recent failure, at most 16 times it."""
        count = self.recent(address)
        if not count or not self.base_delay:
            return 0.0
        return float(self.base_delay * min(16, 2 ** (count - 1)))

    def recent(self, address: str) -> int:
        """Failed logins from ``address`` in the current window (about: the oldest may
        have just left it)."""
        recent = self._recent.get(address)
        return len(recent) if recent is not None else 0

    def banned(self, address: str) -> bool:
        """True while ``address`` is banned (and counts the refusal)."""
        until = self._banned.get(address)
        if until is None:
            return False
        if self._clock() >= until:
            del self._banned[address]
            return False
        self.refused += 1
        return True

    def failed(self, address: str) -> bool:
        """Record a failed login; True when it just got the address banned."""
        self.failures += 1
        now = self._clock()
        recent = self._recent.get(address)
        if recent is None:
            recent = self._recent[address] = deque()
            while len(self._recent) > self._max_addresses:
                self._recent.popitem(last=False)  # the least recently failing address
        else:
            self._recent.move_to_end(address)
        recent.append(now)
        while recent and recent[0] <= now - self.window:
            recent.popleft()
        if not self.max_failures or len(recent) < self.max_failures:
            return False
        del self._recent[address]
        self._banned[address] = now + self.ban_seconds
        if len(self._banned) > self._max_addresses:
            for stale in [a for a, until in self._banned.items() if until <= now]:
                del self._banned[stale]
        self.bans += 1
        return True
