"""The storage writer: group commits from the engine's journal to a storage backend.

The rule: one commit runs at a time and the next batch gathers meanwhile, so a storage
costs one sync per batch, never one per message. With ``durability = "sync"`` the journal
holds acknowledgements until ``committed_upto`` releases them; with ``"periodic"`` a
batch is committed every ``flush_interval`` seconds and acknowledgements do not wait (a
crash loses at most that window). A failing commit is retried with backoff, logged once
per change of state, and nothing it holds is acknowledged meanwhile.
"""

from __future__ import annotations

import bisect
import logging
import time

import anyio

from .engine import Engine
from .records import Batch, Snapshot, Storage, StorageError

log = logging.getLogger("midge.storage")

#: seconds between retries of a failed commit: doubling from the first to the last
RETRY_FIRST = 0.05
RETRY_MAX = 2.0
#: seconds a batch gathers after its first change before it is committed: under load
#: it makes batches larger and commits fewer (each commit costs the event loop a
#: thread round trip and a write per waiting client), for a latency that stays below
#: a commit's own sync
GATHER = 0.002
#: upper bounds, in seconds, of the commit-time histogram's buckets (observers read it)
COMMIT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                  2.5, 5.0)


class StorageWriter:
    """Opens a storage, restores from it, and commits the engine's journal to it."""

    def __init__(self, storage: Storage, engine: Engine) -> None:
        self.storage = storage
        self.engine = engine
        self.journal = engine.journal
        self._wake = anyio.Event()
        #: one commit at a time, in batch order
        self._lock = anyio.Lock()
        self._failing = False
        #: a taken batch whose commit has not succeeded yet (retried first)
        self._retry: Batch | None = None
        #: commits done and the time they took, for measurements and logs
        self.commits = 0
        self.changes = 0
        self.commit_seconds = 0.0
        #: for observers: failed commit attempts, and the commits whose time fell in
        #: each COMMIT_BUCKETS bucket (the last one: slower than them all)
        self.failures = 0
        self.commit_buckets = [0] * (len(COMMIT_BUCKETS) + 1)

    async def open(self) -> dict[str, int]:
        """Open the storage and restore the engine from it (StorageError names it and
        the cause when either fails); returns what was restored."""
        storage = self.storage
        try:
            await storage.open()
            started = time.perf_counter()
            snapshot: Snapshot = await storage.load()
        except StorageError:
            raise
        except Exception as exc:
            raise StorageError(f"{storage.name}: {type(exc).__name__}: {exc}") from exc
        journal = self.journal
        journal.enable(time.time(), storage.durability == "sync")
        journal.wake = self._wake.set
        restored = self.engine.restore_records(snapshot)
        log.info(
            "storage %s: restored %d sessions (%d expired while down), %d subscriptions, "
            "%d queued or inflight messages, %d retained messages in %.2f s (durability %s)",
            storage.name, restored["sessions"], restored["expired_sessions"],
            restored["subscriptions"], restored["deliveries"], restored["retained"],
            time.perf_counter() - started, storage.durability,
        )
        return restored

    async def run(self) -> None:
        """Commit batches until cancelled."""
        journal = self.journal
        periodic = self.storage.durability == "periodic"
        interval = self.storage.flush_interval
        while True:
            if periodic:
                await anyio.sleep(interval)
            else:
                await self._wake.wait()
                await anyio.sleep(GATHER)
            self._wake = anyio.Event()
            journal.wake = self._wake.set
            await self.commit_pending()

    async def commit_pending(self) -> None:
        """Commit what the journal gathered, retrying until it is stored."""
        async with self._lock:
            batch = self._retry or self.journal.take()
            if batch is None:
                return
            self._retry = batch
            delay = RETRY_FIRST
            while True:
                started = time.perf_counter()
                if not len(batch):
                    break  # every change cancelled out: nothing to write
                try:
                    # a commit that started finishes even when the writer is cancelled
                    with anyio.CancelScope(shield=True):
                        await self.storage.commit(batch)
                except Exception as exc:
                    self.failures += 1
                    if not self._failing:
                        self._failing = True
                        log.error("storage %s: commit failed (%s: %s); retrying, and "
                                  "holding the acknowledgements that need it",
                                  self.storage.name, type(exc).__name__, exc)
                    await anyio.sleep(delay)
                    delay = min(delay * 2, RETRY_MAX)
                    continue
                break
            self._retry = None
            if self._failing:
                self._failing = False
                log.warning("storage %s: commits succeed again", self.storage.name)
            self.commits += 1
            self.changes += len(batch)
            elapsed = time.perf_counter() - started
            self.commit_seconds += elapsed
            self.commit_buckets[bisect.bisect_left(COMMIT_BUCKETS, elapsed)] += 1
            self.journal.committed_upto(batch.seq)

    # -- read by observers (the http listener, at scrape time) ----------------------------

    @property
    def failing(self) -> bool:
        """The last commit attempt failed: the storage is unreachable or refuses writes."""
        return self._failing

    @property
    def pending_items(self) -> int:
        """Changes taken for a commit and not stored yet (being written, or retried)."""
        return len(self._retry) if self._retry is not None else 0

    async def flush(self) -> None:
        """Commit everything gathered so far (after a commit that is running)."""
        await self.commit_pending()

    async def close(self, timeout: float) -> None:
        """Record the counters, commit what is left (within ``timeout``) and close."""
        if self.commits:
            log.info("storage %s: %d commits, %.1f changes and %.2f ms each on average",
                     self.storage.name, self.commits, self.changes / self.commits,
                     1000 * self.commit_seconds / self.commits)
        self.engine.save_counters()
        with anyio.CancelScope(shield=True), anyio.move_on_after(timeout) as scope:
            await self.flush()
        if scope.cancelled_caught:
            log.error("storage %s: the last commit did not finish within %s s",
                      self.storage.name, timeout)
        self.journal.enabled = False
        with anyio.CancelScope(shield=True):
            try:
                await self.storage.close()
            except Exception:
                log.exception("storage %s: closing failed", self.storage.name)
