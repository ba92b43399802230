"""Settling items: an item's outcome and its batch's counters change in ONE transaction.

Owns the settle of a group of outcomes (each item still leased gets its result, the next `seq` of its batch
— the results cursor — and its batch's counters move; its priced usage is added to the batch's pricing
lines; its failures are counted into the batch's error summary (error_summary.py); its request-log rows are
appended; a `batch.progress` event is queued when a 10 % bucket is crossed) and `fail_unfinished` (every
pending or leased item of a batch settled as failed). Functions here take the caller's connection;
`Items` (items.py) runs them in a write transaction and tells the listeners.

Only items still leased are settled, so an outcome can never be counted twice. Dialect difference kept
here: PostgreSQL applies a group with one `UPDATE … FROM unnest(…) RETURNING` per batch and so knows
exactly which items it applied; SQLite runs an executemany and, when its row count says some item was not
ours any more, finds the applied ones by the seq they took.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, bindparam, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from aistats_gateway.domain.batch import NOT_RUN_CODES, RequestCounts
from aistats_gateway.domain.events import delivery_key, progress_crossed
from aistats_gateway.domain.failures import failure_of
from aistats_gateway.domain.money import PricingRow
from aistats_gateway.storage import dialects, error_summary, ledger, usage
from aistats_gateway.storage.outbox import Outbox
from aistats_gateway.storage.records import BatchRecord, batch_record
from aistats_gateway.storage.schema import ITEM_FAILED, ITEM_LEASED, ITEM_PENDING, ITEM_SUCCEEDED, batches, items


@dataclass(frozen=True)
class Settlement:
    """The final outcome of one item, as the executor hands it to storage."""

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


# Built once (SQLAlchemy then reuses their compiled form from its cache without re-walking a freshly built
# statement per call): the executor commits through them all the time.
_SETTLE_ITEM = (
    update(items)
    .where(and_(items.c.batch_id == bindparam("b_id"), items.c.line == bindparam("b_line"),
                items.c.status == ITEM_LEASED))
    .values(
        status=bindparam("b_status"), result=bindparam("b_result"), attempts=bindparam("b_attempts"),
        input_tokens=bindparam("b_in"), output_tokens=bindparam("b_out"), seq=bindparam("b_seq"),
        settled_at=bindparam("b_now"), lease_owner=None, lease_expires_at=None, error_code=bindparam("b_code"),
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
        cancelled_lines=batches.c.cancelled_lines + bindparam("c_cancelled"),
        expired_lines=batches.c.expired_lines + bindparam("c_expired"),
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


_NOT_RUN_SLOT = {"cancelled": 4, "expired": 5}


def _codes(settlements: Sequence[Settlement]) -> list[str | None]:
    """Each failed line's code as stored in `items.error_code` (what the line inspector filters on), read from its
    error line by the one rule (domain.failures); None for a success."""
    return [None if s.succeeded else failure_of(s.result, None).code for s in settlements]


def _deltas(settlements: Sequence[Settlement], codes: Sequence[str | None]) -> dict[str, list[int]]:
    """Per batch (in id order: batch rows are locked in that order): [succeeded, failed, in, out, cancelled,
    expired] added (a native batch's provider may report lines it never ran: `batch_cancelled`/`batch_expired`)."""
    deltas: dict[str, list[int]] = {b: [0, 0, 0, 0, 0, 0] for b in sorted({s.batch_id for s in settlements})}
    for s, code in zip(settlements, codes, strict=True):
        d = deltas[s.batch_id]
        d[0 if s.succeeded else 1] += 1
        d[2] += s.input_tokens
        d[3] += s.output_tokens
        not_run = NOT_RUN_CODES.get(code or "")
        if not_run is not None:
            d[_NOT_RUN_SLOT[not_run]] += 1
    return deltas


async def _count(conn: AsyncConnection, deltas: dict[str, list[int]], now: float
                 ) -> tuple[dict[str, BatchRecord], dict[str, RequestCounts], dict[str, int]]:
    """Move the batches' counters first (locking their rows); (new records, counts before, seq before)."""
    out: dict[str, BatchRecord] = {}
    previous: dict[str, RequestCounts] = {}
    next_seq: dict[str, int] = {}
    for batch_id, (ok, bad, tin, tout, cancelled, expired) in deltas.items():
        row = (await conn.execute(_COUNT_BATCH, {"c_id": batch_id, "c_ok": ok, "c_bad": bad, "c_in": tin,
                                                 "c_out": tout, "c_n": ok + bad, "c_now": now,
                                                 "c_cancelled": cancelled, "c_expired": expired})).one()
        record = out[batch_id] = batch_record(row)
        # the counts before this group, derived from the row the update returned
        previous[batch_id] = RequestCounts(record.total, record.completed - ok, record.failed - bad,
                                           record.cancelled_lines - cancelled, record.expired_lines - expired)
        next_seq[batch_id] = row._mapping["settled_seq"] - ok - bad
    return out, previous, next_seq


def _params(settlements: Sequence[Settlement], codes: Sequence[str | None], next_seq: dict[str, int],
            now: float) -> list[dict[str, Any]]:
    params = []
    for s, code in zip(settlements, codes, strict=True):
        next_seq[s.batch_id] += 1
        params.append({
            "b_id": s.batch_id, "b_line": s.line, "b_status": ITEM_SUCCEEDED if s.succeeded else ITEM_FAILED,
            "b_result": s.result, "b_attempts": s.attempts, "b_in": s.input_tokens,
            "b_out": s.output_tokens, "b_seq": next_seq[s.batch_id], "b_now": now,
            "b_code": code,
        })
    return params


async def _apply_postgresql(conn: AsyncConnection, settlements: Sequence[Settlement],
                            params: Sequence[dict[str, Any]], now: float) -> tuple[list[Settlement], bool]:
    done = await dialects.settle_items(conn, params, now)
    if len(done) == len(settlements):
        return list(settlements), True
    return [s for s in settlements if (s.batch_id, s.line) in done], False


async def _apply_sqlite(conn: AsyncConnection, settlements: Sequence[Settlement],
                        params: Sequence[dict[str, Any]], now: float) -> tuple[list[Settlement], bool]:
    result = await conn.execute(_SETTLE_ITEM, params)
    if result.rowcount == len(settlements):
        return list(settlements), True
    # Only items that were still leased took this group's seq: those are the ones applied.
    applied: list[Settlement] = []
    by_batch: dict[str, list[tuple[Settlement, int]]] = {}
    for settlement, param in zip(settlements, params, strict=True):
        by_batch.setdefault(settlement.batch_id, []).append((settlement, param["b_seq"]))
    for batch_id, pairs in by_batch.items():
        rows = (await conn.execute(select(items.c.line, items.c.seq).where(and_(
            items.c.batch_id == batch_id, items.c.line.in_([s.line for s, _ in pairs]))))).all()
        seq_of = {row[0]: row[1] for row in rows}
        applied += [s for s, seq in pairs if seq_of.get(s.line) == seq]
    return applied, False


async def settle_in(conn: AsyncConnection, outbox: Outbox, settlements: Sequence[Settlement], now: float,
                    logs: Sequence[dict[str, Any]]) -> dict[str, tuple[BatchRecord, bool]]:
    """Settle a non-empty group in the caller's transaction: per batch touched, (its new record, whether a
    progress event was queued)."""
    codes = _codes(settlements)
    deltas = _deltas(settlements, codes)
    out, previous, next_seq = await _count(conn, deltas, now)
    params = _params(settlements, codes, next_seq, now)
    apply = _apply_postgresql if conn.dialect.name == "postgresql" else _apply_sqlite
    applied, complete = await apply(conn, settlements, params, now)
    await usage.append(conn, logs)
    for batch_id in deltas:
        mine = [s for s in applied if s.batch_id == batch_id]
        priced = [row for s in mine for row in s.usage_rows]
        if priced:
            await ledger.add_usage(conn, batch_id, priced)
        # Summed over the applied settlements only (as the pricing lines are), so a line settled twice by
        # racing workers never counts twice; a separate statement, and only when an answer had them.
        cached = sum(s.cached_tokens for s in mine)
        reasoning = sum(s.reasoning_tokens for s in mine)
        if cached or reasoning:
            out[batch_id] = batch_record((await conn.execute(_COUNT_DETAILS, {
                "d_id": batch_id, "d_cached": cached, "d_reasoning": reasoning})).one())
        # The error summary, over the applied failures only (as above): read from the lines just rendered.
        failures = [failure_of(s.result, None) for s in mine if not s.succeeded]
        await error_summary.add_in(conn, error_summary.tally(batch_id, ((f.custom_id or "", f) for f in failures)))
    if not complete:
        # Some items were not ours any more (or the driver cannot count an executemany):
        # recount from the item rows, which are the truth.
        for batch_id in deltas:
            out[batch_id] = await recount(conn, batch_id, now)
    result: dict[str, tuple[BatchRecord, bool]] = {}
    for batch_id, record in out.items():
        bucket = progress_crossed(previous[batch_id], record.counts)
        queued = bucket is not None and await outbox.queue(
            conn, record, "batch.progress", delivery_key("batch.progress", bucket), now)
        result[batch_id] = (record, queued)
    return result


async def recount(conn: AsyncConnection, batch_id: str, now: float) -> BatchRecord:
    """Set a batch's counters from its item rows (the truth)."""
    not_run: dict[str, int] = dict((await conn.execute(
        select(items.c.error_code, func.count())
        .where(and_(items.c.batch_id == batch_id, items.c.status == ITEM_FAILED,
                    items.c.error_code.in_(list(NOT_RUN_CODES))))
        .group_by(items.c.error_code))).all())
    rows = (await conn.execute(
        select(items.c.status, func.count(), func.coalesce(func.sum(items.c.input_tokens), 0),
               func.coalesce(func.sum(items.c.output_tokens), 0))
        .where(and_(items.c.batch_id == batch_id, items.c.status.in_([ITEM_SUCCEEDED, ITEM_FAILED])))
        .group_by(items.c.status))).all()
    done = {r[0]: r for r in rows}
    ok = done.get(ITEM_SUCCEEDED)
    bad = done.get(ITEM_FAILED)
    row = (await conn.execute(
        update(batches).where(batches.c.id == batch_id)
        .values(completed=ok[1] if ok else 0, failed=bad[1] if bad else 0,
                input_tokens=(ok[2] if ok else 0) + (bad[2] if bad else 0),
                output_tokens=(ok[3] if ok else 0) + (bad[3] if bad else 0), updated_at=now,
                cancelled_lines=int(not_run.get("batch_cancelled", 0)),
                expired_lines=int(not_run.get("batch_expired", 0)))
        .returning(*batches.c))).one()
    return batch_record(row)


async def fail_unfinished_in(conn: AsyncConnection, batch_id: str, code: str, now: float) -> BatchRecord:
    """Settle every pending or leased item of the batch as failed with `code`, and recount; idempotent."""
    cond = and_(items.c.batch_id == batch_id, items.c.status.in_([ITEM_PENDING, ITEM_LEASED]))
    target = (dialects.locked_items(cond, skip_locked=False) if conn.dialect.name == "postgresql"
              else update(items).where(cond))
    # The batch row first (as settle does): concurrent settles of this batch wait, and `base` is current.
    base = (await conn.execute(select(batches.c.settled_seq).where(batches.c.id == batch_id)
                               .with_for_update())).scalar_one()
    example = (await conn.execute(select(items.c.custom_id).where(cond).order_by(items.c.line).limit(1))).scalar()
    changed = await conn.execute(
        target.values(status=ITEM_FAILED, error_code=code, result=None, settled_at=now, seq=items.c.line + base,
                      lease_owner=None, lease_expires_at=None))
    if changed.rowcount and example is not None:
        rows = error_summary.tally(batch_id, [(example, failure_of(None, code))])
        rows[0]["count"] = changed.rowcount
        await error_summary.add_in(conn, rows)
    if changed.rowcount:
        top = await conn.scalar(select(func.max(items.c.line)).where(items.c.batch_id == batch_id))
        await conn.execute(update(batches).where(batches.c.id == batch_id).values(settled_seq=base + int(top or 0)))
    return await recount(conn, batch_id, now)
