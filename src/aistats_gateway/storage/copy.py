"""Copy a stopped single-machine gateway (SQLite + local blobs) into a scaled-out one (PostgreSQL + S3).

Owns `aistats migrate --from-sqlite PATH [--from-blobs DIR]`: every table row by row in foreign-key
order (chunks of 1,000, in one transaction per table), then every blob a file row refers to, streamed
through the target BlobStore. The target must be migrated and empty (no workspaces yet, apart from what
this copy writes): a copy never merges two gateways' state. Stop the source gateway first (SIGTERM
drains it: requests on the wire finish and leases are handed back), so nothing changes while it copies;
leases still found in the source are copied as pending (their owner is gone).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from aistats_gateway.storage.blobs import BlobStore, LocalBlobStore
from aistats_gateway.storage.schema import ITEM_LEASED, ITEM_PENDING, files, metadata, workspaces

CHUNK = 1000


class CopyRefused(RuntimeError):
    """The target already holds state; the message says what."""


async def copy_gateway(source: AsyncEngine, target: AsyncEngine, source_blobs: LocalBlobStore, target_blobs: BlobStore,
                       progress: Callable[[str], None] = lambda _m: None) -> dict[str, int]:
    """Copy every table and every referenced blob; returns rows (and blobs) copied per table."""
    async with target.connect() as conn:
        existing = int(await conn.scalar(select(func.count()).select_from(workspaces)) or 0)
    if existing:
        raise CopyRefused(f"the target database already has {existing} workspace(s): copy into an empty, migrated "
                          "database (aistats migrate on the new DATABASE_URL first)")
    counts: dict[str, int] = {}
    for table in metadata.sorted_tables:  # parents before children
        copied = 0
        async with source.connect() as src, target.begin() as dst:
            result = await src.stream(select(table))
            async for chunk in result.partitions(CHUNK):
                rows = [_fix(table.name, dict(r._mapping)) for r in chunk]
                await dst.execute(insert(table), rows)
                copied += len(rows)
        counts[table.name] = copied
        progress(f"{table.name}: {copied} row(s)")
    blobs = 0
    async with source.connect() as src:
        keys = [r[0] for r in (await src.execute(select(files.c.blob_key).order_by(files.c.id))).all()]
    for key in keys:
        if not await source_blobs.exists(key):
            progress(f"blob {key}: missing in the source, skipped")
            continue
        writer = target_blobs.writer(key)
        try:
            async for data in source_blobs.read(key, 1024 * 1024):
                await writer.write(data)
        except BaseException:
            await writer.abort()
            raise
        await writer.commit()
        blobs += 1
    counts["blobs"] = blobs
    progress(f"blobs: {blobs}")
    return counts


def _fix(table: str, row: dict[str, Any]) -> dict[str, Any]:
    if table == "items" and row.get("status") == ITEM_LEASED:  # its owner is gone with the old gateway
        row.update(status=ITEM_PENDING, lease_owner=None, lease_expires_at=None)
    return row


def source_engine_url(path: Path) -> str:
    if not path.is_file():
        raise CopyRefused(f"--from-sqlite {path}: no such file (the source gateway's gateway.db)")
    return f"sqlite+aiosqlite:///{path}"
