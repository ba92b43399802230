"""The webhook outbox's fair sample of due events and its postponement, on SQLite and PostgreSQL (issue 14,
item 9): one workspace's backlog for one target cannot hide another workspace's due events."""

from __future__ import annotations

from typing import Any

from sqlalchemy import insert, select

from aistats_gateway.storage.schema import webhook_events
from aistats_gateway.storage.store import Store
from tests.storage.test_store import run, seed


async def queue(store: Store, event_id: str, batch_id: str, workspace: str, url: str, at: float) -> None:
    async with store.engine.begin() as conn:
        await conn.execute(insert(webhook_events).values(
            id=event_id, batch_id=batch_id, workspace_id=workspace, type="batch.completed", delivery_key=event_id,
            snapshot={"id": batch_id, "webhook": {"url": url, "events": ["batch.completed"]}}, status="pending",
            attempts=0, max_attempts=4, next_attempt_at=at, created_at=int(at)))


def test_due_candidates_are_a_fair_sample_and_postponing_keeps_the_attempts(db_url: str) -> None:
    async def body(store: Store) -> None:
        await seed(store, "batch_a", lines=1, workspace="ws_a")
        await seed(store, "batch_b", lines=1, workspace="ws_b")
        for i in range(300):  # ws_a's backlog: older than ws_b's event, all for one black hole
            await queue(store, f"evt_a{i:03}", "batch_a", "ws_a", "https://hole.example/h", 1.0 + i / 1000)
        await queue(store, "evt_a_ok", "batch_a", "ws_a", "https://ok.example/h", 5.0)
        await queue(store, "evt_b", "batch_b", "ws_b", "https://b.example/h", 6.0)
        await queue(store, "evt_later", "batch_b", "ws_b", "https://b.example/h", 99.0)  # not due yet
        rows = await store.due_event_candidates(10.0, per_url=2, per_workspace=8, limit=200)
        assert rows[:2] == [("evt_a000", "ws_a", "https://hole.example/h"), ("evt_b", "ws_b", "https://b.example/h")]
        assert [r[0] for r in rows] == ["evt_a000", "evt_b", "evt_a_ok", "evt_a001"]
        assert await store.postpone_events(["evt_a000", "evt_a001", "evt_b"], 10.0, 40.0) == 3
        async with store.engine.connect() as conn:
            moved: dict[str, Any] = {r[0]: (r[1], r[2]) for r in await conn.execute(
                select(webhook_events.c.id, webhook_events.c.next_attempt_at, webhook_events.c.attempts)
                .where(webhook_events.c.id.in_(["evt_a000", "evt_b"])))}
        assert moved == {"evt_a000": (40.0, 0), "evt_b": (40.0, 0)}
        assert await store.postpone_events(["evt_a000"], 10.0, 50.0) == 0  # no longer due: left alone
        rows = await store.due_event_candidates(10.0, per_url=2, per_workspace=8, limit=200)
        assert [r[0] for r in rows] == ["evt_a002", "evt_a_ok", "evt_a003"]

    run(db_url, body)
