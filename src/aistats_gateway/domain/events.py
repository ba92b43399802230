"""Which lifecycle events a batch change causes (pure).

`batch.created` at create; one `batch.progress` per 10 % bucket crossed (buckets 5, 10, …, 90 —
the first progress counts as bucket 5 — clamped to 5..95, each at most once, delivery key
`batch.progress:<bucket>`); one terminal event per terminal status; one `batch.status_changed` per status
change (delivery key `batch.status_changed:<previous>:<status>`, from which the payload's `status_change`
is read back). An inline webhook receives the events in its `events` list (default: the four terminal
ones); a batch naming a registered endpoint receives its own `events` if it gave any, else the endpoint's.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aistats_gateway.domain.batch import BatchStatus, RequestCounts

TERMINAL_EVENTS = {
    BatchStatus.COMPLETED: "batch.completed",
    BatchStatus.FAILED: "batch.failed",
    BatchStatus.CANCELLED: "batch.cancelled",
    BatchStatus.EXPIRED: "batch.expired",
}


def progress_bucket(counts: RequestCounts) -> int | None:
    """The 10 % bucket of a running batch (None before any progress and at 100 %)."""
    if counts.total <= 0 or counts.settled <= 0 or counts.settled >= counts.total:
        return None
    return min(95, max(5, (counts.progress // 10) * 10))


def progress_crossed(before: RequestCounts, after: RequestCounts) -> int | None:
    """The bucket to announce when a commit moves progress from `before` to `after`, if any."""
    new = progress_bucket(after)
    if new is None:
        return None
    old = progress_bucket(before)
    return new if old is None or new > old else None


def delivery_key(event_type: str, bucket: int | None = None) -> str:
    return f"{event_type}:{bucket}" if bucket is not None else event_type


STATUS_CHANGED = "batch.status_changed"


def status_change_key(previous: str, status: str) -> str:
    return f"{STATUS_CHANGED}:{previous}:{status}"


def status_change(event_type: str, key: str) -> dict[str, str] | None:
    """The `status_change` object of a status_changed event's payload, read back from its delivery key."""
    parts = key.split(":")
    if event_type != STATUS_CHANGED or len(parts) != 3:
        return None
    return {"previous_status": parts[1], "status": parts[2]}


def wants(webhook: Mapping[str, Any] | None, event_type: str, endpoint_events: list[str] | None = None) -> bool:
    """Whether a batch's webhook (its stored settings, None when it has none) subscribes to `event_type`;
    `endpoint_events`: what its registered endpoint subscribes to (batch.* names), when it names one."""
    if not webhook:
        return False
    events = webhook.get("events") or []
    if not events and webhook.get("endpoint_id"):
        events = endpoint_events or []
    return event_type in events
