"""Files: the `files` rows (their bytes are blobs: see blobs.py).

Owns storing, reading, paging and expiring a workspace's files, and deleting them without pulling an input
file from under a batch that still reads it: such a file is only marked deleted (the API no longer shows
it) until its last reading batch is terminal, then `purgeable()` hands it out and `forget()` drops the row.
"""

from __future__ import annotations

from sqlalchemy import and_, delete, insert, not_, or_, select, update

from aistats_gateway.domain.batch import BatchStatus
from aistats_gateway.domain.idempotency import IdempotencyKey
from aistats_gateway.storage.database import Database
from aistats_gateway.storage.idempotency import claim_in
from aistats_gateway.storage.records import FileRecord, file_record
from aistats_gateway.storage.schema import FILE_DELETED, batches, files

UNFINISHED = [s.value for s in BatchStatus if not s.terminal]


class Files:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def insert(self, record: FileRecord, key: IdempotencyKey | None = None) -> None:
        """With an idempotency `key`, its row is written first in the same transaction: KeyTaken (and nothing
        stored) if another request holds it."""
        async with self.db.write() as conn:
            if key is not None:
                await claim_in(conn, record.workspace_id, key, record.id, self.db.clock.now())
            await conn.execute(insert(files).values(**record.__dict__))

    async def get(self, workspace_id: str, file_id: str, *, include_deleted: bool = False) -> FileRecord | None:
        """A file of the workspace; one its owner deleted only with `include_deleted` (a batch reading it)."""
        cond = and_(files.c.id == file_id, files.c.workspace_id == workspace_id)
        if not include_deleted:
            cond = and_(cond, files.c.status != FILE_DELETED)
        async with self.db.read() as conn:
            row = (await conn.execute(select(files).where(cond))).first()
        return file_record(row) if row else None

    async def page(
        self, workspace_id: str, *, after: str | None, limit: int, purpose: str | None, ascending: bool,
        now: int | None = None,
    ) -> tuple[list[FileRecord], bool]:
        """A page of the workspace's files (not deleted); with `now`, without those expired by then."""
        query = select(files).where(and_(files.c.workspace_id == workspace_id, files.c.status != FILE_DELETED))
        if now is not None:
            query = query.where(or_(files.c.expires_at.is_(None), files.c.expires_at > now))
        if purpose:
            query = query.where(files.c.purpose == purpose)
        if after:
            query = query.where(files.c.id > after if ascending else files.c.id < after)
        query = query.order_by(files.c.id.asc() if ascending else files.c.id.desc()).limit(limit + 1)
        async with self.db.read() as conn:
            rows = (await conn.execute(query)).all()
        return [file_record(r) for r in rows[:limit]], len(rows) > limit

    async def expired(self, now: int, limit: int) -> list[tuple[str, str]]:
        """(workspace_id, file_id) of files whose expires_at has passed, oldest first (not those already deleted
        and waiting for their batches: the purge removes them)."""
        query = (select(files.c.workspace_id, files.c.id)
                 .where(and_(files.c.expires_at.is_not(None), files.c.expires_at <= now,
                             files.c.status != FILE_DELETED))
                 .order_by(files.c.expires_at).limit(limit))
        async with self.db.read() as conn:
            return [(row[0], row[1]) for row in (await conn.execute(query)).all()]

    async def delete(self, workspace_id: str, file_id: str) -> tuple[FileRecord, bool] | None:
        """Delete a file for its owner: (the record, whether its blob may go now), or None when there is no such file.

        Item rows point into their batch's input file, so while an unfinished batch reads it the row is only
        marked deleted and the blob stays. The file row is locked first (on PostgreSQL), as `Batches.insert`
        locks it, so a batch created at the same moment either sees the file gone or is seen here."""
        mine = and_(files.c.id == file_id, files.c.workspace_id == workspace_id, files.c.status != FILE_DELETED)
        async with self.db.write() as conn:
            row = (await conn.execute(select(files).where(mine).with_for_update())).first()
            if row is None:
                return None
            reader = await conn.scalar(select(batches.c.id).where(and_(
                batches.c.input_file_id == file_id, batches.c.status.in_(UNFINISHED))).limit(1))
            if reader is not None:
                await conn.execute(update(files).where(files.c.id == file_id).values(status=FILE_DELETED))
                return file_record(row), False
            await conn.execute(delete(files).where(files.c.id == file_id))
        return file_record(row), True

    async def purgeable(self, limit: int = 100) -> list[FileRecord]:
        """Files their owners deleted whose last reading batch has become terminal: their blobs can go now."""
        reading = select(batches.c.id).where(and_(batches.c.input_file_id == files.c.id,
                                                  batches.c.status.in_(UNFINISHED)))
        query = select(files).where(and_(files.c.status == FILE_DELETED, not_(reading.exists()))).limit(limit)
        async with self.db.read() as conn:
            return [file_record(r) for r in (await conn.execute(query)).all()]

    async def forget(self, file_id: str) -> None:
        """Drop the row of a deleted file whose blob is gone (see purgeable)."""
        async with self.db.write() as conn:
            await conn.execute(delete(files).where(and_(files.c.id == file_id, files.c.status == FILE_DELETED)))

    async def input_blob_key(self, batch_id: str) -> str | None:
        """The blob of a batch's input file (also after its owner deleted it: the row stays while the batch runs)."""
        query = (select(files.c.blob_key).select_from(batches.join(files, files.c.id == batches.c.input_file_id))
                 .where(batches.c.id == batch_id))
        async with self.db.read() as conn:
            return await conn.scalar(query)
