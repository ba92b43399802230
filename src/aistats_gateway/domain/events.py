"""Which lifecycle events a batch change causes (pure).

`batch.created` at create; one `batch.progress` per 10 % bucket crossed (buckets 5, 10, …, 90 —
the first progress counts as bucket 5 — clamped to 5..95, each at most once, delivery key
`batch.progress:<bucket>`); one terminal event per terminal status. A webhook receives the events
in its `events` list (default: the four terminal ones).
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


def wants(webhook: Mapping[str, Any] | None, event_type: str) -> bool:
    """Whether a batch's webhook (its stored settings, None when it has none) subscribes to `event_type`."""
    return bool(webhook) and event_type in (webhook or {}).get("events", [])
