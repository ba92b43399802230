"""The request log and the usage aggregates read from it: the `request_log` rows.

Owns appending request-log rows (one per upstream attempt, in the settle transaction that stores their
outcome: `append()` takes the caller's connection), reading a batch's log a page at a time, and the
per-day totals behind `GET /v1/usage` (`daily_totals`, `batches_by_status`; services/usage.py shapes them).

Dialect differences kept here: the append is an idempotent bulk insert (rows already stored are skipped,
so re-applying a group whose commit was ambiguous is harmless), on SQLite straight to the driver's
executemany, which skips SQLAlchemy's per-row parameter processing; and `day_number`, rounding a Unix time
down to a day number, is compiled per dialect (`FLOOR` on PostgreSQL and elsewhere, an integer cast on
SQLite, whose core has no FLOOR before 3.35's optional math functions; the value is never negative here,
so truncation equals floor). The day constants are rendered inline, not as bind parameters, so the
expression in the select list and in GROUP BY is the same text, as PostgreSQL requires.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Integer, and_, case, func, literal_column, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.functions import FunctionElement

from aistats_gateway.storage.database import Database
from aistats_gateway.storage.schema import batches, request_log

DAY_SECONDS = 86_400
# (day number, model, provider, requests, succeeded, input tokens, output tokens, cost nanos)
DailyRow = tuple[int, str, str, int, int, int, int, int]


class day_number(FunctionElement[int]):  # a SQL function construct, named like func.*
    """floor(seconds / 86400) of a non-negative Unix time: the day number since 1970-01-01."""

    type = Integer()
    inherit_cache = True
    name = "day_number"


@compiles(day_number)
def _day_number_default(element: day_number, compiler: SQLCompiler, **kw: Any) -> str:
    return f"FLOOR(({compiler.process(element.clauses, **kw)}) / {DAY_SECONDS}.0)"


@compiles(day_number, "sqlite")
def _day_number_sqlite(element: day_number, compiler: SQLCompiler, **kw: Any) -> str:
    return f"CAST(({compiler.process(element.clauses, **kw)}) / {DAY_SECONDS}.0 AS INTEGER)"


async def append(conn: AsyncConnection, rows: Sequence[dict[str, Any]]) -> None:
    """Add request-log rows in the caller's transaction, skipping rows already stored."""
    if not rows:
        return
    if conn.dialect.name == "sqlite":
        columns = list(rows[0])
        sql = (f"INSERT OR IGNORE INTO {request_log.name} ({', '.join(columns)}) "
               f"VALUES ({', '.join('?' * len(columns))})")
        await conn.exec_driver_sql(sql, [tuple(row[c] for c in columns) for row in rows])
    else:
        await conn.execute(pg_insert(request_log).on_conflict_do_nothing(), list(rows))


class RequestLog:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def append(self, rows: Sequence[dict[str, Any]]) -> None:
        async with self.db.write() as conn:
            await append(conn, rows)

    async def page(
        self, workspace_id: str, batch_id: str, *, limit: int, offset: int, status: str | None
    ) -> tuple[list[dict[str, Any]], bool]:
        """A batch's log in id order; `status` "success", "error" or one HTTP status code."""
        query = select(request_log).where(and_(request_log.c.workspace_id == workspace_id,
                                               request_log.c.batch_id == batch_id))
        if status == "success":
            query = query.where(and_(request_log.c.status_code >= 200, request_log.c.status_code < 300))
        elif status == "error":
            query = query.where((request_log.c.status_code.is_(None)) | (request_log.c.status_code >= 300))
        elif status is not None:
            query = query.where(request_log.c.status_code == int(status))
        query = query.order_by(request_log.c.id).offset(offset).limit(limit + 1)
        async with self.db.read() as conn:
            rows = [dict(r._mapping) for r in (await conn.execute(query)).all()]
        return rows[:limit], len(rows) > limit

    async def entry(self, workspace_id: str, request_id: str) -> dict[str, Any] | None:
        async with self.db.read() as conn:
            row = (await conn.execute(select(request_log).where(and_(
                request_log.c.id == request_id, request_log.c.workspace_id == workspace_id)))).first()
        return dict(row._mapping) if row else None

    async def daily_totals(self, workspace_id: str, *, since: int, shift: int,
                           session_id: str | None) -> list[DailyRow]:
        """Per (local day, model, provider) totals of the log since `since`; a local day is the UTC day of
        the time shifted by `shift` seconds."""
        day: ColumnElement[int] = day_number(request_log.c.created_at + literal_column(str(shift)))
        ok = and_(request_log.c.status_code >= 200, request_log.c.status_code < 300)
        where = [request_log.c.workspace_id == workspace_id, request_log.c.created_at >= since]
        if session_id:
            where.append(request_log.c.session_id == session_id)
        query = (
            select(day.label("day"), request_log.c.model, request_log.c.provider, func.count(),
                   func.sum(case((ok, 1), else_=0)), func.sum(request_log.c.input_tokens),
                   func.sum(request_log.c.output_tokens), func.sum(func.coalesce(request_log.c.cost_nanos, 0)))
            .where(and_(*where))
            .group_by(day, request_log.c.model, request_log.c.provider)
            .order_by(day, request_log.c.model, request_log.c.provider)
        )
        async with self.db.read() as conn:
            rows = (await conn.execute(query)).all()
        return [(int(number), str(model), str(provider), int(count), int(ok_count or 0), int(tin or 0),
                 int(tout or 0), int(cost or 0)) for number, model, provider, count, ok_count, tin, tout, cost in rows]

    async def batches_by_status(self, workspace_id: str, *, since: int, session_id: str | None) -> dict[str, int]:
        """The workspace's batches created since `since`, counted per status."""
        where = [batches.c.workspace_id == workspace_id, batches.c.created_at >= since]
        if session_id:
            where.append(batches.c.session_id == session_id)
        query = select(batches.c.status, func.count()).where(and_(*where)).group_by(batches.c.status)
        async with self.db.read() as conn:
            return {str(s): int(n) for s, n in (await conn.execute(query)).all()}
