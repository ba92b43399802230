"""Native job storage on SQLite and on PostgreSQL (where reachable): planning splits and holds a batch's
items, the holds survive every lease sweep, the provider's id lands on the batch once; and ingest never
re-runs over a validated batch."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import orjson
import pytest
from sqlalchemy import update

from aistats_gateway.clock import SystemClock
from aistats_gateway.config import LimitsConfig
from aistats_gateway.domain.batch import BatchStatus
from aistats_gateway.domain.native_job import NativeJobState
from aistats_gateway.domain.transitions import IllegalTransition
from aistats_gateway.errors import StaleTransition
from aistats_gateway.executor.ingest import ingest
from aistats_gateway.pricing.catalog import PriceCatalog
from aistats_gateway.pricing.pricer import Pricer
from aistats_gateway.providers.mock import MockProvider
from aistats_gateway.providers.routing import Router
from aistats_gateway.storage.blobs import LocalBlobStore
from aistats_gateway.storage.bodies import InputBodies
from aistats_gateway.storage.native_jobs import NativeJobs
from aistats_gateway.storage.records import FileRecord
from aistats_gateway.storage.schema import ITEM_LEASED, ITEM_PENDING, items
from aistats_gateway.storage.store import Store
from tests.storage.support import run, seed


async def _mixed(store: Store) -> None:
    await seed(store, lines=6)
    async with store.db.write() as conn:  # lines 1-2 → oa/gpt-a, 3-4 → oa/gpt-b, 5-6 → claude (anthropic)
        for lines, provider, model in (((1, 2), "oa", "gpt-a"), ((3, 4), "oa", "gpt-b"), ((5, 6), "an", "claude")):
            await conn.execute(update(items).where(items.c.line.in_(lines)).values(provider=provider, model=model))


def test_plan_splits_and_holds_items_beyond_every_lease_sweep(db_url: str) -> None:
    async def body(store: Store) -> None:
        await _mixed(store)
        jobs = NativeJobs(store.db, store.outbox)
        kinds = {"oa": "openai", "an": "anthropic"}
        planned = await jobs.plan("batch_1", kinds.__getitem__, 10.0)
        assert sorted((j.provider, j.model, j.lines, j.state) for j in planned) == [
            ("an", "*", 2, "creating"), ("oa", "gpt-a", 2, "creating"), ("oa", "gpt-b", 2, "creating")]
        assert len({j.idempotency_key for j in planned}) == 3
        assert [j.id for j in await jobs.plan("batch_1", kinds.__getitem__, 11.0)] == [j.id for j in planned]
        # the managed executor's sweeps never take a native job's items
        assert await store.items.release_earlier_incarnations("local:", "local:boot_x") == 0
        assert await store.items.release_expired(10.0**12, "local:boot_x") == 0
        assert await store.items.lease("batch_1", "local:boot_x", 10, 100.0) == []
        held = {j.model: [i.line async for page in jobs.held_items(j) for i in page] for j in planned}
        assert held == {"*": [5, 6], "gpt-a": [1, 2], "gpt-b": [3, 4]}
        first, second = planned[0], planned[1]
        await jobs.attach(first, "nb_1", "in_progress", {"total": 2, "completed": 0, "failed": 0})
        await jobs.attach(second, "nb_2", "in_progress", None)
        batch = await store.batches.get("batch_1")
        assert batch is not None and batch.native_batch_id == "nb_1"  # the first one, kept
        assert await jobs.claimed_ids(first.provider) >= {"nb_1"}
        assert await jobs.held_count(first) == 2
    run(db_url, body)


def test_ingest_never_runs_again_over_a_validated_batch(db_url: str, tmp_path: Path) -> None:
    async def body(store: Store) -> None:
        await seed(store, lines=4)
        current = await store.batches.get("batch_1")
        assert current is not None and current.status is BatchStatus.IN_PROGRESS
        await store.items.lease("batch_1", "local:boot_1", 2, 10.0**9)
        stale = dataclasses.replace(current, status=BatchStatus.VALIDATING)  # what a sweep read earlier
        result = await ingest(stale, store=store, blobs=LocalBlobStore(tmp_path / "blobs"),
                              router=Router([MockProvider()]), limits=LimitsConfig(), clock=SystemClock(),
                              pricer=Pricer(PriceCatalog.load()))
        assert result is None
        async with store.engine.connect() as conn:
            statuses = [r[0] for r in (await conn.execute(items.select().with_only_columns(items.c.status)
                                                          .order_by(items.c.line))).all()]
        assert statuses == [ITEM_LEASED, ITEM_LEASED, ITEM_PENDING, ITEM_PENDING]  # nothing deleted or reset
    run(db_url, body)


def test_held_items_carry_the_bodies_read_back_from_the_input_file(db_url: str, tmp_path: Path) -> None:
    """What a native job's provider input is built from: each held line's own body, from the file its row points
    into (one coalesced read per page), byte for byte what ingest used to store."""
    rows = [{"custom_id": f"n{i}", "method": "POST", "url": "/v1/chat/completions",
             "body": {"model": "mock/echo", "messages": [{"role": "user", "content": f"native {i} ✓ " * i}],
                      "max_tokens": i + 1}} for i in range(1, 8)]
    data = b"\xef\xbb\xbf" + b"\r\n\n".join(orjson.dumps(r) for r in rows)  # BOM, CRLF + blank lines, no final newline

    async def body(store: Store) -> None:
        blobs = LocalBlobStore(tmp_path / "blobs")
        writer = blobs.writer("files/native-in")
        await writer.write(data)
        await writer.commit()
        await store.workspaces.ensure("ws_a", "ws_a")
        await store.files.insert(FileRecord("file-native", "ws_a", "in.jsonl", "batch", len(data), "processed",
                                           "files/native-in", 1, None))
        batch = await store.batches.insert({
            "id": "batch_n", "workspace_id": "ws_a", "request_id": "G-1", "endpoint": "/v1/chat/completions",
            "endpoint_input": "/v1/chat/completions", "status": "validating", "input_file_id": "file-native",
            "completion_window": "24h", "created_at": 1, "expires_at": 10**10, "total": 0, "completed": 0,
            "failed": 0, "input_tokens": 0, "output_tokens": 0, "updated_at": 1.0})
        done = await ingest(batch, store=store, blobs=blobs, router=Router([MockProvider()]), limits=LimitsConfig(),
                            clock=SystemClock(), pricer=Pricer(PriceCatalog.load()))
        assert done is not None and done.status is BatchStatus.IN_PROGRESS and done.total == len(rows)
        jobs = NativeJobs(store.db, store.outbox, InputBodies(store.files, blobs))
        (job,) = await jobs.plan("batch_n", lambda _p: "openai", 10.0)
        held = [item async for page in jobs.held_items(job, page=3) for item in page]
        assert [(i.custom_id, i.body) for i in held] == [(r["custom_id"], orjson.dumps(r["body"])) for r in rows]
        assert {i.body async for page in jobs.held_items(job, with_body=False) for i in page} == {None}

    run(db_url, body)


def test_job_states_move_along_their_table_compare_and_set(db_url: str) -> None:
    """A native job's state changes only along domain/native_job.py's table, and only from the state it was read
    in: a second process moving the same job from a stale read gets StaleTransition, not a second `done`."""
    async def body(store: Store) -> None:
        await _mixed(store)
        jobs = NativeJobs(store.db, store.outbox)
        first, *_ = await jobs.plan("batch_1", {"oa": "openai", "an": "anthropic"}.__getitem__, 10.0)
        assert first.state is NativeJobState.CREATING
        with pytest.raises(IllegalTransition):
            await jobs.transition(first, NativeJobState.CREATING)
        running = await jobs.attach(first, "nb_1", "in_progress", None)
        assert running.state is NativeJobState.RUNNING
        with pytest.raises(StaleTransition):  # a stale read of the job: it is not creating any more
            await jobs.attach(first, "nb_other", "in_progress", None)
        collecting = await jobs.transition(running, NativeJobState.COLLECTING, provider_status="completed")
        assert (collecting.state, collecting.provider_status) == (NativeJobState.COLLECTING, "completed")
        done = await jobs.transition(collecting, NativeJobState.DONE)
        with pytest.raises(StaleTransition):
            await jobs.transition(collecting, NativeJobState.DONE)  # the other process collected it already
        assert [j.state for j in await jobs.for_batch("batch_1") if j.id == first.id] == [NativeJobState.DONE]
        assert done.native_batch_id == "nb_1"
    run(db_url, body)
