"""Webhook endpoints (storage/webhook_endpoints.py) on SQLite and PostgreSQL: rows of one workspace only, soft
delete, rotation keeping the previous secret with its overlap end; and the outbox queuing the events of a batch
that names an endpoint only while it is active, with the endpoint's events unless the batch gave its own, and a
`batch.status_changed` per status change when subscribed."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from aistats_gateway.clock import FakeClock
from aistats_gateway.domain.batch import BatchStatus
from aistats_gateway.domain.webhook_endpoints import signing_secrets
from aistats_gateway.storage.records import FileRecord
from aistats_gateway.storage.schema import webhook_events
from aistats_gateway.storage.store import Store
from tests.storage.support import run


def endpoint(eid: str, workspace: str = "ws_a", events: list[str] | None = None) -> dict[str, Any]:
    return {"id": eid, "workspace_id": workspace, "name": "hooks", "url": "https://hooks.example.com/x",
            "status": "active", "events": events or ["batch.completed"], "secret": f"whsec_{eid}",
            "previous_secret": None, "previous_secret_until": None, "created_at": 1, "updated_at": 1,
            "deleted_at": None}


def test_rows_are_per_workspace_soft_deleted_and_rotated(db_url: str) -> None:
    async def body(store: Store) -> None:
        for ws in ("ws_a", "ws_b"):
            await store.workspaces.ensure(ws, ws)
        eps = store.webhook_endpoints
        await eps.insert(endpoint("we_1"))
        await eps.insert(endpoint("we_2"))
        await eps.insert(endpoint("we_3", "ws_b"))
        assert (await eps.get("ws_a", "we_1") or {})["secret"] == "whsec_we_1"
        assert await eps.get("ws_b", "we_1") is None  # another workspace's
        assert await eps.update("ws_b", "we_1", {"name": "taken"}) is None
        assert not await eps.delete("ws_b", "we_1") and await eps.rotate("ws_b", "we_1", "whsec_x", 60) is None
        rows, more = await eps.page("ws_a", limit=1, offset=0)
        assert [r["id"] for r in rows] == ["we_2"] and more
        assert [r["id"] for r in (await eps.page("ws_a", limit=10, offset=0))[0]] == ["we_2", "we_1"]
        assert await eps.count("ws_a") == 2

        rotated = await eps.rotate("ws_a", "we_1", "whsec_new", 3600)
        assert rotated is not None and rotated["secret"] == "whsec_new"
        assert rotated["previous_secret"] == "whsec_we_1"
        until = rotated["previous_secret_until"]
        assert signing_secrets(rotated["secret"], rotated["previous_secret"], until, until - 1) == \
            ["whsec_new", "whsec_we_1"]
        assert signing_secrets(rotated["secret"], rotated["previous_secret"], until, until) == ["whsec_new"]

        assert await eps.delete("ws_a", "we_1")
        assert await eps.get("ws_a", "we_1") is None and not await eps.delete("ws_a", "we_1")
        assert await eps.update("ws_a", "we_1", {"status": "active"}) is None  # a deleted one stays deleted
        gone = await eps.for_delivery("we_1")
        assert gone is not None and gone["status"] == "deleted" and gone["deleted_at"] is not None
        assert [r["id"] for r in (await eps.page("ws_a", limit=10, offset=0))[0]] == ["we_2"]
        assert [r["id"] for r in (await eps.page("ws_a", limit=10, offset=0, include_deleted=True))[0]] == \
            ["we_2", "we_1"]

    run(db_url, body)


async def batch_naming(store: Store, batch_id: str, endpoint_id: str, events: list[str]) -> None:
    await store.files.insert(FileRecord(f"file-{batch_id}", "ws_a", "in.jsonl", "batch", 1, "processed", "k", 1,
                                        None))
    await store.batches.insert({
        "id": batch_id, "workspace_id": "ws_a", "request_id": "G", "endpoint": "/v1/chat/completions",
        "endpoint_input": "/v1/chat/completions", "status": "validating", "input_file_id": f"file-{batch_id}",
        "completion_window": "24h", "created_at": 1, "expires_at": 10**10, "total": 0, "completed": 0, "failed": 0,
        "input_tokens": 0, "output_tokens": 0, "updated_at": 10.0,
        "webhook": {"endpoint_id": endpoint_id, "events": events}})


async def queued(store: Store, batch_id: str) -> list[str]:
    async with store.db.read() as conn:
        rows = (await conn.execute(select(webhook_events.c.delivery_key).where(webhook_events.c.batch_id == batch_id)
                                   .order_by(webhook_events.c.id))).all()
    return [r[0] for r in rows]


def test_the_outbox_follows_the_endpoint(db_url: str) -> None:
    async def body(store: Store) -> None:
        await store.workspaces.ensure("ws_a", "ws_a")
        eps = store.webhook_endpoints
        await eps.insert(endpoint("we_1", events=["job.created", "batch.status_changed", "video.completed"]))
        await eps.insert(endpoint("we_2", events=["batch.completed"]))
        await batch_naming(store, "batch_1", "we_1", [])  # the endpoint's events
        await batch_naming(store, "batch_2", "we_2", ["batch.created"])  # its own
        await eps.update("ws_a", "we_2", {"status": "disabled"})
        await batch_naming(store, "batch_3", "we_2", ["batch.created"])  # a disabled endpoint: nothing
        await batch_naming(store, "batch_4", "we_missing", [])
        assert await queued(store, "batch_1") == ["batch.created"]
        assert await queued(store, "batch_2") == ["batch.created"]
        assert await queued(store, "batch_3") == [] and await queued(store, "batch_4") == []
        await store.batches.transition("batch_1", BatchStatus.VALIDATING, BatchStatus.IN_PROGRESS, 11.0)
        await store.batches.transition("batch_1", BatchStatus.IN_PROGRESS, BatchStatus.FINALIZING, 12.0)
        await store.batches.transition("batch_1", BatchStatus.FINALIZING, BatchStatus.COMPLETED, 13.0)
        assert await queued(store, "batch_1") == [
            "batch.created", "batch.status_changed:validating:in_progress",
            "batch.status_changed:in_progress:finalizing", "batch.status_changed:finalizing:completed"]
        await store.batches.transition("batch_2", BatchStatus.VALIDATING, BatchStatus.IN_PROGRESS, 11.0)
        assert await queued(store, "batch_2") == ["batch.created"]  # not subscribed to status changes
        # a due event of a registered endpoint's batch shares delivery slots per endpoint
        candidates = await store.outbox.due_candidates(100.0, per_url=10, per_workspace=10, limit=10)
        assert {url for _id, _ws, url in candidates} == {"we_1", "we_2"}

    run(db_url, body)


def test_the_overlap_ends_by_the_databases_clock(db_url: str) -> None:
    """The overlap ends `overlap_seconds` after the rotation by the Database's clock; 0 ends it at once."""
    import asyncio

    from aistats_gateway.storage.migrate import upgrade_to_head
    from aistats_gateway.storage.store import create_engine

    async def main() -> None:
        engine = create_engine(db_url)
        await upgrade_to_head(engine)
        store = Store(engine, clock=FakeClock(1000.0))
        try:
            await store.workspaces.ensure("ws_a", "ws_a")
            await store.webhook_endpoints.insert(endpoint("we_1"))
            rotated = await store.webhook_endpoints.rotate("ws_a", "we_1", "whsec_2", 60)
            assert rotated is not None and rotated["previous_secret_until"] == 1060
            again = await store.webhook_endpoints.rotate("ws_a", "we_1", "whsec_3", 0)
            assert again is not None and again["previous_secret_until"] is None
            assert signing_secrets(again["secret"], again["previous_secret"], None, 1000) == ["whsec_3"]
        finally:
            await store.close()

    asyncio.run(main())
