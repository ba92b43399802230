"""The line inspector's reads: a batch's item rows filtered and paged, and each line's attempts from the log.

Owns the filters (custom_id prefix, line state, error code), their page (keyset on the line number, or an
offset for "page N") and the count of what matches, one line by number, and the request-log rows of a set
of lines (indexed by (batch_id, line) since 0011). Read only: the executor and settlement own the rows.

Line states as the API names them (`LINE_STATES`): `pending`, `running` (leased), `succeeded`, `failed`
(tried and failed) and `not_run` (settled unsent: the batch was cancelled or expired first).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, func, not_, or_, select
from sqlalchemy.sql.elements import ColumnElement

from aistats_gateway.domain.batch import NOT_RUN_CODES
from aistats_gateway.storage.database import Database
from aistats_gateway.storage.schema import ITEM_FAILED, ITEM_LEASED, ITEM_PENDING, ITEM_SUCCEEDED, items, request_log

LINE_STATES = ("pending", "running", "succeeded", "failed", "not_run")
_NOT_RUN = list(NOT_RUN_CODES)


def state_of(status: int, error_code: str | None) -> str:
    """A stored item's state name (one of LINE_STATES)."""
    if status == ITEM_FAILED:
        return "not_run" if error_code in NOT_RUN_CODES else "failed"
    return {ITEM_PENDING: "pending", ITEM_LEASED: "running", ITEM_SUCCEEDED: "succeeded"}.get(status, "failed")


def _state_filter(state: str) -> ColumnElement[bool]:
    if state == "not_run":
        return and_(items.c.status == ITEM_FAILED, items.c.error_code.in_(_NOT_RUN))
    if state == "failed":
        return and_(items.c.status == ITEM_FAILED,
                    or_(items.c.error_code.is_(None), not_(items.c.error_code.in_(_NOT_RUN))))
    return items.c.status == {"pending": ITEM_PENDING, "running": ITEM_LEASED, "succeeded": ITEM_SUCCEEDED}[state]


@dataclass(frozen=True)
class LineFilter:
    custom_id: str | None = None  # a prefix (the whole id matches too)
    state: str | None = None  # one of LINE_STATES
    error_code: str | None = None

    def where(self, batch_id: str) -> ColumnElement[bool]:
        cond = [items.c.batch_id == batch_id]
        if self.custom_id:
            # substr, not LIKE: exact bytes (SQLite's LIKE ignores ASCII case, and % or _ in an id are literal)
            cond.append(func.substr(items.c.custom_id, 1, len(self.custom_id)) == self.custom_id)
        if self.state:
            cond.append(_state_filter(self.state))
        if self.error_code:
            cond.append(items.c.error_code == self.error_code)
        return and_(*cond)


_LINE_COLUMNS = (items.c.line, items.c.custom_id, items.c.model, items.c.provider, items.c.status,
                 items.c.attempts, items.c.error_code, items.c.input_tokens, items.c.output_tokens,
                 items.c.settled_at, items.c.body, items.c.body_offset, items.c.body_length, items.c.result)


class Lines:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def page(self, batch_id: str, where: LineFilter, *, after: int | None, offset: int,
                   limit: int) -> tuple[list[dict[str, Any]], bool, int]:
        """Lines matching `where` in line order, after line `after` (keyset) and skipping `offset` more;
        (rows, has_more, how many lines match in all)."""
        cond = where.where(batch_id)
        query = select(*_LINE_COLUMNS).where(cond if after is None else and_(cond, items.c.line > after))
        query = query.order_by(items.c.line).offset(offset).limit(limit + 1)
        async with self.db.read() as conn:
            rows = [dict(r._mapping) for r in (await conn.execute(query)).all()]
            matching = int(await conn.scalar(select(func.count()).select_from(items).where(cond)) or 0)
        return rows[:limit], len(rows) > limit, matching

    async def one(self, batch_id: str, line: int) -> dict[str, Any] | None:
        async with self.db.read() as conn:
            row = (await conn.execute(select(*_LINE_COLUMNS).where(and_(items.c.batch_id == batch_id,
                                                                          items.c.line == line)))).first()
        return dict(row._mapping) if row else None

    async def attempts(self, batch_id: str, lines: Sequence[int]) -> dict[int, list[dict[str, Any]]]:
        """Every request-log row of these lines, per line, oldest first."""
        found: dict[int, list[dict[str, Any]]] = {line: [] for line in lines}
        if not lines:
            return found
        query = (select(request_log).where(and_(request_log.c.batch_id == batch_id,
                                                request_log.c.line.in_(list(lines))))
                 .order_by(request_log.c.line, request_log.c.attempt, request_log.c.created_at))
        async with self.db.read() as conn:
            for row in (await conn.execute(query)).all():
                found[row.line].append(dict(row._mapping))
        return found
