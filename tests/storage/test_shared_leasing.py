"""Several workers on ONE batch: each Store here has its own engine and connection pool, as separate
processes would. Leases never overlap, every item is leased exactly once, concurrent settles count
every line once, an interrupted second ingest cannot touch a batch that has moved on.

Runs on SQLite (one writer at a time, the same guarantees) and on PostgreSQL (SKIP LOCKED).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest
from sqlalchemy import update

from aistats_gateway.domain.batch import BatchStatus
from aistats_gateway.storage.migrate import upgrade_to_head
from aistats_gateway.storage.schema import batches
from aistats_gateway.storage.store import Settlement, Store, create_engine
from tests.storage.support import seed

T = TypeVar("T")


def run_many(db_url: str, n: int, fn: Callable[[list[Store]], Awaitable[T]]) -> T:
    async def main() -> T:
        stores = [Store(create_engine(db_url)) for _ in range(n)]
        await upgrade_to_head(stores[0].engine)
        try:
            return await fn(stores)
        finally:
            for store in stores:
                await store.close()

    return asyncio.run(main())


def test_workers_lease_disjoint_items_and_settle_each_line_once(db_url: str) -> None:
    lines = 600

    async def worker(store: Store, owner: str, seen: list[int]) -> int:
        settled = 0
        while True:
            leased = await store.items.lease("batch_1", owner, 25, 10**10)
            if not leased:
                return settled
            seen += [i.line for i in leased]
            await asyncio.sleep(0)  # let the others lease while this group is "on the wire"
            await store.items.settle([Settlement("batch_1", i.line, i.line % 7 != 0, b"{}", 1, 3, 2)
                                      for i in leased], 5.0)
            settled += len(leased)

    async def body(stores: list[Store]) -> None:
        await seed(stores[0], lines=lines)
        seen: list[list[int]] = [[] for _ in stores]
        counts = await asyncio.gather(*(worker(s, f"w{k}:boot", seen[k]) for k, s in enumerate(stores)))
        everything = sorted(line for part in seen for line in part)
        assert everything == list(range(1, lines + 1)), "every item leased exactly once across the workers"
        assert sum(counts) == lines
        assert sum(1 for c in counts if c > 0) >= 2, f"the work was shared: {counts}"
        batch = await stores[0].batches.get("batch_1")
        assert batch is not None
        failed = lines // 7
        assert (batch.completed, batch.failed, batch.input_tokens) == (lines - failed, failed, 3 * lines)
        assert await stores[0].items.unsettled_count("batch_1") == 0
        # the results cursor numbers every settled line once, 1..n without gaps
        seqs = [seq for seq, _ in await stores[0].items.results_after("batch_1", 0, 10_000)]
        assert seqs == list(range(1, lines + 1))

    run_many(db_url, 3, body)


def test_a_dead_workers_leases_expire_and_a_live_one_keeps_its_own(db_url: str) -> None:
    async def body(stores: list[Store]) -> None:
        live, dead = stores
        await seed(live, lines=6)
        await dead.items.lease("batch_1", "dead:boot", 3, 100.0)
        await live.items.lease("batch_1", "live:boot", 3, 100.0)
        assert await live.items.heartbeat("live:boot", 300.0) == 3
        # at t=200 the dead worker's leases have run out; the live one's were extended
        assert await live.items.release_expired(200.0, "live:boot") == 3
        again = await live.items.lease("batch_1", "live:boot", 10, 300.0)
        assert [i.line for i in again] == [1, 2, 3]
        # the dead worker's late settle is not applied (its items are not leased by it any more... nor at all)
        await live.items.settle([Settlement("batch_1", i.line, True, b"{}", 1) for i in again], 1.0)
        assert await dead.items.unsettled_count("batch_1") == 3

    run_many(db_url, 2, body)


def test_a_second_ingest_cannot_touch_a_batch_that_moved_on(db_url: str) -> None:
    row = {"batch_id": "batch_1", "line": 99, "custom_id": "late", "model": "mock/echo", "provider": "mock",
           "body": b"{}", "status": 0, "attempts": 0, "input_tokens": 0, "output_tokens": 0}

    async def body(stores: list[Store]) -> None:
        first, late = stores
        await seed(first, lines=5)  # ingested and moved to in_progress
        leased = await first.items.lease("batch_1", "a:boot", 2, 100.0)
        await first.items.settle([Settlement("batch_1", leased[0].line, True, b"{}", 1)], 1.0)
        await late.items.discard_ingest("batch_1")  # a slower ingest of the same batch starts over: refused
        assert await first.items.unsettled_count("batch_1") == 4
        assert len(await first.items.results_by_line("batch_1", 0, 100)) == 5
        if late.db.is_postgresql:  # on PostgreSQL a late insert is skipped (SQLite has one ingest per batch)
            await late.items.insert([row])
            assert len(await first.items.results_by_line("batch_1", 0, 100)) == 5
        batch = await first.batches.get("batch_1")
        assert batch is not None and batch.status is BatchStatus.IN_PROGRESS and batch.completed == 1

    run_many(db_url, 2, body)


def test_a_batch_starts_only_with_every_item_stored_when_two_ingests_race(db_url: str) -> None:
    """PostgreSQL: ingest A stored every item, then ingest B started over (deleting them) before A moved the
    batch on: A must not start a batch with missing items; B, once it stored them all again, does."""
    from aistats_gateway.errors import StaleTransition

    def rows(n: int) -> list[dict[str, object]]:
        return [{"batch_id": "batch_1", "line": i, "custom_id": f"c{i}", "model": "mock/echo", "provider": "mock",
                 "body": b"{}", "status": 0, "attempts": 0, "input_tokens": 0, "output_tokens": 0}
                for i in range(1, n + 1)]

    async def body(stores: list[Store]) -> None:
        a, b = stores
        if not a.db.is_postgresql:
            return  # one ingest per batch at a time in the single SQLite process
        await seed(a, lines=0)
        async with a.engine.begin() as conn:  # seed() moved it on: back to validating, 4 lines found so far
            await conn.execute(update(batches).values(status="validating", total=4))
        await a.items.discard_ingest("batch_1")
        await a.items.insert(rows(4))
        await b.items.discard_ingest("batch_1")  # B starts over
        with pytest.raises(StaleTransition):
            await a.batches.transition("batch_1", BatchStatus.VALIDATING, BatchStatus.IN_PROGRESS, 2.0)
        await b.items.insert(rows(2))
        await a.items.insert(rows(4)[2:])  # A's late chunk and B's own overlap: stored once
        await b.items.insert(rows(4))
        started = await b.batches.transition("batch_1", BatchStatus.VALIDATING, BatchStatus.IN_PROGRESS, 3.0)
        assert started.status is BatchStatus.IN_PROGRESS and await b.items.unsettled_count("batch_1") == 4

    run_many(db_url, 2, body)
