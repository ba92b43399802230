"""Response shapes of the wire contract (API.md): the file object, the batch object, lists.

Pure rendering from records; every field of API.md is present (null when not applicable) so
clients that index fields directly never miss one.
"""

from __future__ import annotations

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
        "finalized_at": b.billed_at if terminal else None,
    }


EMPTY_DELIVERY: dict[str, Any] = {
    "total_attempts": 0, "delivered_events": 0, "delivered_event_types": [], "pending_retries": 0,
    "pending_events": 0, "failed_events": 0, "last_attempt_at": None, "last_attempt_status": None,
    "last_delivered_at": None, "last_failure_at": None, "last_response_status": None,
    "last_error_message": None, "next_retry_at": None,
}


def _webhook(b: BatchRecord, state: dict[str, Any] | None) -> dict[str, Any] | None:
    """The sanitized webhook: configuration, delivery summary and last ten attempts; never the secret."""
    if not b.webhook:
        return None
    return {
        "url": b.webhook.get("url"), "events": b.webhook.get("events", []),
        "has_secret": bool(b.webhook.get("secret")),
        "delivery": (state or {}).get("delivery", EMPTY_DELIVERY),
        "attempts": (state or {}).get("attempts", []),
    }


def batch_object(
    b: BatchRecord, base_url: str, webhook_state: dict[str, Any] | None = None,
    pricing_lines: list[dict[str, Any]] | None = None, native_batches: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    counts = b.counts
    if native_batches and not b.status.terminal:
        # Lines of a running provider batch settle here only when it ends: show the provider's progress meanwhile.
        counts = counts.with_running([n["request_counts"] or {} for n in native_batches if n.pop("running")])
    else:
        for n in native_batches or []:
            n.pop("running", None)
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
        "request_counts": {"total": counts.total, "completed": counts.completed, "failed": counts.failed},
        "metadata": b.metadata,
        "usage": {
            "input_tokens": b.input_tokens, "output_tokens": b.output_tokens,
            "total_tokens": b.input_tokens + b.output_tokens,
            "input_tokens_details": {"cached_tokens": 0}, "output_tokens_details": {"reasoning_tokens": 0},
        },
        "model": b.model,
        "request_id": b.request_id, "provider": b.provider, "session_id": b.session_id,
        "webhook": _webhook(b, webhook_state),
        "progress": counts.progress,
        "lifecycle_status": b.status.lifecycle,
        "polling_url": f"{base}/v1/batches/{b.id}",
        "cancel_url": f"{base}/v1/batches/{b.id}/cancel" if b.status in CANCELLABLE else None,
        "websocket_url": f"{ws_base}/v1/async/batch/{b.id}/ws",
        "pricing_lines": pricing_lines or [], "billing": _billing(b),
        "execution": ExecutionMode.of(b.execution).value,
        "native_batch_id": b.native_batch_id, "native_batches": native_batches,
    }


def page(data: list[dict[str, Any]], has_more: bool) -> dict[str, Any]:
    return {
        "object": "list", "data": data, "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None, "has_more": has_more,
    }
