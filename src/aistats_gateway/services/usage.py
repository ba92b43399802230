"""Usage over time for a workspace: spend, requests and tokens per day and model, and batches by status.

Owns the shape of `GET /v1/usage` (the dashboard's overview): the window of local days asked for, and
the totals per day and model. The source is the request log (one row per upstream attempt, priced when it
answered) and the batches table, read by storage's `RequestLog` (storage/usage.py); nothing here writes.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from aistats_gateway.errors import InvalidRequest
from aistats_gateway.pricing.calculator import usd
from aistats_gateway.storage.usage import DAY_SECONDS, RequestLog

MAX_DAYS = 366
MAX_OFFSET_MINUTES = 14 * 60  # UTC-14..UTC+14 covers every zone in use
EPOCH = dt.date(1970, 1, 1)


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


async def usage(log: RequestLog, workspace_id: str, *, now: float, days: int, offset_minutes: int,
                session_id: str | None = None) -> Usage:
    """Per (local day, model, provider) totals over the last `days` local days, today included."""
    days, offset_minutes = parse_window(days, offset_minutes)
    shift = offset_minutes * 60
    today = (int(now) + shift) // DAY_SECONDS
    since = (today - days + 1) * DAY_SECONDS - shift  # local midnight `days - 1` days ago, as Unix seconds
    result = Usage(since=since, until=int(now), days=days, offset_minutes=offset_minutes)
    for number, model, provider, count, succeeded, tin, tout, cost in await log.daily_totals(
            workspace_id, since=since, shift=shift, session_id=session_id):
        totals = Totals(count, succeeded, count - succeeded, tin, tout, cost)
        result.rows.append((EPOCH + dt.timedelta(days=number), model, provider, totals))
    result.batches_by_status = await log.batches_by_status(workspace_id, since=since, session_id=session_id)
    return result
