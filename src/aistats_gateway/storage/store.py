"""The one Store: every read and write of gateway state, over SQLAlchemy Core (async).

Owns transactions and their boundaries. Statuses change only through `transition()`, a
compare-and-set on the current status checked against `domain.transitions`; an item's outcome and
its batch's counters change in the same transaction, so a counted result is always a stored one.
Portable SQL (UPDATE … RETURNING works on SQLite ≥ 3.35 and PostgreSQL). On PostgreSQL several
processes share the database: leases are taken with `FOR UPDATE SKIP LOCKED`, rows are locked in one
order (see `dialects.py`), and the few statements that differ live there; the SQLite paths are the
single-process ones, unchanged (one in-process writer lock, prebuilt statements, INSERT OR IGNORE).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import and_, bindparam, delete, func, insert, not_, or_, select, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from aistats_gateway.domain import transitions
from aistats_gateway.domain.batch import BatchStatus, RequestCounts
from aistats_gateway.domain.events import TERMINAL_EVENTS, delivery_key, progress_crossed
from aistats_gateway.errors import NotFound, StaleTransition
from aistats_gateway.pricing import ledger
from aistats_gateway.pricing.calculator import PricingRow
from aistats_gateway.storage import dialects
from aistats_gateway.storage.dialects import create_engine
from aistats_gateway.storage.records import (
    BatchRecord,
    FileRecord,
    ItemRecord,
    batch_record,
    file_record,
    item_record,
)
from aistats_gateway.storage.schema import (
    FILE_DELETED,
    ITEM_FAILED,
    ITEM_LEASED,
    ITEM_PENDING,
    ITEM_SUCCEEDED,
    KEY_CREATED,
    KEY_STATIC,
    LEASED_COLUMNS,
    api_keys,
    batches,
    credits,
    files,
    items,
    request_log,
    workspaces,
)
from aistats_gateway.webhooks import outbox

# what `keys list` may show of a key: never its hash
_KEY_COLUMNS = (api_keys.c.id, api_keys.c.workspace_id, api_keys.c.prefix, api_keys.c.name, api_keys.c.kind,
                api_keys.c.created_at, api_keys.c.revoked_at)

__all__ = ["BatchListener", "ItemRef", "ItemResult", "Settlement", "Store", "create_engine"]
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Settlement:
    """The final outcome of one item, as the executor hands it to the store."""

    batch_id: str
    line: int
    succeeded: bool
    result: bytes  # the rendered output-file or error-file line
    attempts: int
    input_tokens: int = 0
    output_tokens: int = 0
    usage_rows: tuple[PricingRow, ...] = ()  # this line's priced usage, added to the batch's pricing lines
    cached_tokens: int = 0  # usage details of the answer (calculator.usage_details)
    reasoning_tokens: int = 0


@dataclass(frozen=True)
class ItemResult:
    line: int
    custom_id: str
    status: int
    result: bytes | None
    error_code: str | None


BatchListener = Callable[[BatchRecord, bool], None]
UNFINISHED = [s.value for s in BatchStatus if not s.terminal]
# Ingest's rows (items that point into their input file), on SQLite as ONE statement over a JSON array: SQLite
# then inserts the whole chunk without holding the GIL, while the event loop parses the next one (an executemany
# takes the GIL back for every row, and waits for it behind the busy event loop: measured 35x slower so).
_ITEM_REF_COLUMNS = ("INSERT INTO items (batch_id, line, custom_id, model, provider, body_offset, body_length, status, "
                     "attempts, input_tokens, output_tokens) ")
_INSERT_ITEM_REFS_JSON = (_ITEM_REF_COLUMNS + "SELECT ?, value->>0, value->>1, value->>2, value->>3, value->>4, "
                          f"value->>5, {ITEM_PENDING}, 0, 0, 0 FROM json_each(?)")
_INSERT_ITEM_REFS = _ITEM_REF_COLUMNS + f"VALUES (?, ?, ?, ?, ?, ?, ?, {ITEM_PENDING}, 0, 0, 0)"
ItemRef = tuple[int, str, str, str, int, int]  # line, custom_id, model, provider, body_offset, body_length

# The executor's hot statements, built once (SQLAlchemy then reuses their compiled form from its cache
# without re-walking a freshly built statement per call). PostgreSQL leases with dialects.LEASE instead
# (FOR UPDATE SKIP LOCKED, so workers lease one batch side by side).
def _lease_statement(skip_models: bool) -> Any:
    """The lowest pending lines of a batch (with `skip_models`: of models other than the list `l_skip`)."""
    cond = and_(items.c.batch_id == bindparam("l_batch"), items.c.status == ITEM_PENDING)
    if skip_models:
        cond = and_(cond, items.c.model.not_in(bindparam("l_skip", expanding=True)))
    return (
        update(items)
        .where(and_(
            items.c.batch_id == bindparam("l_batch"),
            items.c.line.in_(select(items.c.line).where(cond).order_by(items.c.line).limit(bindparam("l_limit"))
                             .scalar_subquery()),
        ))
        .values(status=ITEM_LEASED, lease_owner=bindparam("l_owner"), lease_expires_at=bindparam("l_until"))
        .returning(*LEASED_COLUMNS)
    )


_LEASE = _lease_statement(False)
_LEASE_SKIPPING = _lease_statement(True)
_SETTLE_ITEM = (
    update(items)
    .where(and_(items.c.batch_id == bindparam("b_id"), items.c.line == bindparam("b_line"),
                items.c.status == ITEM_LEASED))
    .values(
        status=bindparam("b_status"), result=bindparam("b_result"), attempts=bindparam("b_attempts"),
        input_tokens=bindparam("b_in"), output_tokens=bindparam("b_out"), seq=bindparam("b_seq"),
        settled_at=bindparam("b_now"), lease_owner=None, lease_expires_at=None,
    )
)
_COUNT_BATCH = (
    update(batches)
    .where(batches.c.id == bindparam("c_id"))
    .values(
        completed=batches.c.completed + bindparam("c_ok"), failed=batches.c.failed + bindparam("c_bad"),
        input_tokens=batches.c.input_tokens + bindparam("c_in"),
        output_tokens=batches.c.output_tokens + bindparam("c_out"),
        settled_seq=batches.c.settled_seq + bindparam("c_n"), updated_at=bindparam("c_now"),
    )
    .returning(*batches.c)
)
_COUNT_DETAILS = (
    update(batches)
    .where(batches.c.id == bindparam("d_id"))
    .values(cached_tokens=batches.c.cached_tokens + bindparam("d_cached"),
            reasoning_tokens=batches.c.reasoning_tokens + bindparam("d_reasoning"))
    .returning(*batches.c)
)


async def _insert_many(conn: AsyncConnection, table: Any, rows: Sequence[dict[str, Any]]) -> None:
    """An idempotent bulk insert (rows already stored are skipped, so re-applying a group whose commit
    was ambiguous is harmless); on SQLite straight to the driver's executemany, which skips SQLAlchemy's
    per-row parameter processing (the request log writes one row per upstream attempt)."""
    if conn.dialect.name == "sqlite":
        columns = list(rows[0])
        sql = f"INSERT OR IGNORE INTO {table.name} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
        await conn.exec_driver_sql(sql, [tuple(row[c] for c in columns) for row in rows])
    else:
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        await conn.execute(pg_insert(table).on_conflict_do_nothing(), list(rows))


async def _sqlite_has_json(conn: AsyncConnection) -> bool:
    """Whether this SQLite has json_each and the ->> operator (3.38+, or JSON1 compiled in); else row by row."""
    try:
        await conn.exec_driver_sql("SELECT value->>0 FROM json_each('[[1]]')")
    except OperationalError:
        log.warning("this SQLite has no json_each/->>: batch items are inserted row by row (slower validation)")
        return False
    return True


class Store:
    """`listeners` hear of every committed batch change: (new record, whether a webhook event was queued)."""

    def __init__(self, engine: AsyncEngine, *, webhook_max_attempts: int = 4) -> None:
        self.engine = engine
        self.webhook_max_attempts = webhook_max_attempts
        self.listeners: list[BatchListener] = []
        # SQLite has one writer at a time; queueing writers here (instead of letting them collide and
        # sleep in SQLite's busy handler for 1-25 ms) keeps the executor's commits steady.
        self._write_lock = asyncio.Lock() if engine.dialect.name == "sqlite" else None
        self.is_postgresql = engine.dialect.name == "postgresql"
        self._lease = dialects.LEASE if self.is_postgresql else _LEASE
        self._lease_skipping = dialects.LEASE_SKIPPING if self.is_postgresql else _LEASE_SKIPPING
        self._json_inserts: bool | None = None  # SQLite: bulk inserts over json_each? (known at first use)

    @asynccontextmanager
    async def _write(self) -> AsyncIterator[AsyncConnection]:
        """A write transaction (serialized within this process on SQLite)."""
        if self._write_lock is None:
            async with self.engine.begin() as conn:
                yield conn
            return
        async with self._write_lock, self.engine.begin() as conn:
            yield conn

    def _emit(self, record: BatchRecord, queued: bool = False) -> None:
        for listener in self.listeners:
            listener(record, queued)

    async def close(self) -> None:
        await self.engine.dispose()

    # ---------------------------------------------------------------- workspaces and keys
    async def ensure_workspace(self, workspace_id: str, name: str) -> None:
        async with self._write() as conn:
            if self.is_postgresql:  # processes starting together may both create it
                from sqlalchemy.dialects.postgresql import insert as pg_insert

                await conn.execute(pg_insert(workspaces).values(id=workspace_id, name=name, created_at=int(time.time()))
                                   .on_conflict_do_nothing())
                return
            found = await conn.scalar(select(workspaces.c.id).where(workspaces.c.id == workspace_id))
            if found is None:
                await conn.execute(
                    insert(workspaces).values(id=workspace_id, name=name, created_at=int(time.time()))
                )

    async def add_api_key(self, key_id: str, workspace_id: str, key_hash: str, prefix: str, name: str | None,
                          kind: str = KEY_CREATED) -> bool:
        """Store a key hash; False if that hash is already stored (same key)."""
        values = {"id": key_id, "workspace_id": workspace_id, "key_hash": key_hash, "prefix": prefix, "name": name,
                  "kind": kind, "created_at": int(time.time())}
        async with self._write() as conn:
            if self.is_postgresql:  # API processes starting together with the same AISTATS_API_KEY
                from sqlalchemy.dialects.postgresql import insert as pg_insert

                added = await conn.scalar(pg_insert(api_keys).values(**values).on_conflict_do_nothing()
                                          .returning(api_keys.c.id))
                return added is not None
            found = await conn.scalar(select(api_keys.c.id).where(api_keys.c.key_hash == key_hash))
            if found is not None:
                return False
            await conn.execute(insert(api_keys).values(**values))
            return True

    async def workspace_for_key(self, key_hash: str) -> str | None:
        async with self.engine.connect() as conn:
            return await conn.scalar(
                select(api_keys.c.workspace_id).where(
                    and_(api_keys.c.key_hash == key_hash, api_keys.c.revoked_at.is_(None))
                )
            )

    async def list_keys(self, workspace_id: str | None = None) -> list[dict[str, Any]]:
        query = select(*_KEY_COLUMNS).order_by(api_keys.c.id)
        if workspace_id is not None:
            query = query.where(api_keys.c.workspace_id == workspace_id)
        async with self.engine.connect() as conn:
            return [dict(r._mapping) for r in (await conn.execute(query)).all()]

    async def find_keys(self, key_id: str, key_hashes: Sequence[str]) -> list[dict[str, Any]]:
        """The keys (revoked or not) whose id is `key_id` or whose hash is one of `key_hashes`."""
        query = select(*_KEY_COLUMNS).where(or_(api_keys.c.id == key_id, api_keys.c.key_hash.in_(key_hashes)))
        async with self.engine.connect() as conn:
            return [dict(r._mapping) for r in (await conn.execute(query.order_by(api_keys.c.id))).all()]

    async def revoke_key(self, key_id: str, now: float) -> bool:
        """Revoke the one key with this id; False if there is none or it was already revoked."""
        async with self._write() as conn:
            return bool((await conn.execute(
                update(api_keys).where(and_(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None)))
                .values(revoked_at=int(now)))).rowcount)

    async def revoke_static_keys(self, keep_hash: str, now: float) -> list[dict[str, Any]]:
        """Revoke every active static key but the one with `keep_hash`; returns those revoked."""
        cond = and_(api_keys.c.kind == KEY_STATIC, api_keys.c.key_hash != keep_hash, api_keys.c.revoked_at.is_(None))
        async with self._write() as conn:
            rows = (await conn.execute(update(api_keys).where(cond).values(revoked_at=int(now))
                                       .returning(*_KEY_COLUMNS))).all()
        return [dict(r._mapping) for r in rows]

    async def count_keys(self) -> int:
        query = select(func.count()).select_from(api_keys).where(api_keys.c.revoked_at.is_(None))
        async with self.engine.connect() as conn:
            return int(await conn.scalar(query) or 0)

    # ---------------------------------------------------------------- files
    async def insert_file(self, record: FileRecord) -> None:
        async with self._write() as conn:
            await conn.execute(insert(files).values(**record.__dict__))

    async def get_file(self, workspace_id: str, file_id: str, *, include_deleted: bool = False) -> FileRecord | None:
        """A file of the workspace; one its owner deleted only with `include_deleted` (a batch reading it)."""
        cond = and_(files.c.id == file_id, files.c.workspace_id == workspace_id)
        if not include_deleted:
            cond = and_(cond, files.c.status != FILE_DELETED)
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(files).where(cond))).first()
        return file_record(row) if row else None

    async def list_files(
        self, workspace_id: str, *, after: str | None, limit: int, purpose: str | None, ascending: bool,
        now: int | None = None,
    ) -> tuple[list[FileRecord], bool]:
        """A page of the workspace's files (not deleted); with `now`, without those expired by then."""
        query = select(files).where(and_(files.c.workspace_id == workspace_id, files.c.status != FILE_DELETED))
        if now is not None:
            query = query.where(or_(files.c.expires_at.is_(None), files.c.expires_at > now))
        if purpose:
            query = query.where(files.c.purpose == purpose)
        if after:
            query = query.where(files.c.id > after if ascending else files.c.id < after)
        query = query.order_by(files.c.id.asc() if ascending else files.c.id.desc()).limit(limit + 1)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [file_record(r) for r in rows[:limit]], len(rows) > limit

    async def expired_files(self, now: int, limit: int) -> list[tuple[str, str]]:
        """(workspace_id, file_id) of files whose expires_at has passed, oldest first (not those already deleted
        and waiting for their batches: the purge removes them)."""
        query = (select(files.c.workspace_id, files.c.id)
                 .where(and_(files.c.expires_at.is_not(None), files.c.expires_at <= now,
                             files.c.status != FILE_DELETED))
                 .order_by(files.c.expires_at).limit(limit))
        async with self.engine.connect() as conn:
            return [(row[0], row[1]) for row in (await conn.execute(query)).all()]

    async def delete_file(self, workspace_id: str, file_id: str) -> tuple[FileRecord, bool] | None:
        """Delete a file for its owner: (the record, whether its blob may go now), or None when there is no such file.

        Item rows point into their batch's input file, so while an unfinished batch reads it the row is only
        marked deleted (the API no longer shows it) and the blob stays: `purgeable_files()` hands it out once the
        last such batch is terminal. The file row is locked first (on PostgreSQL), as `insert_batch` locks it, so
        a batch created at the same moment either sees the file gone or is seen here."""
        mine = and_(files.c.id == file_id, files.c.workspace_id == workspace_id, files.c.status != FILE_DELETED)
        async with self._write() as conn:
            row = (await conn.execute(select(files).where(mine).with_for_update())).first()
            if row is None:
                return None
            reader = await conn.scalar(select(batches.c.id).where(and_(
                batches.c.input_file_id == file_id, batches.c.status.in_(UNFINISHED))).limit(1))
            if reader is not None:
                await conn.execute(update(files).where(files.c.id == file_id).values(status=FILE_DELETED))
                return file_record(row), False
            await conn.execute(delete(files).where(files.c.id == file_id))
        return file_record(row), True

    async def purgeable_files(self, limit: int = 100) -> list[FileRecord]:
        """Files their owners deleted whose last reading batch has become terminal: their blobs can go now."""
        reading = select(batches.c.id).where(and_(batches.c.input_file_id == files.c.id,
                                                  batches.c.status.in_(UNFINISHED)))
        query = select(files).where(and_(files.c.status == FILE_DELETED, not_(reading.exists()))).limit(limit)
        async with self.engine.connect() as conn:
            return [file_record(r) for r in (await conn.execute(query)).all()]

    async def forget_file(self, file_id: str) -> None:
        """Drop the row of a deleted file whose blob is gone (see purgeable_files)."""
        async with self._write() as conn:
            await conn.execute(delete(files).where(and_(files.c.id == file_id, files.c.status == FILE_DELETED)))

    async def input_blob_key(self, batch_id: str) -> str | None:
        """The blob of a batch's input file (also after its owner deleted it: the row stays while the batch runs)."""
        query = (select(files.c.blob_key).select_from(batches.join(files, files.c.id == batches.c.input_file_id))
                 .where(batches.c.id == batch_id))
        async with self.engine.connect() as conn:
            return await conn.scalar(query)

    # ---------------------------------------------------------------- batches
    async def insert_batch(self, values: dict[str, Any], hold_nanos: int | None = None) -> BatchRecord:
        """Insert the batch; with `hold_nanos`, reserve that much credit in the same transaction (402 if the
        workspace cannot cover it — and then nothing is stored)."""
        async with self._write() as conn:
            # The input file must still be there (locked against a concurrent delete: see delete_file).
            found = await conn.scalar(select(files.c.id).where(and_(
                files.c.id == values["input_file_id"], files.c.workspace_id == values["workspace_id"],
                files.c.status != FILE_DELETED)).with_for_update(read=True))
            if found is None:
                raise NotFound(f"No file with id '{values['input_file_id']}' in this workspace.",
                               code="file_not_found_or_not_owned", param="input_file_id")
            if hold_nanos is not None:
                await self._lock_credit(conn, values["workspace_id"])
                reservation = await ledger.hold(conn, values["workspace_id"], values["id"], hold_nanos,
                                                values["updated_at"])
                if reservation is not None:
                    values = {**values, "reservation_id": reservation, "reserved_nanos": hold_nanos,
                              "reservation_status": "held"}
            record = batch_record((await conn.execute(insert(batches).values(**values).returning(*batches.c))).one())
            queued = await outbox.queue(conn, record, "batch.created", "batch.created", values["updated_at"],
                                        self.webhook_max_attempts)
        self._emit(record, queued)
        return record

    async def get_batch(self, batch_id: str, workspace_id: str | None = None) -> BatchRecord | None:
        query = select(batches).where(batches.c.id == batch_id)
        if workspace_id is not None:
            query = query.where(batches.c.workspace_id == workspace_id)
        async with self.engine.connect() as conn:
            row = (await conn.execute(query)).first()
        return batch_record(row) if row else None

    async def list_batches(
        self, workspace_id: str, *, after: str | None, limit: int, status: str | None, session_id: str | None = None
    ) -> tuple[list[BatchRecord], bool]:
        """Newest first (ids are time-ordered ULIDs); `after` is the last id of the previous page."""
        query = select(batches).where(batches.c.workspace_id == workspace_id)
        if session_id:
            query = query.where(batches.c.session_id == session_id)
        if status:
            query = query.where(batches.c.status == status)
        if after:
            query = query.where(batches.c.id < after)
        query = query.order_by(batches.c.id.desc()).limit(limit + 1)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [batch_record(r) for r in rows[:limit]], len(rows) > limit

    async def request_logs(
        self, workspace_id: str, batch_id: str, *, limit: int, offset: int, status: str | None
    ) -> tuple[list[dict[str, Any]], bool]:
        query = select(request_log).where(and_(request_log.c.workspace_id == workspace_id,
                                               request_log.c.batch_id == batch_id))
        if status == "success":
            query = query.where(and_(request_log.c.status_code >= 200, request_log.c.status_code < 300))
        elif status == "error":
            query = query.where((request_log.c.status_code.is_(None)) | (request_log.c.status_code >= 300))
        elif status is not None:
            query = query.where(request_log.c.status_code == int(status))
        query = query.order_by(request_log.c.id).offset(offset).limit(limit + 1)
        async with self.engine.connect() as conn:
            rows = [dict(r._mapping) for r in (await conn.execute(query)).all()]
        return rows[:limit], len(rows) > limit

    async def request_log_entry(self, workspace_id: str, request_id: str) -> dict[str, Any] | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(request_log).where(and_(
                request_log.c.id == request_id, request_log.c.workspace_id == workspace_id)))).first()
        return dict(row._mapping) if row else None

    async def state_counts(self) -> dict[str, dict[str, int]]:
        """Batches per status, and the lines of unfinished batches by state (cheap: batch counters only)."""
        async with self.engine.connect() as conn:
            by_status = (await conn.execute(select(batches.c.status, func.count()).group_by(batches.c.status))).all()
            lines = (await conn.execute(
                select(func.coalesce(func.sum(batches.c.total), 0), func.coalesce(func.sum(batches.c.completed), 0),
                       func.coalesce(func.sum(batches.c.failed), 0))
                .where(batches.c.status.in_(["validating", "in_progress", "finalizing", "cancelling"])))).one()
        total, completed, failed = (int(v) for v in lines)
        return {"batches": {str(s): int(n) for s, n in by_status},
                "lines": {"pending": total - completed - failed, "succeeded": completed, "failed": failed}}

    async def batches_in(self, statuses: Iterable[BatchStatus]) -> list[BatchRecord]:
        query = select(batches).where(batches.c.status.in_([s.value for s in statuses])).order_by(batches.c.id)
        async with self.engine.connect() as conn:
            return [batch_record(r) for r in (await conn.execute(query)).all()]

    async def transition(
        self, batch_id: str, current: BatchStatus, target: BatchStatus, now: float, **values: Any
    ) -> BatchRecord:
        """Compare-and-set the status; raises StaleTransition if the batch is no longer `current`."""
        async with self._write() as conn:
            if self.is_postgresql and current is BatchStatus.VALIDATING and target is BatchStatus.IN_PROGRESS:
                await self._check_ingested(conn, batch_id)
            record, queued = await self._transition(conn, batch_id, current, target, now, **values)
        self._emit(record, queued)
        return record

    async def _check_ingested(self, conn: AsyncConnection, batch_id: str) -> None:
        """PostgreSQL: workers may validate one batch side by side (a sweep finds it while another worker is
        still at it); one of them starting over deletes the items the other stored. So a batch starts only
        with every item stored: checked under its row lock, which a deleting ingest needs too."""
        total = await conn.scalar(select(batches.c.total).where(batches.c.id == batch_id).with_for_update())
        stored = await conn.scalar(select(func.count()).select_from(items).where(items.c.batch_id == batch_id))
        if total is not None and int(stored or 0) < int(total):
            raise StaleTransition(f"{batch_id}: only {stored} of {total} items are stored (another ingest of this "
                                  "batch is rewriting them; the last one to finish starts it)")

    async def _transition(
        self, conn: Any, batch_id: str, current: BatchStatus, target: BatchStatus, now: float,
        **values: Any,
    ) -> tuple[BatchRecord, bool]:
        """The CAS update, and the terminal webhook event in the same transaction."""
        stamp = transitions.check(current, target)
        values[stamp] = int(now)
        if target.terminal:
            before = (await conn.execute(select(batches).where(batches.c.id == batch_id))).first()
            if before is None or before._mapping["status"] != current.value:
                raise StaleTransition(f"{batch_id} is not {current.value}")
            # Settlement rides on the terminal compare-and-set: it happens exactly once.
            values.update(await ledger.settle(conn, batch_record(before), target, now))
        row = (
            await conn.execute(
                update(batches)
                .where(and_(batches.c.id == batch_id, batches.c.status == current.value))
                .values(status=target.value, updated_at=now, **values)
                .returning(*batches.c)
            )
        ).first()
        if row is None:
            raise StaleTransition(f"{batch_id} is not {current.value}")
        record = batch_record(row)
        queued = False
        event = TERMINAL_EVENTS.get(target)
        if event is not None:
            queued = await outbox.queue(conn, record, event, delivery_key(event), now, self.webhook_max_attempts)
        return record, queued

    async def update_batch_fields(self, batch_id: str, **values: Any) -> None:
        """Non-status fields only (status goes through `transition`)."""
        assert "status" not in values
        async with self._write() as conn:
            row = (
                await conn.execute(
                    update(batches).where(batches.c.id == batch_id).values(updated_at=time.time(), **values)
                    .returning(*batches.c)
                )
            ).first()
        if row is not None:
            self._emit(batch_record(row))

    # ---------------------------------------------------------------- items
    async def delete_items(self, batch_id: str) -> None:
        """Drop the items an interrupted ingest left; only while the batch is still validating (under its row
        lock on PostgreSQL), so a second ingest of the same batch by another worker can never delete items
        that a finished ingest already handed to the executor."""
        async with self._write() as conn:
            status = await conn.scalar(select(batches.c.status).where(batches.c.id == batch_id).with_for_update())
            if status == BatchStatus.VALIDATING.value:
                await conn.execute(delete(items).where(items.c.batch_id == batch_id))

    async def insert_items(self, rows: Sequence[dict[str, Any]]) -> None:
        """Store validated items. On PostgreSQL (workers may ingest one batch side by side until one of them
        moves it on) rows already stored are skipped and nothing is added once the batch left `validating`."""
        if not rows:
            return
        async with self._write() as conn:
            if not self.is_postgresql:
                await conn.execute(insert(items), list(rows))
                return
            from sqlalchemy.dialects.postgresql import insert as pg_insert

            batch_ids = sorted({r["batch_id"] for r in rows})
            open_ids = set((await conn.execute(select(batches.c.id).where(and_(
                batches.c.id.in_(batch_ids), batches.c.status == BatchStatus.VALIDATING.value))
                .with_for_update(read=True))).scalars())
            keep = [r for r in rows if r["batch_id"] in open_ids]
            if keep:
                await conn.execute(pg_insert(items).on_conflict_do_nothing(), keep)

    async def insert_item_refs(self, batch_id: str, rows: Sequence[ItemRef]) -> None:
        """Store validated items of one batch that point into its input file (ingest's rows, as ItemRef tuples)."""
        if not rows:
            return
        if self.is_postgresql:
            await self.insert_items([
                {"batch_id": batch_id, "line": r[0], "custom_id": r[1], "model": r[2], "provider": r[3],
                 "body_offset": r[4], "body_length": r[5], "status": ITEM_PENDING, "attempts": 0, "input_tokens": 0,
                 "output_tokens": 0} for r in rows])
            return
        payload = orjson.dumps(rows)
        async with self._write() as conn:
            if self._json_inserts is None:
                self._json_inserts = await _sqlite_has_json(conn)
            # SQLite's JSON text functions stop at NUL: a (rare) chunk with an escaped NUL goes row by row.
            if self._json_inserts and b"\\u0000" not in payload:
                await conn.exec_driver_sql(_INSERT_ITEM_REFS_JSON, (batch_id, payload))
            else:
                await conn.exec_driver_sql(_INSERT_ITEM_REFS, [(batch_id, *r) for r in rows])

    async def lease_items(
        self, batch_id: str, owner: str, limit: int, lease_until: float, skip_models: Sequence[str] = ()
    ) -> list[ItemRecord]:
        """Atomically take up to `limit` pending items of a batch, lowest lines first; `skip_models` leaves
        the lines of those models pending (the executor's lanes for them are full)."""
        params: dict[str, Any] = {"l_batch": batch_id, "l_owner": owner, "l_limit": limit, "l_until": lease_until}
        statement = self._lease
        if skip_models:
            statement = self._lease_skipping
            params["l_skip"] = list(skip_models)
        async with self._write() as conn:
            rows = (await conn.execute(statement, params)).all()
        return sorted((item_record(r) for r in rows), key=lambda r: r.line)

    async def release_batch_leases(self, batch_id: str, owner: str) -> int:
        """Put one owner's leased items of one batch back to pending (its unsent lines after a halt)."""
        return await self._release(and_(items.c.batch_id == batch_id, items.c.status == ITEM_LEASED,
                                        items.c.lease_owner == owner))

    async def leased_by_others(self, batch_id: str, owner: str, now: float) -> int:
        """Lines of a batch that another live process holds (unexpired leases; native jobs excluded): while
        there are any, a cancel or expiry must not settle them as unfinished — their answers may be coming."""
        async with self.engine.connect() as conn:
            value = (await conn.execute(select(func.count()).select_from(items).where(and_(
                items.c.batch_id == batch_id, items.c.status == ITEM_LEASED, items.c.lease_owner != owner,
                items.c.lease_expires_at >= now, not_(items.c.lease_owner.startswith("native:")))))).scalar_one()
        return int(value)

    async def release_leases(self, owner: str) -> int:
        """Put one owner's leased items back to pending (a graceful stop)."""
        return await self._release(and_(items.c.status == ITEM_LEASED, items.c.lease_owner == owner))

    async def release_earlier_incarnations(self, node_prefix: str, me: str) -> int:
        """At start: this node's earlier processes are gone, so their leases are free at once."""
        return await self._release(and_(items.c.status == ITEM_LEASED, items.c.lease_owner.startswith(node_prefix),
                                        items.c.lease_owner != me))

    async def release_expired_leases(self, now: float, me: str) -> int:
        """Leases whose owner stopped heart-beating (another node died) go back to pending."""
        return await self._release(and_(items.c.status == ITEM_LEASED, items.c.lease_expires_at < now,
                                        items.c.lease_owner != me), skip_locked=True)

    async def heartbeat_leases(self, owner: str, until: float) -> int:
        cond = and_(items.c.status == ITEM_LEASED, items.c.lease_owner == owner)
        # PostgreSQL: an item locked right now is being settled (or reclaimed): it needs no heartbeat.
        target = dialects.locked_items(cond, skip_locked=True) if self.is_postgresql else update(items).where(cond)
        async with self._write() as conn:
            result = await conn.execute(target.values(lease_expires_at=until))
        return int(result.rowcount or 0)

    async def _release(self, cond: Any, *, skip_locked: bool = False) -> int:
        target = (dialects.locked_items(cond, skip_locked=skip_locked) if self.is_postgresql
                  else update(items).where(cond))
        async with self._write() as conn:
            result = await conn.execute(target.values(status=ITEM_PENDING, lease_owner=None, lease_expires_at=None))
        return int(result.rowcount or 0)

    async def settle(
        self, settlements: Sequence[Settlement], now: float, logs: Sequence[dict[str, Any]] = ()
    ) -> dict[str, BatchRecord]:
        """Store outcomes and bump their batches' counters in ONE transaction.

        Only items still leased are settled, so an outcome can never be counted twice. Each settled
        item gets the next `seq` of its batch (the results cursor). Returns the updated batch rows.
        """
        if not settlements:
            if logs:
                async with self._write() as conn:
                    await _insert_many(conn, request_log, logs)
            return {}
        touched = sorted({s.batch_id for s in settlements})
        deltas: dict[str, list[int]] = {b: [0, 0, 0, 0] for b in touched}
        for s in settlements:
            d = deltas[s.batch_id]
            d[0 if s.succeeded else 1] += 1
            d[2] += s.input_tokens
            d[3] += s.output_tokens
        out: dict[str, BatchRecord] = {}
        queued: dict[str, bool] = {}
        async with self._write() as conn:
            previous: dict[str, RequestCounts] = {}
            next_seq: dict[str, int] = {}
            for batch_id, (ok, bad, tin, tout) in deltas.items():
                row = (
                    await conn.execute(_COUNT_BATCH, {"c_id": batch_id, "c_ok": ok, "c_bad": bad, "c_in": tin,
                                                      "c_out": tout, "c_n": ok + bad, "c_now": now})
                ).one()
                out[batch_id] = batch_record(row)
                # the counts before this group, derived from the row the update returned
                previous[batch_id] = RequestCounts(out[batch_id].total, out[batch_id].completed - ok,
                                                   out[batch_id].failed - bad)
                next_seq[batch_id] = row._mapping["settled_seq"] - ok - bad
            params = []
            for s in settlements:
                next_seq[s.batch_id] += 1
                params.append({
                    "b_id": s.batch_id, "b_line": s.line, "b_status": ITEM_SUCCEEDED if s.succeeded else ITEM_FAILED,
                    "b_result": s.result, "b_attempts": s.attempts, "b_in": s.input_tokens,
                    "b_out": s.output_tokens, "b_seq": next_seq[s.batch_id], "b_now": now,
                })
            if self.is_postgresql:
                done = await dialects.settle_items(conn, params, now)
                applied_count = len(done)
            else:
                result = await conn.execute(_SETTLE_ITEM, params)
                applied_count = result.rowcount
            if logs:
                await _insert_many(conn, request_log, logs)
            applied = settlements
            if applied_count != len(settlements):
                # Only items that were still leased took this group's seq: price exactly those.
                if self.is_postgresql:
                    applied = [s for s in settlements if (s.batch_id, s.line) in done]
                else:
                    applied = await self._applied(conn, settlements, params)
            for batch_id in touched:
                usage = [row for s in applied if s.batch_id == batch_id for row in s.usage_rows]
                if usage:
                    await ledger.add_usage(conn, batch_id, usage)
                # Summed over the applied settlements only (as the pricing lines are), so a line settled twice
                # by racing workers never counts twice; a separate statement, and only when an answer had them.
                cached = sum(s.cached_tokens for s in applied if s.batch_id == batch_id)
                reasoning = sum(s.reasoning_tokens for s in applied if s.batch_id == batch_id)
                if cached or reasoning:
                    out[batch_id] = batch_record((await conn.execute(_COUNT_DETAILS, {
                        "d_id": batch_id, "d_cached": cached, "d_reasoning": reasoning})).one())
            if applied_count != len(settlements):
                # Some items were not ours any more (or the driver cannot count an executemany):
                # recount from the item rows, which are the truth.
                for batch_id in touched:
                    out[batch_id] = await self._recount(conn, batch_id, now)
            for batch_id, record in out.items():
                queued[batch_id] = await self._progress_event(conn, record, previous[batch_id], now)
        for batch_id, record in out.items():
            self._emit(record, queued.get(batch_id, False))
        return out

    async def _applied(
        self, conn: Any, settlements: Sequence[Settlement], params: Sequence[dict[str, Any]]
    ) -> list[Settlement]:
        """The settlements this transaction actually applied: their item now carries the seq assigned here."""
        applied: list[Settlement] = []
        by_batch: dict[str, list[tuple[Settlement, int]]] = {}
        for settlement, param in zip(settlements, params, strict=True):
            by_batch.setdefault(settlement.batch_id, []).append((settlement, param["b_seq"]))
        for batch_id, pairs in by_batch.items():
            rows = (await conn.execute(select(items.c.line, items.c.seq).where(and_(
                items.c.batch_id == batch_id, items.c.line.in_([s.line for s, _ in pairs]))))).all()
            seq_of = {row[0]: row[1] for row in rows}
            applied += [s for s, seq in pairs if seq_of.get(s.line) == seq]
        return applied

    async def _progress_event(self, conn: Any, record: BatchRecord, before: RequestCounts, now: float) -> bool:
        bucket = progress_crossed(before, record.counts)
        if bucket is None:
            return False
        return await outbox.queue(conn, record, "batch.progress", delivery_key("batch.progress", bucket), now,
                                  self.webhook_max_attempts)

    async def _recount(self, conn: Any, batch_id: str, now: float) -> BatchRecord:
        rows = (
            await conn.execute(
                select(items.c.status, func.count(), func.coalesce(func.sum(items.c.input_tokens), 0),
                       func.coalesce(func.sum(items.c.output_tokens), 0))
                .where(and_(items.c.batch_id == batch_id, items.c.status.in_([ITEM_SUCCEEDED, ITEM_FAILED])))
                .group_by(items.c.status)
            )
        ).all()
        done = {r[0]: r for r in rows}
        ok = done.get(ITEM_SUCCEEDED)
        bad = done.get(ITEM_FAILED)
        row = (
            await conn.execute(
                update(batches)
                .where(batches.c.id == batch_id)
                .values(
                    completed=ok[1] if ok else 0, failed=bad[1] if bad else 0,
                    input_tokens=(ok[2] if ok else 0) + (bad[2] if bad else 0),
                    output_tokens=(ok[3] if ok else 0) + (bad[3] if bad else 0), updated_at=now,
                )
                .returning(*batches.c)
            )
        ).one()
        return batch_record(row)

    async def fail_unfinished(self, batch_id: str, code: str, now: float) -> BatchRecord:
        """Settle every pending or leased item as failed with `code`, and recount; idempotent."""
        cond = and_(items.c.batch_id == batch_id, items.c.status.in_([ITEM_PENDING, ITEM_LEASED]))
        target = dialects.locked_items(cond, skip_locked=False) if self.is_postgresql else update(items).where(cond)
        async with self._write() as conn:
            # The batch row first (as settle does): concurrent settles of this batch wait, and `base` is current.
            base = (await conn.execute(select(batches.c.settled_seq).where(batches.c.id == batch_id)
                                       .with_for_update())).scalar_one()
            changed = await conn.execute(
                target
                .values(status=ITEM_FAILED, error_code=code, result=None, settled_at=now, seq=items.c.line + base,
                        lease_owner=None, lease_expires_at=None)
            )
            if changed.rowcount:
                top = await conn.scalar(select(func.max(items.c.line)).where(items.c.batch_id == batch_id))
                await conn.execute(update(batches).where(batches.c.id == batch_id)
                                   .values(settled_seq=base + int(top or 0)))
            record = await self._recount(conn, batch_id, now)
        self._emit(record)
        return record

    async def unsettled_count(self, batch_id: str) -> int:
        async with self.engine.connect() as conn:
            return int(
                await conn.scalar(
                    select(func.count()).select_from(items).where(
                        and_(items.c.batch_id == batch_id, items.c.status.in_([ITEM_PENDING, ITEM_LEASED]))
                    )
                )
                or 0
            )

    async def seq_of(self, batch_id: str, custom_id: str) -> int | None:
        """The settle position of a line (by custom_id), for resuming GET .../results; None if unknown."""
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(items.c.seq, items.c.status).where(
                and_(items.c.batch_id == batch_id, items.c.custom_id == custom_id)))).first()
        if row is None:
            return None
        return int(row[0]) if row[0] is not None else -1

    async def purge_ended_batch_rows(self, ended_before: float, now: int, chunk: int = 5000) -> int:
        """Delete the per-line rows (items, request log) of one batch that ended before `ended_before`, a chunk
        per transaction so a big batch never holds the writer long; then mark it. The number of batches purged
        (0 or 1: the caller loops). A purge cut short is finished by the next call (the mark comes last)."""
        terminal = [s.value for s in BatchStatus if s.terminal]
        async with self.engine.connect() as conn:
            batch_id = (await conn.execute(
                select(batches.c.id).where(and_(batches.c.status.in_(terminal), batches.c.updated_at < ended_before,
                                                batches.c.rows_purged_at.is_(None)))
                .order_by(batches.c.updated_at).limit(1))).scalar()
        if batch_id is None:
            return 0
        for table, key in ((items, items.c.line), (request_log, request_log.c.id)):
            while True:
                some = select(key).where(table.c.batch_id == batch_id).limit(chunk).scalar_subquery()
                async with self._write() as conn:
                    gone = (await conn.execute(
                        delete(table).where(and_(table.c.batch_id == batch_id, key.in_(some))))).rowcount
                if gone < chunk:
                    break
        async with self._write() as conn:
            await conn.execute(update(batches).where(batches.c.id == batch_id).values(rows_purged_at=now))
        return 1

    async def results_after(self, batch_id: str, after_seq: int, limit: int) -> list[tuple[int, ItemResult]]:
        """Settled items in settle order after `after_seq`: what the results stream sends next."""
        query = (
            select(items.c.seq, items.c.line, items.c.custom_id, items.c.status, items.c.result, items.c.error_code)
            .where(and_(items.c.batch_id == batch_id, items.c.seq > after_seq))
            .order_by(items.c.seq)
            .limit(limit)
        )
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [(int(r[0]), ItemResult(r[1], r[2], r[3], r[4], r[5])) for r in rows]

    async def item_results(self, batch_id: str, after_line: int, limit: int) -> list[ItemResult]:
        """Settled items in line order, a page at a time (keyset on line): for writing result files."""
        query = (
            select(items.c.line, items.c.custom_id, items.c.status, items.c.result, items.c.error_code)
            .where(and_(items.c.batch_id == batch_id, items.c.line > after_line))
            .order_by(items.c.line)
            .limit(limit)
        )
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [ItemResult(r[0], r[1], r[2], r[3], r[4]) for r in rows]

    async def publish_results(
        self,
        batch_id: str,
        current: BatchStatus,
        target: BatchStatus,
        now: float,
        new_files: Sequence[FileRecord],
        **values: Any,
    ) -> BatchRecord:
        """Register the output/error files and move to the terminal status in one transaction."""
        async with self._write() as conn:
            for rec in new_files:
                await conn.execute(insert(files).values(**rec.__dict__))
            record, queued = await self._transition(conn, batch_id, current, target, now, **values)
        self._emit(record, queued)
        return record

    # ---------------------------------------------------------------- webhook outbox
    async def due_event_candidates(self, now: float, *, per_url: int, per_workspace: int,
                                   limit: int) -> list[tuple[str, str, str]]:
        async with self.engine.connect() as conn:
            return await outbox.due_candidates(conn, now, per_url=per_url, per_workspace=per_workspace, limit=limit)

    async def postpone_events(self, event_ids: list[str], now: float, until: float) -> int:
        async with self._write() as conn:
            return await outbox.postpone(conn, event_ids, now, until)

    async def claim_event(self, event_id: str, now: float, lease_until: float, owner: str) -> outbox.Event | None:
        async with self._write() as conn:
            return await outbox.claim(conn, event_id, now, lease_until, owner)

    async def record_attempt(self, event: outbox.Event, **kwargs: Any) -> str:
        async with self._write() as conn:
            return await outbox.record_attempt(conn, event, **kwargs)

    async def spread_overdue_events(self, now: float, spread: float, jitter: list[float], node_prefix: str,
                                    me: str) -> int:
        async with self._write() as conn:
            return await outbox.spread_overdue(conn, now, spread, jitter, node_prefix, me)

    async def pricing_lines(self, batch_id: str) -> list[dict[str, Any]]:
        async with self.engine.connect() as conn:
            return (await ledger.lines(conn, batch_id)).to_wire()

    async def credit_account(self, workspace_id: str) -> tuple[int | None, int]:
        async with self.engine.connect() as conn:
            return await ledger.account(conn, workspace_id)

    async def grant_credit(self, workspace_id: str, amount_nanos: int | None, now: float) -> tuple[int | None, int]:
        async with self._write() as conn:
            await self._lock_credit(conn, workspace_id)
            await ledger.grant(conn, workspace_id, amount_nanos, now)
            return await ledger.account(conn, workspace_id)

    async def _lock_credit(self, conn: AsyncConnection, workspace_id: str) -> None:
        """Several API processes may hold or grant credit for one workspace at once: on PostgreSQL take its
        credits row lock first, so the read-check-write in the ledger cannot over-commit (SQLite: one writer)."""
        if self.is_postgresql:
            await conn.execute(select(credits.c.workspace_id).where(credits.c.workspace_id == workspace_id)
                               .with_for_update())

    async def webhook_state(self, batch_id: str) -> dict[str, Any]:
        async with self.engine.connect() as conn:
            return await outbox.state(conn, batch_id)

    async def batch_details(
        self, with_webhook: list[str], priced: list[str]
    ) -> tuple[dict[str, dict[str, Any]], dict[str, list[dict[str, Any]]]]:
        """Webhook states and pricing lines of a page of batches in three queries (not three per batch)."""
        async with self.engine.connect() as conn:
            states = await outbox.states(conn, with_webhook)
            lines = {b: p.to_wire() for b, p in (await ledger.lines_of(conn, priced)).items()}
        return states, lines
