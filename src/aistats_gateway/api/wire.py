"""Response shapes of the wire contract (API.md): the file object, the batch object, lists.

Pure rendering from records; every field of API.md is present (null when not applicable) so
clients that index fields directly never miss one. The batch object is the superset the AI Stats / Phaseo
SDKs type (`BatchResponse`): OpenAI's own fields with their integer timestamps, plus the gateway's, whose
timestamps the SDKs type as ISO 8601 strings (billing `finalized_at`, webhook telemetry) and get them so.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from aistats_gateway.domain.execution import ExecutionMode
from aistats_gateway.domain.transitions import CANCELLABLE
from aistats_gateway.pricing.calculator import usd
from aistats_gateway.storage.records import BatchRecord, FileRecord


def file_object(f: FileRecord) -> dict[str, Any]:
    return {
        "id": f.id, "object": "file", "bytes": f.bytes, "created_at": f.created_at, "filename": f.filename,
        "purpose": f.purpose, "status": f.status, "expires_at": f.expires_at, "status_details": None,
    }


def iso(timestamp: float | None) -> str | None:
    """A stored Unix time as ISO 8601 UTC (`2026-12-03T12:00:00Z`), for the fields the SDKs type as strings."""
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _billing(b: BatchRecord) -> dict[str, Any]:
    """API.md's billing block: the estimate and hold from create, the settlement from the terminal status."""
    terminal = b.status.terminal
    ran = terminal and b.billing_reason not in (None, "failed", "cancelled", "expired", "completed")
    cost = b.cost_nanos or 0
    if terminal:
        state = "settled" if ran else "void"
    else:
        state = "estimated" if (b.estimated_nanos or b.reserved_nanos) else "pending"
    return {
        "billed": bool(ran), "charged": cost > 0, "reason": b.billing_reason, "currency": "usd",
        "cost_nanos": cost, "cost_usd": usd(cost), "estimated_nanos": b.estimated_nanos,
        "estimated_usd": usd(b.estimated_nanos), "reserved_nanos": b.reserved_nanos,
        "reservation_id": b.reservation_id, "reservation_status": b.reservation_status, "state": state,
        "finalized_at": iso(b.billed_at) if terminal else None,
    }


EMPTY_DELIVERY: dict[str, Any] = {
    "total_attempts": 0, "delivered_events": 0, "delivered_event_types": [], "pending_retries": 0,
    "pending_events": 0, "failed_events": 0, "last_attempt_at": None, "last_attempt_status": None,
    "last_delivered_at": None, "last_failure_at": None, "last_response_status": None,
    "last_error_message": None, "next_retry_at": None,
}


_DELIVERY_TIMES = ("last_attempt_at", "last_delivered_at", "last_failure_at", "next_retry_at")
_ATTEMPT_TIMES = ("tried_at", "delivered_at", "next_retry_at")


def _webhook(b: BatchRecord, state: dict[str, Any] | None) -> dict[str, Any] | None:
    """The sanitized webhook: configuration, delivery summary and last ten attempts; never the secret."""
    if not b.webhook:
        return None
    delivery = dict((state or {}).get("delivery", EMPTY_DELIVERY))
    for name in _DELIVERY_TIMES:
        delivery[name] = iso(delivery.get(name))
    attempts = [{**a, **{name: iso(a.get(name)) for name in _ATTEMPT_TIMES}} for a in (state or {}).get("attempts", [])]
    return {  # a registered endpoint's batch: `endpoint_id`, no URL (the endpoint's may change), a secret always
        "endpoint_id": b.webhook.get("endpoint_id"), "url": b.webhook.get("url"),
        "events": b.webhook.get("events", []),
        "has_secret": bool(b.webhook.get("secret") or b.webhook.get("endpoint_id")),
        "delivery": delivery,
        "attempts": attempts,
    }


def _telemetry(webhook: dict[str, Any] | None) -> dict[str, Any]:
    """The top-level webhook telemetry of the SDKs' batch object, from the rendered webhook state: the last
    delivery, the next retry, and the newest delivered progress bucket (among the last ten attempts)."""
    delivery = webhook["delivery"] if webhook else {}
    progress = next((a for a in (webhook or {}).get("attempts", [])
                     if a.get("event_type") == "batch.progress" and a.get("status") == "delivered"), None)
    bucket = str(progress.get("delivery_key", "")).rpartition(":")[2] if progress else ""
    return {
        "last_webhook_dispatched_at": delivery.get("last_delivered_at"),
        "next_webhook_retry_at": delivery.get("next_retry_at"),
        "last_webhook_progress": int(bucket) if bucket.isdigit() else None,
        "last_webhook_progress_at": progress.get("tried_at") if progress else None,
    }


def batch_object(
    b: BatchRecord, base_url: str, webhook_state: dict[str, Any] | None = None,
    pricing_lines: list[dict[str, Any]] | None = None, native_batches: list[dict[str, Any]] | None = None,
    error_summary: list[dict[str, Any]] | None = None, retries: list[str] | None = None,
) -> dict[str, Any]:
    counts = b.counts
    if native_batches and not b.status.terminal:
        # Lines of a running provider batch settle here only when it ends: show the provider's progress meanwhile.
        counts = counts.with_running([n["request_counts"] or {} for n in native_batches if n.pop("running")])
    else:
        for n in native_batches or []:
            n.pop("running", None)
    webhook = _webhook(b, webhook_state)
    base = base_url.rstrip("/")
    ws_base = "wss://" + base[8:] if base.startswith("https://") else "ws://" + base.removeprefix("http://")
    return {
        "id": b.id, "object": "batch", "endpoint": b.endpoint_input, "status": b.status.value,
        "errors": {"object": "list", "data": b.errors} if b.errors else None,
        "input_file_id": b.input_file_id, "output_file_id": b.output_file_id, "error_file_id": b.error_file_id,
        "completion_window": b.completion_window, "created_at": b.created_at, "in_progress_at": b.in_progress_at,
        "expires_at": b.expires_at, "finalizing_at": b.finalizing_at, "completed_at": b.completed_at,
        "failed_at": b.failed_at, "expired_at": b.expired_at, "cancelling_at": b.cancelling_at,
        "cancelled_at": b.cancelled_at,
        # OpenAI's three as they are (`failed` includes lines never run), then the gateway's split of them
        "request_counts": {"total": counts.total, "completed": counts.completed, "failed": counts.failed,
                           **counts.extensions()},
        "metadata": b.metadata,
        "usage": {
            "input_tokens": b.input_tokens, "output_tokens": b.output_tokens,
            "total_tokens": b.input_tokens + b.output_tokens,
            "input_tokens_details": {"cached_tokens": b.cached_tokens},
            "output_tokens_details": {"reasoning_tokens": b.reasoning_tokens},
        },
        "model": b.model,
        "request_id": b.request_id, "provider": b.provider, "session_id": b.session_id,
        "webhook": webhook,
        **_telemetry(webhook),
        "finalized_at": iso(b.billed_at) if b.status.terminal else None,
        "progress": counts.progress,
        "lifecycle_status": b.status.lifecycle,
        "polling_url": f"{base}/v1/batches/{b.id}",
        "cancel_url": f"{base}/v1/batches/{b.id}/cancel" if b.status in CANCELLABLE else None,
        "websocket_url": f"{ws_base}/v1/async/batch/{b.id}/ws",
        "results_url": f"{base}/v1/batches/{b.id}/results",
        "pricing_lines": pricing_lines or [], "billing": _billing(b),
        "execution": ExecutionMode.of(b.execution).value,
        "native_batch_id": b.native_batch_id, "native_batches": native_batches,
        # Recover (issue 17): failed lines by code (most frequent first), the retry chain around this batch
        "error_summary": error_summary or [], "parent_batch_id": b.parent_batch_id, "retries": retries or [],
        "retry_url": f"{base}/v1/batches/{b.id}/retry" if b.status.terminal else None,
    }


def page(data: list[dict[str, Any]], has_more: bool) -> dict[str, Any]:
    return {
        "object": "list", "data": data, "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None, "has_more": has_more,
    }
