"""`RequestLogRow`: one upstream attempt as the request log keeps it (GET /v1/batches/{id}/requests shows them).

The executor writes one per attempt it sends (retries and fallbacks each get their own), native execution one
per line the provider answered; both commit them with the settlements of the same group. Pure data.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any


@dataclass(frozen=True, slots=True)
class RequestLogRow:
    id: str  # the gateway request id (also in the line's result)
    workspace_id: str
    batch_id: str
    session_id: str | None
    custom_id: str
    line: int
    attempt: int  # 1-based: every attempt at this line so far, throttled ones included
    provider: str
    model: str  # the line's model as the user wrote it
    status_code: int | None  # None: no answer (see error_code)
    error_code: str | None  # upstream_<kind> when no answer came, or the native line's error code
    latency_ms: int
    input_tokens: int
    output_tokens: int
    cost_nanos: int | None  # None: not priced (a failed attempt)
    created_at: float

    def as_row(self) -> dict[str, Any]:
        """The `request_log` table's row."""
        return {name: getattr(self, name) for name in _COLUMNS}


_COLUMNS = tuple(f.name for f in fields(RequestLogRow))
