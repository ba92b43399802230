"""Workspace credit, holds and a batch's pricing lines: the `credits`, `credit_entries`, `batch_pricing` rows.

The functions take the caller's connection and run inside its transaction; `Ledger` is the repository for
what stands alone (an account's balance, a grant, a batch's pricing lines).

A batch's hold is taken in the transaction that creates it; its settlement — charge the actual cost of
its pricing lines, release the hold — runs in the transaction that gives it its terminal status. Since
that status change is a compare-and-set, settlement happens exactly once whatever crashes around it.
A workspace without a credits row (or with a NULL balance) is unlimited: nothing is held or refused.
On PostgreSQL several API processes may hold or grant credit for one workspace at once, so a hold or a
grant takes the workspace's credits row lock first (`lock_account`); SQLite has one writer.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import and_, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from aistats_gateway import ids
from aistats_gateway.domain.batch import BatchStatus
from aistats_gateway.domain.money import PricingLines, PricingRow, billing_reason, usd
from aistats_gateway.errors import InsufficientFunds
from aistats_gateway.storage.database import Database
from aistats_gateway.storage.schema import batch_pricing, credit_entries, credits


async def account(conn: AsyncConnection, workspace_id: str) -> tuple[int | None, int]:
    """(balance or None for unlimited, held)."""
    row = (await conn.execute(select(credits.c.balance_nanos, credits.c.held_nanos)
                              .where(credits.c.workspace_id == workspace_id))).first()
    return (None, 0) if row is None else (row[0], int(row[1]))


async def _entry(conn: AsyncConnection, workspace_id: str, batch_id: str | None, kind: str, amount: int,
                 now: float, note: str | None = None) -> None:
    await conn.execute(insert(credit_entries).values(id="cre_" + ids.ulid(), workspace_id=workspace_id,
                                                     batch_id=batch_id, kind=kind, amount_nanos=amount, note=note,
                                                     created_at=now))


async def grant(conn: AsyncConnection, workspace_id: str, amount: int | None, now: float) -> None:
    """Add `amount` nanos to the balance (a limited account starts at 0); None makes it unlimited."""
    balance, _held = await account(conn, workspace_id)
    exists = (await conn.execute(select(credits.c.workspace_id)
                                 .where(credits.c.workspace_id == workspace_id))).first()
    new_balance = None if amount is None else (balance or 0) + amount
    if exists is None:
        await conn.execute(insert(credits).values(workspace_id=workspace_id, balance_nanos=new_balance, held_nanos=0,
                                                  updated_at=now))
    else:
        await conn.execute(update(credits).where(credits.c.workspace_id == workspace_id)
                           .values(balance_nanos=new_balance, updated_at=now))
    await _entry(conn, workspace_id, None, "grant" if amount is not None else "unlimited", amount or 0, now)


async def hold(conn: AsyncConnection, workspace_id: str, batch_id: str, amount: int, now: float) -> str | None:
    """Reserve `amount` for a batch; 402 when the available balance cannot cover it. None: unlimited."""
    balance, held = await account(conn, workspace_id)
    if balance is None:
        return None
    available = balance - held
    if amount > available:
        raise InsufficientFunds(
            f"This batch may cost up to ${usd(amount)} (an upper bound: every line's input plus its full output "
            f"cap), but only ${usd(max(0, available))} of credit is available. Add credit or split the batch.",
            code="insufficient_funds",
            extra={"estimated_nanos": amount, "estimated_usd": usd(amount), "available_nanos": available,
                   "available_usd": usd(available)},
        )
    await conn.execute(update(credits).where(credits.c.workspace_id == workspace_id)
                       .values(held_nanos=credits.c.held_nanos + amount, updated_at=now))
    await _entry(conn, workspace_id, batch_id, "hold", amount, now)
    return "res_" + ids.ulid()


async def add_usage(conn: AsyncConnection, batch_id: str, rows: Sequence[PricingRow]) -> None:
    """Add quantities to the batch's pricing lines (upsert per line key)."""
    merged = PricingLines.from_rows(rows).rows() if len(rows) > 1 else list(rows)
    for row in merged:
        key = and_(batch_pricing.c.batch_id == batch_id, batch_pricing.c.provider == row.provider,
                   batch_pricing.c.model == row.model, batch_pricing.c.plan == row.plan,
                   batch_pricing.c.meter == row.meter, batch_pricing.c.unit_price_nanos == row.unit_price_nanos)
        changed = await conn.execute(update(batch_pricing).where(key)
                                     .values(quantity=batch_pricing.c.quantity + row.quantity))
        if not changed.rowcount:
            await conn.execute(insert(batch_pricing).values(
                batch_id=batch_id, provider=row.provider, model=row.model, plan=row.plan, meter=row.meter,
                unit_price_nanos=row.unit_price_nanos, unit_size=row.unit_size, quantity=row.quantity))


async def lines_of(conn: AsyncConnection, batch_ids: list[str]) -> dict[str, PricingLines]:
    """`lines` of many batches in one query (a page of the batch list)."""
    if not batch_ids:
        return {}
    rows = (await conn.execute(select(batch_pricing.c.batch_id, batch_pricing.c.provider, batch_pricing.c.model,
                                      batch_pricing.c.plan, batch_pricing.c.meter, batch_pricing.c.unit_size,
                                      batch_pricing.c.unit_price_nanos, batch_pricing.c.quantity)
                               .where(batch_pricing.c.batch_id.in_(batch_ids)))).all()
    grouped: dict[str, list[Any]] = {b: [] for b in batch_ids}
    for row in rows:
        grouped[row[0]].append(tuple(row)[1:])
    return {b: PricingLines.from_rows(group) for b, group in grouped.items()}


async def lines(conn: AsyncConnection, batch_id: str) -> PricingLines:
    rows = (await conn.execute(select(batch_pricing.c.provider, batch_pricing.c.model, batch_pricing.c.plan,
                                      batch_pricing.c.meter, batch_pricing.c.unit_size,
                                      batch_pricing.c.unit_price_nanos, batch_pricing.c.quantity)
                               .where(batch_pricing.c.batch_id == batch_id))).all()
    return PricingLines.from_rows(rows)


async def settle(conn: AsyncConnection, batch: Any, target: BatchStatus, now: float) -> dict[str, Any]:
    """Charge the actual cost, release the hold; returns the batch's billing columns. Call once, in the
    terminal transition's transaction (`batch` is the row as it was before that transition)."""
    priced = await lines(conn, batch.id)
    cost = priced.total_nanos()
    ran = any(row.quantity > 0 for row in priced.rows())
    if batch.reservation_id:
        await conn.execute(update(credits).where(credits.c.workspace_id == batch.workspace_id)
                           .values(held_nanos=credits.c.held_nanos - batch.reserved_nanos, updated_at=now))
        await _entry(conn, batch.workspace_id, batch.id, "release", batch.reserved_nanos, now)
    if cost > 0:
        await conn.execute(update(credits).where(and_(credits.c.workspace_id == batch.workspace_id,
                                                      credits.c.balance_nanos.is_not(None)))
                           .values(balance_nanos=credits.c.balance_nanos - cost, updated_at=now))
        await _entry(conn, batch.workspace_id, batch.id, "charge", cost, now)
    reason = billing_reason(ran=ran, cost_nanos=cost, failed_lines=batch.failed, target=target)
    status = None if not batch.reservation_id else ("settled" if ran else "released")
    return {"cost_nanos": cost, "billing_reason": reason, "billed_at": int(now), "reservation_status": status}


async def lock_account(conn: AsyncConnection, workspace_id: str) -> None:
    """PostgreSQL: take the workspace's credits row lock, so the read-check-write of a hold or a grant cannot
    over-commit when several processes do it at once (SQLite has one writer: nothing to lock)."""
    if conn.dialect.name == "postgresql":
        await conn.execute(select(credits.c.workspace_id).where(credits.c.workspace_id == workspace_id)
                           .with_for_update())


class Ledger:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def account(self, workspace_id: str) -> tuple[int | None, int]:
        """(balance or None for unlimited, held)."""
        async with self.db.read() as conn:
            return await account(conn, workspace_id)

    async def grant(self, workspace_id: str, amount_nanos: int | None, now: float) -> tuple[int | None, int]:
        """Add credit (None: make the workspace unlimited); the account afterwards."""
        async with self.db.write() as conn:
            await lock_account(conn, workspace_id)
            await grant(conn, workspace_id, amount_nanos, now)
            return await account(conn, workspace_id)

    async def pricing_lines(self, batch_id: str) -> list[dict[str, Any]]:
        """A batch's pricing lines in the wire shape."""
        async with self.db.read() as conn:
            return (await lines(conn, batch_id)).to_wire()

    async def pricing_lines_of(self, batch_ids: list[str]) -> dict[str, list[dict[str, Any]]]:
        """`pricing_lines` of a page of batches in one query."""
        async with self.db.read() as conn:
            return {b: p.to_wire() for b, p in (await lines_of(conn, batch_ids)).items()}
