"""Storage of native provider batches (issue #7): the `native_jobs` rows and the items they hold.

A native batch keeps its item rows (ingest made them) so counts, results streaming, cancel/expiry and the
finalizer work unchanged; what changes is who holds the items. `plan()` splits a batch's pending items into
jobs — one per provider (per model on OpenAI, whose batches take one model each), cut into several where a
part would exceed the provider's per-batch limits (lines, input bytes) — and leases each job's
items to the owner `native:<job id>` with a lease that never expires, in ONE transaction, so the managed
scheduler and the lease sweeps never touch them. Settling goes through `Items.settle()` like every result.

A job's state moves only through `transition()` (and `attach()`), compare-and-set on the state it was read in,
along the table of domain/native_job.py. Reads and writes go through the Store's Database (its write
transaction, its listeners, its clock), and a progress event through its Outbox; SQLAlchemy Core only, so the
same statements run on SQLite and PostgreSQL. Nothing here calls a provider.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, fields
from typing import Any

from sqlalchemy import and_, func, insert, select, update

from aistats_gateway import ids
from aistats_gateway.domain.events import delivery_key, progress_crossed
from aistats_gateway.domain.native_job import NativeJobState, check
from aistats_gateway.errors import StaleTransition
from aistats_gateway.storage.bodies import InputBodies
from aistats_gateway.storage.database import Database
from aistats_gateway.storage.outbox import Outbox
from aistats_gateway.storage.records import batch_record
from aistats_gateway.storage.schema import ITEM_LEASED, ITEM_PENDING, batches, items, native_jobs

NEVER = 1e15  # a native job's item leases: far beyond any clock, so no sweep reclaims them
ANY_MODEL = "*"
OWNER_PREFIX = "native:"


@dataclass(frozen=True)
class NativeJob:
    id: str
    batch_id: str
    provider: str
    model: str
    kind: str
    state: NativeJobState
    idempotency_key: str
    id_scheme: str
    lines: int
    input_key: str | None
    provider_file_id: str | None
    native_batch_id: str | None
    provider_status: str | None
    request_counts: dict[str, int] | None
    result_keys: list[str] | None
    create_attempts: int
    create_attempted_at: float | None
    cancel_sent_at: float | None
    last_polled_at: float | None
    error: str | None
    created_at: float
    updated_at: float

    @property
    def owner(self) -> str:
        return OWNER_PREFIX + self.id


@dataclass(frozen=True)
class JobItem:
    line: int
    custom_id: str
    model: str
    body: bytes | None  # None: not asked for (with_body=False), or its line could not be read from the input file


# What a provider input line adds around a body and custom_id ({"custom_id", "method", "url", "body"} on OpenAI,
# {"custom_id", "params"} on Anthropic, whose translated params may also grow a little): generous on purpose.
LINE_ENVELOPE_BYTES = 256


def _runs(sizes: list[tuple[int, int]], max_lines: int, max_bytes: int) -> list[tuple[int | None, int | None, int]]:
    """Cut (line, bytes) pairs, in line order, into consecutive runs of at most `max_lines` lines and
    `max_bytes` bytes (0: no limit); a single line over `max_bytes` gets a run of its own (the provider judges
    it). Returns (first line, last line, lines) per run."""
    runs: list[tuple[int | None, int | None, int]] = []
    first: int | None = None
    last: int | None = None
    count = size = 0
    for line, line_bytes in sizes:
        if count and ((max_lines and count + 1 > max_lines) or (max_bytes and size + line_bytes > max_bytes)):
            runs.append((first, last, count))
            first, count, size = None, 0, 0
        if first is None:
            first = line
        last = line
        count += 1
        size += line_bytes
    if count:
        runs.append((first, last, count))
    return runs


def _job(row: Any) -> NativeJob:
    mapping = row._mapping
    values = {f.name: mapping[f.name] for f in fields(NativeJob)}
    values["state"] = NativeJobState(values["state"])
    return NativeJob(**values)


class NativeJobs:
    """Over the Store's Database and Outbox (`NativeJobs(store.db, store.outbox, …)`): a progress event is queued in
    the same transaction as the counts that crossed its bucket. `bodies` reads the bodies of items that point into
    their input file (every item ingest makes since 0007); readers of the jobs alone need no bodies."""

    def __init__(self, db: Database, outbox: Outbox, bodies: InputBodies | None = None) -> None:
        self.db = db
        self.outbox = outbox
        self.bodies = bodies

    async def for_batch(self, batch_id: str) -> list[NativeJob]:
        query = select(native_jobs).where(native_jobs.c.batch_id == batch_id).order_by(native_jobs.c.id)
        async with self.db.read() as conn:
            return [_job(r) for r in (await conn.execute(query)).all()]

    async def plan(self, batch_id: str, kind_of: Callable[[str], str], now: float,
                   limits: Callable[[str], tuple[int, int]] | None = None) -> list[NativeJob]:
        """The batch's jobs; made on first call from its pending items (idempotent: existing jobs win).

        `limits(kind)` is the provider's (max lines, max input bytes) per batch: a larger part is cut into
        consecutive runs of lines that each fit (a line's size is estimated as its body + custom_id + the
        envelope around them)."""
        async with self.db.write() as conn:
            existing = (await conn.execute(select(native_jobs).where(native_jobs.c.batch_id == batch_id)
                                           .order_by(native_jobs.c.id))).all()
            if existing:
                return [_job(r) for r in existing]
            groups = (await conn.execute(
                select(items.c.provider, items.c.model, func.count())
                .where(and_(items.c.batch_id == batch_id, items.c.status == ITEM_PENDING))
                .group_by(items.c.provider, items.c.model))).all()
            counts: dict[tuple[str, str], int] = {}
            for provider, model, n in groups:
                key = (provider, model if kind_of(provider) == "openai" else ANY_MODEL)
                counts[key] = counts.get(key, 0) + int(n)
            for (provider, model), n in sorted(counts.items()):
                kind = kind_of(provider)
                cond = [items.c.batch_id == batch_id, items.c.provider == provider, items.c.status == ITEM_PENDING]
                if model != ANY_MODEL:
                    cond.append(items.c.model == model)
                max_lines, max_bytes = limits(kind) if limits is not None else (0, 0)
                runs: list[tuple[int | None, int | None, int]] = [(None, None, n)]  # (first line, last line, lines)
                if (max_lines and n > max_lines) or max_bytes:
                    # the raw input line's length where the item points into its file (body and custom_id
                    # included), else the stored body's and custom_id's
                    size = func.coalesce(items.c.body_length,
                                         func.length(items.c.body) + func.length(items.c.custom_id))
                    sizes = (await conn.execute(
                        select(items.c.line, size).where(and_(*cond)).order_by(items.c.line))).all()
                    runs = _runs([(int(line), int(size or 0) + LINE_ENVELOPE_BYTES) for line, size in sizes],
                                 max_lines, max_bytes)
                for part, (first, last, lines) in enumerate(runs):
                    job_id = "nj_" + ids.ulid()
                    await conn.execute(insert(native_jobs).values(
                        id=job_id, batch_id=batch_id, provider=provider, model=model, kind=kind, part=part,
                        state=NativeJobState.CREATING.value, idempotency_key="aistats-" + job_id,
                        id_scheme="verbatim", lines=lines,
                        create_attempts=0, created_at=now, updated_at=now))
                    where = list(cond)
                    if first is not None and last is not None:
                        where.append(items.c.line.between(first, last))
                    await conn.execute(update(items).where(and_(*where)).values(
                        status=ITEM_LEASED, lease_owner=OWNER_PREFIX + job_id, lease_expires_at=NEVER))
            rows = (await conn.execute(select(native_jobs).where(native_jobs.c.batch_id == batch_id)
                                       .order_by(native_jobs.c.id))).all()
        return [_job(r) for r in rows]

    async def update(self, job_id: str, **values: Any) -> NativeJob:
        """Change a job's other columns; its state moves only through `transition()`."""
        assert "state" not in values, "a native job's state changes through transition()"
        values.setdefault("updated_at", self.db.clock.now())
        async with self.db.write() as conn:
            row = (await conn.execute(update(native_jobs).where(native_jobs.c.id == job_id).values(**values)
                                      .returning(*native_jobs.c))).one()
        return _job(row)

    async def transition(self, job: NativeJob, target: NativeJobState, **values: Any) -> NativeJob:
        """Move `job` from the state it was read in to `target` (with other columns), compare-and-set: raises
        StaleTransition when someone else (another process running the same batch) moved it first."""
        check(job.state, target)
        values.setdefault("updated_at", self.db.clock.now())
        async with self.db.write() as conn:
            row = (await conn.execute(update(native_jobs).where(and_(
                native_jobs.c.id == job.id, native_jobs.c.state == job.state.value)).values(
                state=target.value, **values).returning(*native_jobs.c))).first()
        if row is None:
            raise StaleTransition(f"native job {job.id} is no longer {job.state.value}")
        return _job(row)

    async def polled(self, job: NativeJob, status: str, counts: dict[str, int], now: float) -> None:
        """Store a running provider batch's status and counts. When they moved, the batch's subscribers hear
        of it (its object shows the providers' counts while they run), and a `batch.progress` webhook event is
        queued in the same transaction when the combined progress crosses a 10 % bucket — as managed batches
        do when their lines settle."""
        moved = counts != job.request_counts or status != job.provider_status
        queued = False
        async with self.db.write() as conn:
            await conn.execute(update(native_jobs).where(native_jobs.c.id == job.id).values(
                provider_status=status, request_counts=counts, last_polled_at=now, updated_at=self.db.clock.now()))
            if not moved:
                return
            row = (await conn.execute(select(batches).where(batches.c.id == job.batch_id))).first()
            if row is None:
                return
            record = batch_record(row)
            at_provider = [s.value for s in NativeJobState if s.at_provider]
            running = {r[0]: r[1] or {} for r in (await conn.execute(
                select(native_jobs.c.id, native_jobs.c.request_counts).where(and_(
                    native_jobs.c.batch_id == job.batch_id, native_jobs.c.state.in_(at_provider))))).all()}
            before = record.counts.with_running({**running, job.id: job.request_counts or {}}.values())
            bucket = progress_crossed(before, record.counts.with_running(running.values()))
            if bucket is not None:
                queued = await self.outbox.queue(conn, record, "batch.progress",
                                                 delivery_key("batch.progress", bucket), now)
        self.db.emit(record, queued)

    async def attach(self, job: NativeJob, native_batch_id: str, status: str | None,
                     counts: dict[str, int] | None) -> NativeJob:
        """Persist the provider's batch id (and the batch's first one on the batch row) in one transaction: the
        job moves from creating to running, compare-and-set (StaleTransition when another process moved it)."""
        check(job.state, NativeJobState.RUNNING)
        now = self.db.clock.now()
        async with self.db.write() as conn:
            row = (await conn.execute(update(native_jobs).where(and_(
                native_jobs.c.id == job.id, native_jobs.c.state == job.state.value)).values(
                native_batch_id=native_batch_id, state=NativeJobState.RUNNING.value, provider_status=status,
                request_counts=counts, last_polled_at=now, updated_at=now).returning(*native_jobs.c))).first()
            if row is None:
                raise StaleTransition(f"native job {job.id} is no longer {job.state.value}")
            await conn.execute(update(batches).where(and_(batches.c.id == job.batch_id,
                                                          batches.c.native_batch_id.is_(None)))
                               .values(native_batch_id=native_batch_id))
        return _job(row)

    async def claimed_ids(self, provider: str) -> set[str]:
        """Provider batch ids some job already owns (reconciling must never adopt another job's batch)."""
        query = select(native_jobs.c.native_batch_id).where(and_(native_jobs.c.provider == provider,
                                                                 native_jobs.c.native_batch_id.is_not(None)))
        async with self.db.read() as conn:
            return {r[0] for r in (await conn.execute(query)).all()}

    async def held_items(self, job: NativeJob, page: int = 1000,
                         with_body: bool = True) -> AsyncIterator[list[JobItem]]:
        """The job's items not yet settled, in line order, a page at a time (with their bodies: one coalesced read of
        the input file per page)."""
        after = 0
        columns = [items.c.line, items.c.custom_id, items.c.model]
        if with_body:
            columns += [items.c.body, items.c.body_offset, items.c.body_length]
        while True:
            query = (select(*columns).where(and_(items.c.batch_id == job.batch_id, items.c.lease_owner == job.owner,
                                                 items.c.status == ITEM_LEASED, items.c.line > after))
                     .order_by(items.c.line).limit(page))
            async with self.db.read() as conn:
                rows = (await conn.execute(query)).all()
            if not rows:
                return
            after = rows[-1][0]
            if not with_body:
                yield [JobItem(r[0], r[1], r[2], None) for r in rows]
                continue
            stored = [(r[3], r[4], r[5]) for r in rows]
            if any(body is None for body, _o, _n in stored):
                if self.bodies is None:
                    raise RuntimeError("items point into their input file, but NativeJobs has no InputBodies")
                bodies = await self.bodies.load(job.batch_id, stored)
            else:
                bodies = [body for body, _o, _n in stored]
            yield [JobItem(r[0], r[1], r[2], body) for r, body in zip(rows, bodies, strict=True)]

    async def held_count(self, job: NativeJob) -> int:
        query = select(func.count()).select_from(items).where(and_(
            items.c.batch_id == job.batch_id, items.c.lease_owner == job.owner, items.c.status == ITEM_LEASED))
        async with self.db.read() as conn:
            return int(await conn.scalar(query) or 0)
