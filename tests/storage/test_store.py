"""The Store on a real SQLite file and on PostgreSQL (see conftest.py): migrations, compare-and-set,
leasing, settling, finalization data. Written against the Store interface only.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from aistats_gateway.domain.batch import BatchStatus
from aistats_gateway.errors import NotFound, StaleTransition
from aistats_gateway.storage.migrate import upgrade_to_head
from aistats_gateway.storage.records import FileRecord
from aistats_gateway.storage.schema import ITEM_LEASED, ITEM_PENDING, metadata
from aistats_gateway.storage.store import Settlement, Store, create_engine

T = TypeVar("T")


def run(db_url: str, fn: Callable[[Store], Awaitable[T]]) -> T:
    async def main() -> T:
        engine = create_engine(db_url)
        await upgrade_to_head(engine)
        store = Store(engine)
        try:
            return await fn(store)
        finally:
            await store.close()

    return asyncio.run(main())


async def seed(store: Store, batch_id: str = "batch_1", lines: int = 10, workspace: str = "ws_a") -> None:
    await store.ensure_workspace(workspace, workspace)
    await store.insert_file(FileRecord(f"file-{batch_id}", workspace, "in.jsonl", "batch", 1, "processed",
                                       f"files/{batch_id}", 1, None))
    await store.insert_batch({
        "id": batch_id, "workspace_id": workspace, "request_id": "G-1", "endpoint": "/v1/chat/completions",
        "endpoint_input": "/v1/chat/completions", "status": "validating", "input_file_id": f"file-{batch_id}",
        "completion_window": "24h", "created_at": 1, "expires_at": 10**10, "total": 0, "completed": 0,
        "failed": 0, "input_tokens": 0, "output_tokens": 0, "updated_at": 1.0,
    })
    await store.insert_items([
        {"batch_id": batch_id, "line": i, "custom_id": f"c{i}", "model": "mock/echo", "provider": "mock",
         "body": b"{}", "status": 0, "attempts": 0, "input_tokens": 0, "output_tokens": 0}
        for i in range(1, lines + 1)
    ])
    await store.transition(batch_id, BatchStatus.VALIDATING, BatchStatus.IN_PROGRESS, 2.0, total=lines)


def test_migrations_create_exactly_the_declared_schema(db_url: str) -> None:
    async def diff(store: Store) -> list[Any]:
        async with store.engine.connect() as conn:
            return await conn.run_sync(lambda c: compare_metadata(MigrationContext.configure(c), metadata))

    assert run(db_url, diff) == []
    # and running them again is a no-op
    assert run(db_url, diff) == []


def test_transition_is_compare_and_set(db_url: str) -> None:
    async def body(store: Store) -> None:
        await seed(store)
        rec = await store.transition("batch_1", BatchStatus.IN_PROGRESS, BatchStatus.CANCELLING, 3.0)
        assert rec.status is BatchStatus.CANCELLING and rec.cancelling_at == 3
        with pytest.raises(StaleTransition):
            await store.transition("batch_1", BatchStatus.IN_PROGRESS, BatchStatus.FINALIZING, 4.0)

    run(db_url, body)


def test_lease_settle_and_counts(db_url: str) -> None:
    async def body(store: Store) -> None:
        await seed(store, lines=10)
        first = await store.lease_items("batch_1", "boot_a", 4, 100.0)
        second = await store.lease_items("batch_1", "boot_a", 100, 100.0)
        assert [i.line for i in first] == [1, 2, 3, 4]
        assert [i.line for i in second] == list(range(5, 11))
        assert await store.lease_items("batch_1", "boot_a", 5, 100.0) == []
        settled = [Settlement("batch_1", i.line, i.line % 3 != 0, b"{}", 1, 10, 5) for i in first]
        updated = await store.settle(settled, 5.0)
        rec = updated["batch_1"]
        assert (rec.completed, rec.failed, rec.input_tokens, rec.output_tokens) == (3, 1, 40, 20)
        # settling the same items again must not count them twice (they are no longer leased)
        again = await store.settle(settled, 6.0)
        assert (again["batch_1"].completed, again["batch_1"].failed) == (3, 1)
        assert await store.unsettled_count("batch_1") == 6

    run(db_url, body)


def test_release_leases_of_earlier_incarnations_and_expired_ones(db_url: str) -> None:
    async def body(store: Store) -> None:
        await seed(store, lines=9)
        await store.lease_items("batch_1", "n1:boot_old", 3, 100.0)
        await store.lease_items("batch_1", "n1:boot_new", 3, 100.0)
        await store.lease_items("batch_1", "n2:boot_peer", 3, 100.0)
        # this node's earlier incarnation is gone: its leases are free at once; a live peer's are not
        assert await store.release_earlier_incarnations("n1:", "n1:boot_new") == 3
        assert [i.line for i in await store.lease_items("batch_1", "n1:boot_new", 10, 100.0)] == [1, 2, 3]
        # the peer stops heart-beating: once its leases expire they are released
        assert await store.release_expired_leases(50.0, "n1:boot_new") == 0
        assert await store.heartbeat_leases("n1:boot_new", 500.0) == 6
        assert await store.release_expired_leases(200.0, "n1:boot_new") == 3
        assert [i.line for i in await store.lease_items("batch_1", "n1:boot_new", 10, 500.0)] == [7, 8, 9]
        assert await store.release_leases("n1:boot_new") == 9

    run(db_url, body)


def test_fail_unfinished_is_idempotent_and_recounts(db_url: str) -> None:
    async def body(store: Store) -> None:
        await seed(store, lines=5)
        leased = await store.lease_items("batch_1", "boot", 2, 100.0)
        await store.settle([Settlement("batch_1", leased[0].line, True, b"{}", 1)], 1.0)
        rec = await store.fail_unfinished("batch_1", "batch_cancelled", 2.0)
        assert (rec.completed, rec.failed) == (1, 4)
        rec = await store.fail_unfinished("batch_1", "batch_cancelled", 3.0)
        assert (rec.completed, rec.failed) == (1, 4)
        rows = await store.item_results("batch_1", 0, 100)
        assert [r.error_code for r in rows] == [None] + ["batch_cancelled"] * 4
        assert all(r.status not in (ITEM_PENDING, ITEM_LEASED) for r in rows)

    run(db_url, body)


def test_batches_list_newest_first_with_cursor(db_url: str) -> None:
    async def body(store: Store) -> None:
        for i in range(5):
            await seed(store, f"batch_{i}", lines=1)
        await seed(store, "batch_x", lines=1, workspace="ws_b")
        page1, more1 = await store.list_batches("ws_a", after=None, limit=2, status=None)
        page2, _ = await store.list_batches("ws_a", after=page1[-1].id, limit=2, status=None)
        page3, more3 = await store.list_batches("ws_a", after=page2[-1].id, limit=2, status=None)
        assert [b.id for b in page1 + page2 + page3] == [f"batch_{i}" for i in (4, 3, 2, 1, 0)]
        assert more1 and not more3
        assert await store.get_batch("batch_x", "ws_a") is None  # another workspace's batch is invisible

    run(db_url, body)


def test_usage_is_priced_once_even_when_a_group_is_applied_twice(db_url: str) -> None:
    from aistats_gateway.pricing.calculator import PricingRow

    def usage(n: int) -> tuple[PricingRow, ...]:
        return (PricingRow("openai", "gpt-4o-mini", "standard", "input_text_tokens", 1_000_000, 150_000_000, n),)

    async def body(store: Store) -> None:
        await seed(store, lines=4)
        leased = await store.lease_items("batch_1", "boot", 4, 100.0)
        first = [Settlement("batch_1", i.line, True, b"{}", 1, 10, 1, usage(10)) for i in leased[:2]]
        await store.settle(first, 1.0)
        # an ambiguous commit re-applied, together with two new lines: only the new ones add usage
        again = first + [Settlement("batch_1", i.line, True, b"{}", 1, 10, 1, usage(10)) for i in leased[2:]]
        rec = (await store.settle(again, 2.0))["batch_1"]
        assert (rec.completed, rec.input_tokens) == (4, 40)
        lines = await store.pricing_lines("batch_1")
        assert [(p["dimension"], p["quantity"], p["line_nanos"]) for p in lines] == [("input_text_tokens", 40, 6000)]

    run(db_url, body)


def test_usage_details_are_counted_once_even_when_a_group_is_applied_twice(db_url: str) -> None:
    """cached_tokens / reasoning_tokens (migration 0010) are summed over the settlements actually applied."""

    async def body(store: Store) -> None:
        await seed(store, lines=4)
        leased = await store.lease_items("batch_1", "boot", 4, 100.0)
        first = [Settlement("batch_1", i.line, True, b"{}", 1, 10, 4, (), 3, 2) for i in leased[:2]]
        rec = (await store.settle(first, 1.0))["batch_1"]
        assert (rec.cached_tokens, rec.reasoning_tokens) == (6, 4)
        again = first + [Settlement("batch_1", i.line, True, b"{}", 1, 10, 4, (), 5, 0) for i in leased[2:]]
        rec = (await store.settle(again, 2.0))["batch_1"]
        assert (rec.completed, rec.cached_tokens, rec.reasoning_tokens) == (4, 16, 4)
        stored = await store.get_batch("batch_1")
        assert stored is not None and (stored.cached_tokens, stored.reasoning_tokens) == (16, 4)

    run(db_url, body)


def test_items_point_into_their_input_file_and_older_rows_keep_their_bodies(db_url: str) -> None:
    async def body(store: Store) -> None:
        await seed(store, lines=2)  # rows written with a body, as before migration 0007
        await store.insert_file(FileRecord("file-refs", "ws_a", "in.jsonl", "batch", 1, "processed", "files/refs", 1,
                                           None))
        await store.insert_batch({
            "id": "batch_r", "workspace_id": "ws_a", "request_id": "G-2", "endpoint": "/v1/chat/completions",
            "endpoint_input": "/v1/chat/completions", "status": "validating", "input_file_id": "file-refs",
            "completion_window": "24h", "created_at": 1, "expires_at": 10**10, "total": 0, "completed": 0,
            "failed": 0, "input_tokens": 0, "output_tokens": 0, "updated_at": 1.0,
        })
        refs = [(n, f"c{n}", "mock/echo", "mock", 1000 * n + 3, 900 + n) for n in range(1, 6)]
        if not store.is_postgresql:  # (PostgreSQL's text takes no NUL at all) SQLite's JSON functions stop at NUL
            refs[2] = (3, "nul\x00inside ✓", "mock/echo", "mock", 3003, 903)
        await store.insert_item_refs("batch_r", refs[:4])
        await store.insert_item_refs("batch_r", refs[4:])
        await store.transition("batch_r", BatchStatus.VALIDATING, BatchStatus.IN_PROGRESS, 2.0, total=5)
        leased = await store.lease_items("batch_r", "boot", 10, 100.0)
        assert [(i.line, i.custom_id, i.model, i.provider, i.body_offset, i.body_length, i.body, i.attempts)
                for i in leased] == [(*r, None, 0) for r in refs]
        assert await store.input_blob_key("batch_r") == "files/refs"
        old = await store.lease_items("batch_1", "boot", 10, 100.0)
        assert [(i.body, i.body_offset, i.body_length) for i in old] == [(b"{}", None, None)] * 2

    run(db_url, body)


def test_an_input_file_deleted_while_its_batch_runs_stays_until_the_batch_ends(db_url: str) -> None:
    async def body(store: Store) -> None:
        await seed(store, lines=1)  # batch_1 (in_progress) reads file-batch_1
        record, blob_free = await store.delete_file("ws_a", "file-batch_1") or (None, None)
        assert record is not None and record.id == "file-batch_1" and blob_free is False
        # gone for the API (get, list, delete again, new batches), still there for its batch
        assert await store.get_file("ws_a", "file-batch_1") is None
        assert (await store.list_files("ws_a", after=None, limit=10, purpose=None, ascending=True))[0] == []
        assert await store.delete_file("ws_a", "file-batch_1") is None
        with pytest.raises(NotFound):
            await store.insert_batch({
                "id": "batch_2", "workspace_id": "ws_a", "request_id": "G-3", "endpoint": "/v1/chat/completions",
                "endpoint_input": "/v1/chat/completions", "status": "validating", "input_file_id": "file-batch_1",
                "completion_window": "24h", "created_at": 1, "expires_at": 10**10, "total": 0, "completed": 0,
                "failed": 0, "input_tokens": 0, "output_tokens": 0, "updated_at": 1.0})
        kept = await store.get_file("ws_a", "file-batch_1", include_deleted=True)
        assert kept is not None and kept.status == "deleted"
        assert await store.input_blob_key("batch_1") == "files/batch_1"
        assert await store.purgeable_files() == []  # its batch is still running
        await store.fail_unfinished("batch_1", "batch_cancelled", 3.0)
        await store.transition("batch_1", BatchStatus.IN_PROGRESS, BatchStatus.CANCELLING, 3.0)
        assert await store.purgeable_files() == []  # cancelling is not over yet
        await store.publish_results("batch_1", BatchStatus.CANCELLING, BatchStatus.CANCELLED, 4.0, [])
        assert [f.id for f in await store.purgeable_files()] == ["file-batch_1"]
        await store.forget_file("file-batch_1")
        assert await store.get_file("ws_a", "file-batch_1", include_deleted=True) is None
        # a file no unfinished batch reads goes at once
        await seed(store, "batch_3", lines=1)
        await store.fail_unfinished("batch_3", "batch_cancelled", 5.0)
        await store.transition("batch_3", BatchStatus.IN_PROGRESS, BatchStatus.CANCELLING, 5.0)
        await store.publish_results("batch_3", BatchStatus.CANCELLING, BatchStatus.CANCELLED, 6.0, [])
        assert (await store.delete_file("ws_a", "file-batch_3") or (None, None))[1] is True
        assert await store.get_file("ws_a", "file-batch_3", include_deleted=True) is None

    run(db_url, body)


def test_upgrading_to_0007_keeps_the_bodies_of_existing_items(db_url: str) -> None:
    from alembic import command
    from sqlalchemy import text

    from aistats_gateway.storage.migrate import alembic_config

    async def main() -> None:
        engine = create_engine(db_url)
        async with engine.begin() as conn:
            await conn.run_sync(lambda c: command.upgrade(alembic_config(c), "0006_native"))
            await conn.execute(text("INSERT INTO workspaces (id, name, created_at) VALUES ('ws', 'ws', 1)"))
            await conn.execute(text(
                "INSERT INTO batches (id, workspace_id, request_id, endpoint, endpoint_input, status, input_file_id, "
                "completion_window, created_at, expires_at, total, completed, failed, input_tokens, output_tokens, "
                "updated_at) VALUES ('b1', 'ws', 'G', '/v1/chat/completions', 'x', 'in_progress', 'f1', '24h', 1, "
                "99999999999, 1, 0, 0, 0, 0, 1.0)"))
            await conn.execute(text(
                "INSERT INTO items (batch_id, line, custom_id, model, provider, body, status, attempts, input_tokens, "
                "output_tokens) VALUES ('b1', 1, 'c1', 'mock/echo', 'mock', :body, 0, 0, 0, 0)"),
                {"body": b'{"model":"mock/echo"}'})
        await upgrade_to_head(engine)
        store = Store(engine)
        try:
            leased = await store.lease_items("b1", "boot", 5, 100.0)
            assert [(i.custom_id, i.body, i.body_offset) for i in leased] == [("c1", b'{"model":"mock/echo"}', None)]
        finally:
            await store.close()

    asyncio.run(main())
