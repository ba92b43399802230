"""ExecutorCore: the state every part of the executor shares, and what the parts call of each other.

The Executor (service.py) is assembled from parts, one module per concern: scheduling.py, dispatch.py,
attempts.py, commit.py, finishing.py, housekeeping.py. Each part is a class over this core, so the state is
made in one place (here) and the calls that cross from one part to another are declared here too, by name and
type: those are the parts' whole interface to each other. In-memory state is only an accelerator: the
database is the truth (see service.py).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable

from aistats_gateway import ids
from aistats_gateway.clock import Clock
from aistats_gateway.config import Settings
from aistats_gateway.domain.batch import BatchStatus
from aistats_gateway.domain.request_log import RequestLogRow
from aistats_gateway.executor.lanes import Circuit, Entry, Lane, LaneMemory
from aistats_gateway.executor.pacing import LocalPermits, PermitSource
from aistats_gateway.executor.retry import RetryPolicy
from aistats_gateway.executor.rotation import FairQueue, Rotation
from aistats_gateway.executor.state import BatchState, Work
from aistats_gateway.executor.strategy import ManagedOnly, NativeExecution
from aistats_gateway.failpoints import NONE as NO_FAILPOINTS
from aistats_gateway.failpoints import Failpoints
from aistats_gateway.metrics import Metrics
from aistats_gateway.pricing.catalog import PriceCatalog
from aistats_gateway.pricing.pricer import Pricer
from aistats_gateway.providers.base import Provider
from aistats_gateway.providers.routing import Router
from aistats_gateway.storage.blobs import BlobStore
from aistats_gateway.storage.bodies import InputBodies
from aistats_gateway.storage.records import BatchRecord
from aistats_gateway.storage.store import Settlement, Store


class ExecutorCore:
    def __init__(
        self, settings: Settings, store: Store, blobs: BlobStore, router: Router, clock: Clock,
        failpoints: Failpoints = NO_FAILPOINTS, pricer: Pricer | None = None, metrics: Metrics | None = None,
        permits: PermitSource | None = None, native: NativeExecution | None = None,
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
        self.log_buffer: list[RequestLogRow] = []  # request-log rows, committed with the settlements
        self._wake = asyncio.Event()
        self._flush_now = asyncio.Event()
        self._flush_lock = asyncio.Lock()  # stop() never cancels a commit half-way (its outcome would be unknown)
        self._tasks: list[asyncio.Task[None]] = []
        self._jobs: dict[str, asyncio.Task[None]] = {}
        self._running = False
        self._rng = random.Random()
        self.native: NativeExecution = native or ManagedOnly()  # native provider batches (strategy.py)

    def state(self) -> dict[str, object]:
        """Live figures for the metrics endpoint."""
        return {"in_memory": self.in_memory, "sending": self._sending,
                "queued": sum(lane.queued for lane in self.lanes.values()), "batches": len(self.batches),
                "lanes": {lane.key: lane.state() for lane in self.lanes.values()}}

    # ------------------------------------------------------------------ what the parts call of each other
    # (each is defined by the part named; these only declare it for the others)
    def activate(self, batch: BatchRecord) -> None:  # service.py
        raise NotImplementedError

    def halt(self, batch_id: str, target: BatchStatus, endpoint: str) -> None:  # service.py
        raise NotImplementedError

    def resume(self, batch: BatchRecord) -> None:  # service.py
        raise NotImplementedError

    async def _ingest(self, batch: BatchRecord) -> None:  # scheduling.py
        raise NotImplementedError

    def _choose(self, work: Work, state: BatchState) -> Provider | None:  # dispatch.py
        raise NotImplementedError

    def _enqueue(self, work: Work, state: BatchState) -> None:  # dispatch.py
        raise NotImplementedError

    def _next_candidate(self, work: Work, state: BatchState, provider: Provider) -> Provider | None:  # dispatch.py
        raise NotImplementedError

    def _fall_back(self, work: Work, state: BatchState, provider: Provider, to: Provider) -> None:  # dispatch.py
        raise NotImplementedError

    def _launch(self, work: Work, entry: Entry) -> None:  # attempts.py
        raise NotImplementedError

    def _settle_error(self, work: Work, code: str, message: str) -> None:  # attempts.py
        raise NotImplementedError

    def _settle(self, settlement: Settlement) -> None:  # commit.py
        raise NotImplementedError

    def _drop(self, work: Work) -> None:  # commit.py
        raise NotImplementedError

    def _maybe_finish_halt(self, batch_id: str) -> None:  # finishing.py
        raise NotImplementedError

    def _finalize_soon(self, batch_id: str, target: BatchStatus) -> None:  # finishing.py
        raise NotImplementedError

    def _job(self, batch_id: str, make: Callable[[], Awaitable[None]]) -> None:  # finishing.py
        raise NotImplementedError

    def retire_idle_lanes(self) -> int:  # dispatch.py
        raise NotImplementedError
