"""Items: the `items` rows, one per line of a batch's input.

Owns ingest's inserts, leasing (atomically taking a batch's lowest pending lines) and every way a lease
ends (released, reclaimed when expired, heart-beaten while held), settling (settlement.py, run here in
one write transaction), the results cursor (`results_after`: settle order; `results_by_line`: line order)
and the purge of an ended batch's per-line rows.

Dialect differences kept here, chosen once at construction: on PostgreSQL several processes share the
database, so leases are taken with `FOR UPDATE SKIP LOCKED` and rows are locked in (batch_id, line) order
(dialects.py); ingest may run twice for one batch there, so its inserts skip rows already stored and add
nothing once the batch left `validating`. On SQLite (one process) ingest's rows go in as ONE statement over
a JSON array: SQLite then inserts the whole chunk without holding the GIL, while the event loop parses the
next one (an executemany takes the GIL back for every row: measured 35x slower so).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import and_, bindparam, delete, func, insert, not_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection

from aistats_gateway import ids
from aistats_gateway.domain.batch import BatchStatus
from aistats_gateway.domain.jsonl import settled_line
from aistats_gateway.domain.request_log import RequestLogRow
from aistats_gateway.storage import dialects
from aistats_gateway.storage.database import Database
from aistats_gateway.storage.outbox import Outbox
from aistats_gateway.storage.records import BatchRecord, ItemRecord, item_record
from aistats_gateway.storage.schema import (
    ITEM_FAILED,
    ITEM_LEASED,
    ITEM_PENDING,
    ITEM_SUCCEEDED,
    LEASED_COLUMNS,
    batches,
    items,
    request_log,
)
from aistats_gateway.storage.settlement import Settlement, fail_unfinished_in, settle_in
from aistats_gateway.storage.usage import append

log = logging.getLogger(__name__)

ItemRef = tuple[int, str, str, str, int, int]  # line, custom_id, model, provider, body_offset, body_length
_ITEM_REF_COLUMNS = ("INSERT INTO items (batch_id, line, custom_id, model, provider, body_offset, body_length, status, "
                     "attempts, input_tokens, output_tokens) ")
_INSERT_ITEM_REFS_JSON = (_ITEM_REF_COLUMNS + "SELECT ?, value->>0, value->>1, value->>2, value->>3, value->>4, "
                          f"value->>5, {ITEM_PENDING}, 0, 0, 0 FROM json_each(?)")
_INSERT_ITEM_REFS = _ITEM_REF_COLUMNS + f"VALUES (?, ?, ?, ?, ?, ?, ?, {ITEM_PENDING}, 0, 0, 0)"


@dataclass(frozen=True)
class ItemResult:
    line: int
    custom_id: str
    status: int
    result: bytes | None
    error_code: str | None

    @property
    def succeeded(self) -> bool:
        """Its line belongs in the output file (else in the error file)."""
        return self.status == ITEM_SUCCEEDED and self.result is not None

    def rendered(self) -> bytes:
        """Its line in the output or error file (also on the live results stream): one rendering for both."""
        return settled_line(ids.batch_request_id(), self.custom_id, self.result, self.error_code)


@dataclass(frozen=True)
class FailedLine:
    """A failed item as a retry reads it: its outcome, and where its raw line is (or its body, before 0007)."""

    line: int
    custom_id: str
    result: bytes | None
    error_code: str | None
    body: bytes | None
    body_offset: int | None
    body_length: int | None


def _lease_statement(skip_models: bool) -> Any:
    """Leasing on SQLite: the lowest pending lines of a batch (with `skip_models`: of models other than the
    list `l_skip`). Built once: the executor leases all the time."""
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


def _plain_target(cond: Any, *, skip_locked: bool) -> Any:
    """SQLite: an UPDATE of the items matching `cond` (one writer: nothing to lock in order)."""
    return update(items).where(cond)


async def _sqlite_has_json(conn: AsyncConnection) -> bool:
    """Whether this SQLite has json_each and the ->> operator (3.38+, or JSON1 compiled in); else row by row."""
    try:
        await conn.exec_driver_sql("SELECT value->>0 FROM json_each('[[1]]')")
    except OperationalError:
        log.warning("this SQLite has no json_each/->>: batch items are inserted row by row (slower validation)")
        return False
    return True


class Items:
    def __init__(self, db: Database, outbox: Outbox) -> None:
        self.db = db
        self.outbox = outbox
        pg = db.is_postgresql
        self._lease = dialects.LEASE if pg else _LEASE
        self._lease_skipping = dialects.LEASE_SKIPPING if pg else _LEASE_SKIPPING
        self._target = dialects.locked_items if pg else _plain_target
        self._insert = self._insert_postgresql if pg else self._insert_sqlite
        self._insert_refs = self._insert_refs_postgresql if pg else self._insert_refs_sqlite
        self._json_inserts: bool | None = None  # SQLite: bulk inserts over json_each? (known at first use)

    # ---------------------------------------------------------------- ingest
    async def discard_ingest(self, batch_id: str) -> None:
        """Drop the items an interrupted ingest left; only while the batch is still validating (under its row
        lock on PostgreSQL), so a second ingest of the same batch by another worker can never delete items
        that a finished ingest already handed to the executor."""
        async with self.db.write() as conn:
            status = await conn.scalar(select(batches.c.status).where(batches.c.id == batch_id).with_for_update())
            if status == BatchStatus.VALIDATING.value:
                await conn.execute(delete(items).where(items.c.batch_id == batch_id))

    async def insert(self, rows: Sequence[dict[str, Any]]) -> None:
        """Store validated items (rows of the `items` table)."""
        if rows:
            await self._insert(rows)

    async def insert_refs(self, batch_id: str, rows: Sequence[ItemRef]) -> None:
        """Store validated items of one batch that point into its input file (ingest's rows, as ItemRef tuples)."""
        if rows:
            await self._insert_refs(batch_id, rows)

    async def _insert_sqlite(self, rows: Sequence[dict[str, Any]]) -> None:
        async with self.db.write() as conn:
            await conn.execute(insert(items), list(rows))

    async def _insert_postgresql(self, rows: Sequence[dict[str, Any]]) -> None:
        """Workers may ingest one batch side by side until one of them moves it on: rows already stored are
        skipped and nothing is added once the batch left `validating`."""
        async with self.db.write() as conn:
            batch_ids = sorted({r["batch_id"] for r in rows})
            open_ids = set((await conn.execute(select(batches.c.id).where(and_(
                batches.c.id.in_(batch_ids), batches.c.status == BatchStatus.VALIDATING.value))
                .with_for_update(read=True))).scalars())
            keep = [r for r in rows if r["batch_id"] in open_ids]
            if keep:
                await conn.execute(pg_insert(items).on_conflict_do_nothing(), keep)

    async def _insert_refs_postgresql(self, batch_id: str, rows: Sequence[ItemRef]) -> None:
        await self._insert_postgresql([
            {"batch_id": batch_id, "line": r[0], "custom_id": r[1], "model": r[2], "provider": r[3],
             "body_offset": r[4], "body_length": r[5], "status": ITEM_PENDING, "attempts": 0, "input_tokens": 0,
             "output_tokens": 0} for r in rows])

    async def _insert_refs_sqlite(self, batch_id: str, rows: Sequence[ItemRef]) -> None:
        payload = orjson.dumps(rows)
        async with self.db.write() as conn:
            if self._json_inserts is None:
                self._json_inserts = await _sqlite_has_json(conn)
            # SQLite's JSON text functions stop at NUL: a (rare) chunk with an escaped NUL goes row by row.
            if self._json_inserts and b"\\u0000" not in payload:
                await conn.exec_driver_sql(_INSERT_ITEM_REFS_JSON, (batch_id, payload))
            else:
                await conn.exec_driver_sql(_INSERT_ITEM_REFS, [(batch_id, *r) for r in rows])

    # ---------------------------------------------------------------- leases
    async def lease(
        self, batch_id: str, owner: str, limit: int, lease_until: float, skip_models: Sequence[str] = ()
    ) -> list[ItemRecord]:
        """Atomically take up to `limit` pending items of a batch, lowest lines first; `skip_models` leaves
        the lines of those models pending (the executor's lanes for them are full)."""
        params: dict[str, Any] = {"l_batch": batch_id, "l_owner": owner, "l_limit": limit, "l_until": lease_until}
        statement = self._lease
        if skip_models:
            statement = self._lease_skipping
            params["l_skip"] = list(skip_models)
        async with self.db.write() as conn:
            rows = (await conn.execute(statement, params)).all()
        return sorted((item_record(r) for r in rows), key=lambda r: r.line)

    async def release_batch(self, batch_id: str, owner: str) -> int:
        """Put one owner's leased items of one batch back to pending (its unsent lines after a halt)."""
        return await self._release(and_(items.c.batch_id == batch_id, items.c.status == ITEM_LEASED,
                                        items.c.lease_owner == owner))

    async def leased_by_others(self, batch_id: str, owner: str, now: float) -> int:
        """Lines of a batch that another live process holds (unexpired leases; native jobs excluded): while
        there are any, a cancel or expiry must not settle them as unfinished — their answers may be coming."""
        async with self.db.read() as conn:
            value = (await conn.execute(select(func.count()).select_from(items).where(and_(
                items.c.batch_id == batch_id, items.c.status == ITEM_LEASED, items.c.lease_owner != owner,
                items.c.lease_expires_at >= now, not_(items.c.lease_owner.startswith("native:")))))).scalar_one()
        return int(value)

    async def release_owner(self, owner: str) -> int:
        """Put one owner's leased items back to pending (a graceful stop)."""
        return await self._release(and_(items.c.status == ITEM_LEASED, items.c.lease_owner == owner))

    async def release_earlier_incarnations(self, node_prefix: str, me: str) -> int:
        """At start: this node's earlier processes are gone, so their leases are free at once."""
        return await self._release(and_(items.c.status == ITEM_LEASED, items.c.lease_owner.startswith(node_prefix),
                                        items.c.lease_owner != me))

    async def release_expired(self, now: float, me: str) -> int:
        """Leases whose owner stopped heart-beating (another node died) go back to pending."""
        return await self._release(and_(items.c.status == ITEM_LEASED, items.c.lease_expires_at < now,
                                        items.c.lease_owner != me), skip_locked=True)

    async def heartbeat(self, owner: str, until: float) -> int:
        """Extend one owner's leases (PostgreSQL: an item locked right now is being settled or reclaimed: it
        needs no heartbeat)."""
        cond = and_(items.c.status == ITEM_LEASED, items.c.lease_owner == owner)
        async with self.db.write() as conn:
            result = await conn.execute(self._target(cond, skip_locked=True).values(lease_expires_at=until))
        return int(result.rowcount or 0)

    async def _release(self, cond: Any, *, skip_locked: bool = False) -> int:
        async with self.db.write() as conn:
            result = await conn.execute(self._target(cond, skip_locked=skip_locked)
                                        .values(status=ITEM_PENDING, lease_owner=None, lease_expires_at=None))
        return int(result.rowcount or 0)

    # ---------------------------------------------------------------- settling
    async def settle(
        self, settlements: Sequence[Settlement], now: float, logs: Sequence[RequestLogRow] = ()
    ) -> dict[str, BatchRecord]:
        """Store outcomes and bump their batches' counters in ONE transaction (see settlement.py), with the
        request-log rows `logs`. Returns the updated batch rows."""
        rows = [log.as_row() for log in logs]
        if not settlements:
            if rows:
                async with self.db.write() as conn:
                    await append(conn, rows)
            return {}
        async with self.db.write() as conn:
            settled = await settle_in(conn, self.outbox, settlements, now, rows)
        for record, queued in settled.values():
            self.db.emit(record, queued)
        return {batch_id: record for batch_id, (record, _queued) in settled.items()}

    async def fail_unfinished(self, batch_id: str, code: str, now: float) -> BatchRecord:
        """Settle every pending or leased item as failed with `code`, and recount; idempotent."""
        async with self.db.write() as conn:
            record = await fail_unfinished_in(conn, batch_id, code, now)
        self.db.emit(record)
        return record

    async def unsettled_count(self, batch_id: str) -> int:
        query = select(func.count()).select_from(items).where(
            and_(items.c.batch_id == batch_id, items.c.status.in_([ITEM_PENDING, ITEM_LEASED])))
        async with self.db.read() as conn:
            return int(await conn.scalar(query) or 0)

    # ---------------------------------------------------------------- results
    async def seq_of(self, batch_id: str, custom_id: str) -> int | None:
        """The settle position of a line (by custom_id), for resuming GET .../results; None if unknown."""
        async with self.db.read() as conn:
            row = (await conn.execute(select(items.c.seq, items.c.status).where(
                and_(items.c.batch_id == batch_id, items.c.custom_id == custom_id)))).first()
        if row is None:
            return None
        return int(row[0]) if row[0] is not None else -1

    async def results_after(self, batch_id: str, after_seq: int, limit: int) -> list[tuple[int, ItemResult]]:
        """Settled items in settle order after `after_seq`: what the results stream sends next."""
        query = (select(items.c.seq, items.c.line, items.c.custom_id, items.c.status, items.c.result,
                        items.c.error_code)
                 .where(and_(items.c.batch_id == batch_id, items.c.seq > after_seq)).order_by(items.c.seq).limit(limit))
        async with self.db.read() as conn:
            rows = (await conn.execute(query)).all()
        return [(int(r[0]), ItemResult(r[1], r[2], r[3], r[4], r[5])) for r in rows]

    async def results_by_line(self, batch_id: str, after_line: int, limit: int) -> list[ItemResult]:
        """Settled items in line order, a page at a time (keyset on line): for writing result files."""
        query = (select(items.c.line, items.c.custom_id, items.c.status, items.c.result, items.c.error_code)
                 .where(and_(items.c.batch_id == batch_id, items.c.line > after_line))
                 .order_by(items.c.line).limit(limit))
        async with self.db.read() as conn:
            rows = (await conn.execute(query)).all()
        return [ItemResult(r[0], r[1], r[2], r[3], r[4]) for r in rows]

    async def settled_by_line(self, batch_id: str, after_line: int, limit: int) -> list[ItemResult]:
        """Settled items only, in line order, a page at a time (a chain's merged results walk its root so)."""
        query = (select(items.c.line, items.c.custom_id, items.c.status, items.c.result, items.c.error_code)
                 .where(and_(items.c.batch_id == batch_id, items.c.line > after_line,
                             items.c.status.in_([ITEM_SUCCEEDED, ITEM_FAILED])))
                 .order_by(items.c.line).limit(limit))
        async with self.db.read() as conn:
            rows = (await conn.execute(query)).all()
        return [ItemResult(r[0], r[1], r[2], r[3], r[4]) for r in rows]

    async def settled_of(self, batch_ids: Sequence[str], custom_ids: Sequence[str]
                         ) -> list[tuple[str, ItemResult]]:
        """The settled items of these batches with these custom_ids, as (batch id, item): a page of a chain's
        merged results finds its lines' outcomes in the retries so."""
        if not batch_ids or not custom_ids:
            return []
        query = (select(items.c.batch_id, items.c.line, items.c.custom_id, items.c.status, items.c.result,
                        items.c.error_code)
                 .where(and_(items.c.batch_id.in_(list(batch_ids)), items.c.custom_id.in_(list(custom_ids)),
                             items.c.status.in_([ITEM_SUCCEEDED, ITEM_FAILED]))))
        async with self.db.read() as conn:
            rows = (await conn.execute(query)).all()
        return [(r[0], ItemResult(r[1], r[2], r[3], r[4], r[5])) for r in rows]

    async def failed_lines(self, batch_id: str, after_line: int, limit: int) -> list[FailedLine]:
        """Failed items in line order, a page at a time: what a retry chooses its lines from."""
        query = (select(items.c.line, items.c.custom_id, items.c.result, items.c.error_code, items.c.body,
                        items.c.body_offset, items.c.body_length)
                 .where(and_(items.c.batch_id == batch_id, items.c.line > after_line, items.c.status == ITEM_FAILED))
                 .order_by(items.c.line).limit(limit))
        async with self.db.read() as conn:
            rows = (await conn.execute(query)).all()
        return [FailedLine(*r) for r in rows]

    async def known_custom_ids(self, batch_id: str, custom_ids: Sequence[str], chunk: int = 1000) -> set[str]:
        """Which of `custom_ids` are lines of the batch (looked up a chunk at a time)."""
        found: set[str] = set()
        async with self.db.read() as conn:
            for start in range(0, len(custom_ids), chunk):
                part = list(custom_ids[start:start + chunk])
                found.update((await conn.execute(select(items.c.custom_id).where(and_(
                    items.c.batch_id == batch_id, items.c.custom_id.in_(part))))).scalars())
        return found

    async def purge_ended_batch_rows(self, ended_before: float, now: int, chunk: int = 5000) -> int:
        """Delete the per-line rows (items, request log) of one batch that ended before `ended_before`, a chunk
        per transaction so a big batch never holds the writer long; then mark it. The number of batches purged
        (0 or 1: the caller loops). A purge cut short is finished by the next call (the mark comes last)."""
        terminal = [s.value for s in BatchStatus if s.terminal]
        async with self.db.read() as conn:
            batch_id = (await conn.execute(
                select(batches.c.id).where(and_(batches.c.status.in_(terminal), batches.c.updated_at < ended_before,
                                                batches.c.rows_purged_at.is_(None)))
                .order_by(batches.c.updated_at).limit(1))).scalar()
        if batch_id is None:
            return 0
        for table, key in ((items, items.c.line), (request_log, request_log.c.id)):
            while True:
                some = select(key).where(table.c.batch_id == batch_id).limit(chunk).scalar_subquery()
                async with self.db.write() as conn:
                    gone = (await conn.execute(
                        delete(table).where(and_(table.c.batch_id == batch_id, key.in_(some))))).rowcount
                if gone < chunk:
                    break
        async with self.db.write() as conn:
            await conn.execute(update(batches).where(batches.c.id == batch_id).values(rows_purged_at=now))
        return 1
