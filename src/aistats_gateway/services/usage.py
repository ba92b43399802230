"""Usage over time for a workspace: spend, requests and tokens per day and model, and batches by status.

Owns the read-only aggregate queries behind `GET /v1/usage` (the dashboard's overview). The source is
the request log (one row per upstream attempt, priced when it answered) and the batches table; this
module only reads them, through the store's engine, and never writes.

Portable SQLAlchemy Core: the one non-portable piece, rounding a Unix time down to a day number, is
the `day_number` construct compiled per dialect (`FLOOR` on PostgreSQL and elsewhere, an integer cast
on SQLite, whose core has no FLOOR before 3.35's optional math functions; the value is never negative
here, so truncation equals floor). The day constants are rendered inline, not as bind parameters, so
the expression in the select list and in GROUP BY is the same text, as PostgreSQL requires.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Integer, and_, case, func, literal_column, select
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.functions import FunctionElement

from aistats_gateway.errors import InvalidRequest
from aistats_gateway.pricing.calculator import usd
from aistats_gateway.storage.schema import batches, request_log

DAY_SECONDS = 86_400
MAX_DAYS = 366
MAX_OFFSET_MINUTES = 14 * 60  # UTC-14..UTC+14 covers every zone in use
EPOCH = dt.date(1970, 1, 1)


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


@dataclass
class Totals:
    requests: int = 0
    succeeded: int = 0
    failed: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_nanos: int = 0

    def add(self, other: Totals) -> None:
        for name in ("requests", "succeeded", "failed", "input_tokens", "output_tokens", "cost_nanos"):
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def wire(self) -> dict[str, Any]:
        return {"requests": self.requests, "succeeded": self.succeeded, "failed": self.failed,
                "input_tokens": self.input_tokens, "output_tokens": self.output_tokens,
                "total_tokens": self.input_tokens + self.output_tokens,
                "cost_nanos": self.cost_nanos, "cost_usd": usd(self.cost_nanos)}


@dataclass
class Usage:
    since: int
    until: int
    days: int
    offset_minutes: int
    rows: list[tuple[dt.date, str, str, Totals]] = field(default_factory=list)
    batches_by_status: dict[str, int] = field(default_factory=dict)

    def wire(self, workspace_id: str, session_id: str | None) -> dict[str, Any]:
        totals = Totals()
        for *_, t in self.rows:
            totals.add(t)
        first = self.until_date() - dt.timedelta(days=self.days - 1)
        return {
            "object": "usage", "workspace_id": workspace_id, "session_id": session_id,
            "days": self.days, "tz_offset_minutes": self.offset_minutes, "from": self.since, "to": self.until,
            "dates": [(first + dt.timedelta(days=i)).isoformat() for i in range(self.days)],
            "models": sorted({model for _, model, _, _ in self.rows}),
            "totals": totals.wire(), "batches_by_status": self.batches_by_status,
            "data": [{"date": day.isoformat(), "model": model, "provider": provider, **t.wire()}
                     for day, model, provider, t in self.rows],
        }

    def until_date(self) -> dt.date:
        return EPOCH + dt.timedelta(days=(self.until + self.offset_minutes * 60) // DAY_SECONDS)


def parse_window(days: int, offset_minutes: int) -> tuple[int, int]:
    if not 1 <= days <= MAX_DAYS:
        raise InvalidRequest(f"'days' must be between 1 and {MAX_DAYS}, got {days}.", code="invalid_value",
                             param="days")
    if not -MAX_OFFSET_MINUTES <= offset_minutes <= MAX_OFFSET_MINUTES:
        raise InvalidRequest(
            f"'tz_offset_minutes' must be between -{MAX_OFFSET_MINUTES} and {MAX_OFFSET_MINUTES} (minutes east of "
            f"UTC, e.g. 60 for UTC+1), got {offset_minutes}.", code="invalid_value", param="tz_offset_minutes")
    return days, offset_minutes


async def usage(engine: AsyncEngine, workspace_id: str, *, now: float, days: int, offset_minutes: int,
                session_id: str | None = None) -> Usage:
    """Per (local day, model, provider) totals over the last `days` local days, today included."""
    days, offset_minutes = parse_window(days, offset_minutes)
    shift = offset_minutes * 60
    today = (int(now) + shift) // DAY_SECONDS
    since = (today - days + 1) * DAY_SECONDS - shift  # local midnight `days - 1` days ago, as Unix seconds
    day: ColumnElement[int] = day_number(request_log.c.created_at + literal_column(str(shift)))
    ok = and_(request_log.c.status_code >= 200, request_log.c.status_code < 300)
    where = [request_log.c.workspace_id == workspace_id, request_log.c.created_at >= since]
    batch_where = [batches.c.workspace_id == workspace_id, batches.c.created_at >= since]
    if session_id:
        where.append(request_log.c.session_id == session_id)
        batch_where.append(batches.c.session_id == session_id)
    query = (
        select(day.label("day"), request_log.c.model, request_log.c.provider, func.count(),
               func.sum(case((ok, 1), else_=0)), func.sum(request_log.c.input_tokens),
               func.sum(request_log.c.output_tokens), func.sum(func.coalesce(request_log.c.cost_nanos, 0)))
        .where(and_(*where))
        .group_by(day, request_log.c.model, request_log.c.provider)
        .order_by(day, request_log.c.model, request_log.c.provider)
    )
    by_status = (select(batches.c.status, func.count()).where(and_(*batch_where)).group_by(batches.c.status))
    result = Usage(since=since, until=int(now), days=days, offset_minutes=offset_minutes)
    async with engine.connect() as conn:
        for number, model, provider, count, succeeded, tin, tout, cost in (await conn.execute(query)).all():
            totals = Totals(int(count), int(succeeded or 0), int(count) - int(succeeded or 0), int(tin or 0),
                            int(tout or 0), int(cost or 0))
            result.rows.append((EPOCH + dt.timedelta(days=int(number)), str(model), str(provider), totals))
        result.batches_by_status = {str(s): int(n) for s, n in (await conn.execute(by_status)).all()}
    return result
