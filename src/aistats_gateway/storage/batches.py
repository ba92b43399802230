"""Batches: the `batches` rows and their status machine.

Owns inserting a batch (with its credit hold and its `batch.created` event in the same transaction), the
status compare-and-set (`transition`, checked against `domain.transitions`; a terminal one settles the
batch's credit and queues its terminal webhook event in the same transaction, so both happen exactly
once), publishing the result files with the terminal status, and the reads of batches. Every committed
change is told to the Database's listeners after the commit.

Dialect differences kept here: the list's search by a metadata value (json_each on SQLite, json_each_text on
PostgreSQL); on PostgreSQL workers may validate one batch side by side, so the start of
a batch (validating → in_progress) first checks, under the batch row's lock, that every item is stored.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, func, insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection

from aistats_gateway.domain import transitions
from aistats_gateway.domain.batch import BatchStatus
from aistats_gateway.domain.events import STATUS_CHANGED, TERMINAL_EVENTS, delivery_key, status_change_key
from aistats_gateway.domain.idempotency import IdempotencyKey
from aistats_gateway.errors import NotFound, StaleTransition
from aistats_gateway.storage import ledger
from aistats_gateway.storage.database import Database
from aistats_gateway.storage.idempotency import claim_in
from aistats_gateway.storage.outbox import Outbox
from aistats_gateway.storage.records import BatchRecord, FileRecord, batch_record
from aistats_gateway.storage.schema import FILE_DELETED, batches, files, items

_RUNNING = ["validating", "in_progress", "finalizing", "cancelling"]


async def transition_in(
    conn: AsyncConnection, outbox: Outbox, batch_id: str, current: BatchStatus, target: BatchStatus, now: float,
    **values: Any,
) -> tuple[BatchRecord, bool]:
    """The status compare-and-set in the caller's transaction, with the settlement and the terminal webhook
    event of a terminal target; (the new record, whether an event was queued). StaleTransition if the batch
    is no longer `current`."""
    stamp = transitions.check(current, target)
    values[stamp] = int(now)
    if target.terminal:
        before = (await conn.execute(select(batches).where(batches.c.id == batch_id))).first()
        if before is None or before._mapping["status"] != current.value:
            raise StaleTransition(f"{batch_id} is not {current.value}")
        # Settlement rides on the terminal compare-and-set: it happens exactly once.
        values.update(await ledger.settle(conn, batch_record(before), target, now))
    row = (await conn.execute(
        update(batches).where(and_(batches.c.id == batch_id, batches.c.status == current.value))
        .values(status=target.value, updated_at=now, **values).returning(*batches.c))).first()
    if row is None:
        raise StaleTransition(f"{batch_id} is not {current.value}")
    record = batch_record(row)
    queued = await outbox.queue(conn, record, STATUS_CHANGED, status_change_key(current.value, target.value), now)
    event = TERMINAL_EVENTS.get(target)
    queued = (event is not None and await outbox.queue(conn, record, event, delivery_key(event), now)) or queued
    return record, queued


async def _check_ingested(conn: AsyncConnection, batch_id: str) -> None:
    """PostgreSQL: workers may validate one batch side by side (a sweep finds it while another worker is
    still at it); one of them starting over deletes the items the other stored. So a batch starts only
    with every item stored: checked under its row lock, which a deleting ingest needs too."""
    total = await conn.scalar(select(batches.c.total).where(batches.c.id == batch_id).with_for_update())
    stored = await conn.scalar(select(func.count()).select_from(items).where(items.c.batch_id == batch_id))
    if total is not None and int(stored or 0) < int(total):
        raise StaleTransition(f"{batch_id}: only {stored} of {total} items are stored (another ingest of this "
                              "batch is rewriting them; the last one to finish starts it)")


def _prefix(column: Any, prefix: str) -> Any:
    # substr, not LIKE: exact on both dialects (SQLite's LIKE ignores ASCII case; `_` in ids is a LIKE wildcard)
    return func.substr(column, 1, len(prefix)) == prefix


# A metadata value of a batch, on each dialect (metadata is a JSON object of strings, or NULL / JSON null).
_METADATA_HAS_SQLITE = "EXISTS (SELECT 1 FROM json_each(batches.metadata) AS m WHERE m.value = :metadata_value)"
_METADATA_HAS_POSTGRESQL = ("EXISTS (SELECT 1 FROM json_each_text(CASE WHEN json_typeof(batches.metadata) = 'object' "
                            "THEN batches.metadata ELSE '{}'::json END) AS m WHERE m.value = :metadata_value)")


@dataclass(frozen=True)
class BatchSearch:
    """The list's search: an id prefix, any metadata value (exactly), a session id prefix."""

    id_prefix: str | None = None
    metadata_value: str | None = None
    session_prefix: str | None = None

    def conditions(self, metadata_has: str) -> list[Any]:
        out = []
        if self.id_prefix:
            out.append(_prefix(batches.c.id, self.id_prefix))
        if self.session_prefix:
            out.append(_prefix(batches.c.session_id, self.session_prefix))
        if self.metadata_value:
            out.append(text(metadata_has).bindparams(metadata_value=self.metadata_value))
        return out


class Batches:
    def __init__(self, db: Database, outbox: Outbox) -> None:
        self.db = db
        self.outbox = outbox
        self._check_start = _check_ingested if db.is_postgresql else None
        self._metadata_has = _METADATA_HAS_POSTGRESQL if db.is_postgresql else _METADATA_HAS_SQLITE

    async def insert(self, values: dict[str, Any], hold_nanos: int | None = None,
                     key: IdempotencyKey | None = None) -> BatchRecord:
        """Insert the batch; with `hold_nanos`, reserve that much credit in the same transaction (402 if the
        workspace cannot cover it — and then nothing is stored). With an idempotency `key`, its row is written
        first in the same transaction: KeyTaken (and nothing stored) if another request holds it."""
        async with self.db.write() as conn:
            if key is not None:
                await claim_in(conn, values["workspace_id"], key, values["id"], values["updated_at"])
            # The input file must still be there (locked against a concurrent delete: see Files.delete).
            found = await conn.scalar(select(files.c.id).where(and_(
                files.c.id == values["input_file_id"], files.c.workspace_id == values["workspace_id"],
                files.c.status != FILE_DELETED)).with_for_update(read=True))
            if found is None:
                raise NotFound(f"No file with id '{values['input_file_id']}' in this workspace.",
                               code="file_not_found_or_not_owned", param="input_file_id")
            if hold_nanos is not None:
                await ledger.lock_account(conn, values["workspace_id"])
                reservation = await ledger.hold(conn, values["workspace_id"], values["id"], hold_nanos,
                                                values["updated_at"])
                if reservation is not None:
                    values = {**values, "reservation_id": reservation, "reserved_nanos": hold_nanos,
                              "reservation_status": "held"}
            record = batch_record((await conn.execute(insert(batches).values(**values).returning(*batches.c))).one())
            queued = await self.outbox.queue(conn, record, "batch.created", "batch.created", values["updated_at"])
        self.db.emit(record, queued)
        return record

    async def get(self, batch_id: str, workspace_id: str | None = None) -> BatchRecord | None:
        query = select(batches).where(batches.c.id == batch_id)
        if workspace_id is not None:
            query = query.where(batches.c.workspace_id == workspace_id)
        async with self.db.read() as conn:
            row = (await conn.execute(query)).first()
        return batch_record(row) if row else None

    async def retries_of(self, batch_ids: Sequence[str]) -> dict[str, list[str]]:
        """Per batch id, the ids of the retries made of it (oldest first)."""
        if not batch_ids:
            return {}
        query = (select(batches.c.parent_batch_id, batches.c.id)
                 .where(batches.c.parent_batch_id.in_(list(batch_ids))).order_by(batches.c.id))
        async with self.db.read() as conn:
            rows = (await conn.execute(query)).all()
        out: dict[str, list[str]] = {}
        for parent, child in rows:
            out.setdefault(parent, []).append(child)
        return out

    async def chain(self, root_id: str) -> list[BatchRecord]:
        """A retry chain: its root and every retry made from it (directly or of a retry), oldest first."""
        query = (select(batches).where((batches.c.id == root_id) | (batches.c.root_batch_id == root_id))
                 .order_by(batches.c.created_at, batches.c.id))
        async with self.db.read() as conn:
            return [batch_record(r) for r in (await conn.execute(query)).all()]

    async def page(
        self, workspace_id: str, *, after: str | None, limit: int, status: str | None, session_id: str | None = None,
        search: BatchSearch | None = None,
    ) -> tuple[list[BatchRecord], bool]:
        """Newest first (ids are time-ordered ULIDs); `after` is the last id of the previous page."""
        query = select(batches).where(batches.c.workspace_id == workspace_id)
        if session_id:
            query = query.where(batches.c.session_id == session_id)
        for cond in (search or BatchSearch()).conditions(self._metadata_has):
            query = query.where(cond)
        if status:
            query = query.where(batches.c.status == status)
        if after:
            query = query.where(batches.c.id < after)
        query = query.order_by(batches.c.id.desc()).limit(limit + 1)
        async with self.db.read() as conn:
            rows = (await conn.execute(query)).all()
        return [batch_record(r) for r in rows[:limit]], len(rows) > limit

    async def in_statuses(self, statuses: Iterable[BatchStatus]) -> list[BatchRecord]:
        query = select(batches).where(batches.c.status.in_([s.value for s in statuses])).order_by(batches.c.id)
        async with self.db.read() as conn:
            return [batch_record(r) for r in (await conn.execute(query)).all()]

    async def state_counts(self) -> dict[str, dict[str, int]]:
        """Batches per status, and the lines of unfinished batches by state (cheap: batch counters only)."""
        async with self.db.read() as conn:
            by_status = (await conn.execute(select(batches.c.status, func.count()).group_by(batches.c.status))).all()
            lines = (await conn.execute(
                select(func.coalesce(func.sum(batches.c.total), 0), func.coalesce(func.sum(batches.c.completed), 0),
                       func.coalesce(func.sum(batches.c.failed), 0))
                .where(batches.c.status.in_(_RUNNING)))).one()
        total, completed, failed = (int(v) for v in lines)
        return {"batches": {str(s): int(n) for s, n in by_status},
                "lines": {"pending": total - completed - failed, "succeeded": completed, "failed": failed}}

    async def transition(
        self, batch_id: str, current: BatchStatus, target: BatchStatus, now: float, **values: Any
    ) -> BatchRecord:
        """Compare-and-set the status; raises StaleTransition if the batch is no longer `current`."""
        async with self.db.write() as conn:
            if self._check_start is not None and (current, target) == (BatchStatus.VALIDATING,
                                                                       BatchStatus.IN_PROGRESS):
                await self._check_start(conn, batch_id)
            record, queued = await transition_in(conn, self.outbox, batch_id, current, target, now, **values)
        self.db.emit(record, queued)
        return record

    async def update_fields(self, batch_id: str, **values: Any) -> None:
        """Non-status fields only (status goes through `transition`)."""
        assert "status" not in values
        async with self.db.write() as conn:
            row = (await conn.execute(
                update(batches).where(batches.c.id == batch_id).values(updated_at=self.db.clock.now(), **values)
                .returning(*batches.c))).first()
        if row is not None:
            self.db.emit(batch_record(row))

    async def publish_results(
        self, batch_id: str, current: BatchStatus, target: BatchStatus, now: float, new_files: Sequence[FileRecord],
        **values: Any,
    ) -> BatchRecord:
        """Register the output/error files and move to the terminal status in one transaction."""
        async with self.db.write() as conn:
            for rec in new_files:
                await conn.execute(insert(files).values(**rec.__dict__))
            record, queued = await transition_in(conn, self.outbox, batch_id, current, target, now, **values)
        self.db.emit(record, queued)
        return record
