"""Request rows (pure): one input line of a batch as `GET /v1/batches/{id}/requests` shows it.

The row is the SDKs' `BatchRequestRow` (`id`, `custom_id`, `request_index`, `provider`, `native_batch_id`,
`method`, `endpoint`, `model`, `status`, `request_body_hash`, `response_status`, `response_body`, `error_body`,
`usage`, `cost_nanos`, `cost_usd`, `meta`, ISO `created_at`/`updated_at`/`completed_at`) plus what the request
log says of the line's last upstream attempt (`request_id`, `attempt`, `status_code`, `error_code`,
`latency_ms`) and `attempts`. Unlike the AI Stats server, a row keeps its input position, method, endpoint
and body hash after the batch ends, and carries the answer's body (docs/compat.md).

Bounded: a body over `BODY_CAP` bytes, or any body once the page has spent `PAGE_BODY_BUDGET`, is replaced by
a marker `{"truncated": true, "bytes": N, "preview": "…"}`; the whole answer stays in the output file and on
`GET /v1/batches/{id}/results`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import orjson

from aistats_gateway.domain.jsonl import HALT_MESSAGES
from aistats_gateway.errors import InvalidRequest, excerpt

# Item states as stored (storage/schema.py ITEM_*), so this module needs no storage import.
PENDING, LEASED, SUCCEEDED, FAILED = 0, 1, 2, 3
HALTED = {"batch_cancelled": "cancelled", "batch_expired": "expired"}
STATUSES = ("queued", "in_progress", "completed", "failed", "cancelled", "expired")
BODY_CAP = 8 * 1024
PAGE_BODY_BUDGET = 2 * 1024 * 1024
PREVIEW_CHARS = 500


def row_status(item_status: int, error_code: str | None) -> str:
    if item_status == SUCCEEDED:
        return "completed"
    if item_status == FAILED:
        return HALTED.get(error_code or "", "failed")
    return "in_progress" if item_status == LEASED else "queued"


def body_hash(body: bytes | None) -> str | None:
    """Lowercase hex SHA-256 of the request body as sent upstream (the line's `body`, serialized)."""
    return hashlib.sha256(body).hexdigest() if body is not None else None


@dataclass
class Budget:
    """Body bytes a page may still carry."""

    left: int = PAGE_BODY_BUDGET

    def fit(self, value: Any) -> Any:
        if value is None:
            return None
        raw = orjson.dumps(value)
        if len(raw) <= BODY_CAP and len(raw) <= self.left:
            self.left -= len(raw)
            return value
        return {"truncated": True, "bytes": len(raw), "preview": raw[:PREVIEW_CHARS].decode("utf-8", "replace")}


@dataclass(frozen=True)
class Line:
    """What storage holds of one line (its item row and its attempts), gathered for `render`."""

    batch_id: str
    line: int
    request_index: int
    custom_id: str
    model: str
    provider: str
    item_status: int
    error_code: str | None
    result: bytes | None
    attempts: int
    settled_at: float | None
    last_attempt: dict[str, Any] | None  # the newest request-log row of the line
    cost_nanos: int | None  # summed over its attempts
    body_hash: str | None


TIMES = ("created_at", "updated_at", "completed_at")  # Unix times here; the wire shows them as ISO 8601


def render(line: Line, *, endpoint: str, native_batch_id: str | None, session_id: str | None, created_at: int,
           input_mode: str, budget: Budget) -> dict[str, Any]:
    status = row_status(line.item_status, line.error_code)
    answer: dict[str, Any] = {}
    if line.result is not None:
        try:
            parsed = orjson.loads(line.result)
            answer = parsed if isinstance(parsed, dict) else {}
        except orjson.JSONDecodeError:
            answer = {}
    response = answer.get("response") if isinstance(answer.get("response"), dict) else None
    body = response.get("body") if response else None
    error = answer.get("error")
    if not isinstance(error, dict):
        error = body.get("error") if isinstance(body, dict) and isinstance(body.get("error"), dict) else None
    if error is None and status in ("failed", "cancelled", "expired"):
        code = line.error_code or "request_failed"
        error = {"code": code, "message": HALT_MESSAGES.get(code, "The request failed.")}
    last = line.last_attempt or {}
    usage = body.get("usage") if isinstance(body, dict) and isinstance(body.get("usage"), dict) else None
    if usage is None and last:
        usage = {"input_tokens": last["input_tokens"], "output_tokens": last["output_tokens"],
                 "total_tokens": last["input_tokens"] + last["output_tokens"]}
    response_status = response.get("status_code") if response else None
    updated = line.settled_at or (last.get("created_at") if last else None) or created_at
    cost = line.cost_nanos
    return {
        "id": f"{line.batch_id}:{line.request_index}", "object": "batch.request", "batch_id": line.batch_id,
        "custom_id": line.custom_id, "request_index": line.request_index, "line": line.line,
        "provider": line.provider, "native_batch_id": native_batch_id, "method": "POST", "endpoint": endpoint,
        "model": line.model, "status": status, "request_body_hash": line.body_hash,
        "response_status": response_status if isinstance(response_status, int) else last.get("status_code"),
        "response_body": budget.fit(body if isinstance(body, dict) else None), "error_body": budget.fit(error),
        "usage": usage, "cost_nanos": cost, "cost_usd": None if cost is None else cost / 1e9,
        "meta": {"input_mode": input_mode, "attempts": line.attempts},
        "created_at": created_at, "updated_at": updated,
        "completed_at": line.settled_at if line.item_status in (SUCCEEDED, FAILED) else None,
        # the line's last upstream attempt, as the request log has it (`view=attempts` lists every one)
        "session_id": session_id, "attempts": line.attempts, "request_id": last.get("id"),
        "attempt": last.get("attempt"), "status_code": last.get("status_code"), "error_code": line.error_code
        or last.get("error_code"), "latency_ms": last.get("latency_ms"),
    }


_CODE_DIGITS = frozenset("0123456789")


def parse_filter(value: str | None) -> tuple[str, Any] | None:
    """The rows' `status` filter: a row status (queued, in_progress, completed, failed, cancelled, expired);
    as before rows existed, `success` (completed), `error` (failed, cancelled or expired) or an HTTP status code
    (rows with an attempt answered with it). None: no filter."""
    if value is None:
        return None
    if value in STATUSES:
        return ("status", value)
    if value == "success":
        return ("status", "completed")
    if value == "error":
        return ("error", None)
    # ASCII digits only: str.isdigit() also takes "²" and "٤٠٤"
    if len(value) == 3 and set(value) <= _CODE_DIGITS and 100 <= int(value) <= 599:
        return ("code", int(value))
    raise InvalidRequest(f"Unknown status filter '{excerpt(value)}'; use one of {', '.join(STATUSES)} (or success, "
                         "error, or an HTTP status code 100-599).", code="invalid_status", param="status")
