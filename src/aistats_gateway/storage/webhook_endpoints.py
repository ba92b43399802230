"""Registered webhook endpoints: the `webhook_endpoints` rows of a workspace.

Owns creating, reading (never another workspace's: every read and write names the workspace), listing,
updating, soft-deleting (status `deleted`, `deleted_at`; a deleted endpoint is invisible to the API) and
rotating an endpoint's secret (the previous one kept with the end of its overlap window). The outbox reads an
endpoint in the transaction that queues an event (`subscription`), and the deliverer reads it again at each
attempt (`for_delivery`), so a disabled or deleted endpoint gets nothing more.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import and_, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from aistats_gateway.storage.database import Database
from aistats_gateway.storage.schema import WEBHOOK_ENDPOINT_DELETED, webhook_endpoints

Row = dict[str, Any]


async def subscription(conn: AsyncConnection, endpoint_id: str) -> tuple[str, list[str]] | None:
    """(status, events) of an endpoint, in the caller's transaction; None if there is no such endpoint."""
    row = (await conn.execute(select(webhook_endpoints.c.status, webhook_endpoints.c.events)
                              .where(webhook_endpoints.c.id == endpoint_id))).first()
    return (str(row[0]), list(row[1] or [])) if row is not None else None


class WebhookEndpoints:
    def __init__(self, db: Database) -> None:
        self.db = db

    def _mine(self, workspace_id: str, endpoint_id: str) -> Any:
        return and_(webhook_endpoints.c.id == endpoint_id, webhook_endpoints.c.workspace_id == workspace_id,
                    webhook_endpoints.c.status != WEBHOOK_ENDPOINT_DELETED)

    async def insert(self, values: Row) -> Row:
        async with self.db.write() as conn:
            row = (await conn.execute(insert(webhook_endpoints).values(**values)
                                      .returning(*webhook_endpoints.c))).one()
        return dict(row._mapping)

    async def get(self, workspace_id: str, endpoint_id: str) -> Row | None:
        """The workspace's endpoint unless deleted."""
        async with self.db.read() as conn:
            row = (await conn.execute(select(webhook_endpoints).where(self._mine(workspace_id, endpoint_id)))).first()
        return dict(row._mapping) if row is not None else None

    async def for_delivery(self, endpoint_id: str) -> Row | None:
        """The endpoint as it is now, whatever its status (the deliverer decides)."""
        async with self.db.read() as conn:
            row = (await conn.execute(select(webhook_endpoints)
                                      .where(webhook_endpoints.c.id == endpoint_id))).first()
        return dict(row._mapping) if row is not None else None

    async def page(self, workspace_id: str, *, limit: int, offset: int,
                   include_deleted: bool = False) -> tuple[list[Row], bool]:
        """Newest first (ids are time-ordered)."""
        query = select(webhook_endpoints).where(webhook_endpoints.c.workspace_id == workspace_id)
        if not include_deleted:
            query = query.where(webhook_endpoints.c.status != WEBHOOK_ENDPOINT_DELETED)
        query = query.order_by(webhook_endpoints.c.id.desc()).offset(offset).limit(limit + 1)
        async with self.db.read() as conn:
            rows = [dict(r._mapping) for r in (await conn.execute(query)).all()]
        return rows[:limit], len(rows) > limit

    async def update(self, workspace_id: str, endpoint_id: str, values: Row) -> Row | None:
        """Change an endpoint that is not deleted; None if there is none."""
        async with self.db.write() as conn:
            row = (await conn.execute(
                update(webhook_endpoints).where(self._mine(workspace_id, endpoint_id))
                .values(updated_at=int(self.db.clock.now()), **values).returning(*webhook_endpoints.c))).first()
        return dict(row._mapping) if row is not None else None

    async def delete(self, workspace_id: str, endpoint_id: str) -> bool:
        now = int(self.db.clock.now())
        return await self.update(workspace_id, endpoint_id, {"status": WEBHOOK_ENDPOINT_DELETED,
                                                             "deleted_at": now}) is not None

    async def rotate(self, workspace_id: str, endpoint_id: str, new_secret: str, overlap_seconds: int) -> Row | None:
        """Make `new_secret` current; the one it replaces keeps signing for `overlap_seconds`. One statement,
        so two rotations at once leave a consistent pair."""
        now = int(self.db.clock.now())
        return await self.update(workspace_id, endpoint_id, {
            "secret": new_secret, "previous_secret": webhook_endpoints.c.secret,
            "previous_secret_until": now + overlap_seconds if overlap_seconds > 0 else None})

    async def count(self, workspace_id: str) -> int:
        async with self.db.read() as conn:
            return int(await conn.scalar(select(func.count()).select_from(webhook_endpoints).where(and_(
                webhook_endpoints.c.workspace_id == workspace_id,
                webhook_endpoints.c.status != WEBHOOK_ENDPOINT_DELETED))) or 0)
