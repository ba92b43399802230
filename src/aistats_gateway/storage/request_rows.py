"""The read model behind `GET /v1/batches/{id}/requests`: a page of a batch's lines with their attempts.

Reads only: the `items` rows of one batch in line order (filtered by row status, by "any failure", or by
an HTTP status one of the line's attempts got), each with its 0-based position among the batch's lines
(`request_index`: the page's offset when unfiltered, else a window over the batch's lines, so a filtered row
keeps the index it has unfiltered), and of the `request_log` rows of exactly those lines: the newest one,
how many, and their summed cost (index ix_request_log_batch_line, 0012). Rendering is domain/request_rows.py.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import and_, func, not_, or_, select

from aistats_gateway.domain.request_rows import HALTED
from aistats_gateway.storage.database import Database
from aistats_gateway.storage.schema import ITEM_FAILED, ITEM_LEASED, ITEM_PENDING, ITEM_SUCCEEDED, items, request_log

ITEM_COLUMNS = (items.c.line, items.c.custom_id, items.c.model, items.c.provider, items.c.status, items.c.error_code,
                items.c.result, items.c.attempts, items.c.settled_at, items.c.body, items.c.body_offset,
                items.c.body_length)
_STATUS = {"queued": ITEM_PENDING, "in_progress": ITEM_LEASED, "completed": ITEM_SUCCEEDED}


def _where(columns: Any, batch_id: str, flt: tuple[str, Any] | None) -> Any:
    """The filter of domain/request_rows.parse_filter as SQL over item columns."""
    if flt is None:
        return None
    kind, value = flt
    if kind == "error":
        return columns.status == ITEM_FAILED
    if kind == "code":
        answered = select(request_log.c.line).where(and_(request_log.c.batch_id == batch_id,
                                                         request_log.c.status_code == value))
        return columns.line.in_(answered)
    if value in _STATUS:
        return columns.status == _STATUS[value]
    halted = [code for code, status in HALTED.items() if status == value]
    if halted:
        return and_(columns.status == ITEM_FAILED, columns.error_code.in_(halted))
    return and_(columns.status == ITEM_FAILED,
                or_(columns.error_code.is_(None), not_(columns.error_code.in_(list(HALTED)))))


class RequestRows:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def page(self, batch_id: str, *, limit: int, offset: int,
                   flt: tuple[str, Any] | None) -> tuple[list[dict[str, Any]], bool]:
        """Item rows (as dicts, plus `request_index`) in line order, and whether more follow."""
        if flt is None:
            query = select(*ITEM_COLUMNS).where(items.c.batch_id == batch_id)
            query = query.order_by(items.c.line).offset(offset).limit(limit + 1)
        else:
            ranked = select(*ITEM_COLUMNS, (func.row_number().over(order_by=items.c.line) - 1).label("request_index")
                            ).where(items.c.batch_id == batch_id).subquery()
            query = (select(ranked).where(_where(ranked.c, batch_id, flt)).order_by(ranked.c.line)
                     .offset(offset).limit(limit + 1))
        async with self.db.read() as conn:
            rows = [dict(r._mapping) for r in (await conn.execute(query)).all()]
        if flt is None:
            for i, row in enumerate(rows):
                row["request_index"] = offset + i
        return rows[:limit], len(rows) > limit

    async def attempts(self, batch_id: str, lines: list[int]) -> dict[int, tuple[dict[str, Any], int, int | None]]:
        """Per line: (its newest request-log row, how many it has, their summed cost or None if none priced)."""
        if not lines:
            return {}
        cond = and_(request_log.c.batch_id == batch_id, request_log.c.line.in_(lines))
        ranked = select(
            request_log,
            func.row_number().over(partition_by=request_log.c.line, order_by=request_log.c.id.desc()).label("rank"),
            func.count().over(partition_by=request_log.c.line).label("tries"),
            func.sum(request_log.c.cost_nanos).over(partition_by=request_log.c.line).label("line_cost"),
        ).where(cond).subquery()
        async with self.db.read() as conn:
            found = (await conn.execute(select(ranked).where(ranked.c.rank == 1))).all()
        out: dict[int, tuple[dict[str, Any], int, int | None]] = {}
        for row in found:
            m = dict(row._mapping)
            cost = m.pop("line_cost")
            tries = m.pop("tries")
            m.pop("rank")
            out[int(m["line"])] = (m, int(tries), None if cost is None else int(cost))
        return out
