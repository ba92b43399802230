"""The Database (storage/database.py): repositories stamp rows with the clock they are given, and a driver's
operational error (here: SQLite locked by another process) reaches the caller as our StorageUnavailable."""

from __future__ import annotations

import asyncio
import sqlite3

import pytest

from aistats_gateway.clock import FakeClock
from aistats_gateway.errors import StorageError, StorageUnavailable
from aistats_gateway.storage.migrate import upgrade_to_head
from aistats_gateway.storage.store import Store, create_engine


def test_rows_are_stamped_with_the_clock_given(db_url: str) -> None:
    async def main() -> None:
        engine = create_engine(db_url)
        await upgrade_to_head(engine)
        store = Store(engine, clock=FakeClock(1234.0))
        try:
            await store.workspaces.ensure("ws_a", "a")
            await store.workspaces.add_key("key_1", "ws_a", "h" * 64, "sk-aistats-abcdefgh", None)
            [key] = await store.workspaces.list_keys("ws_a")
            assert key["created_at"] == 1234
        finally:
            await store.close()

    asyncio.run(main())


def test_a_locked_database_is_storage_unavailable(db_url: str) -> None:
    if not db_url.startswith("sqlite"):
        pytest.skip("a write lock held by another process is SQLite's case (PostgreSQL locks rows, and waits)")
    path = db_url.split("///", 1)[1]

    async def main() -> None:
        engine = create_engine(db_url, busy_timeout_ms=50)
        await upgrade_to_head(engine)
        store = Store(engine)
        other = sqlite3.connect(path, isolation_level=None)
        try:
            other.execute("BEGIN EXCLUSIVE")
            with pytest.raises(StorageUnavailable) as caught:
                await store.workspaces.ensure("ws_a", "a")
            assert isinstance(caught.value, StorageError)  # internal to the layers below, and a 503 above
            assert caught.value.status_code == 503 and caught.value.code == "storage_unavailable"
            assert "locked" in caught.value.detail
        finally:
            other.close()
            await store.close()

    asyncio.run(main())
