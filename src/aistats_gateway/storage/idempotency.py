"""Idempotency keys: one `idempotency_keys` row per (workspace, key), written with the object it created.

Owns `claim_in`, the FIRST statement of the transaction that inserts a batch or a file with a key: it inserts
the key's row, or takes over one older than the TTL; if a live row is there it raises `KeyTaken` (rolling the
transaction back before the object is inserted), and the caller answers that row's object. Two racing
requests with one key so make one object on both databases: PostgreSQL's insert waits for the other
transaction holding that key and then sees its row; on SQLite writers are serialized. `IdempotencyKeys`
reads a key before the work of a create (a plain replay costs no upload scan or file) and purges old rows.
The rules (fingerprints, TTL, reuse) are domain/idempotency.py's.

Dialect difference kept here: the upsert that takes over an expired key is spelled per dialect.
"""

from __future__ import annotations

from sqlalchemy import and_, delete, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from aistats_gateway.domain.idempotency import TTL, IdempotencyKey, StoredKey
from aistats_gateway.storage.database import Database
from aistats_gateway.storage.schema import idempotency_keys as keys


class KeyTaken(Exception):
    """The key already has a live row: answer its object (or 409 if it was for another request)."""

    def __init__(self, stored: StoredKey) -> None:
        super().__init__(f"idempotency key already used for {stored.object_id}")
        self.stored = stored


def _stored(row: object) -> StoredKey:
    m = row._mapping  # type: ignore[attr-defined]
    return StoredKey(m["fingerprint"], m["kind"], m["object_id"], int(m["created_at"]))


async def claim_in(conn: AsyncConnection, workspace_id: str, key: IdempotencyKey, object_id: str, now: float) -> None:
    """Record `key` for `object_id` in the caller's transaction (call it before inserting the object); raises
    KeyTaken if the key has a live row."""
    dialect_insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    values = {"fingerprint": key.fingerprint, "kind": key.kind, "object_id": object_id, "created_at": int(now)}
    statement = (dialect_insert(keys).values(workspace_id=workspace_id, key=key.key, **values)
                 .on_conflict_do_update(index_elements=[keys.c.workspace_id, keys.c.key], set_=values,
                                        where=keys.c.created_at <= int(now) - TTL)
                 .returning(keys.c.object_id))
    if (await conn.execute(statement)).first() is not None:
        return
    row = (await conn.execute(select(keys).where(and_(keys.c.workspace_id == workspace_id,
                                                      keys.c.key == key.key)))).one()
    raise KeyTaken(_stored(row))


class IdempotencyKeys:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def get(self, workspace_id: str, key: str) -> StoredKey | None:
        async with self.db.read() as conn:
            row = (await conn.execute(select(keys).where(and_(keys.c.workspace_id == workspace_id,
                                                              keys.c.key == key)))).first()
        return _stored(row) if row is not None else None

    async def purge_expired(self, now: float) -> int:
        """Delete rows past their TTL (they answer nothing any more)."""
        async with self.db.write() as conn:
            result = await conn.execute(delete(keys).where(keys.c.created_at <= int(now) - TTL))
        return int(result.rowcount or 0)
