"""The executor service: owns the background tasks that move batches from items to results.

Tasks: a scheduler (leases items fairly across batches and routes each to a lane; the bodies of a
leased page that point into the batch's input file are read by one task per page, storage/bodies.py,
outside the lease transaction and without holding up the next lease), one pump per
lane (lanes.py: pacing under RPM/TPM budgets, concurrency, round-robin by batch) which starts one
send task per request, a committer (settles results in groups: one transaction per group, never one
per item), and a housekeeper (expiry, cancels seen in the database, safety-net activation, and
retiring idle lanes: lanes.retirable).
Validation and finalization run as tracked tasks, one per batch at a time.

Routing happens per attempt: the batch's `provider` preferences order the candidate providers of the
line's model (routing.py); an item whose provider keeps failing (retryable failures until its
attempts are spent, or the provider's circuit is open) moves to the next candidate, with a fresh
attempt budget, unless the batch set `allow_fallbacks: false`.

In-memory bookkeeping is only an accelerator: the database is the truth, and `recover()` rebuilds
everything from it at start (earlier incarnations' leases are released at once, not waited out).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aistats_gateway import ids
from aistats_gateway.clock import Clock
from aistats_gateway.config import LaneLimits, Settings
from aistats_gateway.domain.batch import BatchStatus, answer_error_code
from aistats_gateway.domain.jsonl import error_line, success_line, upstream_error_line
from aistats_gateway.errors import StaleTransition
from aistats_gateway.executor.finalizer import finalize, purge_deleted_inputs
from aistats_gateway.executor.ingest import ingest
from aistats_gateway.executor.lanes import Circuit, Entry, Lane, LaneMemory, retirable
from aistats_gateway.executor.native import NativeRunner
from aistats_gateway.executor.pacing import LocalPermits, PermitSource
from aistats_gateway.executor.retry import Decision, RetryPolicy
from aistats_gateway.executor.rotation import FairQueue, Rotation
from aistats_gateway.failpoints import NONE as NO_FAILPOINTS
from aistats_gateway.failpoints import Failpoints
from aistats_gateway.metrics import Metrics
from aistats_gateway.pricing.calculator import PricingRow, usage_details
from aistats_gateway.pricing.catalog import PriceCatalog
from aistats_gateway.pricing.pricer import Pricer
from aistats_gateway.providers.base import Provider, ProviderResult, UpstreamUnavailable, with_model
from aistats_gateway.providers.routing import Router
from aistats_gateway.storage.blobs import BlobStore
from aistats_gateway.storage.bodies import InputBodies, InputFileUnavailable
from aistats_gateway.storage.records import BatchRecord, ItemRecord
from aistats_gateway.storage.store import Settlement, Store

log = logging.getLogger(__name__)
LEASE_CHUNK = 256


ROUTE_REFRESH_SECONDS = 5.0  # candidate order is recomputed this often (sort by latency/throughput moves)


@dataclass
class Work:
    item: ItemRecord
    endpoint: str
    body: bytes  # the request body (the item row's own, or read from the input file)
    attempts: int = 0  # non-429 attempts at the current provider
    throttles: int = 0
    tried: set[str] | None = None  # providers this item fell back from


@dataclass
class BatchState:
    """What the executor holds in memory for one batch it is working on."""

    endpoint: str
    workspace_id: str = ""
    session_id: str | None = None
    outstanding: int = 0  # leased here and not yet committed as settled (queued, in flight, waiting)
    exhausted: bool = False  # the last lease found nothing pending
    halt: BatchStatus | None = None  # CANCELLED or EXPIRED once a stop was requested
    timers: set[asyncio.TimerHandle] = field(default_factory=set)
    prefs: dict[str, Any] | None = None  # the batch's `provider` routing preferences
    routes: dict[str, tuple[float, list[Provider]]] = field(default_factory=dict)  # model -> (when, candidates)
    lanes: dict[str, Lane] = field(default_factory=dict)  # model -> the lane its lines went to last
    single_model: bool = False  # every line has the same model (the batch record says which)
    last_discovery: float = 0.0  # when a lease last looked past every full lane for lines of other models


class Executor:
    def __init__(
        self, settings: Settings, store: Store, blobs: BlobStore, router: Router, clock: Clock,
        failpoints: Failpoints = NO_FAILPOINTS, pricer: Pricer | None = None, metrics: Metrics | None = None,
        permits: PermitSource | None = None,
    ) -> None:
        self.failpoints = failpoints
        self.metrics = metrics or Metrics()
        self.metrics.watch(self.state)
        self.pricer = pricer or Pricer(PriceCatalog.load(settings.prices))  # [[prices]] count here too
        self.settings = settings
        self.cfg = settings.executor
        self.store = store
        self.blobs = blobs
        self.router = router
        self.clock = clock
        self.node_prefix = f"{settings.node_id}:"
        self.boot_id = f"{self.node_prefix}boot_{ids.ulid()}"
        self._draining = False
        self._sending = 0  # requests on the wire right now
        self._idle = asyncio.Event()
        self.policy = RetryPolicy(self.cfg.max_attempts, self.cfg.backoff_base_seconds, self.cfg.backoff_max_seconds)
        self.permits: PermitSource = permits or LocalPermits()
        self.provider_configs = {p.name: p for p in settings.providers}
        self.lanes: dict[tuple[str, str], Lane] = {}
        self.lane_memory = LaneMemory()  # what retired lanes learned of their upstream's limits
        self._pumps: set[asyncio.Task[None]] = set()  # one per lane; a retired lane's ends
        self.circuits: dict[str, Circuit] = {}
        self._sends: set[asyncio.Task[None]] = set()
        self._loads: set[asyncio.Task[None]] = set()  # reading the bodies of leased pages (_load_bodies)
        self.bodies = InputBodies(store.files, blobs)
        self.batches: dict[str, BatchState] = {}
        self.order = Rotation()  # the batches worked on here, in serving order (fair across workspaces)
        self._validating = 0  # validations running (at most cfg.validation_concurrency)
        self._validation_queue: FairQueue[asyncio.Future[None]] = FairQueue()
        self._target = self.cfg.concurrency * 2  # lines to hold leased (see _memory_target)
        self.in_memory = 0  # leased here and not yet settled: queued, in flight or waiting to retry
        self.settle_buffer: list[Settlement] = []
        self.log_buffer: list[dict[str, object]] = []  # request-log rows, committed with the settlements
        self._wake = asyncio.Event()
        self._flush_now = asyncio.Event()
        self._flush_lock = asyncio.Lock()  # stop() never cancels a commit half-way (its outcome would be unknown)
        self._tasks: list[asyncio.Task[None]] = []
        self._jobs: dict[str, asyncio.Task[None]] = {}
        self._running = False
        self._rng = random.Random()
        self.native: NativeRunner | None = None  # native provider batches (executor/native.py), set by app.py

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        self._running = True
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
        if self.native is not None:  # [native hook] provider batches keep running; their tasks just stop
            await self.native.stop()
        async with self._flush_lock:  # wait for a commit in progress, then stop everything
            tasks = [*self._tasks, *self._pumps, *self._jobs.values(), *self._sends, *self._loads]
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
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
        if self.native is not None and self.native.adopt(batch):  # [native hook] a native batch runs there
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
        if self.native is not None and self.native.adopt(batch):  # [native hook] not leased/sent from here
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
        if self.native is not None and self.native.halt(batch_id, target):  # [native hook] provider cancel
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

    # ------------------------------------------------------------------ validation
    async def _ingest(self, batch: BatchRecord) -> None:
        await self._admit_validation(batch.workspace_id)
        try:
            result = await ingest(batch, store=self.store, blobs=self.blobs, router=self.router,
                                  limits=self.settings.limits, clock=self.clock, pricer=self.pricer,
                                  execution=self.native.resolve if self.native is not None else None)  # [native]
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

    # ------------------------------------------------------------------ scheduling
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

    # ------------------------------------------------------------------ routing
    def _candidates(self, state: BatchState, model: str) -> list[Provider]:
        now = time.monotonic()
        cached = state.routes.get(model)
        if cached is not None and now - cached[0] < ROUTE_REFRESH_SECONDS:
            return cached[1]
        found = self.router.candidates(model, state.prefs, rank=self._ranker(state.prefs))
        state.routes[model] = (now, found)
        return found

    def _ranker(self, prefs: dict[str, Any] | None) -> Callable[[Provider, str], float] | None:
        """The key of the batch's `sort` preference (lower first), from prices and lane statistics."""
        sort = (prefs or {}).get("sort")
        if sort == "price":
            def by_price(provider: Provider, model: str) -> float:
                return float(self.pricer.unit_cost(provider.name, self.router.upstream_model(provider, model)))
            return by_price
        if sort == "latency":
            def by_latency(provider: Provider, model: str) -> float:
                lane = self.lanes.get((provider.name, self.router.upstream_model(provider, model)))
                latency = lane.stats.latency if lane is not None else None
                return latency if latency is not None else 0.0  # unmeasured first: it may be the fastest
            return by_latency
        if sort == "throughput":
            def by_throughput(provider: Provider, model: str) -> float:
                lane = self.lanes.get((provider.name, self.router.upstream_model(provider, model)))
                if lane is None:
                    cfg = self.provider_configs.get(provider.name)
                    rpm = cfg.lane_limits(model).rpm if cfg is not None else None
                    return -float(rpm or 1e12)
                return -float(lane.rpm or 1e12) * (0.0 if lane.circuit.is_open() else 1.0)
            return by_throughput
        return None

    def _choose(self, work: Work, state: BatchState) -> Provider | None:
        candidates = self._candidates(state, work.item.model)
        if (state.prefs or {}).get("allow_fallbacks") is False:
            candidates = candidates[:1]
        usable = [p for p in candidates if not work.tried or p.name not in work.tried]
        if not usable:
            return None
        now = time.monotonic()
        for provider in usable:  # the first whose circuit is closed, else the first
            circuit = self.circuits.get(provider.name)
            if circuit is None or not circuit.is_open(now):
                return provider
        return usable[0]

    def _fallback(self, work: Work, state: BatchState, provider: Provider) -> bool:
        """Move `work` to its next candidate provider, if there is one; True when it moved."""
        if (state.prefs or {}).get("allow_fallbacks") is False:
            return False
        tried = work.tried or set()
        tried.add(provider.name)
        nxt = [p for p in self._candidates(state, work.item.model) if p.name not in tried]
        if not nxt:
            return False
        work.tried = tried
        work.attempts = 0
        log.info("line %d of %s falls back from %s to %s", work.item.line, work.item.batch_id, provider.name,
                 nxt[0].name, extra={"batch_id": work.item.batch_id})
        self._enqueue(work, state)
        return True

    def _lane(self, provider: Provider, upstream_model: str) -> Lane:
        key = (provider.name, upstream_model)
        lane = self.lanes.get(key)
        if lane is None:
            cfg = self.provider_configs.get(provider.name)
            limits = cfg.lane_limits(upstream_model) if cfg is not None else None
            lane = Lane(f"{provider.name}/{upstream_model}", provider.name, upstream_model,
                        limits if limits is not None else LaneLimits(), self.cfg.concurrency, self.permits,
                        headroom=self.cfg.pacing_headroom, burst_seconds=self.cfg.pacing_burst_seconds,
                        hard_cap=self.cfg.max_lane_concurrency,
                        circuit=self.circuits.setdefault(provider.name, Circuit(self.cfg.circuit_cooldown_seconds)))
            self.lane_memory.restore(lane)
            self.lanes[key] = lane
            task = asyncio.create_task(lane.pump(self._launch), name=f"lane-{lane.key}")
            self._pumps.add(task)
            task.add_done_callback(self._pumps.discard)
        return lane

    def retire_idle_lanes(self) -> int:
        """Drop the lanes idle for `lane_idle_seconds` (lanes.retirable), keeping what they learned; their pumps
        end. A later request for the same pair makes a new lane. Returns how many were retired."""
        now = time.monotonic()
        idle = [key for key, lane in self.lanes.items() if retirable(lane, now, self.cfg.lane_idle_seconds)]
        for key in idle:
            lane = self.lanes.pop(key)
            self.lane_memory.keep(lane)
            lane.close()
        return len(idle)

    def _enqueue(self, work: Work, state: BatchState) -> None:
        provider = self._choose(work, state)
        if provider is None:
            tried = ", ".join(sorted(work.tried or ()))
            if tried:
                self._settle_error(work, "provider_unavailable", f"Every provider for model '{work.item.model}' "
                                   f"failed ({tried}); no other candidate is allowed.")
            else:
                self._settle_error(work, "provider_unavailable",
                                   f"No configured provider serves model '{work.item.model}' any more.")
            return
        lane = self._lane(provider, self.router.upstream_model(provider, work.item.model))
        state.lanes[work.item.model] = lane
        lane.put(work, work.item.batch_id, work.body)

    # ------------------------------------------------------------------ sending
    def _launch(self, work: Work, entry: Entry) -> None:
        task = asyncio.create_task(self._send(work, entry))
        self._sends.add(task)
        task.add_done_callback(self._sends.discard)

    async def _send(self, work: Work, entry: Entry) -> None:
        lane = entry.lane
        assert lane is not None
        state = self.batches.get(work.item.batch_id)
        if state is None or state.halt is not None or self._draining:
            lane.finished()
            self._drop(work)
            return
        if lane.circuit.is_open():
            # Queued before the provider's circuit opened: go to a healthy candidate instead, if any.
            other = self._choose(work, state)
            if other is not None and other.name != lane.provider:
                lane.finished()
                self._enqueue(work, state)
                return
        try:
            await self._attempt(work, state, lane, entry)
        except asyncio.CancelledError:
            raise
        except Exception:  # a bug must not lose the item
            log.exception("unexpected error on %s line %d", work.item.batch_id, work.item.line,
                          extra={"batch_id": work.item.batch_id})
            self._settle_error(work, "internal_error", "The gateway hit an internal error on this request.")

    async def _attempt(self, work: Work, state: BatchState, lane: Lane, entry: Entry) -> None:
        item = work.item
        provider = self.router.by_name[lane.provider]
        upstream_model = lane.model
        body = work.body if upstream_model == item.model else with_model(work.body, upstream_model)
        result: ProviderResult | None = None
        failure: UpstreamUnavailable | None = None
        request_id = ids.gateway_request_id()
        started = time.monotonic()
        self._sending += 1
        try:
            result = await provider.send(work.endpoint, upstream_model, body)
        except UpstreamUnavailable as exc:
            failure = exc
        finally:
            lane.finished()
            self._sending -= 1
            if self._sending == 0:
                self._idle.set()
        self.failpoints.hit("after_upstream")
        latency = time.monotonic() - started
        status = result.status if result is not None else None
        lane.observe(entry, status, latency, result.limits if result is not None else None,
                     result.input_tokens if result is not None else 0,
                     result.output_tokens if result is not None else 0)
        transient = status is None or status >= 500
        lane.circuit.record(not transient)
        if failure is not None:
            self._metric("failure", provider.name, failure.kind).inc()
        else:
            self._metric("latency", provider.name, item.model, f"{status // 100}xx" if status else "none").observe(
                latency)
            if status == 429:
                self._metric("throttled", provider.name, item.model).inc()
        if status == 429:
            work.throttles += 1
        else:
            work.attempts += 1
        usage_rows: list[PricingRow] = []
        cost: int | None = None
        if result is not None and 200 <= result.status < 300:
            usage_rows, cost = self.pricer.usage_rows(provider.name, item.model, work.endpoint, result.usage)
        self.log_buffer.append({
            "id": request_id, "workspace_id": state.workspace_id, "batch_id": item.batch_id,
            "session_id": state.session_id, "custom_id": item.custom_id, "line": item.line,
            "attempt": work.attempts + work.throttles, "provider": provider.name, "model": item.model,
            "status_code": status, "error_code": None if failure is None else f"upstream_{failure.kind}",
            "latency_ms": int(latency * 1000),
            "input_tokens": result.input_tokens if result is not None else 0,
            "output_tokens": result.output_tokens if result is not None else 0,
            "cost_nanos": cost, "created_at": self.clock.now(),
        })
        if result is not None and 200 <= result.status < 300:
            line = success_line(ids.batch_request_id(), item.custom_id, result.status, request_id, result.body,
                                provider.name)
            self._metric("lines", provider.name, item.model, "succeeded").inc()
            cached, reasoning = usage_details(work.endpoint, result.usage)
            self._settle(Settlement(item.batch_id, item.line, True, line, work.attempts,
                                    result.input_tokens, result.output_tokens, tuple(usage_rows), cached, reasoning))
            return
        retry_after = result.retry_after if result is not None else None
        if status == 429 and not (result is not None and result.final):
            # The upstream is pacing us: hold the whole lane, not just this line (no attempt is burnt).
            lane.pause(retry_after if retry_after is not None else 1.0)
        decision = self.policy.decide(status=status, attempts=work.attempts, throttles=work.throttles,
                                      retry_after=retry_after, jitter=self._rng.random())
        if result is not None and result.final:
            decision = Decision(retry=False)
        if decision.retry and self._draining:
            self._drop(work)  # it will be retried after the restart
            return
        if transient and state.halt is None and not self._draining and \
                (not decision.retry or lane.circuit.is_open()) and self._fallback(work, state, provider):
            return
        if decision.retry and state.halt is None:
            loop = asyncio.get_running_loop()
            handle: asyncio.TimerHandle

            def requeue() -> None:
                state.timers.discard(handle)
                self._enqueue(work, state)

            handle = loop.call_later(decision.delay, requeue)
            state.timers.add(handle)
            return
        self._metric("lines", provider.name, item.model, "failed").inc()
        if result is not None:
            line = upstream_error_line(ids.batch_request_id(), item.custom_id, result.status, request_id,
                                       result.body, provider.name)
            self._settle(Settlement(item.batch_id, item.line, False, line, work.attempts,
                                    error_code=answer_error_code(result.status)))
        else:
            assert failure is not None
            self._settle_error(work, f"upstream_{failure.kind}",
                               f"{failure.message} (after {work.attempts} attempt(s))")

    def _settle_error(self, work: Work, code: str, message: str) -> None:
        line = error_line(ids.batch_request_id(), work.item.custom_id, code, message)
        self._settle(Settlement(work.item.batch_id, work.item.line, False, line, work.attempts, error_code=code))

    def _metric(self, kind: str, *labels: str) -> Any:
        return self.metrics.child(kind, *labels)

    def state(self) -> dict[str, object]:
        """Live figures for the metrics endpoint."""
        return {"in_memory": self.in_memory, "sending": self._sending,
                "queued": sum(lane.queued for lane in self.lanes.values()), "batches": len(self.batches),
                "lanes": {lane.key: lane.state() for lane in self.lanes.values()}}

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

    # ------------------------------------------------------------------ committing
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

    # ------------------------------------------------------------------ finishing
    def _maybe_finish_halt(self, batch_id: str) -> None:
        state = self.batches.get(batch_id)
        if state is not None and state.halt is not None and state.outstanding <= 0:
            self._finalize_soon(batch_id, state.halt)

    def finalize_native(self, batch_id: str, target: BatchStatus) -> None:
        """[native hook] A native batch's lines are all settled (or its provider batches are gone): finalize."""
        self._finalize_soon(batch_id, target)

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
        if target in (BatchStatus.CANCELLED, BatchStatus.EXPIRED) and batch.execution != "native":
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

    # ------------------------------------------------------------------ housekeeping
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
                if self.native is not None and self.native.adopt(batch, wake=False):
                    # [native hook] Its lines all settle when its provider batches end, and the runner then
                    # finalizes with the provider's outcome (expired, say): "all settled" must not make it
                    # `completed` here first.
                    continue
                if batch.counts.settled >= batch.total and batch.id not in self._jobs:
                    self._finalize_soon(batch.id, BatchStatus.COMPLETED)  # settled by a process that died since
                else:
                    self.activate(batch)
            elif batch.status is BatchStatus.VALIDATING and batch.id not in self._jobs:
                self._job(batch.id, lambda b=batch: self._ingest(b))  # type: ignore[misc]

