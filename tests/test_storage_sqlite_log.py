"""SQLite's log across a crash: a new delivery whose key a dead process's log deleted.

A delivery that is new and deleted again between two checkpoints is forgotten by the
plugin's net (the table never held it). After a crash the restarted broker continues
its orders after the restored deliveries, so it may make a key again that the dead
process had checkpointed into the table and then deleted in the log: that key is not
new to the table, and its delete must still reach it.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import anyio
import pytest

from midge.records import Batch, DeliveryRecord, MessageRecord, encode_delivery

sqlite = pytest.importorskip("midge_storage_sqlite")

KEY = ("q", 7)


def _delivery(payload: bytes) -> bytes:
    message = MessageRecord("t", payload, 1, False, {}, "p", 1_000_000.0, None)
    return encode_delivery(DeliveryRecord("q", 7, message, 1, False))


def test_a_key_deleted_in_a_dead_processes_log_is_deleted_again(tmp_path: Path) -> None:
    path = tmp_path / "log.db"
    # the first process: the delivery reaches the table, its delete only the log, and
    # the process dies without the checkpoint a close makes
    script = textwrap.dedent(f"""
        import os, anyio
        from midge.records import Batch
        from midge_storage_sqlite import SQLiteStorage

        async def main():
            storage = SQLiteStorage({str(path)!r})
            await storage.open()
            await storage.commit(Batch(1, deliveries={{{KEY!r}: {_delivery(b"one")!r}}},
                                       created={{{KEY!r}}}))
            await storage.checkpoint()
            await storage.commit(Batch(2, deliveries={{{KEY!r}: None}}))
            os._exit(0)

        anyio.run(main)
    """)
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)

    async def restarted() -> list[list[int]]:
        seen = []
        second = sqlite.SQLiteStorage(path)
        await second.open()
        seen.append([d.order for d in (await second.load()).deliveries])
        # orders continue after the restored ones (none): the same key, new again
        await second.commit(Batch(1, deliveries={KEY: _delivery(b"two")}, created={KEY}))
        await second.commit(Batch(2, deliveries={KEY: None}))
        await second.close()
        third = sqlite.SQLiteStorage(path)
        await third.open()
        try:
            seen.append([d.order for d in (await third.load()).deliveries])
        finally:
            await third.close()
        return seen

    assert anyio.run(restarted) == [[], []]
