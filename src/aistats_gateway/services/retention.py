"""Retention: files whose `expires_at` has passed are removed, as if their owner had deleted them.

`expires_at` comes from the uploader's `expires_after`, the batch's `output_expires_after`, or the
`[retention]` defaults. Worker processes run the sweep (API-only processes do not); several workers
sweeping at once are harmless because a file is deleted by one statement and the others find nothing.
Removal goes through `FileService.delete`, so an input file that expires while its batch still needs it
is treated exactly like one its owner deleted then. Idempotency keys past their TTL are dropped too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aistats_gateway.clock import Clock
from aistats_gateway.config import RetentionConfig
from aistats_gateway.errors import NotFound
from aistats_gateway.services.files import FileService
from aistats_gateway.storage.store import Store
from aistats_gateway.tasks import cancel_and_wait

log = logging.getLogger(__name__)
PAGE = 500


class RetentionSweeper:
    def __init__(self, store: Store, files: FileService, clock: Clock, cfg: RetentionConfig) -> None:
        self.store = store
        self.files = files
        self.clock = clock
        self.cfg = cfg
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="retention")

    async def stop(self) -> None:
        await cancel_and_wait([self._task])
        self._task = None

    async def _run(self) -> None:
        while True:
            try:
                await self.sweep()
            except asyncio.CancelledError:
                raise
            except Exception:  # e.g. the database is locked by another process: try again next round
                log.exception("retention sweep failed; retrying next round")
            await asyncio.sleep(self.cfg.sweep_seconds)

    async def sweep(self) -> int:
        """Remove every file expired by now, then the per-line rows of batches that ended long enough ago;
        the number of files removed."""
        removed = await self._expired_files()
        await self.store.idempotency.purge_expired(self.clock.now())  # keys past their 24 h answer nothing
        if self.cfg.batch_rows_seconds is not None:
            now = self.clock.now()
            purged = 0
            while await self.store.items.purge_ended_batch_rows(now - self.cfg.batch_rows_seconds, int(now)):
                purged += 1
            if purged:
                log.info("retention: purged the per-line rows of %d ended batch(es)", purged)
        return removed

    async def _expired_files(self) -> int:
        removed = 0
        while True:
            expired = await self.store.files.expired(int(self.clock.now()), PAGE)
            for workspace_id, file_id in expired:
                with contextlib.suppress(NotFound):  # another process removed it first
                    await self.files.delete(workspace_id, file_id)
                    removed += 1
            if len(expired) < PAGE:
                break
        if removed:
            log.info("retention: removed %d expired file(s)", removed)
        return removed
