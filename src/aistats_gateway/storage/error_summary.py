"""The error summary of a batch: its failed lines counted by (code, upstream status), with one example each.

Owns the `batch_errors` rows: `add_in` counts a group of failures in the caller's settle transaction (the
settle of a group and a cancel's or expiry's `fail_unfinished` call it after locking the batch row, so two
settles of one batch never race on these rows), and `ErrorSummaries` reads them for the batch object, most
frequent first. What a failure's code and status are is domain/failures.py's rule.

Dialect difference kept here: the counting upsert (INSERT … ON CONFLICT DO UPDATE) is spelled per dialect.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from aistats_gateway.domain.failures import Failure
from aistats_gateway.storage.database import Database
from aistats_gateway.storage.schema import batch_errors

NO_STATUS = 0  # stored for "no upstream answer" (a primary-key column cannot be NULL)


def tally(batch_id: str, failures: Iterable[tuple[str, Failure]]) -> list[dict[str, Any]]:
    """Rows to add for (custom_id, failure) pairs: one per (code, status), its count and first example."""
    rows: dict[tuple[str, int], dict[str, Any]] = {}
    for custom_id, failure in failures:
        key = (failure.code, failure.status_code or NO_STATUS)
        row = rows.get(key)
        if row is None:
            rows[key] = {"batch_id": batch_id, "code": key[0], "status_code": key[1], "count": 1,
                         "example_custom_id": custom_id[:512], "example_message": failure.message}
        else:
            row["count"] += 1
    return list(rows.values())


async def add_in(conn: AsyncConnection, rows: Sequence[dict[str, Any]]) -> None:
    """Count `rows` (from `tally`) into the summary; a (code, status) seen before keeps its first example."""
    if not rows:
        return
    dialect_insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    statement = dialect_insert(batch_errors)
    statement = statement.on_conflict_do_update(
        index_elements=[batch_errors.c.batch_id, batch_errors.c.code, batch_errors.c.status_code],
        set_={"count": batch_errors.c.count + statement.excluded.count})
    await conn.execute(statement, list(rows))  # tally() made the keys distinct


class ErrorSummaries:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def of(self, batch_ids: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
        """Per batch id, its summary as the batch object shows it (most frequent first)."""
        if not batch_ids:
            return {}
        query = (select(batch_errors).where(batch_errors.c.batch_id.in_(list(batch_ids)))
                 .order_by(batch_errors.c.batch_id, batch_errors.c.count.desc(), batch_errors.c.code,
                           batch_errors.c.status_code))
        async with self.db.read() as conn:
            rows = (await conn.execute(query)).all()
        out: dict[str, list[dict[str, Any]]] = {}
        for row in rows:
            m = row._mapping
            out.setdefault(m["batch_id"], []).append({
                "code": m["code"], "status_code": m["status_code"] or None, "count": int(m["count"]),
                "example": {"custom_id": m["example_custom_id"], "message": m["example_message"]}})
        return out
