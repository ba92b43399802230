"""The request log (storage/usage.py) on SQLite and PostgreSQL: appended once however often a group is
applied, read a page at a time, and summed per local day, model and provider for `GET /v1/usage`."""

from __future__ import annotations

from typing import Any

from aistats_gateway.storage.store import Store
from aistats_gateway.storage.usage import DAY_SECONDS
from tests.storage.support import run, seed


def entry(n: int, at: int, status: int | None, model: str = "m1") -> dict[str, Any]:
    return {"id": f"req_{n:03d}", "workspace_id": "ws_a", "batch_id": "batch_1", "line": n, "custom_id": f"c{n}",
            "attempt": 1, "provider": "p", "model": model, "status_code": status, "latency_ms": 1,
            "input_tokens": 10, "output_tokens": 2, "cost_nanos": 7, "error_code": None, "created_at": at}


def test_the_log_is_appended_once_paged_and_summed_per_local_day(db_url: str) -> None:
    day = 20_000 * DAY_SECONDS

    async def body(store: Store) -> None:
        await seed(store, lines=1)
        rows = [entry(1, day + 100, 200), entry(2, day + 200, 500), entry(3, day + DAY_SECONDS - 60, 200, "m2")]
        await store.request_log.append(rows)
        await store.request_log.append(rows[:1])  # an ambiguous commit re-applied: stored once
        page, more = await store.request_log.page("ws_a", "batch_1", limit=2, offset=0, status=None)
        assert [r["id"] for r in page] == ["req_001", "req_002"] and more
        errors, _ = await store.request_log.page("ws_a", "batch_1", limit=10, offset=0, status="error")
        assert [r["id"] for r in errors] == ["req_002"]
        assert (await store.request_log.entry("ws_a", "req_003") or {}).get("model") == "m2"
        assert await store.request_log.entry("ws_other", "req_003") is None
        utc = await store.request_log.daily_totals("ws_a", since=day, shift=0, session_id=None)
        assert utc == [(20_000, "m1", "p", 2, 1, 20, 4, 14), (20_000, "m2", "p", 1, 1, 10, 2, 7)]
        east = await store.request_log.daily_totals("ws_a", since=day, shift=120, session_id=None)  # UTC+2 min
        assert [(d, m) for d, m, *_ in east] == [(20_000, "m1"), (20_001, "m2")]
        assert await store.request_log.batches_by_status("ws_a", since=0, session_id=None) == {"in_progress": 1}

    run(db_url, body)
