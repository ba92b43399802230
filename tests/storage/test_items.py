"""Items and their settlement (storage/items.py, settlement.py) on SQLite and PostgreSQL: leasing,
releasing, settling exactly once, failing what is unfinished, the rows ingest writes.
"""

from __future__ import annotations

from aistats_gateway.domain.batch import BatchStatus
from aistats_gateway.storage.records import FileRecord
from aistats_gateway.storage.schema import ITEM_LEASED, ITEM_PENDING
from aistats_gateway.storage.store import Settlement, Store
from tests.storage.support import run, seed


def test_lease_settle_and_counts(db_url: str) -> None:
    async def body(store: Store) -> None:
        await seed(store, lines=10)
        first = await store.items.lease("batch_1", "boot_a", 4, 100.0)
        second = await store.items.lease("batch_1", "boot_a", 100, 100.0)
        assert [i.line for i in first] == [1, 2, 3, 4]
        assert [i.line for i in second] == list(range(5, 11))
        assert await store.items.lease("batch_1", "boot_a", 5, 100.0) == []
        settled = [Settlement("batch_1", i.line, i.line % 3 != 0, b"{}", 1, 10, 5) for i in first]
        updated = await store.items.settle(settled, 5.0)
        rec = updated["batch_1"]
        assert (rec.completed, rec.failed, rec.input_tokens, rec.output_tokens) == (3, 1, 40, 20)
        # settling the same items again must not count them twice (they are no longer leased)
        again = await store.items.settle(settled, 6.0)
        assert (again["batch_1"].completed, again["batch_1"].failed) == (3, 1)
        assert await store.items.unsettled_count("batch_1") == 6

    run(db_url, body)


def test_release_leases_of_earlier_incarnations_and_expired_ones(db_url: str) -> None:
    async def body(store: Store) -> None:
        await seed(store, lines=9)
        await store.items.lease("batch_1", "n1:boot_old", 3, 100.0)
        await store.items.lease("batch_1", "n1:boot_new", 3, 100.0)
        await store.items.lease("batch_1", "n2:boot_peer", 3, 100.0)
        # this node's earlier incarnation is gone: its leases are free at once; a live peer's are not
        assert await store.items.release_earlier_incarnations("n1:", "n1:boot_new") == 3
        assert [i.line for i in await store.items.lease("batch_1", "n1:boot_new", 10, 100.0)] == [1, 2, 3]
        # the peer stops heart-beating: once its leases expire they are released
        assert await store.items.release_expired(50.0, "n1:boot_new") == 0
        assert await store.items.heartbeat("n1:boot_new", 500.0) == 6
        assert await store.items.release_expired(200.0, "n1:boot_new") == 3
        assert [i.line for i in await store.items.lease("batch_1", "n1:boot_new", 10, 500.0)] == [7, 8, 9]
        assert await store.items.release_owner("n1:boot_new") == 9

    run(db_url, body)


def test_fail_unfinished_is_idempotent_and_recounts(db_url: str) -> None:
    async def body(store: Store) -> None:
        await seed(store, lines=5)
        leased = await store.items.lease("batch_1", "boot", 2, 100.0)
        await store.items.settle([Settlement("batch_1", leased[0].line, True, b"{}", 1)], 1.0)
        rec = await store.items.fail_unfinished("batch_1", "batch_cancelled", 2.0)
        assert (rec.completed, rec.failed) == (1, 4)
        rec = await store.items.fail_unfinished("batch_1", "batch_cancelled", 3.0)
        assert (rec.completed, rec.failed) == (1, 4)
        rows = await store.items.results_by_line("batch_1", 0, 100)
        assert [r.error_code for r in rows] == [None] + ["batch_cancelled"] * 4
        assert all(r.status not in (ITEM_PENDING, ITEM_LEASED) for r in rows)

    run(db_url, body)


def test_usage_is_priced_once_even_when_a_group_is_applied_twice(db_url: str) -> None:
    from aistats_gateway.domain.money import PricingRow

    def usage(n: int) -> tuple[PricingRow, ...]:
        return (PricingRow("openai", "gpt-4o-mini", "standard", "input_text_tokens", 1_000_000, 150_000_000, n),)

    async def body(store: Store) -> None:
        await seed(store, lines=4)
        leased = await store.items.lease("batch_1", "boot", 4, 100.0)
        first = [Settlement("batch_1", i.line, True, b"{}", 1, 10, 1, usage(10)) for i in leased[:2]]
        await store.items.settle(first, 1.0)
        # an ambiguous commit re-applied, together with two new lines: only the new ones add usage
        again = first + [Settlement("batch_1", i.line, True, b"{}", 1, 10, 1, usage(10)) for i in leased[2:]]
        rec = (await store.items.settle(again, 2.0))["batch_1"]
        assert (rec.completed, rec.input_tokens) == (4, 40)
        lines = await store.ledger.pricing_lines("batch_1")
        assert [(p["dimension"], p["quantity"], p["line_nanos"]) for p in lines] == [("input_text_tokens", 40, 6000)]

    run(db_url, body)


def test_usage_details_are_counted_once_even_when_a_group_is_applied_twice(db_url: str) -> None:
    """cached_tokens / reasoning_tokens (migration 0010) are summed over the settlements actually applied."""

    async def body(store: Store) -> None:
        await seed(store, lines=4)
        leased = await store.items.lease("batch_1", "boot", 4, 100.0)
        first = [Settlement("batch_1", i.line, True, b"{}", 1, 10, 4, (), 3, 2) for i in leased[:2]]
        rec = (await store.items.settle(first, 1.0))["batch_1"]
        assert (rec.cached_tokens, rec.reasoning_tokens) == (6, 4)
        again = first + [Settlement("batch_1", i.line, True, b"{}", 1, 10, 4, (), 5, 0) for i in leased[2:]]
        rec = (await store.items.settle(again, 2.0))["batch_1"]
        assert (rec.completed, rec.cached_tokens, rec.reasoning_tokens) == (4, 16, 4)
        stored = await store.batches.get("batch_1")
        assert stored is not None and (stored.cached_tokens, stored.reasoning_tokens) == (16, 4)

    run(db_url, body)


def test_items_point_into_their_input_file_and_older_rows_keep_their_bodies(db_url: str) -> None:
    async def body(store: Store) -> None:
        await seed(store, lines=2)  # rows written with a body, as before migration 0007
        await store.files.insert(FileRecord("file-refs", "ws_a", "in.jsonl", "batch", 1, "processed", "files/refs", 1,
                                           None))
        await store.batches.insert({
            "id": "batch_r", "workspace_id": "ws_a", "request_id": "G-2", "endpoint": "/v1/chat/completions",
            "endpoint_input": "/v1/chat/completions", "status": "validating", "input_file_id": "file-refs",
            "completion_window": "24h", "created_at": 1, "expires_at": 10**10, "total": 0, "completed": 0,
            "failed": 0, "input_tokens": 0, "output_tokens": 0, "updated_at": 1.0,
        })
        refs = [(n, f"c{n}", "mock/echo", "mock", 1000 * n + 3, 900 + n) for n in range(1, 6)]
        if not store.db.is_postgresql:  # (PostgreSQL's text takes no NUL at all) SQLite's JSON functions stop at NUL
            refs[2] = (3, "nul\x00inside ✓", "mock/echo", "mock", 3003, 903)
        await store.items.insert_refs("batch_r", refs[:4])
        await store.items.insert_refs("batch_r", refs[4:])
        await store.batches.transition("batch_r", BatchStatus.VALIDATING, BatchStatus.IN_PROGRESS, 2.0, total=5)
        leased = await store.items.lease("batch_r", "boot", 10, 100.0)
        assert [(i.line, i.custom_id, i.model, i.provider, i.body_offset, i.body_length, i.body, i.attempts)
                for i in leased] == [(*r, None, 0) for r in refs]
        assert await store.files.input_blob_key("batch_r") == "files/refs"
        old = await store.items.lease("batch_1", "boot", 10, 100.0)
        assert [(i.body, i.body_offset, i.body_length) for i in old] == [(b"{}", None, None)] * 2

    run(db_url, body)
