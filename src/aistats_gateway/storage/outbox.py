"""The durable webhook outbox: the `webhook_events` and `webhook_attempts` rows.

`Outbox.queue()` takes the caller's connection and runs inside its transaction (the status change or
progress commit that causes the event), so an event exists if and only if its cause was committed. The
deliverer claims due events with a compare-and-set on `next_attempt_at` (a lease), so two delivery loops
never send the same attempt, and a crashed one's claim simply expires. The delivery summary a batch
object shows is read here too (`state`, `states`), in the shapes the AI Stats SDK declares.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from aistats_gateway import ids
from aistats_gateway.domain.events import wants
from aistats_gateway.domain.webhook_endpoints import batch_events
from aistats_gateway.storage.database import Database
from aistats_gateway.storage.records import BatchRecord, batch_record, snapshot_of
from aistats_gateway.storage.schema import webhook_attempts, webhook_events
from aistats_gateway.storage.webhook_endpoints import subscription

PENDING = "pending"
DELIVERED = "delivered"
FAILED_PERMANENTLY = "failed_permanently"


@dataclass(frozen=True)
class Event:
    id: str
    batch_id: str
    type: str
    delivery_key: str
    snapshot: BatchRecord
    attempts: int
    max_attempts: int
    created_at: int


async def queue(
    conn: AsyncConnection, record: BatchRecord, event_type: str, key: str, now: float, max_attempts: int
) -> bool:
    """Insert the event if the batch's webhook wants it (a registered endpoint: only while it is active, with
    the batch's events or else the endpoint's); True if one was queued."""
    endpoint_id = (record.webhook or {}).get("endpoint_id")
    endpoint_events: list[str] | None = None
    if endpoint_id:
        found = await subscription(conn, str(endpoint_id))
        if found is None or found[0] != "active":
            return False
        endpoint_events = batch_events(found[1])
    if not wants(record.webhook, event_type, endpoint_events):
        return False
    await conn.execute(
        insert(webhook_events).values(
            id=ids.event_id(), batch_id=record.id, workspace_id=record.workspace_id, type=event_type,
            delivery_key=key, snapshot=snapshot_of(record), status=PENDING, attempts=0,
            max_attempts=max_attempts, next_attempt_at=now, created_at=int(now),
        )
    )
    return True


async def due_candidates(conn: AsyncConnection, now: float, *, per_url: int, per_workspace: int,
                         limit: int) -> list[tuple[str, str, str]]:
    """(id, workspace id, webhook URL) of due events, a fair sample rather than simply the oldest: at most
    `per_url` per (workspace, URL) and `per_workspace` per workspace, each workspace's first ones before
    anyone's second ones, so one workspace's backlog for one target cannot hide everyone else's events."""
    # a registered endpoint's URL is read at delivery: its events share slots per endpoint meanwhile
    url = func.coalesce(webhook_events.c.snapshot[("webhook", "url")].as_string(),
                        webhook_events.c.snapshot[("webhook", "endpoint_id")].as_string())
    is_due = and_(webhook_events.c.status == PENDING, webhook_events.c.next_attempt_at <= now)
    by_url = select(
        webhook_events.c.id, webhook_events.c.workspace_id, url.label("url"), webhook_events.c.next_attempt_at,
        func.row_number().over(partition_by=(webhook_events.c.workspace_id, url),
                               order_by=(webhook_events.c.next_attempt_at, webhook_events.c.id)).label("url_rank"),
    ).where(is_due).subquery()
    by_ws = select(
        by_url.c.id, by_url.c.workspace_id, by_url.c.url, by_url.c.next_attempt_at,
        func.row_number().over(partition_by=by_url.c.workspace_id,
                               order_by=(by_url.c.url_rank, by_url.c.next_attempt_at, by_url.c.id)).label("ws_rank"),
    ).where(by_url.c.url_rank <= per_url).subquery()
    rows = await conn.execute(
        select(by_ws.c.id, by_ws.c.workspace_id, by_ws.c.url).where(by_ws.c.ws_rank <= per_workspace)
        .order_by(by_ws.c.ws_rank, by_ws.c.next_attempt_at, by_ws.c.id).limit(limit))
    return [(r[0], r[1], r[2] or "") for r in rows]


async def postpone(conn: AsyncConnection, event_ids: list[str], now: float, until: float) -> int:
    """Move still-due, unclaimed events to `until` without using up an attempt (their target rests)."""
    if not event_ids:
        return 0
    result = await conn.execute(
        update(webhook_events)
        .where(and_(webhook_events.c.id.in_(event_ids), webhook_events.c.status == PENDING,
                    webhook_events.c.next_attempt_at <= now))
        .values(next_attempt_at=until))
    return int(result.rowcount or 0)


async def due(conn: AsyncConnection, now: float, limit: int) -> list[str]:
    rows = await conn.execute(
        select(webhook_events.c.id)
        .where(and_(webhook_events.c.status == PENDING, webhook_events.c.next_attempt_at <= now))
        .order_by(webhook_events.c.next_attempt_at)
        .limit(limit)
    )
    return [r[0] for r in rows]


async def claim(conn: AsyncConnection, event_id: str, now: float, lease_until: float, owner: str) -> Event | None:
    """Take a due event for one attempt (CAS on its due time); None if someone else took it."""
    row = (
        await conn.execute(
            update(webhook_events)
            .where(and_(webhook_events.c.id == event_id, webhook_events.c.status == PENDING,
                        webhook_events.c.next_attempt_at <= now))
            .values(next_attempt_at=lease_until, attempts=webhook_events.c.attempts + 1, claimed_by=owner)
            .returning(*webhook_events.c)
        )
    ).first()
    if row is None:
        return None
    m = row._mapping
    return Event(m["id"], m["batch_id"], m["type"], m["delivery_key"], batch_record(m["snapshot"]),
                 m["attempts"], m["max_attempts"], m["created_at"])


async def record_attempt(
    conn: AsyncConnection,
    event: Event,
    *,
    now: float,
    delivered: bool,
    next_attempt_at: float | None,
    response_status: int | None,
    body_preview: str | None,
    error: str | None,
    duration_ms: int,
) -> str:
    """Store the attempt and move the event on: delivered, scheduled again, or failed for good."""
    status = DELIVERED if delivered else (PENDING if next_attempt_at is not None else FAILED_PERMANENTLY)
    values: dict[str, Any] = {"status": status, "last_response_status": response_status, "last_error": error,
                              "claimed_by": None}
    if delivered:
        values["delivered_at"] = int(now)
    if next_attempt_at is not None:
        values["next_attempt_at"] = next_attempt_at
    await conn.execute(update(webhook_events).where(webhook_events.c.id == event.id).values(**values))
    attempt_status = "delivered" if delivered else ("scheduled_retry" if next_attempt_at else FAILED_PERMANENTLY)
    await conn.execute(
        insert(webhook_attempts).values(
            id="wha_" + ids.ulid(), event_id=event.id, batch_id=event.batch_id, attempt=event.attempts,
            status=attempt_status, tried_at=int(now),
            next_retry_at=int(next_attempt_at) if next_attempt_at is not None else None,
            response_status=response_status, response_body_preview=body_preview, error_message=error,
            duration_ms=duration_ms,
        )
    )
    return attempt_status


async def spread_overdue(
    conn: AsyncConnection, now: float, spread: float, jitter: list[float], node_prefix: str, me: str
) -> int:
    """After a restart: events this node's earlier incarnation had claimed are due again at once (it died
    mid-delivery), and every overdue event moves to a random time within `spread` seconds: no burst."""
    await conn.execute(update(webhook_events).where(and_(
        webhook_events.c.status == PENDING, webhook_events.c.claimed_by.startswith(node_prefix),
        webhook_events.c.claimed_by != me)).values(next_attempt_at=now, claimed_by=None))
    ids_due = await due(conn, now, 10_000)
    for i, event_id in enumerate(ids_due):
        await conn.execute(update(webhook_events).where(webhook_events.c.id == event_id)
                           .values(next_attempt_at=now + spread * jitter[i % len(jitter)]))
    return len(ids_due)


def _attempts_query() -> Any:
    return (select(webhook_attempts, webhook_events.c.type, webhook_events.c.delivery_key,
                   webhook_events.c.max_attempts, webhook_events.c.delivered_at)
            .join(webhook_events, webhook_events.c.id == webhook_attempts.c.event_id))


async def state(conn: AsyncConnection, batch_id: str) -> dict[str, Any]:
    """The delivery summary and the last ten attempts, in the shapes the AI Stats SDK declares."""
    events = (await conn.execute(select(webhook_events).where(webhook_events.c.batch_id == batch_id))).all()
    attempts = (await conn.execute(_attempts_query().where(webhook_attempts.c.batch_id == batch_id)
                                   .order_by(webhook_attempts.c.id.desc()).limit(10))).all()
    return summarize(events, attempts)


async def states(conn: AsyncConnection, batch_ids: list[str]) -> dict[str, dict[str, Any]]:
    """`state` of many batches in two queries (a page of the batch list), each exactly as `state` says."""
    if not batch_ids:
        return {}
    events = (await conn.execute(select(webhook_events).where(webhook_events.c.batch_id.in_(batch_ids)))).all()
    ranked = _attempts_query().add_columns(
        func.row_number().over(partition_by=webhook_attempts.c.batch_id,
                               order_by=webhook_attempts.c.id.desc()).label("recent_rank")
    ).where(webhook_attempts.c.batch_id.in_(batch_ids)).subquery()
    attempts = (await conn.execute(select(ranked).where(ranked.c.recent_rank <= 10)
                                   .order_by(ranked.c.batch_id, ranked.c.id.desc()))).all()
    by_batch: dict[str, tuple[list[Any], list[Any]]] = {b: ([], []) for b in batch_ids}
    for row in events:
        by_batch[row._mapping["batch_id"]][0].append(row)
    for row in attempts:
        by_batch[row._mapping["batch_id"]][1].append(row)
    return {b: summarize(ev, at) for b, (ev, at) in by_batch.items()}


def summarize(events: Sequence[Any], attempts: Sequence[Any]) -> dict[str, Any]:
    """The wire shape from a batch's event rows and its last ten attempt rows (newest first)."""
    total_attempts = sum(e._mapping["attempts"] for e in events)
    delivered = [e._mapping for e in events if e._mapping["status"] == DELIVERED]
    pending = [e._mapping for e in events if e._mapping["status"] == PENDING]
    last = attempts[0]._mapping if attempts else None
    failures = [a._mapping for a in attempts if a._mapping["status"] != "delivered"]
    summary = {
        "total_attempts": total_attempts,
        "delivered_events": len(delivered),
        "delivered_event_types": sorted({e["type"] for e in delivered}),
        "pending_retries": sum(1 for e in pending if e["attempts"] > 0),
        "pending_events": len(pending),
        "failed_events": sum(1 for e in events if e._mapping["status"] == FAILED_PERMANENTLY),
        "last_attempt_at": last["tried_at"] if last else None,
        "last_attempt_status": last["status"] if last else None,
        "last_delivered_at": max((e["delivered_at"] for e in delivered), default=None),
        "last_failure_at": failures[0]["tried_at"] if failures else None,
        "last_response_status": last["response_status"] if last else None,
        "last_error_message": last["error_message"] if last else None,
        "next_retry_at": min((int(e["next_attempt_at"]) for e in pending if e["attempts"] > 0), default=None),
    }
    recent = [
        {
            "id": a["id"], "attempt_number": a["attempt"], "max_attempts": a["max_attempts"],
            "delivery_key": a["delivery_key"], "event_type": a["type"], "event_id": a["event_id"],
            "status": a["status"], "tried_at": a["tried_at"],
            "delivered_at": a["tried_at"] if a["status"] == "delivered" else None,
            "next_retry_at": a["next_retry_at"], "response_status": a["response_status"],
            "response_body_preview": a["response_body_preview"], "error_message": a["error_message"],
        }
        for a in (row._mapping for row in attempts)
    ]
    return {"delivery": summary, "attempts": recent}


class Outbox:
    """The outbox repository; `max_attempts` is what each event queued from now on may use."""

    def __init__(self, db: Database, max_attempts: int = 4) -> None:
        self.db = db
        self.max_attempts = max_attempts

    async def queue(self, conn: AsyncConnection, record: BatchRecord, event_type: str, key: str, now: float) -> bool:
        """Queue an event in the caller's transaction (`conn`); True if the batch's webhook wanted it."""
        return await queue(conn, record, event_type, key, now, self.max_attempts)

    async def due(self, now: float, limit: int) -> list[str]:
        async with self.db.read() as conn:
            return await due(conn, now, limit)

    async def due_candidates(self, now: float, *, per_url: int, per_workspace: int,
                             limit: int) -> list[tuple[str, str, str]]:
        async with self.db.read() as conn:
            return await due_candidates(conn, now, per_url=per_url, per_workspace=per_workspace, limit=limit)

    async def postpone(self, event_ids: list[str], now: float, until: float) -> int:
        async with self.db.write() as conn:
            return await postpone(conn, event_ids, now, until)

    async def claim(self, event_id: str, now: float, lease_until: float, owner: str) -> Event | None:
        async with self.db.write() as conn:
            return await claim(conn, event_id, now, lease_until, owner)

    async def record_attempt(self, event: Event, **kwargs: Any) -> str:
        async with self.db.write() as conn:
            return await record_attempt(conn, event, **kwargs)

    async def spread_overdue(self, now: float, spread: float, jitter: list[float], node_prefix: str,
                             me: str) -> int:
        async with self.db.write() as conn:
            return await spread_overdue(conn, now, spread, jitter, node_prefix, me)

    async def state(self, batch_id: str) -> dict[str, Any]:
        async with self.db.read() as conn:
            return await state(conn, batch_id)

    async def states(self, batch_ids: list[str]) -> dict[str, dict[str, Any]]:
        async with self.db.read() as conn:
            return await states(conn, batch_ids)
