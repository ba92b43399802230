"""What differs between SQLite and PostgreSQL, kept out of the repositories' portable code.

Owns: engine construction per dialect (SQLite pragmas and its one-writer pool; PostgreSQL's pool),
the PostgreSQL-only statements the repositories use when several processes share one database — a settle
that reports exactly which items it applied (`UPDATE … FROM unnest(…) RETURNING`), and row-lock
ordering so concurrent transactions never wait on each other in a cycle — and the migration lock.

Lock order on PostgreSQL (why there are no deadlocks between workers): a transaction that touches a
batch row (settle, fail_unfinished, transition) locks it first, batches in id order; item rows are
then locked in (batch_id, line) order or skipped when locked (leasing, heart-beating and reclaiming
expired leases use SKIP LOCKED: a row locked by someone else is being settled or taken right now).

Nothing here runs on SQLite's hot path: each repository picks its statements once, at construction.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
from sqlalchemy import and_, bindparam, event, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from aistats_gateway.storage.schema import ITEM_LEASED, ITEM_PENDING, LEASED_COLUMNS, items

# pg_advisory_xact_lock key of schema migrations: processes starting together migrate one at a time.
MIGRATION_LOCK_KEY = 0x41495354  # "AIST"


def create_engine(url: str, *, busy_timeout_ms: int = 30_000, pool_size: int = 10) -> AsyncEngine:
    """An async engine; on SQLite, WAL journal and a busy timeout so writers wait instead of failing."""
    kwargs: dict[str, Any] = {
        "json_serializer": lambda v: orjson.dumps(v).decode(),
        "json_deserializer": orjson.loads,
    }
    is_sqlite = url.startswith("sqlite")
    if is_sqlite:
        kwargs["pool_size"] = 4
        kwargs["max_overflow"] = 4
    else:
        kwargs["pool_size"] = pool_size
        kwargs["max_overflow"] = pool_size
        kwargs["pool_pre_ping"] = True  # a restarted database server must not fail the next request
    engine = create_async_engine(url, **kwargs)
    if is_sqlite:

        @event.listens_for(engine.sync_engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

    return engine


_SETTLE_UNNEST = text("""
UPDATE items AS i SET status = v.status, result = v.result, attempts = v.attempts, input_tokens = v.tin,
       output_tokens = v.tout, seq = v.seq, settled_at = :now, lease_owner = NULL, lease_expires_at = NULL,
       error_code = v.code
FROM unnest(CAST(:lines AS integer[]), CAST(:statuses AS smallint[]), CAST(:results AS bytea[]),
            CAST(:attempts AS integer[]), CAST(:tin AS integer[]), CAST(:tout AS integer[]),
            CAST(:seqs AS bigint[]), CAST(:codes AS varchar[])) AS v(line, status, result, attempts, tin, tout, seq,
                                                                   code)
WHERE i.batch_id = :batch_id AND i.line = v.line AND i.status = 1
RETURNING i.line
""")


async def settle_items(conn: AsyncConnection, params: Sequence[dict[str, Any]], now: float) -> set[tuple[str, int]]:
    """Apply the settle `params` (settlement.py's `b_*` dicts) with one statement per batch; returns the
    (batch_id, line) pairs actually applied (items still leased), so nothing needs recounting on success.
    Items are locked in line order (the statement is fed sorted lines and PostgreSQL joins in that order
    for the small arrays used here; a deadlock would still be detected and the group retried)."""
    by_batch: dict[str, list[dict[str, Any]]] = {}
    for p in params:
        by_batch.setdefault(p["b_id"], []).append(p)
    applied: set[tuple[str, int]] = set()
    for batch_id in sorted(by_batch):
        group = sorted(by_batch[batch_id], key=lambda p: p["b_line"])
        rows = await conn.execute(_SETTLE_UNNEST, {
            "batch_id": batch_id, "now": now,
            "lines": [p["b_line"] for p in group], "statuses": [p["b_status"] for p in group],
            "results": [p["b_result"] for p in group], "attempts": [p["b_attempts"] for p in group],
            "tin": [p["b_in"] for p in group], "tout": [p["b_out"] for p in group],
            "seqs": [p["b_seq"] for p in group],
            "codes": [p["b_code"] for p in group],
        })
        applied.update((batch_id, int(r[0])) for r in rows)
    return applied


def locked_items(cond: Any, *, skip_locked: bool) -> Any:
    """An UPDATE target for the items matching `cond`, locked in (batch_id, line) order first.

    The locking SELECT is a MATERIALIZED CTE joined by key: as `IN (SELECT … FOR UPDATE)` PostgreSQL may
    re-scan the subquery per outer row, and a re-scan skips rows this very statement has just updated
    (with a LIMIT that leases more than asked; without one it can miss rows)."""
    keys = (select(items.c.batch_id, items.c.line).where(cond).order_by(items.c.batch_id, items.c.line)
            .with_for_update(skip_locked=skip_locked).cte("locked").prefix_with("MATERIALIZED"))
    return update(items).where(and_(items.c.batch_id == keys.c.batch_id, items.c.line == keys.c.line))


def _lease(skip_models: bool) -> Any:
    """Leasing on PostgreSQL: the lowest pending lines of a batch that no other worker has locked right now
    (with `skip_models`: of models other than the bound list `l_skip`)."""
    cond = and_(items.c.batch_id == bindparam("l_batch"), items.c.status == ITEM_PENDING)
    if skip_models:
        cond = and_(cond, items.c.model.not_in(bindparam("l_skip", expanding=True)))
    pick = (select(items.c.line).where(cond).order_by(items.c.line).limit(bindparam("l_limit"))
            .with_for_update(skip_locked=True).cte("picked").prefix_with("MATERIALIZED"))
    return (
        update(items)
        .where(and_(items.c.batch_id == bindparam("l_batch"), items.c.line == pick.c.line))
        .values(status=ITEM_LEASED, lease_owner=bindparam("l_owner"), lease_expires_at=bindparam("l_until"))
        .returning(*LEASED_COLUMNS)
    )


LEASE = _lease(False)
LEASE_SKIPPING = _lease(True)


async def lock_migrations(conn: AsyncConnection) -> None:
    """Serialize schema migrations of processes that start at the same moment (held until commit)."""
    if conn.dialect.name == "postgresql":
        await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
