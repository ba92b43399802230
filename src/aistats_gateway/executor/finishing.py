"""Finishing: one background job per batch at a time (validation or finalization), and finalization itself.

A batch is finalized when its lines are all settled (completed), or once a cancel or expiry has no line of it
left on the wire here (cancelled, expired). The stored status decides the target (a cancel or a completion may
have overtaken the one asked for); several processes may hold lines of a halted managed batch, so it waits
while another still has lines in flight. Writing the files and the terminal transition is finalizer.py's.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from aistats_gateway.domain.batch import BatchStatus
from aistats_gateway.domain.execution import ExecutionMode
from aistats_gateway.errors import StaleTransition
from aistats_gateway.executor.core import ExecutorCore
from aistats_gateway.executor.finalizer import finalize, purge_deleted_inputs

log = logging.getLogger(__name__)


class Finishing(ExecutorCore):
    """The Executor's finishing part (see core.py)."""

    def _maybe_finish_halt(self, batch_id: str) -> None:
        state = self.batches.get(batch_id)
        if state is not None and state.halt is not None and state.outstanding <= 0:
            self._finalize_soon(batch_id, state.halt)

    def _finalize_soon(self, batch_id: str, target: BatchStatus) -> None:
        self._job(batch_id, lambda: self._finalize(batch_id, target))

    async def _finalize(self, batch_id: str, target: BatchStatus) -> None:
        batch = await self.store.batches.get(batch_id)
        if batch is None or batch.status.terminal:
            self._forget(batch_id)
            return
        # The stored status decides the target: a cancel or a completion may have overtaken `target`.
        if batch.status is BatchStatus.CANCELLING:
            target = BatchStatus.CANCELLED
        elif batch.status is BatchStatus.FINALIZING:
            target = BatchStatus.COMPLETED
        if target in (BatchStatus.CANCELLED, BatchStatus.EXPIRED) and batch.execution != ExecutionMode.NATIVE:
            # Several processes may hold lines of this batch: hand back ours that were never sent, and wait
            # while another process still has lines on the wire (the sweep comes back), so an answer that is
            # on its way is kept rather than overwritten by `batch_cancelled`.
            await self.store.items.release_batch(batch_id, self.boot_id)
            if await self.store.items.leased_by_others(batch_id, self.boot_id, self.clock.now()):
                log.info("batch %s: other processes still have lines in flight; finalizing later", batch_id,
                         extra={"batch_id": batch_id})
                return
        try:
            if target is BatchStatus.COMPLETED and batch.status is BatchStatus.IN_PROGRESS:
                batch = await self.store.batches.transition(batch_id, BatchStatus.IN_PROGRESS, BatchStatus.FINALIZING,
                                                    self.clock.now())
            await finalize(batch, target, store=self.store, blobs=self.blobs, clock=self.clock,
                           failpoints=self.failpoints)
        except StaleTransition:
            log.info("batch %s moved while finalizing; re-checking", batch_id, extra={"batch_id": batch_id})
            current = await self.store.batches.get(batch_id)
            if current is not None and not current.status.terminal:
                self.resume(current)
            return
        self._forget(batch_id)
        try:
            await purge_deleted_inputs(self.store, self.blobs)  # this batch may have been its input's last reader
        except Exception:  # the housekeeper's sweep tries again
            log.exception("removing deleted input files failed")

    def _forget(self, batch_id: str) -> None:
        state = self.batches.pop(batch_id, None)
        if state is not None:
            self.order.remove(batch_id)

    def _job(self, batch_id: str, make: Callable[[], Awaitable[None]]) -> None:
        """Run one background job per batch at a time (validation or finalization)."""
        running = self._jobs.get(batch_id)
        if running is not None and not running.done():
            running.add_done_callback(lambda _t: self._job(batch_id, make) if self._running else None)
            return

        async def runner() -> None:
            try:
                await make()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("background job for %s failed; it will be retried", batch_id,
                              extra={"batch_id": batch_id})
                await asyncio.sleep(2.0)
                if self._running:
                    self._jobs.pop(batch_id, None)
                    self._job(batch_id, make)
                    return
            if self._jobs.get(batch_id) is task:
                del self._jobs[batch_id]

        task = asyncio.create_task(runner(), name=f"job-{batch_id}")
        self._jobs[batch_id] = task
