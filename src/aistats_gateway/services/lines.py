"""The line inspector (issue 18, item 2): one line of a batch as the user asks about it.

Owns the query rules of `GET /v1/batches/{id}/lines` (filters, page bounds: 400 naming the parameter) and the
shape of a line on the wire: its request body (read back from the input file for rows that point into it), the
answer or error it settled with, and every upstream attempt from the request log. A page is bounded: a body
over `PAGE_BODY_LIMIT` bytes is cut, marked, and points at `GET /v1/batches/{id}/lines/{line}`, which serves
the line whole.
"""

from __future__ import annotations

from typing import Any

import orjson

from aistats_gateway.domain.jsonl import settled_line
from aistats_gateway.errors import InputFileUnavailable, InvalidRequest, NotFound, excerpt
from aistats_gateway.ids import batch_request_id
from aistats_gateway.pricing.calculator import usd
from aistats_gateway.services.batches import ensure_rows_kept
from aistats_gateway.storage.blobs import BlobStore
from aistats_gateway.storage.bodies import InputBodies
from aistats_gateway.storage.lines import LINE_STATES, LineFilter, state_of
from aistats_gateway.storage.records import BatchRecord
from aistats_gateway.storage.schema import ITEM_FAILED, ITEM_SUCCEEDED
from aistats_gateway.storage.store import Store

PAGE_BODY_LIMIT = 64 * 1024  # per body in a page: 100 lines x 2 bodies stay around 13 MB at worst
MAX_PAGE = 100
MAX_OFFSET = 10_000_000  # beyond the largest batch (max_lines); larger values are a typo
MAX_FILTER_CHARS = 512  # custom_id's column width


def clip(raw: bytes | None, limit: int | None, full_url: str) -> dict[str, Any] | None:
    """A stored JSON body as the inspector shows it: whole (as JSON) up to `limit` bytes, else its first `limit`
    bytes as text with a marker saying how much is cut and where the whole line is (None: no body)."""
    if raw is None:
        return None
    size = len(raw)
    if limit is None or size <= limit:
        return {"bytes": size, "truncated": False, "json": orjson.Fragment(raw), "text": None, "full_url": None}
    head = raw[:limit].decode("utf-8", "ignore")  # "ignore": a character cut in half at the limit is dropped
    marker = f" …[cut: {size - limit:,} of {size:,} bytes not shown; the whole line: GET {full_url}]"
    return {"bytes": size, "truncated": True, "json": None, "text": head + marker, "full_url": full_url}


def parse_query(*, custom_id: str | None, status: str | None, error_code: str | None, after: str | None,
                offset: int, limit: int) -> tuple[LineFilter, int | None]:
    """The filters and the keyset (`after`: a line number) of a page request; 400 naming what is wrong."""
    if status is not None and status not in LINE_STATES:
        raise InvalidRequest(f"Unknown line status '{excerpt(status)}'; use one of {', '.join(LINE_STATES)}.",
                             code="invalid_status", param="status")
    for name, value in (("custom_id", custom_id), ("error_code", error_code)):
        if value is not None and len(value) > MAX_FILTER_CHARS:
            raise InvalidRequest(f"'{name}' is {len(value):,} characters long; at most {MAX_FILTER_CHARS}.",
                                 code="invalid_value", param=name)
    line_after: int | None = None
    if after:
        if not (after.isascii() and after.isdigit() and len(after) <= 10):
            raise InvalidRequest(f"'after' must be a line number (the `line` of the last line of the previous page), "
                                 f"got '{excerpt(after)}'.", code="invalid_value", param="after")
        line_after = int(after)
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidRequest(f"'limit' must be between 1 and {MAX_PAGE}, got {limit}.", code="invalid_value",
                             param="limit")
    if not 0 <= offset <= MAX_OFFSET:
        raise InvalidRequest(f"'offset' must be between 0 and {MAX_OFFSET:,}, got {offset}.", code="invalid_value",
                             param="offset")
    return LineFilter(custom_id or None, status or None, error_code or None), line_after


def _attempt(row: dict[str, Any]) -> dict[str, Any]:
    cost = row.get("cost_nanos")
    return {
        "id": row["id"], "attempt": row["attempt"], "provider": row["provider"], "model": row["model"],
        "status_code": row["status_code"], "error_code": row["error_code"], "latency_ms": row["latency_ms"],
        "usage": {"input_tokens": row["input_tokens"], "output_tokens": row["output_tokens"]},
        "cost_nanos": cost, "cost_usd": usd(cost) if cost is not None else None,
        "created_at": row["created_at"],
    }


class LineInspector:
    def __init__(self, store: Store, blobs: BlobStore) -> None:
        self.store = store
        self.bodies = InputBodies(store.files, blobs)

    async def page(self, batch: BatchRecord, base_url: str, where: LineFilter, *, after: int | None, offset: int,
                   limit: int) -> dict[str, Any]:
        ensure_rows_kept(batch, "line inspector")
        rows, has_more, matching = await self.store.lines.page(batch.id, where, after=after, offset=offset,
                                                               limit=limit)
        data = await self._render(batch, base_url, rows, PAGE_BODY_LIMIT)
        return {"object": "list", "data": data, "has_more": has_more, "total_matching": matching,
                "first_line": data[0]["line"] if data else None, "last_line": data[-1]["line"] if data else None}

    async def line(self, batch: BatchRecord, base_url: str, line: int) -> dict[str, Any]:
        ensure_rows_kept(batch, "line inspector")
        row = await self.store.lines.one(batch.id, line)
        if row is None:
            raise NotFound(f"Batch {batch.id} has no line {line} (lines are numbered from 1, as in the input file; "
                           "lines that failed validation are in the batch's `errors`).",
                           code="line_not_found", param="line")
        return (await self._render(batch, base_url, [row], None))[0]

    async def _render(self, batch: BatchRecord, base_url: str, rows: list[dict[str, Any]],
                      limit: int | None) -> list[dict[str, Any]]:
        attempts = await self.store.lines.attempts(batch.id, [r["line"] for r in rows])
        unavailable: str | None = None
        try:
            bodies = await self.bodies.load(batch.id, [(r["body"], r["body_offset"], r["body_length"]) for r in rows])
        except InputFileUnavailable:
            bodies = [r["body"] for r in rows]
            unavailable = "the batch's input file is gone (deleted or expired), so its request bodies are too"
        out = []
        for row, body in zip(rows, bodies, strict=True):
            url = f"{base_url}/v1/batches/{batch.id}/lines/{row['line']}"
            settled = row["status"] in (ITEM_SUCCEEDED, ITEM_FAILED)
            result = settled_line(batch_request_id(), row["custom_id"], row["result"], row["error_code"]) \
                if settled else None
            request = clip(body, limit, url)
            out.append({
                "object": "batch.line", "line": row["line"], "custom_id": row["custom_id"],
                "status": state_of(row["status"], row["error_code"]), "model": row["model"],
                "provider": row["provider"],
                "attempt_count": row["attempts"], "error_code": row["error_code"],
                "usage": {"input_tokens": row["input_tokens"], "output_tokens": row["output_tokens"]},
                "settled_at": row["settled_at"],
                "request": request if request is not None else ({"unavailable": unavailable} if unavailable else None),
                "result": clip(result, limit, url), "attempts": [_attempt(a) for a in attempts[row["line"]]],
                "url": url,
            })
        return out
