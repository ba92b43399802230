"""Housekeeping: what keeps the database's view and this process's in step, on a timer.

Heartbeats keep this process's leases alive (well within a lease, however long the sweep interval); expired
leases of dead processes are released; and the sweep expires batches past their window, picks up cancels and
batches no process holds (another process died, or a finalizer stalled), and removes input files deleted while
batches read them once those batches are over.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aistats_gateway.domain.batch import BatchStatus
from aistats_gateway.errors import StaleTransition
from aistats_gateway.executor.core import ExecutorCore
from aistats_gateway.executor.finalizer import purge_deleted_inputs

log = logging.getLogger(__name__)


class Housekeeping(ExecutorCore):
    """The Executor's housekeeping part (see core.py)."""

    async def _housekeeper(self) -> None:
        last_beat = 0.0
        while True:
            # Heartbeats must come well within a lease, however long the sweep interval is.
            await asyncio.sleep(min(self.cfg.expiry_check_seconds, self.cfg.lease_seconds / 3))
            try:
                now = self.clock.now()
                if now - last_beat >= self.cfg.lease_seconds / 3:
                    await self.store.items.heartbeat(self.boot_id, now + self.cfg.lease_seconds)
                    last_beat = now
                self.retire_idle_lanes()
                await self.store.items.release_expired(now, self.boot_id)
                await self.sweep()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("housekeeping failed")

    async def sweep(self) -> None:
        """Expire batches past their window; pick up cancels and batches this process does not hold; remove input
        files deleted while batches read them once those batches are over (also after a validation failure)."""
        try:
            await purge_deleted_inputs(self.store, self.blobs)
        except Exception:  # storage trouble must not hold up expiry and cancels
            log.exception("removing deleted input files failed")
        now = self.clock.now()
        for batch in await self.store.batches.in_statuses(
            [BatchStatus.VALIDATING, BatchStatus.IN_PROGRESS, BatchStatus.CANCELLING, BatchStatus.FINALIZING]
        ):
            state = self.batches.get(batch.id)
            if batch.status is BatchStatus.CANCELLING:
                if state is None or state.halt is None:
                    self.halt(batch.id, BatchStatus.CANCELLED, batch.endpoint)
                elif batch.id not in self._jobs:  # an earlier finalize waited for another process: try again
                    self._maybe_finish_halt(batch.id)
            elif batch.status is BatchStatus.FINALIZING:
                # Its finalizer died with its process (another worker's, or a stalled job): finalizing is
                # idempotent, so after a lease's length without progress any process may finish it.
                if batch.id not in self._jobs and now - batch.updated_at > self.cfg.lease_seconds:
                    self._finalize_soon(batch.id, BatchStatus.COMPLETED)
            elif batch.expires_at <= now:
                if batch.status is BatchStatus.VALIDATING:
                    job = self._jobs.pop(batch.id, None)
                    if job is not None:
                        job.cancel()
                    with contextlib.suppress(StaleTransition):
                        await self.store.items.fail_unfinished(batch.id, "batch_expired", now)
                        await self.store.batches.transition(batch.id, BatchStatus.VALIDATING, BatchStatus.EXPIRED, now)
                else:
                    self.halt(batch.id, BatchStatus.EXPIRED, batch.endpoint)
            elif batch.status is BatchStatus.IN_PROGRESS and state is None:
                if self.native.adopt(batch, wake=False):
                    # Its lines all settle when its provider batches end, and the runner then finalizes with
                    # the provider's outcome (expired, say): "all settled" must not make it `completed` here.
                    continue
                if batch.counts.settled >= batch.total and batch.id not in self._jobs:
                    self._finalize_soon(batch.id, BatchStatus.COMPLETED)  # settled by a process that died since
                else:
                    self.activate(batch)
            elif batch.status is BatchStatus.VALIDATING and batch.id not in self._jobs:
                self._job(batch.id, lambda b=batch: self._ingest(b))  # type: ignore[misc]
