"""The executor service: owns the background tasks that move batches from items to results.

Tasks: a scheduler (scheduling.py: leases items fairly across batches, reads their bodies, routes each line to
a lane), one pump per lane (lanes.py: pacing under RPM/TPM budgets, concurrency, round-robin by batch) which
starts one send task per request (attempts.py; what follows an attempt is decided by outcome.py), a committer
(commit.py: settles results in groups, one transaction per group), and a housekeeper (housekeeping.py: expiry,
cancels seen in the database, safety-net activation, retiring idle lanes: lanes.retirable). Validation and
finalization run as tracked jobs, one per batch at a time (finishing.py). Routing happens per attempt
(dispatch.py). Native batches run as provider batches through the NativeExecution strategy the executor is
given (strategy.py; native.py).

The Executor class is assembled here from those parts (each a class over ExecutorCore, core.py, which makes
the shared state and declares the parts' calls to each other); this module owns the lifecycle and the public
hooks the services call.

In-memory bookkeeping is only an accelerator: the database is the truth, and `recover()` rebuilds
everything from it at start (earlier incarnations' leases are released at once, not waited out).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aistats_gateway.domain.batch import BatchStatus
from aistats_gateway.executor.attempts import Attempts
from aistats_gateway.executor.commit import Committing
from aistats_gateway.executor.dispatch import Routing
from aistats_gateway.executor.finishing import Finishing
from aistats_gateway.executor.housekeeping import Housekeeping
from aistats_gateway.executor.scheduling import Scheduling
from aistats_gateway.executor.state import BatchState
from aistats_gateway.storage.records import BatchRecord
from aistats_gateway.tasks import cancel_and_wait

log = logging.getLogger(__name__)


class Executor(Scheduling, Routing, Attempts, Committing, Finishing, Housekeeping):
    """Construct with (settings, store, blobs, router, clock, failpoints, pricer, metrics, permits, native)."""

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        self._running = True
        await self.native.start(self._finalize_soon)
        await self.recover()
        self._tasks = [asyncio.create_task(self._scheduler(), name="scheduler"),
                       asyncio.create_task(self._committer(), name="committer"),
                       asyncio.create_task(self._housekeeper(), name="housekeeper")]

    async def stop(self, grace: float | None = None) -> None:
        """Graceful stop: lease nothing more, send nothing new, let requests on the wire finish (up to
        `grace` seconds), commit their results, and hand every other leased item back — so a restart
        sends no line twice."""
        grace = self.settings.shutdown_grace_seconds if grace is None else grace
        self._draining = True
        for state in self.batches.values():
            for handle in state.timers:
                handle.cancel()
                state.outstanding -= 1
                self.in_memory -= 1
            state.timers.clear()
        for lane in self.lanes.values():
            lane.close()
            for work in lane.drain():  # queued, not sent: handed back with the leases below
                self._drop(work)
        if self._sending:
            self._idle.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), grace)
            if self._sending:
                log.warning("stopping with %d request(s) still in flight after %.0fs", self._sending, grace)
        self._running = False
        await self.native.stop()  # provider batches keep running; only this process's tasks stop
        async with self._flush_lock:  # wait for a commit in progress, then stop everything
            await cancel_and_wait([*self._tasks, *self._pumps, *self._jobs.values(), *self._sends, *self._loads])
        self._tasks.clear()
        self._jobs.clear()
        await self._flush()
        released = await self.store.items.release_owner(self.boot_id)
        log.info("executor stopped; %d unsent item(s) handed back", released)

    async def recover(self) -> None:
        """Rebuild from the database: free earlier incarnations' leases at once, resume every batch."""
        released = await self.store.items.release_earlier_incarnations(self.node_prefix, self.boot_id)
        released += await self.store.items.release_expired(self.clock.now(), self.boot_id)
        if released:
            log.info("released %d leases of earlier incarnations", released)
        for batch in await self.store.batches.in_statuses(
            [BatchStatus.VALIDATING, BatchStatus.IN_PROGRESS, BatchStatus.FINALIZING, BatchStatus.CANCELLING]
        ):
            self.resume(batch)

    def resume(self, batch: BatchRecord) -> None:
        if self.native.adopt(batch):  # a native batch runs there, finalization included
            return
        if batch.status is BatchStatus.VALIDATING:
            self._job(batch.id, lambda: self._ingest(batch))
        elif batch.status is BatchStatus.IN_PROGRESS:
            self.activate(batch)
            if batch.counts.settled >= batch.total:
                self._finalize_soon(batch.id, BatchStatus.COMPLETED)
        elif batch.status is BatchStatus.FINALIZING:
            self._finalize_soon(batch.id, BatchStatus.COMPLETED)
        elif batch.status is BatchStatus.CANCELLING:
            self.halt(batch.id, BatchStatus.CANCELLED, batch.endpoint)

    # ------------------------------------------------------------------ public hooks
    def submitted(self, batch: BatchRecord) -> None:
        """A new batch was created: validate it in the background."""
        if self._running:
            self._job(batch.id, lambda: self._ingest(batch))

    def activate(self, batch: BatchRecord) -> None:
        if self.native.adopt(batch):  # not leased or sent from here
            return
        state = self.batches.get(batch.id)
        if state is None:
            self.batches[batch.id] = BatchState(batch.endpoint, batch.workspace_id, batch.session_id,
                                                prefs=batch.provider_prefs,
                                                single_model=batch.model is not None)
            self.order.add(batch.id, batch.workspace_id)
        elif state.halt is None:
            state.exhausted = False
        self._wake.set()

    def halt(self, batch_id: str, target: BatchStatus, endpoint: str) -> None:
        """Stop sending a batch's items (cancel or expiry); finalize once in-flight ones settle."""
        if self.native.halt(batch_id, target):  # its provider batches are cancelled
            return
        state = self.batches.setdefault(batch_id, BatchState(endpoint=endpoint))
        if state.halt is not None:
            self._maybe_finish_halt(batch_id)
            return
        state.halt = target
        for handle in state.timers:
            handle.cancel()
            state.outstanding -= 1
            self.in_memory -= 1
        state.timers.clear()
        for lane in self.lanes.values():
            for _work in lane.remove_batch(batch_id):  # queued, never sent: the finalizer settles them
                state.outstanding -= 1
                self.in_memory -= 1
        self._maybe_finish_halt(batch_id)

