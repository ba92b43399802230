"""Workspaces and their API keys: the `workspaces` and `api_keys` rows.

Owns creating a workspace once however many processes start together, storing a key's hash once (the
same key stored twice is one row), finding the workspace of an active key, listing, finding and revoking
keys. A key's secret is never stored, and no read here returns its hash (`_KEY_COLUMNS`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import and_, func, or_, select, update

from aistats_gateway.storage.database import Database
from aistats_gateway.storage.schema import KEY_CREATED, KEY_STATIC, api_keys, workspaces

# what `keys list` may show of a key: never its hash
_KEY_COLUMNS = (api_keys.c.id, api_keys.c.workspace_id, api_keys.c.prefix, api_keys.c.name, api_keys.c.kind,
                api_keys.c.created_at, api_keys.c.revoked_at)


class Workspaces:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def ensure(self, workspace_id: str, name: str) -> None:
        """Create the workspace unless it exists (processes starting together may both try)."""
        async with self.db.write() as conn:
            await conn.execute(self.db.insert_ignoring(workspaces).values(
                id=workspace_id, name=name, created_at=int(self.db.clock.now())))

    async def add_key(self, key_id: str, workspace_id: str, key_hash: str, prefix: str, name: str | None,
                      kind: str = KEY_CREATED) -> bool:
        """Store a key hash; False if that hash is already stored (same key: e.g. API processes starting
        together with the same AISTATS_API_KEY)."""
        values = {"id": key_id, "workspace_id": workspace_id, "key_hash": key_hash, "prefix": prefix, "name": name,
                  "kind": kind, "created_at": int(self.db.clock.now())}
        async with self.db.write() as conn:
            added = await conn.scalar(self.db.insert_ignoring(api_keys).values(**values).returning(api_keys.c.id))
        return added is not None

    async def for_key(self, key_hash: str) -> str | None:
        """The workspace of the active (not revoked) key with this hash."""
        async with self.db.read() as conn:
            return await conn.scalar(select(api_keys.c.workspace_id).where(
                and_(api_keys.c.key_hash == key_hash, api_keys.c.revoked_at.is_(None))))

    async def list_keys(self, workspace_id: str | None = None) -> list[dict[str, Any]]:
        query = select(*_KEY_COLUMNS).order_by(api_keys.c.id)
        if workspace_id is not None:
            query = query.where(api_keys.c.workspace_id == workspace_id)
        async with self.db.read() as conn:
            return [dict(r._mapping) for r in (await conn.execute(query)).all()]

    async def find_keys(self, key_id: str, key_hashes: Sequence[str]) -> list[dict[str, Any]]:
        """The keys (revoked or not) whose id is `key_id` or whose hash is one of `key_hashes`."""
        query = select(*_KEY_COLUMNS).where(or_(api_keys.c.id == key_id, api_keys.c.key_hash.in_(key_hashes)))
        async with self.db.read() as conn:
            return [dict(r._mapping) for r in (await conn.execute(query.order_by(api_keys.c.id))).all()]

    async def revoke_key(self, key_id: str, now: float) -> bool:
        """Revoke the one key with this id; False if there is none or it was already revoked."""
        async with self.db.write() as conn:
            return bool((await conn.execute(
                update(api_keys).where(and_(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None)))
                .values(revoked_at=int(now)))).rowcount)

    async def revoke_static_keys(self, keep_hash: str, now: float) -> list[dict[str, Any]]:
        """Revoke every active static key but the one with `keep_hash`; returns those revoked."""
        cond = and_(api_keys.c.kind == KEY_STATIC, api_keys.c.key_hash != keep_hash, api_keys.c.revoked_at.is_(None))
        async with self.db.write() as conn:
            rows = (await conn.execute(update(api_keys).where(cond).values(revoked_at=int(now))
                                       .returning(*_KEY_COLUMNS))).all()
        return [dict(r._mapping) for r in rows]

    async def count_keys(self) -> int:
        """Active keys in all workspaces."""
        query = select(func.count()).select_from(api_keys).where(api_keys.c.revoked_at.is_(None))
        async with self.db.read() as conn:
            return int(await conn.scalar(query) or 0)
