"""Batches (storage/batches.py) on SQLite and PostgreSQL: the status compare-and-set, paging, and
the insert that holds credit and queues its event in one transaction.
"""

from __future__ import annotations

import pytest

from aistats_gateway.domain.batch import BatchStatus
from aistats_gateway.errors import StaleTransition
from aistats_gateway.storage.store import Store
from tests.storage.support import run, seed


def test_transition_is_compare_and_set(db_url: str) -> None:
    async def body(store: Store) -> None:
        await seed(store)
        rec = await store.batches.transition("batch_1", BatchStatus.IN_PROGRESS, BatchStatus.CANCELLING, 3.0)
        assert rec.status is BatchStatus.CANCELLING and rec.cancelling_at == 3
        with pytest.raises(StaleTransition):
            await store.batches.transition("batch_1", BatchStatus.IN_PROGRESS, BatchStatus.FINALIZING, 4.0)

    run(db_url, body)


def test_batches_list_newest_first_with_cursor(db_url: str) -> None:
    async def body(store: Store) -> None:
        for i in range(5):
            await seed(store, f"batch_{i}", lines=1)
        await seed(store, "batch_x", lines=1, workspace="ws_b")
        page1, more1 = await store.batches.page("ws_a", after=None, limit=2, status=None)
        page2, _ = await store.batches.page("ws_a", after=page1[-1].id, limit=2, status=None)
        page3, more3 = await store.batches.page("ws_a", after=page2[-1].id, limit=2, status=None)
        assert [b.id for b in page1 + page2 + page3] == [f"batch_{i}" for i in (4, 3, 2, 1, 0)]
        assert more1 and not more3
        assert await store.batches.get("batch_x", "ws_a") is None  # another workspace's batch is invisible

    run(db_url, body)
