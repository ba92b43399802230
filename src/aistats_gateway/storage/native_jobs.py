"""Storage of native provider batches (issue #7): the `native_jobs` rows and the items they hold.

A native batch keeps its item rows (ingest made them) so counts, results streaming, cancel/expiry and the
finalizer work unchanged; what changes is who holds the items. `plan()` splits a batch's pending items into
jobs — one per provider (per model on OpenAI, whose batches take one model each) — and leases each job's
items to the owner `native:<job id>` with a lease that never expires, in ONE transaction, so the managed
scheduler and the lease sweeps never touch them. Settling goes through `Store.settle()` like every result.

Writes use the Store's engine and its write serialisation (`Store._write()`); SQLAlchemy Core only, so the
same statements run on SQLite and PostgreSQL. Nothing here calls a provider.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, fields
from typing import Any

from sqlalchemy import and_, func, insert, select, update

from aistats_gateway import ids
from aistats_gateway.storage.bodies import InputBodies
from aistats_gateway.storage.schema import ITEM_LEASED, ITEM_PENDING, batches, items, native_jobs
from aistats_gateway.storage.store import Store

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
    state: str
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


def _job(row: Any) -> NativeJob:
    mapping = row._mapping
    return NativeJob(**{f.name: mapping[f.name] for f in fields(NativeJob)})


class NativeJobs:
    """`bodies` reads the bodies of items that point into their input file (every item ingest makes since 0007)."""

    def __init__(self, store: Store, bodies: InputBodies | None = None) -> None:
        self.store = store
        self.bodies = bodies

    async def for_batch(self, batch_id: str) -> list[NativeJob]:
        query = select(native_jobs).where(native_jobs.c.batch_id == batch_id).order_by(native_jobs.c.id)
        async with self.store.engine.connect() as conn:
            return [_job(r) for r in (await conn.execute(query)).all()]

    async def plan(self, batch_id: str, kind_of: Callable[[str], str], now: float) -> list[NativeJob]:
        """The batch's jobs; made on first call from its pending items (idempotent: existing jobs win)."""
        async with self.store._write() as conn:
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
                job_id = "nj_" + ids.ulid()
                await conn.execute(insert(native_jobs).values(
                    id=job_id, batch_id=batch_id, provider=provider, model=model, kind=kind_of(provider),
                    state="creating", idempotency_key="aistats-" + job_id, id_scheme="verbatim", lines=n,
                    create_attempts=0, created_at=now, updated_at=now))
                cond = [items.c.batch_id == batch_id, items.c.provider == provider, items.c.status == ITEM_PENDING]
                if model != ANY_MODEL:
                    cond.append(items.c.model == model)
                await conn.execute(update(items).where(and_(*cond)).values(
                    status=ITEM_LEASED, lease_owner=OWNER_PREFIX + job_id, lease_expires_at=NEVER))
            rows = (await conn.execute(select(native_jobs).where(native_jobs.c.batch_id == batch_id)
                                       .order_by(native_jobs.c.id))).all()
        return [_job(r) for r in rows]

    async def update(self, job_id: str, **values: Any) -> NativeJob:
        values.setdefault("updated_at", time.time())
        async with self.store._write() as conn:
            row = (await conn.execute(update(native_jobs).where(native_jobs.c.id == job_id).values(**values)
                                      .returning(*native_jobs.c))).one()
        return _job(row)

    async def attach(self, job: NativeJob, native_batch_id: str, status: str | None,
                     counts: dict[str, int] | None) -> NativeJob:
        """Persist the provider's batch id (and the batch's first one on the batch row) in one transaction."""
        now = time.time()
        async with self.store._write() as conn:
            row = (await conn.execute(update(native_jobs).where(native_jobs.c.id == job.id).values(
                native_batch_id=native_batch_id, state="running", provider_status=status, request_counts=counts,
                last_polled_at=now, updated_at=now).returning(*native_jobs.c))).one()
            await conn.execute(update(batches).where(and_(batches.c.id == job.batch_id,
                                                          batches.c.native_batch_id.is_(None)))
                               .values(native_batch_id=native_batch_id))
        return _job(row)

    async def claimed_ids(self, provider: str) -> set[str]:
        """Provider batch ids some job already owns (reconciling must never adopt another job's batch)."""
        query = select(native_jobs.c.native_batch_id).where(and_(native_jobs.c.provider == provider,
                                                                 native_jobs.c.native_batch_id.is_not(None)))
        async with self.store.engine.connect() as conn:
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
            async with self.store.engine.connect() as conn:
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
        async with self.store.engine.connect() as conn:
            return int(await conn.scalar(query) or 0)
