"""The Database every repository shares: engine, dialect, clock, the write transaction, listeners after commit.

Owns what is common to all stored aggregates and nothing of any one of them:
  * `write()`: a write transaction; on SQLite serialized within this process (one in-process writer lock,
    so writers queue here instead of colliding and sleeping 1-25 ms in SQLite's busy handler);
  * `read()`: a connection for reads;
  * both translate the driver's operational errors (database locked, server gone) into our own
    `StorageUnavailable`, so nothing above storage knows SQLAlchemy's exception types;
  * `listeners` hear of every committed batch change, called by `emit()` after the commit;
  * `insert_ignoring()`: an INSERT that skips rows already stored (the one statement spelled per dialect
    that several repositories need); anything else that differs per dialect lives in its repository;
  * `clock`: the time repositories stamp rows with (never `time.time()` directly).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import Table
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from aistats_gateway.clock import Clock, SystemClock
from aistats_gateway.errors import StorageUnavailable
from aistats_gateway.storage.records import BatchRecord

__all__ = ["BatchListener", "Database"]

# (the batch as just committed, whether a webhook event was queued with it)
BatchListener = Callable[[BatchRecord, bool], None]


class Database:
    def __init__(self, engine: AsyncEngine, clock: Clock | None = None) -> None:
        self.engine = engine
        self.clock: Clock = clock or SystemClock()
        self.dialect = engine.dialect.name
        self.is_postgresql = self.dialect == "postgresql"
        self.listeners: list[BatchListener] = []
        self._write_lock = asyncio.Lock() if self.dialect == "sqlite" else None

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        """A write transaction (serialized within this process on SQLite), committed on leaving."""
        try:
            if self._write_lock is None:
                async with self.engine.begin() as conn:
                    yield conn
                return
            async with self._write_lock, self.engine.begin() as conn:
                yield conn
        except OperationalError as exc:
            raise StorageUnavailable(str(exc.orig)) from exc

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        try:
            async with self.engine.connect() as conn:
                yield conn
        except OperationalError as exc:
            raise StorageUnavailable(str(exc.orig)) from exc

    def emit(self, record: BatchRecord, queued: bool = False) -> None:
        """Tell the listeners of a committed batch change (call after the transaction, never inside it)."""
        for listener in self.listeners:
            listener(record, queued)

    def insert_ignoring(self, table: Table) -> Any:
        """INSERT … ON CONFLICT DO NOTHING: a row already stored (same key) is skipped, not an error."""
        dialect_insert = pg_insert if self.is_postgresql else sqlite_insert
        return dialect_insert(table).on_conflict_do_nothing()

    async def close(self) -> None:
        await self.engine.dispose()
