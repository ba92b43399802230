"""The request-rows read model (storage/request_rows.py) on SQLite and PostgreSQL: a page of a batch's lines
in line order with their 0-based position (kept under a filter), each row status filter, the lines an HTTP
status answered, and per line its newest attempt, attempt count and summed cost."""

from __future__ import annotations

from typing import Any

from aistats_gateway.storage.schema import ITEM_FAILED, ITEM_LEASED, ITEM_SUCCEEDED, items
from aistats_gateway.storage.store import Store
from tests.storage.support import run, seed


def attempt(line: int, n: int, code: int | None, cost: int | None) -> dict[str, Any]:
    return {"id": f"G-{line:03d}-{n}", "workspace_id": "ws_a", "batch_id": "batch_1", "session_id": None,
            "custom_id": f"c{line}", "line": line, "attempt": n, "provider": "mock", "model": "mock/echo",
            "status_code": code, "error_code": None, "latency_ms": 5, "input_tokens": 1, "output_tokens": 2,
            "cost_nanos": cost, "created_at": 100.0 + n}


def test_pages_filters_and_attempts(db_url: str) -> None:
    async def body(store: Store) -> None:
        await seed(store, lines=8)  # lines 1..8, all pending
        async with store.db.write() as conn:
            for line, status, code in ((1, ITEM_SUCCEEDED, None), (2, ITEM_FAILED, "upstream_error"),
                                       (3, ITEM_FAILED, "batch_cancelled"), (4, ITEM_FAILED, "batch_expired"),
                                       (5, ITEM_LEASED, None), (6, ITEM_SUCCEEDED, None)):
                await conn.execute(items.update().where((items.c.batch_id == "batch_1") & (items.c.line == line))
                                   .values(status=status, error_code=code, settled_at=200.0))
        await store.request_log.append([attempt(1, 1, 500, None), attempt(1, 2, 200, 30), attempt(2, 1, 400, 0),
                                        attempt(6, 1, 200, 12)])
        rows = store.request_rows

        async def page(flt: tuple[str, Any] | None, limit: int = 100, offset: int = 0) -> list[tuple[int, int]]:
            found, _more = await rows.page("batch_1", limit=limit, offset=offset, flt=flt)
            return [(r["line"], r["request_index"]) for r in found]

        assert await page(None) == [(i, i - 1) for i in range(1, 9)]
        found, more = await rows.page("batch_1", limit=3, offset=6, flt=None)
        assert [(r["line"], r["request_index"]) for r in found] == [(7, 6), (8, 7)] and not more
        found, more = await rows.page("batch_1", limit=2, offset=0, flt=None)
        assert more and found[0]["custom_id"] == "c1"
        assert await page(("status", "completed")) == [(1, 0), (6, 5)]
        assert await page(("status", "failed")) == [(2, 1)]
        assert await page(("status", "cancelled")) == [(3, 2)]
        assert await page(("status", "expired")) == [(4, 3)]
        assert await page(("status", "in_progress")) == [(5, 4)]
        assert await page(("status", "queued")) == [(7, 6), (8, 7)]
        assert await page(("error", None)) == [(2, 1), (3, 2), (4, 3)]
        assert await page(("code", 500)) == [(1, 0)]
        assert await page(("code", 200)) == [(1, 0), (6, 5)]
        assert await page(("status", "queued"), limit=1, offset=1) == [(8, 7)]

        tries = await rows.attempts("batch_1", [1, 2, 3, 6])
        assert set(tries) == {1, 2, 6}
        last, count, cost = tries[1]
        assert (last["id"], last["attempt"], last["status_code"], count, cost) == ("G-001-2", 2, 200, 2, 30)
        assert tries[2][1:] == (1, 0) and tries[6][1:] == (1, 12)
        assert await rows.attempts("batch_1", []) == {}

    run(db_url, body)
