"""The webhook outbox (storage/outbox.py) on SQLite and PostgreSQL: an event is queued in the transaction of
its cause (only when the batch's webhook wants it), claimed by one deliverer at a time, and its attempts
make the delivery summary a batch object shows; due events come as a fair sample (issue 14, item 9): one
workspace's backlog for one target cannot hide another workspace's due events."""

from __future__ import annotations

from typing import Any

from sqlalchemy import insert, select

from aistats_gateway.domain.batch import BatchStatus
from aistats_gateway.storage.records import FileRecord
from aistats_gateway.storage.schema import webhook_events
from aistats_gateway.storage.store import Store
from tests.storage.support import run, seed


async def batch_with_webhook(store: Store, batch_id: str, events: list[str]) -> None:
    await store.workspaces.ensure("ws_a", "a")
    await store.files.insert(FileRecord(f"file-{batch_id}", "ws_a", "in.jsonl", "batch", 1, "processed", "k", 1,
                                        None))
    values: dict[str, Any] = {
        "id": batch_id, "workspace_id": "ws_a", "request_id": "G", "endpoint": "/v1/chat/completions",
        "endpoint_input": "/v1/chat/completions", "status": "validating", "input_file_id": f"file-{batch_id}",
        "completion_window": "24h", "created_at": 1, "expires_at": 10**10, "total": 0, "completed": 0, "failed": 0,
        "input_tokens": 0, "output_tokens": 0, "updated_at": 10.0,
        "webhook": {"url": "https://hooks.example.com/x", "events": events}}
    await store.batches.insert(values)


def test_events_are_queued_with_their_cause_claimed_once_and_summarized(db_url: str) -> None:
    heard: list[tuple[str, bool]] = []

    async def body(store: Store) -> None:
        store.listeners.append(lambda record, queued: heard.append((record.status.value, queued)))
        await batch_with_webhook(store, "batch_1", ["batch.created", "batch.failed"])
        await batch_with_webhook(store, "batch_2", ["batch.completed"])  # does not want batch.created
        assert heard == [("validating", True), ("validating", False)]
        [event_id] = await store.outbox.due(10.0, 10)
        event = await store.outbox.claim(event_id, 10.0, 100.0, "n1:boot")
        assert event is not None and (event.batch_id, event.type, event.attempts) == ("batch_1", "batch.created", 1)
        assert event.snapshot.id == "batch_1" and event.snapshot.status is BatchStatus.VALIDATING
        assert await store.outbox.claim(event_id, 10.0, 100.0, "n2:boot") is None  # taken: not due any more
        outcome = await store.outbox.record_attempt(
            event, now=11.0, delivered=False, next_attempt_at=20.0, response_status=500, body_preview="no",
            error="receiver answered HTTP 500", duration_ms=5)
        assert outcome == "scheduled_retry" and await store.outbox.due(19.0, 10) == []
        again = await store.outbox.claim(event_id, 20.0, 100.0, "n1:boot")
        assert again is not None and again.attempts == 2
        await store.outbox.record_attempt(again, now=21.0, delivered=True, next_attempt_at=None, response_status=200,
                                          body_preview="ok", error=None, duration_ms=5)
        state = await store.outbox.state("batch_1")
        assert state["delivery"]["delivered_event_types"] == ["batch.created"]
        assert state["delivery"]["total_attempts"] == 2 and len(state["attempts"]) == 2
        assert await store.outbox.states(["batch_1", "batch_2"]) == {
            "batch_1": state, "batch_2": await store.outbox.state("batch_2")}
        # a terminal status the webhook wants queues its event in the same transaction
        await store.batches.transition("batch_1", BatchStatus.VALIDATING, BatchStatus.FAILED, 30.0)
        assert heard[-1] == ("failed", True) and len(await store.outbox.due(30.0, 10)) == 1

    run(db_url, body)


def test_after_a_restart_overdue_events_are_spread_and_an_earlier_claim_is_due_again(db_url: str) -> None:
    async def body(store: Store) -> None:
        for n in range(3):
            await batch_with_webhook(store, f"batch_{n}", ["batch.created"])
        first = (await store.outbox.due(10.0, 10))[0]
        assert await store.outbox.claim(first, 10.0, 10_000.0, "n1:old") is not None
        assert await store.outbox.spread_overdue(50.0, 10.0, [0.5], "n1:", "n1:new") == 3
        assert await store.outbox.due(54.0, 10) == [] and len(await store.outbox.due(55.0, 10)) == 3

    run(db_url, body)


async def queue(store: Store, event_id: str, batch_id: str, workspace: str, url: str, at: float) -> None:
    async with store.db.write() as conn:
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
        rows = await store.outbox.due_candidates(10.0, per_url=2, per_workspace=8, limit=200)
        assert rows[:2] == [("evt_a000", "ws_a", "https://hole.example/h"), ("evt_b", "ws_b", "https://b.example/h")]
        assert [r[0] for r in rows] == ["evt_a000", "evt_b", "evt_a_ok", "evt_a001"]
        assert await store.outbox.postpone(["evt_a000", "evt_a001", "evt_b"], 10.0, 40.0) == 3
        async with store.engine.connect() as conn:
            moved: dict[str, Any] = {r[0]: (r[1], r[2]) for r in await conn.execute(
                select(webhook_events.c.id, webhook_events.c.next_attempt_at, webhook_events.c.attempts)
                .where(webhook_events.c.id.in_(["evt_a000", "evt_b"])))}
        assert moved == {"evt_a000": (40.0, 0), "evt_b": (40.0, 0)}
        assert await store.outbox.postpone(["evt_a000"], 10.0, 50.0) == 0  # no longer due: left alone
        rows = await store.outbox.due_candidates(10.0, per_url=2, per_workspace=8, limit=200)
        assert [r[0] for r in rows] == ["evt_a002", "evt_a_ok", "evt_a003"]

    run(db_url, body)
