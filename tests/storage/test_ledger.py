"""The ledger (storage/ledger.py) on SQLite and PostgreSQL: grants, a batch's hold taken with its insert (or
nothing stored at all), and the settlement that rides on the terminal compare-and-set, exactly once."""

from __future__ import annotations

from typing import Any

import pytest

from aistats_gateway.domain.batch import BatchStatus
from aistats_gateway.domain.money import PricingRow
from aistats_gateway.errors import InsufficientFunds, StaleTransition
from aistats_gateway.storage.records import FileRecord
from aistats_gateway.storage.store import Settlement, Store
from tests.storage.support import run


def batch(batch_id: str, workspace: str = "ws_a") -> dict[str, Any]:
    return {"id": batch_id, "workspace_id": workspace, "request_id": "G", "endpoint": "/v1/chat/completions",
            "endpoint_input": "/v1/chat/completions", "status": "validating", "input_file_id": "file-in",
            "completion_window": "24h", "created_at": 1, "expires_at": 10**10, "total": 0, "completed": 0,
            "failed": 0, "input_tokens": 0, "output_tokens": 0, "updated_at": 1.0}


async def workspace_with_file(store: Store) -> None:
    await store.workspaces.ensure("ws_a", "a")
    await store.files.insert(FileRecord("file-in", "ws_a", "in.jsonl", "batch", 1, "processed", "files/in", 1, None))


def test_a_workspace_without_credit_is_unlimited_and_grants_add_up(db_url: str) -> None:
    async def body(store: Store) -> None:
        await workspace_with_file(store)
        assert await store.ledger.account("ws_a") == (None, 0)
        assert await store.ledger.grant("ws_a", 5_000, 1.0) == (5_000, 0)
        assert await store.ledger.grant("ws_a", 2_000, 2.0) == (7_000, 0)
        assert await store.ledger.grant("ws_a", None, 3.0) == (None, 0)

    run(db_url, body)


def test_a_hold_the_balance_cannot_cover_stores_nothing(db_url: str) -> None:
    async def body(store: Store) -> None:
        await workspace_with_file(store)
        await store.ledger.grant("ws_a", 1_000, 1.0)
        with pytest.raises(InsufficientFunds):
            await store.batches.insert(batch("batch_big"), hold_nanos=1_001)
        assert await store.batches.get("batch_big") is None and await store.ledger.account("ws_a") == (1_000, 0)
        held = await store.batches.insert(batch("batch_ok"), hold_nanos=600)
        assert held.reserved_nanos == 600 and held.reservation_status == "held"
        assert await store.ledger.account("ws_a") == (1_000, 600)

    run(db_url, body)


def test_the_terminal_transition_charges_the_priced_usage_and_releases_the_hold_once(db_url: str) -> None:
    async def body(store: Store) -> None:
        await workspace_with_file(store)
        await store.ledger.grant("ws_a", 10_000_000, 1.0)
        await store.batches.insert(batch("batch_1"), hold_nanos=5_000_000)
        await store.items.insert([{"batch_id": "batch_1", "line": 1, "custom_id": "c1", "model": "m", "provider": "p",
                                   "body": b"{}", "status": 0, "attempts": 0, "input_tokens": 0, "output_tokens": 0}])
        await store.batches.transition("batch_1", BatchStatus.VALIDATING, BatchStatus.IN_PROGRESS, 2.0, total=1)
        [item] = await store.items.lease("batch_1", "boot", 1, 100.0)
        usage = (PricingRow("p", "m", "standard", "input_text_tokens", 1_000_000, 150_000_000, 20_000),)
        await store.items.settle([Settlement("batch_1", item.line, True, b"{}", 1, 20_000, 0, usage)], 3.0)
        assert [p["line_nanos"] for p in await store.ledger.pricing_lines("batch_1")] == [3_000_000]
        await store.batches.transition("batch_1", BatchStatus.IN_PROGRESS, BatchStatus.FINALIZING, 4.0)
        done = await store.batches.publish_results("batch_1", BatchStatus.FINALIZING, BatchStatus.COMPLETED, 5.0, [])
        assert (done.cost_nanos, done.billing_reason, done.reservation_status) == (3_000_000, "charged", "settled")
        assert await store.ledger.account("ws_a") == (7_000_000, 0)
        with pytest.raises(StaleTransition):  # a second terminal move is refused: nothing is charged twice
            await store.batches.publish_results("batch_1", BatchStatus.FINALIZING, BatchStatus.COMPLETED, 6.0, [])
        assert await store.ledger.account("ws_a") == (7_000_000, 0)
        assert await store.ledger.pricing_lines_of(["batch_1", "batch_none"]) == {
            "batch_1": await store.ledger.pricing_lines("batch_1"), "batch_none": []}

    run(db_url, body)
