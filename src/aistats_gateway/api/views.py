"""Batch objects as routes and the stream serve them: the record plus its webhook delivery state."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aistats_gateway.api import wire
from aistats_gateway.domain.batch import BatchStatus
from aistats_gateway.domain.native_job import NativeJobState
from aistats_gateway.domain.request_rows import TIMES
from aistats_gateway.storage.native_jobs import NativeJobs
from aistats_gateway.storage.records import BatchRecord
from aistats_gateway.storage.store import Store

if TYPE_CHECKING:
    from aistats_gateway.app import Gateway


async def batch_view(gw: Gateway, record: BatchRecord, base_url: str) -> dict[str, Any]:
    native = gw.executor.native if gw.executor is not None else None
    if native is not None and record.execution == "native" and not record.status.terminal:
        await native.refresh(record.id)  # reconcile with the provider on GET (at most every few seconds)
        record = await gw.store.batches.get(record.id) or record
    return await render_batch(gw.store, record, base_url)


async def batch_page(gw: Gateway, records: list[BatchRecord], base_url: str) -> list[dict[str, Any]]:
    """A page of batch objects, each exactly as `batch_view` renders it, with the webhook states and pricing
    lines of the whole page fetched in three queries instead of two or three per batch."""
    native = gw.executor.native if gw.executor is not None else None
    fresh: list[BatchRecord] = []
    for record in records:
        if native is not None and record.execution == "native" and not record.status.terminal:
            await native.refresh(record.id)
            record = await gw.store.batches.get(record.id) or record
        fresh.append(record)
    # a page's webhook states, pricing lines, error summaries and retries in five queries (not five per batch)
    states = await gw.store.outbox.states([r.id for r in fresh if r.webhook])
    lines = await gw.store.ledger.pricing_lines_of([r.id for r in fresh if r.status is not BatchStatus.VALIDATING])
    errors = await gw.store.errors.of([r.id for r in fresh if r.failed])
    retries = await gw.store.batches.retries_of([r.id for r in fresh if r.status.terminal])
    return [await render_batch(gw.store, r, base_url, Details(states.get(r.id), lines.get(r.id, []),
                                                              errors.get(r.id, []), retries.get(r.id, [])))
            for r in fresh]


@dataclass(frozen=True)
class Details:
    """What a batch object shows beside its record (read in other tables)."""

    webhook_state: dict[str, Any] | None
    pricing_lines: list[dict[str, Any]]
    error_summary: list[dict[str, Any]]
    retries: list[str]


async def render_batch(store: Store, record: BatchRecord, base_url: str, details: Details | None = None
                       ) -> dict[str, Any]:
    """The full batch object: the record, its pricing lines, webhook delivery state, error summary and retries
    (`details`: those, when the caller fetched them already for a page)."""
    if details is None:
        state = await store.outbox.state(record.id) if record.webhook else None
        lines = await store.ledger.pricing_lines(record.id) if record.status is not BatchStatus.VALIDATING else []
        errors = (await store.errors.of([record.id])).get(record.id, []) if record.failed else []
        retries = (await store.batches.retries_of([record.id])).get(record.id, []) if record.status.terminal else []
        details = Details(state, lines, errors, retries)
    native = None
    if record.execution == "native":
        native = [{"provider": j.provider, "model": None if j.model == "*" else j.model, "id": j.native_batch_id,
                   "status": j.provider_status or (j.state.value if j.state is NativeJobState.CREATING else None),
                   "request_counts": j.request_counts, "running": j.state.at_provider}
                  for j in await NativeJobs(store.db, store.outbox).for_batch(record.id)]
    return wire.batch_object(record, base_url, details.webhook_state, details.pricing_lines, native,
                             details.error_summary, details.retries)


def request_row(row: dict[str, Any]) -> dict[str, Any]:
    """A request row (domain/request_rows.py) on the wire: its times as ISO 8601, as the SDKs type them."""
    return {**row, **{name: wire.iso(row[name]) for name in TIMES}}


def log_entry(row: dict[str, Any]) -> dict[str, Any]:
    """A request-log row on the wire (one upstream attempt)."""
    cost = row.get("cost_nanos")
    return {
        "id": row["id"], "object": "generation", "batch_id": row["batch_id"], "session_id": row["session_id"],
        "custom_id": row["custom_id"], "line": row["line"], "attempt": row["attempt"], "provider": row["provider"],
        "model": row["model"], "status_code": row["status_code"], "error_code": row["error_code"],
        "latency_ms": row["latency_ms"],
        "usage": {"input_tokens": row["input_tokens"], "output_tokens": row["output_tokens"],
                  "total_tokens": row["input_tokens"] + row["output_tokens"]},
        "cost_nanos": cost, "cost_usd": None if cost is None else f"{cost / 1e9:.9f}",
        "created_at": int(row["created_at"]),
    }
