"""Native execution (issue #7): a batch's lines run as provider batches (OpenAI Batch API, Anthropic Message
Batches) at the providers' batch price, while everything the user sees stays ours — ids, files, webhooks,
the stream, billing.

The NativeRunner takes over a batch after ingest (its items exist, as for managed batches) instead of the
lease/send path. One task per batch runs rounds: plan jobs (one per provider, per model on OpenAI; items
leased to the job), build each job's provider input into our blob store, create the provider batch, poll it,
and when it ends download its result files into our blob store and settle our items from them
(native_settle.py); when every job is done it hands the batch to the executor's normal finalize.

Exactly-once against the provider:
  * the job row (with its idempotency key) exists before any call; `create_attempts`/`create_attempted_at`
    are written BEFORE the create is sent and the provider's id right after it answers;
  * a create whose outcome is unknown (timeout, 5xx, a crash) is never re-sent blindly: the provider's
    batches are listed for ours first, and only a batch PROVEN ours is taken (OpenAI: our job id in its
    `metadata`; Anthropic: its results carry exactly the job's custom_ids, see native_anthropic.py) — another
    client on the same key may have a batch just like it; `after_lost_create` decides what happens next;
  * a restart resumes every job from the database: running ones reattach by `native_batch_id`.
Cancel and expiry cancel the provider batch, then settle what it finished; the rest become
`batch_cancelled` / `batch_expired`. Upstream failures while polling are logged and retried next round.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aistats_gateway.clock import Clock
from aistats_gateway.config import Settings
from aistats_gateway.domain import execution
from aistats_gateway.domain.batch import BatchStatus
from aistats_gateway.domain.execution import ExecutionMode
from aistats_gateway.domain.native_job import NativeJobState
from aistats_gateway.errors import NativeError, Rejected, StaleTransition
from aistats_gateway.executor.native_settle import Settler, collect, provider_custom_id
from aistats_gateway.executor.strategy import Finish
from aistats_gateway.failpoints import NONE as NO_FAILPOINTS
from aistats_gateway.failpoints import Failpoints
from aistats_gateway.pricing.catalog import PriceCatalog
from aistats_gateway.pricing.pricer import Pricer
from aistats_gateway.providers.kinds import BatchClient, build_batch_client
from aistats_gateway.providers.native_base import Outcome, RemoteBatch, Search
from aistats_gateway.providers.native_openai import BATCH_TAG, JOB_TAG
from aistats_gateway.providers.routing import Router
from aistats_gateway.storage.blobs import BlobStore
from aistats_gateway.storage.bodies import InputBodies
from aistats_gateway.storage.native_jobs import NativeJob, NativeJobs
from aistats_gateway.storage.records import BatchRecord
from aistats_gateway.storage.store import Store
from aistats_gateway.tasks import cancel_and_wait

log = logging.getLogger(__name__)


ADOPT, WAIT, GIVE_UP, RECREATE = "adopt", "wait", "give_up", "recreate"


def _not_started(batch_id: str, target: BatchStatus) -> None:
    raise RuntimeError("the native runner finished a batch before it was started")


def after_lost_create(search: Search, waited: float, grace: float, halted: bool) -> str:
    """What a job whose last create's outcome is unknown does after looking for its batch (`waited`: seconds
    since that attempt). ADOPT the batch proven its own. WAIT while the provider may still be making it (under
    `grace`). GIVE_UP (nothing created) when the batch was cancelled or expired meanwhile — even while
    candidates run: none is proven ours, so none may be cancelled or taken. WAIT while a candidate that may be
    it has not ended (Anthropic: only its results can tell). Else RECREATE: had the lost one been made, it
    would have shown up by now."""
    if search.found is not None:
        return ADOPT
    if waited < grace:
        return WAIT
    if halted:
        return GIVE_UP
    return WAIT if search.pending else RECREATE


class NativeRunner:
    """The NativeExecution strategy (executor/strategy.py) for providers with a batch API."""

    def __init__(self, settings: Settings, store: Store, blobs: BlobStore, router: Router, clock: Clock,
                 catalog: PriceCatalog, failpoints: Failpoints = NO_FAILPOINTS) -> None:
        self.cfg = settings.native
        self.store = store
        self.blobs = blobs
        self.router = router
        self.clock = clock
        self.finish: Finish = _not_started
        self.failpoints = failpoints
        self.jobs = NativeJobs(store.db, store.outbox, InputBodies(store.files, blobs))
        self.pricer = Pricer(catalog, execution.pricing_plan(ExecutionMode.NATIVE))
        self.clients = {p.name: build_batch_client(p, self.cfg.request_timeout_seconds)
                        for p in settings.providers if p.batch_api}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._wake: dict[str, asyncio.Event] = {}
        self._rounds: dict[str, asyncio.Event] = {}
        self._last_round: dict[str, float] = {}
        self._halts: dict[str, BatchStatus] = {}
        self._failures: dict[str, int] = {}  # consecutive failed rounds per batch (for backoff and quieter logs)
        self._running = False

    @property
    def batch_api(self) -> set[str]:
        return set(self.clients)

    def resolve(self, batch: BatchRecord, providers: list[str]) -> ExecutionMode:
        return execution.resolve(batch.execution, batch.expires_at - batch.created_at, providers, self.batch_api)

    # ------------------------------------------------------------------ the NativeExecution interface
    async def start(self, finish: Finish) -> None:
        """Run native batches from now on; `finish(batch_id, target)` finalizes one whose lines are settled."""
        self.finish = finish
        self._running = True

    def adopt(self, batch: BatchRecord, *, wake: bool = True) -> bool:
        """Run `batch` here if it is native (True); the executor leaves it alone then — including its
        finalization, whose target (completed, expired, cancelled) only the provider's outcome decides.
        `wake`: poll the provider now if the batch already runs here (the housekeeper's sweep does not)."""
        if batch.execution != ExecutionMode.NATIVE or batch.status is BatchStatus.VALIDATING:
            return False
        task = self._tasks.get(batch.id)
        if task is None or task.done():
            if self._running:
                self._wake[batch.id] = asyncio.Event()
                self._rounds[batch.id] = asyncio.Event()
                self._tasks[batch.id] = asyncio.create_task(self._run(batch.id), name=f"native-{batch.id}")
        elif wake:
            self._wake[batch.id].set()
        return True

    def halt(self, batch_id: str, target: BatchStatus) -> bool:
        """Cancel or expire a native batch this runner holds (True); the provider batch is cancelled."""
        task = self._tasks.get(batch_id)
        if task is None or task.done():
            return False
        self._halts.setdefault(batch_id, target)
        self._wake[batch_id].set()
        return True

    async def refresh(self, batch_id: str) -> None:
        """On GET: poll the provider now when the last round is older than `refresh_on_get_seconds`."""
        task = self._tasks.get(batch_id)
        if task is None or task.done():
            return
        if self.clock.now() - self._last_round.get(batch_id, 0.0) < self.cfg.refresh_on_get_seconds:
            return
        done = self._rounds[batch_id]
        done.clear()
        self._wake[batch_id].set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), 5.0)

    async def stop(self) -> None:
        self._running = False
        await cancel_and_wait(list(self._tasks.values()))
        self._tasks.clear()
        for client in self.clients.values():
            await client.close()

    # ------------------------------------------------------------------ rounds
    async def _run(self, batch_id: str) -> None:
        self._failures[batch_id] = 0
        while self._running:
            try:
                finished = await self._round(batch_id)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("native round of %s failed; retrying", batch_id, extra={"batch_id": batch_id})
                self._failures[batch_id] += 1
                finished = False
            self._last_round[batch_id] = self.clock.now()
            self._rounds[batch_id].set()
            if finished:
                break
            # A provider that keeps failing is polled less and less often (up to 16 intervals apart).
            delay = self.cfg.poll_interval_seconds * 2 ** min(4, self._failures[batch_id])
            wake = self._wake[batch_id]
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), delay)
            wake.clear()
        self._failures.pop(batch_id, None)
        self._tasks.pop(batch_id, None)
        self._halts.pop(batch_id, None)

    def _halt_of(self, batch: BatchRecord) -> BatchStatus | None:
        if batch.status is BatchStatus.CANCELLING:
            return BatchStatus.CANCELLED
        halt = self._halts.get(batch.id)
        if halt is None and batch.expires_at <= self.clock.now():
            halt = BatchStatus.EXPIRED
        return halt

    async def _round(self, batch_id: str) -> bool:
        """One pass over a batch's jobs; True when the batch was handed to the finalizer (or is gone)."""
        batch = await self.store.batches.get(batch_id)
        if batch is None or batch.status.terminal:
            return True
        if batch.status is BatchStatus.FINALIZING:
            self.finish(batch_id, BatchStatus.COMPLETED)
            return True
        halt = self._halt_of(batch)
        jobs = await self.jobs.for_batch(batch_id)
        if not jobs:
            if halt is not None:  # nothing was sent anywhere: the finalizer settles every line
                self.finish(batch_id, halt)
                return True
            jobs = await self.jobs.plan(batch_id, lambda p: self.clients[p].kind if p in self.clients else "openai",
                                        self.clock.now(), self._limits)
        failed = False
        for job in jobs:
            if job.state is NativeJobState.DONE:
                continue
            try:
                await self._advance(batch, job, halt)
            except StaleTransition:  # another process running this batch moved the job first: re-read next round
                log.info("native job %s moved meanwhile; looking again next round", job.id,
                         extra={"batch_id": batch_id})
            except NativeError as exc:
                failed = True
                level = logging.WARNING if self._failures.get(batch_id, 0) == 0 else logging.DEBUG
                log.log(level, "native job %s (%s): %s; retrying", job.id, job.provider, exc.message,
                        extra={"batch_id": batch_id})
                if job.error != exc.message[:2000]:
                    await self.jobs.update(job.id, error=exc.message[:2000])
        self._failures[batch_id] = self._failures.get(batch_id, 0) + 1 if failed else 0
        jobs = await self.jobs.for_batch(batch_id)
        if any(job.state is not NativeJobState.DONE for job in jobs):
            return False
        target = halt or (BatchStatus.EXPIRED if any(j.provider_status == "expired" for j in jobs)
                          else BatchStatus.COMPLETED)
        await self.failpoints.stall("native_before_finish")
        self.finish(batch_id, target)
        return True

    async def _advance(self, batch: BatchRecord, job: NativeJob, halt: BatchStatus | None) -> None:
        client = self.clients.get(job.provider)
        if client is None:  # the provider lost batch_api (or was removed) while its batch ran
            raise NativeError(f"provider '{job.provider}' has no batch_api configured any more")
        if job.state is NativeJobState.CREATING:
            if halt is not None and job.create_attempts == 0:  # nothing sent yet and nobody wants it any more
                await self.jobs.transition(job, NativeJobState.DONE, provider_status="not_created")
                return
            if job.input_key is None:
                job = await self._build(batch, job, client)
                if job.state is NativeJobState.DONE:
                    return
            job = await self._create(batch, job, client, halt)
        native_id = job.native_batch_id
        if job.state is NativeJobState.RUNNING and native_id is not None:
            if halt is not None and job.cancel_sent_at is None:
                with contextlib.suppress(Rejected):  # already ended: nothing to cancel
                    await client.cancel(native_id)
                job = await self.jobs.update(job.id, cancel_sent_at=self.clock.now())
            found = await client.get(native_id)
            if found.ended_as is None:
                await self.jobs.polled(job, found.status, found.counts, self.clock.now())
                return
            keys = await client.download(found, self.blobs, f"native/{job.id}")
            job = await self.jobs.transition(job, NativeJobState.COLLECTING, provider_status=found.ended_as,
                                             request_counts=found.counts, result_keys=keys, error=found.error,
                                         last_polled_at=self.clock.now())
            if self.cfg.delete_provider_files:
                await self._discard(batch, job, client, found)
        if job.state is NativeJobState.COLLECTING:
            settler = Settler(self.store, self.pricer, self.clock, batch, job.provider)
            await collect(self.jobs, job, client, batch, settler, self.blobs, halt)
            await self.jobs.transition(job, NativeJobState.DONE)
            # Every line is settled in our database now: our copies of the provider input and results go too.
            for key in [k for k in (job.input_key, *(job.result_keys or ())) if k]:
                await self.blobs.delete(key)

    async def _sent_ids(self, job: NativeJob) -> frozenset[str]:
        """The custom_ids the job sent to the provider: its held lines (the others failed before the create)."""
        return frozenset([provider_custom_id(job, item) async for page in self.jobs.held_items(job, with_body=False)
                          for item in page])

    def _limits(self, kind: str) -> tuple[int, int]:
        """The provider's (max lines, max input bytes) per batch, from [native]."""
        if kind == "anthropic":
            return self.cfg.anthropic_max_lines, self.cfg.anthropic_max_bytes
        return self.cfg.openai_max_lines, self.cfg.openai_max_bytes

    async def _discard(self, batch: BatchRecord, job: NativeJob, client: BatchClient,
                       found: RemoteBatch) -> None:
        """Best effort: the provider's copies of our requests and results are deleted once ours are stored
        (they hold users' prompts, and providers cap storage). A failure is logged, never retried: the lines
        are safe either way."""
        try:
            await client.discard(found, job.provider_file_id)
        except NativeError as exc:
            log.warning("native job %s (%s): could not delete the provider's copies: %s", job.id, job.provider,
                        exc.message, extra={"batch_id": batch.id})

    async def _build(self, batch: BatchRecord, job: NativeJob, client: BatchClient
                     ) -> NativeJob:
        """Write the provider input into our blob store (again, over the old one, for a job built with an id
        scheme its client no longer sends); lines the provider cannot take fail here."""
        job = await self.jobs.update(job.id, id_scheme=client.id_scheme)
        provider = self.router.by_name.get(job.provider)
        key = f"native/{job.id}/input.jsonl"
        writer = self.blobs.writer(key)
        settler = Settler(self.store, self.pricer, self.clock, batch, job.provider)
        sent = 0
        try:
            async for page in self.jobs.held_items(job):
                for item in page:
                    if item.body is None:  # its line is not in the input file any more (see storage/bodies.py)
                        settler.add(item, Outcome(None, None, error_code="input_unreadable", error_message=(
                            "The batch's input file could not be read; this line's request is not available.")))
                        continue
                    model = self.router.upstream_model(provider, item.model) if provider is not None else item.model
                    line = client.input_line(batch.endpoint, provider_custom_id(job, item), model, item)
                    if isinstance(line, Outcome):
                        settler.add(item, line)
                    else:
                        await writer.write(line + b"\n")
                        sent += 1
        except BaseException:
            await writer.abort()
            raise
        await settler.flush(force=True)
        if sent == 0:
            await writer.abort()
            return await self.jobs.transition(job, NativeJobState.DONE, lines=0, provider_status="nothing_to_send")
        await writer.commit()
        return await self.jobs.update(job.id, input_key=key, lines=sent)

    async def _create(self, batch: BatchRecord, job: NativeJob, client: BatchClient,
                      halt: BatchStatus | None) -> NativeJob:
        now = self.clock.now()
        if job.create_attempts > 0:  # an earlier create's outcome is unknown: look for it before anything else
            claimed = await self.jobs.claimed_ids(job.provider)
            search = await client.find(job, claimed, self.cfg.list_pages, lambda: self._sent_ids(job))
            decision = after_lost_create(search, now - (job.create_attempted_at or 0.0),
                                         self.cfg.reconcile_grace_seconds, halt is not None)
            if decision == ADOPT and search.found is not None:
                log.info("native job %s: found provider batch %s of an earlier create", job.id, search.found.id,
                         extra={"batch_id": batch.id})
                return await self.jobs.attach(job, search.found.id, search.found.status, search.found.counts)
            if decision == WAIT:
                return job  # look again next round
            if decision == GIVE_UP:
                return await self.jobs.transition(job, NativeJobState.DONE, provider_status="not_created")
        if job.id_scheme != client.id_scheme:  # built before this scheme: a batch of it could not be proven ours
            job = await self._build(batch, job, client)
            if job.state is NativeJobState.DONE:
                return job
        job = await self.jobs.update(job.id, create_attempts=job.create_attempts + 1, create_attempted_at=now)
        self.failpoints.hit("native_before_create")
        window = execution.provider_window(batch.expires_at - batch.created_at, batch.completion_window)

        async def on_file(file_id: str) -> None:
            await self.jobs.update(job.id, provider_file_id=file_id)

        try:
            created = await client.submit(job, self.blobs, batch.endpoint, window,
                                          {BATCH_TAG: batch.id, JOB_TAG: job.id}, on_file)
        except Rejected as exc:
            log.warning("native job %s: %s refused the batch: %s", job.id, job.provider, exc.message,
                        extra={"batch_id": batch.id})
            # collecting with no result files: every held line fails with native_batch_rejected
            return await self.jobs.transition(job, NativeJobState.COLLECTING, provider_status="rejected",
                                              error=exc.message[:2000])
        self.failpoints.hit("native_after_create")
        return await self.jobs.attach(job, created.id, created.status, created.counts)
