"""Committing: settled lines go to the database in groups, one transaction per group (never one per line).

A settled line stops counting against the lines held in memory at once (more are leased right away); its
settlement and the request-log rows of its attempts wait in a buffer that the committer flushes every
`commit_interval_seconds`, or as soon as `commit_max_items` are waiting. A commit that fails keeps its group
for the next try; `stop()` never cancels one half-way (the flush lock), since its outcome would be unknown.
After a commit, batches whose lines are all settled go to the finalizer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict

from aistats_gateway.domain.batch import BatchStatus
from aistats_gateway.executor.core import ExecutorCore
from aistats_gateway.executor.state import Work
from aistats_gateway.storage.store import Settlement

log = logging.getLogger(__name__)


class Committing(ExecutorCore):
    """The Executor's committing part (see core.py)."""

    def _settle(self, settlement: Settlement) -> None:
        self.settle_buffer.append(settlement)
        # A settled item no longer takes a slot, even before its group commits: lease more now.
        self.in_memory -= 1
        if self.in_memory <= self._target // 2:
            self._wake.set()
        if len(self.settle_buffer) >= self.cfg.commit_max_items:
            self._flush_now.set()

    def _drop(self, work: Work) -> None:
        """Forget an item of a halted batch; it stays leased until the finalizer settles it."""
        state = self.batches.get(work.item.batch_id)
        self.in_memory -= 1
        if state is not None:
            state.outstanding -= 1
            self._maybe_finish_halt(work.item.batch_id)
        self._wake.set()

    async def _committer(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._flush_now.wait(), self.cfg.commit_interval_seconds)
            self._flush_now.clear()
            try:
                await self._flush()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("committing results failed; retrying")
                await asyncio.sleep(1.0)

    async def _flush(self) -> None:
        async with self._flush_lock:
            await self._flush_locked()

    async def _flush_locked(self) -> None:
        if not self.settle_buffer and not self.log_buffer:
            return
        group, self.settle_buffer = self.settle_buffer, []
        logs, self.log_buffer = self.log_buffer, []
        try:
            updated = await self.store.items.settle(group, self.clock.now(), logs)
        except BaseException:
            self.settle_buffer[:0] = group  # keep them for the next try
            self.log_buffer[:0] = logs
            raise
        self.failpoints.hit("after_settle")
        per_batch: dict[str, int] = defaultdict(int)
        for settlement in group:
            per_batch[settlement.batch_id] += 1
        for batch_id, n in per_batch.items():
            state = self.batches.get(batch_id)
            if state is not None:
                state.outstanding -= n
        for batch_id, batch in updated.items():
            state = self.batches.get(batch_id)
            if state is not None and state.halt is not None:
                self._maybe_finish_halt(batch_id)
            elif batch.status is BatchStatus.IN_PROGRESS and batch.counts.settled >= batch.total:
                self._finalize_soon(batch_id, BatchStatus.COMPLETED)
        self._wake.set()
