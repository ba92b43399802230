"""Scheduling: which lines this process leases, when, and how their bodies reach the lanes; and admission to
validation.

The scheduler leases items fairly across batches (rotation.py: in turn across workspaces, each batch capped by
`_lease_cap`) up to a memory target that keeps every busy lane's window full; lines of models whose lanes are
full stay pending, so a mixed batch's fast models are not held to its slowest one's pace. The bodies of a leased
page that point into the batch's input file are read by one task per page (storage/bodies.py), outside the
lease transaction and without holding up the next lease. Validations run at most `validation_concurrency` at a
time, admitted in turn across workspaces.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time

from aistats_gateway.domain.batch import BatchStatus
from aistats_gateway.errors import InputFileUnavailable
from aistats_gateway.executor.core import ExecutorCore
from aistats_gateway.executor.ingest import ingest
from aistats_gateway.executor.state import BatchState, Work
from aistats_gateway.storage.records import BatchRecord, ItemRecord

log = logging.getLogger(__name__)
LEASE_CHUNK = 256


class Scheduling(ExecutorCore):
    """The Executor's scheduling half (see core.py)."""

    async def _ingest(self, batch: BatchRecord) -> None:
        await self._admit_validation(batch.workspace_id)
        try:
            result = await ingest(batch, store=self.store, blobs=self.blobs, router=self.router,
                                  limits=self.settings.limits, clock=self.clock, pricer=self.pricer,
                                  execution=self.native.resolve)
        finally:
            self._release_validation()
        if result is None:
            current = await self.store.batches.get(batch.id)
            if current is not None and current.status is BatchStatus.CANCELLING:
                self.halt(current.id, BatchStatus.CANCELLED, current.endpoint)
            return
        if result.status is BatchStatus.IN_PROGRESS:
            self.activate(result)

    async def _admit_validation(self, workspace_id: str) -> None:
        """Wait for one of `validation_concurrency` slots. Waiters are admitted in turn across workspaces
        (rotation.FairQueue), so one workspace's backlog of a thousand batches does not delay another's."""
        if self._validating < self.cfg.validation_concurrency and not len(self._validation_queue):
            self._validating += 1
            return
        ticket: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._validation_queue.push(workspace_id, ticket)
        try:
            await ticket
        except asyncio.CancelledError:
            if ticket.done() and not ticket.cancelled():
                self._release_validation()  # the slot was handed over just as this waiter was cancelled
            else:
                self._validation_queue.discard(workspace_id, ticket)
            raise

    def _release_validation(self) -> None:
        """Hand the slot to the next waiter (it keeps `_validating` as it is), or free it."""
        while (ticket := self._validation_queue.pop()) is not None:
            if not ticket.done():
                ticket.set_result(None)
                return
        self._validating -= 1

    async def _scheduler(self) -> None:
        while self._running and not self._draining:
            try:
                await self._schedule_round()
            except asyncio.CancelledError:
                raise
            except Exception:  # e.g. the database is locked by another process: pause, then go on
                log.exception("leasing failed; retrying in 1s")
                await asyncio.sleep(1.0)

    async def _schedule_round(self) -> None:
        while self._running and not self._draining:
            self._wake.clear()
            progressed = False
            target = self._target = self._memory_target()
            room = target - self.in_memory
            # A batch whose lines wait in slow lanes must not take every slot from the others.
            fair = max(LEASE_CHUNK // 4, 2 * target // max(1, len(self.order)))
            now = time.monotonic()
            for batch_id, share in self.order.plan(room, functools.partial(self._lease_cap, fair=fair, now=now)):
                state = self.batches.get(batch_id)
                if state is None or state.halt is not None or self._draining:
                    continue
                # Lines of models whose lanes are full stay pending, so a mixed batch's fast models are not
                # held to the pace of its slowest one (every leased slot would end up waiting in that lane).
                skip = [model for model, lane in state.lanes.items() if lane.saturated]
                if skip and len(skip) == len(state.lanes):
                    state.last_discovery = now  # a lease past every full lane: only to find models not seen yet
                leased = await self.store.items.lease(
                    batch_id, self.boot_id, share, self.clock.now() + self.cfg.lease_seconds, skip_models=skip)
                if len(leased) < share and not skip:
                    state.exhausted = True
                if leased:
                    self.failpoints.hit("after_lease")
                state.outstanding += len(leased)
                self.in_memory += len(leased)
                if any(item.body is None for item in leased):
                    self._load(batch_id, state, leased)
                else:  # rows from before items pointed into their input file
                    for item in leased:
                        self._enqueue(Work(item, state.endpoint, item.body or b"", attempts=item.attempts), state)
                progressed = progressed or bool(leased)
            self._forget_idle()
            if progressed and self.in_memory < self._memory_target():
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.cfg.poll_interval_seconds)

    def _lease_cap(self, batch_id: str, *, fair: int, now: float) -> int:
        """How many lines `batch_id` may lease now (0: pass it over this round)."""
        state = self.batches.get(batch_id)
        if state is None or state.exhausted or state.halt is not None:
            return 0
        if state.lanes and all(lane.saturated for lane in state.lanes.values()):
            # Every lane this batch has used is full. Leasing past all of them scans every pending line, so do
            # it only to find models not seen yet, and at most once a second.
            if state.single_model or now - state.last_discovery < 1.0:
                return 0
        return max(0, min(LEASE_CHUNK, fair - state.outstanding))

    def _load(self, batch_id: str, state: BatchState, items: list[ItemRecord]) -> None:
        task = asyncio.create_task(self._load_bodies(batch_id, state, items), name=f"bodies-{batch_id}")
        self._loads.add(task)
        task.add_done_callback(self._loads.discard)

    async def _load_bodies(self, batch_id: str, state: BatchState, items: list[ItemRecord]) -> None:
        """Read a leased page's bodies from the input file (coalesced ranged reads), then queue its lines. A
        failing read (storage unreachable) is retried with backoff while the items stay leased here; a file that
        is gone for good fails its lines (it cannot happen through the API: see Files.delete)."""
        rows = [(item.body, item.body_offset, item.body_length) for item in items]
        delay = 0.5
        missing = "The batch's input file could not be read; this line's request is not available."
        while True:
            try:
                bodies = await self.bodies.load(batch_id, rows)
                break
            except InputFileUnavailable as exc:
                log.error("batch %s: %s; its leased lines fail", batch_id, exc, extra={"batch_id": batch_id})
                bodies = [None] * len(items)
                break
            except Exception:
                log.exception("reading request bodies of %s failed; retrying in %.1fs", batch_id, delay,
                              extra={"batch_id": batch_id})
                if state.halt is not None or self._draining:
                    bodies = [None] * len(items)
                    break
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
        for item, body in zip(items, bodies, strict=True):
            work = Work(item, state.endpoint, body or b"", attempts=item.attempts)
            if state.halt is not None or self._draining:
                self._drop(work)  # the finalizer settles it (halt), or the next start sends it (drain)
            elif body is None:
                self._settle_error(work, "input_unreadable", missing)
            else:
                self._enqueue(work, state)

    def _memory_target(self) -> int:
        """Lines to hold leased here: enough to keep every busy lane's window full twice over, plus room
        for lanes that are not busy yet (the other models of a batch whose slow model fills its lane)."""
        want = sum(2 * lane.concurrency() for lane in self.lanes.values() if lane.queued or lane.in_flight)
        return self.cfg.concurrency * 2 + min(want, self.cfg.max_lane_concurrency * 4)

    def _forget_idle(self) -> None:
        for batch_id in list(self.order):
            state = self.batches[batch_id]
            if state.exhausted and state.outstanding == 0 and state.halt is None and batch_id not in self._jobs:
                self.order.remove(batch_id)
                del self.batches[batch_id]
