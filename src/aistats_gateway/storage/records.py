"""Typed views of stored rows, as the services and the wire layer see them."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields
from typing import Any, TypeVar

from aistats_gateway.domain.batch import BatchStatus, RequestCounts


@dataclass(frozen=True)
class FileRecord:
    id: str
    workspace_id: str
    filename: str
    purpose: str
    bytes: int
    status: str
    blob_key: str
    created_at: int
    expires_at: int | None


@dataclass(frozen=True)
class BatchRecord:
    id: str
    workspace_id: str
    request_id: str
    endpoint: str
    endpoint_input: str
    status: BatchStatus
    input_file_id: str
    output_file_id: str | None
    error_file_id: str | None
    completion_window: str
    created_at: int
    expires_at: int
    in_progress_at: int | None
    finalizing_at: int | None
    completed_at: int | None
    failed_at: int | None
    expired_at: int | None
    cancelling_at: int | None
    cancelled_at: int | None
    total: int
    completed: int
    failed: int
    input_tokens: int
    output_tokens: int
    metadata: dict[str, str] | None
    session_id: str | None
    webhook: dict[str, Any] | None
    provider_prefs: dict[str, Any] | None
    model: str | None
    provider: str | None
    errors: list[dict[str, Any]] | None
    status_reason: str | None
    updated_at: float
    estimated_nanos: int = 0
    reserved_nanos: int = 0
    reservation_id: str | None = None
    reservation_status: str | None = None
    cost_nanos: int | None = None
    billing_reason: str | None = None
    billed_at: int | None = None
    execution: str | None = None  # managed | native | auto (until validated); None: managed (older rows)
    native_batch_id: str | None = None
    output_expires_after: int | None = None  # seconds the output/error files live
    rows_purged_at: int | None = None  # when retention deleted its per-line rows (results, request log)
    cached_tokens: int = 0  # summed from the lines' usage details as they settle
    reasoning_tokens: int = 0
    parent_batch_id: str | None = None  # a retry: the batch whose lines it re-runs
    root_batch_id: str | None = None  # a retry: the first batch of its chain
    cancelled_lines: int = 0  # of `failed`: settled unsent as batch_cancelled / batch_expired (0013)
    expired_lines: int = 0

    @property
    def counts(self) -> RequestCounts:
        return RequestCounts(self.total, self.completed, self.failed, self.cancelled_lines, self.expired_lines)


@dataclass(frozen=True)
class ItemRecord:
    batch_id: str
    line: int
    custom_id: str
    model: str
    provider: str
    body: bytes | None  # None: the request is the raw line at body_offset/body_length of the batch's input file
    attempts: int
    body_offset: int | None = None
    body_length: int | None = None


T = TypeVar("T")


def _build(cls: type[T], row: Any) -> T:
    mapping = row._mapping if hasattr(row, "_mapping") else row
    names = [f.name for f in fields(cls)]  # type: ignore[arg-type]
    return cls(**{n: mapping[n] for n in names if n in mapping})


def file_record(row: Any) -> FileRecord:
    return _build(FileRecord, row)


def batch_record(row: Any) -> BatchRecord:
    rec = _build(BatchRecord, row)
    object.__setattr__(rec, "status", BatchStatus(rec.status))
    return rec


def item_record(row: Any) -> ItemRecord:
    """From a row of the lease statements' RETURNING (their column order; read on every lease, so positional)."""
    return ItemRecord(row[0], row[1], row[2], row[3], row[4], row[5], row[6], row[7], row[8])


def snapshot_of(record: BatchRecord) -> dict[str, Any]:
    """A batch record as plain JSON values (the webhook event's snapshot, the fan-out message): batch_record()
    reads it back."""
    data = dataclasses.asdict(record)
    data["status"] = record.status.value
    return data
