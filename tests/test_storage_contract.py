"""The storage contract suite (``midge.storage_contract``) against every backend."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from storage_helpers import BACKENDS, RedisServer

from midge.records import Storage
from midge.storage_contract import MemoryStorage, StorageContract, StorageFactory


@pytest.fixture(params=[*BACKENDS, "memory"])
def storage_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StorageFactory]:
    backend = request.param
    if backend == "memory":
        shared = MemoryStorage()
        yield lambda: shared
    elif backend == "sqlite":
        sqlite = pytest.importorskip("midge_storage_sqlite")
        yield lambda: sqlite.SQLiteStorage(tmp_path / "contract.db")
    elif backend == "lmdb":
        lmdb = pytest.importorskip("midge_storage_lmdb")
        yield lambda: lmdb.LMDBStorage(tmp_path / "contract-lmdb")
    else:
        redis = pytest.importorskip("midge_storage_redis")
        server = RedisServer(tmp_path / "redis")
        server.start()
        try:
            def make() -> Storage:
                return redis.RedisStorage(server.url, prefix="contract:")  # type: ignore[no-any-return]

            yield make
        finally:
            server.stop()


class TestStorageContract(StorageContract):
    """Every backend passes the public contract."""
